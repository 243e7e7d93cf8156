"""Tests for ntkbench.models: determinism, shapes, parametrizations, causality, factory."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkbench.models import (
    ACTIVATIONS,
    CNN,
    MLP,
    TinyTransformer,
    count_config_params,
    count_params,
    make_model,
    mup_lr_scales,
)


def _leaves(model):
    return jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))


def _same(a, b) -> bool:
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


@eqx.filter_jit
def _batch(model, x):
    """jax.vmap(model)(x), compiled (eager op-by-op dispatch is slow on small machines)."""
    return jax.vmap(model)(x)


@eqx.filter_jit
def _call(model, x):
    return model(x)


@eqx.filter_jit
def _entk_diag(model, x):
    """Reference eNTK diagonal K_ii = sum_k ||d f_k(x_i) / d theta||^2 from full
    per-sample Jacobians (jax.jacrev), independent of ntkbench.kernel."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def f(p, xi):
        return eqx.combine(p, static)(xi)

    jac = jax.vmap(jax.jacrev(f), (None, 0))(params, x)
    return sum(jnp.sum(j.reshape(j.shape[0], -1) ** 2, axis=1) for j in jax.tree_util.tree_leaves(jac))


def _entk_scale(make, x, widths, seeds=3):
    """Tr K / N at init with ntkbench.entk, averaged over seeds, for each width."""
    import ntkbench as nb

    return [
        np.mean(
            [float(jnp.mean(jnp.diag(nb.entk(make(w, jax.random.key(s)), x, method="jacobian")))) for s in range(seeds)]
        )  # fmt: skip
        for w in widths
    ]


# --------------------------------------------------------------------------- MLP


def test_mlp_deterministic_from_key():
    a = MLP(5, 3, 16, 2, key=jax.random.key(0))
    b = MLP(5, 3, 16, 2, key=jax.random.key(0))
    c = MLP(5, 3, 16, 2, key=jax.random.key(1))
    assert _same(a, b)
    assert not _same(a, c)


@pytest.mark.parametrize("parametrization", ["standard", "ntk", "mup"])
def test_mlp_shapes_and_attributes(parametrization):
    m = MLP(64, 10, 32, 3, "tanh", parametrization, key=jax.random.key(0))
    assert (m.width, m.depth, m.parametrization) == (32, 3, parametrization)
    assert len(m.layers) == 4 and all(isinstance(l, eqx.nn.Linear) for l in m.layers)
    x = jax.random.normal(jax.random.key(1), (6, 64))
    assert _batch(m, x).shape == (6, 10)
    # image-shaped inputs are flattened
    np.testing.assert_array_equal(_call(m, x[0].reshape(8, 8)), _call(m, x[0]))
    with pytest.raises(ValueError, match="in_size"):
        _call(m, jnp.ones(63))


def test_mlp_scalar_output():
    m = MLP(4, "scalar", 8, 1, key=jax.random.key(0))
    assert _call(m, jnp.ones(4)).shape == ()


def test_mlp_weight_statistics():
    # standard: W ~ N(0, 1/fan_in); ntk: W ~ N(0, 1); mup readout: N(0, 1/base_width)
    w, base = 512, 8
    std = MLP(256, 256, w, 1, parametrization="standard", key=jax.random.key(0))
    ntk = MLP(256, 256, w, 1, parametrization="ntk", key=jax.random.key(0))
    mup = MLP(256, 256, w, 1, parametrization="mup", base_width=base, key=jax.random.key(0))
    for layer in std.layers:
        assert abs(float(jnp.var(layer.weight)) * layer.weight.shape[1] - 1) < 0.02
    for layer in ntk.layers:
        assert abs(float(jnp.var(layer.weight)) - 1) < 0.02
    assert abs(float(jnp.var(mup.layers[-1].weight)) * base - 1) < 0.02
    for m in (std, ntk, mup):
        assert all(float(jnp.abs(layer.bias).max()) == 0.0 for layer in m.layers)


def test_parametrizations_agree_at_init_closed_form():
    """Same key: standard, ntk and mup(base_width=width) compute the same function at
    init; mup with base_width b is sqrt(b / width) times the standard output."""
    key, width = jax.random.key(3), 48
    x = jax.random.normal(jax.random.key(4), (7, 10))
    std = _batch(MLP(10, 4, width, 2, key=key), x)
    ntk = _batch(MLP(10, 4, width, 2, parametrization="ntk", key=key), x)
    mup_w = _batch(MLP(10, 4, width, 2, parametrization="mup", base_width=width, key=key), x)
    mup_1 = _batch(MLP(10, 4, width, 2, parametrization="mup", key=key), x)
    np.testing.assert_allclose(ntk, std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mup_w, std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mup_1, std * math.sqrt(1 / width), rtol=1e-5, atol=1e-7)


def test_entk_scale_ntk_bounded_standard_grows():
    """Tr K / N at init: bounded in width for "ntk", ~linear in width for "standard"."""
    x = jax.random.normal(jax.random.key(0), (8, 16))

    def scale(param, width):
        vals = [
            float(jnp.mean(_entk_diag(MLP(16, 2, width, 2, parametrization=param, key=jax.random.key(s)), x)))
            for s in range(2)
        ]
        return np.mean(vals)

    ratio_ntk = scale("ntk", 1024) / scale("ntk", 64)
    ratio_std = scale("standard", 1024) / scale("standard", 64)
    assert 0.7 < ratio_ntk < 1.4, ratio_ntk
    assert 10 < ratio_std < 24, ratio_std  # width grows 16x


def test_mup_readout_output_shrinks_with_width():
    # effective readout variance 1/width^2 (base_width=1): E[f(x)^2] ~ 1/width, so the
    # RMS output falls 4x from width 64 to 1024 (averaged over inputs and 8 keys)
    x = jax.random.normal(jax.random.key(0), (128, 16))

    def rms(width):
        sq = [jnp.mean(_batch(MLP(16, 1, width, 1, "tanh", "mup", key=jax.random.key(s)), x) ** 2)
              for s in range(8)]  # fmt: skip
        return math.sqrt(float(np.mean(sq)))

    assert 3.0 < rms(64) / rms(1024) < 5.5  # expected 4


def test_structured_entk_sees_parametrization_scales():
    """nb.entk with the layer-wise rule agrees with the reference diagonal for every
    parametrization (the scale is applied outside eqx.nn.Linear)."""
    kernel = pytest.importorskip("ntkbench.kernel")
    x = jax.random.normal(jax.random.key(0), (5, 6))
    for param in ("standard", "ntk", "mup"):
        m = MLP(6, 3, 24, 2, "tanh", param, key=jax.random.key(2))
        K = kernel.entk(m, x, method="structured")
        np.testing.assert_allclose(jnp.diag(K), _entk_diag(m, x), rtol=1e-4)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activations_run(activation):
    """Finite outputs that depend on the input, through a nonlinearity (except identity):
    f(a + b) − f(a) − f(b) + f(0) vanishes for an affine network only."""
    m = MLP(3, 2, 8, 2, activation, key=jax.random.key(0))
    assert bool(jnp.all(jnp.isfinite(_call(m, jnp.ones(3)))))
    a, b = 2 * jax.random.normal(jax.random.key(1), (2, 3))
    fa, fb = _call(m, a), _call(m, b)
    assert float(jnp.max(jnp.abs(fa - fb))) > 1e-3
    defect = float(jnp.max(jnp.abs(_call(m, a + b) - fa - fb + _call(m, jnp.zeros(3)))))
    if activation == "identity":
        assert defect < 1e-5
    else:
        assert defect > 1e-3, defect


def test_identity_mlp_is_linear():
    m = MLP(5, 2, 16, 3, "identity", key=jax.random.key(0))  # zero biases at init
    x = jax.random.normal(jax.random.key(1), (5,))
    np.testing.assert_allclose(_call(m, 3.0 * x), 3.0 * _call(m, x), rtol=1e-5)


def test_count_params_closed_form():
    i, o, w, d = 7, 3, 11, 3
    expected = (i * w + w) + (d - 1) * (w * w + w) + (w * o + o)
    assert count_params(MLP(i, o, w, d, key=jax.random.key(0))) == expected


@pytest.mark.parametrize(
    ("config", "in_shape", "out_size"),
    [
        ({"name": "mlp", "width": 11, "depth": 3}, (7,), 3),
        ({"name": "cnn", "width": 4, "depth": 2}, (8, 8, 1), 10),
        ({"name": "cnn", "channels": [3, 5], "hidden": 7, "pool": "flatten", "downsample": True}, (1, 9, 8), 10),
        ({"name": "transformer", "width": 8, "layers": 2, "heads": 2}, (6,), 12),
        ({"name": "random_features", "width": 16, "features": "frozen"}, (5,), 1),
        ({"name": "random_features", "width": 16, "features": "trained"}, (5,), 1),
    ],
)
def test_count_config_params_counts_the_model_the_config_builds(config, in_shape, out_size):
    """From shapes only, the count of the model make_model builds from the config."""
    model = make_model(config, key=jax.random.key(0), in_shape=in_shape, out_size=out_size)
    assert count_config_params(config, in_shape=in_shape, out_size=out_size) == count_params(model)


def test_mup_lr_scales():
    m = MLP(4, 2, 64, 2, parametrization="mup", base_width=16, key=jax.random.key(0))
    assert mup_lr_scales(m) == (1.0, 0.25, 0.25)
    assert mup_lr_scales(MLP(4, 2, 64, 2, key=jax.random.key(0))) == (1.0, 1.0, 1.0)
    cnn = CNN((4, 4), 2, 32, 3, parametrization="mup", base_width=8, key=jax.random.key(0))
    assert mup_lr_scales(cnn) == (1.0, 0.25, 0.25, 0.25)  # input conv, 2 hidden, readout
    assert mup_lr_scales(CNN((4, 4), 2, 32, 3, "relu", "ntk", key=jax.random.key(0))) == (1.0,) * 4
    tf = TinyTransformer(5, 3, 16, 2, 2, parametrization="mup", base_width=4, key=jax.random.key(0))
    # tok / pos embeddings, (qkv, proj, fc1, fc2) x 2 blocks, unembed
    assert mup_lr_scales(tf) == (1.0, 1.0) + (0.25,) * 9
    with pytest.raises(TypeError, match="model"):
        mup_lr_scales(eqx.nn.Linear(2, 2, key=jax.random.key(0)))


@pytest.mark.parametrize("arch", ["mlp", "cnn", "transformer"])
def test_mup_adam_updates_per_layer(arch):
    """ntkbench.sweep's µP Adam: after one step from equal gradients (Adam's first step
    is lr · sign(g)), hidden and readout layers move by lr · base_width / width, the input
    layer, embeddings and LayerNorms by lr; the scaled optimizer is cached."""
    from ntkbench.sweep import _mup_scaled, make_optimizer

    width, base, lr, key = 16, 2, 0.01, jax.random.key(0)
    if arch == "mlp":
        model = MLP(4, 3, width, 2, parametrization="mup", base_width=base, key=key)
        layers = lambda m: m.layers  # noqa: E731
        n_input = 1
    elif arch == "cnn":
        model = CNN((4, 4), 3, width, 2, parametrization="mup", base_width=base, key=key)
        layers = lambda m: (*m.convs, m.readout)  # noqa: E731
        n_input = 1
    else:
        model = TinyTransformer(5, 3, width, 1, 2, parametrization="mup", base_width=base, key=key)
        b = lambda m: m.blocks[0]  # noqa: E731
        layers = lambda m: (m.tok_embed, m.pos_embed, b(m).qkv, b(m).proj, b(m).fc1, b(m).fc2, m.unembed)  # noqa: E731
        n_input = 2
    params = eqx.filter(model, eqx.is_inexact_array)
    opt = _mup_scaled(make_optimizer("adam", lr), model)
    assert opt is _mup_scaled(make_optimizer("adam", lr), model)  # cached by (opt, factors)
    updates, _ = opt.update(jax.tree.map(jnp.ones_like, params), opt.init(params), params)
    for i, layer in enumerate(layers(updates)):
        expected = lr if i < n_input else lr * base / width
        for leaf in jax.tree_util.tree_leaves(layer):
            np.testing.assert_allclose(np.asarray(leaf), -expected, rtol=1e-4)
    if arch == "transformer":
        for leaf in jax.tree_util.tree_leaves((updates.ln_f, updates.blocks[0].ln1)):
            np.testing.assert_allclose(np.asarray(leaf), -lr, rtol=1e-4)
    if arch == "cnn":  # base_width == width: no scaling, the optimizer itself
        at_base = CNN((4, 4), 3, width, 2, parametrization="mup", base_width=width, key=key)
        assert _mup_scaled(make_optimizer("adam", lr), at_base) is make_optimizer("adam", lr)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"width": 0}, "width"),
        ({"depth": 0}, "depth"),
        ({"activation": "swish2"}, "activation"),
        ({"parametrization": "abc"}, "parametrization"),
    ],
)
def test_mlp_bad_arguments(kwargs, match):
    args = {"in_size": 3, "out_size": 2, "width": 4, "depth": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        MLP(**args, key=jax.random.key(0))


def test_mlp_needs_key():
    with pytest.raises(TypeError, match="key"):
        MLP(3, 2, 4, 1, key=None)
    with pytest.raises(TypeError, match="width"):
        MLP(3, 2, 4.0, 1, key=jax.random.key(0))


# --------------------------------------------------------------------------- CNN


def test_cnn_shapes_and_determinism():
    key = jax.random.key(0)
    a = CNN((8, 8), 10, 6, 2, key=key)
    assert _same(a, CNN((8, 8), 10, 6, 2, key=key))
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8))

    @eqx.filter_jit
    def three_layouts(m, x):  # (H, W), (C, H, W) and flat inputs, one compilation
        f = jax.vmap(m)
        return f(x), f(x.reshape(4, 1, 8, 8)), f(x.reshape(4, 64))

    out, chw, flat = three_layouts(a, x)
    assert out.shape == (4, 10)
    np.testing.assert_allclose(chw, out, rtol=1e-6)
    np.testing.assert_allclose(flat, out, rtol=1e-6)
    b = CNN((3, 8, 8), 5, 4, 1, "tanh", pool="flatten", key=key)
    assert _call(b, jnp.ones((3, 8, 8))).shape == (5,)
    assert b.readout.in_features == 4 * 64
    assert (a.width, a.depth) == (6, 2)
    with pytest.raises(ValueError, match="in_shape"):
        _call(a, jnp.ones((7, 7)))
    with pytest.raises(ValueError, match="in_shape"):
        CNN((8,), 10, 4, 1, key=key)


@pytest.mark.parametrize("pool", ["mean", "flatten"])
def test_cnn_output_depends_on_its_input(pool):
    """A CNN that ignored its input (a constant output) would pass the shape, determinism
    and translation tests: different images must give different outputs, and the output's
    gradient with respect to the image must be nonzero."""
    m = CNN((8, 8), 3, 4, 2, pool=pool, key=jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (4, 8, 8))
    out = np.asarray(jax.vmap(m)(xs))
    gaps = [np.abs(out[i] - out[j]).max() for i in range(4) for j in range(i)]
    assert min(gaps) > 1e-4 * np.abs(out).max(), out
    grad = jax.grad(lambda x: jnp.sum(_call(m, x) ** 2))(xs[0])
    assert float(jnp.linalg.norm(grad)) > 1e-4


def test_cnn_translation_equivariant_pool():
    # with mean pooling and circular-free interior shift, a zero-padded image shifted
    # inside the frame gives the same output (conv + global mean are shift invariant
    # when the content stays away from the border)
    m = CNN((12, 12), 3, 4, 1, key=jax.random.key(0))
    img = jnp.zeros((12, 12)).at[3:6, 3:6].set(jax.random.normal(jax.random.key(1), (3, 3)))
    shifted = jnp.roll(img, (2, 3), axis=(0, 1))
    np.testing.assert_allclose(_call(m, img), _call(m, shifted), rtol=1e-5, atol=1e-6)
    assert not np.allclose(_call(m, img), _call(m, jnp.zeros((12, 12))), rtol=1e-3)  # it does see the content


def test_cnn_parametrizations_agree_at_init():
    """Same key: standard, ntk and mup(base_width=width) are the same function at init,
    for both poolings; mup with base_width b is sqrt(b / width) times standard."""
    key, width = jax.random.key(3), 6
    x = jax.random.normal(jax.random.key(4), (5, 2, 6, 6))
    for pool in ("mean", "flatten"):

        def out(param, base=width, pool=pool):
            return _batch(CNN((2, 6, 6), 3, width, 2, "tanh", param, pool=pool,
                              base_width=base, key=key), x)  # fmt: skip

        std = out("standard")
        np.testing.assert_allclose(out("ntk"), std, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out("mup"), std, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out("mup", 2), std * math.sqrt(2 / width), rtol=1e-5, atol=1e-7)


def test_cnn_parametrization_weights_and_layers():
    w, base = 32, 4
    std = CNN((4, 6, 6), 8, w, 2, key=jax.random.key(0))
    ntk = CNN((4, 6, 6), 8, w, 2, parametrization="ntk", key=jax.random.key(0))
    mup = CNN((4, 6, 6), 8, w, 2, parametrization="mup", base_width=base, key=jax.random.key(0))
    for m in (std, ntk, mup):  # plain layers: the structured eNTK rule taps them
        assert all(type(c) is eqx.nn.Conv2d for c in m.convs)
        assert type(m.readout) is eqx.nn.Linear
    assert (ntk.parametrization, mup.parametrization, mup.base_width) == ("ntk", "mup", base)
    for conv, fan_in in zip(std.convs, (4 * 9, w * 9), strict=True):
        assert abs(float(jnp.var(conv.weight)) * fan_in - 1) < 0.1
    for conv in ntk.convs:
        assert abs(float(jnp.var(conv.weight)) - 1) < 0.1
    assert ntk.in_scales == (1 / math.sqrt(4 * 9), 1 / math.sqrt(w * 9), 1 / math.sqrt(w))
    assert mup.in_scales == (1.0, 1.0, base / w)
    assert abs(float(jnp.var(mup.readout.weight)) * base - 1) < 0.25


def test_cnn_entk_scale_ntk_bounded_standard_grows():
    x = jax.random.normal(jax.random.key(0), (6, 6, 6))

    def ratio(param):
        a, b = _entk_scale(lambda w, k: CNN((6, 6), 2, w, 2, parametrization=param, key=k), x, (16, 256))
        return b / a

    r_ntk, r_std = ratio("ntk"), ratio("standard")
    assert 0.7 < r_ntk < 1.4, r_ntk
    assert 8 < r_std < 24, r_std  # width grows 16x (the input conv does not grow)


# --------------------------------------------------------------------------- transformer


def test_transformer_shapes_and_causality():
    key = jax.random.key(0)
    tf = TinyTransformer(30, 16, 32, 2, 4, key=key)
    assert _same(tf, TinyTransformer(30, 16, 32, 2, 4, key=key))
    assert (tf.width, tf.layers, tf.heads) == (32, 2, 4)
    tokens = jax.random.randint(jax.random.key(1), (16,), 0, 30)

    @eqx.filter_jit
    def run(tf, tokens):  # full sequence, a prefix, token 9 changed; one compilation
        return tf(tokens), tf(tokens[:5]), tf(tokens.at[9].set((tokens[9] + 1) % 30))

    logits, prefix, changed = run(tf, tokens)
    assert logits.shape == (16, 30) and prefix.shape == (5, 30)
    np.testing.assert_allclose(prefix, logits[:5], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(changed[:9], logits[:9])
    assert float(jnp.abs(changed[9:] - logits[9:]).max()) > 1e-4
    with pytest.raises(ValueError, match="context"):
        _call(tf, jnp.zeros(17, jnp.int32))
    with pytest.raises(TypeError, match="integers"):
        _call(tf, jnp.zeros(4))
    with pytest.raises(ValueError, match="divisible"):
        TinyTransformer(30, 16, 30, 1, 4, key=key)


def test_transformer_parametrizations_at_init():
    """Same key: ntk is standard at init; mup(base_width=width) is standard only when
    d_head == 1 (its attention scores are scaled 1/d_head, not 1/sqrt(d_head)); mup with
    base_width b is sqrt(b / width) times mup(base_width=width) (only the readout differs)."""
    key, width = jax.random.key(3), 8
    tokens = jax.random.randint(jax.random.key(4), (3, 6), 0, 11)

    def out(param, heads, base=width):
        return _batch(TinyTransformer(11, 6, width, 1, heads, mlp_ratio=2, parametrization=param,
                                      base_width=base, key=key), tokens)  # fmt: skip

    std, mup = out("standard", 2), out("mup", 2)  # d_head = 4
    np.testing.assert_allclose(out("ntk", 2), std, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(mup - std).max()) > 1e-2  # the 1/d_head attention differs
    np.testing.assert_allclose(out("mup", 2, 2), mup * math.sqrt(2 / width), rtol=1e-5, atol=1e-6)
    # d_head == 1: 1/d_head == 1/sqrt(d_head), so mup(base_width=width) is standard
    np.testing.assert_allclose(out("mup", width), out("standard", width), rtol=1e-5, atol=1e-5)


def test_transformer_parametrization_weights_and_layers():
    w, base = 64, 4
    ntk = TinyTransformer(7, 4, w, 1, 4, parametrization="ntk", key=jax.random.key(0))
    mup = TinyTransformer(7, 4, w, 1, 4, parametrization="mup", base_width=base, key=jax.random.key(0))
    std = TinyTransformer(7, 4, w, 1, 4, key=jax.random.key(0))
    b = ntk.blocks[0]
    for layer in (b.qkv, b.proj, b.fc1, b.fc2, ntk.unembed):
        assert type(layer) is eqx.nn.Linear and abs(float(jnp.var(layer.weight)) - 1) < 0.05
    assert b.in_scales == (1 / math.sqrt(w),) * 3 + (1 / math.sqrt(4 * w),)
    assert ntk.unembed_scale == 1 / math.sqrt(w) and mup.unembed_scale == base / w
    assert mup.blocks[0].score_scale == 1 / 16 and std.blocks[0].score_scale == 1 / 4
    assert abs(float(jnp.var(mup.unembed.weight)) * base - 1) < 0.1
    for m in (ntk, mup):  # embeddings and LayerNorms are the same in every parametrization
        for get in (lambda t: t.tok_embed.weight, lambda t: t.pos_embed.weight,
                    lambda t: t.blocks[0].ln1.weight, lambda t: t.ln_f.bias):  # fmt: skip
            np.testing.assert_array_equal(get(m), get(std))


def test_transformer_entk_scale_ntk_bounded_standard_grows():
    tokens = jax.random.randint(jax.random.key(0), (4, 3), 0, 5)

    def ratio(param):
        def make(w, k):
            return TinyTransformer(5, 3, w, 1, 2, mlp_ratio=1, parametrization=param, key=k)

        a, b = _entk_scale(make, tokens, (16, 256))
        return b / a

    r_ntk, r_std = ratio("ntk"), ratio("standard")
    assert 0.7 < r_ntk < 1.4, r_ntk
    assert 8 < r_std < 24, r_std  # width grows 16x


@pytest.mark.parametrize("arch", ["cnn", "transformer"])
def test_structured_entk_sees_parametrization_scales_cnn_transformer(arch):
    """The layer-wise eNTK rule agrees with the reference diagonal under ntk and mup (the
    scales multiply layer inputs, outside the tapped Conv2d / Linear)."""
    kernel = pytest.importorskip("ntkbench.kernel")
    # the transformer's mup adds only a readout input scale (like ntk's) and the
    # attention-score scale (not at a tapped layer): ntk covers it and saves compiles
    for param in ("ntk", "mup") if arch == "cnn" else ("ntk",):
        if arch == "cnn":
            m = CNN((5, 5), 2, 3, 2, "tanh", param, base_width=2, key=jax.random.key(2))
            x = jax.random.normal(jax.random.key(0), (3, 5, 5))
        else:
            m = TinyTransformer(5, 3, 4, 1, 2, mlp_ratio=1, parametrization=param,
                                base_width=2, key=jax.random.key(2))  # fmt: skip
            x = jax.random.randint(jax.random.key(0), (3, 3), 0, 5)
        K = kernel.entk(m, x, method="structured")
        np.testing.assert_allclose(jnp.diag(K), _entk_diag(m, x), rtol=1e-4)


@pytest.mark.parametrize("cls", ["cnn", "transformer"])
def test_bad_parametrization_names_it(cls):
    for kwargs, match in (({"parametrization": "abc"}, "parametrization.*'abc'"),
                          ({"parametrization": "mup", "base_width": 0}, "base_width")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            if cls == "cnn":
                CNN((4, 4), 2, 4, 1, key=jax.random.key(0), **kwargs)
            else:
                TinyTransformer(5, 3, 4, 1, 2, key=jax.random.key(0), **kwargs)


# --------------------------------------------------------------------------- factory


def test_make_model():
    key = jax.random.key(0)
    m = make_model({"name": "mlp", "width": 20, "depth": 1, "parametrization": "ntk"},
                   key=key, in_shape=(8, 8), out_size=10)  # fmt: skip
    assert isinstance(m, MLP) and (m.in_size, m.width, m.parametrization) == (64, 20, "ntk")
    c = make_model({"name": "cnn", "width": 4}, key=key, in_shape=(1, 8, 8), out_size=10)
    assert isinstance(c, CNN) and _call(c, jnp.ones((1, 8, 8))).shape == (10,)
    t = make_model({"name": "transformer", "width": 16, "heads": 2}, key=key,
                   in_shape=(12,), out_size=40)  # fmt: skip
    assert isinstance(t, TinyTransformer) and (t.vocab_size, t.context) == (40, 12)
    assert (c.parametrization, t.parametrization) == ("standard", "standard")
    for name, extra, shape in (("cnn", {}, (1, 8, 8)), ("transformer", {"heads": 2}, (12,))):
        for param in ("ntk", "mup"):
            cfg = {"name": name, "width": 8, "parametrization": param, "base_width": 4, **extra}
            m2 = make_model(cfg, key=key, in_shape=shape, out_size=10)
            assert (m2.parametrization, m2.base_width, m2.width) == (param, 4, 8)
        with pytest.raises(ValueError, match="parametrization"):
            make_model({"name": name, "parametrization": "sp"}, key=key, in_shape=shape, out_size=10)
    assert _same(m, make_model({"name": "mlp", "width": 20, "depth": 1,
                                "parametrization": "ntk"}, key=key, in_shape=(64,),
                               out_size=10))  # fmt: skip


def test_make_model_errors():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['widht'\].*allowed keys"):
        make_model({"name": "mlp", "widht": 3}, key=key, in_shape=(4,), out_size=2)
    with pytest.raises(ValueError, match="name"):
        make_model({"name": "resnet"}, key=key, in_shape=(4,), out_size=2)
    with pytest.raises(ValueError, match="name"):
        make_model({"width": 4}, key=key, in_shape=(4,), out_size=2)
    with pytest.raises(TypeError, match="config"):
        make_model([("name", "mlp")], key=key, in_shape=(4,), out_size=2)


def test_random_features_frozen_kernel_is_the_feature_gram_and_only_the_readout_trains():
    import ntkbench as nb
    from ntkbench.models import RandomFeatures

    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (6, 5))
    frozen = make_model({"name": "random_features", "width": 12}, key=key, in_shape=(5,), out_size=1)
    trained = make_model(
        {"name": "random_features", "width": 12, "features": "trained"}, key=key, in_shape=(5,), out_size=1
    )
    assert isinstance(frozen, RandomFeatures) and frozen.features == "frozen"
    np.testing.assert_allclose(jax.vmap(frozen)(x), jax.vmap(trained)(x), rtol=1e-6)
    # the frozen W is the trained model's initial W; its eNTK is phi phi^T + 1 (readout weights and bias)
    assert trained.hidden is not None
    phi = jax.nn.relu(x @ trained.hidden.weight.T)
    np.testing.assert_allclose(nb.entk(frozen, x, method="jacobian"), phi @ phi.T + 1, rtol=1e-5)
    grads = eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(x) ** 2))(frozen)
    assert [g.shape for g in jax.tree_util.tree_leaves(grads)] == [(1, 12), (1,)]  # the readout only
    with pytest.raises(ValueError, match="features"):
        RandomFeatures(5, 1, 12, features="learned", key=key)


def test_cnn_authors_shape():
    """channels, hidden and downsample: the data paper authors' Conv32-Conv64-Dense256-Dense10
    (layer sizes, pooled feature map 2×2 on 8×8 digits, the count), and bad values named."""
    m = CNN((8, 8), 10, 0, 0, channels=(32, 64), hidden=256, pool="flatten", downsample=True, key=jax.random.key(0))
    assert [c.out_channels for c in m.convs] == [32, 64] and (m.width, m.depth) == (64, 2)
    assert m.hidden is not None and (m.hidden.in_features, m.hidden.out_features) == (64 * 2 * 2, 256)
    assert m.readout.in_features == 256 and m(jnp.ones((8, 8))).shape == (10,)
    n = (9 * 32 + 32) + (9 * 32 * 64 + 64) + (256 * 256 + 256) + (256 * 10 + 10)
    assert count_params(m) == n
    for kwargs, match in (
        ({"channels": []}, "channels"),
        ({"channels": (4, 0)}, "channels"),
        ({"hidden": 0}, "hidden"),
        ({"downsample": "yes"}, "downsample"),
        ({"channels": (4,), "parametrization": "mup"}, "standard"),
    ):
        with pytest.raises(ValueError, match=match):
            CNN((8, 8), 10, 4, 1, key=jax.random.key(0), **kwargs)
