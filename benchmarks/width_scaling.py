"""Width scaling: time per gradient-flow trajectory against the hidden width h.

One problem (n = 10, D = 40, m = 2, Gaussian data, NTK init std = h^-1/2, t1 = 20, Tsit5,
rtol 1e-6, atol 1e-9, float64):

- `full`:    `gradient_flow(net, method=FullWeights())`, the weight-space solver, h = 10 … 10⁵;
- `gram`:    `gradient_flow(net, method=Gram())` from the materialised network (includes the
             one-off O(h·D·(r+m)) Gram/QR of the weights and the rebuilt final network),
             h = 10 … 10⁶;
- `wishart`: `gradient_flow(init.wishart(key, problem, h, ...), method=Gram())`, statistics
             sampled without weights, h = 10 … 10⁹ — one compiled function for every h.

Run time is the minimum over repeats (at least 3, and until 3 s is spent) of a compiled call;
compile time is the first call minus that. The last column is the largest relative difference
between the full and gram distances to the min-norm solution over the saved times.

    python benchmarks/width_scaling.py            # ~5 minutes on 2 cores
    python benchmarks/width_scaling.py --quick    # h <= 10^3

`--from-weights`: only the gram method from materialised weights, as a user calls it
(`gradient_flow(net, problem, t1, method=Gram())`, every default: 101 saves, all diagnostics,
rtol 1e-8, the final network rebuilt), on n = 10, D = 30, m = 1, h = 10 … 2·10⁵, each width
timed side by side in one process (min over interleaved repeats), and its ratio to h = 10;
also with `reconstruct=False` (no h×D final weights written), and both again with the native
pass over the weights turned off (the XLA pass: the named baseline). Target: the setup is
O(h·D·(r+m)), and t(2·10⁵)/t(10) ≤ 5. The QR of Z0ᵀ (h×(r+m)) runs in
jaxlib's LAPACK (OpenBLAS), whose worker threads spin on a loaded machine (10× slower at load
10): the script sets `OPENBLAS_NUM_THREADS=1`, as the baselines do.

    python benchmarks/width_scaling.py --from-weights   # ~1 minute
"""

import os
import pathlib
import sys
from functools import partial


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


def solvers(problem, t1):
    """The three compiled solves: full and gram from weights, gram from Wishart statistics."""
    import diffrax as dfx
    import jax
    import jax.numpy as jnp

    import flowlin

    options = dict(solver=dfx.Tsit5(), rtol=H.RTOL, atol=H.ATOL)
    saves = flowlin.SaveAt(
        ts=jnp.linspace(0.0, t1, 21), diagnostics=("excess_loss", "distance_to_min_norm")
    )
    full, gram = flowlin.FullWeights(), flowlin.Gram()

    @jax.jit
    def full_solve(net):
        return flowlin.gradient_flow(net, problem, t1, saveat=saves, method=full, **options)

    @jax.jit
    def gram_solve(net):
        return flowlin.gradient_flow(net, problem, t1, saveat=saves, method=gram, **options)

    @jax.jit
    def wishart_solve(key, h):
        std = 1.0 / jnp.sqrt(h)
        init = flowlin.init.wishart(key, problem, h, std, std)
        return flowlin.gradient_flow(init, problem, t1, saveat=saves, method=gram, **options)

    return full_solve, gram_solve, wishart_solve


def rows_of(h, results) -> list[dict]:
    """Table rows of one width: time, steps, final values, full vs gram."""
    import jax.numpy as jnp

    rows = []
    for method, (compile_s, run_s, traj) in results.items():
        row = dict(
            h=h,
            method=method,
            compile_s=compile_s,
            run_ms=1e3 * run_s,
            num_steps=int(traj.num_steps),
            succeeded=bool(traj.succeeded),
            excess_loss=float(traj.excess_loss[-1]),
            distance=float(traj.distance_to_min_norm[-1]),
        )
        if method == "gram" and "full" in results:
            full = results["full"][2]
            row["full_vs_gram"] = float(
                jnp.max(
                    jnp.abs(traj.distance_to_min_norm - full.distance_to_min_norm)
                    / full.distance_to_min_norm
                )
            )
        rows.append(row)
    return rows


def width_scaling(
    quick: bool = False,
    *,
    repeats: int = 3,
    max_full: float = 1e5,
    max_gram: float = 1e6,
    max_wishart: float = 1e9,
    echo=print,
) -> dict:
    """Time per trajectory against h: full (weights), gram (weights), gram (Wishart)."""
    import jax
    import jax.numpy as jnp

    import flowlin

    n, D, m, t1 = 10, 40, 2, 20.0
    if quick:
        max_full = max_gram = max_wishart = 1e3
    problem = flowlin.problems.gaussian(jax.random.key(0), n=n, D=D, m=m)
    key = jax.random.key(1)
    full_solve, gram_solve, wishart_solve = solvers(problem, t1)
    load_before = H.load_average()
    rows = []
    echo(f"problem n={n} D={D} m={m} (r={problem.rank}), NTK init, t1={t1}, Tsit5 rtol 1e-6")
    for h in [10**p for p in range(1, 10)]:
        net = None
        if h <= max(max_full, max_gram):
            net = jax.block_until_ready(flowlin.init.paper(key, D, m, h, 0.5))
        results = {}
        if h <= max_full:
            results["full"] = H.timed_repeats(partial(full_solve, net), repeats if h < 1e5 else 2)
        if h <= max_gram:
            results["gram"] = H.timed_repeats(partial(gram_solve, net), repeats)
        if h <= max_wishart:
            h_arr = jnp.asarray(float(h))
            results["wishart"] = H.timed_repeats(partial(wishart_solve, key, h_arr), repeats)
        for row in rows_of(h, results):
            rows.append(row)
            echo(
                f"  h={h:.0e} {row['method']:>7}: compile {row['compile_s']:.2f} s, run "
                f"{row['run_ms']:.2f} ms, {row['num_steps']} steps"
            )
        net = None  # free the width-h weights before the next width
    echo("")
    H.print_table(
        rows,
        [
            ("h", "h", ".0e"),
            ("method", "method", ""),
            ("compile_s", "compile (s)", ".2f"),
            ("run_ms", "run (ms)", ".2f"),
            ("num_steps", "steps", "d"),
            ("excess_loss", "L - L* at t1", ".1e"),
            ("distance", "distance", ".5f"),
            ("full_vs_gram", "full vs gram", ".1e"),
        ],
        echo=echo,
    )
    settings = dict(
        n=n,
        D=D,
        m=m,
        t1=t1,
        solver="Tsit5",
        rtol=H.RTOL,
        atol=H.ATOL,
        init="NTK (std = h^-1/2)",
        repeats=repeats,
        max_full=max_full,
        max_gram=max_gram,
        max_wishart=max_wishart,
        quick=quick,
    )
    return H.record(
        "width_scaling", settings, rows, load_before=load_before, load_after=H.load_average()
    )


#: Widths of the from-weights rows, and the target on the ratio of the widest to h = 10.
FROM_WEIGHTS_WIDTHS = (10, 100, 1000, 10_000, 20_000, 200_000)
FROM_WEIGHTS_TARGET = 5.0


def from_weights(*, repeats: int = 5, widths=FROM_WEIGHTS_WIDTHS, echo=print) -> dict:
    """Gram solves from materialised weights, D = 30: time against h with every default and
    with `reconstruct=False`, each with flowlin's native pass over the weights (the default
    on a CPU where it builds) and with the XLA pass (the named baseline: `FLOWLIN_NATIVE=0`),
    side by side, interleaved, in one process."""
    import jax

    import flowlin
    from flowlin._native import native_status, use_native

    n, D, m, t1 = 10, 30, 1, 20.0
    problem = flowlin.problems.gaussian(jax.random.key(0), n=n, D=D, m=m)
    load_before = H.load_average()
    nets = {h: flowlin.init.paper(jax.random.key(1), D, m, h, 0.5) for h in widths}
    jax.block_until_ready(nets)
    native_ok, native_why = native_status()
    echo(f"native pass: {native_ok} ({native_why})")
    variants = {  # name: (reconstruct, native)
        "rebuild": (True, True),
        "no_rebuild": (False, True),
        "xla_rebuild": (True, False),
        "xla_no_rebuild": (False, False),
    }
    calls = {}
    for variant, (rebuild, native) in variants.items():
        use_native(native)  # the pass is chosen while tracing; compiled ahead of time below
        try:
            for h in widths:
                fn = partial(flowlin.gradient_flow, method=flowlin.Gram(reconstruct=rebuild))
                compiled = jax.jit(fn).lower(nets[h], problem, t1).compile()
                calls[(h, variant)] = partial(compiled, nets[h], problem, t1)
        finally:
            use_native(True)
    for call in calls.values():
        jax.block_until_ready(call())
    best = {key: float("inf") for key in calls}
    for _ in range(repeats):  # interleaved, so that load changes hit every width alike
        for key, call in calls.items():
            with H.Stopwatch() as sw:
                jax.block_until_ready(call())
            best[key] = min(best[key], sw.wall)
    rows = []
    for h in widths:
        row = dict(h=h)
        for variant in variants:
            row[f"{variant}_ms"] = 1e3 * best[(h, variant)]
            row[f"{variant}_ratio"] = best[(h, variant)] / best[(widths[0], variant)]
        row["speedup"] = best[(h, "xla_rebuild")] / best[(h, "rebuild")]
        rows.append(row)
    echo(f"gram from weights, n={n} D={D} m={m} (r={problem.rank}), t1={t1}")
    H.print_table(
        rows,
        [
            ("h", "h", ".0e"),
            ("rebuild_ms", "every default (ms)", ".2f"),
            ("rebuild_ratio", "vs h=10", ".1f"),
            ("no_rebuild_ms", "reconstruct=False (ms)", ".2f"),
            ("no_rebuild_ratio", "vs h=10", ".1f"),
            ("xla_rebuild_ms", "XLA pass: default (ms)", ".2f"),
            ("xla_no_rebuild_ms", "XLA: reconstruct=False", ".2f"),
            ("speedup", "XLA/native, default", ".2f"),
        ],
        echo=echo,
    )
    settings = dict(
        n=n, D=D, m=m, t1=t1, widths=list(widths), repeats=repeats, init="paper alpha=0.5",
        call="jit(gradient_flow)(net, problem, t1, method=Gram()) with every default",
        baseline="the same calls with the native pass off (the XLA pass, FLOWLIN_NATIVE=0)",
        target_ratio=FROM_WEIGHTS_TARGET, native=native_ok, native_status=native_why,
    )  # fmt: skip
    return H.record(
        "width_scaling_from_weights",
        settings,
        rows,
        load_before=load_before,
        load_after=H.load_average(),
    )


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-full", type=float, default=1e5)
    p.add_argument("--max-gram", type=float, default=1e6)
    p.add_argument("--max-wishart", type=float, default=1e9)
    p.add_argument("--from-weights", action="store_true", help="gram from weights, D = 30")
    args = p.parse_args()
    if args.from_weights:  # before NumPy/jaxlib load OpenBLAS (the QR of Z0ᵀ runs in it)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    H.enable_x64()
    if args.from_weights:
        H.finish(from_weights(repeats=args.repeats), args.out, "width_scaling_from_weights")
        sys.exit()
    result = width_scaling(
        args.quick,
        repeats=args.repeats,
        max_full=args.max_full,
        max_gram=args.max_gram,
        max_wishart=args.max_wishart,
    )
    H.finish(result, args.out, "width_scaling")
