"""Empirical neural tangent kernels (eNTKs) of Equinox models.

The eNTK of a model f(x; θ) with K outputs on inputs x1 (N1 samples) and x2 (N2 samples) is

    Θ(x, x')_{kl} = <∂f_k(x)/∂θ, ∂f_l(x')/∂θ>,

returned as (N1, N2, K, K) with ``outputs="full"`` or summed over k = l to (N1, N2) with
``outputs="trace"``. Three independent methods compute it:

- ``"jacobian"``: per-sample Jacobians (N, K, P) leaf by leaf, contracted with matmuls.
- ``"ntvp"``: per-sample Jacobian rows of x2 pushed forward through the model on x1 with
  ``jax.jvp`` (kernel-vector products); never forms the Jacobian of x1.
- ``"structured"``: for every ``eqx.nn.Linear`` called once per sample, the Jacobian of its
  weight is the outer product (cotangent of its output) ⊗ (its input), so its kernel block
  is (input Gram + 1 for the bias) ∘ (cotangent Gram). Cotangents come from differentiating
  with respect to a zero perturbation added to each layer's output, in one backward sweep
  with K cotangents. Leaves with no rule (conv kernels, norms, embeddings, linears inside
  ``vmap``) fall back to Jacobian contraction, for those leaves only.

``"auto"`` takes ``structured`` when the model has a linear layer it applies to, else
``jacobian`` when the Jacobian fits ``memory_limit``, else ``ntvp``.

Everything is compiled once per (model structure, shapes, options) with ``eqx.filter_jit``.
With ``block_size`` the kernel is assembled from (block_size × block_size) tiles inside one
``lax.fori_loop``; any N works (inputs are zero-padded, the padding is cut off), and the
symmetric case ``x2=None`` computes each off-diagonal tile once and mirrors it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["entk", "entk_diag", "as_model"]

Outputs = Literal["trace", "full"]
Method = Literal["auto", "jacobian", "ntvp", "structured"]
_METHODS = ("auto", "jacobian", "ntvp", "structured")
_OUTPUTS = ("trace", "full")
_DEFAULT_MEMORY_LIMIT = 2 * 1024**3  # bytes


# ---------------------------------------------------------------------------
# Models: Equinox modules or (apply_fn, params)
# ---------------------------------------------------------------------------


class _Applied(eqx.Module):
    """Wraps ``(apply_fn, params)`` as a model called on one sample."""

    apply_fn: Callable = eqx.field(static=True)
    params: Any

    def __call__(self, x):
        return self.apply_fn(self.params, x)


def as_model(model: Any) -> eqx.Module:
    """Return ``model`` as a callable pytree of one sample; validates it.

    Accepts an Equinox module (any callable pytree with inexact array leaves) or a pair
    ``(apply_fn, params)`` with ``apply_fn(params, x)``.

    Example
    -------
    >>> import jax.numpy as jnp
    >>> m = as_model((lambda p, x: p["w"] @ x, {"w": jnp.ones((2, 3))}))
    >>> m(jnp.ones(3)).shape
    (2,)
    """
    if isinstance(model, tuple):
        if len(model) != 2 or not callable(model[0]):
            raise TypeError(
                "model: expected an Equinox module or a pair (apply_fn, params) with "
                f"apply_fn(params, x); got a tuple of length {len(model)}"
            )
        model = _Applied(model[0], model[1])
    if not callable(model):
        raise TypeError(
            f"model: expected an Equinox module called on one sample, or (apply_fn, params); "
            f"got {type(model).__name__}"
        )
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    if not leaves:
        raise TypeError(
            "model: has no inexact (floating-point) array parameters to differentiate"
        )
    return model


# ---------------------------------------------------------------------------
# Tapping linear layers for the structured method
# ---------------------------------------------------------------------------


class _DirectAccess(Exception):
    def __init__(self, idx: int):
        self.idx = idx


class _Tape:
    """Per-trace record of the tapped linear layers: inputs seen, perturbations to add."""

    def __init__(self, eps: dict[int, Array] | None, top_trace: Any = None):
        self.eps = eps
        self.inputs: dict[int, list] = {}
        self.top_trace = top_trace
        self.nested: set[int] = set()


_TAPES: list[_Tape] = []


class _TapLinear(eqx.Module):
    """Stand-in for ``eqx.nn.Linear`` that records its input and adds a perturbation."""

    w: Array
    b: Array | None
    idx: int = eqx.field(static=True)
    in_features: Any = eqx.field(static=True)
    out_features: Any = eqx.field(static=True)

    @property
    def weight(self):  # direct use of the weight outside __call__ defeats the rule
        raise _DirectAccess(self.idx)

    @property
    def bias(self):
        raise _DirectAccess(self.idx)

    def __call__(self, x, *, key=None):
        tape = _TAPES[-1]
        if self.in_features == "scalar":
            x = jnp.broadcast_to(x, (1,))
        tape.inputs.setdefault(self.idx, []).append(x)
        if tape.top_trace is not None and getattr(x, "_trace", tape.top_trace) is not tape.top_trace:
            tape.nested.add(self.idx)
        y = self.w @ x
        if self.b is not None:
            y = y + self.b
        if tape.eps is not None and self.idx in tape.eps:
            y = y + tape.eps[self.idx]
        if self.out_features == "scalar":
            y = jnp.squeeze(y)
        return y


def _is_linear(node) -> bool:
    return type(node) is eqx.nn.Linear


def _tap(model, keep: frozenset[int] | None = None):
    """Replace the ``eqx.nn.Linear`` layers of ``model`` whose traversal index is in
    ``keep`` (all when None) by ``_TapLinear``; returns (model, number of linear layers)."""
    counter = [0]

    def swap(node):
        if _is_linear(node):
            i = counter[0]
            counter[0] += 1
            if keep is None or i in keep:
                return _TapLinear(node.weight, node.bias, i, node.in_features, node.out_features)
        return node

    return jax.tree_util.tree_map(swap, model, is_leaf=_is_linear), counter[0]


def _tappable(model, n_layers: int, x_shape, x_dtype) -> frozenset[int]:
    """Linear layers the structured rule applies to: called exactly once per sample, at
    the top level (not inside a nested vmap/scan), and whose weights are not read directly."""
    keep = set(range(n_layers))
    for _ in range(n_layers + 1):
        tapped, _ = _tap(model, frozenset(keep))
        params, static = eqx.partition(tapped, eqx.is_inexact_array)

        def probe(p, x):
            tape = _Tape(None, top_trace=getattr(x, "_trace", None))
            _TAPES.append(tape)
            try:
                eqx.combine(p, static)(x)
            finally:
                _TAPES.pop()
            return tape

        holder: list[_Tape] = []

        def run(p, x):
            holder.append(probe(p, x))
            return 0.0

        try:
            jax.eval_shape(run, params, jax.ShapeDtypeStruct(x_shape, x_dtype))
        except _DirectAccess as e:
            keep.discard(e.idx)
            continue
        tape = holder[0]
        bad = {i for i in keep if len(tape.inputs.get(i, [])) != 1} | tape.nested
        bad |= {i for i in keep if i in tape.inputs and tape.inputs[i][0].ndim != 1}
        if not bad & keep:
            return frozenset(keep)
        keep -= bad
    return frozenset(keep)


# ---------------------------------------------------------------------------
# Per-sample features
# ---------------------------------------------------------------------------


def _n_outputs(model, x_shape, x_dtype) -> int:
    out = jax.eval_shape(model, jax.ShapeDtypeStruct(x_shape, x_dtype))
    return math.prod(out.shape)


def _jacobian_features(model) -> Callable:
    """x (one sample) -> list of per-leaf Jacobians, each (K, p_leaf)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def f(p, x):
        return jnp.ravel(eqx.combine(p, static)(x))

    def feats(x):
        jac = jax.jacrev(f)(params, x)
        return [j.reshape(j.shape[0], -1) for j in jax.tree_util.tree_leaves(jac)]

    return feats


def _structured_features(model, x_shape, x_dtype) -> tuple[Callable, list[bool]]:
    """x (one sample) -> [X_l (d_in,), G_l (K, d_out) for each tapped layer] + fallback
    Jacobians (K, p_leaf) for every other parameter leaf. Also returns, per tapped layer,
    whether it has a bias (which adds 1 to the input Gram)."""
    _, n_layers = _tap(model)
    keep = _tappable(model, n_layers, x_shape, x_dtype)
    model_t, _ = _tap(model, keep)
    order = sorted(keep)
    # parameters other than the tapped layers' weights and biases
    is_tap = lambda n: isinstance(n, _TapLinear)  # noqa: E731
    spec = jax.tree_util.tree_map(
        lambda n: False if is_tap(n) else eqx.is_inexact_array(n), model_t, is_leaf=is_tap
    )
    others, static = eqx.partition(model_t, spec)
    taps = {
        n.idx: n
        for n in jax.tree_util.tree_leaves(model_t, is_leaf=is_tap)
        if isinstance(n, _TapLinear)
    }
    has_bias = [taps[i].b is not None for i in order]
    eps0 = {i: jnp.zeros(taps[i].w.shape[0], taps[i].w.dtype) for i in order}

    def f(eps, p, x):
        tape = _Tape(eps)
        _TAPES.append(tape)
        try:
            out = jnp.ravel(eqx.combine(p, static)(x))
        finally:
            _TAPES.pop()
        return out, [tape.inputs[i][0] for i in order]

    def feats(x):
        out, vjp_fn, xs = jax.vjp(lambda e, p: f(e, p, x), eps0, others, has_aux=True)
        basis = jnp.eye(out.shape[0], dtype=out.dtype)
        g_eps, g_other = jax.vmap(vjp_fn)(basis)
        gs = [g_eps[i] for i in order]
        rest = [j.reshape(j.shape[0], -1) for j in jax.tree_util.tree_leaves(g_other)]
        return list(xs) + gs + rest

    return feats, has_bias


def _batched(feats: Callable, x: Array, block: int) -> list[Array]:
    """Apply a one-sample feature map to all of x, ``block`` samples at a time."""
    n = x.shape[0]
    if block >= n:
        return jax.vmap(feats)(x)
    nb = -(-n // block)
    xp = _pad(x, nb * block).reshape(nb, block, *x.shape[1:])
    out = jax.lax.map(jax.vmap(feats), xp)
    return [o.reshape(nb * block, *o.shape[2:])[:n] for o in out]


# ---------------------------------------------------------------------------
# Contractions: features of two sample blocks -> kernel tile
# ---------------------------------------------------------------------------


def _gram_jac(a: Array, b: Array, full: bool) -> Array:
    """a (n1, K, p), b (n2, K, p) -> (n1, n2) traced or (n1, n2, K, K) full."""
    n1, k, _ = a.shape
    n2 = b.shape[0]
    if not full:
        return a.reshape(n1, -1) @ b.reshape(n2, -1).T
    g = a.reshape(n1 * k, -1) @ b.reshape(n2 * k, -1).T
    return g.reshape(n1, k, n2, k).transpose(0, 2, 1, 3)


def _contract_jacobian(fa: list, fb: list, full: bool) -> Array:
    return sum(_gram_jac(a, b, full) for a, b in zip(fa, fb))


def _contract_structured(has_bias: list[bool]) -> Callable:
    n = len(has_bias)

    def contract(fa: list, fb: list, full: bool) -> Array:
        xa, ga, ra = fa[:n], fa[n : 2 * n], fa[2 * n :]
        xb, gb, rb = fb[:n], fb[n : 2 * n], fb[2 * n :]
        total = 0.0
        for i in range(n):
            xx = xa[i] @ xb[i].T
            if has_bias[i]:
                xx = xx + 1.0
            gg = _gram_jac(ga[i], gb[i], full)
            total = total + (xx[:, :, None, None] * gg if full else xx * gg)
        if ra:
            total = total + _contract_jacobian(ra, rb, full)
        return total

    return contract


# ---------------------------------------------------------------------------
# Assembling tiles
# ---------------------------------------------------------------------------


def _pad(x: Array, n: int) -> Array:
    if x.shape[0] == n:
        return x
    return jnp.concatenate([x, jnp.zeros((n - x.shape[0], *x.shape[1:]), x.dtype)])


def _tiles(tile_fn: Callable, n1: int, n2: int, block: int, symmetric: bool, full: bool, k: int, dtype):
    """Assemble the kernel from tiles; ``tile_fn(i, j)`` gives tile (block, block[, K, K])
    of rows i*block.. and columns j*block.. (padded arrays)."""
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    if symmetric:
        pairs = [(i, j) for i in range(nb1) for j in range(i, nb2)]
    else:
        pairs = [(i, j) for i in range(nb1) for j in range(nb2)]
    pairs = jnp.asarray(pairs, dtype=jnp.int32)
    shape = (nb1 * block, nb2 * block) + ((k, k) if full else ())
    out = jnp.zeros(shape, dtype)
    zero = jnp.zeros((), jnp.int32)
    zeros = (zero, zero) if full else ()

    def body(p, out):
        i, j = pairs[p, 0], pairs[p, 1]
        tile = tile_fn(i, j)
        out = jax.lax.dynamic_update_slice(out, tile, (i * block, j * block) + zeros)
        if symmetric:
            mirrored = tile.transpose(1, 0, 3, 2) if full else tile.T
            out = jax.lax.dynamic_update_slice(out, mirrored, (j * block, i * block) + zeros)
        return out

    out = jax.lax.fori_loop(0, len(pairs), body, out)
    return out[:n1, :n2]


def _slice_rows(feats: list, i, block: int) -> list:
    return [jax.lax.dynamic_slice_in_dim(f, i * block, block) for f in feats]


def _feature_kernel(feats_fn, contract, x1, x2, full, block):
    n1 = x1.shape[0]
    symmetric = x2 is None
    n2 = n1 if symmetric else x2.shape[0]
    fb = block or max(n1, n2)
    f1 = _batched(feats_fn, x1, fb)
    f2 = f1 if symmetric else _batched(feats_fn, x2, fb)
    if block is None or block >= max(n1, n2):
        return contract(f1, f2, full)
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    f1p = [_pad(f, nb1 * block) for f in f1]
    f2p = f1p if symmetric else [_pad(f, nb2 * block) for f in f2]
    k = f1[-1].shape[1]
    dtype = f1[-1].dtype
    tile = lambda i, j: contract(_slice_rows(f1p, i, block), _slice_rows(f2p, j, block), full)  # noqa: E731
    return _tiles(tile, n1, n2, block, symmetric, full, k, dtype)


def _ntvp_kernel(model, x1, x2, full, block):
    """Rows of J(x2) pushed forward with jvp through the model on x1 (no J(x1))."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    symmetric = x2 is None
    x2 = x1 if symmetric else x2
    n1, n2 = x1.shape[0], x2.shape[0]

    def f1(p, x):
        return jnp.ravel(eqx.combine(p, static)(x))

    def fbatch(p, xs):
        return jax.vmap(lambda x: f1(p, x))(xs)

    def tile(xa, xb):
        # (nb, K, *leaf) Jacobian rows of xb, as nb*K tangents
        jac = jax.vmap(jax.jacrev(f1), in_axes=(None, 0))(params, xb)
        nb_, k = xb.shape[0], jax.tree_util.tree_leaves(jac)[0].shape[1]
        tangents = jax.tree_util.tree_map(lambda j: j.reshape(nb_ * k, *j.shape[2:]), jac)
        push = lambda t: jax.jvp(lambda p: fbatch(p, xa), (params,), (t,))[1]  # noqa: E731
        cols = jax.lax.map(push, tangents, batch_size=min(nb_ * k, 64))  # (nb*K, na, K)
        cols = cols.reshape(nb_, k, xa.shape[0], k).transpose(2, 0, 3, 1)  # (na, nb, K, K)
        return cols if full else jnp.trace(cols, axis1=2, axis2=3)

    if block is None or block >= max(n1, n2):
        return tile(x1, x2)
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    x1p = _pad(x1, nb1 * block)
    x2p = x1p if symmetric else _pad(x2, nb2 * block)
    k = _n_outputs(model, x1.shape[1:], x1.dtype)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    t = lambda i, j: tile(  # noqa: E731
        jax.lax.dynamic_slice_in_dim(x1p, i * block, block),
        jax.lax.dynamic_slice_in_dim(x2p, j * block, block),
    )
    return _tiles(t, n1, n2, block, symmetric, full, k, dtype)


# ---------------------------------------------------------------------------
# Method choice and the public function
# ---------------------------------------------------------------------------


def _n_params(model) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array)))


def _has_tappable_linear(model, x_shape, x_dtype) -> bool:
    _, n = _tap(model)
    return n > 0 and bool(_tappable(model, n, x_shape, x_dtype))


def _choose(model, x1, x2, memory_limit: int) -> str:
    shape, dtype = x1.shape[1:], x1.dtype
    if _has_tappable_linear(model, shape, dtype):
        return "structured"
    n = x1.shape[0] + (0 if x2 is None else x2.shape[0])
    k = _n_outputs(model, shape, dtype)
    itemsize = jnp.dtype(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))[0].dtype).itemsize
    if n * k * _n_params(model) * itemsize <= memory_limit:
        return "jacobian"
    return "ntvp"


@jax.jit
def _symmetrize(K):
    Kt = K.transpose(1, 0, 3, 2) if K.ndim == 4 else K.T
    return 0.5 * (K + Kt)


_CHOICES: dict = {}


def _resolve_method(model, x1, x2, method: str, memory_limit: int) -> str:
    """Check the model applies to one sample of x1 and resolve ``"auto"``; cached per
    (model structure, shapes), so repeated calls (e.g. while training) cost nothing."""
    treedef = jax.tree_util.tree_structure(model)
    key = (treedef, x1.shape, str(x1.dtype), None if x2 is None else x2.shape, method, memory_limit)
    try:
        return _CHOICES[key]
    except KeyError:
        pass
    except TypeError:  # unhashable static fields: no caching
        key = None
    try:
        jax.eval_shape(model, jax.ShapeDtypeStruct(x1.shape[1:], x1.dtype))
    except Exception as e:  # a shape error inside the model: name the input
        raise ValueError(
            f"x1: the model cannot be applied to one sample of shape {x1.shape[1:]}: {e}"
        ) from e
    if method == "auto":
        method = _choose(model, x1, x2, memory_limit)
    if key is not None:
        _CHOICES[key] = method
    return method


@eqx.filter_jit
def _entk_jit(model, x1, x2, outputs: str, method: str, block_size: int | None):
    full = outputs == "full"
    if method == "ntvp":
        return _ntvp_kernel(model, x1, x2, full, block_size)
    if method == "structured":
        feats, has_bias = _structured_features(model, x1.shape[1:], x1.dtype)
        contract = _contract_structured(has_bias)
    else:
        feats, contract = _jacobian_features(model), _contract_jacobian
    return _feature_kernel(feats, contract, x1, x2, full, block_size)


def _check_inputs(x1, x2, block_size):
    def as_array(x, name):
        if isinstance(x, (jax.Array, np.ndarray)):
            return jnp.asarray(x)
        try:
            return jnp.asarray(x)
        except TypeError as e:
            raise TypeError(f"{name}: expected an array (N, ...), got {type(x).__name__}") from e

    x1 = as_array(x1, "x1")
    if x1.ndim == 0:
        raise ValueError("x1: expected a batch (N, ...) with a leading sample axis, got a scalar")
    if x1.shape[0] == 0:
        raise ValueError("x1: empty batch (N = 0); the eNTK needs at least one sample")
    if x2 is not None:
        x2 = as_array(x2, "x2")
        if x2.ndim == 0 or x2.shape[0] == 0:
            raise ValueError(f"x2: expected a non-empty batch (N2, ...), got shape {x2.shape}")
        if x2.shape[1:] != x1.shape[1:]:
            raise ValueError(
                f"x2: per-sample shape {x2.shape[1:]} does not match x1's {x1.shape[1:]}"
            )
        if x2.dtype != x1.dtype:
            x2 = x2.astype(x1.dtype)
    if block_size is not None:
        if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 1:
            raise ValueError(f"block_size: expected a positive integer or None, got {block_size!r}")
        block_size = int(block_size)
    return x1, x2, block_size


def entk(
    model: Any,
    x1: Float[Array, "n1 ..."],
    x2: Float[Array, "n2 ..."] | None = None,
    *,
    outputs: Outputs = "trace",
    method: Method = "auto",
    block_size: int | None = None,
    memory_limit: int | None = None,
    check_finite: bool = True,
) -> Float[Array, "n1 n2"] | Float[Array, "n1 n2 k k"]:
    """Empirical neural tangent kernel of ``model`` between the batches x1 and x2.

    Parameters
    ----------
    model
        An Equinox module called on ONE sample (``model(x)``), whose inexact array leaves
        are the parameters; or a pair ``(apply_fn, params)`` with ``apply_fn(params, x)``.
        The output may have any shape; it is flattened to K outputs (a scalar gives K = 1).
    x1
        (N1, ...) batch of inputs.
    x2
        (N2, ...) batch with the same per-sample shape, or None for the symmetric kernel of
        x1 (each off-diagonal tile is computed once).
    outputs
        ``"trace"`` → (N1, N2), summed over the K outputs; ``"full"`` → (N1, N2, K, K).
    method
        ``"jacobian"``, ``"ntvp"``, ``"structured"`` or ``"auto"`` (see the module docs).
        All agree to round-off.
    block_size
        Samples per tile: bounds peak memory to O(block_size) features / tiles. Any N works.
    memory_limit
        Bytes the ``jacobian`` method may use before ``auto`` switches to ``ntvp``
        (default 2 GiB).
    check_finite
        Raise ``ValueError`` if the kernel holds NaN or Inf (default True).

    Returns
    -------
    The kernel, (N1, N2) or (N1, N2, K, K), in the parameters' dtype.

    Example
    -------
    >>> import jax, equinox as eqx, ntkbench as nb
    >>> model = eqx.nn.MLP(8, 3, 32, 2, key=jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (10, 8))
    >>> nb.entk(model, x).shape, nb.entk(model, x[:4], x, outputs="full").shape
    ((10, 10), (4, 10, 3, 3))
    """
    if outputs not in _OUTPUTS:
        raise ValueError(f"outputs: expected one of {_OUTPUTS}, got {outputs!r}")
    if method not in _METHODS:
        raise ValueError(f"method: expected one of {_METHODS}, got {method!r}")
    model = as_model(model)
    x1, x2, block_size = _check_inputs(x1, x2, block_size)
    method = _resolve_method(model, x1, x2, method, memory_limit or _DEFAULT_MEMORY_LIMIT)
    K = _entk_jit(model, x1, x2, outputs, method, block_size)
    if x2 is None:  # exactly symmetric, whatever the round-off of the tiles
        K = _symmetrize(K)
    if check_finite and not bool(jnp.all(jnp.isfinite(K))):
        raise ValueError(
            "model: its eNTK on these inputs contains NaN or Inf; check the model's "
            "parameters and outputs (pass check_finite=False to get the kernel anyway)"
        )
    return K


@eqx.filter_jit
def _diag_jit(model, x, method: str, block_size: int | None):
    if method == "structured":
        feats, has_bias = _structured_features(model, x.shape[1:], x.dtype)
        contract = _contract_structured(has_bias)
    else:
        feats, contract = _jacobian_features(model), _contract_jacobian

    def one(xi):
        f = [a[None] for a in feats(xi)]
        return contract(f, f, False)[0, 0]

    return jax.lax.map(one, x, batch_size=block_size or min(x.shape[0], 256))


def entk_diag(model: Any, x: Float[Array, "n ..."], *, block_size: int | None = None) -> Float[Array, " n"]:
    """Diagonal of the traced eNTK, K_ii = Σ_k ‖∂f_k(x_i)/∂θ‖², without the N×N kernel.

    Example
    -------
    >>> import jax, equinox as eqx
    >>> model = eqx.nn.MLP(4, 2, 8, 1, key=jax.random.key(0))
    >>> entk_diag(model, jax.numpy.ones((3, 4))).shape
    (3,)
    """
    model = as_model(model)
    x, _, block_size = _check_inputs(x, None, block_size)
    method = "structured" if _has_tappable_linear(model, x.shape[1:], x.dtype) else "jacobian"
    return _diag_jit(model, x, method, block_size)
