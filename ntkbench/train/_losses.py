"""Losses: the per-sample losses of a task (``make_loss``) and batched predictions."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

_TASKS = ("classification", "regression", "next_token")


_EVAL_BATCH = 512


def _mse(pred, y):
    """½‖f − y‖² of one sample; for sequences (T, V) the mean over positions."""
    if jnp.issubdtype(y.dtype, jnp.integer):
        target = jax.nn.one_hot(y, pred.shape[-1], dtype=pred.dtype)
    else:
        target = jnp.reshape(y, pred.shape).astype(pred.dtype)
    per_position = 0.5 * jnp.sum((pred - target) ** 2, axis=-1)
    return jnp.mean(per_position)


def _ce(pred, y):
    """Softmax cross-entropy with integer labels; mean over positions for sequences."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(pred, y))


@functools.cache
def make_loss(loss: str, task: str) -> Callable:
    """Per-sample loss ``l(prediction, target) -> scalar`` for a task.

    ``"mse"``: l = ½‖f − y‖², with one-hot targets for integer labels
    (classification; next-token: mean over positions). ``"ce"``: softmax cross-entropy
    with integer labels. Cached, so the same function (and compiled code) is reused.

    >>> import jax.numpy as jnp
    >>> float(make_loss("mse", "classification")(jnp.array([1.0, 0.0]), jnp.array(0)))
    0.0
    """
    if task not in _TASKS:
        raise ValueError(f"task must be one of {_TASKS}, got {task!r}")
    if loss == "mse":
        return _mse
    if loss == "ce":
        if task == "regression":
            raise ValueError("loss='ce' needs integer labels; a regression task takes loss='mse'")
        return _ce
    raise ValueError(f"loss must be 'mse', 'ce' or a callable, got {loss!r}")


def _resolve_loss(loss: Any, task: str) -> Callable:
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be 'mse', 'ce' or a callable, got {loss!r}")
    return make_loss(loss, task)


def _predict(model, x):
    return jax.lax.map(model, x, batch_size=min(_EVAL_BATCH, x.shape[0]))
