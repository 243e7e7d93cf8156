"""Benchmark models as plain-JAX ``apply(params, x_batch)``, shared by both worker environments.

This file must run unchanged on jax 0.4.25 (the neural-tangents env) and current JAX: only
``jax.numpy`` / ``jax.lax`` basics, no Equinox, parameters as a flat dict of arrays (so
they round-trip through an ``.npz``). All functions take a BATCH (B, ...) -> (B, 10).

- ``mlp``: 64-512-512-10, ReLU, standard parametrisation (W ~ N(0, 1/fan_in)), biases.
- ``cnn``: 16×16×3 input, conv3×3(32) ReLU, conv3×3(64, stride 2) ReLU, global average
  pool, dense 10 (NHWC).
- ``transformer``: 16 tokens × 64 features, pre-LayerNorm block (4-head self-attention,
  MLP 64-256-64, residuals), mean-pool over tokens, dense 10.
"""

from __future__ import annotations

import numpy as np

MODELS = ("mlp", "cnn", "transformer")
N_OUT = 10


def input_shape(name: str) -> tuple[int, ...]:
    return {"mlp": (64,), "cnn": (16, 16, 3), "transformer": (16, 64)}[name]


def init_params(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    """float32 parameters as a flat dict (numpy), standard parametrisation."""
    rng = np.random.default_rng(seed)

    def dense(fan_in, fan_out):
        return (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)

    def bias(n):
        return (0.1 * rng.standard_normal(n)).astype(np.float32)

    if name == "mlp":
        return {
            "w0": dense(64, 512),
            "b0": bias(512),
            "w1": dense(512, 512),
            "b1": bias(512),
            "w2": dense(512, N_OUT),
            "b2": bias(N_OUT),
        }
    if name == "cnn":
        return {
            "c0": (rng.standard_normal((3, 3, 3, 32)) / np.sqrt(27)).astype(np.float32),
            "cb0": bias(32),
            "c1": (rng.standard_normal((3, 3, 32, 64)) / np.sqrt(288)).astype(np.float32),
            "cb1": bias(64),
            "w": dense(64, N_OUT),
            "b": bias(N_OUT),
        }
    if name == "transformer":
        d = 64
        return {
            "ln1_g": np.ones(d, np.float32),
            "ln1_b": np.zeros(d, np.float32),
            "wq": dense(d, d),
            "wk": dense(d, d),
            "wv": dense(d, d),
            "wo": dense(d, d),
            "ln2_g": np.ones(d, np.float32),
            "ln2_b": np.zeros(d, np.float32),
            "w1": dense(d, 4 * d),
            "b1": bias(4 * d),
            "w2": dense(4 * d, d),
            "b2": bias(d),
            "wh": dense(d, N_OUT),
            "bh": bias(N_OUT),
        }
    raise ValueError(f"model: expected one of {MODELS}, got {name!r}")


def make_inputs(name: str, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *input_shape(name))).astype(np.float32)


def apply_fn(name: str):
    """apply(params, x_batch) -> (B, 10) in plain jax."""
    import jax
    import jax.numpy as jnp

    def mlp(p, x):
        h = jax.nn.relu(x @ p["w0"] + p["b0"])
        h = jax.nn.relu(h @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"]

    def cnn(p, x):
        dn = ("NHWC", "HWIO", "NHWC")
        h = jax.lax.conv_general_dilated(x, p["c0"], (1, 1), "SAME", dimension_numbers=dn)
        h = jax.nn.relu(h + p["cb0"])
        h = jax.lax.conv_general_dilated(h, p["c1"], (2, 2), "SAME", dimension_numbers=dn)
        h = jax.nn.relu(h + p["cb1"])
        h = jnp.mean(h, axis=(1, 2))
        return h @ p["w"] + p["b"]

    def layer_norm(h, g, b):
        mu = jnp.mean(h, axis=-1, keepdims=True)
        var = jnp.mean((h - mu) ** 2, axis=-1, keepdims=True)
        return (h - mu) / jnp.sqrt(var + 1e-5) * g + b

    def transformer(p, x):
        b, t, d = x.shape
        heads = 4
        h = layer_norm(x, p["ln1_g"], p["ln1_b"])
        q = (h @ p["wq"]).reshape(b, t, heads, d // heads)
        k = (h @ p["wk"]).reshape(b, t, heads, d // heads)
        v = (h @ p["wv"]).reshape(b, t, heads, d // heads)
        att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // heads), axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, d)
        x = x + o @ p["wo"]
        h = layer_norm(x, p["ln2_g"], p["ln2_b"])
        x = x + jax.nn.gelu(h @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return jnp.mean(x, axis=1) @ p["wh"] + p["bh"]

    return {"mlp": mlp, "cnn": cnn, "transformer": transformer}[name]


def naive_kernel(apply, params, x, outputs: str):
    """The naive baseline: per-sample Jacobians by vmap(jacrev), contracted with einsum.

    Returns (N, N) summed over outputs (trace) or (N, N, C, C) (full).
    """
    import jax
    import jax.numpy as jnp

    def one(p, xi):
        return apply(p, xi[None])[0]

    jac = jax.vmap(jax.jacrev(one), in_axes=(None, 0))(params, x)  # leaves (N, C, *shape)
    leaves = [j.reshape(j.shape[0], j.shape[1], -1) for j in jax.tree_util.tree_leaves(jac)]
    if outputs == "trace":
        return sum(jnp.einsum("icp,jcp->ij", j, j) for j in leaves)
    return sum(jnp.einsum("icp,jdp->ijcd", j, j) for j in leaves)


def time_call(fn, *args, min_total: float = 0.3, max_repeats: int = 500, max_seconds: float = 60.0):
    """Compile once, then best of repeated calls until ``min_total`` s of samples accumulate
    (and at least 5 samples unless they already add up to 1 s).

    Returns (best_seconds, compile_plus_first_seconds, repeats, result).
    """
    import time

    import jax

    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    samples = []
    while (sum(samples) < min_total or (len(samples) < 5 and sum(samples) < 1.0)) and len(samples) < max_repeats:
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        samples.append(time.perf_counter() - t0)
        if sum(samples) + first > max_seconds:
            break
    return min(samples), first, len(samples), out


def rss_bytes() -> tuple[int, int]:
    """(current RSS, peak RSS) of this process in bytes."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak if sys.platform == "darwin" else peak * 1024
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        current = -1
    return current, peak


def device_memory() -> dict | None:
    """JAX's own allocator stats for device 0 (None on backends that do not report them)."""
    import jax

    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:
        return None
    if not stats:
        return None
    return {k: int(v) for k, v in stats.items() if k in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit")}
