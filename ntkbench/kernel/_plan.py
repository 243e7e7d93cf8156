"""Caches that make a repeated :func:`entk` call cheap: the method choice per (model
structure, shapes, options) and the steady-state plan per model object."""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import equinox as eqx
import jax
from jax.core import Tracer

from ntkbench.kernel._costs import _choose
from ntkbench.kernel._model import Outputs
from ntkbench.kernel._stateful import is_mutable, linen_apply

_CHOICES: dict = {}


class _Static:
    """A model's non-array part as a ``jax.jit`` static argument, its hash computed once
    (equal structures share one compiled kernel; a repeated call hashes nothing)."""

    __slots__ = ("value", "_hash")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or (isinstance(other, _Static) and self._hash == other._hash and self.value == other.value)


#: (id(model), shapes, options) -> (weakref to the model, params, _Static, method, block
#: sizes): the steady-state plan of :func:`entk` for a model object called again (checks,
#: method choice and partition done once; an Equinox model is immutable).
_PLANS: dict = {}
_PLANS_MAX = 256


def _plan_key(model: Any, x1: Any, x2: Any, outputs: Any, method: Any, block_size: Any, memory_limit: Any):
    """The plan key of a call whose inputs are JAX arrays (``x2`` None or of ``x1``'s
    dtype), else None."""
    if is_mutable(model):  # an NNX module changes in place: split it again every call
        return None
    if not isinstance(x1, jax.Array) or (x2 is not None and not (isinstance(x2, jax.Array) and x2.dtype == x1.dtype)):
        return None
    return (id(model), x1.shape, x1.dtype, None if x2 is None else x2.shape, outputs, method, block_size, memory_limit)


def _store_plan(key: Any, model: Any, checked: Any, choice: tuple) -> tuple | None:
    """Make (and, for a weak-referenceable concrete model, remember) the plan of a call."""
    params, static = eqx.partition(checked, eqx.is_array)
    try:
        plan_static = _Static(static)
    except TypeError:  # unhashable static fields: the plain filter_jit path
        return None
    plan = (None, params, plan_static, *choice)
    if key is None or any(isinstance(leaf, Tracer) for leaf in jax.tree_util.tree_leaves(params)):
        return plan
    try:
        ref = weakref.ref(model)
    except TypeError:  # e.g. an (apply_fn, params) tuple: rebuilt every call anyway
        return plan
    if len(_PLANS) >= _PLANS_MAX:
        for k in [k for k, v in _PLANS.items() if v[0]() is None] or list(_PLANS):
            del _PLANS[k]
    _PLANS[key] = plan = (ref, *plan[1:])
    return plan


#: (how the model is rebuilt, leaf shapes and dtypes, input shapes, options) -> the method
#: choice of :func:`entk` for a Flax model (what ``_PLANS`` is for Equinox models): an NNX
#: module changes in place and a linen pair is a new tuple each call, so their plan is kept
#: per structure, and their arrays are read afresh every call.
_FLAX_CHOICES: dict = {}


class _Rebuild(NamedTuple):
    """How a Flax model is rebuilt from its array leaves inside the trace: an NNX module
    from its pytree structure, or ``(apply, variables)`` of a linen module from the
    structure of its variables. Compared by value (a static argument of ``jax.jit``)."""

    treedef: Any
    apply: Any = None  # a linen apply (value-compared): the leaves are its variables'

    def model(self, leaves: list) -> Any:
        tree = jax.tree_util.tree_unflatten(self.treedef, leaves)
        return tree if self.apply is None else (self.apply, tree)


def _flax_call(model: Any, x1: Any, x2: Any, outputs: Any, method: Any, block_size: Any, memory_limit: Any):
    """(array leaves, ``_Rebuild``, choice key) of a call on a Flax NNX module or a linen
    ``(module or apply, variables)`` whose kernel may be computed from those leaves alone
    (all JAX arrays; for NNX none shared between two variables: ``jax.tree_util`` would
    unshare them) and inputs that are JAX arrays; else None. Flattening costs ~20 µs where
    ``nnx.split``, the regrouping and the checks cost ~0.1–0.5 ms, and an NNX module's
    structure holds its types and static attributes (a change of them is a new one)."""
    if not isinstance(x1, jax.Array) or (x2 is not None and not (isinstance(x2, jax.Array) and x2.dtype == x1.dtype)):
        return None
    if is_mutable(model):
        try:
            leaves, treedef = jax.tree_util.tree_flatten(model)
        except Exception:  # a module JAX cannot flatten: the general path (nnx.split)
            return None
        if len({id(leaf) for leaf in leaves}) != len(leaves):
            return None
        rebuild = _Rebuild(treedef)
    else:
        apply = linen_apply(model)
        if apply is None:
            return None
        leaves, treedef = jax.tree_util.tree_flatten(model[1])
        rebuild = _Rebuild(treedef, apply)
    if not all(isinstance(leaf, jax.Array) for leaf in leaves):
        return None
    shapes = tuple((leaf.shape, leaf.dtype) for leaf in leaves)
    inputs = (x1.shape, x1.dtype, None if x2 is None else x2.shape)
    # the options' types too: block_size=True equals 1 but is refused (the checks run on a miss)
    options = (outputs, method, block_size, type(block_size), memory_limit, type(memory_limit))
    key = (rebuild, shapes, inputs, options)
    try:
        hash(key)
    except TypeError:  # unhashable static attributes or options: the general path
        return None
    return leaves, rebuild, key


def _store_flax_choice(key: Any, choice: tuple) -> None:
    if len(_FLAX_CHOICES) >= _PLANS_MAX:
        _FLAX_CHOICES.clear()
    _FLAX_CHOICES[key] = choice


def _resolve_method(
    model, x1, x2, method: str, memory_limit: int, outputs: Outputs = "trace", block_size: int | None = None
) -> tuple[str, int | None, int | None]:
    """Check the model applies to one sample of x1 and resolve ``"auto"`` to (method,
    block_size, feature_block); cached per (model structure, shapes), so repeated calls
    (e.g. while training) cost nothing."""
    leaves, treedef = jax.tree_util.tree_flatten(model)
    leaf_shapes = tuple((l.shape, str(l.dtype)) if hasattr(l, "shape") else None for l in leaves)
    key = (
        treedef,
        leaf_shapes,
        x1.shape,
        str(x1.dtype),
        None if x2 is None else x2.shape,
        method,
        memory_limit,
        outputs,
        block_size,
    )
    try:
        return _CHOICES[key]
    except KeyError:
        pass
    except TypeError:  # unhashable static fields: no caching
        key = None
    try:
        jax.eval_shape(model, jax.ShapeDtypeStruct(x1.shape[1:], x1.dtype))
    except Exception as e:  # a shape error inside the model: name the input
        raise ValueError(f"x1: the model cannot be applied to one sample of shape {x1.shape[1:]}: {e}") from e
    choice = (method, block_size, block_size)
    if method == "auto":
        choice = _choose(model, x1, x2, outputs, memory_limit, block_size)
    if key is not None:
        _CHOICES[key] = choice
    return choice
