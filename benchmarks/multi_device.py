"""Multi-device sweeps on one host: configs/s on 1 vs k devices, per-device loops vs automatic
sharding (every device runs its own adaptive loops; see docs/ray.md).

`flowlin.sweep` places each chunk over the device mesh with `shard_map`: every device runs its
own vmapped adaptive while loop, and no device waits for another's slowest configuration. The
alternative that lesson 6 warns about — `jit` of the vmapped loop with the batch sharded over
the devices, left to XLA's automatic (GSPMD) partitioner — makes the loop condition a
reduction over the whole batch, i.e. an all-reduce across devices at every step: all devices
then step in lockstep with the slowest configuration anywhere. This script

1. checks the compiled chunk programs: counts the cross-device collectives (all-reduce, ...)
   in the HLO of flowlin's chunk (expected: none) and of the auto-sharded variant;
2. times the same sweep (compile excluded, min over repeats, `progress=False`) with
   `executor=flowlin.LocalExecutor(devices=...)` over the first device only and over all k
   devices (flowlin's shard_map path), and with all k devices and the chunk auto-sharded
   instead (`AutoShardedExecutor` below, an executor object of this script), and reports
   configs/s and the largest disagreement with the 1-device results.

Grid: `problems.gaussian(key(0), n=10, D=40, m=2)`, widths 100/150/200 (one padded shape),
alpha in {0.25, 0.5, 0.75, 1.0}, 8 seeds = 96 configurations in 2 chunks of 48; t1 = 20,
gram method, Tsit5, rtol 1e-6, atol 1e-9, float64, no theory/bounds (solver throughput only).

    python benchmarks/multi_device.py                 # 4 forced host CPU devices
    python benchmarks/multi_device.py --devices 2

On a machine without accelerators the devices are `--xla_force_host_platform_device_count`
CPU devices, set here before JAX starts: they share the machine's cores, so the speed-up is
bounded by the core count, not by k. Writes `benchmarks/results/multi_device-<time>.json`
(`$OUT` if set, or `--out`).

Latest results (2026-11-29; 2-core AMD EPYC, load average 5-10 from other jobs, jax 0.9.2; the
table is in docs/ray.md): collectives in the chunk: shard_map 0, auto-sharded 5 all-reduce.
4 devices: shard_map 1.32x and 2.17x the 1-device configs/s (two runs), auto-sharded 0.68x and
0.69x; 2 devices: shard_map 1.35x, auto-sharded 0.82x; all bit-for-bit equal to 1 device.
"""

import os
import pathlib
import sys


def _parse():
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from _harness import parser  # before JAX: the harness imports it lazily

    p = parser(__doc__)
    p.add_argument("--devices", type=int, default=4, help="host CPU devices to force")
    p.add_argument("--repeats", type=int, default=3)
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None and ARGS.quick:  # a smoke run: one timing of a smaller grid
    ARGS.repeats = 1
if ARGS is not None:
    # Must be set before JAX initialises its backends.
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={ARGS.devices}")

# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import flowlin  # noqa: E402
from benchmarks import _harness as H  # noqa: E402
from flowlin import _dataset as schema  # noqa: E402
from flowlin._sweep._executor import AbstractExecutor, Finished  # noqa: E402
from flowlin._sweep._kernel import make_mesh, run_chunk, run_one  # noqa: E402


N, D, M, T1 = 10, 40, 2, 20.0
GRID = dict(widths=[100, 150, 200], scales=[0.25, 0.5, 0.75, 1.0], seeds=8)
if ARGS is not None and ARGS.quick:
    GRID["seeds"] = 2
SETTINGS = dict(
    method=flowlin.Gram(),
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
#: The `run_chunk` arguments of the first chunk a `ChunkExecutor` ran (for the HLO check).
CAPTURED: dict = {}


@eqx.filter_jit
def auto_sharded_chunk(payload, rows, pad_to: int):
    """The chunk as one vmapped program; the batch's sharding is left to XLA (GSPMD)."""
    return jax.vmap(lambda row: run_one(payload, pad_to, row))(rows)


class ChunkExecutor(AbstractExecutor):
    """Runs each chunk on all of `devices` either as flowlin does (`run_chunk`: shard_map,
    per-device loops) or, with `auto_sharded`, as one vmap with the batch sharded over the
    devices and partitioned by XLA; records the first chunk's arguments in `CAPTURED`."""

    devices: tuple = eqx.field(static=True)
    auto_sharded: bool = eqx.field(static=True)
    batch_size: None = eqx.field(default=None, static=True)

    def resolve(self, call, settings):
        return self

    def known_devices(self):
        return tuple(str(d) for d in self.devices)

    def devices_per_chunk(self):
        return len(self.devices)

    def run(self, task, chunks, store, *, progress, total, initial):
        assert store is None
        mesh = make_mesh(self.devices)
        where = tuple(str(d) for d in mesh.devices.flat)
        for chunk in chunks:
            payload, rows, program = task.arguments(chunk, mesh)
            CAPTURED.setdefault("args", (payload, rows, program))
            if self.auto_sharded:
                out = auto_sharded_chunk(payload, rows, program.pad_to)
            else:
                out = run_chunk(payload, rows, program)
            yield Finished(chunk, *task.collect(chunk, out), where)


def collectives(lowered) -> dict:
    text = lowered.compile().compiled.as_text()
    return {op: text.count(f" {op}(") + text.count(f" {op}-start(") for op in COLLECTIVES}


def timed_sweep(problem, executor, repeats):
    flowlin.sweep(problem, executor=executor, **GRID, **SETTINGS)  # compile
    runs, ds = [], None
    for _ in range(repeats):
        with H.Stopwatch() as sw:
            ds = flowlin.sweep(problem, executor=executor, **GRID, **SETTINGS)
        runs.append(sw.wall)
    return min(runs), ds


def main():
    args = ARGS
    H.enable_x64()
    devices = jax.devices()
    k = len(devices)
    problem = flowlin.problems.gaussian(jax.random.key(0), n=N, D=D, m=M)
    n_configs = len(GRID["widths"]) * len(GRID["scales"]) * GRID["seeds"]

    load_before = H.load_average()
    # 1. What the compiled chunk programs do across devices.
    flowlin.sweep(problem, executor=ChunkExecutor(tuple(devices), False), **GRID, **SETTINGS)
    payload, rows, program = CAPTURED["args"]
    hlo = {
        "shard_map (flowlin)": collectives(run_chunk.lower(payload, rows, program)),
        "auto-sharded vmap": collectives(auto_sharded_chunk.lower(payload, rows, program.pad_to)),
    }

    # 2. Throughput.
    executors = {
        "1 device": flowlin.LocalExecutor(devices=devices[:1]),
        f"{k} devices, shard_map (flowlin)": flowlin.LocalExecutor(devices=devices),
        f"{k} devices, auto-sharded vmap": ChunkExecutor(tuple(devices), True),
    }
    variants = {name: timed_sweep(problem, ex, args.repeats) for name, ex in executors.items()}
    base_s, base = variants["1 device"]
    rows = []
    print(f"{n_configs} configurations, gram, n={N} D={D} m={M}, t1={T1}; devices: {devices}")
    print("cross-device collectives in the compiled chunk:")
    for name, counts in hlo.items():
        print(f"  {name:>22}: {sum(counts.values())} {counts}")
    for name, (run_s, ds) in variants.items():
        diff = max(
            float(np.nanmax(np.abs(ds[v].values.astype(float) - base[v].values.astype(float))))
            for v in base.data_vars
        )
        rows.append(
            dict(
                executor=name,
                run_s=run_s,
                configs_per_s=n_configs / run_s,
                speedup=base_s / run_s,
                max_abs_diff_vs_1_device=diff,
                all_succeeded=bool(ds[schema.SUCCEEDED].all()),
            )
        )
    H.print_table(
        rows,
        [
            ("executor", "executor", ""),
            ("run_s", "run s", ".3f"),
            ("configs_per_s", "configs/s", ".1f"),
            ("speedup", "speed-up", ".2f"),
            ("max_abs_diff_vs_1_device", "max |diff|", ".1e"),
        ],
    )
    settings = dict(n=N, D=D, m=M, **{k_: str(v) for k_, v in {**GRID, **SETTINGS}.items()})
    record = H.record(
        "multi_device",
        settings,
        rows,
        collectives=hlo,
        load_before=load_before,
        load_after=H.load_average(),
    )
    H.finish(record, args.out, "multi_device")


if __name__ == "__main__":
    main()
