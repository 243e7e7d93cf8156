"""Equinox versions of the benchmark models (ntkbench side only), called on ONE sample.

They compute exactly the functions of ``_bench_models.apply_fn`` with the same parameters
(loaded from the same .npz), but are built from ``eqx.nn.Linear`` / ``eqx.nn.Conv2d`` /
``eqx.nn.LayerNorm`` as a user of ntkbench would write them, so that layer-aware methods
of ``ntkbench.entk`` can see the layers. The driver checks numerically that the kernels
agree with neural-tangents' on the plain functions.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _linear(w, b=None):
    lin = eqx.nn.Linear(w.shape[0], w.shape[1], use_bias=b is not None, key=jax.random.key(0))
    lin = eqx.tree_at(lambda m: m.weight, lin, jnp.asarray(w.T))
    if b is not None:
        lin = eqx.tree_at(lambda m: m.bias, lin, jnp.asarray(b))
    return lin


def _conv(w, b, stride):
    kh, kw, cin, cout = w.shape
    conv = eqx.nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding="SAME", key=jax.random.key(0))
    conv = eqx.tree_at(lambda m: m.weight, conv, jnp.asarray(np.transpose(w, (3, 2, 0, 1))))
    return eqx.tree_at(lambda m: m.bias, conv, jnp.asarray(b).reshape(cout, 1, 1))


def _layer_norm(g, b):
    ln = eqx.nn.LayerNorm(g.shape[0], eps=1e-5)
    ln = eqx.tree_at(lambda m: m.weight, ln, jnp.asarray(g))
    return eqx.tree_at(lambda m: m.bias, ln, jnp.asarray(b))


class MLP(eqx.Module):
    layers: list

    def __init__(self, p):
        self.layers = [_linear(p["w0"], p["b0"]), _linear(p["w1"], p["b1"]), _linear(p["w2"], p["b2"])]

    def __call__(self, x):
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)


class CNN(eqx.Module):
    conv0: eqx.nn.Conv2d
    conv1: eqx.nn.Conv2d
    head: eqx.nn.Linear

    def __init__(self, p):
        self.conv0 = _conv(p["c0"], p["cb0"], 1)
        self.conv1 = _conv(p["c1"], p["cb1"], 2)
        self.head = _linear(p["w"], p["b"])

    def __call__(self, x):  # x: (H, W, C) like the plain model
        h = jnp.transpose(x, (2, 0, 1))
        h = jax.nn.relu(self.conv0(h))
        h = jax.nn.relu(self.conv1(h))
        return self.head(jnp.mean(h, axis=(1, 2)))


class TransformerBlock(eqx.Module):
    ln1: eqx.nn.LayerNorm
    ln2: eqx.nn.LayerNorm
    wq: eqx.nn.Linear
    wk: eqx.nn.Linear
    wv: eqx.nn.Linear
    wo: eqx.nn.Linear
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    head: eqx.nn.Linear
    heads: int = eqx.field(static=True, default=4)

    def __init__(self, p):
        self.ln1, self.ln2 = _layer_norm(p["ln1_g"], p["ln1_b"]), _layer_norm(p["ln2_g"], p["ln2_b"])
        self.wq, self.wk, self.wv, self.wo = (_linear(p[k]) for k in ("wq", "wk", "wv", "wo"))
        self.fc1, self.fc2 = _linear(p["w1"], p["b1"]), _linear(p["w2"], p["b2"])
        self.head = _linear(p["wh"], p["bh"])

    def __call__(self, x):  # x: (T, D)
        t, d = x.shape
        hd = d // self.heads
        h = jax.vmap(self.ln1)(x)
        q = jax.vmap(self.wq)(h).reshape(t, self.heads, hd)
        k = jax.vmap(self.wk)(h).reshape(t, self.heads, hd)
        v = jax.vmap(self.wv)(h).reshape(t, self.heads, hd)
        att = jax.nn.softmax(jnp.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd), axis=-1)
        o = jnp.einsum("hqk,khd->qhd", att, v).reshape(t, d)
        x = x + jax.vmap(self.wo)(o)
        h = jax.vmap(self.ln2)(x)
        x = x + jax.vmap(self.fc2)(jax.nn.gelu(jax.vmap(self.fc1)(h)))
        return self.head(jnp.mean(x, axis=0))


def build(name: str, params: dict):
    return {"mlp": MLP, "cnn": CNN, "transformer": TransformerBlock}[name](params)
