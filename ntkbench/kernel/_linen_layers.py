"""The plain layers of a Flax linen module (``nn.Dense``, ``nn.Conv``, ``nn.Embed``), found
by running it once, and the interception that makes them call Equinox layers.

A linen module creates its layers while it runs (``@nn.compact``), so they are found by
applying it abstractly (``jax.eval_shape``) to one sample under
``flax.linen.intercept_methods``, which sees each layer's ``__call__`` with the layer
(its type and attributes), its path of names in the variables and its input. A layer is
plain (see ``_nnx_layers``) when it computes as its Equinox twin, its parameters are the
very arrays at its path in ``variables["params"]`` with the shapes its input implies (not
arrays passed through a lifted transform, ``nn.scan``, ``nn.vmap``, ``nn.remat``: those
layers take the Jacobian route), and every call of it agrees (the same padding: "SAME"
at a stride is written out for the input size, known here). The answer
is cached per (apply, parameter structure, input shape and dtype).

In the forward pass the same interception replaces each plain layer's ``__call__`` by its
Equinox layer (or that layer's tap); its other methods (``nn.Embed.attend``) run as they
are, on the placeholders ``_nnx_layers.placeholders`` puts in its variables."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax

from ntkbench.kernel import _nnx_layers
from ntkbench.kernel._nnx_layers import Plain

_FOUND: dict[Any, tuple[Plain, ...]] = {}  # (apply, params structure, x shape, dtype) -> plain layers
_FOUND_MAX = 256


def _types() -> dict[type, str]:
    from flax import linen

    return {linen.Dense: "linear", linen.Conv: "conv", linen.Embed: "embed"}


def _plain(module: Any, kind: str, x: Any, params: dict[str, Any]) -> Plain | None:
    """The plain layer ``module`` (of ``kind``) called on ``x``, its parameters ``params``
    (name → array, from the top-level ``variables["params"]``), else None."""
    names = _nnx_layers.names(Plain((), kind))
    first = params.get(names[0])
    if first is None or set(params) - set(names) or not _nnx_layers.default_arithmetic(module, first.dtype):
        return None
    # the very array the top level holds: not one passed through a lifted transform
    # (nn.vmap, nn.scan, nn.remat, nn.jit), which its placeholder could not pass
    if module.scope is None or module.scope.get_variable("params", names[0]) is not first:
        return None
    if kind == "embed":
        return Plain(tuple(module.path), kind) if first.shape == (module.num_embeddings, module.features) else None
    bias = params.get("bias")
    if (bias is None) == bool(module.use_bias) or (bias is not None and bias.shape != (module.features,)):
        return None
    if kind == "linear":
        return Plain(tuple(module.path), kind) if first.shape == (x.shape[-1], module.features) else None
    ks = (module.kernel_size,) if isinstance(module.kernel_size, int) else tuple(module.kernel_size)
    nd = len(ks)
    if x.ndim < nd + 1 or first.shape != (*ks, x.shape[-1], module.features):
        return None
    pads = _nnx_layers.conv(module, tuple(x.shape[x.ndim - nd - 1 : -1]))
    return None if pads is None else Plain(tuple(module.path), kind, *pads)


def plain_layers(
    apply: Callable, params: Any, rest: dict[str, Any], x_shape: tuple[int, ...], x_dtype: Any
) -> tuple[Plain, ...]:
    """The plain layers of the linen module whose ``apply`` is given, applied to
    ``{"params": params, **rest}`` and one sample of shape ``x_shape`` (as a batch of one),
    in the order of their first call."""
    from flax import linen, traverse_util

    leaves, treedef = jax.tree_util.tree_flatten(params)
    key = (apply, treedef, tuple((a.shape, str(a.dtype)) for a in leaves), tuple(x_shape), str(x_dtype))
    try:
        return _FOUND[key]
    except KeyError:
        pass
    except TypeError:  # an unhashable apply or structure: found again each time
        key = None
    by_path: dict[tuple, dict[str, Any]] = {}  # the traced parameters, by layer path
    types = _types()
    seen: dict[tuple, Plain | None] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        kind = types.get(type(module))
        if kind is not None and context.method_name == "__call__" and args and not kwargs:
            path = tuple(module.path)
            plain = _plain(module, kind, args[0], by_path.get(path, {}))
            seen[path] = plain if seen.get(path, plain) == plain else None  # calls that disagree: not plain
        return next_fun(*args, **kwargs)

    def run(p, x):
        for path, value in traverse_util.flatten_dict(p).items():
            by_path.setdefault(tuple(path[:-1]), {})[path[-1]] = value
        with linen.intercept_methods(record):
            return apply({"params": p, **rest}, x[None])

    jax.eval_shape(run, params, jax.ShapeDtypeStruct(tuple(x_shape), x_dtype))
    found = tuple(plain for plain in seen.values() if plain is not None)
    if key is not None:
        if len(_FOUND) >= _FOUND_MAX:
            _FOUND.clear()
        _FOUND[key] = found
    return found


@contextlib.contextmanager
def redirected(plains: tuple[Plain, ...], layers: tuple[Any, ...]) -> Iterator[None]:
    """Within this context each plain layer's ``__call__`` (at its path) calls its Equinox
    layer in ``layers`` (or that layer's tap) instead."""
    if not plains:
        yield
        return
    from flax import linen

    types = _types()
    calls = {plain.path: _nnx_layers.call(plain, layer) for plain, layer in zip(plains, layers, strict=True)}

    def intercept(next_fun, args, kwargs, context):
        if context.method_name == "__call__" and type(context.module) in types and args and not kwargs:
            call = calls.get(tuple(context.module.path))
            if call is not None:
                return call(args[0])
        return next_fun(*args, **kwargs)

    with linen.intercept_methods(intercept):
        yield


def split(params: Any, plains: tuple[Plain, ...]) -> tuple[dict, tuple[Any, ...]]:
    """``params`` without the plain layers' parameters (a nested dict), and those layers as
    Equinox layers."""
    from flax import traverse_util

    flat = dict(traverse_util.flatten_dict(params))
    taken = [{name: flat.pop(plain.path + (name,), None) for name in _nnx_layers.names(plain)} for plain in plains]
    first = tuple(t[_nnx_layers.names(p)[0]] for p, t in zip(plains, taken, strict=True))
    layers = _nnx_layers.as_eqx_layers(plains, first, tuple(t.get("bias") for t in taken))
    return traverse_util.unflatten_dict(flat), layers


def merged(params: Any, plains: tuple[Plain, ...], layers: tuple[Any, ...]) -> Any:
    """``params`` with the plain layers' variables put back: the Equinox layers' arrays in
    Flax's layout, or guards for tapped layers (``_nnx_layers.placeholders``)."""
    if not plains:
        return params
    from flax import traverse_util

    flat = dict(traverse_util.flatten_dict(params))
    for plain, layer in zip(plains, layers, strict=True):
        for name, value in _nnx_layers.placeholders(layer).items():
            flat[plain.path + (name,)] = value
    return traverse_util.unflatten_dict(flat)
