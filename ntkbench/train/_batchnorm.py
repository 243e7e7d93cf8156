""":func:`calibrate_batchnorm`: BatchNorm running statistics set to those of a batch, so
that a network's inference mode (the mode its kernel is computed in) matches its training
mode from step 0."""

from __future__ import annotations

import sys
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ntkbench.kernel._stateful import equinox_batchnorms, stateful_model, train_forward


def _nnx_batchnorms(module: Any) -> list[Any]:
    """The ``nnx.BatchNorm`` layers of ``module``, in graph order."""
    from flax import nnx

    return [node for _, node in nnx.iter_graph(module) if isinstance(node, nnx.BatchNorm)]


def _reset_equinox(model: Any, state: eqx.nn.State) -> eqx.nn.State:
    """A copy of ``state`` in which every BatchNorm of ``model`` takes its next batch's
    statistics as they are: ``mode="batch"`` averages and counter at zero (Equinox debiases
    by 1 − mⁿ, exact from zero), ``mode="ema"`` back to its first batch."""
    leaves, treedef = jax.tree_util.tree_flatten(state)
    state = jax.tree_util.tree_unflatten(treedef, leaves)  # State.set retires the state it is called on
    for bn in equinox_batchnorms(model):
        if bn.mode == "batch":
            mean, var = state.get(bn.batch_state_index)
            state = state.set(bn.batch_counter, jnp.zeros_like(state.get(bn.batch_counter)))
            state = state.set(bn.batch_state_index, (jnp.zeros_like(mean), jnp.zeros_like(var)))
        else:
            state = state.set(bn.ema_first_time_index, jnp.array(True))
    return state


def calibrate_batchnorm(model: Any, x: Any) -> Any:
    """``model`` with every BatchNorm layer's running statistics set to the statistics of
    the batch ``x`` (N, ...), as if ``x`` were the first batch it trained on; the
    parameters are not changed. Returned in the form given (the given model is not
    changed).

    A new network has no statistics: in inference mode its BatchNorm layers normalise by
    mean 0 and variance 1, so its kernel at step 0 is that of an unnormalised network, not
    the one training sees. On ``collective``'s ResNet-18 that step-0 kernel had an entropy of
    0.43 nats that rose to 3.3 within 5 steps as the statistics formed, which a plot reads
    as structure formation; calibrated, it starts at 4.4 and falls. Call it on training
    inputs before recording step 0.

    - ``(eqx_model, eqx.nn.State)``: Equinox BatchNorm in ``mode="batch"`` (its averages
      and counter start from zero, so the next step's debiased average is ``x``'s) or
      ``"ema"`` (back to its first batch);
    - a Flax NNX module: its ``nnx.BatchNorm`` layers run one training-mode pass with
      momentum 0 (their momentum is restored); a new module is returned.

    Linen modules are not supported (their momentum is fixed in the module): raises
    ``TypeError``. Shapes: ``x`` as the model's training batches, (N, ...).

    Example
    -------
    >>> import jax, equinox as eqx, ntkbench as nb
    >>> model, state = eqx.nn.make_with_state(nb.ResNet18)(1, 10, width=2, key=jax.random.key(0))
    >>> model, state = calibrate_batchnorm((model, state), jax.random.normal(jax.random.key(1), (16, 1, 8, 8)))
    >>> int(state.get(model.stem_bn.batch_counter))
    1
    """
    x = jnp.asarray(x)
    nnx = sys.modules.get("flax.nnx")
    if nnx is not None and isinstance(model, nnx.Module):
        module = nnx.clone(model)
        norms = _nnx_batchnorms(module)
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.momentum = 0.0
        _, calibrated = eqx.filter_jit(train_forward)(stateful_model(module), x)
        out = calibrated.user_model()
        for bn, m in zip(_nnx_batchnorms(out), momenta, strict=True):
            bn.momentum = m
        return out
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], eqx.nn.State):
        net, state = model
        wrapped = stateful_model((net, _reset_equinox(net, state)))
        _, calibrated = eqx.filter_jit(train_forward)(wrapped, x)
        return calibrated.user_model()
    raise TypeError(
        f"model: calibrate_batchnorm takes (eqx_model, eqx.nn.State) or a Flax NNX module, got {type(model).__name__}"
    )
