"""Fig. 1 at 10⁶ configurations: the gram sweep with theory and bounds on one device (issue 18).

The problem of `flowlin reproduce fig1` (`gaussian(key(0), n=100, D=400, m=1)`: r = 100,
k = r + m = 101), the paper's initialization at α = 1/2 (entries N(0, 1/h)) at its widths
500 … 10⁴, as many seeds as make up `--configs`, sampled from their Wishart law (no weights
are formed, so the width costs nothing), t1 = 25 with 26 saves, `theory=True, bounds=True`,
`method=flowlin.Gram()`, float64. Issue 18's target on one H200: 10⁶ configurations in ≤ 10 s.

Each `--chunk-sizes` × `--batch-sizes` pair is one timed sweep (the first call, and a warm
second call when the first left time). For each, the **slot-step utilisation**: inside a
vmapped batch the runs step in lockstep (the solver loop runs until the batch's slowest run
is done), so a batch of B runs costs B × max(steps) slot-steps, of which Σ steps are useful.
It is computed from each run's solver steps (`num_steps`) and the sweep's own chunk plan
(`flowlin._sweep._plan`: configurations ordered by the scale of their initial product, then
cut into chunks, each chunk split evenly over the devices and mapped in batches). Padding rows
of a bucket's last chunk count as waste; with several devices, a device's wait for the
slowest one at the end of a chunk is not counted. Per-run step counts do not depend on the
batching (on a CPU, tests/test_bench.py checks it; the "same steps" column checks it on every
run, a GPU's included), so the same counts also give the utilisation that other batch sizes
would have had: a second table, to choose the next measurement by.

    python benchmarks/fig1_gpu.py --configs 1000000 --time-cap 300   # on a GPU
    python benchmarks/fig1_gpu.py --quick     # CPU smoke test: 28 configurations, 2 widths

Prints its tables; writes JSON to $OUT if that variable is set, else to benchmarks/results/.
"""

import os


# Several processes may share the GPU; do not grab 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pathlib  # noqa: E402
import sys  # noqa: E402


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


FIG1 = dict(n=100, D=400, m=1, alpha=0.5, widths=(500, 1000, 2000, 3000, 5000, 7500, 10_000))
FIG1_QUICK = dict(n=20, D=80, m=1, alpha=0.5, widths=(500, 10_000))
T1, SAVES = 25.0, 26
#: Batch sizes whose utilisation is predicted from the measured step counts (None: the whole
#: per-device share of a chunk, the GPU default).
PREDICTED_BATCHES = (None, 4096, 1024, 256, 64, 16)


def chunk_plan(problem, cfg: dict, seeds: int, chunk_size: int, n_devices: int):
    """The sweep's own plan for this grid: its flat table of rows and its chunks."""
    from flowlin._sweep._grid import Grid
    from flowlin._sweep._plan import plan_chunks

    grid = Grid.build(
        "fig1_gpu", [problem], list(cfg["widths"]), [cfg["alpha"]], seeds, None, "paper"
    )
    return grid, plan_chunks(grid, chunk_size, n_devices, pad_widths=False, gram=True)


def steps_by_row(ds, grid):
    """Each row's solver steps (accepted and rejected: the loop iterations it needs)."""
    import xarray as xr

    from flowlin import _dataset as schema

    at = {
        schema.WIDTH: xr.DataArray(grid.width, dims="row"),
        schema.SCALE: xr.DataArray(grid.scales[grid.scale_index, 0], dims="row"),
        schema.SEED: xr.DataArray(grid.seed, dims="row"),
    }
    return ds[schema.NUM_STEPS].sel(at).values


def utilisation(steps, chunks, n_devices: int, batch_size: int | None) -> dict:
    """Useful and total slot-steps when each chunk is split evenly over `n_devices` and each
    device maps its share in consecutive batches of `batch_size` (None: all of it at once;
    a last, smaller batch is its own vmap, as in `jax.lax.map`)."""
    import numpy as np

    useful = slots = 0
    for chunk in chunks:
        s = steps[chunk.rows]  # padding rows repeat the bucket's last row: they cost steps
        useful += int(s[: chunk.valid].sum())
        for share in np.split(s, n_devices):
            b = len(share) if batch_size is None else batch_size
            for i in range(0, len(share), b):
                batch = share[i : i + b]
                slots += len(batch) * int(batch.max())
    return dict(useful_steps=useful, slot_steps=slots, utilisation=useful / slots)


def one_sweep(problem, cfg, seeds, chunk_size, batch_size, devices, time_left):
    """Time one sweep (first call; a warm second call if time allows): row and seconds spent."""
    import numpy as np

    import flowlin
    from flowlin import _dataset as schema
    from flowlin._sweep._kernel import default_batch_size, make_mesh

    executor = flowlin.LocalExecutor(devices, batch_size=batch_size)

    def call():
        return flowlin.sweep(
            problem,
            widths=list(cfg["widths"]),
            scales=[cfg["alpha"]],
            seeds=seeds,
            init="paper",
            sampling="wishart",
            method=flowlin.Gram(),
            t1=T1,
            saveat=np.linspace(0.0, T1, SAVES),
            theory=True,
            bounds=True,
            chunk_size=chunk_size,
            executor=executor,
            progress=False,
        )

    first, warm, ds = H.first_and_warm(call, time_left)
    n_dev = len(devices)
    grid, chunks = chunk_plan(problem, cfg, seeds, chunk_size, n_dev)
    # What the executor does with batch_size=None (the whole per-device chunk on a GPU; one
    # configuration at a time on a CPU).
    batch = batch_size or default_batch_size(make_mesh(devices), len(chunks[0].rows) // n_dev)
    steps = steps_by_row(ds, grid)
    run = warm if warm is not None else first
    row = dict(
        chunk_size=chunk_size,
        batch_size=batch if batch_size else f"{batch} (default)",
        configs=len(grid),
        first_call_s=first,
        run_s=run,
        timed="warm" if warm is not None else "first call",
        configs_per_s=len(grid) / run,
        mean_steps=float(steps.mean()),
        max_steps=int(steps.max()),
        succeeded_fraction=float(ds[schema.SUCCEEDED].mean()),
        **utilisation(steps, chunks, n_dev, batch),
        **H.peak_memory(),
    )
    return row, steps, (chunks, n_dev), first + (warm or 0.0)


def predictions(chunk_size: int, steps, chunks, n_dev: int) -> list[dict]:
    """The utilisation other batch sizes would give with the same runs and chunks."""
    per_device = len(chunks[0].rows) // n_dev
    return [
        dict(chunk_size=chunk_size, batch_size=b or f"{per_device} (chunk)",
             **utilisation(steps, chunks, n_dev, b))
        for b in PREDICTED_BATCHES
        if b is None or b < per_device
    ]  # fmt: skip


def fig1_gpu(
    configs: int = 1_000_000,
    *,
    chunk_sizes=(16384,),
    batch_sizes=(None,),
    time_cap: float = 300.0,
    quick: bool = False,
    devices=None,
    echo=print,
) -> dict:
    """Time the Fig. 1 gram sweep at `configs` configurations for each chunk and batch size
    (`None`: the whole per-device chunk, the GPU default), with the slot-step utilisation.
    `devices`: the devices every chunk is split over (default: all of this process's)."""
    import jax

    import flowlin

    devices = list(jax.local_devices() if devices is None else devices)

    cfg = FIG1_QUICK if quick else FIG1
    seeds = max(1, -(-int(configs) // len(cfg["widths"])))
    problem = flowlin.problems.gaussian(jax.random.key(0), n=cfg["n"], D=cfg["D"], m=cfg["m"])
    load_before = H.load_average()
    echo(
        f"Fig. 1 gram sweep (theory and bounds, Wishart sampling) on "
        f"{jax.devices()[0].device_kind} ({jax.default_backend()}): "
        f"{seeds * len(cfg['widths'])} configurations on {len(devices)} device(s), "
        f"time cap {time_cap:g} s"
    )
    rows, predicted, spent = [], [], 0.0
    for chunk_size in chunk_sizes:
        first_steps = None
        for batch_size in batch_sizes:
            if spent >= time_cap:
                echo(f"  chunk {chunk_size}, batch {batch_size}: skipped (time cap reached)")
                continue
            row, steps, plan, seconds = one_sweep(
                problem, cfg, seeds, chunk_size, batch_size, devices, time_cap - spent
            )
            spent += seconds
            if first_steps is None:
                first_steps = steps
                predicted += predictions(chunk_size, steps, *plan)
            # The predictions assume each run's step count does not depend on its batch.
            row["steps_as_first_batching"] = bool((steps == first_steps).all())
            rows.append(row)
            echo(
                f"  chunk {chunk_size}, batch {row['batch_size']}: {row['run_s']:.2f} s "
                f"({row['configs_per_s']:.0f} configs/s, {row['timed']}), "
                f"utilisation {row['utilisation']:.1%}"
            )
    echo("")
    H.print_table(
        rows,
        [
            ("chunk_size", "chunk", "d"),
            ("batch_size", "batch", ""),
            ("configs", "configs", "d"),
            ("first_call_s", "first call (s)", ".2f"),
            ("run_s", "timed (s)", ".2f"),
            ("timed", "timed call", ""),
            ("configs_per_s", "configs/s", ".0f"),
            ("mean_steps", "mean steps", ".1f"),
            ("max_steps", "max steps", "d"),
            ("utilisation", "slot-step utilisation", ".3f"),
            ("steps_as_first_batching", "same steps", ""),
            ("succeeded_fraction", "succeeded", ".3f"),
            ("device_peak_mib", "device peak so far (MiB)", ".0f"),
        ],
        echo=echo,
    )
    echo("\nThe same step counts, other batch sizes (predicted slot-step utilisation):")
    H.print_table(
        predicted,
        [
            ("chunk_size", "chunk", "d"),
            ("batch_size", "batch", ""),
            ("utilisation", "utilisation", ".3f"),
        ],
        echo=echo,
    )
    settings = dict(
        problem=dict(cfg, widths=list(cfg["widths"])),
        seeds=seeds,
        t1=T1,
        saves=SAVES,
        sampling="wishart",
        method="gram",
        theory=True,
        bounds=True,
        devices=[str(d) for d in devices],
        chunk_sizes=list(chunk_sizes),
        batch_sizes=[b if b is not None else "chunk" for b in batch_sizes],
        time_cap_s=time_cap,
        on_cpu=jax.default_backend() == "cpu",
        timing="second call when the first left time (compile excluded), else the first call",
    )
    return H.record(
        "fig1_gpu",
        settings,
        rows,
        predicted=predicted,
        load_before=load_before,
        load_after=H.load_average(),
    )


def _sizes(text: str) -> list:
    return [None if s == "chunk" else int(s) for s in text.split(",")]


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--configs", type=int, default=1_000_000)
    p.add_argument("--chunk-sizes", default="16384,65536", help="comma-separated")
    p.add_argument(
        "--batch-sizes", default="chunk,1024", help="comma-separated; 'chunk': the whole chunk"
    )
    p.add_argument("--time-cap", type=float, default=300.0, help="seconds, all sweeps together")
    args = p.parse_args()
    if args.quick:
        args.configs, args.chunk_sizes, args.batch_sizes = 28, "14", "1,14"
    H.enable_x64()
    result = fig1_gpu(
        args.configs,
        chunk_sizes=_sizes(args.chunk_sizes),
        batch_sizes=_sizes(args.batch_sizes),
        time_cap=args.time_cap,
        quick=args.quick,
    )
    H.finish(result, args.out, "fig1_gpu")
