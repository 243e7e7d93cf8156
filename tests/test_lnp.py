"""The loss–network–position decomposition (ntkbench.lnp) against independent references:
explicitly formed full eNTKs and their eigendecomposition, per-sample Jacobians and
per-sample gradients of the raveled parameter vector (float64), closed forms; and its
wiring into the recorder and sweeps."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ntkbench as nb
from ntkbench.kernel import structured_vjp
from ntkbench.measures import _ghost_sq_norms, flatten_full
from ntkbench.train import Recorder, make_loss, train

LNP_MEASURES = ["chi_loss", "chi_net", "chi_net_se", "spectral_position", "grad_norm_sq"]


def _to64(model):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)


def _perturb(model, key):
    """Every parameter off its initial value (LayerNorm starts at 1/0, biases at 0)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [p + 0.1 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys, strict=True)]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


def _transformer(vocab=13, T=5, key=0):
    """Small TinyTransformer (embeddings, per-token linears, LayerNorm, attention), float64,
    K = T·vocab = 65 outputs per sample (> 64: "auto" takes Hutchinson)."""
    m = nb.TinyTransformer(vocab, T, width=8, layers=1, heads=2, mlp_ratio=2, key=jax.random.key(key))
    return _perturb(_to64(m), jax.random.key(key + 100))


def _jacobians(model, x) -> np.ndarray:
    """Per-sample Jacobians (B, K, P) of the flattened output w.r.t. every parameter leaf,
    concatenated (jax.jacrev, contracted in numpy float64)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    J = jax.jit(jax.vmap(jax.jacrev(lambda p, xi: jnp.ravel(eqx.combine(p, static)(xi))), in_axes=(None, 0)))(params, x)
    return np.concatenate(
        [np.asarray(j, np.float64).reshape(*j.shape[:2], -1) for j in jax.tree_util.tree_leaves(J)], axis=2
    )


def _sample_grad_sq(model):
    """(x_i, v) -> ‖∇_θ (v·f(x_i))‖² from the per-sample gradient of every parameter leaf."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def one(xi, v):
        g = jax.grad(lambda p: jnp.vdot(v, jnp.ravel(eqx.combine(p, static)(xi))))(params)
        return sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(g))

    return jax.jit(jax.vmap(one))


def _residual(model, x, y, loss) -> np.ndarray:
    """u_i = ∂l_i/∂f(x_i), written out in numpy: MSE f − y (one-hot labels), CE
    (softmax − one-hot) / T for sequences."""
    f = np.asarray(jax.vmap(model)(x), np.float64)
    if loss == "mse":
        target = np.eye(f.shape[-1])[np.asarray(y)] if np.issubdtype(np.asarray(y).dtype, np.integer) else y
        return (f - np.asarray(target)).reshape(len(f), -1)
    e = np.exp(f - f.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    onehot = np.eye(f.shape[-1])[np.asarray(y)]
    t = 1 if f.ndim == 2 else f.shape[1]
    return ((p - onehot) / t).reshape(len(f), -1)


def _cases(name):
    k = jax.random.split(jax.random.key(7), 3)
    if name == "mlp":
        model = eqx.nn.MLP(4, 3, 12, 2, activation=jnp.tanh, key=k[0], dtype=jnp.float64)
        x = jax.random.normal(k[1], (6, 4), jnp.float64)
        y = jax.random.randint(k[2], (6,), 0, 3)
        return model, x, y, "ce"
    if name == "cnn":
        model = _perturb(_to64(nb.CNN((6, 6), 3, width=3, depth=2, key=k[0])), k[1])
        x = jax.random.normal(k[1], (5, 6, 6), jnp.float64)
        y = jax.random.normal(k[2], (5, 3), jnp.float64)
        return model, x, y, "mse"
    if name == "transformer":
        model = _transformer()
        x = jax.random.randint(k[1], (4, 5), 0, 13)
        y = jax.random.randint(k[2], (4, 5), 0, 13)
        return model, x, y, "ce"
    raise AssertionError(name)


# ---------------------------------------------------------------------------
# Against the explicitly formed full eNTK
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case, method",
    [("mlp", "jacobian"), ("mlp", "ntvp"), ("mlp", "structured"), ("cnn", "structured")],
)
def test_chi_pos_equals_full_kernel_quadratic_form_and_eigen_reading(case, method, x64):
    """Exact LNP vs K = J Jᵀ (B·K × B·K) formed by each entk method (every method on the
    MLP, the CNN once; the transformer's sequence outputs in the next test): χ_net = Tr K / B,
    ‖∇L‖² = uᵀKu / B², χ_pos = uᵀKu / (‖u‖² Tr K) = Σ_k (λ_k / Tr K) w_k, the identity,
    and the bounds λ_min/Tr K ≤ χ_pos ≤ λ_max/Tr K."""
    model, x, y, loss = _cases(case)
    B = x.shape[0]
    r = nb.lnp(model, x, y, loss, probes=None)
    K = np.asarray(flatten_full(nb.entk(model, x, outputs="full", method=method)), np.float64)
    u = _residual(model, x, y, loss).reshape(-1)
    uKu, uu, tr = u @ K @ u, u @ u, np.trace(K)
    assert float(r.chi_loss) == pytest.approx(uu / B, rel=1e-10)
    assert float(r.chi_net) == pytest.approx(tr / B, rel=1e-10)
    assert float(r.grad_sq) == pytest.approx(uKu / B**2, rel=1e-10)
    assert float(r.chi_pos) == pytest.approx(uKu / (uu * tr), rel=1e-10)
    assert float(r.chi_net_se) == 0.0
    assert float(r.grad_sq) == pytest.approx(float(r.chi_loss * r.chi_net * r.chi_pos), rel=1e-12)
    lam, V = np.linalg.eigh(K)
    w = (V.T @ u) ** 2 / uu
    assert w.sum() == pytest.approx(1.0, rel=1e-12)
    assert float(r.chi_pos) == pytest.approx(float(np.sum(lam / lam.sum() * w)), rel=1e-9)
    assert lam.min() / tr - 1e-12 <= float(r.chi_pos) <= lam.max() / tr + 1e-12
    # the same from the public eigen tools
    lam2, V2 = nb.spectrum(jnp.asarray(K), vectors=True)
    w2 = nb.residual_projection(V2, jnp.asarray(u), weights=True)
    assert float(jnp.sum(lam2 / jnp.sum(lam2) * w2)) == pytest.approx(float(r.chi_pos), rel=1e-9)


def test_identity_kernel_gives_one_over_bc(x64):
    """f(x) = W x on orthonormal inputs scaled by √c: K = c·I (B·C × B·C), χ_pos = 1/(B·C)
    exactly, and χ_net = c·C."""
    B, C, d, c = 4, 3, 6, 2.5
    model = eqx.nn.Linear(d, C, use_bias=False, key=jax.random.key(0), dtype=jnp.float64)
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((d, B)))
    x = jnp.asarray(np.sqrt(c) * Q.T)
    y = jax.random.normal(jax.random.key(1), (B, C), jnp.float64)
    r = nb.lnp(model, x, y, probes=None)
    assert float(r.chi_pos) == pytest.approx(1 / (B * C), rel=1e-12)
    assert float(r.chi_net) == pytest.approx(c * C, rel=1e-12)
    # Hutchinson: on K = c·I every Rademacher probe gives ‖v‖² c = C c exactly, s.e. 0
    h = nb.lnp(model, x, y, probes=3, key=jax.random.key(2))
    assert float(h.chi_net) == pytest.approx(c * C, rel=1e-12)
    assert float(h.chi_net_se) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("scale", [1e-3, 7.0])
def test_invariant_to_rescaling_the_residual(scale, x64):
    """Scaling the loss by α scales u by α: χ_loss and ‖∇L‖² by α², χ_net and χ_pos not."""
    model, x, _, _ = _cases("mlp")
    y = jax.random.normal(jax.random.key(9), (x.shape[0], 3), jnp.float64)
    base = nb.lnp(model, x, y, "mse", probes=None)
    scaled = nb.lnp(model, x, y, lambda f, t: scale * 0.5 * jnp.sum((f - t) ** 2), probes=None)
    assert float(scaled.chi_pos) == pytest.approx(float(base.chi_pos), rel=1e-10)
    assert float(scaled.chi_net) == pytest.approx(float(base.chi_net), rel=1e-12)
    assert float(scaled.chi_loss) == pytest.approx(scale**2 * float(base.chi_loss), rel=1e-10)
    assert float(scaled.grad_sq) == pytest.approx(scale**2 * float(base.grad_sq), rel=1e-10)


# ---------------------------------------------------------------------------
# Hutchinson and the ghost norms
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["mlp", "cnn"])
def test_hutchinson_within_its_error_bar(case, x64):
    """Rademacher estimates of χ_net lie within 4 standard errors of the exact value, for
    several keys, and the error bar is informative (< 20 % of the value at 16 probes)."""
    model, x, y, loss = _cases(case)
    exact = nb.lnp(model, x, y, loss, probes=None)
    for seed in range(3):
        est = nb.lnp(model, x, y, loss, probes=16, key=jax.random.key(seed))
        se = float(est.chi_net_se)
        assert 0 < se < 0.2 * float(exact.chi_net)
        assert abs(float(est.chi_net) - float(exact.chi_net)) < 4 * se
        # ‖∇L‖² and χ_loss are exact on the Hutchinson route too
        assert float(est.grad_sq) == pytest.approx(float(exact.grad_sq), rel=1e-10)
        assert float(est.chi_loss) == pytest.approx(float(exact.chi_loss), rel=1e-10)


def test_sequence_outputs_exact_and_hutchinson_vs_per_sample_jacobians(x64):
    """TinyTransformer logits (T, V): exact χ_net vs Σ_i ‖J_i‖²_F / B from per-sample
    Jacobians of the raveled parameters; Hutchinson vs (1/B) Σ_i ‖J_iᵀ v_i‖² with the very
    probes lnp draws, and within its error bar of the brute-force trace."""
    model, x, y, _ = _cases("transformer")
    B = x.shape[0]
    J = _jacobians(model, x)  # (B, 65, P)
    tr = float(np.sum(J**2)) / B
    exact = nb.lnp(model, x, y, "ce", probes=None)
    assert float(exact.chi_net) == pytest.approx(tr, rel=1e-10)
    # ‖∇L‖² = ‖(1/B) Σ_i J_iᵀ u_i‖² with u from the logits in numpy
    u = _residual(model, x, y, "ce")
    g = np.einsum("bk,bkq->q", u, J) / B
    assert float(exact.grad_sq) == pytest.approx(float(g @ g), rel=1e-10)
    # χ_pos from the eigendecomposition of the full (B·T·V)² kernel J Jᵀ
    Jf = J.reshape(-1, J.shape[2])
    lam, W = np.linalg.eigh(Jf @ Jf.T)
    w = (W.T @ u.reshape(-1)) ** 2 / np.sum(u**2)
    assert float(exact.chi_pos) == pytest.approx(float(np.sum(lam / lam.sum() * w)), rel=1e-9)
    key = jax.random.key(5)
    P = 16
    est = nb.lnp(model, x, y, "ce", probes=P, key=key)
    V = np.asarray(jax.random.rademacher(key, (B, P, J.shape[1]), dtype=jnp.float64))
    per_probe = np.einsum("bpk,bkq->bpq", V, J)  # (B, P, params): J_iᵀ v_ip
    per_probe = np.sum(per_probe**2, axis=(0, 2)) / B
    assert float(est.chi_net) == pytest.approx(per_probe.mean(), rel=1e-10)
    assert float(est.chi_net_se) == pytest.approx(per_probe.std(ddof=1) / np.sqrt(P), rel=1e-8)
    assert 0 < float(est.chi_net_se) < 0.2 * tr
    assert abs(float(est.chi_net) - tr) < 4 * float(est.chi_net_se)


@pytest.mark.parametrize("case, route", [("transformer", "gram"), ("cnn", "gram")])
def test_ghost_norms_equal_brute_force_per_sample_gradient_norms(case, route, x64, monkeypatch):
    """For arbitrary cotangents v (here Gaussian, 3 per sample), the per-sample squared
    norms from tokens and cotangents equal ‖∇_θ (v·f(x_i))‖² from the per-sample gradient
    of every parameter (embeddings, biases, LayerNorm gains/biases, convolutions). With
    ``route="gram"`` every tapped layer takes the token-Gram rule (the cost model leaves
    small embeddings and convolutions on their Jacobian route; the default routes are
    checked exactly against full kernels and per-sample Jacobians in the tests above)."""
    from ntkbench.kernel import _features

    if route is not None:
        orig = _features._with_routes  # looked up by _structured_vjp in _features
        monkeypatch.setattr(_features, "_with_routes", lambda *a: [L._replace(route=route) for L in orig(*a)])
    model, x, _, _ = _cases(case)
    K = jnp.size(model(x[0]))
    V = jax.random.normal(jax.random.key(3), (x.shape[0], 3, K), jnp.float64)
    forward, layers = structured_vjp(model, x.shape[1:], x.dtype, cotangents=3)
    assert any(L.route == "gram" for L in layers)
    if route == "gram":
        kinds = {L.kind for L in layers if L.route == "gram"}
        assert kinds == ({"linear", "embedding"} if case == "transformer" else {"linear", "conv"})

    def ghost(xi, vi):
        _, backward = forward(xi)
        return _ghost_sq_norms(backward(vi), layers)

    got = np.asarray(jax.jit(jax.vmap(ghost))(x, V))
    brute = _sample_grad_sq(model)
    ref = np.stack([np.asarray(brute(x, V[:, p])) for p in range(3)], axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-10)


class _TokenLN(eqx.Module):
    """Embedding → LayerNorm (width 144) → Linear per token: the shapes at which batching
    probes as a second vmap axis made XLA:CPU miscompute the LayerNorm backward."""

    embed: eqx.nn.Embedding
    ln: eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.embed = eqx.nn.Embedding(11, 144, key=k1)
        self.ln = eqx.nn.LayerNorm(144)
        self.head = eqx.nn.Linear(144, 3, key=k2)

    def __call__(self, tokens):
        return jax.vmap(lambda t: self.head(self.ln(self.embed(t))))(tokens)


def test_many_probes_batched_layernorm_backward():
    """Float32, B = 16, T = 64, 6 probes: lnp's χ_net equals (1/B) Σ_i Σ_p ‖J_iᵀ v_ip‖² / 6
    from per-sample gradients, one probe at a time, with the very probes it draws. (With all probes in one vmap,
    jax 0.10.2 on the CPU got every probe after the third wrong by 1-6 %.)"""
    model = _perturb(_TokenLN(jax.random.key(0)), jax.random.key(1))
    B, T, P = 16, 64, 6
    x = jax.random.randint(jax.random.key(2), (B, T), 0, 11)
    y = jax.random.randint(jax.random.key(3), (B, T), 0, 3)
    key = jax.random.key(4)
    r = nb.lnp(model, x, y, "ce", probes=P, key=key)
    V = jax.random.rademacher(key, (B, P, T * 3), dtype=jnp.float32)
    brute = _sample_grad_sq(model)  # one probe at a time: per-sample gradients, no probe axis
    per_probe = np.array([float(np.sum(np.asarray(brute(x, V[:, p]), np.float64))) for p in range(P)]) / B
    assert float(r.chi_net) == pytest.approx(per_probe.mean(), rel=2e-5)
    assert float(r.chi_net_se) == pytest.approx(per_probe.std(ddof=1) / np.sqrt(P), rel=1e-3)


def test_sample_blocks_and_argument_errors(x64):
    """Any block size gives the same numbers; bad arguments name themselves."""
    m, xm, ym, lm = _cases("mlp")
    whole = nb.lnp(m, xm, ym, lm, probes=16, key=jax.random.key(0))
    blocked = nb.lnp(m, xm, ym, lm, probes=16, key=jax.random.key(0), block_size=4)
    for a, b in zip(whole, blocked, strict=True):
        assert float(a) == pytest.approx(float(b), rel=1e-12)
    model, x, y, loss = _cases("transformer")
    with pytest.raises(ValueError, match="key"):
        nb.lnp(model, x, y, loss)  # 'auto' picks Hutchinson for 65 outputs: a key is needed
    with pytest.raises(ValueError, match="probes"):
        nb.lnp(model, x, y, loss, probes=1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="loss"):
        nb.lnp(model, x, y, "hinge")
    with pytest.raises(ValueError, match="y"):
        nb.lnp(model, x, y[:2], loss, probes=None)
    # 'auto' is exact for few outputs (no key needed)
    assert float(nb.lnp(m, xm, ym, lm).chi_net_se) == 0.0


# ---------------------------------------------------------------------------
# Recorder and sweeps
# ---------------------------------------------------------------------------


def test_recorder_logs_lnp_variables_with_attrs():
    """One-output regression: every LNP variable with long_name/units; Σ_k w_k = 1;
    χ_pos from the eigenpairs equals the kernel-free one; the identity holds per step."""
    data = nb.load("teacher", 48, 16, seed=0)
    model = nb.MLP(int(np.prod(data.in_shape)), 1, 16, 2, key=jax.random.key(0))
    names = [*LNP_MEASURES, "eigenvalues", "residual_weights", "spectral_position_eig"]
    rec = Recorder(every="log", log_points=4, probe=12, measures=names)
    _, ds = train(model, data, optimizer=optax.sgd(0.05), steps=30, batch_size=16, recorder=rec, key=jax.random.key(1))
    nb.validate(ds)
    for name in names:
        assert ds[name].attrs["long_name"] and ds[name].attrs["units"] == "1", name
        assert np.all(np.isfinite(ds[name].values)), name
    assert ds["residual_weights"].dims == ("step", "eigen_index")
    np.testing.assert_allclose(ds["residual_weights"].sum("eigen_index"), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ds["spectral_position_eig"], ds["spectral_position"], rtol=1e-3)
    prod = ds["chi_loss"] * ds["chi_net"] * ds["spectral_position"]
    np.testing.assert_allclose(prod, ds["grad_norm_sq"], rtol=1e-5)
    np.testing.assert_array_equal(ds["chi_net_se"], 0.0)  # one output: 'auto' is exact
    # the recorded step 0 equals a direct call on the probe batch
    ref = nb.lnp(model, data.x_train[:12], data.y_train[:12], make_loss("mse", "regression"))
    assert float(ds["chi_net"].sel(step=0)) == pytest.approx(float(ref.chi_net), rel=1e-5)


def test_recorder_hutchinson_probes_keyed_by_step_and_c_gt_1_refused():
    """lnp_probes = 4 on a 10-output classifier: chi_net_se > 0 and the same values for the
    same key; residual_weights with C > 1 outputs is refused naming the measure."""
    data = nb.load("digits", 32, 8, seed=0)
    model = nb.MLP(64, 10, 16, 1, key=jax.random.key(0))
    rec = Recorder(every=5, probe=6, measures=LNP_MEASURES, lnp_probes=4)
    kw = dict(optimizer=optax.adam(1e-2), steps=10, batch_size=8, loss="ce", recorder=rec)
    _, ds = train(model, data, key=jax.random.key(1), **kw)
    _, ds2 = train(model, data, key=jax.random.key(1), **kw)
    assert np.all(ds["chi_net_se"].values > 0)
    np.testing.assert_array_equal(ds["chi_net"].values, ds2["chi_net"].values)
    assert ds.attrs["config"] and '"lnp_probes": 4' in ds.attrs["config"]
    with pytest.raises(ValueError, match="residual_weights"):
        train(
            model, data, key=jax.random.key(1), **{**kw, "recorder": Recorder(probe=4, measures=["residual_weights"])}
        )
    with pytest.raises(ValueError, match="lnp_probes"):
        Recorder(lnp_probes=1)


def test_sweep_record_section_sets_lnp_probes():
    from ntkbench.sweep import run_one, validate_config

    cfg = {
        "seed": 0,
        "model": {"name": "mlp", "width": 8, "depth": 1},
        "data": {"name": "digits", "n_train": 32, "n_test": 16},
        "train": {"optimizer": "sgd", "lr": 0.1, "steps": 4, "batch_size": 16},
        "record": {"every": 2, "probe": 6, "measures": ["chi_net", "chi_net_se"], "lnp_probes": 3},
    }
    ds = run_one(validate_config(cfg))
    assert np.all(ds["chi_net_se"].values > 0)  # 10 outputs, 3 probes: Hutchinson
    ds = run_one(validate_config({**cfg, "record": {**cfg["record"], "lnp_probes": "exact"}}))
    np.testing.assert_array_equal(ds["chi_net_se"].values, 0.0)
    for bad in (1, "many", True, 2.5):
        with pytest.raises(ValueError, match="'record.lnp_probes'"):
            validate_config({**cfg, "record": {"lnp_probes": bad}})
