"""The linearized network trained like the network: :func:`linearized_training_predictions`.

Kernel regression with the initial eNTK (:func:`ntkbench.train.linearized_test_predictions`)
is the linearized network trained to convergence by gradient flow on squared error. A
network trained for T steps with Adam is not compared fairly with it: the difference mixes
feature learning with training time and the optimizer. This module trains the linearized
network, f_lin(x; θ) = f(x; θ_0) + J(x; θ_0)(θ − θ_0), with the *same* optimizer, loss,
mini-batches and number of steps as :func:`ntkbench.train.train`, in parameter space
(``jax.jvp`` at θ_0 each step), so any optax optimizer works, µP's per-layer learning rates
included (the parameters keep the model's tree).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ntkbench.train._losses import _EVAL_BATCH
from ntkbench.train._recorder import optimizer_steps


def _linear_apply(params, params0, static, xb):
    """f_lin on a batch: f(xb; θ_0) + J(xb; θ_0)(θ − θ_0), shape (B, *output)."""

    def f(q):
        return jax.vmap(eqx.combine(q, static))(xb)

    delta = jax.tree_util.tree_map(jnp.subtract, params, params0)
    y0, dy = jax.jvp(f, (params0,), (delta,))
    return y0 + dy


@functools.partial(jax.jit, static_argnums=0)
def _train_linear(fixed: Any, params0, frozen, x, y, x_test, key, steps):
    optimizer, loss_fn, batch_size, static = fixed.value
    static = eqx.combine(frozen, static)

    def batch_loss(p, state, xb, yb):
        return jnp.mean(jax.vmap(loss_fn)(_linear_apply(p, params0, static, xb), yb)), state

    params, _, _ = optimizer_steps(
        batch_loss, params0, optimizer.init(params0), x, y, key, 0, steps, optimizer, batch_size
    )
    n = x_test.shape[0]
    b = min(_EVAL_BATCH, n)
    pad = (-n) % b
    xt = jnp.concatenate([x_test, jnp.repeat(x_test[:1], pad, axis=0)]) if pad else x_test
    chunks = xt.reshape((-1, b, *x_test.shape[1:]))
    preds = jax.lax.map(lambda xb: _linear_apply(params, params0, static, xb), chunks)
    return preds.reshape((-1, *preds.shape[2:]))[:n]


def linearized_training_predictions(
    model: Any,
    x_train: jax.Array,
    y_train: jax.Array,
    x_test: jax.Array,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    loss_fn: Callable,
    batch_size: int,
    key: jax.Array,
) -> jax.Array:
    """Test predictions of the network linearized at ``model`` and trained with
    ``optimizer`` for ``steps`` steps on the mean of ``loss_fn`` (a per-sample loss, as
    :func:`ntkbench.train.make_loss` gives), on the mini-batches :func:`ntkbench.train.train`
    draws from ``key`` (``batch_size`` >= N: the full batch). Shapes: x_train (N, ...),
    y_train (N, ...) as the loss takes them, x_test (M, ...) → (M, *output_shape).

    Under full-batch gradient descent on ½‖f − y‖² this is the closed form
    f_0(X*) − Θ(X*, X) Σ_{t<T} (η/N)(I − ηΘ/N)^t (f_0(X) − Y) (tests/test_train_linear.py
    checks it in float64), and for a model linear in its parameters it is the trained model.
    """
    if int(steps) < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}")
    params0, rest = eqx.partition(model, eqx.is_inexact_array)
    frozen, static = eqx.partition(rest, eqx.is_array)
    from ntkbench.train._loop import _static_arg

    fixed = _static_arg((optimizer, loss_fn, int(batch_size), static))
    return _train_linear(
        fixed, params0, frozen, jnp.asarray(x_train), jnp.asarray(y_train), jnp.asarray(x_test), key, int(steps)
    )
