"""ntkbench.entk against independent references: a float64 Jacobian of the raveled
parameter vector contracted in the test, closed forms, and the infinite-width NTK."""

import itertools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ntkbench as nb

METHODS = ["jacobian", "ntvp", "structured", "auto"]


# ---------------------------------------------------------------------------
# Reference: Jacobian of the raveled parameter vector, contracted in float64
# ---------------------------------------------------------------------------


def reference_entk(model, x1, x2=None, full=False):
    """Independent reference: J = d ravel(f) / d ravel(θ), K = J1 J2ᵀ (float64)."""
    if isinstance(model, tuple):
        apply_fn, params = model
        flat, unravel = ravel_pytree(params)
        f = lambda th, x: jnp.ravel(apply_fn(unravel(th), x))  # noqa: E731
    else:
        params, static = eqx.partition(model, eqx.is_inexact_array)
        flat, unravel = ravel_pytree(params)
        f = lambda th, x: jnp.ravel(eqx.combine(unravel(th), static)(x))  # noqa: E731
    jac = jax.vmap(jax.jacrev(f), in_axes=(None, 0))
    J1 = np.asarray(jac(flat, x1), dtype=np.float64)
    J2 = J1 if x2 is None else np.asarray(jac(flat, x2), dtype=np.float64)
    K = np.einsum("ikp,jlp->ijkl", J1, J2)
    return K if full else np.einsum("ijkk->ij", K)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


# ---------------------------------------------------------------------------
# Test models (float64): MLP, CNN, LayerNorm + embedding, scalar output, apply_fn
# ---------------------------------------------------------------------------


class SmallCNN(eqx.Module):
    conv: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(1, 3, 3, padding=1, key=k1, dtype=jnp.float64)
        self.head = eqx.nn.Linear(3 * 5 * 5, 3, key=k2, dtype=jnp.float64)

    def __call__(self, x):
        return self.head(jnp.ravel(jax.nn.relu(self.conv(x))))


class StridedCNN(eqx.Module):
    """Strided convolutions (their input cotangents go by phases in the structured
    features): stride 2 SAME on an odd-sized image, then stride (2, 1) with explicit,
    uneven padding and a non-square kernel."""

    conv0: eqx.nn.Conv2d
    conv1: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv0 = eqx.nn.Conv2d(1, 3, 3, stride=2, padding="SAME", key=k1, dtype=jnp.float64)
        self.conv1 = eqx.nn.Conv2d(3, 4, (2, 3), stride=(2, 1), padding=((0, 1), (1, 0)), key=k2, dtype=jnp.float64)
        self.head = eqx.nn.Linear(4 * 2 * 2, 2, key=k3, dtype=jnp.float64)

    def __call__(self, x):
        h = jnp.tanh(self.conv0(x))  # (3, 4, 3)
        return self.head(jnp.ravel(jnp.tanh(self.conv1(h))))  # (4, 2, 2)


class TokenModel(eqx.Module):
    """Embedding -> LayerNorm -> per-token Linear (inside vmap) -> flatten -> Linear."""

    emb: eqx.nn.Embedding
    norm: eqx.nn.LayerNorm
    mix: eqx.nn.Linear
    head: eqx.nn.Linear

    def __init__(self, key, vocab=11, d=6, t=4):
        k1, k2, k3 = jax.random.split(key, 3)
        self.emb = eqx.nn.Embedding(vocab, d, key=k1, dtype=jnp.float64)
        self.norm = eqx.nn.LayerNorm(d, dtype=jnp.float64)
        self.mix = eqx.nn.Linear(d, d, key=k2, dtype=jnp.float64)
        self.head = eqx.nn.Linear(t * d, 2, key=k3, dtype=jnp.float64)

    def __call__(self, tokens):
        h = jax.vmap(self.emb)(tokens)
        # perturb LayerNorm's affine parameters so their gradients are non-trivial
        h = jax.vmap(self.norm)(h)
        h = jax.nn.gelu(jax.vmap(self.mix)(h))
        return self.head(jnp.ravel(h))


def _perturb(model, key):
    """Move every parameter off its initial value (LayerNorm starts at 1/0)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [p + 0.1 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys, strict=True)]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


def make_case(name, key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    if name == "mlp":
        model = eqx.nn.MLP(5, 3, 12, 2, activation=jnp.tanh, key=k1, dtype=jnp.float64)
        x = jax.random.normal(k2, (7, 5), jnp.float64)
        x2 = jax.random.normal(k3, (4, 5), jnp.float64)
    elif name == "cnn":
        model = SmallCNN(k1)
        x = jax.random.normal(k2, (7, 1, 5, 5), jnp.float64)
        x2 = jax.random.normal(k3, (4, 1, 5, 5), jnp.float64)
    elif name == "strided":
        model = StridedCNN(k1)
        x = jax.random.normal(k2, (7, 1, 7, 6), jnp.float64)
        x2 = jax.random.normal(k3, (4, 1, 7, 6), jnp.float64)
    elif name == "tokens":
        model = _perturb(TokenModel(k1), k4)
        x = jax.random.randint(k2, (7, 4), 0, 11)
        x2 = jax.random.randint(k3, (4, 4), 0, 11)
    elif name == "scalar":
        model = eqx.nn.MLP(5, "scalar", 10, 2, key=k1, dtype=jnp.float64)
        x = jax.random.normal(k2, (7, 5), jnp.float64)
        x2 = jax.random.normal(k3, (4, 5), jnp.float64)
    elif name == "apply_fn":
        params = {
            "w1": jax.random.normal(k1, (5, 9), jnp.float64) / 3,
            "w2": jax.random.normal(k4, (9, 2), jnp.float64) / 3,
        }
        model = (lambda p, x: jnp.tanh(x @ p["w1"]) @ p["w2"], params)
        x = jax.random.normal(k2, (7, 5), jnp.float64)
        x2 = jax.random.normal(k3, (4, 5), jnp.float64)
    else:
        raise AssertionError(name)
    return model, x, x2


CASES = ["mlp", "cnn", "strided", "tokens", "scalar", "apply_fn"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", METHODS)
def test_methods_match_float64_reference(case, method, x64, getkey):
    model, x, x2 = make_case(case, getkey())
    for full in (False, True):
        outputs = "full" if full else "trace"
        ref_sym = reference_entk(model, x, full=full)
        ref_cross = reference_entk(model, x, x2, full=full)
        for block in (None, 3):
            K = nb.entk(model, x, outputs=outputs, method=method, block_size=block)
            assert K.dtype == jnp.float64
            assert K.shape == ref_sym.shape
            assert rel_err(K, ref_sym) < 1e-10, (outputs, block)
            Kc = nb.entk(model, x, x2, outputs=outputs, method=method, block_size=block)
            assert Kc.shape == ref_cross.shape
            assert rel_err(Kc, ref_cross) < 1e-10, (outputs, block)


@pytest.mark.parametrize("block", [1, 2, 4, 6, 7, 100])
@pytest.mark.parametrize("method", ["structured", "jacobian", "ntvp"])
def test_any_block_size_and_odd_n(block, method, x64, getkey):
    model, x, x2 = make_case("mlp", getkey())
    ref = reference_entk(model, x, x2[:3])
    K = nb.entk(model, x, x2[:3], method=method, block_size=block)
    assert rel_err(K, ref) < 1e-10
    Ks = nb.entk(model, x, method=method, block_size=block)
    np.testing.assert_array_equal(np.asarray(Ks), np.asarray(Ks).T)  # mirrored tiles: exact
    assert rel_err(Ks, reference_entk(model, x)) < 1e-10


def test_float32_methods_agree_to_roundoff(getkey):
    model = eqx.nn.MLP(16, 4, 64, 2, key=getkey())
    x = jax.random.normal(getkey(), (9, 16))
    Ks = {m: nb.entk(model, x, method=m, outputs="full") for m in ["jacobian", "ntvp", "structured"]}
    assert Ks["jacobian"].dtype == jnp.float32
    for m in ("ntvp", "structured"):
        assert rel_err(Ks[m], Ks["jacobian"]) < 1e-5


def test_structured_taps_embedding_vmapped_linear_and_head(x64, getkey):
    """The rule takes the embedding (in vmap), the per-token linear (in vmap) and the head;
    the LayerNorm goes through the Jacobian fallback (values: the float64 test above)."""
    from ntkbench.kernel import _probe, _tap

    model, x, _ = make_case("tokens", getkey())
    _, n = _tap(model)
    assert n == 3  # emb, mix, head
    calls = _probe(model, x.shape[1:], x.dtype)
    assert sorted(calls) == [0, 1, 2]
    assert [(c.size, c.depth) for c in calls[1]] == [(4, 1)]  # mix: 4 tokens in one vmap
    assert [(c.size, c.depth) for c in calls[2]] == [(1, 0)]  # head: top level


def _to64(model):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)


@pytest.mark.parametrize("arch", ["transformer", "cnn", "authors_cnn"])
def test_structured_on_package_models_matches_float64(arch, x64, getkey):
    """ntkbench.models.TinyTransformer (embeddings, per-token linears in vmap, LayerNorm,
    attention) and ntkbench.models.CNN (convolutions; the data paper authors' shape: convs
    of two channel counts with 2×2 average pooling of an odd-sized image, flattened, a hidden
    dense layer): structured and auto vs reference."""
    from ntkbench.kernel import _probe

    if arch == "transformer":
        model = _perturb(
            _to64(nb.TinyTransformer(7, 5, width=8, layers=1, heads=2, mlp_ratio=2, key=getkey())), getkey()
        )
        x = jax.random.randint(getkey(), (5, 4), 0, 7)
        x2 = jax.random.randint(getkey(), (3, 4), 0, 7)
        n_tapped = 7  # 2 embeddings, qkv, proj, fc1, fc2, unembed
    elif arch == "cnn":
        model = _perturb(_to64(nb.CNN((6, 6), 3, width=3, depth=2, key=getkey())), getkey())
        x = jax.random.normal(getkey(), (5, 6, 6), jnp.float64)
        x2 = jax.random.normal(getkey(), (3, 6, 6), jnp.float64)
        n_tapped = 3  # 2 convs, readout
    else:
        shape = (7, 6)  # the odd row is dropped by the pooling
        cnn = nb.CNN(shape, 3, 0, 0, channels=(2, 3), hidden=5, pool="flatten", downsample=True, key=getkey())
        model = _perturb(_to64(cnn), getkey())
        x = jax.random.normal(getkey(), (5, *shape), jnp.float64)
        x2 = jax.random.normal(getkey(), (3, *shape), jnp.float64)
        n_tapped = 4  # 2 convs, hidden, readout
    assert len(_probe(model, x.shape[1:], x.dtype)) == n_tapped
    K = nb.entk(model, x, method="structured")
    assert rel_err(K, reference_entk(model, x)) < 1e-10
    assert rel_err(nb.entk(model, x, method="auto"), reference_entk(model, x)) < 1e-10
    block = 2 if arch == "cnn" else None  # tiles: tested on every model in the tests above
    Kc = nb.entk(model, x, x2, outputs="full", method="structured", block_size=block)
    assert rel_err(Kc, reference_entk(model, x, x2, full=True)) < 1e-10


@pytest.mark.parametrize("route", ["gram", "jac"])
def test_both_routes_of_tapped_layers_match(route, x64, getkey, monkeypatch):
    """Force every tapped layer onto one route (token Grams / Jacobian) and compare."""
    from ntkbench.kernel import _features

    orig = _features._with_routes  # looked up by _structured_vjp in _features
    monkeypatch.setattr(_features, "_with_routes", lambda *a: [L._replace(route=route) for L in orig(*a)])
    n = 6 if route == "gram" else 5  # shapes not compiled elsewhere: the forced route is traced
    for case, outputs in (("cnn", "trace"), ("tokens", "full")):
        model, x, x2 = make_case(case, getkey())
        K = nb.entk(model, x[:n], x2, outputs=outputs, method="structured")
        assert rel_err(K, reference_entk(model, x[:n], x2, full=outputs == "full")) < 1e-10


def test_nested_vmap_and_scan_fall_back(x64, getkey):
    """A linear inside two vmaps or inside lax.scan is not tapped, and the answer is right."""
    from ntkbench.kernel import _probe

    class Nested(eqx.Module):
        lin: eqx.nn.Linear
        scanned: eqx.nn.Linear
        head: eqx.nn.Linear

        def __call__(self, x):  # x (2, 3, 4)
            h = jnp.tanh(jax.vmap(jax.vmap(self.lin))(x))  # (2, 3, 4)
            h, _ = jax.lax.scan(lambda c, r: (jnp.tanh(self.scanned(c + r)), None), h[0, 0], h[1])
            return self.head(h)

    k = jax.random.split(getkey(), 3)
    model = Nested(*(eqx.nn.Linear(4, 4 if i < 2 else 2, key=k[i], dtype=jnp.float64) for i in range(3)))
    x = jax.random.normal(getkey(), (5, 2, 3, 4), jnp.float64)
    assert sorted(_probe(model, x.shape[1:], x.dtype)) == [2]  # head only
    for outputs in ("trace", "full"):
        K = nb.entk(model, x, outputs=outputs, method="structured")
        assert rel_err(K, reference_entk(model, x, full=outputs == "full")) < 1e-10


def test_auto_respects_memory_limit(x64, getkey):
    """A tight memory_limit makes auto pick a block size (or ntvp); the kernel stays right."""
    from ntkbench.kernel import _choose, costs

    model, x, x2 = make_case("tokens", getkey())
    c = costs(model, x)
    assert set(c) == {"jacobian", "ntvp", "structured"}
    assert c["structured"].flops < c["jacobian"].flops < c["ntvp"].flops
    assert _choose(model, x, None, "trace", 2**31, None) == ("structured", None, None)
    limit = int(x.shape[0] * c["structured"].feature + 3 * 3 * c["structured"].pair + 3 * c["structured"].feature)
    method, block, fblock = _choose(model, x, None, "trace", limit, None)
    assert method == "structured" and block is not None and block < x.shape[0]
    assert fblock == block  # memory-bound: features in blocks too
    method, block, fblock = _choose(model, x, None, "trace", int(c["structured"].feature), None)
    assert method == "ntvp"  # no features fit: kernel-vector products, tile by tile
    for lim in (limit, int(c["structured"].feature)):
        K = nb.entk(model, x, memory_limit=lim, outputs="full")
        assert rel_err(K, reference_entk(model, x, full=True)) < 1e-10


@pytest.mark.parametrize("outputs", ["trace", "full"])
def test_auto_triangle_with_one_feature_batch_matches_reference(x64, getkey, monkeypatch, outputs):
    """The speed rule (a symmetric kernel as the upper triangle of tiles, features in one
    batch) gives the same kernel, ragged last tile included; forced here on a small model
    by lowering the thresholds."""
    from ntkbench import kernel as km
    from ntkbench.kernel import _costs  # the thresholds are read by _costs._triangle_block

    model, x, _ = make_case("cnn", getkey())
    n, k = x.shape[0], km._n_outputs(model, x.shape[1:], x.dtype)
    monkeypatch.setattr(_costs, "_JAC_ROW_BYTES", 0)
    monkeypatch.setattr(_costs, "_TILE_MIN_N", 2)
    monkeypatch.setattr(_costs, "_TRIANGLE_ROWS", 2 * k)  # full: tiles of 2 samples
    monkeypatch.setattr(_costs, "_TRIANGLE_MIN_ROWS", 1)
    method, block, fblock = km._choose(model, x, None, outputs, 2**31, None)
    assert block == (2 if outputs == "full" else -(-n // 2)) and fblock == n
    assert -(-n // block) * block > n  # the last tile is ragged
    K = km._entk_jit(model, x, None, outputs, method, block, fblock)
    assert rel_err(km._symmetrize(K), reference_entk(model, x, full=outputs == "full")) < 1e-10


@pytest.mark.parametrize("full", [False, True])
def test_triangle_contracts_each_upper_tile_once(full):
    # _triangle contracts nb(nb+1)/2 of the nb² tiles (static slices, the last one short)
    # and mirrors the rest; the result equals one product.
    from ntkbench import kernel as kmod

    n, block, k = 10, 3, 2  # nb = 4 tiles per side, the last of 1 sample
    rng = np.random.default_rng(0)
    feats = [jnp.asarray(rng.normal(size=(n, k, 5))), jnp.asarray(rng.normal(size=(n, k, 3)))]
    shapes = []

    def contract(fa, fb, full):
        shapes.append((fa[0].shape[0], fb[0].shape[0]))
        return kmod._contract_jacobian(fa, fb, full)

    tri = kmod._triangle(contract, feats, n, block, full)
    assert len(shapes) == 10 and sorted(shapes).count((1, 1)) == 1
    np.testing.assert_allclose(
        np.asarray(tri), np.asarray(kmod._contract_jacobian(feats, feats, full)), rtol=1e-5, atol=1e-5
    )


def test_weight_tied_linear_falls_back(x64, getkey):
    """A linear whose weight is also read directly (weight tying) must not use the rule."""

    class Tied(eqx.Module):
        lin: eqx.nn.Linear

        def __call__(self, x):
            h = jnp.tanh(self.lin(x))
            return self.lin.weight.T @ h  # reuses the weight directly

    model = Tied(eqx.nn.Linear(4, 4, key=getkey(), dtype=jnp.float64))
    x = jax.random.normal(getkey(), (5, 4), jnp.float64)
    K = nb.entk(model, x, method="structured", outputs="full")
    assert rel_err(K, reference_entk(model, x, full=True)) < 1e-10

    class Twice(eqx.Module):
        lin: eqx.nn.Linear

        def __call__(self, x):
            return self.lin(jnp.tanh(self.lin(x)))

    model = Twice(eqx.nn.Linear(4, 4, key=getkey(), dtype=jnp.float64))
    K = nb.entk(model, x, method="structured")
    assert rel_err(K, reference_entk(model, x)) < 1e-10


# ---------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------


def test_linear_model_is_gram_of_inputs(x64, getkey):
    """f(x) = Wx + b with K outputs: traced eNTK = K (X Xᵀ + 1); full = (X Xᵀ + 1) δ_kl."""
    k_out = 4
    model = eqx.nn.Linear(6, k_out, key=getkey(), dtype=jnp.float64)
    X = np.asarray(jax.random.normal(getkey(), (9, 6), jnp.float64))
    X2 = np.asarray(jax.random.normal(getkey(), (5, 6), jnp.float64))
    gram = X @ X.T + 1.0
    for method in METHODS:
        K = nb.entk(model, X, method=method)
        np.testing.assert_allclose(K, k_out * gram, rtol=1e-12, atol=1e-12)
        Kf = nb.entk(model, X, X2, outputs="full", method=method)
        expected = (X @ X2.T + 1.0)[:, :, None, None] * np.eye(k_out)
        np.testing.assert_allclose(Kf, expected, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Infinite width: ReLU MLP in NTK parametrization -> analytic arc-cosine NTK
# ---------------------------------------------------------------------------


class NTKMLP(eqx.Module):
    """h_{l+1} = W_l (σ_w/√n_l · φ(h_l)) + b_l with W, b ~ N(0, 1): NTK parametrization
    with σ_b = 1 (the bias enters with unit gradient)."""

    layers: list
    sigma_w: float = eqx.field(static=True)

    def __init__(self, d_in, width, depth, key, sigma_w=2.0**0.5):
        sizes = [d_in] + [width] * depth + [1]
        keys = jax.random.split(key, 2 * len(sizes))
        layers = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            lin = eqx.nn.Linear(a, b, key=keys[2 * i])
            lin = eqx.tree_at(
                lambda l: (l.weight, l.bias),
                lin,
                (jax.random.normal(keys[2 * i], (b, a)), jax.random.normal(keys[2 * i + 1], (b,))),
            )
            layers.append(lin)
        self.layers = layers
        self.sigma_w = sigma_w

    def __call__(self, x):
        h = x
        for i, lin in enumerate(self.layers):
            if i > 0:
                h = jax.nn.relu(h)
            h = lin(self.sigma_w / math.sqrt(h.shape[0]) * h)
        return h


def analytic_relu_ntk(X, depth, sigma_w=2.0**0.5, sigma_b=1.0):
    """Infinite-width NTK of NTKMLP (Jacot et al. 2018; arc-cosine kernels, Cho & Saul)."""
    d = X.shape[1]
    sigma = sigma_w**2 * (X @ X.T) / d + sigma_b**2
    theta = sigma.copy()
    for _ in range(depth):
        diag = np.sqrt(np.diag(sigma))
        norm = np.outer(diag, diag)
        cos = np.clip(sigma / norm, -1.0, 1.0)
        ang = np.arccos(cos)
        e_phi = norm / (2 * np.pi) * (np.sin(ang) + (np.pi - ang) * cos)
        e_dphi = (np.pi - ang) / (2 * np.pi)
        sigma_dot = sigma_w**2 * e_dphi
        sigma = sigma_w**2 * e_phi + sigma_b**2
        theta = theta * sigma_dot + sigma
    return theta


def test_relu_ntk_parametrization_approaches_infinite_width_limit(getkey):
    X = np.array(jax.random.normal(getkey(), (6, 5)))
    X /= np.linalg.norm(X, axis=1, keepdims=True) / math.sqrt(5)
    depth = 2
    exact = analytic_relu_ntk(X.astype(np.float64), depth)
    errors = {}
    for width in (32, 256, 2048):
        errs = []
        for _ in range(3):
            model = NTKMLP(5, width, depth, getkey())
            K = np.asarray(nb.entk(model, jnp.asarray(X)), np.float64)
            errs.append(np.linalg.norm(K - exact) / np.linalg.norm(exact))
        errors[width] = float(np.mean(errs))
    assert errors[2048] < errors[256] < errors[32], errors
    assert errors[2048] < 0.08, errors
    # error ~ width^(-1/2): a 64x wider net should be at least ~3x closer
    assert errors[32] / errors[2048] > 3.0, errors


# ---------------------------------------------------------------------------
# Bad input, compilation, misc
# ---------------------------------------------------------------------------


def test_bad_input_names_the_argument(getkey):
    model = eqx.nn.MLP(4, 2, 8, 1, key=getkey())
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match="method"):
        nb.entk(model, x, method="fastest")
    with pytest.raises(ValueError, match="outputs"):
        nb.entk(model, x, outputs="diag")
    with pytest.raises(ValueError, match="x2"):
        nb.entk(model, x, jnp.ones((3, 5)))
    with pytest.raises(ValueError, match="x1"):
        nb.entk(model, jnp.ones((0, 4)))
    with pytest.raises(ValueError, match="x1"):
        nb.entk(model, jnp.ones((3, 7)))  # the model cannot take 7 features
    with pytest.raises(ValueError, match="block_size"):
        nb.entk(model, x, block_size=0)
    with pytest.raises(TypeError, match="model"):
        nb.entk(lambda x: x, x)  # no parameters
    with pytest.raises(TypeError, match="model"):
        nb.entk((lambda p, x: x, {"n": 3}), x)  # params without arrays
    with pytest.raises(TypeError, match="model"):
        nb.entk(42, x)
    with pytest.raises(ValueError, match="x2"):
        nb.entk(model, x, jnp.ones((0, 4)))
    nan_model = eqx.tree_at(lambda m: m.layers[0].weight, model, jnp.full((8, 4), jnp.nan))
    with pytest.raises(ValueError, match="NaN or Inf"):
        nb.entk(nan_model, x)


def test_wiring_auto_choice_is_keyed_on_parameter_shapes(getkey):
    # A wiring test, not a correctness test: "auto" resolves to "jacobian" for this model,
    # so comparing the two checks the dispatch and its cache, not the kernel (the methods
    # are checked against reference_entk above). Same pytree structure, different
    # parameter shapes: the cached "auto" choice and the input check must not leak from
    # one to the other.
    def apply_fn(p, x):
        return jnp.tanh(p["w"] @ x)

    x = jax.random.normal(getkey(), (5, 3))
    small = {"w": jax.random.normal(getkey(), (2, 3))}
    np.testing.assert_allclose(
        nb.entk((apply_fn, small), x), np.asarray(nb.entk((apply_fn, small), x, method="jacobian")), rtol=1e-5
    )
    wrong = {"w": jax.random.normal(getkey(), (2, 4))}  # cannot take 3 features
    with pytest.raises(ValueError, match="x1"):
        nb.entk((apply_fn, wrong), x)


@pytest.mark.parametrize("full", [False, True])
def test_symmetric_kernel_computes_each_off_diagonal_tile_once(full):
    # Count the tiles _tiles evaluates: the symmetric case evaluates nb(nb+1)/2 of the
    # nb² tiles and mirrors the rest, and the result equals the kernel tiled in full.
    from ntkbench import kernel as kmod

    n, block, k = 10, 3, 2  # nb = 4 tiles per side, the last one padded
    rng = np.random.default_rng(0)
    a = rng.normal(size=(12, k, 5))
    gram = np.einsum("iap,jbp->ijab", a, a)  # symmetric: gram[i,j,a,b] = gram[j,i,b,a]
    if not full:
        gram = np.einsum("ijaa->ij", gram)
    calls = []

    def tile_fn(i, j):
        jax.debug.callback(lambda i, j: calls.append((int(i), int(j))), i, j)
        rows = jax.lax.dynamic_slice_in_dim(jnp.asarray(gram), i * block, block, 0)
        return jax.lax.dynamic_slice_in_dim(rows, j * block, block, 1)

    sym = kmod._tiles(tile_fn, n, n, block, True, full, k, jnp.float32)
    jax.block_until_ready(sym)
    assert sorted(calls) == [(i, j) for i in range(4) for j in range(i, 4)]  # 10 of 16
    calls.clear()
    every = kmod._tiles(tile_fn, n, n, block, False, full, k, jnp.float32)
    jax.block_until_ready(every)
    assert len(calls) == 16
    np.testing.assert_allclose(np.asarray(sym), np.asarray(every), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(sym), gram[:n, :n], rtol=1e-5)


def test_compiled_once_per_shape(getkey):
    traces = []

    class Counting(eqx.Module):
        lin: eqx.nn.Linear

        def __call__(self, x):
            traces.append(1)
            return jnp.tanh(self.lin(x))

    model = Counting(eqx.nn.Linear(3, 2, key=getkey()))
    x = jax.random.normal(getkey(), (5, 3))
    nb.entk(model, x)
    first = len(traces)
    assert first > 0
    model2 = eqx.tree_at(lambda m: m.lin.weight, model, model.lin.weight * 2)  # new values, same structure
    nb.entk(model2, x + 1.0)
    assert len(traces) == first  # no retrace: compiled once per shape
    nb.entk(model, jnp.ones((6, 3)))
    assert len(traces) > first  # a new shape compiles again


def test_entk_diag_matches_kernel_diagonal(x64, getkey):
    for case in ("mlp", "tokens"):
        model, x, _ = make_case(case, getkey())
        np.testing.assert_allclose(nb.kernel.entk_diag(model, x), np.diag(reference_entk(model, x)), rtol=1e-10)


@pytest.mark.parametrize(
    "spatial, kernel, stride, padding",
    [
        ((9, 8), (3, 3), (2, 2), "SAME"),
        ((10, 7), (3, 2), (2, 3), "VALID"),
        ((11, 9), (5, 4), (3, 2), ((2, 1), (0, 3))),
        ((8, 8), (1, 1), (2, 2), "VALID"),  # kernel smaller than the stride: empty phases
        ((12, 13), (4, 4), (2, 2), ((1, 2), (3, 0))),
        ((16, 16), (7, 7), (4, 4), "SAME"),
        ((13,), (3,), (2,), "SAME"),
        ((7, 6, 5), (3, 3, 2), (2, 2, 2), "SAME"),
    ],
)
def test_phase_transpose_is_the_convolutions_input_cotangent(x64, spatial, kernel, stride, padding):
    """The strided convolutions' input cotangent by phases equals jax.vjp's (float64)."""
    from ntkbench import kernel as km

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(4, 3, *kernel)))
    x = jnp.zeros((3, *spatial))
    pads = tuple(jax.lax.padtype_to_pads(spatial, kernel, stride, padding)) if isinstance(padding, str) else padding
    y, vjp = jax.vjp(lambda x: jax.lax.conv_general_dilated(x[None], w, stride, pads)[0], x)
    g = jnp.asarray(rng.normal(size=y.shape))
    ours = km._phase_transpose(w, g, spatial, stride, pads)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(vjp(g)[0]), rtol=1e-12, atol=1e-12)


def test_repeated_calls_reuse_a_plan_without_stale_results(getkey):
    """The steady-state path (a plan per model object and shapes: no checks, no partition)
    gives the kernel of the slow path; another model object, or the same structure with
    other parameters, never gets a stale kernel; the plan does not keep a model alive."""
    import gc

    from ntkbench import kernel as kmod

    model = eqx.nn.MLP(6, 3, 16, 2, key=getkey())
    x = jax.random.normal(getkey(), (7, 6))
    first = nb.entk(model, x)  # slow path, stores the plan
    key = kmod._plan_key(model, x, None, "trace", "auto", None, None)
    assert kmod._PLANS[key][0]() is model
    np.testing.assert_array_equal(nb.entk(model, x), first)  # steady-state path
    np.testing.assert_allclose(nb.entk(model, np.asarray(x)), first, rtol=1e-6)  # numpy input: slow path
    other = eqx.tree_at(lambda m: m.layers[0].weight, model, 2.0 * model.layers[0].weight)
    np.testing.assert_allclose(nb.entk(other, x), nb.entk(other, x, method="jacobian"), rtol=2e-5, atol=1e-5)
    assert not np.allclose(nb.entk(other, x), first)
    with pytest.raises(ValueError, match="x1: contains NaN"):  # the fast path still checks the result
        nb.entk(model, x.at[0, 0].set(jnp.nan))
    del model, other
    gc.collect()
    assert kmod._PLANS[key][0]() is None
