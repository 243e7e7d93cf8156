"""Flax models in the engine: NNX modules, linen modules with their variables, and Equinox
models with ``eqx.nn.State``. Each kernel against a float64 per-sample Jacobian of the
raveled *trainable* parameters (``nnx.Param``, ``variables["params"]``, the Equinox
model's arrays), contracted in the test; BatchNorm running statistics far from 0 and 1
show that the state is held fixed, not differentiated (the kernel differs from the
all-state one)."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ntkbench as nb
from ntkbench.kernel import as_model, costs
from ntkbench.kernel._stateful import tappable
from ntkbench.kernel._taps import _probe
from ntkbench.measures import flatten_full

nnx = pytest.importorskip("flax.nnx")
linen = pytest.importorskip("flax.linen")

METHODS = ["jacobian", "ntvp", "structured", "auto"]
F64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}


def jacobian_kernel(f, theta, x1, full=False):
    """K = J Jᵀ of f(θ, x_i) raveled, J by jax.jacrev per sample (compiled: op by op, a
    convolutional net's took seconds), contracted in float64."""
    flat, unravel = ravel_pytree(theta)
    jac = jax.jit(jax.vmap(jax.jacrev(lambda t, xi: jnp.ravel(f(unravel(t), xi))), in_axes=(None, 0)))
    J = np.asarray(jac(flat, x1))
    K = np.einsum("ikp,jlp->ijkl", J.astype(np.float64), J.astype(np.float64))
    return K if full else np.einsum("ijkk->ij", K)


def nnx_reference(model, x, trained=nnx.Param, full=False):
    """The kernel of ``model`` in evaluation mode over the state ``trained`` selects
    (``nnx.Param``, or ``...`` for all state), the rest closed over."""
    graphdef, theta, rest = nnx.split(model, trained, ...)

    def f(t, xi):
        m = nnx.merge(graphdef, t, rest)
        m.eval()
        return m(xi[None])[0]

    return jacobian_kernel(f, theta, x, full)


def linen_reference(apply, variables, x, collections=("params",), full=False):
    """The kernel over the variable collections ``collections``, the others closed over."""
    theta = {k: v for k, v in variables.items() if k in collections}
    rest = {k: v for k, v in variables.items() if k not in collections}
    return jacobian_kernel(lambda t, xi: apply({**t, **rest}, xi[None])[0], theta, x, full)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ---------------------------------------------------------------------------
# Models (float64)
# ---------------------------------------------------------------------------


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(5, 8, rngs=rngs, **F64)
        self.l2 = nnx.Linear(8, 3, rngs=rngs, **F64)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


class NNXCNN(nnx.Module):
    """Conv → BatchNorm (running statistics) → ReLU → flatten (batch style) → Linear."""

    def __init__(self, rngs, norm=False):
        self.conv = nnx.Conv(1, 3, (3, 3), rngs=rngs, **F64)
        self.bn = nnx.BatchNorm(3, rngs=rngs, **F64) if norm else None
        self.head = nnx.Linear(3 * 5 * 5, 3, rngs=rngs, **F64)

    def __call__(self, x):
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)  # use_running_average=False: training mode until .eval()
        return self.head(jax.nn.relu(y).reshape(y.shape[0], -1))


def far_statistics(bn, key):
    """Running mean about 3 and variance about 5 (far from the initial 0 and 1), in the
    statistics' own dtype (NNX keeps them in float32 whatever ``param_dtype``)."""
    k1, k2 = jax.random.split(key)
    bn.mean[...] = 3.0 + jax.random.normal(k1, bn.mean.shape, bn.mean.dtype)
    bn.var[...] = 5.0 + jax.random.uniform(k2, bn.var.shape, bn.var.dtype)


class LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        x = jnp.tanh(linen.Dense(8, **F64)(x))
        return linen.Dense(3, **F64)(x)


class LinenBN(linen.Module):
    @linen.compact
    def __call__(self, x, train: bool = True):
        x = linen.Dense(6, **F64)(x)
        x = linen.BatchNorm(use_running_average=not train, **F64)(x)
        return linen.Dense(3, **F64)(jnp.tanh(x))


def _x(shape, key=1):
    return jax.random.normal(jax.random.key(key), shape, jnp.float64)


# ---------------------------------------------------------------------------
# NNX
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_nnx_mlp_every_method_against_reference(method, x64):
    """Tolerance 1e-10: float64 throughout; the methods differ in summation order only."""
    model = NNXMLP(nnx.Rngs(0))
    x, x2 = _x((6, 5)), _x((4, 5), 2)
    assert rel_err(nb.entk(model, x, method=method), nnx_reference(model, x)) < 1e-10
    ref = nnx_reference(model, jnp.concatenate([x, x2]), full=True)[:6, 6:]
    assert rel_err(nb.entk(model, x, x2, outputs="full", method=method), ref) < 1e-10


@pytest.mark.parametrize("method", ["jacobian", "structured", "auto"])
def test_nnx_cnn_against_reference(method, x64):
    model = NNXCNN(nnx.Rngs(1))
    x = _x((5, 5, 5, 1))
    assert rel_err(nb.entk(model, x, method=method), nnx_reference(model, x)) < 1e-10


@pytest.mark.parametrize("method", METHODS)
def test_nnx_batchnorm_statistics_are_held_fixed(method, x64):
    """The kernel is over nnx.Param only, in evaluation mode (running statistics), and it
    differs from the kernel that also differentiates the BatchStat mean and variance."""
    model = NNXCNN(nnx.Rngs(2), norm=True)
    far_statistics(model.bn, jax.random.key(3))
    x = _x((5, 5, 5, 1))
    K = np.asarray(nb.entk(model, x, method=method))
    assert rel_err(K, nnx_reference(model, x)) < 1e-10
    assert rel_err(K, nnx_reference(model, x, trained=...)) > 1e-3  # the statistics would enter
    assert not model.bn.use_running_average  # the user's module is left in its mode
    np.testing.assert_allclose(nb.entk_diag(model, x), np.diag(nnx_reference(model, x)), rtol=1e-10)


def test_nnx_module_changed_in_place_gives_the_new_kernel(x64):
    """An NNX module is mutable: a second call on the same object after an in-place update
    must not reuse the first call's parameters."""
    model = NNXMLP(nnx.Rngs(4))
    x = _x((4, 5))
    K0 = np.asarray(nb.entk(model, x))
    model.l1.kernel[...] = 2.0 * model.l1.kernel[...]
    K1 = np.asarray(nb.entk(model, x))
    assert rel_err(K1, nnx_reference(model, x)) < 1e-10
    assert rel_err(K1, K0) > 1e-2


class NNXShared(nnx.Module):
    """One Linear applied twice (the same variables at two places of the graph)."""

    def __init__(self, rngs):
        self.first = nnx.Linear(5, 5, rngs=rngs, **F64)
        self.again = self.first
        self.head = nnx.Linear(5, 3, rngs=rngs, **F64)

    def __call__(self, x):
        return self.head(jnp.tanh(self.again(jnp.tanh(self.first(x)))))


def test_nnx_repeated_calls_follow_sharing_and_attributes(x64):
    """Repeated calls are planned per module structure and read the arrays afresh: a layer
    shared at two places stays one parameter (a pytree flatten would unshare it); a
    changed static attribute (``tied``) is a new structure. Against the reference: 1e-10."""
    shared = NNXShared(nnx.Rngs(10))
    x = _x((4, 5))
    for _ in range(2):  # the second call: the plan of the first
        assert rel_err(nb.entk(shared, x), nnx_reference(shared, x)) < 1e-10
    model = NNXTokens(nnx.Rngs(11))
    xt = _x((3, 4, 5))
    K0 = nb.entk(model, xt)
    model.tied = True
    assert rel_err(nb.entk(model, xt), nnx_reference(model, xt)) < 1e-10
    assert rel_err(nb.entk(model, xt), K0) > 1e-3


def test_nnx_lnp_against_the_kernel_over_params(x64):
    """χ_net = Tr K / B, ‖∇L‖² = uᵀKu / B², χ_pos = uᵀKu / (‖u‖² Tr K) with K the float64
    full kernel over nnx.Param and u = f − y (MSE); statistics far from 0 and 1."""
    model = NNXCNN(nnx.Rngs(5), norm=True)
    far_statistics(model.bn, jax.random.key(6))
    x, y = _x((4, 5, 5, 1)), _x((4, 3), 7)
    B = x.shape[0]
    r = nb.lnp(model, x, y, "mse", probes=None)
    K = flatten_full(jnp.asarray(nnx_reference(model, x, full=True)))
    K = np.asarray(K, np.float64)
    graphdef, state = nnx.split(model)
    evaluated = nnx.merge(graphdef, state)
    evaluated.eval()
    u = (np.asarray(evaluated(x)) - np.asarray(y)).reshape(-1)
    uKu, uu, tr = u @ K @ u, u @ u, np.trace(K)
    assert float(r.chi_net) == pytest.approx(tr / B, rel=1e-10)
    assert float(r.grad_sq) == pytest.approx(uKu / B**2, rel=1e-10)
    assert float(r.chi_pos) == pytest.approx(uKu / (uu * tr), rel=1e-10)


class NNXTokens(nnx.Module):
    """A Linear on each of 4 tokens (inside one vmap for the taps), a Linear on their mean,
    and, with ``tied``, the first kernel read directly outside its layer as well."""

    def __init__(self, rngs, tied=False):
        self.embed = nnx.Linear(5, 6, rngs=rngs, **F64)
        self.head = nnx.Linear(6, 3, rngs=rngs, **F64)
        self.tied = tied

    def __call__(self, x):
        h = jnp.tanh(self.embed(x)).mean(axis=1)
        y = self.head(h)
        if self.tied:
            y = y + jnp.sum(x.mean(axis=1) @ self.embed.kernel[...], axis=-1, keepdims=True)
        return y


@pytest.mark.parametrize("tied", [False, True])
def test_nnx_linear_layers_are_tapped(tied, x64):
    """NNX Linear layers go on the structured route as Equinox's do (``costs`` lists it),
    per token inside a vmap as well as at the top level; a kernel read directly outside its
    layer leaves that layer to the Jacobian route. Against the reference: 1e-10."""
    model = NNXTokens(nnx.Rngs(6), tied=tied)
    x = _x((5, 4, 5))
    taps = sorted(_probe(as_model(model), x.shape[1:], x.dtype))
    assert taps == ([1] if tied else [0, 1])  # traversal order: embed 0, head 1
    assert "structured" in costs(model, x)
    for method in ("structured", "auto"):
        assert rel_err(nb.entk(model, x, method=method), nnx_reference(model, x)) < 1e-10


class NNXEmbedding(nnx.Module):
    """An ``nnx.Embed`` of 4 token ids, a Linear on their mean, and, with ``tied``, the
    table read again by ``embed.attend`` (tied output weights)."""

    def __init__(self, rngs, tied=False):
        self.embed = nnx.Embed(7, 6, rngs=rngs, param_dtype=jnp.float64)
        self.head = nnx.Linear(6, 3, rngs=rngs, **F64)
        self.tied = tied

    def __call__(self, ids):
        h = jnp.tanh(self.embed(ids)).mean(axis=1)
        y = self.head(h)
        if self.tied:
            y = y + self.embed.attend(h)[:, :3]
        return y


@pytest.mark.parametrize("tied", [False, True])
def test_nnx_embed_is_tapped(tied, x64):
    """A plain ``nnx.Embed`` goes on the structured route as ``eqx.nn.Embedding`` does (its
    ids are the tokens); read again by ``attend`` it is left to the Jacobian route. Ids
    repeat within and across samples (the token Gram is not the identity). Against the
    reference: 1e-10 (float64; summation order only)."""
    model = NNXEmbedding(nnx.Rngs(8), tied=tied)
    ids = jax.random.randint(jax.random.key(9), (5, 4), 0, 7)
    checked = as_model(model)
    assert [plain.kind for plain in checked.plains] == ["embed", "linear"]
    taps = sorted(_probe(checked, ids.shape[1:], ids.dtype))
    assert taps == ([1] if tied else [0, 1])  # traversal order: embed 0, head 1
    for method in ("structured", "auto"):
        assert rel_err(nb.entk(model, ids, method=method), nnx_reference(model, ids)) < 1e-10


class NNXRemat(nnx.Module):
    """A Linear called inside ``nnx.remat``: its variables pass through ``jax.checkpoint``."""

    def __init__(self, rngs):
        self.inner = nnx.Linear(3, 4, rngs=rngs, **F64)
        self.head = nnx.Linear(4, 2, rngs=rngs, **F64)

    def __call__(self, x):
        return self.head(nnx.remat(lambda m, x: jnp.tanh(m(x)))(self.inner, x))


def test_nnx_layer_inside_a_transform_falls_back(x64):
    """A tapped layer's placeholder cannot pass into ``nnx.remat`` (JAX refuses it): the
    structured method then taps nothing and is still right (1e-10 against the reference)."""
    model = NNXRemat(nnx.Rngs(12))
    x = _x((4, 3))
    assert _probe(as_model(model), x.shape[1:], x.dtype) == {}
    assert rel_err(nb.entk(model, x, method="structured"), nnx_reference(model, x)) < 1e-10


class NNXStrided(nnx.Module):
    """Convolutions the taps take (explicit padding at stride 2, no bias; VALID) and one
    they leave to per-leaf Jacobians ("SAME" at stride 2: its padding depends on the input
    size; circular padding)."""

    def __init__(self, rngs):
        self.down = nnx.Conv(1, 3, (3, 3), strides=2, padding=1, use_bias=False, rngs=rngs, **F64)
        self.valid = nnx.Conv(3, 3, (2, 2), padding="VALID", rngs=rngs, **F64)
        self.same2 = nnx.Conv(3, 2, (3, 3), strides=2, padding="SAME", rngs=rngs, **F64)
        self.circular = nnx.Conv(2, 2, (3, 3), padding="CIRCULAR", rngs=rngs, **F64)
        self.head = nnx.Linear(2 * 2 * 2, 3, rngs=rngs, **F64)

    def __call__(self, x):
        y = jnp.tanh(self.valid(jnp.tanh(self.down(x))))
        y = self.circular(jnp.tanh(self.same2(y)))
        return self.head(y.reshape(y.shape[0], -1))


def test_nnx_convolutions_are_tapped_where_the_rule_holds(x64):
    """Plain NNX convolutions go on the structured route (channels moved to Equinox's
    layout, the padding written out); the others fall back. Against the reference: 1e-10."""
    model = NNXStrided(nnx.Rngs(7))
    x = _x((4, 8, 8, 1))
    checked = as_model(model)
    carried = {plain.path[0]: i for i, plain in enumerate(checked.plains)}
    assert set(carried) == {"down", "valid", "head"}
    assert len(_probe(checked, x.shape[1:], x.dtype)) == 3
    for method in ("structured", "auto"):
        assert rel_err(nb.entk(model, x, method=method), nnx_reference(model, x)) < 1e-10


def test_flax_model_called_per_sample_is_refused(x64):
    """A Flax model is called on a batch of one; one that drops the batch axis is named."""

    class PerSample(nnx.Module):
        def __init__(self, rngs):
            self.l = nnx.Linear(25, 3, rngs=rngs, **F64)

        def __call__(self, x):
            return self.l(x.reshape(-1))  # flattens the batch axis away

    with pytest.raises(ValueError, match=r"model: a Flax model is called on a batch of one"):
        nb.entk(PerSample(nnx.Rngs(0)), _x((3, 5, 5)))


# ---------------------------------------------------------------------------
# linen
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_linen_mlp_against_reference(method, x64):
    module = LinenMLP()
    variables = module.init(jax.random.key(0), jnp.ones((1, 5)))
    x = _x((6, 5))
    ref = linen_reference(module.apply, variables, x)
    assert rel_err(nb.entk((module, variables), x, method=method), ref) < 1e-10
    assert rel_err(nb.entk((module.apply, variables), x, method=method), ref) < 1e-10


class LinenCNN(linen.Module):
    """Conv ("SAME" at stride 2: its padding written out for the input size) → BatchNorm
    → Conv (VALID, no bias) → Dense, and a Conv the taps leave (circular padding)."""

    @linen.compact
    def __call__(self, x, train: bool = True):
        x = linen.Conv(3, (3, 3), strides=2, **F64)(x)
        x = linen.BatchNorm(use_running_average=not train, **F64)(x)
        x = linen.Conv(4, (2, 2), padding="VALID", use_bias=False, **F64)(jnp.tanh(x))
        x = linen.Conv(2, (3, 3), padding="CIRCULAR", **F64)(jnp.tanh(x))
        return linen.Dense(3, **F64)(jnp.tanh(x).reshape(x.shape[0], -1))


def linen_cnn():
    """(apply with train=False, variables with running statistics far from 0 and 1)."""
    module = LinenCNN()
    init = jax.jit(functools.partial(module.init, train=False))  # compiled: op by op it took 2.6 s
    variables = init(jax.random.key(3), jnp.ones((1, 7, 7, 1), jnp.float64))
    k1, k2 = jax.random.split(jax.random.key(4))
    stats = variables["batch_stats"]["BatchNorm_0"]
    far = {
        "mean": 3.0 + jax.random.normal(k1, stats["mean"].shape, jnp.float64),
        "var": 5.0 + jax.random.uniform(k2, stats["var"].shape, jnp.float64),
    }
    return functools.partial(module.apply, train=False), {**variables, "batch_stats": {"BatchNorm_0": far}}


def test_linen_layers_are_tapped(x64):
    """Plain ``nn.Dense`` and ``nn.Conv`` go on the structured route (their parameters
    carried as Equinox layers once the input shape is known); the circular convolution
    falls back; ``batch_stats`` held fixed. Against the float64 reference: 1e-10."""
    apply, variables = linen_cnn()
    x = _x((5, 7, 7, 1))
    checked = tappable(as_model((apply, variables)), x.shape[1:], x.dtype)
    assert [plain.path for plain in checked.plains] == [("Conv_0",), ("Conv_1",), ("Dense_0",)]
    assert [plain.padding for plain in checked.plains[:2]] == [((1, 1), (1, 1)), ((0, 0), (0, 0))]
    assert sorted(_probe(checked, x.shape[1:], x.dtype)) == [0, 1, 2]
    assert "Conv_0" not in checked.params and "Conv_2" in checked.params
    ref = linen_reference(apply, variables, x)
    for method in ("structured", "auto"):
        assert rel_err(nb.entk((apply, variables), x, method=method), ref) < 1e-10
    np.testing.assert_allclose(nb.entk_diag((apply, variables), x), np.diag(ref), rtol=1e-10)
    given, back = checked.user_model()  # the parameters back in their place, in linen's layout
    assert given is apply
    np.testing.assert_array_equal(back["params"]["Conv_0"]["kernel"], variables["params"]["Conv_0"]["kernel"])


class LinenEmbedding(linen.Module):
    """An ``nn.Embed`` (parameters made in ``setup``) of token ids, a Dense on their mean,
    and, with ``tied``, the table read again by ``attend``."""

    tied: bool = False

    @linen.compact
    def __call__(self, ids):
        embed = linen.Embed(7, 6, param_dtype=jnp.float64)
        h = jnp.tanh(embed(ids)).mean(axis=1)
        y = linen.Dense(3, **F64)(h)
        return y + embed.attend(h)[:, :3] if self.tied else y


@pytest.mark.parametrize("tied", [False, True])
def test_linen_embed_is_tapped(tied, x64):
    """``nn.Embed`` is tapped as ``eqx.nn.Embedding``; read again by ``attend`` (the guard
    in its variables), it is left to the Jacobian route. Against the reference: 1e-10."""
    module = LinenEmbedding(tied=tied)
    ids = jax.random.randint(jax.random.key(9), (5, 4), 0, 7)
    variables = module.init(jax.random.key(0), ids[:1])
    checked = tappable(as_model((module, variables)), ids.shape[1:], ids.dtype)
    assert [plain.kind for plain in checked.plains] == ["embed", "linear"]
    assert sorted(_probe(checked, ids.shape[1:], ids.dtype)) == ([1] if tied else [0, 1])
    ref = linen_reference(module.apply, variables, ids)
    for method in ("structured", "auto"):
        assert rel_err(nb.entk((module, variables), ids, method=method), ref) < 1e-10


@pytest.mark.parametrize("method", ["jacobian", "auto"])
def test_linen_batch_stats_are_held_fixed(method, x64):
    """``variables["params"]`` differentiated, ``batch_stats`` (far from 0 and 1) fixed;
    inference mode through ``functools.partial(module.apply, train=False)``."""
    module = LinenBN()
    variables = module.init(jax.random.key(1), jnp.ones((1, 5)), train=False)
    k1, k2 = jax.random.split(jax.random.key(2))
    stats = variables["batch_stats"]["BatchNorm_0"]
    variables = {
        "params": variables["params"],
        "batch_stats": {
            "BatchNorm_0": {
                "mean": 3.0 + jax.random.normal(k1, stats["mean"].shape, jnp.float64),
                "var": 5.0 + jax.random.uniform(k2, stats["var"].shape, jnp.float64),
            }
        },
    }
    apply = functools.partial(module.apply, train=False)
    x = _x((6, 5))
    K = nb.entk((apply, variables), x, method=method)
    assert rel_err(K, linen_reference(apply, variables, x)) < 1e-10
    assert rel_err(K, linen_reference(apply, variables, x, ("params", "batch_stats"))) > 1e-3


class LinenLifted(linen.Module):
    """Layers under linen's lifted transforms: a Dense per token under ``nn.vmap`` (shared
    parameters: the very arrays, tapped inside one vmap), Dense layers under ``nn.scan``
    (stacked parameters) and ``nn.remat`` (parameters passed through ``jax.checkpoint``,
    which a placeholder could not pass): those two fall back."""

    @linen.compact
    def __call__(self, x):  # x (B, T, 3)
        per_token = linen.vmap(
            linen.Dense, in_axes=1, out_axes=1, variable_axes={"params": None}, split_rngs={"params": False}
        )
        h = jnp.tanh(per_token(4, **F64)(x)).mean(axis=1)
        h, _ = linen.scan(LinenCell, variable_axes={"params": 0}, split_rngs={"params": True}, length=2)()(h, None)
        return linen.remat(linen.Dense)(2, **F64)(h)


class LinenCell(linen.Module):
    @linen.compact
    def __call__(self, h, _):
        return jnp.tanh(linen.Dense(4, **F64)(h)), None


def test_linen_layers_under_lifted_transforms(x64):
    """Only the layer whose parameters are the top level's own arrays is tapped; the kernel
    matches the float64 reference (1e-10) with the others on the Jacobian route."""
    module = LinenLifted()
    x = _x((4, 3, 3))
    variables = jax.jit(module.init)(jax.random.key(0), x[:1])
    checked = tappable(as_model((module, variables)), x.shape[1:], x.dtype)
    assert [plain.path for plain in checked.plains] == [("VmapDense_0",)]
    assert sorted(_probe(checked, x.shape[1:], x.dtype)) == [0]
    assert (
        rel_err(nb.entk((module, variables), x, method="structured"), linen_reference(module.apply, variables, x))
        < 1e-10
    )


def test_linen_apply_written_in_each_call_is_one_structure(x64):
    """``functools.partial(module.apply, train=False)`` written anew in each call gives the
    same model structure (what the compiled kernel is keyed on), so it compiles once; a
    partial is otherwise compared by identity (a compilation per call)."""
    module = LinenBN()
    variables = module.init(jax.random.key(1), jnp.ones((1, 5)), train=False)
    one, two = (as_model((functools.partial(module.apply, train=False), variables)) for _ in range(2))
    assert jax.tree_util.tree_structure(one) == jax.tree_util.tree_structure(two)
    other = as_model((functools.partial(module.apply, train=True), variables))
    assert jax.tree_util.tree_structure(one) != jax.tree_util.tree_structure(other)


def test_linen_variables_without_params_are_refused():
    module = LinenMLP()
    with pytest.raises(TypeError, match=r"model: \(linen module, variables\) needs .* 'params'"):
        nb.entk((module, {"batch_stats": {}}), jnp.ones((2, 5)))


# ---------------------------------------------------------------------------
# Equinox with eqx.nn.State
# ---------------------------------------------------------------------------


class EqxBN(eqx.Module):
    lin: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    head: eqx.nn.Linear

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.lin = eqx.nn.Linear(5, 6, key=k1, dtype=jnp.float64)
        self.bn = eqx.nn.BatchNorm(6, "batch", dtype=jnp.float64, mode="ema")
        self.head = eqx.nn.Linear(6, 3, key=k2, dtype=jnp.float64)

    def __call__(self, x, state):
        y, state = self.bn(self.lin(x), state)
        return self.head(jnp.tanh(y)), state


@pytest.mark.parametrize("method", METHODS)
def test_equinox_state_is_held_fixed(method, x64):
    """``(model, state)``: the model's arrays differentiated, the BatchNorm state (running
    mean about 3, variance about 5) fixed, in ``eqx.nn.inference_mode``."""
    model, state = eqx.nn.make_with_state(EqxBN)(jax.random.key(0))
    k1, k2 = jax.random.split(jax.random.key(1))
    mean = 3.0 + jax.random.normal(k1, (6,), jnp.float64)
    var = 5.0 + jax.random.uniform(k2, (6,), jnp.float64)
    state = state.set(model.bn.ema_state_index, (mean, var))
    state = state.set(model.bn.ema_first_time_index, jnp.array(False))
    inference = eqx.nn.inference_mode(model)
    params, static = eqx.partition(inference, eqx.is_inexact_array)
    x = _x((6, 5))
    ref = jacobian_kernel(lambda p, xi: eqx.combine(p, static)(xi, state)[0], params, x)
    K = np.asarray(nb.entk((model, state), x, method=method))
    assert rel_err(K, ref) < 1e-10

    # the kernel that also differentiates the statistics: they would show
    def with_stats(t, xi):
        p, (m, v) = t
        return eqx.combine(p, static)(xi, state.set(model.bn.ema_state_index, (m, v)))[0]

    assert rel_err(K, jacobian_kernel(with_stats, (params, (mean, var)), x)) > 1e-3


# ---------------------------------------------------------------------------
# Watch: an NNX model in a hand-written optax loop
# ---------------------------------------------------------------------------


class NNXNet(nnx.Module):
    """64 → 16 → 10 with BatchNorm: its statistics move while training (train mode)."""

    def __init__(self, rngs):
        self.l1 = nnx.Linear(64, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.l2 = nnx.Linear(16, 10, rngs=rngs)

    def __call__(self, x):
        return self.l2(jax.nn.relu(self.bn(self.l1(x))))


def _nnx_loop(data, watch, steps, on_record=None):
    """A plain optax loop of an NNX model (nnx.Optimizer, nnx.value_and_grad), with
    ``watch(step, model)`` before each step's update."""
    import optax

    model = NNXNet(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    x, y = jnp.asarray(data.x_train[:64]), jax.nn.one_hot(data.y_train[:64], 10)

    @nnx.jit
    def update(model, optimizer):
        def loss(m):
            return 0.5 * jnp.mean(jnp.sum((m(x) - y) ** 2, -1))

        value, grads = nnx.value_and_grad(loss)(model)
        optimizer.update(model, grads)
        return value

    for step in range(steps + 1):
        model.train()
        if watch(step, model) and on_record is not None:
            on_record(step)
        if step < steps:
            update(model, optimizer)
    return model


def test_watch_an_nnx_model_in_an_optax_loop():
    """The records at the recorder's steps, finite; the trace at step 0 is the trace of
    nb.entk of the initial model (over nnx.Param, inference mode) on the probe; BatchNorm
    statistics moved while training, and the kernel held them fixed."""
    data = nb.load("digits", 64, 32, seed=0)
    recorder = nb.Recorder(every=5, probe=16, measures=["loss", "test_loss", "trace", "entropy", "eigenvalues"])
    watch = nb.Watch(data, recorder=recorder, steps=10)
    initial = NNXNet(nnx.Rngs(0))
    trained = _nnx_loop(data, watch, 10)
    ds = watch.cube()
    assert ds["step"].values.tolist() == [0, 5, 10]
    for name in ("loss", "test_loss", "trace", "entropy", "eigenvalues"):
        assert np.all(np.isfinite(ds[name].values)), name
    assert float(ds.loss[-1]) < float(ds.loss[0])
    # float32 kernels of the same parameters, summed in another order: 1e-5 relative
    K0 = nb.entk(initial, jnp.asarray(data.x_train[:16]))
    assert float(ds.trace[0]) == pytest.approx(float(jnp.trace(K0)), rel=1e-5)
    assert not np.allclose(trained.bn.mean[...], 0.0)  # the statistics did move


def test_watch_explorer_fills_in_as_the_loop_records():
    """watch.explorer() after the first record shows one step; each later record redraws
    it in place (the same figure objects), until every record step is drawn."""
    data = nb.load("digits", 64, 32, seed=0)
    watch = nb.Watch(data, recorder=nb.Recorder(every=5, probe=8, measures=["loss", "trace", "entropy"]), steps=10)
    seen = []

    def on_record(step):
        if step == 0:
            seen.append(watch.explorer(measure="trace"))
        ex = seen[0]
        (ys,) = ex.sources["measure"]["lines"].data["ys"]  # one line: the finite points drawn
        seen.append(len(ys))

    _nnx_loop(data, watch, 10, on_record)
    ex, counts = seen[0], seen[1:]
    assert counts == [1, 2, 3]
    assert ex.step.options[-1][1] == 10  # every record step is on the slider from the start
