"""A Llama-style language model: :class:`Decoder` (pre-norm RMSNorm, rotary position
embeddings, SwiGLU MLP, tied or untied embeddings), and :func:`non_embedding_params`.

The ``reach`` paper trains Llama-2-style models and puts model size on its compute axis as
N = the *non-embedding* parameters (compute ≈ 6·N·D). :class:`Decoder` is that shape at
sizes a CPU trains, with the conventions of :mod:`ntkbench.models`: an Equinox module called
on ONE token sequence, deterministic from a key, every dense layer an ``eqx.nn.Linear``
applied per token with ``jax.vmap`` (so the structured eNTK rule of
:func:`ntkbench.entk` taps it), standard parametrization (LeCun normal weights, no biases;
embeddings N(0, 1); RMSNorm gains 1).

Example
-------
>>> import jax, jax.numpy as jnp
>>> lm = Decoder(vocab_size=50, context=16, width=32, layers=2, heads=4, key=jax.random.key(0))
>>> lm(jnp.arange(10)).shape
(10, 50)
>>> non_embedding_params(lm), count_params(lm)  # blocks + final norm; all
(25248, 28448)
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ntkbench.models import _check_int, _check_key, _check_tokens, _embedding, _normal, count_params

__all__ = ["Decoder", "RMSNorm", "non_embedding_params", "rope"]


class RMSNorm(eqx.Module):
    """Root-mean-square norm of one token ``x`` (d,): ``x / sqrt(mean(x²) + eps) · weight``
    (Zhang & Sennrich 2019; a learned gain, no bias, no centring)."""

    weight: Float[Array, " d"]
    eps: float = eqx.field(static=True)

    def __init__(self, width: int, eps: float = 1e-6):
        self.weight = jnp.ones(_check_int(width, "width", 1))
        self.eps = float(eps)

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, " d"]:
        return x * jax.lax.rsqrt(jnp.mean(x * x) + self.eps) * self.weight


def rope(x: Float[Array, "T H dh"], base: float = 10000.0) -> Float[Array, "T H dh"]:
    """Rotary position embedding (Su et al. 2021) of queries or keys ``x`` (T, heads,
    d_head), d_head even: the pair (x_2i, x_2i+1) at position t turns by the angle
    t · base^(-2i/d_head). A dot product of two rotated vectors depends on their positions'
    difference only."""
    t, _, dh = x.shape
    if dh % 2:
        raise ValueError(f"rope needs an even head dimension, got {dh}")
    freq = base ** (-jnp.arange(0, dh, 2, dtype=x.dtype) / dh)  # (dh/2,)
    angle = jnp.arange(t, dtype=x.dtype)[:, None] * freq[None, :]  # (T, dh/2)
    cos, sin = jnp.cos(angle)[:, None, :], jnp.sin(angle)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    return jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1).reshape(x.shape)


def _linear(in_size: int, out_size: int, key: PRNGKeyArray) -> eqx.nn.Linear:
    """A bias-free ``eqx.nn.Linear`` with weights ~ N(0, 1/in_size) (LeCun)."""
    layer = eqx.filter_eval_shape(eqx.nn.Linear, in_size, out_size, use_bias=False, key=key)
    return eqx.tree_at(lambda lin: lin.weight, layer, _normal(key, layer.weight.shape, 1 / math.sqrt(in_size)))


class _DecoderBlock(eqx.Module):
    norm1: RMSNorm
    qkv: eqx.nn.Linear
    proj: eqx.nn.Linear
    norm2: RMSNorm
    gate_up: eqx.nn.Linear
    down: eqx.nn.Linear
    heads: int = eqx.field(static=True)

    def __init__(self, width: int, heads: int, hidden: int, key: PRNGKeyArray):
        k = jax.random.split(key, 4)
        self.norm1, self.norm2 = RMSNorm(width), RMSNorm(width)
        self.qkv = _linear(width, 3 * width, k[0])
        self.proj = _linear(width, width, k[1])
        self.gate_up = _linear(width, 2 * hidden, k[2])
        self.down = _linear(hidden, width, k[3])
        self.heads = heads

    def __call__(self, h: Float[Array, "T d"]) -> Float[Array, "T d"]:
        t, d = h.shape
        dh = d // self.heads
        q, k, v = jnp.split(jax.vmap(self.qkv)(jax.vmap(self.norm1)(h)), 3, axis=-1)
        q, k = (rope(z.reshape(t, self.heads, dh)) for z in (q, k))
        v = v.reshape(t, self.heads, dh)
        scores = jnp.einsum("thd,shd->hts", q, k) / math.sqrt(dh)
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        att = jnp.einsum("hts,shd->thd", jax.nn.softmax(scores, axis=-1), v).reshape(t, d)
        h = h + jax.vmap(self.proj)(att)
        gate, up = jnp.split(jax.vmap(self.gate_up)(jax.vmap(self.norm2)(h)), 2, axis=-1)
        return h + jax.vmap(self.down)(jax.nn.silu(gate) * up)


class Decoder(eqx.Module):
    """A Llama-style causal decoder: token embedding, ``layers`` pre-norm blocks of causal
    multi-head attention with rotary position embeddings and a SwiGLU MLP (hidden size
    ``mlp_hidden``, default the Llama rule 8·width/3 rounded up to a multiple of 8), each with
    RMSNorm and a residual connection, a final RMSNorm, and the readout: an untied
    ``eqx.nn.Linear`` ``unembed``, or with ``tie_embeddings`` the embedding matrix itself
    (logits = h · Eᵀ / sqrt(width)). No biases; linear weights N(0, 1/fan-in), embeddings N(0, 1).

    Parameters
    ----------
    vocab_size, context:
        Token ids, and the longest sequence.
    width:
        Model dimension; ``width / heads`` must be even (rotary pairs).
    layers:
        Blocks.
    heads:
        Attention heads.
    mlp_hidden:
        SwiGLU hidden units; None: the Llama rule.
    tie_embeddings:
        Share the embedding and the readout (the structured eNTK rule then computes the
        embedding's block by its fallback: the matrix is read directly, not looked up).
    key:
        PRNG key.

    Shapes: int tokens ``(T,)``, ``T <= context`` → logits ``(T, vocab_size)``, causal.
    """

    embed: eqx.nn.Embedding
    blocks: tuple[_DecoderBlock, ...]
    norm: RMSNorm
    unembed: eqx.nn.Linear | None
    vocab_size: int = eqx.field(static=True)
    context: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    heads: int = eqx.field(static=True)
    mlp_hidden: int = eqx.field(static=True)
    tie_embeddings: bool = eqx.field(static=True)

    def __init__(
        self,
        vocab_size: int,
        context: int,
        width: int,
        layers: int,
        heads: int,
        *,
        mlp_hidden: int | None = None,
        tie_embeddings: bool = False,
        key: PRNGKeyArray,
    ):
        _check_key(key)
        self.vocab_size = _check_int(vocab_size, "vocab_size", 2)
        self.context = _check_int(context, "context", 1)
        self.width = _check_int(width, "width", 2)
        self.depth = _check_int(layers, "layers", 1)
        self.heads = _check_int(heads, "heads", 1)
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(f"width / heads must be an even integer (rotary pairs), got {width} / {heads}")
        hidden = 8 * math.ceil(8 * self.width / 3 / 8) if mlp_hidden is None else mlp_hidden
        self.mlp_hidden = _check_int(hidden, "mlp_hidden", 1)
        if not isinstance(tie_embeddings, bool):
            raise ValueError(f"tie_embeddings must be a bool, got {tie_embeddings!r}")
        self.tie_embeddings = tie_embeddings
        k = jax.random.split(key, self.depth + 2)
        self.embed = _embedding(self.vocab_size, self.width, k[0])
        self.blocks = tuple(_DecoderBlock(self.width, self.heads, self.mlp_hidden, k[2 + i]) for i in range(self.depth))
        self.norm = RMSNorm(self.width)
        self.unembed = None if tie_embeddings else _linear(self.width, self.vocab_size, k[1])

    @property
    def layers(self) -> int:
        """Number of blocks (same as ``depth``)."""
        return self.depth

    def __call__(self, tokens: Int[Array, " T"]) -> Float[Array, "T vocab"]:
        _check_tokens(tokens, self.context)
        h = jax.vmap(self.embed)(tokens)
        for block in self.blocks:
            h = block(h)
        h = jax.vmap(self.norm)(h)
        if self.unembed is None:
            return h @ self.embed.weight.T / math.sqrt(self.width)
        return jax.vmap(self.unembed)(h)


def non_embedding_params(model: Decoder) -> int:
    """N of the scaling laws: the parameters of ``model`` without its token embedding and
    its readout (the blocks and the final norm; the ``reach`` paper's compute is 6·N·D).
    :func:`ntkbench.models.count_params` counts every parameter."""
    if not isinstance(model, Decoder):
        raise TypeError(f"model must be a Decoder, got {type(model).__name__}")
    return count_params(model.blocks) + count_params(model.norm)
