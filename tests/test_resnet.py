"""The CIFAR-style ResNet-18 (ntkbench.resnet): its structure, and its eNTK with BatchNorm
state against a float64 per-sample Jacobian of its parameters (the running statistics held
fixed, in inference mode) at a tiny width and input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import ntkbench as nb
from ntkbench.kernel import as_model


def test_structure_and_parameter_count():
    """Width 64 is the usual CIFAR ResNet-18: 11 173 962 parameters for 10 classes
    (convolutions without bias, BatchNorm scale and shift, the readout), counted from
    the layer shapes written out here."""
    shapes = eqx.filter_eval_shape(nb.ResNet18, 3, 10, width=64, key=jax.random.key(0))  # nothing allocated
    is_index = lambda n: isinstance(n, eqx.nn.StateIndex)  # noqa: E731  running statistics: not parameters
    leaves = jax.tree_util.tree_leaves(shapes, is_leaf=is_index)
    n = sum(a.size for a in leaves if isinstance(a, jax.ShapeDtypeStruct) and a.dtype.kind == "f")
    convs = 3 * 64 * 9 + sum(
        c_in * c_out * 9 + c_out * c_out * 9 + (c_in * c_out if c_in != c_out else 0)
        for c_in, c_out in [(64, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    )
    norms = 2 * (64 + sum(2 * c for c in (64, 64, 128, 128, 256, 256, 512, 512)) + 128 + 256 + 512)
    assert n == convs + norms + 512 * 10 + 10 == 11_173_962
    model, state = eqx.nn.make_with_state(nb.ResNet18)(3, 10, width=4, key=jax.random.key(0))
    y, _ = eqx.filter_eval_shape(eqx.nn.inference_mode(model), jnp.ones((3, 8, 8)), state)
    assert y.shape == (10,)
    # built without make_with_state, the model keeps the statistics' initial values in its
    # StateIndex fields: the kernel's parameters leave them out all the same
    plain = nb.ResNet18(3, 10, width=4, key=jax.random.key(0))
    checked = as_model((plain, eqx.nn.State(plain)))
    count = lambda m: sum(a.size for a in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_inexact_array)))  # noqa: E731
    assert count(checked) == count(model) < count(plain)
    with pytest.raises(ValueError, match="width must be a positive int"):
        nb.ResNet18(3, 10, width=0, key=jax.random.key(0))


def test_entk_against_float64_reference_with_running_statistics(x64):
    """Width 2, 3 samples of 3×4×4 (spatial 4, 2, 1, 1 through the stages), running means
    about ±2 and variances 2 to 3 (far from the initial 0 and 1). One float64 Jacobian
    over (parameters, statistics): the kernel over the parameters alone is the reference,
    the one over both would be the kernel with the statistics differentiated and must
    differ. Tolerance 1e-10: float64 throughout, another summation order only."""
    model, state = eqx.nn.make_with_state(nb.ResNet18)(3, 4, width=2, key=jax.random.key(0))
    model = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, model)
    leaves, treedef = jax.tree_util.tree_flatten(state)  # per BatchNorm: counter, mean, variance
    floats = [i for i, a in enumerate(leaves) if eqx.is_inexact_array(a)]
    keys = jax.random.split(jax.random.key(1), len(floats))
    for j, (i, k) in enumerate(zip(floats, keys, strict=True)):
        shape = leaves[i].shape
        leaves[i] = 2.0 * jax.random.normal(k, shape, jnp.float64) if j % 2 == 0 else 2.0 + jax.random.uniform(k, shape)
    x = jax.random.normal(jax.random.key(2), (3, 3, 4, 4), jnp.float64)

    params, static = eqx.partition(eqx.nn.inference_mode(model), eqx.is_inexact_array)
    stats = [leaves[i] for i in floats]

    def f(theta, xi):
        p, s = theta
        state_s = list(leaves)
        for i, v in zip(floats, s, strict=True):
            state_s[i] = v
        return eqx.combine(p, static)(xi, jax.tree_util.tree_unflatten(treedef, state_s))[0]

    flat, unravel = ravel_pytree((params, stats))
    n_params = ravel_pytree(params)[0].size
    J = jax.jit(jax.vmap(jax.jacrev(lambda t, xi: f(unravel(t), xi)), in_axes=(None, 0)))(flat, x)
    J = np.asarray(J, np.float64)
    ref = np.einsum("ikp,jkp->ij", J[..., :n_params], J[..., :n_params])
    with_stats = np.einsum("ikp,jkp->ij", J, J)

    # structured: the convolutions and the readout tapped, the BatchNorm scales and shifts
    # on per-leaf Jacobians (the route a ResNet takes; jacobian and ntvp on stateful
    # models are checked in test_flax.py)
    K = np.asarray(nb.entk((model, jax.tree_util.tree_unflatten(treedef, leaves)), x, method="structured"))
    scale = np.max(np.abs(ref))
    assert np.max(np.abs(K - ref)) / scale < 1e-10
    assert np.max(np.abs(with_stats - ref)) / scale > 1e-3
