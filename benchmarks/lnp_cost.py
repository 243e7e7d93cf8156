"""Cost of one loss–network–position (LNP) record at the size of the `reach` paper.

Workload (issue 15): a TinyTransformer of ~10⁶ parameters (vocabulary 89, context 64,
width 144, 4 blocks of 4 heads) on a batch of B = 64 sequences of T = 64 tokens of the
``stories`` data set, softmax cross-entropy averaged over positions (the training loss of
``ntkbench.train`` for next-token tasks), K = T·V = 5696 outputs per sample, float32.

Timed side by side in one process, alternating, median of ``--repeats`` after one
compile call each:

- ``train step``: one Adam step on the batch (value-and-grad + optax update), jitted;
- ``lnp``: ``ntkbench.lnp(model, x, y, loss, probes=P, key=...)``: ‖∇L‖² from one
  backward pass, χ_net by Hutchinson with P Rademacher probes per sample, per-sample
  norms by the token-Gram ("ghost norm") rule, never a per-sample weight gradient;
- ``obvious``: the same estimator written the obvious way: the same batch gradient, and
  per probe the per-sample gradients of v_i·f(x_i) by ``vmap(grad)`` (B × 10⁶ floats,
  ``--chunk`` samples at a time), then their squared norms. It uses the same probe
  vectors, so its χ_net must equal ``lnp``'s to float32 round-off (checked, printed).

Prints the times and the ratios measured in this run (lnp / train step, obvious / lnp);
goals: lnp ≤ 3 training steps, ≥ 5× faster than the obvious route.

    python benchmarks/lnp_cost.py                 # the paper's size, probes 2 and 4
    python benchmarks/lnp_cost.py --quick         # a small model, seconds
    python benchmarks/lnp_cost.py --probes 4 --repeats 7 --chunk 16
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small model and batch (width 32, 2 blocks, T = 32, B = 16)")
    ap.add_argument("--probes", type=int, nargs="*", default=[2, 4], help="Hutchinson probes per sample")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=None, help="samples per vmap(grad) batch of the obvious route")
    ap.add_argument("--no-obvious", action="store_true", help="skip the obvious route")
    args = ap.parse_args(argv)

    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax

    import ntkbench as nb
    from ntkbench.train import make_loss

    if args.quick:
        T, B, width, layers, heads = 32, 16, 32, 2, 2
    else:
        T, B, width, layers, heads = 64, 64, 144, 4, 4
    data = nb.load("stories", B, 8, seed=0, context=T)
    vocab = len(nb.data.STORIES_VOCAB)
    model = nb.TinyTransformer(vocab, T, width=width, layers=layers, heads=heads, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
    x, y = jnp.asarray(data.x_train[:B]), jnp.asarray(data.y_train[:B])
    lfn = make_loss("ce", "next_token")
    K = T * vocab
    chunk = args.chunk or B

    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    def mean_loss(p):
        m = eqx.combine(p, static)
        return jnp.mean(jax.vmap(lambda xi, yi: lfn(m(xi), yi))(x, y))

    @jax.jit
    def train_step(p, s):
        loss, g = jax.value_and_grad(mean_loss)(p)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    def obvious_fn(n_probes):
        @jax.jit
        def obvious(p, V):
            g = jax.grad(mean_loss)(p)
            grad_sq = sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(g))

            def sample_sq_norm(xi, vi):  # ‖∇_θ (v_i·f(x_i))‖² from the per-sample gradient
                gi = jax.grad(lambda p: jnp.vdot(vi, eqx.combine(p, static)(xi).ravel()))(p)
                return sum(jnp.sum(a**2) for a in jax.tree_util.tree_leaves(gi))

            def one_probe(Vp):  # (B, K) -> per-sample squared norms (B,), chunk samples at a time
                nb_ = -(-B // chunk)
                pad = nb_ * chunk - B
                xs = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]).reshape(nb_, chunk, *x.shape[1:])
                vs = jnp.concatenate([Vp, jnp.zeros((pad, K), Vp.dtype)]).reshape(nb_, chunk, K)
                return jax.lax.map(lambda a: jax.vmap(sample_sq_norm)(*a), (xs, vs)).reshape(-1)[:B]

            norms = jax.lax.map(one_probe, jnp.moveaxis(V, 1, 0))  # (probes, B)
            per_probe = jnp.sum(norms, axis=1) / B
            return grad_sq, jnp.mean(per_probe)

        return obvious

    print(
        f"# LNP record cost: TinyTransformer vocab {vocab}, T = {T}, width {width}, {layers} blocks × {heads} heads, "
        f"P = {n_params:,} parameters; batch B = {B}; K = T·V = {K} outputs per sample; float32"
    )
    print(
        f"# {platform.node()} {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}, median of {args.repeats} alternated calls after one compile call; "
        f"obvious route vmap(grad) over {chunk} samples at a time ({chunk * n_params * 4 / 2**20:.0f} MiB of "
        "per-sample gradients)"
    )

    def timed(fn):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - t0

    key = jax.random.key(1)
    sides = {"train step": lambda: train_step(params, opt_state)}
    results = {}
    for P in args.probes:
        sides[f"lnp P={P}"] = lambda P=P: nb.lnp(model, x, y, lfn, probes=P, key=key)
        if not args.no_obvious:
            V = jax.random.rademacher(key, (B, P, K), dtype=jnp.float32)  # the probes lnp draws
            ob = obvious_fn(P)
            sides[f"obvious P={P}"] = lambda ob=ob, V=V: ob(params, V)
    first = {}
    for name, fn in sides.items():
        first[name] = timed(fn)
        results[name] = fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(sides[name]))
    med = {name: statistics.median(ts) for name, ts in times.items()}
    step = med["train step"]
    print(f"{'route':<16}{'first call (s)':>16}{'median (s)':>12}{'/ train step':>14}{'chi_net':>14}{'± s.e.':>10}")
    for name in names:
        r = results[name]
        if name.startswith("lnp"):
            chi, se = f"{float(r.chi_net):.5g}", f"{float(r.chi_net_se):.2g}"
        elif name.startswith("obvious"):
            chi, se = f"{float(r[1]):.5g}", ""
        else:
            chi, se = "", ""
        print(f"{name:<16}{first[name]:>16.2f}{med[name]:>12.3f}{med[name] / step:>13.2f}x{chi:>14}{se:>10}")
    for P in args.probes:
        lnp_r = results[f"lnp P={P}"]
        line = f"P = {P}: lnp = {med[f'lnp P={P}'] / step:.2f} train steps (goal <= 3)"
        if not args.no_obvious:
            ob_r = results[f"obvious P={P}"]
            rel = abs(float(ob_r[1]) - float(lnp_r.chi_net)) / float(ob_r[1])
            rel_g = abs(float(ob_r[0]) - float(lnp_r.grad_sq)) / float(ob_r[0])
            line += (
                f"; obvious / lnp = {med[f'obvious P={P}'] / med[f'lnp P={P}']:.1f}x (goal >= 5); "
                f"same chi_net to {rel:.1e}, grad_sq to {rel_g:.1e} (relative)"
            )
        ident = float(lnp_r.chi_loss * lnp_r.chi_net * lnp_r.chi_pos) / float(lnp_r.grad_sq) - 1
        print(line + f"; identity chi_loss·chi_net·chi_pos / grad_sq - 1 = {ident:.1e}")


if __name__ == "__main__":
    main()
