"""What the benchmark scripts share: the machine record, timing, JSON and tables, the baselines.

Not part of the library (nothing here is installed): the scripts in this folder run from a
source checkout, `python benchmarks/<script>.py [--quick]`, and benchmark that checkout (each
script puts the repository root first on `sys.path`). The tests import the baselines as
`benchmarks._harness` (`pythonpath = ["."]` in pyproject.toml) to check that they compute what
flowlin computes (`tests/test_baselines.py`).

- the machine record: `machine()`, `peak_memory()`, `load_average()`;
- timing: `Stopwatch`, `timed`, `timed_repeats` (min of repeats, compile separate);
- output: `record`, `write_json`, `print_table`, and `parser`/`finish` for the scripts;
- the baselines a NumPy user writes: `numpy_flow_scipy` (scipy `solve_ivp`) and
  `numpy_gradient_descent` (the papers' procedure), from `baseline_init`'s unpadded weights;
- the throughput grid and the agreement the baselines and flowlin are held to.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import time
from collections.abc import Callable


ROOT = pathlib.Path(__file__).resolve().parents[1]
RESULTS = pathlib.Path(__file__).resolve().parent / "results"


# --------------------------------------------------------------------------------------------
# The grids and tolerances shared by the scripts and tests/test_baselines.py
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


# --------------------------------------------------------------------------------------------
# Machine record
# --------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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

    from flowlin._dataset import versions

    devices = jax.devices()
    gpus = [d.device_kind for d in devices if d.platform == "gpu"]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return dict(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        usable_cores=usable,
        gpu=gpus[0] if gpus else None,
        backend=jax.default_backend(),
        devices=[str(d) for d in devices],
        platform=platform.platform(),
        python=platform.python_version(),
        versions=versions(),
        x64=bool(jax.config.jax_enable_x64),
        load_average=load_average(),
        blas_threads={
            k: os.environ.get(k)
            for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
        },
        # What else sets compile time and threads: XLA's flags (fusion emitters, host devices)
        # and the size of jaxlib's CPU thread pool (flowlin/__init__.py).
        xla_flags=os.environ.get("XLA_FLAGS"),
        pjrt_nproc=os.environ.get("PJRT_NPROC"),
    )


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def record(name: str, settings: dict, rows: list, **extra) -> dict:
    """One benchmark's JSON record: its name, time, machine, settings, rows and memory peak."""
    return dict(
        benchmark=name,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        machine=machine(),
        settings=settings,
        rows=rows,
        memory=peak_memory(),
        **extra,
    )


def _json_default(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def write_json(result: dict, out_dir, name: str) -> pathlib.Path:
    """Write `result` to `out_dir/<name>-<UTC time>.json` (and `<name>-latest.json`)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{name}-{stamp}.json"
    text = json.dumps(result, indent=1, default=_json_default)
    path.write_text(text)
    (out_dir / f"{name}-latest.json").write_text(text)
    return path


def print_table(rows: list[dict], columns: list[tuple[str, str, str]], echo=print) -> None:
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


def parser(doc: str) -> argparse.ArgumentParser:
    """The scripts' common command line: `--quick` and `--out`."""
    p = argparse.ArgumentParser(
        description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a small grid (seconds)")
    p.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(os.environ["OUT"]) if os.environ.get("OUT") else RESULTS,
        help="folder for the JSON (default: $OUT if set, else benchmarks/results/)",
    )
    return p


def enable_x64() -> None:
    """The scripts run in float64 (turned on once, here, before any array is made)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def finish(result: dict, out, name: str) -> pathlib.Path:
    """Write the JSON and say where, with the machine it ran on."""
    path = write_json(result, out, name)
    m = result["machine"]
    print(
        f"machine: {m['cpu']} ({m['cores']} cores), gpu {m['gpu']}, backend {m['backend']}, "
        f"load {m['load_average']}"
    )
    print(f"wrote {path}")
    return path


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------
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


def timed(fn: Callable):
    """(Stopwatch, result) of one call, waiting for JAX results."""
    import jax

    with Stopwatch() as sw:
        out = jax.block_until_ready(fn())
    return sw, out


def first_and_warm(fn: Callable, time_left: float):
    """(first call's seconds, second call's seconds or None, result): the second call (warm:
    compile excluded) is made only when the first used under a third of `time_left`."""
    first, out = timed(fn)
    if first.wall >= time_left / 3:
        return first.wall, None, out
    warm, out = timed(fn)
    return first.wall, warm.wall, out


#: Repeat a timed call at least `repeats` times and until this much time has been spent (or
#: MAX_REPEATS calls): the minimum of many short runs is robust to other load on the machine.
MIN_TIMING_SECONDS = 3.0
MAX_REPEATS = 100


def timed_repeats(fn, repeats: int):
    """(compile seconds, min run seconds over repeats, result) of a compiled call."""
    first, out = timed(fn)
    runs = []
    while len(runs) < repeats or (sum(runs) < MIN_TIMING_SECONDS and len(runs) < MAX_REPEATS):
        run, out = timed(fn)
        runs.append(run.wall)
    run = min(runs)
    return max(first.wall - run, 0.0), run, out


# --------------------------------------------------------------------------------------------
# The baselines: what a NumPy user writes
# --------------------------------------------------------------------------------------------
def baseline_init(D, m, h, alpha, seed, key=0):
    """The unpadded weights `flowlin.sweep(..., init="paper", key=key)` uses for (h, α, seed)."""
    import jax
    import numpy as np

    import flowlin

    std = float(h) ** (-alpha)
    net = flowlin.init.gaussian(jax.random.fold_in(jax.random.key(key), seed), D, m, h, std, std)
    return np.asarray(net.W1), np.asarray(net.W2)


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
# Agreement between the approaches (reported by sweep_throughput.py, asserted by the tests)
# --------------------------------------------------------------------------------------------
def grid_configs(grid) -> list[tuple]:
    """The (width, alpha, seed) configurations of a throughput grid, in the sweep's order."""
    return [(h, a, s) for h in grid["widths"] for a in grid["alphas"] for s in range(grid["seeds"])]


def curves_from_products(problem, P):
    """Loss ½‖R‖² and distance to the min-norm solution from products (configs, times, m, D)."""
    import numpy as np

    X, Y, Wstar = np.asarray(problem.X), np.asarray(problem.Y), np.asarray(problem.min_norm)
    R = Y[None, None] - np.einsum("nd,ktmd->ktnm", X, P)
    loss = 0.5 * np.sum(R**2, axis=(-2, -1))
    dist = np.sqrt(np.sum((P - Wstar) ** 2, axis=(-2, -1)))
    return loss, dist


def flowlin_grid_sweep(problem, grid: dict, method, ts):
    """flowlin's sweep of a throughput grid with `method` (no theory or bounds: the solve
    alone), saving the loss and distance at `ts`; what the benchmark times and the baseline
    test compares."""
    import flowlin

    return flowlin.sweep(
        problem,
        widths=list(grid["widths"]),
        scales=list(grid["alphas"]),
        seeds=grid["seeds"],
        method=method,
        t1=grid["t1"],
        saveat=flowlin.SaveAt(ts, diagnostics=("loss", "distance_to_min_norm")),
        rtol=RTOL,
        atol=ATOL,
        theory=False,
        bounds=False,
        progress=False,
    )


def curves_from_sweep(ds, configs):
    """Loss and distance over (config, time) from a `flowlin.sweep` dataset."""
    import numpy as np

    loss = np.stack([ds["loss"].sel(width=h, scale=a, seed=s).values for h, a, s in configs])
    dist = np.stack(
        [ds["distance_to_min_norm"].sel(width=h, scale=a, seed=s).values for h, a, s in configs]
    )
    return loss, dist


def rel(a, b) -> float:
    """Largest elementwise relative difference of `a` from `b`."""
    import numpy as np

    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def rel_frobenius(a, b) -> float:
    """Largest ‖a − b‖_F / ‖b‖_F over the leading (configuration, time) axes."""
    import numpy as np

    num = np.sqrt(np.sum((a - b) ** 2, axis=(-2, -1)))
    return float(np.max(num / np.sqrt(np.sum(b**2, axis=(-2, -1)))))


def disagreement(curves: dict, scipy_products, gd_products) -> dict:
    """Largest disagreement between the approaches.

    `curves[k] = (loss, distance)` over (config, time) for k in scipy, gd, full, gram; losses
    are compared relative to the initial loss, distances relative to scipy's.
    """
    import numpy as np

    ref_loss, ref_dist = curves["scipy"]
    loss0 = ref_loss[:, :1]
    (full_loss, full_dist), (gram_loss, gram_dist) = curves["full"], curves["gram"]
    return dict(
        ode_distance=max(
            rel(full_dist, ref_dist), rel(gram_dist, ref_dist), rel(gram_dist, full_dist)
        ),
        ode_loss=float(
            max(
                np.max(np.abs(full_loss - ref_loss) / loss0),
                np.max(np.abs(gram_loss - ref_loss) / loss0),
                np.max(np.abs(gram_loss - full_loss) / loss0),
            )
        ),
        gd_distance=rel(curves["gd"][1], ref_dist),
        gd_loss=float(np.max(np.abs(curves["gd"][0] - ref_loss) / loss0)),
        gd_products=rel_frobenius(gd_products, scipy_products),
    )
