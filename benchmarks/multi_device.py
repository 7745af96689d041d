"""Multi-device sweeps on one host: configs/s on 1 vs k devices, per-device loops vs automatic
sharding (performance.md, lesson 6).

`flowlin.sweep` places each chunk over the device mesh with `shard_map`: every device runs its
own vmapped adaptive while loop, and no device waits for another's slowest configuration. The
alternative that lesson 6 warns about — `jit` of the vmapped loop with the batch sharded over
the devices, left to XLA's automatic (GSPMD) partitioner — makes the loop condition a
reduction over the whole batch, i.e. an all-reduce across devices at every step: all devices
then step in lockstep with the slowest configuration anywhere. This script

1. checks the compiled chunk programs: counts the cross-device collectives (all-reduce, ...)
   in the HLO of flowlin's chunk (expected: none) and of the auto-sharded variant;
2. times the same sweep (compile excluded, min over repeats, `progress=False`) with
   `devices=` the first device only, all k devices (flowlin's shard_map path), and all k
   devices with the chunk auto-sharded instead (through the `flowlin._sweep.dispatch_chunk`
   hook), and reports configs/s and the largest disagreement with the 1-device results.

Grid: `problems.gaussian(key(0), n=10, D=40, m=2)`, widths 100/150/200 (one padded shape),
alpha in {0.25, 0.5, 0.75, 1.0}, 8 seeds = 96 configurations in 2 chunks of 48; t1 = 20,
gram method, Tsit5, rtol 1e-6, atol 1e-9, float64, no theory/bounds (solver throughput only).

    python benchmarks/multi_device.py                 # 4 forced host CPU devices
    python benchmarks/multi_device.py --devices 2

On a machine without accelerators the devices are `--xla_force_host_platform_device_count`
CPU devices, set here before JAX starts: they share the machine's cores, so the speed-up is
bounded by the core count, not by k. Writes `benchmarks/results/multi_device-<time>.json`.

Latest results (2026-11-29; 2-core AMD EPYC, load average 5-10 from other jobs, jax 0.9.2; the
table is in docs/ray.md): collectives in the chunk: shard_map 0, auto-sharded 5 all-reduce.
4 devices: shard_map 1.32x and 2.17x the 1-device configs/s (two runs), auto-sharded 0.68x and
0.69x; 2 devices: shard_map 1.35x, auto-sharded 0.82x; all bit-for-bit equal to 1 device.
"""

import argparse
import datetime
import json
import os
import pathlib
import sys
import time


def _parse():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4, help="host CPU devices to force")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    # Must be set before JAX initialises its backends.
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={ARGS.devices}")

# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402


jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowlin  # noqa: E402
import flowlin._sweep as sweep_module  # noqa: E402


N, D, M, T1 = 10, 40, 2, 20.0
GRID = dict(widths=[100, 150, 200], scales=[0.25, 0.5, 0.75, 1.0], seeds=8)
SETTINGS = dict(
    method="gram",
    t1=T1,
    rtol=1e-6,
    atol=1e-9,
    theory=False,
    bounds=False,
    saveat=flowlin.SaveAt(
        jnp.linspace(0.0, T1, 21), diagnostics=("excess_loss", "distance_to_min_norm")
    ),
    chunk_size=48,
    progress=False,
)
#: HLO ops that move data between devices.
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")


@eqx.filter_jit
def _auto_sharded_chunk(dyn, cfg, st):
    """The chunk as one vmapped program; the batch's sharding is left to XLA (GSPMD)."""

    def one(c):
        return sweep_module._run_one(dyn, st, c["problem"], c["width"], c["s1"], c["s2"], c["seed"])

    return jax.vmap(one)(cfg)


def _auto_dispatch(chunk, dyn, inputs, static):
    return _auto_sharded_chunk(dyn, inputs, static)


def collectives(lowered) -> dict:
    text = lowered.compile().compiled.as_text()
    return {op: text.count(f" {op}(") + text.count(f" {op}-start(") for op in COLLECTIVES}


def machine() -> dict:
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from width_scaling import machine as width_machine

    return width_machine()


def timed_sweep(problem, devices, repeats):
    flowlin.sweep(problem, devices=devices, **GRID, **SETTINGS)  # compile
    runs, ds = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        ds = flowlin.sweep(problem, devices=devices, **GRID, **SETTINGS)
        runs.append(time.perf_counter() - t0)
    return min(runs), ds


def main():
    args = ARGS
    devices = jax.devices()
    k = len(devices)
    problem = flowlin.problems.gaussian(jax.random.key(0), n=N, D=D, m=M)
    n_configs = len(GRID["widths"]) * len(GRID["scales"]) * GRID["seeds"]

    # 1. What the compiled chunk programs do across devices.
    captured = {}
    original = sweep_module.dispatch_chunk

    def capture(chunk, dyn, inputs, static):
        captured.setdefault("args", (dyn, inputs, static))
        return original(chunk, dyn, inputs, static)

    sweep_module.dispatch_chunk = capture
    try:
        flowlin.sweep(problem, devices=devices, **GRID, **SETTINGS)
    finally:
        sweep_module.dispatch_chunk = original
    hlo = {
        "shard_map (flowlin)": collectives(sweep_module._run_chunk.lower(*captured["args"])),
        "auto-sharded vmap": collectives(_auto_sharded_chunk.lower(*captured["args"])),
    }

    # 2. Throughput.
    variants = {}
    variants["1 device"] = timed_sweep(problem, devices[:1], args.repeats)
    variants[f"{k} devices, shard_map (flowlin)"] = timed_sweep(problem, devices, args.repeats)
    sweep_module.dispatch_chunk = _auto_dispatch
    try:
        variants[f"{k} devices, auto-sharded vmap"] = timed_sweep(problem, devices, args.repeats)
    finally:
        sweep_module.dispatch_chunk = original

    base_s, base = variants["1 device"]
    rows = []
    print(f"{n_configs} configurations, gram, n={N} D={D} m={M}, t1={T1}; devices: {devices}")
    print("cross-device collectives in the compiled chunk:")
    for name, counts in hlo.items():
        print(f"  {name:>22}: {sum(counts.values())} {counts}")
    header = (
        f"{'executor':>34} | {'run s':>7} | {'configs/s':>9} | {'speed-up':>8} | {'max |diff|':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, (run_s, ds) in variants.items():
        diff = max(
            float(np.nanmax(np.abs(ds[v].values.astype(float) - base[v].values.astype(float))))
            for v in base.data_vars
        )
        row = dict(
            executor=name,
            run_s=run_s,
            configs_per_s=n_configs / run_s,
            speedup=base_s / run_s,
            max_abs_diff_vs_1_device=diff,
            all_succeeded=bool(ds.succeeded.all()),
        )
        rows.append(row)
        print(
            f"{name:>34} | {run_s:>7.3f} | {row['configs_per_s']:>9.1f} | "
            f"{row['speedup']:>7.2f}x | {diff:>10.1e}"
        )

    out_dir = pathlib.Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"multi_device-{stamp}.json"
    settings = dict(n=N, D=D, m=M, **{k_: str(v) for k_, v in {**GRID, **SETTINGS}.items()})
    path.write_text(
        json.dumps(dict(machine=machine(), settings=settings, collectives=hlo, rows=rows), indent=1)
    )
    print(f"machine: {machine()}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
