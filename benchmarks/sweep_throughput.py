"""Sweep throughput: the 48-configuration grid of benchmarks/README.md by scipy, NumPy GD,
flowlin full and gram.

48 configurations (n = 10, D = 40, m = 2; widths 10, 30, 100, 300; α = 0.25, 0.5, 0.75 of the
paper init N(0, h^-2α); 4 seeds; t1 = 20; float64; rtol 1e-6, atol 1e-9) solved by

  (a) a `scipy.integrate.solve_ivp` (RK45) loop over the configurations, unpadded weights;
  (b) plain gradient descent in NumPy, η = 1e-3, iteration k ↔ flow time t = ηk;
  (c) `flowlin.sweep(method=flowlin.FullWeights())`;  (d) `flowlin.sweep(method=flowlin.Gram())`.

Reports configs/s, the ratio to (a), compile time (flowlin: first call minus the timed second
call) and the largest disagreement between the approaches over 21 save times (that they agree
to the stated tolerance is asserted by tests/test_baselines.py, not here).

    python benchmarks/sweep_throughput.py [--quick] [--lr 1e-3] [--out DIR]
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


def run_baselines(problem, inits, grid, ts, lr, echo):
    """(a) the scipy loop and (b) NumPy gradient descent: their products and table rows."""
    import numpy as np

    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    products, rows = {}, []
    out, nfev = [], 0
    with H.Stopwatch() as sw:
        for W1, W2 in inits:
            p, f = H.numpy_flow_scipy(W1, W2, X, Y, grid["t1"], ts, H.RTOL, H.ATOL)
            out.append(p)
            nfev += f
    products["scipy"] = np.stack(out)
    rows.append(
        dict(
            method="scipy solve_ivp RK45 loop",
            key="scipy",
            run_s=sw.wall,
            cpu_s=sw.cpu,
            compile_s=0.0,
        )
    )
    echo(f"  scipy: {sw.wall:.2f} s, CPU {sw.cpu:.2f} s ({nfev} rhs evaluations)")

    ks = np.rint(ts / lr).astype(np.int64)
    with H.Stopwatch() as sw:
        out = [H.numpy_gradient_descent(W1, W2, X, Y, lr, ks)[0] for W1, W2 in inits]
    products["gd"] = np.stack(out)
    rows.append(
        dict(
            method=f"NumPy gradient descent (eta={lr:g})",
            key="gd",
            run_s=sw.wall,
            cpu_s=sw.cpu,
            compile_s=0.0,
        )
    )
    echo(
        f"  numpy GD: {sw.wall:.2f} s, CPU {sw.cpu:.2f} s ({int(ks[-1])} iterations per "
        "configuration)"
    )
    return products, rows


def run_flowlin(problem, grid, ts, echo):
    """(c), (d) `flowlin.sweep` with the full and the gram method: datasets and table rows."""
    import flowlin
    from flowlin import _dataset as schema

    datasets, rows = {}, []
    for key, method in (("full", flowlin.FullWeights()), ("gram", flowlin.Gram())):

        def call(method=method):
            return H.flowlin_grid_sweep(problem, grid, method, ts)

        first, _ = H.timed(call)
        run, ds = H.timed(call)
        datasets[key] = ds
        rows.append(
            dict(
                method=f"flowlin.sweep(method={type(method).__name__}())",
                key=key,
                run_s=run.wall,
                cpu_s=run.cpu,
                compile_s=max(first.wall - run.wall, 0.0),
                compile_cpu_s=max(first.cpu - run.cpu, 0.0),
                mean_steps=float(ds[schema.NUM_STEPS].mean()),
                compiled_shapes=int(ds.attrs["compiled_shapes"]),
                max_steps_taken=int(ds[schema.NUM_STEPS].max()),
                all_succeeded=bool(ds[schema.SUCCEEDED].all()),
            )
        )
        echo(
            f"  flowlin {key}: {run.wall:.3f} s, CPU {run.cpu:.3f} s (compile "
            f"{first.wall - run.wall:.1f} s, CPU {first.cpu - run.cpu:.1f} s)"
        )
    return datasets, rows


def throughput(quick: bool = False, *, lr: float = H.GD_LR, echo=print, grid=None) -> dict:
    """configs/s of the four approaches on one grid, and their largest disagreement."""
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
    products, rows = run_baselines(problem, inits, grid, ts, lr, echo)
    datasets, flowlin_rows = run_flowlin(problem, grid, ts, echo)
    rows += flowlin_rows

    curves = {k: H.curves_from_products(problem, v) for k, v in products.items()}
    curves.update({k: H.curves_from_sweep(v, configs) for k, v in datasets.items()})
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
        timing="flowlin: second call (compile excluded, reported separately); numpy/scipy: one "
        "pass",
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
    args = p.parse_args()
    H.enable_x64()
    H.finish(throughput(args.quick, lr=args.lr), args.out, "sweep_throughput")
