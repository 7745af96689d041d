"""Paper reproduction cost: ICML Fig. 1 by flowlin against the papers' gradient descent.

ICML Fig. 1: n = 100, D = 400, m = 1, init N(0, 1/h), widths 500 … 10⁴, 5 seeds; the papers
run gradient descent with η = 5e-3 on the averaged loss until it is ≤ 1e-8.

- flowlin: `flowlin.sweep(method=flowlin.Gram())` on that grid with `stop_at_loss` at the same
  threshold, `theory=True, bounds=True` — the computation `flowlin reproduce fig1` performs,
  timed directly (without plotting). First call (with compile) and second call.
- the papers' procedure: NumPy gradient descent. Run to the end for h <= --gd-full-max-width
  and the first --gd-full-seeds seeds; for the other runs the time is extrapolated as
  (iterations to stop, ⌈t_stop·n/(2η)⌉ from the flow's stopping time) × (seconds per iteration
  measured over --gd-probe-iterations at that width). The fully-run cases check the predicted
  iteration counts and the final distances.

    python benchmarks/fig1_cost.py [--quick]
"""

import math
import os


# One BLAS thread for the NumPy baseline: on a shared 2-core machine OpenBLAS's threads spin
# against the other jobs (measured 1.8 ms per iteration at h = 500, 30× the single-threaded
# cost). Set before NumPy loads OpenBLAS; recorded in the JSON's machine record.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pathlib  # noqa: E402
import sys  # noqa: E402


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


FIG1 = dict(n=100, D=400, m=1, alpha=0.5, widths=(500, 1000, 2000, 5000, 10000), seeds=5)
FIG1_QUICK = dict(n=20, D=80, m=1, alpha=0.5, widths=(50, 100), seeds=2)
FIG1_LR = 5e-3
FIG1_STOP = 1e-8  # on the averaged loss (1/n)‖R‖²


def time_flowlin(problem, cfg, stop_excess, echo):
    """First and second call of the gram sweep of Fig. 1: (first, warm Stopwatch, dataset)."""
    import flowlin

    def call():
        return flowlin.sweep(
            problem,
            widths=list(cfg["widths"]),
            scales=[cfg["alpha"]],
            seeds=cfg["seeds"],
            method=flowlin.Gram(),
            t1=1000.0,
            stop_at_loss=stop_excess,
            theory=True,
            bounds=True,
            progress=False,
        )

    first_sw, _ = H.timed(call)
    warm_sw, ds = H.timed(call)
    echo(
        f"  flowlin sweep (gram): first call {first_sw.wall:.2f} s (CPU {first_sw.cpu:.2f} s), "
        f"second {warm_sw.wall:.2f} s (CPU {warm_sw.cpu:.2f} s)"
    )
    return first_sw, warm_sw, ds


def gd_one_width(problem, cfg, h, ds, *, full_seeds, probe_iterations, checks):
    """The papers' GD at width h over every seed: run (and checked against the flow) for the
    first `full_seeds` seeds, else extrapolated from a probe. Appends to `checks`."""
    import numpy as np

    from flowlin import _dataset as schema

    distance = ds[schema.final_var("distance_to_min_norm")]

    X, Y, Wstar = np.asarray(problem.X), np.asarray(problem.Y), np.asarray(problem.min_norm)
    n, D, m, alpha = cfg["n"], cfg["D"], cfg["m"], cfg["alpha"]
    W1, W2 = H.baseline_init(D, m, h, alpha, 0)
    with H.Stopwatch() as probe:
        H.numpy_gradient_descent(W1, W2, X, Y, FIG1_LR, [probe_iterations], averaged=True)
    per_iter, per_iter_cpu = probe.wall / probe_iterations, probe.cpu / probe_iterations
    total = cpu = 0.0
    measured = extrapolated = 0
    iterations = []
    for s in range(cfg["seeds"]):
        t_stop = float(ds[schema.FINAL_TIME].sel(width=h, scale=alpha, seed=s))
        k_pred = math.ceil(t_stop * n / (2 * FIG1_LR))
        iterations.append(k_pred)
        if s >= full_seeds:
            total += k_pred * per_iter
            cpu += k_pred * per_iter_cpu
            extrapolated += 1
            continue
        W1, W2 = H.baseline_init(D, m, h, alpha, s)
        with H.Stopwatch() as run_sw:
            P, k = H.numpy_gradient_descent(
                W1, W2, X, Y, FIG1_LR, [], averaged=True, stop=FIG1_STOP
            )
        total += run_sw.wall
        cpu += run_sw.cpu
        measured += 1
        dist_gd = float(np.linalg.norm(P[-1] - Wstar))
        dist_flow = float(distance.sel(width=h, scale=alpha, seed=s))
        checks.append(
            dict(
                width=h,
                seed=s,
                gd_iterations=k,
                predicted_iterations=k_pred,
                gd_seconds=run_sw.wall,
                gd_distance=dist_gd,
                flow_distance=dist_flow,
                distance_rel_diff=abs(dist_gd - dist_flow) / dist_flow,
            )
        )
    return dict(
        width=h,
        gd_seconds_per_iteration=per_iter,
        mean_iterations_to_stop=float(np.mean(iterations)),
        gd_seconds=total,
        gd_cpu_seconds=cpu,
        gd_runs_measured=measured,
        gd_runs_extrapolated=extrapolated,
        mean_distance=float(distance.sel(width=h).mean()),
    )


def summarize(first_sw, warm_sw, rows, checks, echo) -> dict:
    """Speed-ups (wall and CPU, first call and warm) and the fully-run GD checks."""
    gd_total = sum(r["gd_seconds"] for r in rows)
    gd_cpu = sum(r["gd_cpu_seconds"] for r in rows)
    first, warm = first_sw.wall, warm_sw.wall
    compile_s = max(first - warm, 0.0)
    summary = dict(
        flowlin_first_call_s=first,
        flowlin_warm_s=warm,
        flowlin_compile_s=compile_s,
        flowlin_first_call_cpu_s=first_sw.cpu,
        flowlin_warm_cpu_s=warm_sw.cpu,
        gd_total_s=gd_total,
        gd_total_cpu_s=gd_cpu,
        speedup_first_call_cpu=gd_cpu / first_sw.cpu,
        speedup_warm_cpu=gd_cpu / warm_sw.cpu,
        speedup_first_call=gd_total / first,
        speedup_warm=gd_total / warm,
    )
    echo(
        f"flowlin: {first:.1f} s (first call, incl. {compile_s:.1f} s compile), {warm:.2f} s warm; "
        f"papers' GD: {gd_total:.0f} s -> {summary['speedup_first_call']:.3g}x (first call), "
        f"{summary['speedup_warm']:.3g}x (warm); in CPU seconds {gd_cpu:.0f} s vs "
        f"{first_sw.cpu:.1f} s -> {summary['speedup_first_call_cpu']:.3g}x (first call), "
        f"{summary['speedup_warm_cpu']:.3g}x (warm)"
    )
    if checks:
        worst_k = max(
            abs(c["gd_iterations"] - c["predicted_iterations"]) / c["gd_iterations"] for c in checks
        )
        worst_d = max(c["distance_rel_diff"] for c in checks)
        summary.update(iteration_prediction_rel_error=worst_k, gd_vs_flow_distance=worst_d)
        echo(
            f"check on {len(checks)} fully-run GD cases: iterations predicted from the flow's "
            f"stop time within {100 * worst_k:.2f}%, final distance GD vs flow within "
            f"{worst_d:.1e} (relative)"
        )
    return summary


def fig1(
    quick: bool = False,
    *,
    gd_full_max_width: int = 1000,
    gd_full_seeds: int = 2,
    gd_probe_iterations: int = 200,
    echo=print,
) -> dict:
    """Wall time of ICML Fig. 1 by flowlin against the papers' gradient descent.

    flowlin: `flowlin.sweep` (gram, the grid of Fig. 1, stop at the papers' loss threshold,
    theory and every bound checked) — the computation `flowlin reproduce fig1` performs (timed
    here directly, without its plotting). The papers' procedure: NumPy gradient descent with
    η = 5e-3 on the averaged loss until it is ≤ 1e-8, for every width and seed. It is run to
    the end for widths ≤ `gd_full_max_width` and the first `gd_full_seeds` seeds; elsewhere its
    cost is extrapolated as (iterations to stop) × (seconds per iteration), with the seconds per
    iteration measured over `gd_probe_iterations` iterations at that width and the iterations
    to stop taken from the flow's stopping time, k = ⌈t_stop·n/(2η)⌉ (theory.md §5), which the
    fully-run cases check.
    """
    import jax

    import flowlin
    from flowlin import _dataset as schema

    cfg = dict(FIG1_QUICK if quick else FIG1)
    if quick:
        gd_full_max_width, gd_full_seeds = max(cfg["widths"]), cfg["seeds"]
    problem = flowlin.problems.gaussian(jax.random.key(0), n=cfg["n"], D=cfg["D"], m=cfg["m"])
    # Averaged loss (1/n)‖R‖² ≤ 1e-8  ⇔  ½‖R‖² ≤ n·1e-8/2 (L* = 0 here, r = n).
    stop_excess = FIG1_STOP * cfg["n"] / 2
    load_before = H.load_average()
    echo(
        f"ICML Fig. 1 cost: n={cfg['n']} D={cfg['D']} m={cfg['m']} alpha={cfg['alpha']}, widths "
        f"{list(cfg['widths'])}, {cfg['seeds']} seeds; GD eta={FIG1_LR:g} until averaged loss "
        f"<= {FIG1_STOP:g}"
    )
    first_sw, warm_sw, ds = time_flowlin(problem, cfg, stop_excess, echo)
    rows, checks = [], []
    for h in cfg["widths"]:
        full_seeds = gd_full_seeds if h <= gd_full_max_width else 0
        row = gd_one_width(
            problem,
            cfg,
            h,
            ds,
            full_seeds=full_seeds,
            probe_iterations=gd_probe_iterations,
            checks=checks,
        )
        rows.append(row)
        echo(
            f"  GD h={h}: {1e3 * row['gd_seconds_per_iteration']:.3f} ms/iteration, "
            f"{row['gd_seconds']:.1f} s for {cfg['seeds']} seeds ({row['gd_runs_measured']} run, "
            f"{row['gd_runs_extrapolated']} extrapolated)"
        )
    echo("")
    H.print_table(
        rows,
        [
            ("width", "h", "d"),
            ("mean_iterations_to_stop", "GD iterations", ".0f"),
            ("gd_seconds_per_iteration", "GD s/iteration", ".2e"),
            ("gd_seconds", "GD seconds (all seeds)", ".1f"),
            ("gd_runs_measured", "run", "d"),
            ("gd_runs_extrapolated", "extrapolated", "d"),
            ("mean_distance", "distance (flowlin)", ".4f"),
        ],
        echo=echo,
    )
    summary = summarize(first_sw, warm_sw, rows, checks, echo)
    summary["all_succeeded"] = bool(ds[schema.SUCCEEDED].all())
    settings = dict(
        **{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
        gd_lr=FIG1_LR,
        gd_stop_averaged_loss=FIG1_STOP,
        flow_stop_excess_loss=stop_excess,
        gd_full_max_width=gd_full_max_width,
        gd_full_seeds=gd_full_seeds,
        gd_probe_iterations=gd_probe_iterations,
        extrapolation="GD runs not run to the end: ceil(t_stop n/(2 eta)) iterations x seconds "
        "per iteration measured over gd_probe_iterations at that width",
        flowlin_call="flowlin.sweep(method=Gram(), stop_at_loss, theory=True, bounds=True), the "
        "computation behind `flowlin reproduce fig1`, timed directly",
        quick=quick,
    )
    return H.record(
        "fig1",
        settings,
        rows,
        summary=summary,
        gd_checks=checks,
        load_before=load_before,
        load_after=H.load_average(),
    )


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--gd-full-max-width", type=int, default=1000)
    p.add_argument("--gd-full-seeds", type=int, default=2)
    p.add_argument("--gd-probe-iterations", type=int, default=200)
    args = p.parse_args()
    H.enable_x64()
    result = fig1(
        args.quick,
        gd_full_max_width=args.gd_full_max_width,
        gd_full_seeds=args.gd_full_seeds,
        gd_probe_iterations=args.gd_probe_iterations,
    )
    H.finish(result, args.out, "fig1_cost")
