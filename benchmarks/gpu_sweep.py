"""GPU sweep: the throughput grid at 10⁴–10⁶ configurations on one device (gram method).

The grid of `sweep_throughput.py` (n = 10, D = 40, m = 2, widths 10–300, 3 scales, t1 = 20)
with as many seeds as make up each size, solved by `flowlin.sweep(method=flowlin.Gram())` in
float32 (rtol 1e-5, atol 1e-7) and float64 (rtol 1e-6, atol 1e-9); configs/s (second call when
time allows, so compile is excluded) and peak device memory (`jax.devices()[0].memory_stats()`).
A size is skipped when the previous size's throughput predicts it would overrun the time cap.

What float32 buys is measured on paired runs (`agreement`): the same problem and the same
initial weights, drawn in float64 and rounded to float32, solved in both dtypes at the sweep's
tolerances; their final distances to the min-norm solution are compared run by run. (The two
sweeps' rows cannot be compared that way: each dtype draws its own problem and weights from the
same keys, so their medians differ by sampling alone, ~3% on this grid.)

    python benchmarks/gpu_sweep.py --sizes 10000,100000,1000000 --time-cap 300
    python benchmarks/gpu_sweep.py --quick        # CPU smoke test: 96 and 192 configurations

Prints a self-contained table; writes JSON to $OUT if that variable is set, else to
benchmarks/results/.
"""

import functools
import os


# Several processes may share the GPU; do not grab 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pathlib  # noqa: E402
import sys  # noqa: E402


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


def one_size(problem, seeds, n_cfg, rtol, atol, chunk_size, time_left):
    """Time the gram sweep of `seeds` seeds: its table row (first call, and warm if time left)."""
    import numpy as np

    import flowlin
    from flowlin import _dataset as schema

    grid = H.THROUGHPUT_GRID

    def call():
        return flowlin.sweep(
            problem,
            widths=list(grid["widths"]),
            scales=list(grid["alphas"]),
            seeds=seeds,
            method=flowlin.Gram(),
            t1=grid["t1"],
            saveat=flowlin.SaveAt(
                np.linspace(0.0, grid["t1"], 21),
                diagnostics=("excess_loss", "distance_to_min_norm"),
            ),
            rtol=rtol,
            atol=atol,
            theory=False,
            bounds=False,
            chunk_size=chunk_size,
            progress=False,
        )

    # Compile happens at the first chunk shapes; a second call gives the warm rate (skipped
    # when the first one already used most of the time cap).
    first, warm, ds = H.first_and_warm(call, time_left)
    run = warm if warm is not None else first
    return dict(
        configs=n_cfg,
        first_call_s=first,
        run_s=run,
        warm=warm is not None,
        configs_per_s=n_cfg / run,
        compiled_shapes=int(ds.attrs["compiled_shapes"]),
        succeeded_fraction=float(ds[schema.SUCCEEDED].mean()),
        median_distance=float(np.nanmedian(ds[schema.final_var("distance_to_min_norm")].values)),
        rtol=rtol,
        atol=atol,
        **H.peak_memory(),
    ), first + (warm or 0.0)


#: float32's tolerances in this benchmark (float64: the harness's RTOL, ATOL).
F32_RTOL, F32_ATOL = 1e-5, 1e-7


def agreement(pairs_per_cell: int = 32, widths=None) -> dict:
    """float32 against float64 on paired runs: for every width and scale of the throughput
    grid, `pairs_per_cell` initializations drawn in float64 (the paper's, `init.paper`) on the
    float64 problem, then the same numbers rounded to float32; both solved with the Gram
    method at the sweep's tolerances (`widths`: a subset of the grid's). Returns the median
    final distance in each dtype, the largest and median relative difference per run, and the
    steps each dtype took."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import flowlin

    grid = H.THROUGHPUT_GRID
    p64 = flowlin.problems.gaussian(jax.random.key(0), n=grid["n"], D=grid["D"], m=grid["m"])
    p32 = flowlin.Problem(p64.X.astype(jnp.float32), p64.Y.astype(jnp.float32))
    keys = jax.random.split(jax.random.key(1), pairs_per_cell)
    tolerances = {"float64": (H.RTOL, H.ATOL), "float32": (F32_RTOL, F32_ATOL)}
    problems = {"float64": p64, "float32": p32}

    @functools.partial(jax.jit, static_argnames=("rtol", "atol"))
    @functools.partial(jax.vmap, in_axes=(0, None, None, None))
    def solve(net, problem, rtol, atol):
        return flowlin.gradient_flow(
            net, problem, grid["t1"], method=flowlin.Gram(), rtol=rtol, atol=atol
        )

    d = {"float32": [], "float64": []}
    steps = {"float32": [], "float64": []}
    for h in grid["widths"] if widths is None else widths:
        for alpha in grid["alphas"]:
            init = functools.partial(flowlin.init.paper, D=grid["D"], m=grid["m"], h=h, alpha=alpha)
            nets = jax.vmap(init)(keys)  # float64
            for dtype, problem in problems.items():
                start = jax.tree.map(lambda x, dtype=dtype: x.astype(dtype), nets)
                traj = solve(start, problem, *tolerances[dtype])
                d[dtype].append(np.asarray(traj.final_values["distance_to_min_norm"], float))
                steps[dtype].append(np.asarray(traj.num_steps, float))
    d32, d64 = np.concatenate(d["float32"]), np.concatenate(d["float64"])
    rel = np.abs(d32 - d64) / np.abs(d64)
    return dict(
        pairs=int(d64.size),
        median_distance_float64=float(np.median(d64)),
        median_distance_float32=float(np.median(d32)),
        median_gap=float(abs(np.median(d32) - np.median(d64))),
        max_relative_difference=float(np.max(rel)),
        median_relative_difference=float(np.median(rel)),
        mean_steps_float64=float(np.mean(np.concatenate(steps["float64"]))),
        mean_steps_float32=float(np.mean(np.concatenate(steps["float32"]))),
    )


def gpu_sweep(
    sizes=(10_000, 100_000, 1_000_000),
    *,
    time_cap: float = 300.0,
    dtypes=("float32", "float64"),
    chunk_size: int = 16384,
    pairs_per_cell: int = 32,
    agreement_widths=None,
    echo=print,
) -> dict:
    """configs/s and memory peak of `flowlin.sweep(method=Gram())` at growing sizes.

    The grid is the throughput grid's (widths 10–300, 3 scales) with as many seeds as make up
    each size. A size is skipped when the throughput measured at the previous size predicts it
    would exceed what is left of `time_cap` seconds (per dtype).
    """
    import jax

    import flowlin

    grid = H.THROUGHPUT_GRID
    per_seed = len(grid["widths"]) * len(grid["alphas"])
    load_before = H.load_average()
    rows = []
    echo(
        f"gram sweep throughput on {jax.devices()[0].device_kind} ({jax.default_backend()}), "
        f"sizes {list(sizes)}, time cap {time_cap:g} s per dtype, chunk_size {chunk_size}"
    )
    for dtype in dtypes:
        if dtype == "float64" and not jax.config.jax_enable_x64:
            echo("  float64 skipped: jax_enable_x64 is off")
            continue
        problem = flowlin.problems.gaussian(
            jax.random.key(0), n=grid["n"], D=grid["D"], m=grid["m"], dtype=dtype
        )
        rtol, atol = (H.RTOL, H.ATOL) if dtype == "float64" else (F32_RTOL, F32_ATOL)
        spent, rate = 0.0, None
        for size in sizes:
            seeds = max(1, -(-int(size) // per_seed))
            n_cfg = seeds * per_seed
            if rate is not None and n_cfg / rate > time_cap - spent:
                echo(f"  {dtype} {n_cfg}: skipped (predicted {n_cfg / rate:.0f} s > time left)")
                rows.append(dict(dtype=dtype, configs=n_cfg, skipped=True))
                continue
            row, seconds = one_size(problem, seeds, n_cfg, rtol, atol, chunk_size, time_cap - spent)
            spent += seconds
            rate = row["configs_per_s"]
            rows.append(dict(dtype=dtype, timed="warm" if row["warm"] else "first call", **row))
            echo(
                f"  {dtype} {n_cfg}: {row['run_s']:.2f} s ({rate:.0f} configs/s), first call "
                f"{row['first_call_s']:.2f} s"
            )
    echo("")
    H.print_table(
        rows,
        [
            ("dtype", "dtype", ""),
            ("configs", "configs", "d"),
            ("first_call_s", "first call (s)", ".2f"),
            ("run_s", "timed (s)", ".2f"),
            ("timed", "timed call", ""),
            ("configs_per_s", "configs/s", ".0f"),
            ("succeeded_fraction", "succeeded", ".3f"),
            ("median_distance", "median distance", ".4f"),
            ("device_peak_mib", "device peak so far (MiB)", ".0f"),
            ("host_peak_rss_mib", "host peak RSS so far (MiB)", ".0f"),
        ],
        echo=echo,
    )
    echo("(peaks are the process's high-water marks: a row includes the rows before it)")
    paired = None
    if {"float32", "float64"} <= set(dtypes) and jax.config.jax_enable_x64:
        paired = agreement(pairs_per_cell, agreement_widths)
        echo(
            f"\nfloat32 vs float64, {paired['pairs']} paired runs (same problem and weights, "
            "rounded to float32):\n"
            f"  median final distance {paired['median_distance_float32']:.6f} vs "
            f"{paired['median_distance_float64']:.6f} (gap {paired['median_gap']:.1e}; "
            "target <= 1e-4)\n"
            f"  relative difference per run: median {paired['median_relative_difference']:.1e}, "
            f"max {paired['max_relative_difference']:.1e}\n"
            f"  mean steps {paired['mean_steps_float32']:.0f} (float32) vs "
            f"{paired['mean_steps_float64']:.0f} (float64)"
        )
    settings = dict(
        grid={k: list(v) if isinstance(v, tuple) else v for k, v in grid.items()},
        sizes=list(sizes),
        time_cap_s=time_cap,
        dtypes=list(dtypes),
        chunk_size=chunk_size,
        pairs_per_cell=pairs_per_cell,
        method="gram",
        sampling="weights",
        on_cpu=jax.default_backend() == "cpu",
        timing="second call when the first left time (compile excluded), else the first call",
    )
    return H.record(
        "gpu_sweep",
        settings,
        rows,
        float32_vs_float64=paired,
        load_before=load_before,
        load_after=H.load_average(),
    )


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated")
    p.add_argument("--time-cap", type=float, default=300.0, help="seconds per dtype")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--chunk-size", type=int, default=16384)
    args = p.parse_args()
    pairs = 32
    if args.quick:
        args.sizes, args.chunk_size, pairs = "96,192", 96, 4
    H.enable_x64()
    result = gpu_sweep(
        [int(s) for s in args.sizes.split(",")],
        time_cap=args.time_cap,
        dtypes=args.dtypes.split(","),
        chunk_size=args.chunk_size,
        pairs_per_cell=pairs,
    )
    H.finish(result, args.out, "gpu_sweep")
