"""Method choice: a cost model (FLOPs and bytes) of each method under a memory budget, and
the measured rule for contracting a symmetric kernel as a triangle of tiles."""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ntkbench.kernel._features import _layer_cost, _with_routes
from ntkbench.kernel._model import Outputs, _n_outputs, _n_params, as_model
from ntkbench.kernel._stateful import tappable
from ntkbench.kernel._taps import _layers, _probe


class _Cost(NamedTuple):
    flops: float  # contraction + feature formation, whole kernel
    feature: float  # bytes per sample kept for the whole kernel (features)
    pair: float  # bytes per sample pair of a tile's intermediates and output
    jac_row: float = 0.0  # bytes per sample of the per-sample Jacobians it contracts


def costs(model: Any, x1, x2=None, *, outputs: Outputs = "trace") -> dict[str, _Cost]:
    """Estimated cost of each method for this kernel: FLOPs, feature bytes per sample,
    tile bytes per sample pair. What ``method="auto"`` decides on.

    Example
    -------
    >>> import jax, equinox as eqx
    >>> m = eqx.nn.MLP(8, 3, 32, 2, key=jax.random.key(0))
    >>> c = costs(m, jax.numpy.ones((10, 8)))
    >>> c["structured"].flops < c["jacobian"].flops < c["ntvp"].flops
    True
    """
    model = as_model(model)
    x1 = jnp.asarray(x1)
    shape, dtype = x1.shape[1:], x1.dtype
    model = tappable(model, shape, dtype)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else jnp.shape(x2)[0]
    nfeat = n1 if x2 is None else n1 + n2
    full = outputs == "full"
    k = _n_outputs(model, shape, dtype)
    kk = k * k if full else 1
    p = _n_params(model)
    item = jnp.dtype(jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))[0].dtype).itemsize
    layers = _with_routes(_layers(model, _probe(model, shape, dtype)), k, n1, n2, full)
    # forward FLOPs of one sample: 2 per weight use (tokens × weights for the layers)
    use = {L.idx: 2.0 * L.tokens * L.d_out * (1 if L.kind == "embedding" else L.d_in + L.bias) for L in layers}
    fwd = sum(use.values()) + 2.0 * (p - sum(L.d_out * (L.d_in + L.bias) for L in layers))
    layers = [L for L in layers if L.route == "gram"]  # the others: Jacobian contraction
    p_tapped = sum(L.d_out * (L.d_in + L.bias) for L in layers)
    fwd_tapped = sum(use[L.idx] for L in layers)
    backprop = 2.0 * fwd * k  # K backward passes: input and weight cotangents
    out = {
        "jacobian": _Cost(n1 * n2 * (kk if full else k) * p + nfeat * backprop, k * p * item, kk * item, k * p * item),
        # every tile pushes the Jacobian rows of its columns through its rows with jvp
        "ntvp": _Cost(n1 * n2 * k * 2.0 * fwd + nfeat * backprop, k * p * item, kk * item),
    }
    if layers:
        # one backward pass with K cotangents; tapped layers need only input cotangents
        flops = nfeat * k * (2.0 * fwd - fwd_tapped)
        feat, pair = 0.0, kk
        for L in layers:
            route = _layer_cost(L, k, n1, n2, full)["gram"]
            flops += route[0]
            feat += route[1]
            pair += route[2]
        flops += n1 * n2 * (kk if full else k) * (p - p_tapped)
        feat += k * (p - p_tapped)
        out["structured"] = _Cost(flops, feat * item, pair * item, k * (p - p_tapped) * item)
    return out


def _choose(model, x1, x2, outputs: Outputs, memory_limit: int, block_size: int | None):
    """(method, block_size, feature_block) for ``method="auto"``: the fewest FLOPs among
    the methods whose features fit ``memory_limit``; a block size (for tiles and feature
    batches) when they would not; a triangle of tiles with one feature batch when that is
    faster (:func:`_triangle_block`)."""
    c = costs(model, x1, x2, outputs=outputs)
    k_out = _n_outputs(model, x1.shape[1:], x1.dtype)
    n1 = x1.shape[0]
    n2 = n1 if x2 is None else x2.shape[0]
    nfeat = n1 if x2 is None else n1 + n2
    n = max(n1, n2)
    for method in sorted(c, key=lambda m: c[m].flops):
        cost = c[method]
        if method == "ntvp":  # memory per tile only: the largest tile that fits
            b = n
            while b > 1 and b * b * cost.pair + b * cost.feature > memory_limit:
                b = (b + 1) // 2
            b = block_size or (None if b >= n else b)
            return method, b, b
        room = memory_limit - nfeat * cost.feature
        if room <= 0:
            continue
        if block_size is not None:
            return method, block_size, block_size
        b = n  # tile intermediates + transient features of one block must fit
        while b > 1 and b * b * cost.pair + b * cost.feature > room:
            b = (b + 1) // 2
        tri = _triangle_block(n, k_out, outputs == "full", cost) if x2 is None else None
        if tri is not None and tri <= b:  # features in one batch, upper tiles mirrored
            return method, tri, n
        if b < n:  # memory-bound: tiles and feature batches of b samples
            return method, b, b
        return method, None, None
    raise AssertionError("unreachable: ntvp always fits")


_GRAM_TILE = 128  # traced, Gram-route layers only (an MLP): samples per triangle tile ...
_JAC_ROW_BYTES = 2**20  # traced: per-sample Jacobian bytes above which a triangle pays
_TILE_MIN_N = 256  # ... and the smallest N where it does
_TRIANGLE_ROWS = 640  # full outputs: Jacobian rows (samples × outputs) per triangle tile
_TRIANGLE_MIN_ROWS = 160  # ... and the fewest rows per tile worth a triangle


def _triangle_block(n: int, k: int, full: bool, cost: _Cost) -> int | None:
    """Tile size (samples) at which a symmetric kernel of ``n`` samples and ``k`` outputs
    is faster as the upper triangle of tiles (:func:`_triangle`) than as one product, or
    None where one product wins.

    Measured on the 2-core CPU (best of 3, benchmarks/RESULTS.md has the ratios vs
    neural-tangents):

    - full outputs, ``n·k`` ≥ 2·160 rows: tiles of 640 rows, or two when that is fewer.
      MLP 64-512-512-10 N = 32: 2.3 vs 2.65 ms; N = 128: 20 vs 28 ms; N = 512: 325 vs
      697 ms. CNN N = 128: 453 vs 538 ms; N = 512: 4.5 vs 8.0 s (4 tiles of 1280 rows:
      5.0 s). Transformer block N = 32: 72-75 vs 94 ms; N = 512: 8.6 vs 18.0 s. (CNN
      N = 32, where the features dominate: 65-67 vs 56-71 ms, within the noise.)
    - traced outputs: only for wide per-sample Jacobians (``cost.jac_row`` above
      ``_JAC_ROW_BYTES``, e.g. a transformer block with K·P = 5·10⁵ floats) at N ≥ 256,
      in 2 × 2 tiles: transformer N = 512: 2.0 vs 4.6 s. A CNN's 0.8 MB rows are faster
      in one product (1.6 vs 1.9 s at N = 512). Models whose every parameter is on the
      Gram route (an MLP; ``cost.jac_row == 0``) at N ≥ 256: tiles of 128 samples. MLP
      64-512-512-10 contraction alone, N = 256: 8.0-8.7 vs 9.5 ms; N = 512: 25-27 vs
      32-34 ms; N = 1024: 102 vs 143-148 ms.

    Full kernels of at least ``_IN_PLACE_ELEMENTS`` entries write these tiles in place
    (:func:`_tiles`) instead of concatenating them (:func:`_feature_kernel`).
    """
    if full:
        return min(-(-_TRIANGLE_ROWS // k), -(-n // 2)) if n * k >= 2 * _TRIANGLE_MIN_ROWS else None
    if n >= _TILE_MIN_N and cost.jac_row > _JAC_ROW_BYTES:
        return -(-n // 2)
    if n >= 2 * _GRAM_TILE and cost.jac_row == 0:
        return _GRAM_TILE
    return None
