"""Width scaling: time per gradient-flow trajectory against the hidden width h.

Compares, on one problem (n = 10, D = 40, m = 2, Gaussian data, NTK init std = h^-1/2, t1 = 20,
Tsit5, rtol 1e-6, atol 1e-9, float64):

- `full`:   `gradient_flow(net, method="full")`, the weight-space solver, h = 10 … 10⁵;
- `gram`:   `gradient_flow(net, method="gram")` from the materialised network (includes the
            one-off O(h·D·(r+m)) Gram/QR of the width-h weights and the rebuilt final network),
            h = 10 … 10⁶;
- `wishart`: `gradient_flow(init.wishart(key, problem, h, ...), method="gram")`, statistics
            sampled without weights, h = 10 … 10⁹ — one compiled function for every h.

Run time is the minimum over repeats (at least 3, and until 3 s is spent) of a compiled call
(`block_until_ready`); compile time is the first call minus that, reported separately. The
final excess loss and distance to the min-norm solution are printed beside, so that the
methods can be seen to agree (full vs gram on the same network: their largest relative
disagreement in the distance over the saved times is the last column).

    python benchmarks/width_scaling.py             # the full table (~5 minutes on 2 cores)
    python benchmarks/width_scaling.py --quick     # small widths only

Writes `benchmarks/results/width_scaling-<time>.json` with the machine (CPU model, cores, GPU).
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time
from functools import partial


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402


jax.config.update("jax_enable_x64", True)

import diffrax as dfx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowlin  # noqa: E402


N, D, M, T1 = 10, 40, 2, 20.0
TOLERANCES = dict(solver=dfx.Tsit5(), rtol=1e-6, atol=1e-9)
SAVES = flowlin.SaveAt(
    ts=jnp.linspace(0.0, T1, 21), diagnostics=("excess_loss", "distance_to_min_norm")
)


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpus = [d.device_kind for d in jax.devices() if d.platform == "gpu"]
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        gpu=gpus[0] if gpus else None,
        platform=platform.platform(),
        jax=jax.__version__,
        diffrax=dfx.__version__ if hasattr(dfx, "__version__") else None,
        flowlin=flowlin.__version__,
        load_average=os.getloadavg() if hasattr(os, "getloadavg") else None,
    )


#: Repeat a timed call at least `--repeats` times and until this much time has been spent (or
#: MAX_REPEATS calls): the minimum of many short runs is robust to other load on the machine.
MIN_TIMING_SECONDS = 3.0
MAX_REPEATS = 100


def timed(fn, repeats: int):
    """(compile seconds, min run seconds over repeats, result) of a compiled call."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    runs = []
    while len(runs) < repeats or (sum(runs) < MIN_TIMING_SECONDS and len(runs) < MAX_REPEATS):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    run = min(runs)
    return max(first - run, 0.0), run, out


def summary(traj) -> dict:
    return dict(
        num_steps=int(traj.num_steps),
        succeeded=bool(traj.succeeded),
        excess_loss=float(traj.excess_loss[-1]),
        distance=float(traj.distance_to_min_norm[-1]),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="widths up to 10^3 only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-full", type=float, default=1e5)
    parser.add_argument("--max-gram", type=float, default=1e6)
    parser.add_argument("--max-wishart", type=float, default=1e9)
    args = parser.parse_args()
    if args.quick:
        args.max_full = args.max_gram = args.max_wishart = 1e3
    widths = [10**p for p in range(1, 10)]

    problem = flowlin.problems.gaussian(jax.random.key(0), n=N, D=D, m=M)
    key = jax.random.key(1)
    full_solve = jax.jit(
        lambda net: flowlin.gradient_flow(
            net, problem, T1, saveat=SAVES, method="full", **TOLERANCES
        )
    )
    gram_solve = jax.jit(
        lambda net: flowlin.gradient_flow(
            net, problem, T1, saveat=SAVES, method="gram", **TOLERANCES
        )
    )

    @jax.jit
    def wishart_solve(key, h):
        std = 1.0 / jnp.sqrt(h)
        init = flowlin.init.wishart(key, problem, h, std, std)
        return flowlin.gradient_flow(init, problem, T1, saveat=SAVES, method="gram", **TOLERANCES)

    rows = []
    header = (
        f"{'h':>11} | {'method':>8} | {'compile s':>9} | {'run ms':>10} | {'steps':>6} | "
        f"{'L - L* (t1)':>11} | {'distance':>9} | {'full vs gram':>12}"
    )
    print(f"problem n={N} D={D} m={M} (r={problem.rank}), NTK init, t1={T1}, Tsit5 rtol 1e-6")
    print(header)
    print("-" * len(header))
    for h in widths:
        net = None
        if h <= max(args.max_full, args.max_gram):
            net = jax.block_until_ready(flowlin.init.paper(key, D, M, h, 0.5))
        results = {}
        if h <= args.max_full:
            results["full"] = timed(partial(full_solve, net), args.repeats if h < 1e5 else 2)
        if h <= args.max_gram:
            results["gram"] = timed(partial(gram_solve, net), args.repeats)
        if h <= args.max_wishart:
            h_arr = jnp.asarray(float(h))
            results["wishart"] = timed(partial(wishart_solve, key, h_arr), args.repeats)
        for method, (compile_s, run_s, traj) in results.items():
            row = dict(h=h, method=method, compile_s=compile_s, run_s=run_s, **summary(traj))
            if method == "gram" and "full" in results:
                full = results["full"][2]
                row["full_vs_gram"] = float(
                    jnp.max(
                        jnp.abs(traj.distance_to_min_norm - full.distance_to_min_norm)
                        / full.distance_to_min_norm
                    )
                )
            rows.append(row)
            agree = f"{row['full_vs_gram']:.1e}" if "full_vs_gram" in row else ""
            print(
                f"{h:>11.0e} | {method:>8} | {compile_s:>9.2f} | {1e3 * run_s:>10.2f} | "
                f"{row['num_steps']:>6} | {row['excess_loss']:>11.2e} | "
                f"{row['distance']:>9.5f} | {agree:>12}",
                flush=True,
            )
        net = None  # free the width-h weights before the next width

    out_dir = pathlib.Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"width_scaling-{stamp}.json"
    settings = dict(
        n=N,
        D=D,
        m=M,
        t1=T1,
        solver="Tsit5",
        rtol=1e-6,
        atol=1e-9,
        init="NTK (std = h^-1/2)",
        repeats=args.repeats,
    )
    path.write_text(json.dumps(dict(machine=machine(), settings=settings, rows=rows), indent=1))
    print(f"machine: {machine()}")
    print(f"wrote {path}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
