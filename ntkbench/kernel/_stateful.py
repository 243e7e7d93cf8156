"""Models with state: a Flax NNX module, a Flax linen module with its variables, an Equinox
model with its ``eqx.nn.State``, each as a callable pytree of one sample whose inexact
array leaves are its trainable parameters only.

The kernel functions differentiate every inexact (floating-point) array leaf of the model
they are given. State that is not trained (BatchNorm running statistics: NNX's
``nnx.BatchStat``, linen's ``batch_stats`` collection, Equinox's ``eqx.nn.State``) must
enter the forward pass but not the kernel. Here it is carried *frozen*: each of its
floating-point arrays is stored as its bits in an unsigned integer array of the same
width (``lax.bitcast_convert_type``, no copy of the values), which every part of the
engine (method choice, features, costs, ``train``, ``Watch``) passes through as a fixed
array, and turned back into the float array inside the forward pass. The kernel is that of
the model in inference mode: NNX modules are put in evaluation mode (``module.eval()``:
``use_running_average=True``, ``deterministic=True``) and Equinox models in inference
mode (``eqx.nn.inference_mode``) before they are called; a linen module is applied as it
is, so its ``__call__`` must use the running statistics (``use_running_average=True`` or
a ``train=False`` argument bound with ``functools.partial(module.apply, train=False)``).

Flax models are written for batches: they are called on a batch of one sample,
``model(x[None])[0]``. Flax itself is imported only when the model is a Flax model (it is
an optional dependency, ``pip install ntkbench[flax]``)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

_BITS = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}


class _Frozen(eqx.Module):
    """A floating-point array held fixed: its bits as an unsigned integer array."""

    bits: jax.Array
    dtype: Any = eqx.field(static=True)


def freeze(tree: Any) -> Any:
    """``tree`` with every floating-point array leaf replaced by a ``_Frozen`` one (not an
    inexact array, so never differentiated); other leaves as they are."""

    def one(a):
        if not eqx.is_inexact_array(a) or jnp.issubdtype(jnp.result_type(a), jnp.complexfloating):
            return a
        a = jnp.asarray(a)
        return _Frozen(jax.lax.bitcast_convert_type(a, _BITS[a.dtype.itemsize]), a.dtype)

    return jax.tree_util.tree_map(one, tree)


def thaw(tree: Any) -> Any:
    """The inverse of :func:`freeze`."""
    is_frozen = lambda n: isinstance(n, _Frozen)  # noqa: E731
    return jax.tree_util.tree_map(
        lambda n: jax.lax.bitcast_convert_type(n.bits, n.dtype) if is_frozen(n) else n, tree, is_leaf=is_frozen
    )


def _one_sample(y: Any) -> Any:
    """The output of a Flax model called on a batch of one sample, without the batch axis."""
    shape = jnp.shape(y)
    if len(shape) == 0 or shape[0] != 1:
        raise ValueError(
            "model: a Flax model is called on a batch of one sample, x[None] of shape (1, ...), and must "
            f"return (1, ...); it returned shape {shape}"
        )
    return y[0]


class _NNX(eqx.Module):
    """A Flax NNX module split into its graph, its ``nnx.Param`` leaves (trained) and the
    rest of its state (frozen); called in evaluation mode on a batch of one sample. Its
    plain ``nnx.Linear``, ``nnx.Conv`` and ``nnx.Embed`` layers' parameters are carried as
    Equinox layers (``layers``, described by ``plains``), which the structured method taps
    (``_nnx_layers``)."""

    graphdef: Any = eqx.field(static=True)
    params: Any
    rest: Any
    layers: tuple[Any, ...] = ()
    plains: tuple[Any, ...] = eqx.field(static=True, default=())

    def _held(self) -> list[Any]:
        """The carried layers' parameters as NNX state (none: an empty list), placeholders
        for tapped layers."""
        from flax import nnx

        from ntkbench.kernel import _nnx_layers

        held = [
            (plain.path + (name,), nnx.Param(value))
            for plain, layer in zip(self.plains, self.layers, strict=True)
            for name, value in _nnx_layers.placeholders(layer).items()
        ]
        return [nnx.from_flat_state(held)] if held else []

    def _merged(self) -> Any:
        """The NNX module of these arrays, its tapped layers calling their Equinox layers."""
        from flax import nnx

        from ntkbench.kernel import _nnx_layers

        module = nnx.merge(self.graphdef, self.params, thaw(self.rest), *self._held())
        entries = {plain.path: (plain, layer) for plain, layer in zip(self.plains, self.layers, strict=True)}
        _nnx_layers.redirect(module, entries)
        return module

    def __call__(self, x):
        module = self._merged()
        module.eval()
        return _one_sample(module(x[None]))

    def train_forward(self, xb: jax.Array) -> tuple[jax.Array, _NNX]:
        """The batch ``xb`` (B, ...) in training mode: BatchNorm on the batch's statistics,
        updating its running averages; dropout stays off (``deterministic=True``: the
        training loop holds no random stream for it). Returns (outputs (B, ...), ``self``
        with the updated state)."""
        from flax import nnx

        module = self._merged()
        module.set_attributes(deterministic=True, use_running_average=False, raise_if_not_found=False)
        y = module(xb)
        return y, eqx.tree_at(lambda m: m.rest, self, freeze(nnx.state(module, nnx.Not(nnx.Param))))

    def user_model(self) -> Any:
        """The NNX module these arrays stand for (a new one; tapped layers' parameters back
        in their NNX variables), in the mode the module was given in."""
        from flax import nnx

        return nnx.merge(self.graphdef, self.params, thaw(self.rest), *self._held())


def _split_nnx(model: Any) -> _NNX:
    """``model`` (an NNX module) as ``_NNX``: its plain Linear, Conv and Embed layers'
    parameters as Equinox layers, its other ``nnx.Param`` as they are, the rest frozen."""
    from flax import nnx

    from ntkbench.kernel import _nnx_layers

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    candidates = {plain.path: plain for plain in _nnx_layers.plain_layers(model, graphdef)}
    if not candidates:
        return _NNX(graphdef, params, freeze(rest))
    found: dict[tuple, dict[Any, Any]] = {}
    entries = list(nnx.to_flat_state(params))
    for path, var in entries:
        plain = candidates.get(path[:-1])
        if plain is not None and path[-1] in _nnx_layers.names(plain):
            found.setdefault(path[:-1], {})[path[-1]] = var.get_value()
    plains = tuple(candidates[p] for p in found if _nnx_layers.names(candidates[p])[0] in found[p])
    carried = {plain.path: _nnx_layers.names(plain) for plain in plains}
    kept = [(path, var) for path, var in entries if path[-1] not in carried.get(path[:-1], ())]
    first = tuple(found[p.path][_nnx_layers.names(p)[0]] for p in plains)
    layers = _nnx_layers.as_eqx_layers(plains, first, tuple(found[p.path].get("bias") for p in plains))
    return _NNX(graphdef, nnx.from_flat_state(kept), freeze(rest), layers, plains)


class _Partial(functools.partial):
    """A ``functools.partial`` of a linen ``apply`` that equals any other of the same
    function, arguments and keywords. ``functools.partial`` compares by identity, so the
    ``functools.partial(module.apply, train=False)`` a user writes in each call would be
    a new static argument each time: a new compilation (≈ 0.2 s) per call."""

    def _key(self) -> tuple:
        return (self.func, self.args, tuple(sorted(self.keywords.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Partial) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class _Given:
    """What the user gave (a module or an ``apply``), kept for ``user_model`` only: it does
    not enter the computation, so every ``_Given`` equals every other (no compilation
    keyed on the object's identity)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Given)

    def __hash__(self) -> int:
        return 0


def _static_apply(apply: Callable) -> Callable:
    """``apply`` as a static field: a partial compared by value where its parts hash."""
    if type(apply) is functools.partial:
        value = _Partial(apply.func, *apply.args, **apply.keywords)
        try:
            hash(value)
        except TypeError:  # unhashable arguments: compared by identity, as given
            return apply
        return value
    return apply


class _Linen(eqx.Module):
    """A Flax linen module's ``apply`` with its variables: ``params`` trained, the other
    collections frozen; applied (not mutating) to a batch of one sample. Once the input's
    shape is known (:func:`tappable`), its plain ``nn.Dense``, ``nn.Conv`` and ``nn.Embed``
    layers' parameters are carried as Equinox layers (``layers``, described by
    ``plains``), which the structured method taps (``_linen_layers``)."""

    apply: Callable = eqx.field(static=True)
    params: Any
    rest: Any
    given: _Given | None = eqx.field(static=True, default=None)  # the module or apply the user gave
    layers: tuple[Any, ...] = ()
    plains: tuple[Any, ...] = eqx.field(static=True, default=())

    def _applied(self, apply: Callable, x: jax.Array, rest: Any, **kwargs: Any) -> Any:
        """``apply(variables, x, **kwargs)``, the carried layers' parameters back in the
        variables and their ``__call__`` redirected to the Equinox layers."""
        from ntkbench.kernel import _linen_layers

        params = _linen_layers.merged(self.params, self.plains, self.layers)
        with _linen_layers.redirected(self.plains, self.layers):
            return apply({"params": params, **rest}, x, **kwargs)

    def __call__(self, x):
        return _one_sample(self._applied(self.apply, x[None], thaw(self.rest)))

    def train_forward(self, xb: jax.Array) -> tuple[jax.Array, _Linen]:
        """The batch ``xb`` (B, ...) in training mode, updating the non-``params``
        collections (``batch_stats``, ...): ``apply(variables, xb, train=True,
        mutable=[...])``, which needs the ``apply`` given as
        ``functools.partial(module.apply, train=False)`` (the module's own argument says
        how it trains). A module with only ``params`` is applied as it is. Returns
        (outputs (B, ...), ``self`` with the updated collections)."""
        rest = thaw(self.rest)
        if not self.rest:
            return self._applied(self.apply, xb, rest), self
        if not (isinstance(self.apply, functools.partial) and "train" in self.apply.keywords):
            raise ValueError(
                f"model: a linen module with the collections {sorted(self.rest)} trains through its own "
                "training-mode argument; give it as (functools.partial(module.apply, train=False), variables) "
                "so that training calls it with train=True, or train it in your own loop and record with nb.Watch"
            )
        apply = functools.partial(self.apply.func, *self.apply.args, **{**self.apply.keywords, "train": True})
        y, updates = self._applied(apply, xb, rest, mutable=sorted(self.rest))
        return y, eqx.tree_at(lambda m: m.rest, self, freeze({**rest, **updates}))

    def user_model(self) -> tuple[Any, dict[str, Any]]:
        """``(module or apply, variables)`` as the user gave it, with these variables."""
        from ntkbench.kernel import _linen_layers

        given = None if self.given is None else self.given.value
        return given, {"params": _linen_layers.merged(self.params, self.plains, self.layers), **thaw(self.rest)}


def tappable(model: Any, x_shape: tuple[int, ...], x_dtype: Any) -> Any:
    """``model`` (what :func:`ntkbench.kernel.as_model` returns) ready for the structured
    method's taps on inputs of one sample ``x_shape``: a linen module's plain layers (found
    by running it, so only once the input is known) carried as Equinox layers; any other
    model (an NNX module's layers are carried from the start) as it is. Traceable."""
    if not isinstance(model, _Linen) or model.plains:
        return model
    from ntkbench.kernel import _linen_layers

    plains = _linen_layers.plain_layers(model.apply, model.params, thaw(model.rest), x_shape, x_dtype)
    if not plains:
        return model
    params, layers = _linen_layers.split(model.params, plains)
    return _Linen(model.apply, params, model.rest, model.given, layers, plains)


def _is_bn(node: Any) -> bool:
    return isinstance(node, eqx.nn.BatchNorm)


def equinox_batchnorms(model: Any) -> list[Any]:
    """The ``eqx.nn.BatchNorm`` layers of ``model``, in pytree order."""
    return [n for n in jax.tree_util.tree_leaves(model, is_leaf=_is_bn) if _is_bn(n)]


class _EqxState(eqx.Module):
    """An Equinox model called as ``model(x, state)`` (returning ``(y, state)``) in
    inference mode, its ``eqx.nn.State`` frozen."""

    model: Any
    state: Any
    given: Any = eqx.field(static=True, default=None)  # the non-array fields of the user's model

    def __call__(self, x):
        out = self.model(x, thaw(self.state))
        return out[0] if isinstance(out, tuple) else out

    def train_forward(self, xb: jax.Array) -> tuple[jax.Array, _EqxState]:
        """The batch ``xb`` (B, ...) in training mode: the model's BatchNorm layers out of
        inference mode (batch statistics, running averages updated; other layers, dropout
        among them, stay in inference mode), called per sample under ``jax.vmap`` with the
        BatchNorm layers' ``axis_name``. Returns (outputs (B, ...), ``self`` with the new
        state)."""
        norms = equinox_batchnorms(self.model)
        names = {n.axis_name if isinstance(n.axis_name, str) else tuple(n.axis_name) for n in norms}
        if len(names) > 1 or any(not isinstance(n, str) for n in names):
            raise ValueError(
                f"model: training runs its BatchNorm layers under one jax.vmap axis name; they average over "
                f"{sorted(map(str, names))}"
            )
        model = jax.tree_util.tree_map(
            lambda n: eqx.tree_at(lambda b: b.inference, n, False) if _is_bn(n) else n, self.model, is_leaf=_is_bn
        )
        call = jax.vmap(model, in_axes=(0, None), out_axes=(0, None), axis_name=names.pop() if names else "batch")
        y, state = call(xb, thaw(self.state))
        return y, eqx.tree_at(lambda m: m.state, self, freeze(state))

    def user_model(self) -> tuple[Any, eqx.nn.State]:
        """``(model, state)`` as the user gave it (its inference flags as they were), with
        these parameters and state."""
        arrays = eqx.filter(thaw(self.model), eqx.is_array)
        return eqx.combine(arrays, self.given), thaw(self.state)


def _linen_apply(f: Any) -> Callable | None:
    """``f``'s linen ``apply`` when ``f`` is a linen module, its bound ``apply``, or a
    ``functools.partial`` of it (keyword arguments such as ``train=False``), else None."""
    linen = sys.modules.get("flax.linen")
    if linen is None:
        return None
    if isinstance(f, linen.Module):
        return f.apply
    inner = f.func if isinstance(f, functools.partial) else f
    owner = getattr(inner, "__self__", None)
    if isinstance(owner, linen.Module) and getattr(inner, "__name__", "") == "apply":
        return f
    return None


def stateful_model(model: Any) -> eqx.Module | None:
    """``model`` as a callable pytree of one sample whose inexact leaves are its trainable
    parameters, when it is a model with state; else None (an Equinox module or an
    ``(apply_fn, params)`` pair, taken as they are).

    - a Flax NNX module: ``nnx.Param`` differentiated; ``nnx.BatchStat`` and all other
      state fixed; called in evaluation mode on ``x[None]``;
    - ``(linen_module, variables)``, ``(linen_module.apply, variables)`` or
      ``(functools.partial(linen_module.apply, train=False), variables)``:
      ``variables["params"]`` differentiated, the other collections (``batch_stats``, ...)
      fixed; applied to ``x[None]``;
    - ``(eqx_model, state)`` with an ``eqx.nn.State``: the model's parameters
      differentiated, the state fixed; called as ``model(x, state)`` (its first output) in
      ``eqx.nn.inference_mode``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> bn, state = eqx.nn.make_with_state(eqx.nn.BatchNorm)(3, "batch", mode="batch")
    >>> m = stateful_model((bn, state))
    >>> [l.shape for l in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array))]
    [(3,), (3,)]
    >>> m(jnp.ones(3)).shape
    (3,)
    """
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        return _split_nnx(model)
    if not (isinstance(model, tuple) and len(model) == 2):
        return None
    first, second = model
    if isinstance(second, eqx.nn.State):
        if not isinstance(first, eqx.Module):
            raise TypeError(
                f"model: (model, state) with an eqx.nn.State needs an Equinox model, got {type(first).__name__}"
            )
        # a StateIndex's initial value (a model not built by make_with_state) is not trained
        is_index = lambda n: isinstance(n, eqx.nn.StateIndex)  # noqa: E731
        given = eqx.filter(first, eqx.is_array, inverse=True)
        first = jax.tree_util.tree_map(lambda n: freeze(n) if is_index(n) else n, first, is_leaf=is_index)
        return _EqxState(eqx.nn.inference_mode(first), freeze(second), given)
    apply = _linen_apply(first)
    if apply is None:
        return None
    if not isinstance(second, Mapping) or "params" not in second:
        got = sorted(second) if isinstance(second, Mapping) else type(second).__name__
        raise TypeError(
            f"model: (linen module, variables) needs the variables of module.init, a mapping with a 'params' "
            f"collection; got {got}"
        )
    rest = {k: v for k, v in second.items() if k != "params"}
    return _Linen(_static_apply(apply), second["params"], freeze(rest), _Given(first))


def is_mutable(model: Any) -> bool:
    """Whether ``model`` may change in place between calls (a Flax NNX module), so that no
    plan may be cached per model object."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(model, nnx.Module)


def train_forward(model: Any, xb: jax.Array) -> tuple[jax.Array, Any]:
    """``model`` (what :func:`ntkbench.kernel.as_model` returns) on the batch ``xb`` (B, ...)
    in training mode: (outputs (B, ...), the model with its state updated). A model with
    state (the wrappers above) trains its BatchNorm layers on the batch's statistics and
    updates their running averages; any other model is ``jax.vmap(model)(xb)``, unchanged."""
    forward = getattr(model, "train_forward", None)
    if isinstance(model, (_NNX, _Linen, _EqxState)) and forward is not None:
        return forward(xb)
    return jax.vmap(model)(xb), model


def user_model(model: Any) -> Any:
    """``model`` (what :func:`ntkbench.kernel.as_model` returns) in the form the user gave it:
    an NNX module, ``(linen module or apply, variables)``, ``(eqx model, state)``,
    ``(apply_fn, params)``; an Equinox module as it is."""
    from ntkbench.kernel._model import _Applied

    return model.user_model() if isinstance(model, (_NNX, _Linen, _EqxState, _Applied)) else model


def linen_apply(model: Any) -> Callable | None:
    """The apply of ``model`` when it is ``(linen module or apply, variables)`` with
    variables holding ``params``, as ``_Linen`` holds it (a partial compared by value);
    else None."""
    if not (isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], Mapping) and "params" in model[1]):
        return None
    apply = _linen_apply(model[0])
    return None if apply is None else _static_apply(apply)
