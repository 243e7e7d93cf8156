"""``enable_x64()``: 64-bit JAX inside a ``with`` block, on every JAX the bounds in
pyproject.toml allow (``jax.enable_x64(True)`` from JAX 0.7 on, before it
``jax.experimental.enable_x64()``), so the float64 references also run in the lowest-bounds
check (``make test-lowest``)."""

import jax


def enable_x64():
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(True)
    from jax.experimental import enable_x64 as old  # pyright: ignore[reportAttributeAccessIssue]

    return old()
