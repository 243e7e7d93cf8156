"""Kernel tiles: the features of two sample blocks contracted into a tile, and the tiles
assembled into the kernel (a loop of tiles, or the upper triangle mirrored)."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ntkbench.kernel._features import _batched, _pad
from ntkbench.kernel._model import _n_outputs
from ntkbench.kernel._taps import _Layer

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
    return functools.reduce(operator.add, [_gram_jac(a, b, full) for a, b in zip(fa, fb, strict=True)])


def _gram_tokens(xa, xb, ga, gb, bias: bool, embedding: bool, full: bool) -> Array:
    """Kernel block of one tapped layer from tokens and cotangents of two sample blocks:
    Σ_{t,s} (x_t·x'_s + bias)(g_t·g'_s); for an embedding x_t·x'_s = [id_t == id'_s].
    xa (n1, T, d_in) or ids (n1, T); ga (n1, K, T, d_out)."""
    n1, k, t1, o = ga.shape
    n2, t2 = gb.shape[0], gb.shape[2]
    if embedding:
        xx = (xa[:, None, :, None] == xb[None, :, None, :]).astype(ga.dtype)
    else:
        xx = jnp.einsum("ati,bsi->abts", xa, xb)
    if bias:
        xx = xx + 1.0
    if t1 == 1 and t2 == 1:
        xx, gg = xx[:, :, 0, 0], _gram_jac(ga[:, :, 0], gb[:, :, 0], full)
        return xx[:, :, None, None] * gg if full else xx * gg
    if not full:
        ra = ga.transpose(0, 2, 1, 3).reshape(n1 * t1, k * o)
        rb = gb.transpose(0, 2, 1, 3).reshape(n2 * t2, k * o)
        gg = (ra @ rb.T).reshape(n1, t1, n2, t2)
        return jnp.einsum("atbs,abts->ab", gg, xx)
    # H[a,b,t,l,o] = Σ_s xx[a,b,t,s] g'[b,l,s,o]; K[a,b,k,l] = Σ_{t,o} g[a,k,t,o] H[a,b,t,l,o]
    h = jnp.einsum("abts,blso->abtlo", xx, gb)
    return jnp.einsum("akto,abtlo->abkl", ga, h)


def _contract_structured(layers: list[_Layer]) -> Callable:
    grams = [L for L in layers if L.route == "gram"]  # the others come as Jacobians

    def contract(fa: list, fb: list, full: bool) -> Array:
        terms = []
        for i, L in enumerate(grams):
            xa, ga, xb, gb = fa[2 * i], fa[2 * i + 1], fb[2 * i], fb[2 * i + 1]
            terms.append(_gram_tokens(xa, xb, ga, gb, L.bias, L.kind == "embedding", full))
        m = 2 * len(grams)
        if len(fa) > m:
            terms.append(_contract_jacobian(fa[m:], fb[m:], full))
        return functools.reduce(operator.add, terms)

    return contract


# ---------------------------------------------------------------------------
# Assembling tiles
# ---------------------------------------------------------------------------


#: a full kernel of at least this many entries ((N·K)², 64 MB in float32) is assembled in
#: place by :func:`_tiles` rather than concatenated by :func:`_triangle`
_IN_PLACE_ELEMENTS = 2**24


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


def _triangle(contract: Callable, feats: list, n: int, block: int, full: bool) -> Array:
    """Symmetric kernel of ``feats`` (all n samples) from the upper triangle of
    ``block``-row tiles, each a static slice, the lower tiles mirrored: about half the
    FLOPs of one n × n product and no dynamic slicing (cf. :func:`_tiles`, which bounds
    memory per tile instead). nb(nb + 1)/2 tiles for nb = ⌈n / block⌉."""
    starts = list(range(0, n, block))
    rows = [[f[a : a + block] for f in feats] for a in starts]
    nb = len(starts)
    upper = {(i, j): contract(rows[i], rows[j], full) for i in range(nb) for j in range(i, nb)}
    mirror = (lambda t: t.transpose(1, 0, 3, 2)) if full else (lambda t: t.T)  # noqa: E731
    return jnp.concatenate(
        [
            jnp.concatenate([upper[i, j] if j >= i else mirror(upper[j, i]) for j in range(nb)], axis=1)
            for i in range(nb)
        ],
        axis=0,
    )


def _feature_kernel(feats_fn, contract, x1, x2, full, block, feature_block=None):
    """Kernel from per-sample features: features of ``feature_block`` samples at a time (all
    at once if None), contracted in ``block`` × ``block`` tiles (one product if None)."""
    n1 = x1.shape[0]
    symmetric = x2 is None
    n2 = n1 if symmetric else x2.shape[0]
    fb = feature_block or max(n1, n2)
    f1 = _batched(feats_fn, x1, fb)
    f2 = f1 if symmetric else _batched(feats_fn, x2, fb)
    if block is None or block >= max(n1, n2):
        return contract(f1, f2, full)
    k = f1[-1].shape[1]
    if symmetric and fb >= n1 and not (full and (n1 * k) ** 2 >= _IN_PLACE_ELEMENTS):
        return _triangle(contract, f1, n1, block, full)  # features held anyway: static tiles
    # a large full kernel: tiles written in place by a loop (a concatenation of static
    # tiles copies the output again: 1.23 vs 0.97 s for MLP 64-512-512-10 at N = 1024)
    nb1, nb2 = -(-n1 // block), -(-n2 // block)
    f1p = [_pad(f, nb1 * block) for f in f1]
    f2p = f1p if symmetric else [_pad(f, nb2 * block) for f in f2]
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
