"""Optimizers of a sweep config: :func:`make_optimizer` builds the optax optimizer of a
``[train]`` table, and :func:`scale_by_mup` is µP's per-layer learning-rate scaling as an
optax transformation (the factors come from :func:`ntkbench.models.mup_leaf_scales`).

Example
-------
>>> import jax, optax
>>> from ntkbench.models import MLP, mup_leaf_scales
>>> model = MLP(4, 2, 8, 1, parametrization="mup", key=jax.random.key(0))
>>> opt = optax.chain(make_optimizer("adam", 1e-3), scale_by_mup(mup_leaf_scales(model)))
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

__all__ = ["make_optimizer", "scale_by_mup", "OPTIMIZERS"]

#: Optimizer names of a config's ``train.optimizer`` (:func:`make_optimizer`).
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


@functools.cache
def make_optimizer(name: str = "sgd", lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0):
    """An optax optimizer from config values (cached: equal settings give the same
    object, so compiled training steps are reused across runs).

    >>> make_optimizer("adam", 1e-3) is make_optimizer("adam", 1e-3)
    True
    """
    import optax

    if name == "sgd":
        opt = optax.sgd(lr)
    elif name == "momentum":
        opt = optax.sgd(lr, momentum=momentum)
    elif name == "adam":
        opt = optax.adam(lr)
    elif name == "adamw":
        opt = optax.adamw(lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"name must be one of {list(OPTIMIZERS)}, got {name!r}")
    if weight_decay and name != "adamw":
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt


def scale_by_mup(factors: Sequence[float]):
    """µP's per-layer learning rates as an ``optax.GradientTransformation``: multiply each
    update leaf by its factor, one float per parameter leaf in ``jax.tree_util.tree_leaves``
    order (:func:`ntkbench.models.mup_leaf_scales` gives them for a model). Chain it after
    the optimizer (``optax.chain(optax.adam(lr), scale_by_mup(factors))``) so that it
    scales the optimizer's final updates. Stateless (``optax.EmptyState``); a leaf whose
    factor is 1 passes unchanged.

    >>> import jax.numpy as jnp, optax
    >>> opt = optax.chain(optax.sgd(0.1), scale_by_mup((1.0, 0.5)))
    >>> params = (jnp.ones(2), jnp.ones(2))
    >>> updates, _ = opt.update(params, opt.init(params))
    >>> [round(float(u[0]), 4) for u in updates]
    [-0.1, -0.05]
    """
    import jax
    import optax

    factors = tuple(float(f) for f in factors)

    def init(params: Any) -> optax.OptState:
        del params
        return optax.EmptyState()

    def update(updates: Any, state: optax.OptState, params: Any = None) -> tuple[Any, optax.OptState]:
        del params
        leaves, treedef = jax.tree_util.tree_flatten(updates)
        if len(leaves) != len(factors):
            raise ValueError(
                f"µP optimizer: updates have {len(leaves)} array leaves, the model had {len(factors)} parameters"
            )
        leaves = [u * f if f != 1.0 else u for u, f in zip(leaves, factors, strict=True)]
        return jax.tree_util.tree_unflatten(treedef, leaves), state

    return optax.GradientTransformation(init, update)


_MUP_OPTIMIZERS: dict = {}  # (optimizer, per-leaf factors) -> its µP-scaled transformation


def _mup_scaled(opt, model):
    """µP Adam: scale each parameter's update by its layer's ``mup_lr_scales(model)``
    factor (hidden and readout layers × base_width / width; input layer, embeddings and
    LayerNorms × 1), for any model of :mod:`ntkbench.models`: ``opt`` chained with
    :func:`scale_by_mup`. Not µP, or all factors 1 (``base_width == width``): ``opt``
    itself. Results are cached by ``(opt, factors)`` so equal runs get the same
    transformation and reuse compiled training steps.
    """
    import optax

    from ntkbench.models import CNN, MLP, TinyTransformer, mup_leaf_scales

    if not isinstance(model, (MLP, CNN, TinyTransformer)) or model.parametrization != "mup":
        return opt
    factors = mup_leaf_scales(model)  # one per parameter leaf, in tree_leaves order
    if all(f == 1.0 for f in factors):
        return opt
    key = (opt, factors)
    try:
        if key in _MUP_OPTIMIZERS:
            return _MUP_OPTIMIZERS[key]
    except TypeError:  # an unhashable optimizer: build it, don't cache
        key = None
    scaled = optax.chain(opt, scale_by_mup(factors))
    if key is not None:
        _MUP_OPTIMIZERS[key] = scaled
    return scaled
