"""ntkbench.Decoder (Llama-style LM): shapes, causality, rotary embeddings, parameter counts,
and its eNTK (structured and auto, tied and untied embeddings) against the float64
per-sample Jacobian reference of tests/test_kernel.py."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntkbench as nb
from ntkbench.decoder import Decoder, non_embedding_params, rope
from ntkbench.models import count_config_params, count_params, make_model
from test_kernel import _perturb, _to64, reference_entk, rel_err


def test_shapes_causality_and_counts(getkey):
    lm = Decoder(31, 12, width=16, layers=3, heads=2, key=getkey())
    tokens = jax.random.randint(getkey(), (9,), 0, 31)
    out = lm(tokens)
    assert out.shape == (9, 31) and bool(jnp.all(jnp.isfinite(out)))
    changed = lm(tokens.at[6].set((tokens[6] + 1) % 31))
    np.testing.assert_array_equal(np.asarray(out[:6]), np.asarray(changed[:6]))  # causal: exact
    assert not np.allclose(out[6:], changed[6:])
    hidden = 8 * math.ceil(8 * 16 / 3 / 8)  # the Llama rule: 48
    per_block = 3 * 16 * 16 + 16 * 16 + 16 * 2 * hidden + hidden * 16 + 2 * 16
    assert non_embedding_params(lm) == 3 * per_block + 16
    assert count_params(lm) == non_embedding_params(lm) + 2 * 31 * 16  # embed + unembed
    tied = Decoder(31, 12, width=16, layers=3, heads=2, tie_embeddings=True, key=getkey())
    assert count_params(tied) == non_embedding_params(tied) + 31 * 16


def test_rope_depends_on_relative_position(getkey):
    """q_t·k_s after rotation depends on t - s only (the same vectors at shifted positions)."""
    q, k = jax.random.normal(getkey(), (2, 8))
    seq = lambda v, t: jnp.zeros((10, 1, 8)).at[t, 0].set(v)  # noqa: E731  v at position t
    dot = lambda t, s: float(rope(seq(q, t))[t, 0] @ rope(seq(k, s))[s, 0])  # noqa: E731
    assert dot(5, 2) == pytest.approx(dot(7, 4), rel=1e-5)  # float32 rotations
    assert dot(5, 2) != pytest.approx(dot(5, 4), rel=1e-3)
    np.testing.assert_allclose(rope(seq(q, 0))[0, 0], q)  # position 0: no rotation


@pytest.mark.parametrize("tie", [False, True])
def test_entk_matches_float64_reference(tie, x64, getkey):
    """Structured (per-token linears and the embedding tapped; RMSNorm gains and a tied
    embedding by the fallback) and auto against the Jacobian reference."""
    lm = Decoder(11, 6, width=8, layers=2, heads=2, mlp_hidden=12, tie_embeddings=tie, key=getkey())
    model = _perturb(_to64(lm), getkey())
    x = jax.random.randint(getkey(), (4, 5), 0, 11)
    x2 = jax.random.randint(getkey(), (3, 5), 0, 11)
    ref = reference_entk(model, x)
    assert rel_err(nb.entk(model, x, method="structured"), ref) < 1e-10
    assert rel_err(nb.entk(model, x, method="auto"), ref) < 1e-10
    Kc = nb.entk(model, x, x2, outputs="full", method="structured")
    assert rel_err(Kc, reference_entk(model, x, x2, full=True)) < 1e-10


def test_make_model_and_bad_arguments(getkey):
    cfg = {"name": "decoder", "width": 16, "layers": 2, "heads": 2}
    lm = make_model(cfg, key=getkey(), in_shape=(8,), out_size=20)
    assert isinstance(lm, Decoder) and (lm.vocab_size, lm.context, lm.depth) == (20, 8, 2)
    assert count_config_params(cfg, in_shape=(8,), out_size=20) == count_params(lm)
    aspect = make_model(
        {"name": "decoder", "width": 64, "aspect": 32, "heads": 2}, key=getkey(), in_shape=(8,), out_size=20
    )
    assert aspect.depth == 2  # layers = width // aspect
    for kwargs, match in (
        ({"width": 12, "heads": 4}, "even"),  # d_head 3
        ({"layers": 0}, "layers"),
        ({"tie_embeddings": "yes"}, "tie_embeddings"),
        ({"mlp_hidden": 0}, "mlp_hidden"),
    ):
        with pytest.raises(ValueError, match=match):
            Decoder(**{"vocab_size": 20, "context": 8, "width": 16, "layers": 1, "heads": 2, "key": getkey(), **kwargs})
    with pytest.raises(TypeError, match="Decoder"):
        non_embedding_params(eqx.nn.Linear(2, 2, key=getkey()))
