"""Models whose width, depth and parametrization are first-class: MLP, CNN, TinyTransformer.

Every model is an Equinox module, deterministic from a PRNG key, and is called on ONE
sample (the Equinox convention); batch with ``jax.vmap``. Its inexact array leaves are
its parameters; scale factors of a parametrization are static Python floats, never
parameters.

Every dense layer is an ``eqx.nn.Linear`` called once per sample at the top level of
``__call__`` (token-wise layers of the transformer are applied with ``jax.vmap``), and a
parametrization's scale multiplies the layer's *input*, never the layer itself, so the
layer-wise ("structured") eNTK rule of :func:`ntkbench.entk` sees plain linear layers.

Parametrizations (the same for :class:`MLP`, :class:`CNN` and :class:`TinyTransformer`;
``n`` = fan-in of a layer, ``in_ch·9`` for a 3×3 convolution, ``W`` its stored weight,
biases are initialised to zero in all three):

============  ==========================  =======================================
name          stored weight                forward of a layer
============  ==========================  =======================================
standard      W ~ N(0, 1/n)  (LeCun)       y = W x + b
ntk           W ~ N(0, 1)                  y = W (x / sqrt(n)) + b   (Jacot et al.)
mup           hidden / input as standard;  readout: y = W (x * base_width / n) + b,
              readout W ~ N(0, 1/base)     i.e. effective readout variance base/n²
============  ==========================  =======================================

``"mup"`` is the maximal update parametrization of Tensor Programs V (Yang et al. 2022,
Table 3: input and hidden weights with variance 1/fan_in, output weights with variance
1/fan_in²), written in the equivalent *multiplier* form used by the ``mup`` package's
``MuReadout``: the readout input is multiplied by ``base_width / width`` (so with the
default ``base_width=1`` the readout is scaled by 1/width) and its stored weights have the
width-independent variance ``1 / base_width``. With ``base_width == width`` it is exactly
``"standard"``. The per-layer learning-rate rules of µP (Adam: hidden and readout weights
get lr × base_width / width) belong to the optimizer, not to the model; see
:func:`mup_lr_scales`.

Per model:

- :class:`MLP`: the first ``Linear`` is the input layer, the last the readout.
- :class:`CNN`: the first convolution is the input layer, the other convolutions are
  hidden, the ``Linear`` after pooling is the readout. With ``pool="flatten"`` the readout
  fan-in is ``width · s`` (``s = H·W`` spatial positions, fixed as width grows); µP then
  scales the readout input by ``base_width / width`` and stores variance
  ``1 / (base_width · s)``, which is the table above for ``s = 1`` and keeps
  ``"mup"`` (``base_width == width``) equal to ``"standard"``.
- :class:`TinyTransformer`: every ``Linear`` (``qkv``, ``proj``, ``fc1``, ``fc2``) of a
  block is hidden, ``unembed`` is the readout; the token and position embeddings (N(0, 1))
  and the LayerNorms (unit gain, zero bias) are the same in all parametrizations and keep
  the base learning rate. ``"mup"`` also scales the attention scores by ``1/d_head``
  instead of ``1/sqrt(d_head)`` (Tensor Programs V's attention rule: during µP
  training q and k become correlated, so q·k grows like d_head, not sqrt(d_head)).
  This is the only place where ``"mup"`` differs from ``"standard"`` in the forward pass
  beyond the readout.

With the same key, ``"standard"``, ``"ntk"`` and ``"mup"`` (``base_width == width``)
compute the same function at initialization; only their gradients (hence their eNTKs and
training dynamics) differ. The one exception is the transformer's µP attention scaling
``1/d_head``, which equals ``1/sqrt(d_head)`` only when ``d_head == 1`` (``heads ==
width``). The eNTK of ``"ntk"`` at initialization does not grow with width; that of
``"standard"`` grows linearly.

Example
-------
>>> import jax, ntkbench as nb
>>> model = nb.MLP(64, 10, width=128, depth=2, parametrization="ntk", key=jax.random.key(0))
>>> model(jax.numpy.ones((8, 8))).shape
(10,)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

__all__ = [
    "ACTIVATIONS",
    "PARAMETRIZATIONS",
    "MLP",
    "CNN",
    "TinyTransformer",
    "RandomFeatures",
    "make_model",
    "MODEL_DEFAULTS",
    "count_params",
    "count_config_params",
    "mup_lr_scales",
    "mup_leaf_scales",
]

PARAMETRIZATIONS = ("standard", "ntk", "mup")


def _identity(x: Array) -> Array:
    return x


def _gelu(x: Array) -> Array:
    return jax.nn.gelu(x, approximate=False)


def _erf(x: Array) -> Array:
    return jax.scipy.special.erf(x)


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": _gelu,
    "identity": _identity,
    "erf": _erf,
    "sigmoid": jax.nn.sigmoid,
    "silu": jax.nn.silu,
    "softplus": jax.nn.softplus,
}


# --------------------------------------------------------------------------- helpers


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | jnp.integer):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_activation(activation: str) -> str:
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    return activation


def _check_key(key: Any) -> None:
    if key is None:
        raise TypeError("key must be a JAX PRNG key (jax.random.key(seed)), got None")
    typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.shape[-1:] == (2,)  # PRNGKey(seed)
    if not (typed or raw):
        raise TypeError(f"key must be a JAX PRNG key (jax.random.key(seed)), got {type(key).__name__} {key!r}")


@functools.partial(jax.jit, static_argnums=1)
def _normal(key: PRNGKeyArray, shape: tuple[int, ...], std: float) -> Array:
    """``std * N(0, 1)`` of ``shape`` (one compiled call: cheap to build many models)."""
    return std * jax.random.normal(key, shape, jnp.float32)


def _zeros(shape: tuple[int, ...]) -> Array:
    return jnp.asarray(np.zeros(shape, np.float32))


def _dense(in_size: int, out_size: int | Literal["scalar"], std: float, key: PRNGKeyArray) -> eqx.nn.Linear:
    """An ``eqx.nn.Linear`` with weights ~ N(0, std²) and zero bias."""
    # the structure only (no random init of its own), then the weights we want
    layer = eqx.filter_eval_shape(eqx.nn.Linear, in_size, out_size, key=key)
    weight = _normal(key, layer.weight.shape, float(std))
    return eqx.tree_at(lambda lin: (lin.weight, lin.bias), layer, (weight, _zeros(layer.bias.shape)))


def _conv(in_ch: int, out_ch: int, std: float, key: PRNGKeyArray) -> eqx.nn.Conv2d:
    """3×3 'SAME' convolution with weights ~ N(0, std²), zero bias."""
    layer = eqx.filter_eval_shape(eqx.nn.Conv2d, in_ch, out_ch, 3, padding="SAME", key=key)
    weight = _normal(key, layer.weight.shape, float(std))
    return eqx.tree_at(lambda c: (c.weight, c.bias), layer, (weight, _zeros(layer.bias.shape)))


def _check_parametrization(parametrization: Any, base_width: Any) -> tuple[str, int]:
    if parametrization not in PARAMETRIZATIONS:
        raise ValueError(f"parametrization must be one of {PARAMETRIZATIONS}, got {parametrization!r}")
    return parametrization, _check_int(base_width, "base_width", 1)


def _init_scale(
    parametrization: str,
    fan_in: int,
    *,
    readout: bool = False,
    base_width: int = 1,
    width: int | None = None,
) -> tuple[float, float]:
    """``(std of the stored weight, static multiplier of the layer's input)``.

    ``fan_in`` is the layer's fan-in (``in_ch·9`` for a 3×3 conv). For the µP readout,
    ``width`` is the swept width (default ``fan_in``); the fan-in may be ``width · s``
    with a fixed ``s`` (a flattened CNN readout), and then the input is scaled by
    ``base_width / width`` and the stored variance is ``1 / (base_width · s)``.
    """
    if parametrization == "standard":
        return 1.0 / math.sqrt(fan_in), 1.0
    if parametrization == "ntk":
        return 1.0, 1.0 / math.sqrt(fan_in)
    if not readout:  # mup input / hidden layers: as standard
        return 1.0 / math.sqrt(fan_in), 1.0
    width = fan_in if width is None else width
    s = fan_in / width
    return 1.0 / math.sqrt(base_width * s), base_width / width


def _scaled(x: Array, scale: float) -> Array:
    return x * scale if scale != 1.0 else x


def _layer_norm(width: int) -> eqx.nn.LayerNorm:
    """LayerNorm with unit weight and zero bias (built without device computations)."""
    ln = eqx.filter_eval_shape(eqx.nn.LayerNorm, width)
    ones = jnp.asarray(np.ones(width, np.float32))
    return eqx.tree_at(lambda m: (m.weight, m.bias), ln, (ones, _zeros((width,))))


def _check_tokens(tokens: Array, context: int) -> int:
    """The length T of one token sequence ``tokens`` (T,) of a language model of
    ``context`` positions; ``ValueError`` / ``TypeError`` naming what is wrong."""
    if tokens.ndim != 1:
        raise ValueError(f"tokens must have shape (T,), got {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(f"tokens must be integers, got dtype {tokens.dtype}")
    if not 1 <= tokens.shape[0] <= context:
        raise ValueError(f"sequence length {tokens.shape[0]} must be in 1..context={context}")
    return int(tokens.shape[0])


def _embedding(num: int, size: int, key: PRNGKeyArray) -> eqx.nn.Embedding:
    return eqx.nn.Embedding(weight=_normal(key, (num, size), 1.0))


# --------------------------------------------------------------------------- MLP


class MLP(eqx.Module):
    """Fully connected network ``in_size → width → … → width → out_size``.

    Parameters
    ----------
    in_size:
        Number of input features. Inputs of any shape with ``in_size`` elements (e.g. an
        (8, 8) image for ``in_size=64``) are flattened.
    out_size:
        Number of outputs, or ``"scalar"`` for a scalar output (shape ``()``).
    width:
        Number of units in every hidden layer.
    depth:
        Number of hidden layers (``depth=1``: one hidden layer, two ``Linear`` layers).
    activation:
        One of :data:`ACTIVATIONS` (``relu``, ``tanh``, ``gelu``, ``identity``, ``erf``,
        ``sigmoid``, ``silu``, ``softplus``).
    parametrization:
        ``"standard"``, ``"ntk"`` or ``"mup"`` (see the module docstring).
    base_width:
        µP only: the width at which ``"mup"`` coincides with ``"standard"`` (default 1,
        i.e. the readout is scaled by ``1/width``).
    key:
        PRNG key; the same key gives the same model.

    Shapes: ``(in_size,)`` (or anything with ``in_size`` elements) → ``(out_size,)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> mlp = MLP(3, 2, width=16, depth=2, key=jax.random.key(0))
    >>> jax.vmap(mlp)(jnp.ones((5, 3))).shape
    (5, 2)
    """

    layers: tuple[eqx.nn.Linear, ...]
    in_scales: tuple[float, ...] = eqx.field(static=True)
    in_size: int = eqx.field(static=True)
    out_size: int | str = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    parametrization: str = eqx.field(static=True)
    base_width: int = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int | Literal["scalar"],
        width: int,
        depth: int,
        activation: str = "relu",
        parametrization: str = "standard",
        *,
        base_width: int = 1,
        key: PRNGKeyArray,
    ):
        _check_key(key)
        self.in_size = _check_int(in_size, "in_size", 1)
        if out_size != "scalar":
            out_size = _check_int(out_size, "out_size", 1)
        self.out_size = out_size
        self.width = _check_int(width, "width", 1)
        self.depth = _check_int(depth, "depth", 1)
        self.activation = _check_activation(activation)
        self.parametrization, self.base_width = _check_parametrization(parametrization, base_width)

        fan_ins = [self.in_size] + [self.width] * self.depth
        fan_outs: list[Any] = [self.width] * self.depth + [out_size]
        keys = jax.random.split(key, len(fan_ins))
        layers, scales = [], []
        for i, (n_in, n_out, k) in enumerate(zip(fan_ins, fan_outs, keys, strict=True)):
            std, scale = _init_scale(
                parametrization,
                n_in,
                readout=i == len(fan_ins) - 1,
                base_width=self.base_width,
            )
            layers.append(_dense(n_in, n_out, std, k))
            scales.append(float(scale))
        self.layers = tuple(layers)
        self.in_scales = tuple(scales)

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " out_size"]:
        if x.size != self.in_size:
            raise ValueError(f"x must have {self.in_size} elements (in_size), got shape {x.shape}")
        h = jnp.reshape(x, (self.in_size,))
        act = ACTIVATIONS[self.activation]
        last = len(self.layers) - 1
        for i, (layer, scale) in enumerate(zip(self.layers, self.in_scales, strict=True)):
            h = layer(_scaled(h, scale))
            if i < last:
                h = act(h)
        return h


# --------------------------------------------------------------------------- CNN


class CNN(eqx.Module):
    """Convolutional network: ``depth`` × (3×3 'SAME' conv with ``width`` channels,
    activation), then global average pooling (``pool="mean"``) or flattening
    (``pool="flatten"``), then an ``eqx.nn.Linear`` readout.

    ``parametrization`` ``"standard"`` (LeCun normal weights, variance 1/fan-in, fan-in
    ``in_ch·9`` for a conv), ``"ntk"`` or ``"mup"`` as in the module docstring (the first
    conv is the input layer, the readout ``Linear`` the µP readout); biases zero. The
    scale multiplies each layer's input, so every layer stays a plain
    ``eqx.nn.Conv2d`` / ``eqx.nn.Linear``.

    Parameters
    ----------
    in_shape:
        ``(C, H, W)`` or ``(H, W)`` (one channel). Inputs may also be given flat.
    out_size:
        Number of outputs.
    width:
        Channels of every conv layer.
    depth:
        Number of conv layers (>= 1).
    activation:
        One of :data:`ACTIVATIONS`.
    parametrization:
        ``"standard"``, ``"ntk"`` or ``"mup"`` (see the module docstring).
    pool:
        ``"mean"`` (global average pool) or ``"flatten"``.
    channels:
        The channels of each conv layer, e.g. ``(32, 64)`` (then ``width`` and ``depth`` are
        ``channels[-1]`` and ``len(channels)``); None: ``depth`` layers of ``width``.
    hidden:
        Units of a hidden dense layer (with the activation) between the trunk and the
        readout, e.g. 256; None: none. ``channels`` and ``hidden`` need the standard
        parametrization.
    downsample:
        A 2×2 average pooling (stride 2) after each conv layer (an axis of size 1 is kept).
    base_width:
        µP only: the width (channels) at which ``"mup"`` coincides with ``"standard"``.
    key:
        PRNG key.

    Shapes: ``in_shape`` → ``(out_size,)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> cnn = CNN((8, 8), 10, width=8, depth=2, key=jax.random.key(0))
    >>> cnn(jnp.ones((8, 8))).shape
    (10,)
    >>> authors = CNN((8, 8), 10, 0, 0, channels=(32, 64), hidden=256, pool="flatten",
    ...               downsample=True, key=jax.random.key(0))   # Conv32-Conv64-Dense256-Dense10
    >>> authors.readout.in_features, authors(jnp.ones(64)).shape
    (256, (10,))
    """

    convs: tuple[eqx.nn.Conv2d, ...]
    hidden: eqx.nn.Linear | None
    readout: eqx.nn.Linear
    in_scales: tuple[float, ...] = eqx.field(static=True)
    channels: tuple[int, ...] = eqx.field(static=True)
    downsample: bool = eqx.field(static=True)
    in_shape: tuple[int, int, int] = eqx.field(static=True)
    out_size: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    pool: str = eqx.field(static=True)
    parametrization: str = eqx.field(static=True)
    base_width: int = eqx.field(static=True)

    def __init__(
        self,
        in_shape: Sequence[int],
        out_size: int,
        width: int,
        depth: int,
        activation: str = "relu",
        parametrization: str = "standard",
        *,
        pool: str = "mean",
        channels: Sequence[int] | None = None,
        hidden: int | None = None,
        downsample: bool = False,
        base_width: int = 1,
        key: PRNGKeyArray,
    ):
        _check_key(key)
        shape = tuple(in_shape) if isinstance(in_shape, Sequence) else None
        if shape is None or len(shape) not in (2, 3):
            raise ValueError(f"in_shape must be (C, H, W) or (H, W), got {in_shape!r}")
        shape = tuple(_check_int(s, "in_shape", 1) for s in shape)
        c, h, w = shape if len(shape) == 3 else (1, *shape)
        self.in_shape = (c, h, w)
        self.out_size = _check_int(out_size, "out_size", 1)
        if channels is not None:
            if isinstance(channels, str | bytes) or not isinstance(channels, Sequence) or not channels:
                raise ValueError(f"channels must be a non-empty sequence of positive ints, got {channels!r}")
            self.channels = tuple(_check_int(ch, "channels entry", 1) for ch in channels)
        else:
            self.channels = (_check_int(width, "width", 1),) * _check_int(depth, "depth", 1)
        self.width, self.depth = self.channels[-1], len(self.channels)
        self.activation = _check_activation(activation)
        if pool not in ("mean", "flatten"):
            raise ValueError(f"pool must be 'mean' or 'flatten', got {pool!r}")
        if not isinstance(downsample, bool):
            raise ValueError(f"downsample must be a bool, got {downsample!r}")
        self.pool, self.downsample = pool, downsample
        self.parametrization, self.base_width = _check_parametrization(parametrization, base_width)
        if (channels is not None or hidden is not None) and self.parametrization != "standard":
            raise ValueError(f"channels and hidden need parametrization='standard', got {parametrization!r}")
        keys = jax.random.split(key, self.depth + 2)
        chans = [self.in_shape[0], *self.channels]
        convs, scales = [], []
        _, h, w = self.in_shape
        for i in range(self.depth):
            std, scale = _init_scale(self.parametrization, chans[i] * 9)
            convs.append(_conv(chans[i], chans[i + 1], std, keys[i]))
            scales.append(float(scale))
            if downsample:
                h, w = (h // 2 if h > 1 else h), (w // 2 if w > 1 else w)
        n_feat = self.width if pool == "mean" else self.width * h * w
        self.hidden = None
        if hidden is not None:
            n_hidden = _check_int(hidden, "hidden", 1)
            self.hidden = _dense(n_feat, n_hidden, _init_scale("standard", n_feat)[0], keys[-2])
            n_feat = n_hidden
        std, scale = _init_scale(
            self.parametrization,
            n_feat,
            readout=True,
            base_width=self.base_width,
            width=self.width,
        )
        self.convs = tuple(convs)
        self.readout = _dense(n_feat, self.out_size, std, keys[-1])
        self.in_scales = (*scales, float(scale))

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " out_size"]:
        n = math.prod(self.in_shape)
        if x.size != n:
            raise ValueError(f"x must have shape {self.in_shape} (in_shape) or {n} elements, got shape {x.shape}")
        h = jnp.reshape(x, self.in_shape)
        act = ACTIVATIONS[self.activation]
        for conv, scale in zip(self.convs, self.in_scales[:-1], strict=True):  # [-1]: the readout
            h = act(conv(_scaled(h, scale)))
            if self.downsample:
                h = _avg_pool2(h)
        h = jnp.mean(h, axis=(1, 2)) if self.pool == "mean" else jnp.reshape(h, (-1,))
        if self.hidden is not None:
            h = act(self.hidden(h))
        return self.readout(_scaled(h, self.in_scales[-1]))


def _avg_pool2(h: Array) -> Array:
    """2×2 average pooling with stride 2 of ``h`` (C, H, W) (an axis of size 1 is kept; an
    odd row or column is dropped)."""
    c, hh, ww = h.shape
    ph, pw = (2 if hh > 1 else 1), (2 if ww > 1 else 1)
    h = h[:, : hh // ph * ph, : ww // pw * pw]
    return h.reshape(c, hh // ph, ph, ww // pw, pw).mean(axis=(2, 4))


# --------------------------------------------------------------------------- transformer


class _Block(eqx.Module):
    ln1: eqx.nn.LayerNorm
    qkv: eqx.nn.Linear
    proj: eqx.nn.Linear
    ln2: eqx.nn.LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    heads: int = eqx.field(static=True)
    in_scales: tuple[float, ...] = eqx.field(static=True)  # qkv, proj, fc1, fc2
    score_scale: float = eqx.field(static=True)

    def __init__(
        self,
        width: int,
        heads: int,
        mlp_ratio: int,
        key: PRNGKeyArray,
        parametrization: str = "standard",
    ):
        k = jax.random.split(key, 4)
        hidden = mlp_ratio * width
        # (std, input scale) of qkv, proj, fc1, fc2: all hidden layers
        init = [_init_scale(parametrization, n) for n in (width, width, width, hidden)]
        self.ln1 = _layer_norm(width)
        self.qkv = _dense(width, 3 * width, init[0][0], k[0])
        self.proj = _dense(width, width, init[1][0], k[1])
        self.ln2 = _layer_norm(width)
        self.fc1 = _dense(width, hidden, init[2][0], k[2])
        self.fc2 = _dense(hidden, width, init[3][0], k[3])
        self.heads = heads
        self.in_scales = tuple(float(scale) for _, scale in init)
        dh = width // heads
        # µP: 1/d_head (Tensor Programs V); otherwise the usual 1/sqrt(d_head)
        self.score_scale = 1.0 / dh if parametrization == "mup" else 1.0 / math.sqrt(dh)

    def __call__(self, h: Float[Array, "T d"]) -> Float[Array, "T d"]:
        t, d = h.shape
        dh = d // self.heads
        s_qkv, s_proj, s_fc1, s_fc2 = self.in_scales
        a = jax.vmap(self.ln1)(h)
        q, k, v = jnp.split(jax.vmap(self.qkv)(_scaled(a, s_qkv)), 3, axis=-1)
        q, k, v = (z.reshape(t, self.heads, dh).transpose(1, 0, 2) for z in (q, k, v))
        scores = (q @ k.transpose(0, 2, 1)) * self.score_scale  # (heads, T, T)
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        att = jax.nn.softmax(scores, axis=-1) @ v  # (heads, T, dh)
        att = att.transpose(1, 0, 2).reshape(t, d)
        h = h + jax.vmap(self.proj)(_scaled(att, s_proj))
        m = jax.vmap(self.fc1)(_scaled(jax.vmap(self.ln2)(h), s_fc1))
        return h + jax.vmap(self.fc2)(_scaled(_gelu(m), s_fc2))


class TinyTransformer(eqx.Module):
    """Causal decoder-only transformer (GPT style, pre-LayerNorm).

    Token and learned position embeddings (``eqx.nn.Embedding``), ``layers`` blocks of
    causal multi-head self-attention and a GELU MLP (``mlp_ratio × width`` hidden units),
    each with a pre-LayerNorm and a residual connection, a final LayerNorm and an
    unembedding ``eqx.nn.Linear``. Linear weights follow ``parametrization``
    (``"standard"``: LeCun normal; ``"ntk"``, ``"mup"``: see the module docstring, with
    ``unembed`` as the µP readout and ``"mup"`` scaling attention scores by
    ``1/d_head``), biases zero; embeddings N(0, 1) and LayerNorms (unit gain, zero bias)
    in every parametrization.

    Parameters
    ----------
    vocab_size:
        Number of token ids.
    context:
        Longest sequence the model accepts (number of position embeddings).
    width:
        Model dimension d_model; must be divisible by ``heads``.
    layers:
        Number of transformer blocks.
    heads:
        Number of attention heads.
    mlp_ratio:
        Hidden units of the MLP per model dimension.
    parametrization:
        ``"standard"``, ``"ntk"`` or ``"mup"`` (see the module docstring).
    base_width:
        µP only: the width at which the µP readout coincides with ``"standard"`` (the
        attention scaling ``1/d_head`` still differs unless ``d_head == 1``).
    key:
        PRNG key.

    Shapes: int tokens ``(T,)`` with ``T <= context`` → logits ``(T, vocab_size)``;
    logits at position t depend only on tokens ``0..t``.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> tf = TinyTransformer(50, 16, width=32, layers=2, heads=4, key=jax.random.key(0))
    >>> tf(jnp.arange(10, dtype=jnp.int32)).shape
    (10, 50)
    """

    tok_embed: eqx.nn.Embedding
    pos_embed: eqx.nn.Embedding
    blocks: tuple[_Block, ...]
    ln_f: eqx.nn.LayerNorm
    unembed: eqx.nn.Linear
    vocab_size: int = eqx.field(static=True)
    context: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)
    mlp_ratio: int = eqx.field(static=True)
    parametrization: str = eqx.field(static=True)
    base_width: int = eqx.field(static=True)
    unembed_scale: float = eqx.field(static=True)

    def __init__(
        self,
        vocab_size: int,
        context: int,
        width: int,
        layers: int,
        heads: int,
        *,
        key: PRNGKeyArray,
        mlp_ratio: int = 4,
        parametrization: str = "standard",
        base_width: int = 1,
    ):
        _check_key(key)
        self.vocab_size = _check_int(vocab_size, "vocab_size", 2)
        self.context = _check_int(context, "context", 1)
        self.width = _check_int(width, "width", 1)
        self.depth = _check_int(layers, "layers", 1)
        self.heads = _check_int(heads, "heads", 1)
        self.mlp_ratio = _check_int(mlp_ratio, "mlp_ratio", 1)
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        self.parametrization, self.base_width = _check_parametrization(parametrization, base_width)
        k = jax.random.split(key, self.depth + 3)
        self.tok_embed = _embedding(self.vocab_size, self.width, k[0])
        self.pos_embed = _embedding(self.context, self.width, k[1])
        self.blocks = tuple(
            _Block(self.width, self.heads, self.mlp_ratio, k[3 + i], self.parametrization) for i in range(self.depth)
        )
        self.ln_f = _layer_norm(self.width)
        std, scale = _init_scale(self.parametrization, self.width, readout=True, base_width=self.base_width)
        self.unembed = _dense(self.width, self.vocab_size, std, k[2])
        self.unembed_scale = float(scale)

    @property
    def layers(self) -> int:
        """Number of transformer blocks (same as ``depth``)."""
        return self.depth

    def __call__(self, tokens: Int[Array, " T"]) -> Float[Array, "T vocab"]:
        t = _check_tokens(tokens, self.context)
        h = jax.vmap(self.tok_embed)(tokens) + jax.vmap(self.pos_embed)(jnp.arange(t))
        for block in self.blocks:
            h = block(h)
        return jax.vmap(self.unembed)(_scaled(jax.vmap(self.ln_f)(h), self.unembed_scale))


# --------------------------------------------------------------------------- random features


class RandomFeatures(eqx.Module):
    """Two-layer random-feature model ``f(x) = a · act(W x) + b`` whose features are frozen
    or trained.

    ``W`` (``width × in_size``, N(0, 1/in_size), no bias) draws the random features;
    the readout ``a``, ``b`` is an ``eqx.nn.Linear`` (N(0, 1/width) weights, zero bias).
    ``features="frozen"``: ``W`` is NOT a parameter (it is redrawn from a stored key, an
    integer array, at every call), so only the readout trains and the eNTK is the fixed
    feature kernel φ(x)·φ(x') + 1 (the kernel regime). ``features="trained"``: ``W`` is an
    ``eqx.nn.Linear`` (same initial weights, zero bias) trained with the readout, i.e. a
    one-hidden-layer MLP. With the same key both compute the same function at
    initialization.

    Shapes: ``(in_size,)`` (or anything with ``in_size`` elements) → ``(out_size,)``.

    Example
    -------
    >>> import jax, jax.numpy as jnp
    >>> frozen = RandomFeatures(8, 1, width=32, features="frozen", key=jax.random.key(0))
    >>> trained = RandomFeatures(8, 1, width=32, features="trained", key=jax.random.key(0))
    >>> bool(jnp.allclose(frozen(jnp.ones(8)), trained(jnp.ones(8))))
    True
    >>> count_params(frozen), count_params(trained)  # the readout only vs W too
    (33, 321)
    """

    hidden: eqx.nn.Linear | None
    feature_key: Array | None
    readout: eqx.nn.Linear
    in_size: int = eqx.field(static=True)
    out_size: int | str = eqx.field(static=True)
    width: int = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    features: str = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int | Literal["scalar"],
        width: int,
        activation: str = "relu",
        features: str = "frozen",
        *,
        key: PRNGKeyArray,
    ):
        _check_key(key)
        self.in_size = _check_int(in_size, "in_size", 1)
        if out_size != "scalar":
            out_size = _check_int(out_size, "out_size", 1)
        self.out_size = out_size
        self.width = _check_int(width, "width", 1)
        self.activation = _check_activation(activation)
        if features not in ("frozen", "trained"):
            raise ValueError(f"features must be 'frozen' or 'trained', got {features!r}")
        self.features = features
        k_w, k_a = jax.random.split(key)
        if features == "trained":
            self.hidden, self.feature_key = _dense(self.in_size, self.width, 1 / math.sqrt(self.in_size), k_w), None
        else:  # not an inexact array: no parameter, no gradient, no eNTK block
            self.hidden, self.feature_key = None, jax.random.key_data(k_w)
        self.readout = _dense(self.width, out_size, 1 / math.sqrt(self.width), k_a)

    def __call__(self, x: Float[Array, "..."]) -> Float[Array, " out_size"]:
        if x.size != self.in_size:
            raise ValueError(f"x must have {self.in_size} elements (in_size), got shape {x.shape}")
        h = jnp.reshape(x, (self.in_size,))
        if self.hidden is not None:
            h = self.hidden(h)
        else:
            assert self.feature_key is not None
            w = _normal(
                jax.random.wrap_key_data(self.feature_key), (self.width, self.in_size), 1 / math.sqrt(self.in_size)
            )
            h = w @ h
        return self.readout(ACTIVATIONS[self.activation](h))


# --------------------------------------------------------------------------- µP optimizer


def _mup_layers(tree: Any) -> tuple[Any, ...]:
    """The layers :func:`mup_lr_scales` lists, in its order, from a model or any pytree
    of the same structure (filtered parameters, gradients, updates)."""
    if isinstance(tree, MLP):
        return tuple(tree.layers)
    if isinstance(tree, CNN):
        return (*tree.convs, tree.readout)
    if isinstance(tree, TinyTransformer):
        hidden = [lay for b in tree.blocks for lay in (b.qkv, b.proj, b.fc1, b.fc2)]
        return (tree.tok_embed, tree.pos_embed, *hidden, tree.unembed)
    raise TypeError(f"model must be an MLP, CNN or TinyTransformer, got {type(tree).__name__}")


def mup_lr_scales(model: MLP | CNN | TinyTransformer) -> tuple[float, ...]:
    """Per-layer Adam learning-rate multipliers of µP.

    Tensor Programs V, Table 3 (Adam column, multiplier form as in the ``mup`` package's
    ``MuAdam``): the input layer (and the transformer's embeddings) keep the base learning
    rate, hidden and readout weight matrices get ``base_width / width``. For
    ``"standard"`` and ``"ntk"`` all ones. One float per layer, in this order:

    - :class:`MLP`: ``model.layers``;
    - :class:`CNN`: ``(*model.convs, model.readout)``;
    - :class:`TinyTransformer`: ``(tok_embed, pos_embed, then qkv, proj, fc1, fc2 of
      each block, unembed)``; LayerNorms (not listed) keep the base learning rate.

    A listed layer's bias uses the same factor as its weight (as the sweep's µP Adam
    does); :func:`ntkbench.sweep` applies these factors to Adam's updates.

    Example
    -------
    >>> import jax
    >>> mup_lr_scales(MLP(4, 2, 64, 2, parametrization="mup", key=jax.random.key(0)))
    (1.0, 0.015625, 0.015625)
    >>> mup_lr_scales(CNN((8, 8), 2, 16, 2, parametrization="mup", base_width=4,
    ...                   key=jax.random.key(0)))
    (1.0, 0.25, 0.25)
    """
    layers = _mup_layers(model)
    if model.parametrization != "mup":
        return (1.0,) * len(layers)
    f = model.base_width / model.width
    n_input = 2 if isinstance(model, TinyTransformer) else 1
    return (1.0,) * n_input + (f,) * (len(layers) - n_input)


def mup_leaf_scales(model: MLP | CNN | TinyTransformer) -> tuple[float, ...]:
    """:func:`mup_lr_scales` spread over the parameters: one float per inexact array leaf
    of ``model``, in ``jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))``
    order (so it also lines up with the leaves of gradients and optimizer updates).
    Leaves outside the listed layers (LayerNorms) get 1.0.

    Example
    -------
    >>> import jax
    >>> mup_leaf_scales(MLP(4, 2, 8, 1, parametrization="mup", key=jax.random.key(0)))
    (1.0, 1.0, 0.125, 0.125)
    """
    params = eqx.filter(model, eqx.is_inexact_array)
    ones = jax.tree_util.tree_map(lambda _: 1.0, params)
    layers = _mup_layers(ones)
    factors = eqx.tree_at(
        _mup_layers,
        ones,
        replace=tuple(
            jax.tree_util.tree_map(lambda _, f=f: f, layer)
            for layer, f in zip(layers, mup_lr_scales(model), strict=True)
        ),
    )
    return tuple(float(f) for f in jax.tree_util.tree_leaves(factors))


# --------------------------------------------------------------------------- factory

_CALIBRATION_SAMPLES = 1024  # the training samples a ResNet's BatchNorm statistics start from

#: Model names of :func:`make_model` -> their hyperparameters and defaults (the keys a
#: ``[model]`` config section may set besides ``name``).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {
        "width": 64,
        "depth": 2,
        "activation": "relu",
        "parametrization": "standard",
        "base_width": 1,
    },
    "cnn": {
        "width": 16,
        "depth": 2,
        "activation": "relu",
        "pool": "mean",
        "channels": None,
        "hidden": None,
        "downsample": False,
        "parametrization": "standard",
        "base_width": 1,
    },
    "random_features": {"width": 256, "activation": "relu", "features": "frozen"},
    "transformer": {
        "width": 64,
        "layers": 2,
        "heads": 4,
        "mlp_ratio": 4,
        "vocab_size": None,
        "context": None,
        "parametrization": "standard",
        "base_width": 1,
    },
    "resnet18": {"width": 64, "momentum": 0.9, "calibrate": True},
    "decoder": {
        "width": 64,
        "layers": 2,
        "aspect": None,
        "heads": 4,
        "head_dim": None,
        "mlp_hidden": None,
        "tie_embeddings": False,
        "vocab_size": None,
        "context": None,
    },
}


def make_model(
    config: dict[str, Any],
    *,
    key: PRNGKeyArray,
    in_shape: Sequence[int],
    out_size: int,
    x: Any = None,
) -> Any:
    """Build a model from a config dict.

    ``config["name"]`` is one of :data:`MODEL_DEFAULTS` (``"mlp"``, ``"cnn"``,
    ``"random_features"``, ``"transformer"``, ``"decoder"``, ``"resnet18"``); the other keys are
    the model's hyperparameters (missing ones take defaults):

    - mlp: ``width=64, depth=2, activation="relu", parametrization="standard",
      base_width=1`` (``in_size = prod(in_shape)``)
    - cnn: ``width=16, depth=2, activation="relu", pool="mean", channels=None,
      hidden=None, downsample=False, parametrization="standard", base_width=1``
    - random_features: ``width=256, activation="relu", features="frozen"`` (or
      ``"trained"``; :class:`RandomFeatures`)
    - transformer: ``width=64, layers=2, heads=4, mlp_ratio=4,
      parametrization="standard", base_width=1``; ``vocab_size`` defaults to
      ``out_size`` and ``context`` to ``in_shape[0]``.
    - decoder (:class:`ntkbench.decoder.Decoder`, Llama-style): ``width=64, layers=2,
      aspect=None, heads=4, head_dim=None, mlp_hidden=None, tie_embeddings=False``,
      ``vocab_size`` and ``context`` as the transformer's; ``aspect`` (an int) sets
      ``layers = max(1, width // aspect)`` and ``head_dim`` sets ``heads = width // head_dim``,
      so one grid over ``width`` keeps the shape of the model across sizes.

    - resnet18 (:class:`ntkbench.resnet.ResNet18`, CIFAR-style, BatchNorm): ``width=64``
      (the first stage's channels), ``momentum=0.9`` (of the BatchNorm running averages),
      ``calibrate=True``; ``in_shape`` is ``(channels, height, width)``. It is returned as
      ``(model, state)``, its BatchNorm running statistics in an ``eqx.nn.State``, which
      :func:`ntkbench.train.train` updates and the kernel holds fixed (inference mode).
      With ``calibrate`` and training inputs ``x`` (N, C, H, W) the statistics start as
      those of the first 1024 samples of ``x`` (:func:`ntkbench.calibrate_batchnorm`;
      the sweep passes the run's training set).

    ``in_shape`` is the shape of one input (``Dataset.in_shape``), ``out_size`` the number
    of outputs (``Dataset.n_outputs``). An unknown name or key raises ``ValueError``.

    Example
    -------
    >>> import jax
    >>> m = make_model({"name": "mlp", "width": 32}, key=jax.random.key(0),
    ...                in_shape=(8, 8), out_size=10)
    >>> (m.width, m.depth, m.in_size)
    (32, 2, 64)
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    name = config.get("name")
    if not isinstance(name, str) or name not in MODEL_DEFAULTS:
        raise ValueError(f"config['name'] must be one of {sorted(MODEL_DEFAULTS)}, got {name!r}")
    allowed = MODEL_DEFAULTS[name]
    unknown = sorted(set(config) - set(allowed) - {"name"})
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {name!r} model config; allowed keys: {['name', *allowed]}")
    opts = {**allowed, **{k: v for k, v in config.items() if k != "name"}}
    if isinstance(in_shape, str | bytes) or not isinstance(in_shape, Sequence | np.ndarray):
        raise TypeError(f"in_shape must be a sequence of positive ints (the shape of one input), got {in_shape!r}")
    in_shape = tuple(_check_int(s, "in_shape entry", 1) for s in in_shape)
    if name == "mlp":
        return MLP(
            math.prod(in_shape),
            out_size,
            opts["width"],
            opts["depth"],
            opts["activation"],
            opts["parametrization"],
            base_width=opts["base_width"],
            key=key,
        )
    if name == "random_features":
        return RandomFeatures(
            math.prod(in_shape), out_size, opts["width"], opts["activation"], opts["features"], key=key
        )
    if name == "cnn":
        return CNN(
            in_shape,
            out_size,
            opts["width"],
            opts["depth"],
            opts["activation"],
            opts["parametrization"],
            pool=opts["pool"],
            channels=opts["channels"],
            hidden=opts["hidden"],
            downsample=opts["downsample"],
            base_width=opts["base_width"],
            key=key,
        )
    if name == "resnet18":
        from ntkbench.resnet import ResNet18

        if len(in_shape) != 3:
            raise ValueError(f"in_shape must be (channels, height, width) for a ResNet-18, got {in_shape}")
        width = _check_int(opts["width"], "width", 1)
        momentum = opts["momentum"]
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 < momentum < 1:
            raise ValueError(f"momentum must be a number in (0, 1), got {momentum!r}")
        model, state = eqx.nn.make_with_state(ResNet18)(in_shape[0], out_size, width, float(momentum), key=key)
        if opts["calibrate"] and x is not None:
            from ntkbench.train._batchnorm import calibrate_batchnorm

            return calibrate_batchnorm((model, state), x[:_CALIBRATION_SAMPLES])
        return model, state
    if name == "decoder":
        from ntkbench.decoder import Decoder

        vocab, context = _lm_sizes(opts, in_shape, out_size)
        layers = opts["layers"] if opts["aspect"] is None else max(1, opts["width"] // opts["aspect"])
        heads = opts["heads"] if opts["head_dim"] is None else max(1, opts["width"] // opts["head_dim"])
        return Decoder(
            vocab,
            context,
            opts["width"],
            layers,
            heads,
            mlp_hidden=opts["mlp_hidden"],
            tie_embeddings=opts["tie_embeddings"],
            key=key,
        )
    vocab, context = _lm_sizes(opts, in_shape, out_size)
    return TinyTransformer(
        vocab,
        context,
        opts["width"],
        opts["layers"],
        opts["heads"],
        mlp_ratio=opts["mlp_ratio"],
        parametrization=opts["parametrization"],
        base_width=opts["base_width"],
        key=key,
    )


def _lm_sizes(opts: dict[str, Any], in_shape: tuple[int, ...], out_size: int) -> tuple[int, int]:
    """A language model's vocabulary (default ``out_size``) and context (default the
    sequence length ``in_shape[0]``)."""
    vocab = opts["vocab_size"] if opts["vocab_size"] is not None else out_size
    if opts["context"] is not None:
        context = opts["context"]
    elif len(in_shape) == 1:
        context = in_shape[0]
    else:
        raise ValueError(f"in_shape must be (context,) for a language model, got {in_shape}")
    return vocab, context


def _trainable_leaves(model: Any) -> list[Any]:
    """The trainable array leaves of ``model``: its inexact leaves, without the state of a
    ``(model, eqx.nn.State)`` pair or the initial values its ``eqx.nn.StateIndex`` holds
    (BatchNorm running statistics are not trained)."""
    if isinstance(model, tuple) and len(model) == 2 and isinstance(model[1], eqx.nn.State):
        model = model[0]
    is_index = lambda n: isinstance(n, eqx.nn.StateIndex)  # noqa: E731
    model = jax.tree_util.tree_map(lambda n: None if is_index(n) else n, model, is_leaf=is_index)
    leaves = jax.tree_util.tree_leaves(model)  # arrays, or their ShapeDtypeStructs under eval_shape
    return [x for x in leaves if hasattr(x, "dtype") and hasattr(x, "shape") and jnp.issubdtype(x.dtype, jnp.inexact)]


def count_params(model: Any) -> int:
    """Number of scalar parameters: total size of the trainable (inexact) array leaves; of a
    ``(model, eqx.nn.State)`` pair, the model's, without its BatchNorm running statistics.

    Example
    -------
    >>> import jax
    >>> count_params(MLP(3, 2, width=4, depth=1, key=jax.random.key(0)))
    26
    """
    return int(sum(math.prod(leaf.shape) for leaf in _trainable_leaves(model)))


def count_config_params(config: dict[str, Any], *, in_shape: Sequence[int], out_size: int) -> int:
    """Number of scalar parameters of the model :func:`make_model` builds from ``config``
    for inputs of ``in_shape`` and ``out_size`` outputs, from shapes only (no random
    draws, no arrays allocated): the total size of its inexact array leaves, as
    :func:`count_params` counts them.

    Example
    -------
    >>> count_config_params({"name": "mlp", "width": 4, "depth": 1}, in_shape=(3,), out_size=2)
    26
    """
    model = eqx.filter_eval_shape(
        lambda: make_model(config, key=jax.random.key(0), in_shape=in_shape, out_size=out_size)
    )
    return count_params(model)
