"""A CIFAR-style ResNet-18 with BatchNorm, in Equinox, with a width parameter.

The network of He et al. (2016) as used on CIFAR-10 (a 3×3 stem convolution of stride 1,
no max-pool): four stages of two basic blocks each (3×3 conv, BatchNorm, ReLU, 3×3 conv,
BatchNorm, plus the shortcut, ReLU), with ``width·(1, 2, 4, 8)`` channels and strides 1, 2,
2, 2; a 1×1 convolution with BatchNorm on the shortcut where the shape changes; global
average pooling and a linear readout. ``width=64`` is the usual ResNet-18 (11.2 M
parameters for 10 classes); a small width (4, 8) makes it a test-sized network.

Its BatchNorm layers keep running statistics in an ``eqx.nn.State``: build it with
``eqx.nn.make_with_state(ResNet18)(...)``, call it as ``model(x, state)`` on ONE sample
(``(C, H, W)``) under ``jax.vmap(..., axis_name="batch")`` while training, and give the
kernel functions the pair ``(model, state)``: they differentiate the parameters only and
hold the statistics fixed, in inference mode (``eqx.nn.inference_mode``).

Example
-------
The eNTK of a test-sized ResNet-18 (not run by the doctests: compiling the kernel takes
about 10 s; ``tests/test_resnet.py`` checks it against a float64 reference):

>>> import jax, jax.numpy as jnp, equinox as eqx, ntkbench as nb
>>> model, state = eqx.nn.make_with_state(nb.ResNet18)(3, 10, width=4, key=jax.random.key(0))
>>> nb.entk((model, state), jnp.ones((2, 3, 8, 8))).shape  # doctest: +SKIP
(2, 2)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["ResNet18", "BasicBlock"]

_AXIS = "batch"  # the vmap axis name the BatchNorm layers average over while training


def _bn(channels: int, momentum: float) -> eqx.nn.BatchNorm:
    """Batch statistics while training, running averages in inference mode (Equinox's
    ``mode="batch"``), the averages starting as ONE batch of mean 0 and variance 1.

    Equinox zero-debiases its averages (divides by 1 − momentumⁿ after n batches), which
    is exact for averages that start at zero; it starts the variance at one, which
    overestimates the inference-mode variance for hundreds of steps (33× after 3 batches
    at momentum 0.99, measured). Here the averages start at ((1 − m)·0, (1 − m)·1) with the
    counter at 1: at construction inference mode normalises by mean 0 and variance 1 (as
    PyTorch and Flax do), and after n training batches it uses their exponentially
    weighted average with that prior as one more batch."""
    bn = eqx.nn.BatchNorm(channels, _AXIS, momentum=momentum, mode="batch")
    prior = (jnp.zeros(channels, jnp.float32), jnp.full(channels, 1.0 - momentum, jnp.float32))
    return eqx.tree_at(
        lambda b: (b.batch_counter, b.batch_state_index),
        bn,
        (eqx.nn.StateIndex(jnp.array(1, dtype=jnp.int32)), eqx.nn.StateIndex(prior)),
    )


class BasicBlock(eqx.Module):
    """Two 3×3 convolutions with BatchNorm and the shortcut: ``relu(bn(conv(relu(bn(conv
    x)))) + shortcut(x))``; the shortcut is a strided 1×1 convolution with BatchNorm when
    the stride or the channels change, else the identity. One sample ``(C_in, H, W)`` →
    ``(C_out, H/stride, W/stride)``."""

    conv1: eqx.nn.Conv2d
    bn1: eqx.nn.BatchNorm
    conv2: eqx.nn.Conv2d
    bn2: eqx.nn.BatchNorm
    shortcut: tuple[eqx.nn.Conv2d, eqx.nn.BatchNorm] | None

    def __init__(self, in_channels: int, out_channels: int, stride: int, momentum: float = 0.9, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.conv1 = eqx.nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, use_bias=False, key=k1)
        self.bn1 = _bn(out_channels, momentum)
        self.conv2 = eqx.nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, use_bias=False, key=k2)
        self.bn2 = _bn(out_channels, momentum)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            conv = eqx.nn.Conv2d(in_channels, out_channels, 1, stride, use_bias=False, key=k3)
            self.shortcut = (conv, _bn(out_channels, momentum))

    def __call__(self, x: Array, state: eqx.nn.State) -> tuple[Array, eqx.nn.State]:
        y, state = self.bn1(self.conv1(x), state)
        y, state = self.bn2(self.conv2(jax.nn.relu(y)), state)
        if self.shortcut is None:
            skip = x
        else:
            conv, bn = self.shortcut
            skip, state = bn(conv(x), state)
        return jax.nn.relu(y + skip), state


class ResNet18(eqx.Module):
    """CIFAR-style ResNet-18 (see the module docstring).

    Parameters
    ----------
    in_channels : channels of the input image (3 for CIFAR-10).
    out_size : number of outputs (classes).
    width : channels of the first stage; the stages have ``width·(1, 2, 4, 8)``
        (64: the usual ResNet-18).
    key : PRNG key.

    Shapes: one sample ``(in_channels, H, W)`` and the state → ``((out_size,), state)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp, equinox as eqx
    >>> model, state = eqx.nn.make_with_state(ResNet18)(3, 10, width=4, key=jax.random.key(0))
    >>> len(model.blocks), model.readout.in_features
    (8, 32)
    >>> train_mode = jax.vmap(model, in_axes=(0, None), out_axes=(0, None), axis_name="batch")
    >>> y, state = eqx.filter_eval_shape(train_mode, jnp.ones((2, 3, 8, 8)), state)  # shapes only
    >>> y.shape
    (2, 10)
    """

    stem: eqx.nn.Conv2d
    stem_bn: eqx.nn.BatchNorm
    blocks: tuple[BasicBlock, ...]
    readout: eqx.nn.Linear
    width: int = eqx.field(static=True)

    def __init__(self, in_channels: int, out_size: int, width: int = 64, momentum: float = 0.9, *, key: PRNGKeyArray):
        for name, value in (("in_channels", in_channels), ("out_size", out_size), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        keys = jax.random.split(key, 10)
        self.width = width
        self.stem = eqx.nn.Conv2d(in_channels, width, 3, 1, padding=1, use_bias=False, key=keys[0])
        self.stem_bn = _bn(width, momentum)
        blocks, channels = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            out = width * mult
            for i in range(2):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(BasicBlock(channels, out, stride, momentum, key=keys[1 + 2 * stage + i]))
                channels = out
        self.blocks = tuple(blocks)
        self.readout = eqx.nn.Linear(channels, out_size, key=keys[9])

    def __call__(self, x: Float[Array, "c h w"], state: eqx.nn.State) -> tuple[Float[Array, " k"], eqx.nn.State]:
        y, state = self.stem_bn(self.stem(x), state)
        y = jax.nn.relu(y)
        for block in self.blocks:
            y, state = block(y, state)
        return self.readout(jnp.mean(y, axis=(1, 2))), state
