"""Sweep throughput: the 48-configuration grid of benchmarks/README.md by scipy, NumPy GD,
flowlin full and gram.

48 configurations (n = 10, D = 40, m = 2; widths 10, 30, 100, 300; α = 0.25, 0.5, 0.75 of the
paper init N(0, h^-2α); 4 seeds; t1 = 20; float64; rtol 1e-6, atol 1e-9) solved by

  (a) a `scipy.integrate.solve_ivp` (RK45) loop over the configurations, unpadded weights;
  (b) plain gradient descent in NumPy, η = 1e-3, iteration k ↔ flow time t = ηk;
  (c) `flowlin.sweep(method=flowlin.FullWeights())`;  (d) `flowlin.sweep(method=flowlin.Gram())`.

Every approach is timed once per round, the rounds interleaved (a, b, c, d, a, b, ...), so that
a change of load touches all of them alike; the table gives the best round (and the JSON every
round). Reports configs/s, the ratio to (a), compile time (flowlin: first call minus its best
round) and the largest disagreement between the approaches over 21 save times (that they agree
to the stated tolerance is asserted by tests/test_baselines.py, not here).

    python benchmarks/sweep_throughput.py [--quick] [--lr 1e-3] [--rounds 3] [--out DIR]
"""

import os


# One BLAS thread for the scipy/NumPy baselines: on a shared machine OpenBLAS's worker threads
# spin against other jobs and inflate both wall and CPU time (a scipy loop measured 25.9 s at
# load 7 and 1.45 s at load 1.5). Set before NumPy loads OpenBLAS; recorded in the JSON.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import pathlib  # noqa: E402
import sys  # noqa: E402


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


def approaches(problem, inits, grid, ts, lr) -> dict:
    """key → (label, call) for the four approaches; each call returns what is compared: the
    baselines their products at the save times, flowlin its dataset."""
    import numpy as np

    import flowlin

    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    ks = np.rint(ts / lr).astype(np.int64)

    def scipy_loop():
        out = [H.numpy_flow_scipy(W1, W2, X, Y, grid["t1"], ts, H.RTOL, H.ATOL) for W1, W2 in inits]
        return np.stack([p for p, _ in out])

    def gradient_descent():
        return np.stack([H.numpy_gradient_descent(W1, W2, X, Y, lr, ks)[0] for W1, W2 in inits])

    def sweep(method):
        return lambda: H.flowlin_grid_sweep(problem, grid, method, ts)

    return {
        "scipy": ("scipy solve_ivp RK45 loop", scipy_loop),
        "gd": (f"NumPy gradient descent (eta={lr:g})", gradient_descent),
        "full": ("flowlin.sweep(method=FullWeights())", sweep(flowlin.FullWeights())),
        "gram": ("flowlin.sweep(method=Gram())", sweep(flowlin.Gram())),
    }


def timed_rounds(calls: dict, rounds: int, echo) -> tuple[dict, dict]:
    """Compile flowlin's sweeps (their first call), then time every approach once per round,
    interleaved (scipy, GD, full, gram, scipy, ...), so that a change of load touches every
    approach alike. Returns the rows (best round's wall time, with that round's CPU time, and
    every round's wall time) and each approach's result."""
    from flowlin import _dataset as schema

    first = {}
    for key in ("full", "gram"):
        first[key], _ = H.timed(calls[key][1])
    best, walls, results = {}, {k: [] for k in calls}, {}
    for r in range(rounds):
        for key, (_, call) in calls.items():
            sw, results[key] = H.timed(call)
            walls[key].append(sw.wall)
            if key not in best or sw.wall < best[key].wall:
                best[key] = sw
        echo(
            f"  round {r + 1}/{rounds}: "
            + ", ".join(f"{k} {w[-1]:.3f} s" for k, w in walls.items())
        )
    rows = {}
    for key, (label, _) in calls.items():
        row = dict(method=label, key=key, run_s=best[key].wall, cpu_s=best[key].cpu,
                   rounds_s=walls[key], compile_s=0.0)  # fmt: skip
        if key in first:
            ds = results[key]
            row.update(
                compile_s=max(first[key].wall - best[key].wall, 0.0),
                compile_cpu_s=max(first[key].cpu - best[key].cpu, 0.0),
                mean_steps=float(ds[schema.NUM_STEPS].mean()),
                compiled_shapes=int(ds.attrs["compiled_shapes"]),
                max_steps_taken=int(ds[schema.NUM_STEPS].max()),
                all_succeeded=bool(ds[schema.SUCCEEDED].all()),
            )
        rows[key] = row
    return rows, results


def throughput(
    quick: bool = False, *, lr: float = H.GD_LR, rounds: int = 3, echo=print, grid=None
) -> dict:
    """configs/s of the four approaches on one grid (best of `rounds` interleaved rounds), and
    their largest disagreement."""
    import jax
    import numpy as np

    import flowlin

    grid = dict(grid or (H.THROUGHPUT_QUICK if quick else H.THROUGHPUT_GRID))
    problem = flowlin.problems.gaussian(jax.random.key(0), n=grid["n"], D=grid["D"], m=grid["m"])
    ts = np.linspace(0.0, grid["t1"], 21)
    configs = H.grid_configs(grid)
    n_cfg = len(configs)
    inits = [H.baseline_init(grid["D"], grid["m"], *c) for c in configs]
    load_before = H.load_average()
    echo(
        f"sweep throughput: {n_cfg} configurations (n={grid['n']} D={grid['D']} m={grid['m']}, "
        f"widths {list(grid['widths'])}, alphas {list(grid['alphas'])}, {grid['seeds']} seeds, "
        f"t1={grid['t1']}), float64, rtol {H.RTOL:g} atol {H.ATOL:g}"
    )
    by_key, results = timed_rounds(approaches(problem, inits, grid, ts, lr), rounds, echo)
    rows = list(by_key.values())
    products = {k: results[k] for k in ("scipy", "gd")}
    curves = {k: H.curves_from_products(problem, v) for k, v in products.items()}
    curves.update({k: H.curves_from_sweep(results[k], configs) for k in ("full", "gram")})
    ref_loss, ref_dist = curves["scipy"]
    t_scipy, cpu_scipy = rows[0]["run_s"], rows[0]["cpu_s"]
    for row in rows:
        loss, dist = curves[row["key"]]
        row["configs_per_s"] = n_cfg / row["run_s"]
        row["speedup_vs_scipy"] = t_scipy / row["run_s"]
        row["cpu_speedup_vs_scipy"] = cpu_scipy / row["cpu_s"]
        if row["key"] != "scipy":
            row["distance_vs_scipy"] = H.rel(dist, ref_dist)
            row["loss_vs_scipy"] = float(np.max(np.abs(loss - ref_loss) / ref_loss[:, :1]))
    disagreement = H.disagreement(curves, products["scipy"], products["gd"])
    tolerance = dict(ode=H.ODE_AGREEMENT, gd=H.GD_AGREEMENT_PER_LR * lr)
    echo("")
    H.print_table(
        rows,
        [
            ("method", "approach", ""),
            ("run_s", "time (s)", ".3f"),
            ("compile_s", "compile (s)", ".2f"),
            ("configs_per_s", "configs/s", ".1f"),
            ("speedup_vs_scipy", "vs scipy", ".1f"),
            ("cpu_s", "CPU (s)", ".3f"),
            ("cpu_speedup_vs_scipy", "vs scipy (CPU)", ".1f"),
            ("distance_vs_scipy", "max rel. diff distance", ".1e"),
            ("loss_vs_scipy", "max diff loss / L(0)", ".1e"),
        ],
        echo=echo,
    )
    echo(
        f"max disagreement: ODE solvers {disagreement['ode_distance']:.1e} (distance), "
        f"{disagreement['ode_loss']:.1e} (loss/L(0)), stated tolerance {tolerance['ode']:g}; "
        f"GD vs flow {disagreement['gd_distance']:.1e} (distance), tolerance "
        f"{tolerance['gd']:g} = {H.GD_AGREEMENT_PER_LR:g}·eta"
    )
    settings = dict(
        grid={k: list(v) if isinstance(v, tuple) else v for k, v in grid.items()},
        n_configs=n_cfg,
        init="paper: entries N(0, h^-2alpha), sweep key 0, seed s -> fold_in(key, s)",
        save_times=len(ts),
        rtol=H.RTOL,
        atol=H.ATOL,
        solver="scipy RK45 (RMS error norm) / flowlin Tsit5 (max norm)",
        gd_lr=lr,
        gd_time_mapping="t = eta k (loss 1/2 |R|^2)",
        dtype="float64",
        quick=quick,
        rounds=rounds,
        timing="the best of `rounds` interleaved rounds (scipy, GD, full, gram in each), with "
        "that round's CPU time; flowlin's first call (compile) before the rounds, reported "
        "separately",
    )
    for r in rows:
        r.pop("key")
    return H.record(
        "throughput",
        settings,
        rows,
        disagreement=disagreement,
        tolerance=tolerance,
        load_before=load_before,
        load_after=H.load_average(),
    )


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--lr", type=float, default=H.GD_LR, help="gradient-descent step")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    args = p.parse_args()
    H.enable_x64()
    H.finish(throughput(args.quick, lr=args.lr, rounds=args.rounds), args.out, "sweep_throughput")
