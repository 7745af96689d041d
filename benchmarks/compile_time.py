"""Compile time of the first call of each flowlin entry point, each in a fresh process.

gradient_flow (full, gram), gradient_descent, check_bounds and sweep on a small problem
(n = 10, D = 40, m = 2, h = 100, float64, CPU): first call, second call, their difference
(the compile time), and the time to import flowlin. `*_new_width`: the call at h = 200 after a
first call at h = 100 (what each new width costs). A fresh `python` process
per entry point so that no in-process cache hides the compilation. Target: first
gradient_flow < 5 s on CPU.

    python benchmarks/compile_time.py [--quick] [--entries check_bounds,check_bounds_new_width]

`--quick-start`: the README's quick start (n = 20, D = 80, m = 1, h = 500, 201 saves, every
diagnostic) as a user runs it, `method=Gram()` and `method=FullWeights()`, each in fresh
processes: without the persistent compilation cache, with a cold one (empty folder) and with
the warm one the cold run left. First call (compile included) and the best of 10 later calls.
Targets: first call <= 5 s, later calls <= 50 ms (gram).

    python benchmarks/compile_time.py --quick-start

`--emitters`: each entry point's first call with XLA:CPU's default fusion emitters and with
the older ones that `flowlin.enable_fast_cpu_compiles()` selects, fresh processes in turns;
compile time, second call, and whether the two give the same numbers (a checksum of every
float returned).

    python benchmarks/compile_time.py --emitters
"""

import json
import os
import pathlib
import subprocess
import sys


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


SCRIPT = r"""
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
    f = lambda: flowlin.gradient_flow(net, problem, 20.0, saveat=ts, method=flowlin.FullWeights())
elif entry == "gradient_flow_gram":
    f = lambda: flowlin.gradient_flow(net, problem, 20.0, saveat=ts, method=flowlin.Gram())
elif entry == "gradient_descent":
    f = lambda: flowlin.gradient_descent(net, problem, 0.01, 2000, saveat=ts)
elif entry == "sweep":
    f = lambda: flowlin.sweep(problem, widths=[50, 100], scales=[0.5], seeds=2, t1=20.0,
                              progress=False)
elif entry == "sweep_deep":
    f = lambda: flowlin.sweep(problem, widths=[20, 40], scales=[0.5], seeds=2, t1=20.0,
                              depths=(2, 3), progress=False)
elif entry == "check_bounds":
    traj = jax.block_until_ready(flowlin.gradient_flow(net, problem, 20.0, saveat=ts))
    f = lambda: flowlin.check_bounds(traj, net, problem, width=100, alpha=0.5)
elif entry == "gradient_flow_gram_new_width":  # after a first call at h = 100: what h = 200 adds
    first = flowlin.gradient_flow(net, problem, 20.0, saveat=ts, method=flowlin.Gram())
    jax.block_until_ready(first)
    net2 = jax.block_until_ready(flowlin.init.paper(jax.random.key(1), 40, 2, 200, 0.5))
    f = lambda: flowlin.gradient_flow(net2, problem, 20.0, saveat=ts, method=flowlin.Gram())
elif entry == "gradient_flow_gram_from_gram_init":  # after a solve from a network (h = 100)
    first = flowlin.gradient_flow(net, problem, 20.0, saveat=ts, method=flowlin.Gram())
    jax.block_until_ready(first)
    stats = jax.block_until_ready(flowlin.init.gram_init(net, problem))
    f = lambda: flowlin.gradient_flow(stats, problem, 20.0, saveat=ts, method=flowlin.Gram())
elif entry == "check_bounds_new_width":  # after a first call at h = 100: what h = 200 adds
    traj = jax.block_until_ready(flowlin.gradient_flow(net, problem, 20.0, saveat=ts))
    jax.block_until_ready(flowlin.check_bounds(traj, net, problem, width=100, alpha=0.5))
    net2 = flowlin.init.paper(jax.random.key(1), 40, 2, 200, 0.5)
    traj2 = jax.block_until_ready(flowlin.gradient_flow(net2, problem, 20.0, saveat=ts))
    f = lambda: flowlin.check_bounds(traj2, net2, problem, width=200, alpha=0.5)
else:
    raise SystemExit(f"unknown entry point {entry}")
def timed():
    global out
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(f())
    return time.perf_counter() - t0, time.process_time() - c0
first, first_cpu = timed()
second, second_cpu = timed()
import resource
import numpy as np
if hasattr(out, "data_vars"):  # a sweep's Dataset
    leaves = [out[k].values for k in out.data_vars]
else:
    leaves = jax.tree.leaves(out)
# A checksum of every finite float the call returned (to compare two processes' numbers).
floats = [np.asarray(x, float).ravel() for x in leaves if np.asarray(x).dtype.kind == "f"]
flat = np.concatenate(floats) if floats else np.zeros(0)
checksum = float(np.abs(flat[np.isfinite(flat)]).sum())
print(json.dumps(dict(import_s=t_import, first_s=first, second_s=second, first_cpu_s=first_cpu,
                      second_cpu_s=second_cpu, checksum=checksum,
                      peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""

ENTRY_POINTS = (
    "gradient_flow_full",
    "gradient_flow_gram",
    "gradient_flow_gram_new_width",
    "gradient_flow_gram_from_gram_init",
    "gradient_descent",
    "check_bounds",
    "check_bounds_new_width",
    "sweep",
    "sweep_deep",
)
TARGET_S = 5.0


def child_env() -> dict:
    """The environment of a measured child process: this checkout's flowlin, on the CPU."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(H.ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def one_entry(entry: str, env: dict) -> dict:
    """First and second call of one entry point in a fresh process: its table row."""
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, entry], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compile benchmark of {entry} failed:\n{proc.stderr[-3000:]}")
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    load = H.load_average()
    return dict(
        entry_point=entry,
        import_s=r["import_s"],
        first_call_s=r["first_s"],
        run_s=r["second_s"],
        compile_s=max(r["first_s"] - r["second_s"], 0.0),
        compile_cpu_s=max(r["first_cpu_s"] - r["second_cpu_s"], 0.0),
        peak_rss_mib=r["peak_rss_mib"],
        checksum=r["checksum"],
        load=load[0] if load else None,
    )


def compile_times(quick: bool = False, *, echo=print, entries=None) -> dict:
    """First-call time minus second-call time of each entry point, in a fresh process each."""
    entries = list(entries or (ENTRY_POINTS[:2] if quick else ENTRY_POINTS))
    env = child_env()
    load_before = H.load_average()
    rows = []
    echo("compile time of the first call, each entry point in a fresh process (float64, CPU)")
    for entry in entries:
        row = one_entry(entry, env)
        rows.append(row)
        echo(f"  {entry}: first call {row['first_call_s']:.2f} s, then {row['run_s']:.4f} s")
    echo("")
    H.print_table(
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
        target_first_gradient_flow_s=TARGET_S,
        quick=quick,
    )
    return H.record(
        "compile_time", settings, rows, load_before=load_before, load_after=H.load_average()
    )


def emitters(quick: bool = False, *, echo=print, entries=None, rounds: int = 2) -> dict:
    """Each entry point's first call with XLA:CPU's default fusion emitters and with the older
    ones (`flowlin.enable_fast_cpu_compiles`), in fresh processes taken in turns (default,
    older, default, older, ...) so that both see the same load; the best of `rounds` each."""
    from flowlin._fast_compile import FLAG

    entries = list(entries or (ENTRY_POINTS[:2] if quick else ENTRY_POINTS))
    base = child_env()
    base.pop("XLA_FLAGS", None)
    load_before = H.load_average()
    echo("first-call compile time, default vs older XLA:CPU fusion emitters (float64, CPU)")
    rows = []
    for entry in entries:
        best = {}
        for _ in range(rounds):
            for name, flags in (("default", ""), ("older", FLAG)):
                env = dict(base, XLA_FLAGS=flags) if flags else base
                row = one_entry(entry, env)
                if name not in best or row["compile_s"] < best[name]["compile_s"]:
                    best[name] = row
        d, o = best["default"], best["older"]
        rows.append(
            dict(
                entry_point=entry,
                compile_default_s=d["compile_s"],
                compile_older_s=o["compile_s"],
                speedup=d["compile_s"] / o["compile_s"],
                run_default_s=d["run_s"],
                run_older_s=o["run_s"],
                same_numbers=d["checksum"] == o["checksum"],
                relative_difference=abs(d["checksum"] - o["checksum"]) / max(d["checksum"], 1e-300),
                load=o["load"],
            )
        )
        r = rows[-1]
        echo(
            f"  {entry}: compile {r['compile_default_s']:.2f} s -> {r['compile_older_s']:.2f} s"
            f" ({r['speedup']:.2f}x), checksums differ by {r['relative_difference']:.1e}"
        )
    echo("")
    H.print_table(
        rows,
        [
            ("entry_point", "entry point", ""),
            ("compile_default_s", "compile, default (s)", ".2f"),
            ("compile_older_s", "compile, older (s)", ".2f"),
            ("speedup", "default / older", ".2f"),
            ("run_default_s", "second call, default (s)", ".4f"),
            ("run_older_s", "second call, older (s)", ".4f"),
            ("relative_difference", "checksum rel. diff.", ".1e"),
            ("load", "load", ".1f"),
        ],
        echo=echo,
    )
    settings = dict(
        problem="gaussian n=10 D=40 m=2, paper init h=100 alpha=0.5, t1=20, 21 saves, defaults",
        entries=entries,
        flag=FLAG,
        rounds=rounds,
        quick=quick,
    )
    return H.record(
        "compile_emitters", settings, rows, load_before=load_before, load_after=H.load_average()
    )


QUICK_START = r"""
import json, sys, time
t0 = time.perf_counter()
import jax
import jax.numpy as jnp
import flowlin
jax.config.update("jax_enable_x64", True)
if sys.argv[2]:
    flowlin.enable_compilation_cache(sys.argv[2])
t_import = time.perf_counter() - t0
key_data, key_init = jax.random.split(jax.random.key(0))
problem = flowlin.problems.gaussian(key_data, n=20, D=80, m=1)
net = flowlin.init.paper(key_init, D=80, m=1, h=500, alpha=0.5)
jax.block_until_ready((problem, net))
method = flowlin.Gram() if sys.argv[1] == "gram" else flowlin.FullWeights()
def call():
    return flowlin.gradient_flow(net, problem, t1=100.0, saveat=jnp.linspace(0, 100, 201),
                                 method=method)
t, c = time.perf_counter(), time.process_time()
jax.block_until_ready(call())
first, first_cpu = time.perf_counter() - t, time.process_time() - c
later = []
for _ in range(10):
    t = time.perf_counter()
    jax.block_until_ready(call())
    later.append(time.perf_counter() - t)
print(json.dumps(dict(import_s=t_import, first_s=first, first_cpu_s=first_cpu, later_s=min(later))))
"""


def quick_start(*, echo=print, methods=("gram", "full")) -> dict:
    """The README quick start in fresh processes: no cache, cold cache, warm cache."""
    import tempfile

    env = child_env()
    env.pop("FLOWLIN_COMPILATION_CACHE", None)
    load_before = H.load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            folder = str(pathlib.Path(tmp) / method)
            for cache, path in (("none", ""), ("cold", folder), ("warm", folder)):
                proc = subprocess.run(
                    [sys.executable, "-c", QUICK_START, method, path],
                    capture_output=True, text=True, env=env, check=False,
                )  # fmt: skip
                if proc.returncode != 0:
                    raise RuntimeError(f"quick start ({method}) failed:\n{proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                load = H.load_average()
                rows.append(dict(method=method, cache=cache, load=load[0] if load else None, **r))
                echo(f"  {method} cache={cache}: first {r['first_s']:.2f} s, then "
                     f"{1e3 * r['later_s']:.1f} ms")  # fmt: skip
    echo("")
    H.print_table(
        rows,
        [
            ("method", "method", ""),
            ("cache", "compilation cache", ""),
            ("import_s", "import (s)", ".2f"),
            ("first_s", "first call (s)", ".2f"),
            ("first_cpu_s", "first call CPU (s)", ".2f"),
            ("later_s", "later call (s)", ".4f"),
            ("load", "load", ".1f"),
        ],
        echo=echo,
    )
    settings = dict(
        problem="README quick start: gaussian n=20 D=80 m=1, paper init h=500 alpha=0.5, t1=100, "
        "201 saves, all diagnostics",
        methods=list(methods),
        target_first_call_s=TARGET_S,
        target_later_call_s=0.05,
    )
    return H.record(
        "quick_start", settings, rows, load_before=load_before, load_after=H.load_average()
    )


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--quick-start", action="store_true", help="the README quick start, caches")
    p.add_argument(
        "--emitters", action="store_true", help="default vs older XLA:CPU fusion emitters"
    )
    p.add_argument("--entries", help="comma-separated entry points (default: all)")
    args = p.parse_args()
    H.enable_x64()
    entries = args.entries.split(",") if args.entries else None
    if args.emitters:
        H.finish(emitters(args.quick), args.out, "compile_emitters")
    elif args.quick_start:
        H.finish(quick_start(), args.out, "quick_start")
    else:
        H.finish(compile_times(args.quick, entries=entries), args.out, "compile_time")
