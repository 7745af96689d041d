"""Benchmarks against the baselines a researcher would otherwise use (performance.md).

Everything `flowlin bench` and the scripts in `benchmarks/` run lives here, so that an
installed flowlin can run them without a source checkout. Each benchmark returns a JSON-able
dict with the machine it ran on (`machine()`), its settings and its rows, prints a table, and
`write_json` stores it. Timings never enter tests; the disagreement between methods does.

- `throughput`: the performance.md grid (48 configurations) solved by a scipy `solve_ivp`
  loop, by plain NumPy gradient descent (the papers' method), and by `flowlin.sweep` with the
  full and the gram solver.
- `width_scaling`: time per trajectory against the hidden width.
- `fig1`: the cost of ICML Fig. 1 with flowlin against the papers' gradient descent.
- `compile_times`: first-call compile time of each entry point, each in a fresh process.
- `gpu_sweep`: the throughput grid at 10⁴–10⁶ configurations (gram, float32 and float64).
"""

import datetime
import json
import math
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable


# --------------------------------------------------------------------------------------------
# Machine record, timing and output helpers
# --------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict:
    import importlib.metadata

    out = {}
    for pkg in ("flowlin", "jax", "jaxlib", "diffrax", "equinox", "optax", "numpy", "scipy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def load_average() -> list | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def peak_memory() -> dict:
    """Peak resident memory of this process (MiB) and, on an accelerator, the device's peak."""
    import jax

    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {"host_peak_rss_mib": rss_kib / 1024}
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        try:
            stats = dev.memory_stats() or {}
        except Exception:  # noqa: BLE001 - a backend without memory statistics
            stats = {}
        if "peak_bytes_in_use" in stats:
            out["device_peak_mib"] = stats["peak_bytes_in_use"] / 2**20
    return out


def machine() -> dict:
    """The machine a benchmark ran on: CPU model, cores, GPU, JAX backend, versions, load."""
    import jax

    devices = jax.devices()
    gpus = [d.device_kind for d in devices if d.platform == "gpu"]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return dict(
        cpu=_cpu_model(),
        cores=os.cpu_count(),
        usable_cores=usable,
        gpu=gpus[0] if gpus else None,
        backend=jax.default_backend(),
        devices=[str(d) for d in devices],
        platform=platform.platform(),
        python=platform.python_version(),
        versions=_versions(),
        x64=bool(jax.config.jax_enable_x64),
        load_average=load_average(),
        blas_threads={
            k: os.environ.get(k)
            for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        },
    )


def write_json(record: dict, out_dir, name: str) -> pathlib.Path:
    """Write `record` to `out_dir/<name>-<UTC time>.json` (and `<name>-latest.json`)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{name}-{stamp}.json"
    text = json.dumps(record, indent=1, default=_json_default)
    path.write_text(text)
    (out_dir / f"{name}-latest.json").write_text(text)
    return path


def _json_default(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _record(name: str, settings: dict, rows: list, **extra) -> dict:
    return dict(
        benchmark=name,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        machine=machine(),
        settings=settings,
        rows=rows,
        memory=peak_memory(),
        **extra,
    )


def _print_table(rows: list[dict], columns: list[tuple[str, str, str]], echo=print) -> None:
    """Print `rows` with `columns` = [(key, header, format)], missing values blank."""
    cells = []
    for r in rows:
        line = []
        for key, _, fmt in columns:
            v = r.get(key)
            line.append("" if v is None else format(v, fmt))
        cells.append(line)
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _) in enumerate(columns)]
    echo(" | ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths)))
    echo("-+-".join("-" * w for w in widths))
    for line in cells:
        echo(" | ".join(c.rjust(w) for c, w in zip(line, widths)))


def _enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


class Stopwatch:
    """Wall-clock and process CPU seconds of a `with` block.

    The CPU time (all threads of this process) is what the same work costs on an otherwise
    idle machine when it runs on one thread; on a shared machine the wall time also counts the
    waits for a core. Both are recorded.
    """

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _timed(fn: Callable):
    """(Stopwatch, result) of one call, waiting for JAX results."""
    import jax

    with Stopwatch() as sw:
        out = jax.block_until_ready(fn())
    return sw, out


# --------------------------------------------------------------------------------------------
# The baselines: what a NumPy user writes
# --------------------------------------------------------------------------------------------
def numpy_flow_scipy(W1, W2, X, Y, t1, ts, rtol, atol):
    """Gradient flow with `scipy.integrate.solve_ivp` (RK45) on the unpadded weights.

    The right-hand side is vectorized NumPy, computing the product first ($m\\times D$), which
    is the cheap order: $\\dot W_1 = W_2^\\top G$, $\\dot W_2 = G W_1^\\top$, $G = R^\\top X$,
    $R = Y - X (W_2W_1)^\\top$. Returns the products $W_2W_1$ at `ts` (times × m × D) and the
    number of right-hand-side evaluations.
    """
    import numpy as np
    from scipy.integrate import solve_ivp

    h, D = W1.shape
    m = W2.shape[0]

    def rhs(t, y):
        A = y[: h * D].reshape(h, D)
        B = y[h * D :].reshape(m, h)
        G = (Y - X @ (B @ A).T).T @ X
        return np.concatenate([(B.T @ G).ravel(), (G @ A.T).ravel()])

    y0 = np.concatenate([W1.ravel(), W2.ravel()])
    sol = solve_ivp(rhs, (0.0, t1), y0, method="RK45", t_eval=ts, rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    ys = sol.y.T
    products = np.stack([y[h * D :].reshape(m, h) @ y[: h * D].reshape(h, D) for y in ys])
    return products, sol.nfev


def numpy_gradient_descent(W1, W2, X, Y, lr, save_iterations, *, averaged=False, stop=None):
    """Plain gradient descent in NumPy, the papers' procedure.

    Loss $\\tfrac12\\|R\\|^2$ (flow time $t = \\eta k$), or with `averaged` the papers'
    $\\tfrac1n\\|R\\|^2$ (flow time $t = 2\\eta k/n$). Saves the product $W_2W_1$ at the given
    iterations; with `stop`, stops at the first iterate whose (averaged or ½‖R‖²) loss is
    ≤ `stop` (then `save_iterations` is ignored). Returns (products, iterations done).
    """
    import numpy as np

    W1, W2 = W1.copy(), W2.copy()
    n = X.shape[0]
    step = lr * (2.0 / n if averaged else 1.0)
    loss_scale = (1.0 / n) if averaged else 0.5
    save = sorted(set(int(k) for k in save_iterations))
    last = save[-1] if stop is None else np.iinfo(np.int64).max
    saved = []
    k = 0
    while True:
        W = W2 @ W1
        R = Y - X @ W.T
        if save and k == save[0]:
            saved.append(W)
            save.pop(0)
        if stop is not None and loss_scale * float(np.sum(R * R)) <= stop:
            saved.append(W)
            break
        if k >= last:
            break
        G = R.T @ X  # m × D, the negative gradient direction of ½‖R‖² is W2ᵀG, G W1ᵀ
        gW2 = G @ W1.T
        W1 += step * (W2.T @ G)
        W2 += step * gW2
        k += 1
    return np.stack(saved), k


# --------------------------------------------------------------------------------------------
# Sweep throughput: the performance.md grid
# --------------------------------------------------------------------------------------------
THROUGHPUT_GRID = dict(
    n=10, D=40, m=2, widths=(10, 30, 100, 300), alphas=(0.25, 0.5, 0.75), seeds=4, t1=20.0
)
#: One width bucket (20 <= 2·10: one compiled shape per method), 4 configurations.
THROUGHPUT_QUICK = dict(n=10, D=40, m=2, widths=(10, 20), alphas=(0.5,), seeds=2, t1=5.0)
RTOL, ATOL = 1e-6, 1e-9
#: Gradient descent step of the throughput benchmark (t = ηk): the flow is matched to O(η).
GD_LR = 1e-3
#: Stated agreement: the three ODE solvers (same rtol 1e-6/atol 1e-9) agree to ODE_AGREEMENT
#: (relative, on the distance to the min-norm solution and the end-to-end product at every
#: saved time); gradient descent matches the flow to GD_AGREEMENT_PER_LR · η.
ODE_AGREEMENT = 1e-4
GD_AGREEMENT_PER_LR = 10.0


def _throughput_problem(grid):
    import jax

    import flowlin

    return flowlin.problems.gaussian(jax.random.key(0), n=grid["n"], D=grid["D"], m=grid["m"])


def _configs(grid):
    return [(h, a, s) for h in grid["widths"] for a in grid["alphas"] for s in range(grid["seeds"])]


def _baseline_init(D, m, h, alpha, seed, key=0):
    """The unpadded weights `flowlin.sweep(..., init="paper", key=key)` uses for (h, α, seed)."""
    import jax
    import numpy as np

    import flowlin

    std = float(h) ** (-alpha)
    net = flowlin.init.gaussian(jax.random.fold_in(jax.random.key(key), seed), D, m, h, std, std)
    return np.asarray(net.W1), np.asarray(net.W2)


def _rel(a, b):
    import numpy as np

    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def _rel_frobenius(a, b):
    """Largest ‖a − b‖_F / ‖b‖_F over the leading (configuration, time) axes."""
    import numpy as np

    num = np.sqrt(np.sum((a - b) ** 2, axis=(-2, -1)))
    return float(np.max(num / np.sqrt(np.sum(b**2, axis=(-2, -1)))))


def throughput(quick: bool = False, *, lr: float = GD_LR, echo=print, grid=None) -> dict:
    """configs/s of the four approaches on one grid, and their largest disagreement."""
    import numpy as np

    import flowlin

    grid = dict(grid or (THROUGHPUT_QUICK if quick else THROUGHPUT_GRID))
    problem = _throughput_problem(grid)
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    Wstar = np.asarray(problem.min_norm)
    t1 = grid["t1"]
    ts = np.linspace(0.0, t1, 21)
    configs = _configs(grid)
    n_cfg = len(configs)
    inits = [_baseline_init(grid["D"], grid["m"], *c) for c in configs]
    load_before = load_average()
    echo(
        f"sweep throughput: {n_cfg} configurations (n={grid['n']} D={grid['D']} m={grid['m']}, "
        f"widths {list(grid['widths'])}, alphas {list(grid['alphas'])}, {grid['seeds']} seeds, "
        f"t1={t1}), float64, rtol {RTOL:g} atol {ATOL:g}"
    )

    # Products W2 W1 at the saved times, per approach: (configs, times, m, D).
    products: dict[str, np.ndarray] = {}
    rows = []

    # (a) scipy solve_ivp loop
    out, nfev = [], 0
    with Stopwatch() as sw:
        for W1, W2 in inits:
            p, f = numpy_flow_scipy(W1, W2, X, Y, t1, ts, RTOL, ATOL)
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

    # (b) plain gradient descent in NumPy, t = ηk
    ks = np.rint(ts / lr).astype(np.int64)
    with Stopwatch() as sw:
        out = [numpy_gradient_descent(W1, W2, X, Y, lr, ks)[0] for W1, W2 in inits]
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

    # (c), (d) flowlin.sweep, full and gram
    for method in ("full", "gram"):

        def call(method=method):
            return flowlin.sweep(
                problem,
                widths=list(grid["widths"]),
                scales=list(grid["alphas"]),
                seeds=grid["seeds"],
                method=method,
                t1=t1,
                saveat=flowlin.SaveAt(ts, diagnostics=("loss", "distance_to_min_norm")),
                rtol=RTOL,
                atol=ATOL,
                theory=False,
                bounds=False,
                progress=False,
            )

        first, _ = _timed(call)
        run, ds = _timed(call)
        # The sweep reports distances and losses, not products; compare those below.
        products[method] = ds
        rows.append(
            dict(
                method=f"flowlin.sweep(method={method!r})",
                key=method,
                run_s=run.wall,
                cpu_s=run.cpu,
                compile_s=max(first.wall - run.wall, 0.0),
                compile_cpu_s=max(first.cpu - run.cpu, 0.0),
                mean_steps=float(ds["num_steps"].mean()),
                compiled_shapes=int(ds.attrs["compiled_shapes"]),
                max_steps_taken=int(ds["num_steps"].max()),
                all_succeeded=bool(ds["succeeded"].all()),
            )
        )
        echo(
            f"  flowlin {method}: {run.wall:.3f} s, CPU {run.cpu:.3f} s (compile "
            f"{first.wall - run.wall:.1f} s, CPU {first.cpu - run.cpu:.1f} s)"
        )

    # Distances and losses of every approach over (config, time).
    def from_products(P):
        R = Y[None, None] - np.einsum("nd,ktmd->ktnm", X, P)
        loss = 0.5 * np.sum(R**2, axis=(-2, -1))
        dist = np.sqrt(np.sum((P - Wstar) ** 2, axis=(-2, -1)))
        return loss, dist

    def from_dataset(ds):
        loss = np.stack([ds["loss"].sel(width=h, scale=a, seed=s).values for h, a, s in configs])
        dist = np.stack(
            [ds["distance_to_min_norm"].sel(width=h, scale=a, seed=s).values for h, a, s in configs]
        )
        return loss, dist

    curves = {
        k: (from_products(v) if isinstance(v, np.ndarray) else from_dataset(v))
        for k, v in products.items()
    }
    ref_loss, ref_dist = curves["scipy"]
    t_scipy, cpu_scipy = rows[0]["run_s"], rows[0]["cpu_s"]
    loss0 = ref_loss[:, :1]
    for row in rows:
        loss, dist = curves[row["key"]]
        row["configs_per_s"] = n_cfg / row["run_s"]
        row["speedup_vs_scipy"] = t_scipy / row["run_s"]
        row["cpu_speedup_vs_scipy"] = cpu_scipy / row["cpu_s"]
        if row["key"] != "scipy":
            row["distance_vs_scipy"] = _rel(dist, ref_dist)
            row["loss_vs_scipy"] = float(np.max(np.abs(loss - ref_loss) / loss0))
    gram_loss, gram_dist = curves["gram"]
    full_loss, full_dist = curves["full"]
    disagreement = dict(
        ode_distance=max(
            _rel(full_dist, ref_dist), _rel(gram_dist, ref_dist), _rel(gram_dist, full_dist)
        ),
        ode_loss=float(
            max(
                np.max(np.abs(full_loss - ref_loss) / loss0),
                np.max(np.abs(gram_loss - ref_loss) / loss0),
                np.max(np.abs(gram_loss - full_loss) / loss0),
            )
        ),
        gd_distance=_rel(curves["gd"][1], ref_dist),
        gd_loss=float(np.max(np.abs(curves["gd"][0] - ref_loss) / loss0)),
        gd_products=_rel_frobenius(products["gd"], products["scipy"]),
    )
    tolerance = dict(ode=ODE_AGREEMENT, gd=GD_AGREEMENT_PER_LR * lr)
    echo("")
    _print_table(
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
        f"{tolerance['gd']:g} = {GD_AGREEMENT_PER_LR:g}·eta"
    )
    settings = dict(
        grid={k: list(v) if isinstance(v, tuple) else v for k, v in grid.items()},
        n_configs=n_cfg,
        init="paper: entries N(0, h^-2alpha), sweep key 0, seed s -> fold_in(key, s)",
        save_times=len(ts),
        rtol=RTOL,
        atol=ATOL,
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
    return _record(
        "throughput",
        settings,
        rows,
        disagreement=disagreement,
        tolerance=tolerance,
        load_before=load_before,
        load_after=load_average(),
    )


# --------------------------------------------------------------------------------------------
# Width scaling
# --------------------------------------------------------------------------------------------
#: Repeat a timed call at least `repeats` times and until this much time has been spent (or
#: MAX_REPEATS calls): the minimum of many short runs is robust to other load on the machine.
MIN_TIMING_SECONDS = 3.0
MAX_REPEATS = 100


def _timed_repeats(fn, repeats: int):
    """(compile seconds, min run seconds over repeats, result) of a compiled call."""
    first, out = _timed(fn)
    runs = []
    while len(runs) < repeats or (sum(runs) < MIN_TIMING_SECONDS and len(runs) < MAX_REPEATS):
        run, out = _timed(fn)
        runs.append(run.wall)
    run = min(runs)
    return max(first.wall - run, 0.0), run, out


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
    from functools import partial

    import diffrax as dfx
    import jax
    import jax.numpy as jnp

    import flowlin

    n, D, m, t1 = 10, 40, 2, 20.0
    if quick:
        max_full = max_gram = max_wishart = 1e3
    tolerances = dict(solver=dfx.Tsit5(), rtol=RTOL, atol=ATOL)
    saves = flowlin.SaveAt(
        ts=jnp.linspace(0.0, t1, 21), diagnostics=("excess_loss", "distance_to_min_norm")
    )
    widths = [10**p for p in range(1, 10)]
    problem = flowlin.problems.gaussian(jax.random.key(0), n=n, D=D, m=m)
    key = jax.random.key(1)
    full_solve = jax.jit(
        lambda net: flowlin.gradient_flow(
            net, problem, t1, saveat=saves, method="full", **tolerances
        )
    )
    gram_solve = jax.jit(
        lambda net: flowlin.gradient_flow(
            net, problem, t1, saveat=saves, method="gram", **tolerances
        )
    )

    @jax.jit
    def wishart_solve(key, h):
        std = 1.0 / jnp.sqrt(h)
        init = flowlin.init.wishart(key, problem, h, std, std)
        return flowlin.gradient_flow(init, problem, t1, saveat=saves, method="gram", **tolerances)

    load_before = load_average()
    rows = []
    echo(f"problem n={n} D={D} m={m} (r={problem.rank}), NTK init, t1={t1}, Tsit5 rtol 1e-6")
    for h in widths:
        net = None
        if h <= max(max_full, max_gram):
            net = jax.block_until_ready(flowlin.init.paper(key, D, m, h, 0.5))
        results = {}
        if h <= max_full:
            results["full"] = _timed_repeats(partial(full_solve, net), repeats if h < 1e5 else 2)
        if h <= max_gram:
            results["gram"] = _timed_repeats(partial(gram_solve, net), repeats)
        if h <= max_wishart:
            h_arr = jnp.asarray(float(h))
            results["wishart"] = _timed_repeats(partial(wishart_solve, key, h_arr), repeats)
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
            echo(
                f"  h={h:.0e} {method:>7}: compile {compile_s:.2f} s, run {1e3 * run_s:.2f} ms, "
                f"{row['num_steps']} steps"
            )
        net = None  # free the width-h weights before the next width
    echo("")
    _print_table(
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
        rtol=RTOL,
        atol=ATOL,
        init="NTK (std = h^-1/2)",
        repeats=repeats,
        max_full=max_full,
        max_gram=max_gram,
        max_wishart=max_wishart,
        quick=quick,
    )
    return _record(
        "width_scaling", settings, rows, load_before=load_before, load_after=load_average()
    )


# --------------------------------------------------------------------------------------------
# ICML Fig. 1 reproduction cost
# --------------------------------------------------------------------------------------------
FIG1 = dict(n=100, D=400, m=1, alpha=0.5, widths=(500, 1000, 2000, 5000, 10000), seeds=5)
FIG1_QUICK = dict(n=20, D=80, m=1, alpha=0.5, widths=(50, 100), seeds=2)
FIG1_LR = 5e-3
FIG1_STOP = 1e-8  # on the averaged loss (1/n)‖R‖²


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
    import numpy as np

    import flowlin

    cfg = dict(FIG1_QUICK if quick else FIG1)
    n, D, m, alpha = cfg["n"], cfg["D"], cfg["m"], cfg["alpha"]
    widths, seeds = list(cfg["widths"]), cfg["seeds"]
    if quick:
        gd_full_max_width, gd_full_seeds = max(widths), seeds
    problem = flowlin.problems.gaussian(jax.random.key(0), n=n, D=D, m=m)
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    Wstar = np.asarray(problem.min_norm)
    # Averaged loss (1/n)‖R‖² ≤ 1e-8  ⇔  ½‖R‖² ≤ n·1e-8/2 (L* = 0 here, r = n).
    stop_excess = FIG1_STOP * n / 2
    t1 = 1000.0
    load_before = load_average()
    echo(
        f"ICML Fig. 1 cost: n={n} D={D} m={m} alpha={alpha}, widths {widths}, {seeds} seeds; "
        f"GD eta={FIG1_LR:g} until averaged loss <= {FIG1_STOP:g}"
    )

    def call():
        return flowlin.sweep(
            problem,
            widths=widths,
            scales=[alpha],
            seeds=seeds,
            method="gram",
            t1=t1,
            stop_at_loss=stop_excess,
            theory=True,
            bounds=True,
            progress=False,
        )

    first_sw, _ = _timed(call)
    warm_sw, ds = _timed(call)
    first, warm = first_sw.wall, warm_sw.wall
    compile_s = max(first - warm, 0.0)
    echo(
        f"  flowlin sweep (gram): first call {first:.2f} s (CPU {first_sw.cpu:.2f} s), "
        f"second {warm:.2f} s (CPU {warm_sw.cpu:.2f} s)"
    )

    rows = []
    gd_total = gd_cpu = 0.0
    checks = []
    for h in widths:
        # Per-iteration cost at this width (one seed).
        W1, W2 = _baseline_init(D, m, h, alpha, 0)
        probe_ks = [gd_probe_iterations]
        with Stopwatch() as probe:
            numpy_gradient_descent(W1, W2, X, Y, FIG1_LR, probe_ks, averaged=True)
        per_iter = probe.wall / gd_probe_iterations
        per_iter_cpu = probe.cpu / gd_probe_iterations
        width_cpu = 0.0
        width_total, measured, extrapolated = 0.0, 0, 0
        for s in range(seeds):
            t_stop = float(ds["final_time"].sel(width=h, scale=alpha, seed=s))
            k_pred = math.ceil(t_stop * n / (2 * FIG1_LR))
            if h <= gd_full_max_width and s < gd_full_seeds:
                W1, W2 = _baseline_init(D, m, h, alpha, s)
                with Stopwatch() as run_sw:
                    P, k = numpy_gradient_descent(
                        W1, W2, X, Y, FIG1_LR, [], averaged=True, stop=FIG1_STOP
                    )
                spent = run_sw.wall
                width_cpu += run_sw.cpu
                dist_gd = float(np.linalg.norm(P[-1] - Wstar))
                dist_flow = float(
                    ds["final_distance_to_min_norm"].sel(width=h, scale=alpha, seed=s)
                )
                checks.append(
                    dict(
                        width=h,
                        seed=s,
                        gd_iterations=k,
                        predicted_iterations=k_pred,
                        gd_seconds=spent,
                        gd_distance=dist_gd,
                        flow_distance=dist_flow,
                        distance_rel_diff=abs(dist_gd - dist_flow) / dist_flow,
                    )
                )
                width_total += spent
                measured += 1
            else:
                width_total += k_pred * per_iter
                width_cpu += k_pred * per_iter_cpu
                extrapolated += 1
        gd_total += width_total
        gd_cpu += width_cpu
        rows.append(
            dict(
                width=h,
                gd_seconds_per_iteration=per_iter,
                mean_iterations_to_stop=float(
                    np.mean(
                        [
                            math.ceil(
                                float(ds["final_time"].sel(width=h, scale=alpha, seed=s))
                                * n
                                / (2 * FIG1_LR)
                            )
                            for s in range(seeds)
                        ]
                    )
                ),
                gd_seconds=width_total,
                gd_cpu_seconds=width_cpu,
                gd_runs_measured=measured,
                gd_runs_extrapolated=extrapolated,
                mean_distance=float(ds["final_distance_to_min_norm"].sel(width=h).mean()),
            )
        )
        echo(
            f"  GD h={h}: {1e3 * per_iter:.3f} ms/iteration, {width_total:.1f} s for {seeds} seeds "
            f"({measured} run, {extrapolated} extrapolated)"
        )
    echo("")
    _print_table(
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
        all_succeeded=bool(ds["succeeded"].all()),
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
        flowlin_call="flowlin.sweep(method='gram', stop_at_loss, theory=True, bounds=True), the "
        "computation behind `flowlin reproduce fig1`, timed directly",
        quick=quick,
    )
    return _record(
        "fig1",
        settings,
        rows,
        summary=summary,
        gd_checks=checks,
        load_before=load_before,
        load_after=load_average(),
    )


# --------------------------------------------------------------------------------------------
# Compile time of each entry point, each in a fresh process
# --------------------------------------------------------------------------------------------
_COMPILE_SCRIPT = r"""
import json, sys, time
t0 = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import flowlin
t_import = time.perf_counter() - t0
entry = sys.argv[1]
problem = flowlin.problems.gaussian(jax.random.key(0), n=10, D=40, m=2)
net = flowlin.init.paper(jax.random.key(1), 40, 2, 100, 0.5)
jax.block_until_ready((problem, net))
ts = jnp.linspace(0.0, 20.0, 21)
if entry == "gradient_flow_full":
    f = lambda: flowlin.gradient_flow(net, problem, 20.0, saveat=ts, method="full")
elif entry == "gradient_flow_gram":
    f = lambda: flowlin.gradient_flow(net, problem, 20.0, saveat=ts, method="gram")
elif entry == "gradient_descent":
    f = lambda: flowlin.gradient_descent(net, problem, 0.01, 2000, saveat=ts)
elif entry == "sweep":
    f = lambda: flowlin.sweep(problem, widths=[50, 100], scales=[0.5], seeds=2, t1=20.0,
                              progress=False)
elif entry == "check_bounds":
    traj = jax.block_until_ready(flowlin.gradient_flow(net, problem, 20.0, saveat=ts))
    f = lambda: flowlin.check_bounds(traj, net, problem, width=100, alpha=0.5)
else:
    raise SystemExit(f"unknown entry point {entry}")
def timed():
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(f())
    return time.perf_counter() - t0, time.process_time() - c0
first, first_cpu = timed()
second, second_cpu = timed()
import resource
print(json.dumps(dict(import_s=t_import, first_s=first, second_s=second, first_cpu_s=first_cpu,
                      second_cpu_s=second_cpu,
                      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""

COMPILE_ENTRY_POINTS = (
    "gradient_flow_full",
    "gradient_flow_gram",
    "gradient_descent",
    "check_bounds",
    "sweep",
)
COMPILE_TARGET_S = 5.0


def compile_times(quick: bool = False, *, echo=print, entries=None) -> dict:
    """First-call time minus second-call time of each entry point, in a fresh process each."""
    entries = list(entries or (COMPILE_ENTRY_POINTS[:2] if quick else COMPILE_ENTRY_POINTS))
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    load_before = load_average()
    rows = []
    echo("compile time of the first call, each entry point in a fresh process (float64, CPU)")
    for entry in entries:
        proc = subprocess.run(
            [sys.executable, "-c", _COMPILE_SCRIPT, entry],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"compile benchmark of {entry} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        row = dict(
            entry_point=entry,
            import_s=r["import_s"],
            first_call_s=r["first_s"],
            run_s=r["second_s"],
            compile_s=max(r["first_s"] - r["second_s"], 0.0),
            compile_cpu_s=max(r["first_cpu_s"] - r["second_cpu_s"], 0.0),
            peak_rss_mib=r["peak_rss_mib"],
            load=load_average()[0] if load_average() else None,
        )
        rows.append(row)
        echo(f"  {entry}: first call {row['first_call_s']:.2f} s, then {row['run_s']:.4f} s")
    echo("")
    _print_table(
        rows,
        [
            ("entry_point", "entry point", ""),
            ("import_s", "import flowlin (s)", ".2f"),
            ("first_call_s", "first call (s)", ".2f"),
            ("run_s", "second call (s)", ".4f"),
            ("compile_s", "compile (s)", ".2f"),
            ("compile_cpu_s", "compile CPU (s)", ".2f"),
            ("peak_rss_mib", "peak RSS (MiB)", ".0f"),
            ("load", "load", ".1f"),
        ],
        echo=echo,
    )
    settings = dict(
        problem="gaussian n=10 D=40 m=2, paper init h=100 alpha=0.5, t1=20, 21 saves, defaults",
        entries=entries,
        target_first_gradient_flow_s=COMPILE_TARGET_S,
        quick=quick,
    )
    return _record(
        "compile_time", settings, rows, load_before=load_before, load_after=load_average()
    )


# --------------------------------------------------------------------------------------------
# GPU: the throughput grid at 10⁴–10⁶ configurations
# --------------------------------------------------------------------------------------------
def gpu_sweep(
    sizes=(10_000, 100_000, 1_000_000),
    *,
    time_cap: float = 300.0,
    dtypes=("float32", "float64"),
    chunk_size: int = 16384,
    echo=print,
) -> dict:
    """configs/s and memory peak of `flowlin.sweep(method="gram")` at growing sizes.

    The grid is the throughput grid's (widths 10–300, 3 scales) with as many seeds as make up
    each size. A size is skipped when the throughput measured at the previous size predicts it
    would exceed what is left of `time_cap` seconds (per dtype).
    """
    import jax
    import numpy as np

    import flowlin

    grid = THROUGHPUT_GRID
    per_seed = len(grid["widths"]) * len(grid["alphas"])
    on_cpu = jax.default_backend() == "cpu"
    load_before = load_average()
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
        rtol, atol = (RTOL, ATOL) if dtype == "float64" else (1e-5, 1e-7)
        spent = 0.0
        rate = None
        for size in sizes:
            seeds = max(1, -(-int(size) // per_seed))
            n_cfg = seeds * per_seed
            if rate is not None and n_cfg / rate > time_cap - spent:
                echo(f"  {dtype} {n_cfg}: skipped (predicted {n_cfg / rate:.0f} s > time left)")
                rows.append(dict(dtype=dtype, configs=n_cfg, skipped=True))
                continue

            def call(seeds=seeds, problem=problem, rtol=rtol, atol=atol):
                return flowlin.sweep(
                    problem,
                    widths=list(grid["widths"]),
                    scales=list(grid["alphas"]),
                    seeds=seeds,
                    method="gram",
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

            first_sw, ds = _timed(call)
            first = first_sw.wall
            # Compile happens at the first chunk shapes; a second call gives the warm rate
            # (skipped when the first one already used most of the time cap).
            warm = None
            if first < (time_cap - spent) / 3:
                warm_sw, ds = _timed(call)
                warm = warm_sw.wall
            spent += first + (warm or 0.0)
            run = warm if warm is not None else first
            rate = n_cfg / run
            row = dict(
                dtype=dtype,
                configs=n_cfg,
                first_call_s=first,
                run_s=run,
                warm=warm is not None,
                configs_per_s=rate,
                compiled_shapes=int(ds.attrs["compiled_shapes"]),
                succeeded_fraction=float(ds["succeeded"].mean()),
                median_distance=float(np.nanmedian(ds["final_distance_to_min_norm"].values)),
                rtol=rtol,
                atol=atol,
                **peak_memory(),
            )
            rows.append(row)
            echo(f"  {dtype} {n_cfg}: {run:.2f} s ({rate:.0f} configs/s), first call {first:.2f} s")
            del ds
    echo("")
    _print_table(
        rows,
        [
            ("dtype", "dtype", ""),
            ("configs", "configs", "d"),
            ("first_call_s", "first call (s)", ".2f"),
            ("run_s", "timed (s)", ".2f"),
            ("configs_per_s", "configs/s", ".0f"),
            ("succeeded_fraction", "succeeded", ".3f"),
            ("device_peak_mib", "device peak (MiB)", ".0f"),
            ("host_peak_rss_mib", "host peak RSS (MiB)", ".0f"),
        ],
        echo=echo,
    )
    settings = dict(
        grid={k: list(v) if isinstance(v, tuple) else v for k, v in grid.items()},
        sizes=list(sizes),
        time_cap_s=time_cap,
        dtypes=list(dtypes),
        chunk_size=chunk_size,
        method="gram",
        sampling="weights",
        on_cpu=on_cpu,
        timing="second call when the first left time (compile excluded), else the first call",
    )
    return _record("gpu_sweep", settings, rows, load_before=load_before, load_after=load_average())


# --------------------------------------------------------------------------------------------
# `flowlin bench`
# --------------------------------------------------------------------------------------------
BENCHMARKS = {
    "throughput": throughput,
    "width": width_scaling,
    "fig1": fig1,
    "compile": compile_times,
}
JSON_NAMES = {
    "throughput": "sweep_throughput",
    "width": "width_scaling",
    "fig1": "fig1_cost",
    "compile": "compile_time",
}


def run(which: str, quick: bool, out_dir, echo=print) -> list[pathlib.Path]:
    """Run one benchmark (or `"all"`), print its table, write its JSON; the paths written."""
    if which != "all" and which not in BENCHMARKS:
        raise ValueError(
            f"`flowlin bench`: benchmark must be one of {sorted(BENCHMARKS)} or 'all', "
            f"got {which!r}"
        )
    _enable_x64()
    names = list(BENCHMARKS) if which == "all" else [which]
    paths = []
    for name in names:
        record = BENCHMARKS[name](quick, echo=echo)
        path = write_json(record, out_dir, JSON_NAMES[name])
        echo(
            f"machine: {record['machine']['cpu']} ({record['machine']['cores']} cores), "
            f"gpu {record['machine']['gpu']}, load {record['machine']['load_average']}"
        )
        echo(f"wrote {path}\n")
        paths.append(path)
    return paths
