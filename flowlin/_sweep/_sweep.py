"""`flowlin.sweep`: normalise the arguments, then grid → plan → executor → store → dataset."""

import os
import pathlib
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import diffrax as dfx
import jax
import jax.numpy as jnp
import xarray as xr
from jaxtyping import ArrayLike

from .. import _dataset as schema
from .._custom_types import ScalarLike
from .._flow import DEFAULT_MAX_STEPS
from .._method import AbstractFlowMethod, FullWeights, Gram
from .._misc import full_precision
from .._problem import Problem
from .._results import status_names
from .._saveat import SaveAt
from ._executor import AbstractExecutor, LocalExecutor, caller_stacklevel, check_executor
from ._grid import Grid
from ._kernel import TRACES, Payload, SweepTask
from ._plan import chunk_coordinates, fingerprint, plan_chunks
from ._ray import RayExecutor
from ._settings import SweepSettings, make_settings
from ._store import ShardStore, StoreMismatchError, find_result, read_dataset, require_zarr
from ._validate import (
    DynamicsName,
    InitName,
    SamplingName,
    StoreFormat,
    as_problems,
    check_arguments,
    configs_have_depth,
    refuse_traced,
)


_CALL = "flowlin.sweep(...)"
#: The packages whose versions are part of a store's fingerprint (they fix the numbers).
FINGERPRINT_PACKAGES = ("flowlin", "jax", "jaxlib", "diffrax")


@full_precision
def sweep(
    problems: Problem | Sequence[Problem],
    widths: ArrayLike | Sequence | None = None,
    scales: ArrayLike | Sequence | None = None,
    seeds: int | ArrayLike | Sequence = 1,
    *,
    depths: int | Sequence[int] | None = None,
    configs: Sequence[Mapping] | None = None,
    init: InitName = "paper",
    sampling: SamplingName = "weights",
    method: AbstractFlowMethod | None = None,
    dynamics: DynamicsName = "flow",
    t1: ScalarLike = 50.0,
    lr: ScalarLike | None = None,
    steps: int | None = None,
    averaged: bool = False,
    saveat: SaveAt | ArrayLike | Sequence[float] | None = None,
    stop_at_loss: ScalarLike | None = None,
    solver: dfx.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    theory: bool = True,
    bounds: bool = True,
    delta: float = 0.05,
    key: int | jax.Array = 0,
    chunk_size: int = 64,
    store: str | pathlib.Path | None = None,
    store_format: StoreFormat | None = None,
    executor: AbstractExecutor | Literal["local", "ray"] = LocalExecutor(),
    progress: bool = True,
) -> xr.Dataset:
    r"""Solve a grid (or list) of initializations in bulk and check every bound on each.

    The grid is width × scale × seed (× problem): for each configuration the network is
    initialized (`init="paper"`: entries $N(0, h^{-2\alpha})$ with `scale` $=\alpha$;
    `init="gaussian"`: entries $N(0,\sigma_1^2)$ / $N(0,\sigma_2^2)$ with `scale` $=\sigma$ or a
    pair $(\sigma_1,\sigma_2)$), trained by gradient flow (`method=flowlin.Gram()`, the
    width-independent solver of docs/theory.md §3, or `flowlin.FullWeights()`) or by gradient
    descent (`dynamics="descent"`), and compared with every result of `flowlin.theory`.

    Configurations are bucketed by width (zero-padded, exact by docs/theory.md §3) and cut into
    chunks that share one compiled program (each shape compiles once per sweep and process),
    which the `executor` computes (see `docs/ray.md`; what the buckets, chunks and batches cost
    and save is measured in `benchmarks/README.md`).

    **Arguments:**

    - `problems`: a `flowlin.Problem`, or a list of problems of equal shapes and dtype
      (data draws).
    - `widths`, `scales`, `seeds`: the grid. `seeds` may be an int $k$ (seeds $0..k-1$).
      Seed $s$ initializes from `fold_in(key, s)`, identically for every width and method.
    - `depths`: deep linear networks $W_L\cdots W_1$ (docs/theory.md §6, docs/deep.md): the
      depths $L \ge 2$ to sweep, a grid axis before `width` (every hidden layer has width
      $h$; `init="paper"`, `flowlin.init.deep_gaussian` from seed $s$'s key; weights
      integrated by `flowlin.FullWeights()`, each (depth, width) one compiled shape, never
      padded). `None` (default): two-layer networks, exactly as without this argument.
    - `configs`: instead of a grid, a list of mappings with keys `width`, `scale`, `seed` (,
      `problem`, `depth`: in every config or none); any other key is refused.
    - `init`: `"paper"` or `"gaussian"` (see above). `sampling`: `"weights"` materializes
      the width-$h$ weights (exact, comparable across methods); `"wishart"` (`flowlin.Gram()`
      only) samples the width-independent statistics directly from their Wishart law, so
      $h = 10^9$ costs what $h = 10$ does.
    - `method`: a flow method, `flowlin.Gram()` (default for two layers) or
      `flowlin.FullWeights()` (default, and the only choice, with `depths`);
      `dynamics`: `"flow"` or `"descent"` (then `lr`, `steps`, `averaged` as in
      `flowlin.gradient_descent`; with `"flow"` they are refused, as `solver`, `rtol` and
      `atol` are with `"descent"`: an option the dynamics does not read is not dropped
      silently).
    - `t1`, `saveat`, `stop_at_loss`, `solver`, `rtol`, `atol`, `max_steps`: as in
      `flowlin.gradient_flow`. Default save times: 21 equally spaced in $[0, t_1]$.
    - `theory`, `bounds`: store `flowlin.theory.quantities` and `flowlin.check_bounds` for
      every run; `delta` is the failure probability of the wide-network results.
    - `chunk_size`: configurations per compiled chunk (memory stays bounded by it).
    - `store`: where the results go, chunk by chunk, so that the same call run again resumes
      (recomputing nothing already written): a folder (`result.nc` inside; Zarr with
      `store_format="zarr"`), or a `.nc` file or `.zarr` store, which is then exactly the
      merged result (its working files live beside it in `<name>.parts/`). Every shard's
      checksum and configurations are kept in the store's manifest and verified before a
      resume adopts it; one sweep writes to a store at a time. Read the result back with
      `flowlin.open_sweep(store)`. Zarr needs the `zarr` package (`flowlin[zarr]`).
    - `executor`: `flowlin.LocalExecutor(devices=None, batch_size=None)` (default: every
      chunk split over this process's devices) or `flowlin.RayExecutor(...)` (docs/ray.md);
      `"local"` and `"ray"` name those two with their defaults.
    - `progress`: progress over chunks: a bar with ETA on a terminal or in a notebook, one
      line per chunk (stderr) in a log.

    **Returns:** an `xarray.Dataset` with dims `(problem, width, scale, seed[, time])` for a
    grid (`(problem, depth, width, scale, seed[, time])` with `depths`; `(config[, time])` for
    a list); variables: every diagnostic over `time`, their `final_*` values, `final_time`,
    `num_steps`, `status` (a `flowlin.RESULTS` code; messages in `attrs["status_codes"]`),
    `succeeded`, `converged`, `theory_*` quantities, and per bound
    `bound_<name>_{holds,applicable,worst_slack,tightness,excluded,reason}`; attrs record
    versions, dtype, tolerances, devices and settings. Failed runs are recorded (status),
    never raised, and never count as a bound holding. With `depths`, also
    `balancedness_drift` over `(time, layer)` (NaN beyond a run's L − 1 hidden layers),
    `final_head_norm` ($\|W_L\cdots W_2(\infty)\|_F$), the deep entries of
    `flowlin.check_bounds`, and the two-layer `theory_*` quantities at depth 2 only (NaN
    deeper, where they do not apply: `attrs["theory_at_depth"]`). A single problem's grid
    drops the `problem` dimension.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.gaussian(jax.random.key(0), n=10, D=40, m=1)
    ds = flowlin.sweep(problem, [50, 100, 200], [0.5], seeds=2, t1=50.0)
    print(flowlin.summarize_bounds(ds))
    ```
    """
    refuse_traced(_CALL, problems=problems, widths=widths, scales=scales, seeds=seeds,
                  depths=depths, t1=t1, lr=lr, steps=steps, stop_at_loss=stop_at_loss, rtol=rtol,
                  atol=atol, max_steps=max_steps, delta=delta, saveat=saveat)  # fmt: skip
    problems = as_problems(_CALL, problems)
    deep = depths is not None or configs_have_depth(configs)
    if method is None:
        method = FullWeights() if deep else Gram()
    check_arguments(
        _CALL, init=init, sampling=sampling, dynamics=dynamics, method=method, t1=t1, lr=lr,
        steps=steps, stop_at_loss=stop_at_loss, chunk_size=chunk_size, delta=delta,
        store_format=store_format, widths=widths, scales=scales, configs=configs,
        rtol=rtol, atol=atol, max_steps=max_steps, key=key, depths=depths, solver=solver,
        flags=dict(theory=theory, bounds=bounds, progress=progress, averaged=averaged),
        descent_only=dict(lr=lr, steps=steps, averaged=averaged), store=store,
    )  # fmt: skip
    executor = as_executor(_CALL, executor)
    chunk_size = int(chunk_size)  # a NumPy integer too (checked above)
    settings = make_settings(
        dtype=problems[0].dtype, n_samples=problems[0].n, init=init, sampling=sampling,
        method=method, dynamics=dynamics, t1=t1, lr=lr, steps=steps, averaged=averaged,
        saveat=saveat, stop_at_loss=stop_at_loss, solver=solver, rtol=rtol, atol=atol,
        max_steps=max_steps, theory=theory, bounds=bounds, delta=delta, key=key,
    )  # fmt: skip
    grid = Grid.build(_CALL, problems, widths, scales, seeds, configs, init, depths)
    return _run(grid, settings, executor, chunk_size, store, store_format, progress)


def as_executor(call: str, executor) -> AbstractExecutor:
    """The executor object: `"local"` and `"ray"` name `LocalExecutor()` and `RayExecutor()`
    with their defaults."""
    if isinstance(executor, str) and executor in ("local", "ray"):
        return LocalExecutor() if executor == "local" else RayExecutor()
    check_executor(call, executor)
    return executor


def _run(grid: Grid, settings: SweepSettings, executor, chunk_size, store, store_format, progress):
    """Plan the chunks, compute those the store lacks, and assemble the dataset."""
    executor = executor.resolve(_CALL, settings)
    chunks = plan_chunks(
        grid, chunk_size, executor.devices_per_chunk(),
        pad_widths=settings.sampling == "weights", gram=isinstance(settings.method, Gram),
    )  # fmt: skip
    described = dict(settings.to_json(), chunk_size=chunk_size, batch_size=executor.batch_size)
    installed = {k: v for k, v in schema.versions().items() if k in FINGERPRINT_PACKAGES}
    # The method each run uses, with its options: Gram(reconstruct=False) checks fewer bounds.
    run = dict(method=repr(settings.method_for_run))
    # batch_size is left out: it groups a device's runs, it does not change what they compute
    # (a store written with one batch size resumes with another).
    identity = {k: v for k, v in described.items() if k != "batch_size"}
    job = fingerprint(grid, chunks, dict(identity, versions=installed, run=run))
    header = dict(
        fingerprint=job, settings=described, versions=installed, run=run,
        n_chunks=len(chunks), n_configs=len(grid),
        devices_per_chunk=executor.devices_per_chunk(),
    )  # fmt: skip
    shards = None if store is None else ShardStore(_store_call(store), store, store_format)
    try:
        done = set() if shards is None else _open_store(shards, header, grid, chunks)
        ds, places, compiled = _compute(grid, settings, executor, chunks, shards, done, progress)
        ds.attrs.update(
            schema.run_attrs(
                settings=described, devices=places, n_chunks=len(chunks), resumed=len(done),
                compiled_shapes=compiled, fingerprint=job, status_codes=status_names(),
            )
        )  # fmt: skip
        if grid.depth is not None:
            ds.attrs.update(schema.DEPTH_ATTRS)
        if shards is not None:
            shards.write_result(ds)
    finally:
        if shards is not None:
            shards.close()
    return ds


def _compute(grid: Grid, settings, executor, chunks, shards, done: set, progress):
    """Compute the chunks not `done` with the executor, read the others from the store;
    returns the dataset, where chunks ran and how many shapes were compiled."""
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *grid.problems)
    task = SweepTask(Payload(settings, stacked), grid, executor.batch_size)
    traces_before = TRACES["run_one"]
    results, places = {}, dict.fromkeys(executor.known_devices())
    pending = [c for c in chunks if c.index not in done]
    for finished in executor.run(
        task, pending, shards, progress=progress, total=len(chunks), initial=len(done)
    ):
        results[finished.chunk.index] = (finished.rows, finished.arrays)
        places.update(dict.fromkeys(finished.where))
    for index in sorted(done):
        results[index] = schema.shard_arrays(shards.read(index))
    ds = grid.assemble(results, settings.ts)
    return ds, list(places), TRACES["run_one"] - traces_before


def _store_call(store) -> str:
    return f"flowlin.sweep(store={str(store)!r})"


def _open_store(shards: ShardStore, header: dict, grid: Grid, chunks) -> set[int]:
    """Take the store (lock), verify its shards, and return the chunks it already holds;
    every rejected shard is a warning naming its file."""
    expected = {c.index: chunk_coordinates(grid, c) for c in chunks}
    try:
        done = shards.open(header, expected)
    except StoreMismatchError as e:
        raise StoreMismatchError(
            f"`{shards.call}`: this store holds a different sweep (its problems, grid, "
            f"settings, package versions or chunking differ; chunks depend on chunk_size and "
            f"on the devices per chunk): {e}. Use a new store path or delete the old one",
            differences=str(e),
        ) from None
    for message in shards.rejected:
        warnings.warn(message, stacklevel=caller_stacklevel())
    return done


def open_sweep(path: str | os.PathLike) -> xr.Dataset:
    """Load the merged result of a finished `flowlin.sweep(..., store=path)`.

    **Arguments:** `path`, what was given as `store=`: a folder (its `result.nc` or
    `result.zarr` is read), a `.nc` file or a `.zarr` store. Reading takes no lock: it works
    while another sweep writes to the same store (it reads the last finished result).

    **Returns:** the same `xarray.Dataset` the sweep returned (loaded into memory).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`flowlin.open_sweep(path)`: path must be a str or os.PathLike (what was given as "
            f"store=), got {type(path).__name__}"
        )
    call = f"flowlin.open_sweep({str(path)!r})"
    found = find_result(path)
    if found is None:
        raise FileNotFoundError(
            f"`{call}`: no finished sweep result there; the sweep may not have finished (run "
            "the same flowlin.sweep(..., store=...) call again to resume it) or the path is "
            "not a store"
        )
    require_zarr(call, path, found[1])
    try:
        return read_dataset(*found)
    except (OSError, ValueError, KeyError) as e:  # not a netCDF file / Zarr store xarray reads
        reason = f"{type(e).__name__}: {e}"
    raise ValueError(f"`{call}`: {found[0]} is not a readable sweep result ({reason})")
