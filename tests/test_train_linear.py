"""The linearized network trained like the network (``linear_test_loss``): checked against
the float64 closed form of linearized gradient descent on MSE (eNTK from an explicit
float64 Jacobian), against a model linear in its parameters (where it *is* the trained
model, under Adam and mini-batches too), and its errors."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ntkbench.data import Dataset
from ntkbench.train import Recorder, Watch, linearized_training_predictions, make_loss, train


def _data(n=10, m=6, d=5, c=2, seed=0):
    rng = np.random.default_rng(seed)
    x, xt = rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((m, d)).astype(np.float32)
    y, yt = rng.standard_normal((n, c)).astype(np.float32), rng.standard_normal((m, c)).astype(np.float32)
    return Dataset(x, y, xt, yt, task="regression", n_outputs=c, name="toy", in_shape=(d,), meta={})


def _jacobian64(model, x):
    """(N·C, P) Jacobian of the raveled parameters' outputs, flattened sample-major, and the
    outputs, as float64 (the reference contracts them in float64, as tests/test_kernel.py)."""
    import jax.flatten_util

    params, static = eqx.partition(model, eqx.is_inexact_array)
    flat, unravel = jax.flatten_util.ravel_pytree(params)

    def f(theta):
        return jax.vmap(eqx.combine(unravel(theta), static))(jnp.asarray(x)).reshape(-1)

    return np.asarray(jax.jacrev(f)(flat), np.float64), np.asarray(f(flat), np.float64)


def test_gradient_descent_matches_the_linearized_closed_form():
    """Full-batch GD with lr η for T steps on mean ½‖f − y‖²: the linearized network's test
    predictions are f_0(X*) − (η/N) Θ(X*, X) Σ_{t<T} (I − ηΘ/N)^t (f_0(X) − Y), with Θ the
    full eNTK (float64 Jacobian reference); and they are neither f_0 nor kernel regression's
    converged predictions (T is short), so the check can fail."""
    data = _data()
    model = eqx.nn.MLP(5, 2, 16, 2, activation=jnp.tanh, key=jax.random.key(3))
    eta, steps, n = 0.3, 25, 10
    j, f0 = _jacobian64(model, data.x_train)
    jt, f0t = _jacobian64(model, data.x_test)
    theta, theta_t = j @ j.T, jt @ j.T
    a = np.eye(theta.shape[0]) - eta / n * theta
    r, acc = f0 - data.y_train.reshape(-1), np.zeros_like(f0)
    for _ in range(steps):
        acc += r
        r = a @ r
    ref = (f0t - eta / n * theta_t @ acc).reshape(data.x_test.shape[0], 2)
    got = linearized_training_predictions(
        model,
        data.x_train,
        data.y_train,
        data.x_test,
        optimizer=optax.sgd(eta),
        steps=steps,
        loss_fn=make_loss("mse", "regression"),
        batch_size=n,
        key=jax.random.key(0),
    )
    # float32 model parameters, float64 reference: agreement to float32 round-off
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=1e-4, atol=1e-4)
    assert np.abs(ref - f0t.reshape(ref.shape)).max() > 0.05


def test_a_model_linear_in_its_parameters_is_its_own_linearization():
    """For f(x) = W x + b the linearization is exact: ``linear_test_loss`` equals the trained
    model's ``test_loss`` under Adam with mini-batches (the same batches), and differs from
    kernel regression's converged ``kernel_test_loss`` (finite time, another optimizer)."""
    data = _data(n=16)
    model = eqx.nn.Linear(5, 2, key=jax.random.key(1))
    rec = Recorder(every=20, probe=8, measures=["test_loss", "linear_test_loss", "kernel_test_loss"])
    _, ds = train(
        model, data, optimizer=optax.adam(0.02), steps=40, batch_size=4, loss="mse", recorder=rec, key=jax.random.key(2)
    )
    lin = ds["linear_test_loss"].values
    assert ds["linear_test_loss"].attrs["long_name"].startswith("test loss of the linearized network")
    np.testing.assert_allclose(lin, lin[0], rtol=1e-6)  # a constant of the run
    # float32 training of the same parameters two ways (direct and through a jvp)
    np.testing.assert_allclose(lin[-1], float(ds["test_loss"].isel(step=-1)), rtol=1e-4)
    assert abs(lin[-1] - float(ds["test_loss"].isel(step=0))) > 0.05  # training moved it
    assert abs(lin[-1] - float(ds["kernel_test_loss"].isel(step=-1))) > 0.01


def test_linear_measures_need_train_and_a_test_set():
    data = _data()
    with pytest.raises(ValueError, match="linear_test_loss"):
        Watch(data, recorder=Recorder(every=5, probe=4, measures=["linear_test_loss"]), steps=10)
    with pytest.raises(ValueError, match="needs a test set"):
        Recorder(every=5, probe=4, measures=["linear_test_loss"]).for_task("regression", False)
    with pytest.raises(ValueError, match="steps"):
        linearized_training_predictions(
            eqx.nn.Linear(5, 2, key=jax.random.key(0)), data.x_train, data.y_train, data.x_test,
            optimizer=optax.sgd(0.1), steps=-1, loss_fn=make_loss("mse", "regression"), batch_size=4,
            key=jax.random.key(0),
        )  # fmt: skip
