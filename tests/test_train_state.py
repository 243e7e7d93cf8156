"""train() on models with BatchNorm state (Equinox ``(model, state)``, Flax NNX, linen):
the same parameters and running statistics as a hand-written optax loop in each library's
own training mode, the model returned in the form it was given, and the ResNet's
BatchNorm prior and calibration."""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ntkbench as nb
from ntkbench.train import make_loss, train
from ntkbench.train._recorder import train_batch

STEPS = 6
BATCH = 32
_OPTIMIZER = optax.sgd(0.1, momentum=0.9)

# float32 training steps of the same function, compiled in another program (train()'s
# fori_loop against a Python loop of jitted steps): XLA may fuse and order the sums
# differently, ~1e-6 relative per step over 6 steps. SGD with momentum, not Adam: a bias
# before a BatchNorm has a zero gradient up to round-off, which Adam would scale to ±lr
RTOL, ATOL = 2e-4, 2e-5


@pytest.fixture(scope="module")
def digits():
    return nb.load("digits", 96, 16, seed=0)


def _train(model, data, key):
    return train(model, data, optimizer=_OPTIMIZER, steps=STEPS, batch_size=BATCH, loss="mse", key=key)


def _hand_loop(data, params, state, batch_loss, key):
    """SGD with momentum on ``batch_loss(params, state, xb, yb) -> (loss, state)`` over train()'s
    batches (train_batch from fold_in(key, step))."""
    opt = _OPTIMIZER
    opt_state = opt.init(params)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    @jax.jit
    def step(params, state, opt_state, i):
        xb, yb = train_batch(x, y, key, i, BATCH)
        grads, state = jax.grad(batch_loss, has_aux=True)(params, state, xb, yb)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), state, opt_state

    for i in range(STEPS):
        params, state, opt_state = step(params, state, opt_state, i)
    return params, state


def _assert_trees_close(got, want):
    got_leaves, want_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(got_leaves) == len(want_leaves) > 0
    for g, w in zip(got_leaves, want_leaves, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=RTOL, atol=ATOL)


# --------------------------------------------------------------------------- Equinox


class EqxNet(eqx.Module):
    """64 -> 16 -> BatchNorm -> relu -> 10, one sample with its state."""

    lin1: eqx.nn.Linear
    bn: eqx.nn.BatchNorm
    lin2: eqx.nn.Linear

    def __init__(self, key, mode="batch"):
        k1, k2 = jax.random.split(key)
        self.lin1 = eqx.nn.Linear(64, 16, key=k1)
        self.bn = eqx.nn.BatchNorm(16, "batch", momentum=0.5, mode=mode)
        self.lin2 = eqx.nn.Linear(16, 10, key=k2)

    def __call__(self, x, state):
        h, state = self.bn(self.lin1(x), state)
        return self.lin2(jax.nn.relu(h)), state


def test_equinox_state_trains_as_in_a_hand_written_loop(digits):
    """Batch statistics in the forward pass, the running averages carried from step to
    step: the parameters and the state equal Equinox's own training mode (vmap with the
    BatchNorm's axis name), and the pair comes back as (model, state), not in inference mode."""
    key = jax.random.key(3)
    model, state = eqx.nn.make_with_state(EqxNet)(jax.random.key(0))
    (trained, new_state), ds = _train((model, state), digits, key)
    assert isinstance(trained, EqxNet) and isinstance(new_state, eqx.nn.State)
    assert trained.bn.inference is False
    loss_fn = make_loss("mse", digits.task)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def batch_loss(p, st, xb, yb):
        m = eqx.combine(p, static)
        preds, st = jax.vmap(m, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(xb, st)
        return jnp.mean(jax.vmap(loss_fn)(preds, yb)), st

    want_params, want_state = _hand_loop(digits, params, state, batch_loss, key)
    _assert_trees_close(eqx.filter(trained, eqx.is_inexact_array), want_params)
    _assert_trees_close(new_state, want_state)
    assert int(new_state.get(trained.bn.batch_counter)) == STEPS
    # the recorded final loss is the inference-mode network's, with the new statistics
    preds = jax.vmap(eqx.nn.inference_mode(trained), in_axes=(0, None))(jnp.asarray(digits.x_train), new_state)[0]
    want_loss = jnp.mean(jax.vmap(loss_fn)(preds, jnp.asarray(digits.y_train)))
    assert float(ds.loss[-1]) == pytest.approx(float(want_loss), rel=1e-5)


def test_batchnorm_over_two_axis_names_is_refused(digits):
    model, state = eqx.nn.make_with_state(EqxNet)(jax.random.key(0))
    model = eqx.tree_at(lambda m: m.bn.axis_name, model, ("batch", "device"))
    with pytest.raises(ValueError, match="axis name"):
        _train((model, state), digits, jax.random.key(0))


# --------------------------------------------------------------------------- Flax NNX


def _nnx_net_class() -> type:
    """64 -> 16 -> BatchNorm -> relu -> 10 in Flax NNX (flax imported when a test runs)."""
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs, momentum):
            self.lin1 = nnx.Linear(64, 16, rngs=rngs)
            self.bn = nnx.BatchNorm(16, momentum=momentum, rngs=rngs)
            self.lin2 = nnx.Linear(16, 10, rngs=rngs)

        def __call__(self, x):
            return self.lin2(nnx.relu(self.bn(self.lin1(x))))

    return Net


def test_nnx_batchnorm_trains_as_in_a_hand_written_loop(digits):
    """An NNX module trains in its training mode (batch statistics, nnx.BatchStat
    updated); train() returns a new NNX module and leaves the given one as it was."""
    from flax import nnx

    Net = _nnx_net_class()
    key = jax.random.key(4)
    net = Net(nnx.Rngs(0), momentum=0.5)
    trained, _ = _train(net, digits, key)
    assert isinstance(trained, Net) and trained is not net
    np.testing.assert_array_equal(np.asarray(net.bn.mean[...]), 0.0)  # the given module is unchanged
    loss_fn = make_loss("mse", digits.task)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)

    def batch_loss(p, st, xb, yb):
        m = nnx.merge(graphdef, p, jax.tree_util.tree_map(lambda a: a, st))  # Variables of this trace level
        m.train()
        preds = m(xb)
        return jnp.mean(jax.vmap(loss_fn)(preds, yb)), nnx.split(m, nnx.Param, ...)[2]

    want_params, want_rest = _hand_loop(digits, params, rest, batch_loss, key)
    _, got_params, got_rest = nnx.split(trained, nnx.Param, ...)
    _assert_trees_close(got_params, want_params)
    _assert_trees_close(got_rest, want_rest)
    assert not np.allclose(np.asarray(trained.bn.mean[...]), 0.0)


# --------------------------------------------------------------------------- linen


def _linen_net():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = True):
            h = nn.Dense(16)(x)
            h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(h)
            return nn.Dense(10)(nn.relu(h))

    return Net()


def test_linen_batch_stats_train_through_the_modules_own_train_argument(digits):
    """(functools.partial(module.apply, train=False), variables): training calls it with
    train=True and mutable batch_stats, as a linen loop does; the pair comes back in the
    form given."""
    module = _linen_net()
    variables = module.init(jax.random.key(0), jnp.ones((1, 64)), train=False)
    apply = functools.partial(module.apply, train=False)
    key = jax.random.key(5)
    (got_apply, got_vars), _ = _train((apply, variables), digits, key)
    assert got_apply is apply and set(got_vars) == {"params", "batch_stats"}
    loss_fn = make_loss("mse", digits.task)

    def batch_loss(p, st, xb, yb):
        preds, updates = module.apply({"params": p, **st}, xb, train=True, mutable=["batch_stats"])
        return jnp.mean(jax.vmap(loss_fn)(preds, yb)), dict(updates)

    rest = {"batch_stats": variables["batch_stats"]}
    want_params, want_rest = _hand_loop(digits, variables["params"], rest, batch_loss, key)
    _assert_trees_close(got_vars["params"], want_params)
    _assert_trees_close(got_vars["batch_stats"], want_rest["batch_stats"])


def test_linen_batch_stats_without_a_train_argument_are_refused(digits):
    module = _linen_net()
    variables = module.init(jax.random.key(0), jnp.ones((1, 64)), train=False)
    with pytest.raises(ValueError, match=r"train=False.*nb\.Watch"):
        _train((functools.partial(module.apply), variables), digits, jax.random.key(0))


# --------------------------------------------------------------------------- ResNet-18


def test_resnet_batchnorm_prior_is_one_batch_of_mean_0_variance_1():
    """A new ResNet's BatchNorm normalises by mean 0, variance 1 in inference mode (as
    PyTorch and Flax do); after one training batch its running statistics are the average
    of that prior and the batch's, weighted 1 : 1/m as Equinox's debiasing then implies."""
    from ntkbench.resnet import _bn

    m = 0.9
    bn, state = eqx.nn.make_with_state(_bn)(3, m)
    x = jax.random.normal(jax.random.key(0), (16, 3, 4, 4)) * 2.0 + 1.0
    y, _ = jax.vmap(eqx.nn.inference_mode(bn), in_axes=(0, None), out_axes=(0, None))(x, state)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x) / np.sqrt(1 + bn.eps), rtol=1e-6)
    _, state = jax.vmap(bn, in_axes=(0, None), out_axes=(0, None), axis_name="batch")(x, state)
    y, _ = jax.vmap(eqx.nn.inference_mode(bn), in_axes=(0, None), out_axes=(0, None))(x, state)
    xn = np.asarray(x, np.float64)
    mean, var = xn.mean(axis=(0, 2, 3)), xn.var(axis=(0, 2, 3))
    w = (1 - m) * m, 1 - m  # the prior's weight and the batch's, before debiasing by 1 - m²
    r_mean = (w[1] * mean) / (1 - m**2)
    r_var = (w[0] * 1.0 + w[1] * var) / (1 - m**2)
    want = (xn - r_mean[:, None, None]) / np.sqrt(r_var[:, None, None] + bn.eps)
    np.testing.assert_allclose(np.asarray(y), want, rtol=1e-4, atol=1e-5)  # float32 statistics


def _inference_vs_training_mode(model, calibrated, x):
    """(training-mode outputs of ``model`` on x, inference-mode outputs of ``calibrated``
    and of ``model`` on x)."""
    from ntkbench.kernel._stateful import stateful_model, train_forward

    train_mode, _ = eqx.filter_jit(train_forward)(stateful_model(model), x)
    apply = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
    return train_mode, apply(stateful_model(calibrated), x), apply(stateful_model(model), x)


def test_calibrated_network_in_inference_mode_is_its_training_mode_on_that_batch():
    """calibrate_batchnorm((model, state), x): the running statistics become x's, so the
    network in inference mode gives on x what training mode gives (the kernel at step 0 is
    of the normalised network), without changing a parameter. (The ResNet-18's
    calibration through make_model: test_resnet18_model_config.)"""
    model, state = eqx.nn.make_with_state(EqxNet)(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (24, 64)) * 3.0 + 2.0
    calibrated = nb.calibrate_batchnorm((model, state), x)
    assert eqx.tree_equal(eqx.filter(calibrated[0], eqx.is_array), eqx.filter(model, eqx.is_array))
    train_mode, inference, uncalibrated = _inference_vs_training_mode((model, state), calibrated, x)
    # float32: the same statistics, reduced in another order (the running average's
    # (1 - m) scaling and its debiasing): 1e-4 relative of outputs of size ~1
    np.testing.assert_allclose(np.asarray(inference), np.asarray(train_mode), rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.asarray(uncalibrated), np.asarray(train_mode), atol=1e-2)


def test_calibrated_equinox_ema_and_nnx_batchnorm():
    """The same for Equinox's mode="ema" BatchNorm and for an NNX module (momentum 0.9
    restored after its momentum-0 pass; the given module unchanged)."""
    from flax import nnx

    x = jax.random.normal(jax.random.key(1), (32, 64)) * 3.0 + 2.0
    net = eqx.nn.make_with_state(EqxNet)(jax.random.key(0), mode="ema")
    calibrated = nb.calibrate_batchnorm(net, x)
    train_mode, inference, _ = _inference_vs_training_mode(net, calibrated, x)
    np.testing.assert_allclose(np.asarray(inference), np.asarray(train_mode), rtol=1e-4, atol=1e-4)

    Net = _nnx_net_class()
    module = Net(nnx.Rngs(0), momentum=0.9)
    calibrated = nb.calibrate_batchnorm(module, x)
    assert isinstance(calibrated, Net) and calibrated.bn.momentum == 0.9
    np.testing.assert_array_equal(np.asarray(module.bn.mean[...]), 0.0)
    train_mode, inference, uncalibrated = _inference_vs_training_mode(module, calibrated, x)
    np.testing.assert_allclose(np.asarray(inference), np.asarray(train_mode), rtol=1e-4, atol=1e-4)
    assert not np.allclose(np.asarray(uncalibrated), np.asarray(train_mode), atol=1e-2)
    with pytest.raises(TypeError, match="calibrate_batchnorm"):
        nb.calibrate_batchnorm(EqxNet(jax.random.key(0)), x)


def test_resnet18_model_config():
    """make_model builds the pair, calibrated on the inputs given; count_params counts the
    parameters, not the running statistics; bad momentum names the key."""
    from ntkbench.kernel import as_model
    from ntkbench.models import count_config_params, make_model

    x = jax.random.normal(jax.random.key(1), (20, 1, 8, 8))
    cfg = {"name": "resnet18", "width": 2, "momentum": 0.8}
    model, state = make_model(cfg, key=jax.random.key(0), in_shape=(1, 8, 8), out_size=10, x=x)
    assert model.blocks[0].bn1.momentum == 0.8
    assert int(state.get(model.stem_bn.batch_counter)) == 1
    _, fresh = make_model({**cfg, "calibrate": False}, key=jax.random.key(0), in_shape=(1, 8, 8), out_size=10, x=x)
    assert not np.allclose(
        np.asarray(fresh.get(model.stem_bn.batch_state_index)[1]),
        np.asarray(state.get(model.stem_bn.batch_state_index)[1]),
    )
    trainable = eqx.filter(as_model((model, state)), eqx.is_inexact_array)
    n = sum(leaf.size for leaf in jax.tree_util.tree_leaves(trainable))
    assert nb.count_params((model, state)) == n == count_config_params(cfg, in_shape=(1, 8, 8), out_size=10)
    with pytest.raises(ValueError, match="momentum"):
        make_model({**cfg, "momentum": 1.0}, key=jax.random.key(0), in_shape=(1, 8, 8), out_size=10)
    with pytest.raises(ValueError, match="in_shape"):
        make_model(cfg, key=jax.random.key(0), in_shape=(64,), out_size=10)


def test_apply_fn_params_pair_comes_back_as_a_pair(digits):
    """(apply_fn, params) in, (the same apply_fn, trained params) out, as a hand loop of
    the same function gives."""
    params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}

    def apply(p, x):
        return x @ p["w"] + p["b"]

    key = jax.random.key(6)
    (got_apply, got_params), _ = _train((apply, params), digits, key)
    assert got_apply is apply
    loss_fn = make_loss("mse", digits.task)

    def batch_loss(p, st, xb, yb):
        return jnp.mean(jax.vmap(loss_fn)(jax.vmap(lambda xi: apply(p, xi))(xb), yb)), st

    want, _ = _hand_loop(digits, params, (), batch_loss, key)
    _assert_trees_close(got_params, want)
