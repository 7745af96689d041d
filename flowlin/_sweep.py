"""Vmapped sweeps over width × initialization scale × seed (× data draw), checked in bulk."""

import collections
import dataclasses
import datetime
import functools
import hashlib
import importlib.metadata
import json
import warnings
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import ArrayLike

from ._custom_types import ScalarLike
from ._descent import gradient_descent
from ._flow import DEFAULT_MAX_STEPS, gradient_flow, resolve_tolerances
from ._init import gaussian as gaussian_init
from ._problem import Problem
from ._results import status_names
from ._saveat import DIAGNOSTICS, SaveAt
from ._store import ShardStore, dataset_to_arrays, shard_to_dataset


INITS = ("paper", "gaussian")
METHODS = ("gram", "full")
DYNAMICS = ("flow", "descent")
SAMPLINGS = ("weights", "wishart")
#: Save times per run when none are given: enough to check the bounds along the path.
DEFAULT_SWEEP_SAVES = 21
#: Widths that share a compiled shape are padded to at most this factor of the smallest
#: (the full solver pays for the padded width; the gram solver only at initialization).
WIDTH_BUCKET_RATIO = 2.0
#: The gram solver's cost does not depend on the width, so for it widths also share a bucket
#: whenever the padded weights of one configuration stay under this many entries (width ·
#: (D + m)): fewer compiled shapes (each costs seconds) at a negligible initialization cost.
GRAM_BUCKET_ENTRIES = 2**18
#: On CPU, a chunk runs one configuration at a time (unless `batch_size` is given): see
#: `_default_batch_size` — batched LAPACK kernels deadlock jaxlib's CPU thread pool.
#: Accelerators run each device's share of the chunk as one vmap.
CPU_BATCH_SIZE = 1


# --------------------------------------------------------------------------------------------
# What runs inside one compiled chunk
# --------------------------------------------------------------------------------------------
class _Static(eqx.Module):
    """Everything that fixes the compiled program (hashed by `filter_jit`)."""

    init: str = eqx.field(static=True)
    sampling: str = eqx.field(static=True)
    method: str = eqx.field(static=True)
    dynamics: str = eqx.field(static=True)
    averaged: bool = eqx.field(static=True)
    diagnostics: tuple[str, ...] = eqx.field(static=True)
    solver: object = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    has_threshold: bool = eqx.field(static=True)
    theory: bool = eqx.field(static=True)
    bounds: bool = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    pad_to: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    mesh: jax.sharding.Mesh = eqx.field(static=True)


class _Dynamic(eqx.Module):
    """Arrays shared by all configurations of a sweep (traced, so changing them never
    recompiles)."""

    problems: Problem  # stacked along a leading axis
    key: jax.Array
    ts: jax.Array
    t1: jax.Array
    lr: jax.Array
    steps: jax.Array
    threshold: jax.Array


#: Number of times the per-configuration function was traced, per sweep call (the compile-once
#: guarantee is checked against this).
_TRACES = collections.Counter()


def _run_one(dyn: _Dynamic, st: _Static, problem_index, width, s1, s2, seed):
    _TRACES["run_one"] += 1
    problem = jax.tree.map(lambda x: x[problem_index], dyn.problems)
    key = jax.random.fold_in(dyn.key, seed)
    dtype = problem.dtype
    width_f = width.astype(dtype)
    if st.init == "paper":
        alpha = s1
        std1 = std2 = width_f ** (-alpha)
    else:
        alpha = None
        std1, std2 = s1, s2
    if st.sampling == "wishart":
        from ._wishart import wishart

        init = wishart(key, problem, width, std1, std2)
    else:
        init = gaussian_init(
            key, problem.D, problem.m, width, std1, std2, pad_to=st.pad_to, dtype=dtype
        )
    saveat = SaveAt(dyn.ts, diagnostics=st.diagnostics)
    threshold = dyn.threshold if st.has_threshold else None
    if st.dynamics == "flow":
        # The rebuilt final network (an O(h·D·(r+m)) product) is read only by check_bounds.
        options = (
            dict(reconstruct=False)
            if st.method == "gram" and st.sampling == "weights" and not st.bounds
            else {}
        )
        traj = gradient_flow(
            init,
            problem,
            dyn.t1,
            saveat=saveat,
            method=st.method,
            solver=st.solver,
            rtol=st.rtol,
            atol=st.atol,
            max_steps=st.max_steps,
            stop_at_loss=threshold,
            **options,
        )
    else:
        traj = gradient_descent(
            init,
            problem,
            dyn.lr,
            dyn.steps,
            averaged=st.averaged,
            saveat=saveat,
            stop_at_loss=threshold,
        )
    succeeded = traj.succeeded
    out = {f"time_{k}": getattr(traj, k) for k in st.diagnostics}
    out.update({f"final_{k}": v for k, v in traj.final_values.items()})
    out["final_time"] = traj.final_time
    out["num_steps"] = traj.num_steps
    out["status"] = traj.result._value
    out["succeeded"] = succeeded
    if st.theory:
        from .theory import quantities

        q = quantities(init, problem, width=width_f, alpha=alpha, delta=st.delta)
        out.update({f"theory_{k}": jnp.asarray(v, dtype) for k, v in q.items()})
    if st.bounds:
        from ._bounds import check_bounds

        checks = check_bounds(traj, init, problem, width=width_f, alpha=alpha, delta=st.delta)
        for name, c in checks.items():
            applicable = c.applicable & succeeded
            out[f"bound_{name}_applicable"] = applicable
            # A failed run never counts as "bound holds".
            out[f"bound_{name}_holds"] = c.holds & applicable
            out[f"bound_{name}_worst_slack"] = c.worst_slack
            out[f"bound_{name}_tightness"] = c.tightness
    return out


@eqx.filter_jit
def _run_chunk(dyn: _Dynamic, cfg: dict, st: _Static):
    """One chunk: split over the devices of `st.mesh` with `shard_map` (each device runs its
    own adaptive loops, no lockstep across devices — see performance.md), vmapped on each."""
    _TRACES["chunk"] += 1

    def one(c):
        return _run_one(dyn, st, c["problem"], c["width"], c["s1"], c["s2"], c["seed"])

    def local(cfg):
        if st.batch_size >= cfg["seed"].shape[0]:
            return jax.vmap(one)(cfg)
        if st.batch_size == 1:
            # One configuration at a time: no batched LAPACK calls (see `_default_batch_size`).
            return jax.lax.map(one, cfg)
        # Sequential over sub-batches of `batch_size`, vmapped within: bounds lockstep waste.
        return jax.lax.map(one, cfg, batch_size=st.batch_size)

    if st.mesh.devices.size == 1:
        # One device: no shard_map. (Inside shard_map, diffrax's event root find — used by
        # stop_at_loss — fails to trace with "pytree does not match out_structure" from lineax,
        # jax 0.9.2 / diffrax 0.7; on one device it is not needed.)
        return local(cfg)
    spec = jax.sharding.PartitionSpec(_DEVICE_AXIS)
    return jax.shard_map(local, mesh=st.mesh, in_specs=(spec,), out_specs=spec, check_vma=False)(
        cfg
    )


_DEVICE_AXIS = "devices"


# --------------------------------------------------------------------------------------------
# Planning: the flat table of configurations and its chunks
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Chunk:
    index: int
    pad_to: int
    rows: np.ndarray  # flat configuration indices (the last chunk of a bucket is padded by
    valid: int  # repeating its last row; only the first `valid` results are kept)


@dataclasses.dataclass
class SweepPlan:
    """The configurations of a sweep, how they are chunked, and how to label the results."""

    problem: np.ndarray  # (N,) int
    width: np.ndarray  # (N,) int
    scale_index: np.ndarray  # (N,) int
    seed: np.ndarray  # (N,) int
    scales: np.ndarray  # (S, 2) float
    chunks: list
    grid_shape: tuple | None  # (P, W, S, K) for a grid; None for an explicit list
    widths: np.ndarray
    seeds: np.ndarray


def _round_up(x: int, k: int) -> int:
    return -(-x // k) * k


def _buckets(widths: np.ndarray, ratio: float, max_shared: int = 0) -> dict[int, int]:
    """Map each width to the padded width of its bucket (geometric buckets; widths up to
    `max_shared` may also share one bucket whatever their ratio)."""
    out = {}
    ws = sorted(set(int(w) for w in widths))
    i = 0
    while i < len(ws):
        j = i
        while j + 1 < len(ws) and (ws[j + 1] <= ratio * ws[i] or ws[j + 1] <= max_shared):
            j += 1
        for w in ws[i : j + 1]:
            out[w] = ws[j]
        i = j + 1
    return out


def _log_product_scale(init: str, width: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """log of the typical size of an initial product W2W1's entries: std1·std2·√h."""
    width = np.asarray(width, float)
    if init == "paper":  # std = h^-alpha for both layers
        return (0.5 - 2 * pairs[:, 0]) * np.log(width)
    return np.log(pairs[:, 0]) + np.log(pairs[:, 1]) + 0.5 * np.log(width)


def _plan(
    problem_idx,
    width,
    scale_index,
    seed,
    scales,
    chunk_size,
    pad_widths,
    grid_shape,
    widths,
    seeds,
    n_devices,
    max_shared: int = 0,
    init: str = "gaussian",
):
    n = len(width)
    if pad_widths:
        bucket_of = _buckets(width, WIDTH_BUCKET_RATIO, max_shared)
        pad = np.array([bucket_of[int(w)] for w in width])
    else:
        pad = np.ones(n, dtype=int)  # shapes independent of the width (Wishart sampling)
    # Bucket by padded width; inside a bucket, order by the initial product's scale
    # (‖W2W1‖ ~ std1·std2·√h: it sets the plateau a run starts on, hence its step count) so
    # that a chunk, and each vmapped batch in it, holds runs of similar length (less lockstep
    # waste), then by scale, width, seed, problem.
    order = np.lexsort(
        (
            problem_idx,
            seed,
            width,
            scales[scale_index, 1],
            scales[scale_index, 0],
            np.round(_log_product_scale(init, width, scales[scale_index]), 1),
            pad,
        )
    )
    chunks = []
    for p in sorted(set(pad.tolist())):
        rows = order[pad[order] == p]
        # Every chunk of a bucket has one size (one compiled shape), a multiple of the number
        # of devices; the last chunk is padded by repeating its last configuration.
        size = _round_up(min(chunk_size, len(rows)), n_devices)
        for start in range(0, len(rows), size):
            part = rows[start : start + size]
            valid = len(part)
            if valid < size:
                part = np.concatenate([part, np.full(size - valid, part[-1])])
            chunks.append(Chunk(len(chunks), int(p), part, valid))
    return SweepPlan(
        problem_idx, width, scale_index, seed, scales, chunks, grid_shape, widths, seeds
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
def _as_problems(call, problems) -> list[Problem]:
    if isinstance(problems, Problem):
        return [problems]
    problems = list(problems) if isinstance(problems, Sequence) else None
    if not problems or not all(isinstance(p, Problem) for p in problems):
        raise TypeError(f"`{call}`: problems must be a flowlin.Problem or a list of them")
    first = problems[0]
    for i, p in enumerate(problems[1:], 1):
        if (p.X.shape, p.Y.shape, p.rank) != (first.X.shape, first.Y.shape, first.rank):
            raise ValueError(
                f"`{call}`: problems[{i}] has X {p.X.shape}, Y {p.Y.shape}, rank {p.rank} but "
                f"problems[0] has X {first.X.shape}, Y {first.Y.shape}, rank {first.rank}; the "
                "problems of one sweep must share shapes and rank"
            )
    return problems


def _scale_pairs(call, init, scales) -> np.ndarray:
    arr = np.asarray(scales, dtype=float)
    if arr.ndim == 1:
        arr = np.stack([arr, arr], axis=1)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"`{call}`: scales must be a non-empty list of numbers or of (std1, std2) pairs, got "
            f"shape {np.shape(scales)}"
        )
    if init == "paper" and not np.all(arr[:, 0] == arr[:, 1]):
        raise ValueError(f"`{call}`: init='paper' takes one exponent alpha per scale, not pairs")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        what = "alpha (init='paper': entries N(0, h^-2α))" if init == "paper" else "std"
        raise ValueError(f"`{call}`: every scale ({what}) must be finite and > 0, got {scales!r}")
    return arr


def _int_array(call, name, values, minimum) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr[None]
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        if arr.size and np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(
                f"`{call}`: {name} must be a non-empty list of integers, got {values!r}"
            )
    if np.any(arr < minimum):
        raise ValueError(f"`{call}`: every entry of {name} must be >= {minimum}, got {values!r}")
    return arr.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _versions() -> dict:
    out = {}
    for pkg in ("flowlin", "jax", "jaxlib", "equinox", "diffrax", "optax", "xarray"):
        try:
            out[f"{pkg}_version"] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[f"{pkg}_version"] = "unknown"
    return out


def _fingerprint(problems, plan, settings) -> str:
    h = hashlib.sha256()
    for p in problems:
        h.update(np.ascontiguousarray(np.asarray(p.X)).tobytes())
        h.update(np.ascontiguousarray(np.asarray(p.Y)).tobytes())
    for a in (plan.problem, plan.width, plan.scale_index, plan.seed, plan.scales):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    # The chunks themselves, not just their number: shards of a differently chunked run of the
    # same grid (another chunk_size, or another number of devices per chunk, e.g. local vs Ray)
    # would leave rows uncomputed or computed twice.
    for c in plan.chunks:
        h.update(np.asarray([c.index, c.pad_to, c.valid], np.int64).tobytes())
        h.update(np.ascontiguousarray(c.rows, np.int64).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------
def sweep(
    problems: Problem | Sequence[Problem],
    widths: ArrayLike | Sequence | None = None,
    scales: ArrayLike | Sequence | None = None,
    seeds: int | ArrayLike | Sequence = 1,
    *,
    configs: Sequence[Mapping] | None = None,
    init: str = "paper",
    sampling: str = "weights",
    method: str = "gram",
    dynamics: str = "flow",
    t1: ScalarLike = 50.0,
    lr: ScalarLike | None = None,
    steps: int | None = None,
    averaged: bool = False,
    saveat: SaveAt | ArrayLike | Sequence[float] | None = None,
    stop_at_loss: ScalarLike | None = None,
    solver=None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    theory: bool = True,
    bounds: bool = True,
    delta: float = 0.05,
    key: int | jax.Array = 0,
    chunk_size: int = 64,
    batch_size: int | None = None,
    store=None,
    store_format: str | None = None,
    executor: str = "local",
    executor_options: Mapping | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = True,
) -> xr.Dataset:
    r"""Solve a grid (or list) of initializations in bulk and check every bound on each.

    The grid is width × scale × seed (× problem): for each configuration the network is
    initialized (`init="paper"`: entries $N(0, h^{-2\alpha})$ with `scale` $=\alpha$;
    `init="gaussian"`: entries $N(0,\sigma_1^2)$ / $N(0,\sigma_2^2)$ with `scale` $=\sigma$ or a
    pair $(\sigma_1,\sigma_2)$), trained by gradient flow (`method="gram"`, the
    width-independent solver of theory.md §3, or `"full"`) or by gradient descent
    (`dynamics="descent"`), and compared with every result of `flowlin.theory`.

    Batching (see `performance.md`): configurations are bucketed by width (zero-padded to the
    bucket's largest width, exact by theory.md §3), ordered by scale inside a bucket to limit
    lockstep waste, cut into chunks of `chunk_size` that share one compiled program, and each
    chunk is split evenly over `devices` (default: all local devices) with `shard_map`: every
    device runs its own vmapped adaptive loop, never in lockstep with the other devices. Each
    distinct shape compiles once per sweep (per process).

    **Arguments:**

    - `problems`: a `flowlin.Problem`, or a list of problems of equal shapes (data draws).
    - `widths`, `scales`, `seeds`: the grid. `seeds` may be an int $k$ (seeds $0..k-1$).
      Seed $s$ initializes from `fold_in(key, s)`, identically for every width and method.
    - `configs`: instead of a grid, a list of mappings with keys `width`, `scale`, `seed` and
      optionally `problem` (an index into `problems`).
    - `init`: `"paper"` or `"gaussian"` (see above).
    - `sampling`: `"weights"` materializes the width-$h$ weights (exact, comparable across
      methods); `"wishart"` (gram method only) samples the width-independent statistics
      directly from their Wishart law, so $h = 10^9$ costs what $h = 10$ does.
    - `method`: `"gram"` (default) or `"full"`; `dynamics`: `"flow"` or `"descent"` (then `lr`,
      `steps`, `averaged` as in `flowlin.gradient_descent`).
    - `t1`, `saveat`, `stop_at_loss`, `solver`, `rtol`, `atol`, `max_steps`: as in
      `flowlin.gradient_flow`. Default save times: 21 equally spaced in $[0, t_1]$.
    - `theory`, `bounds`: store `flowlin.theory.quantities` and `flowlin.check_bounds` for
      every run; `delta` is the failure probability of the wide-network results.
    - `chunk_size`: configurations per compiled chunk (memory stays bounded by it);
      `batch_size`: configurations vmapped together on a device; a chunk runs as sequential
      batches of this size (`jax.lax.map`). Default: the device's whole share on GPUs, 1 on
      CPUs (jaxlib's batched LAPACK kernels can deadlock the CPU thread pool; batches of 8
      were ~1.8× faster on small problems, see `_sweep._default_batch_size`).
    - `store`: a folder; results are written chunk by chunk (netCDF, or Zarr if the path ends
      in `.zarr` or `store_format="zarr"`), and a sweep restarted with the same store resumes
      where it stopped, recomputing nothing that was written.
    - `executor`: `"local"` (this process's `devices`), or `"ray"`: one Ray task per chunk on
      a Ray cluster (`pip install flowlin[ray]`; see docs/ray.md). Ray places the tasks,
      retries those whose worker died, and the results are merged into the same Dataset; with
      `store=`, each task writes its own shard, so the store must be on a filesystem shared by
      all nodes.
    - `executor_options` (Ray only): `address` (an existing cluster, e.g. `"auto"` or
      `"ray://head:10001"`; default: Ray already initialized in this process, else
      `RAY_ADDRESS`, else a local instance of `local_num_cpus` CPUs (default 2), shut down
      after the sweep), and per task `num_cpus` (default 1), `num_gpus` (default 1 if the
      cluster has GPUs, else 0; a fraction shares a GPU; $k \geq 1$ gives each task $k$
      devices, and chunks a multiple of $k$ configurations), `memory`, `resources`,
      `max_retries` (retries of a task whose worker died, default 3) and `runtime_env`.
    - `devices` (local only): the devices to split each chunk over.
    - `progress`: a progress bar with ETA over chunks (shown only on a terminal).

    **Returns:** an `xarray.Dataset` with dims `(problem, width, scale, seed[, time])` for a
    grid (`(config[, time])` for a list); variables: every diagnostic over `time`, their
    `final_*` values, `final_time`, `num_steps`, `status` (a `flowlin.RESULTS` code; messages
    in `attrs["status_codes"]`), `succeeded`, `theory_*` quantities, and per bound
    `bound_<name>_{holds,applicable,worst_slack,tightness}`; attrs record versions, dtype,
    tolerances, devices and settings. Failed runs are recorded (status), never raised, and
    never count as a bound holding.

    **Example:**

    ```python
    problem = flowlin.problems.gaussian(jax.random.key(0), n=100, D=400, m=1)
    ds = flowlin.sweep(problem, widths=[500, 1000, 2000, 5000, 10000], scales=[0.5],
                       seeds=5, t1=100.0)
    print(flowlin.summarize_bounds(ds))
    ```
    """
    call = "flowlin.sweep(...)"
    problems = _as_problems(call, problems)
    if init not in INITS:
        raise ValueError(f"`{call}`: init must be one of {INITS}, got {init!r}")
    if method not in METHODS:
        raise ValueError(f"`{call}`: method must be one of {METHODS}, got {method!r}")
    if dynamics not in DYNAMICS:
        raise ValueError(f"`{call}`: dynamics must be one of {DYNAMICS}, got {dynamics!r}")
    if sampling not in SAMPLINGS:
        raise ValueError(f"`{call}`: sampling must be one of {SAMPLINGS}, got {sampling!r}")
    if sampling == "wishart" and (method != "gram" or dynamics != "flow"):
        raise ValueError(
            f"`{call}`: sampling='wishart' gives the Gram statistics, not weights: it needs "
            "method='gram' and dynamics='flow'"
        )
    if executor not in ("local", "ray"):
        raise ValueError(f"`{call}`: executor must be 'local' or 'ray', got {executor!r}")
    ray_options = None
    if executor == "ray":
        from ._ray import _import_ray, resolve_options

        ray_options = resolve_options(executor_options)
        if devices is not None:
            raise ValueError(
                f"`{call}`: devices=... chooses local devices; with executor='ray' each task "
                "uses the devices Ray gives it (executor_options={'num_gpus': ...})"
            )
        _import_ray()
    elif executor_options is not None:
        raise ValueError(
            f"`{call}`: executor_options is for executor='ray'; the local executor takes "
            "devices=... instead"
        )
    if dynamics == "descent":
        if lr is None or steps is None:
            raise ValueError(f"`{call}`: dynamics='descent' needs lr=... and steps=...")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"`{call}`: lr must be finite and > 0, got {lr!r}")
        if int(steps) < 0:
            raise ValueError(f"`{call}`: steps must be >= 0, got {steps!r}")
    elif not (np.isfinite(t1) and t1 > 0):
        raise ValueError(f"`{call}`: t1 must be finite and > 0, got {t1!r}")
    if stop_at_loss is not None and not (np.isfinite(stop_at_loss) and stop_at_loss > 0):
        raise ValueError(f"`{call}`: stop_at_loss must be finite and > 0, got {stop_at_loss!r}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`{call}`: chunk_size must be a positive int, got {chunk_size!r}")
    if not (0 < delta < 1):
        raise ValueError(f"`{call}`: delta must be in (0, 1), got {delta!r}")

    # The flat table of configurations.
    if configs is not None:
        if widths is not None or scales is not None:
            raise ValueError(f"`{call}`: give either configs=... or widths/scales/seeds, not both")
        configs = list(configs)
        if not configs:
            raise ValueError(f"`{call}`: configs is empty")
        for i, c in enumerate(configs):
            missing = {"width", "scale", "seed"} - set(c)
            if missing:
                raise ValueError(f"`{call}`: configs[{i}] lacks field(s) {sorted(missing)}")
        width = _int_array(call, "configs[...]['width']", [c["width"] for c in configs], 1)
        seed = _int_array(call, "configs[...]['seed']", [c["seed"] for c in configs], 0)
        pidx = _int_array(
            call, "configs[...]['problem']", [c.get("problem", 0) for c in configs], 0
        )
        if np.any(pidx >= len(problems)):
            raise ValueError(
                f"`{call}`: configs[...]['problem'] must index the {len(problems)} problem(s) given"
            )
        scale_pairs = _scale_pairs(call, init, [c["scale"] for c in configs])
        scale_index = np.arange(len(configs))
        grid_shape = None
        widths_arr, seeds_arr = width, seed
    else:
        if widths is None or scales is None:
            raise ValueError(f"`{call}`: give widths=... and scales=... (or configs=...)")
        widths_arr = _int_array(call, "widths", widths, 1)
        seeds_arr = (
            np.arange(seeds)
            if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool)
            else _int_array(call, "seeds", seeds, 0)
        )
        if len(seeds_arr) == 0:
            raise ValueError(f"`{call}`: seeds must be >= 1 (or a non-empty list)")
        scale_pairs = _scale_pairs(call, init, scales)
        P, W, S, K = len(problems), len(widths_arr), len(scale_pairs), len(seeds_arr)
        grid = np.meshgrid(np.arange(P), np.arange(W), np.arange(S), np.arange(K), indexing="ij")
        pidx, wi, scale_index, ki = (g.ravel() for g in grid)
        width, seed = widths_arr[wi], seeds_arr[ki]
        grid_shape = (P, W, S, K)

    dtype = problems[0].dtype
    rtol, atol = resolve_tolerances(dtype, rtol, atol)
    pad_widths = sampling == "weights"
    if executor == "local":
        devices = list(devices) if devices is not None else jax.local_devices()
        if not devices:
            raise ValueError(f"`{call}`: devices is empty")
        if stop_at_loss is not None and len(devices) > 1:
            # diffrax's event root find (stop_at_loss) fails to trace inside shard_map
            # ("pytree does not match out_structure", jax 0.9.2 / diffrax 0.7.2).
            warnings.warn(
                f"`{call}`: stop_at_loss runs on one device ({devices[0]}) — the event "
                f"does not trace under shard_map over {len(devices)} devices",
                stacklevel=2,
            )
            devices = devices[:1]
    n_devices = len(devices) if executor == "local" else ray_options.devices_per_task
    plan = _plan(
        pidx,
        width,
        scale_index,
        seed,
        scale_pairs,
        chunk_size,
        pad_widths,
        grid_shape,
        widths_arr,
        seeds_arr,
        n_devices,
        # The gram solve costs the same at every width: share shapes while memory allows.
        GRAM_BUCKET_ENTRIES // (problems[0].D + problems[0].m) if method == "gram" else 0,
        init,
    )

    # Save times shared by every run.
    horizon = (
        t1 if dynamics == "flow" else float(steps) * lr * (2.0 / problems[0].n if averaged else 1.0)
    )
    if saveat is None:
        saveat = SaveAt(np.linspace(0.0, horizon, DEFAULT_SWEEP_SAVES))
    elif not isinstance(saveat, SaveAt):
        saveat = SaveAt(saveat)
    if saveat.ts is None:
        saveat = SaveAt(
            np.linspace(0.0, horizon, DEFAULT_SWEEP_SAVES), diagnostics=saveat.diagnostics
        )
    diagnostics = saveat.diagnostics
    if bounds:
        diagnostics = tuple(DIAGNOSTICS)  # check_bounds reads every diagnostic
    ts = jnp.asarray(saveat.ts, dtype)
    if float(jnp.min(ts)) < 0 or float(jnp.max(ts)) > horizon * (1 + 1e-12):
        raise ValueError(f"`{call}`: saveat times must lie in [0, {horizon}]")

    settings = dict(
        init=init,
        sampling=sampling,
        method=method,
        dynamics=dynamics,
        t1=float(t1),
        lr=None if lr is None else float(lr),
        steps=None if steps is None else int(steps),
        averaged=bool(averaged),
        saveat=np.asarray(ts).tolist(),
        diagnostics=list(diagnostics),
        stop_at_loss=stop_at_loss,
        solver=type(solver).__name__ if solver else "Tsit5",
        rtol=rtol,
        atol=atol,
        max_steps=int(max_steps),
        theory=theory,
        bounds=bounds,
        delta=float(delta),
        key=str(np.asarray(jax.random.key_data(_as_key(key))).tolist()),
        chunk_size=chunk_size,
        batch_size=batch_size,
        dtype=str(np.dtype(dtype)),
    )
    fingerprint = _fingerprint(problems, plan, settings)

    stacked = jax.tree.map(lambda *x: jnp.stack(x), *problems)
    dyn = _Dynamic(
        problems=stacked,
        key=_as_key(key),
        ts=ts,
        t1=jnp.asarray(t1, dtype),
        lr=jnp.asarray(0.0 if lr is None else lr, dtype),
        steps=jnp.asarray(0 if steps is None else steps, jnp.int32),
        threshold=jnp.asarray(0.0 if stop_at_loss is None else stop_at_loss, dtype),
    )
    import diffrax as dfx

    static_common = dict(
        init=init,
        sampling=sampling,
        method=method,
        dynamics=dynamics,
        averaged=bool(averaged),
        diagnostics=tuple(diagnostics),
        solver=solver if solver is not None else dfx.Tsit5(),
        rtol=float(rtol),
        atol=float(atol),
        max_steps=int(max_steps),
        has_threshold=stop_at_loss is not None,
        theory=bool(theory),
        bounds=bool(bounds),
        delta=float(delta),
    )

    task = SweepTask(dyn, static_common, plan, dtype, batch_size)

    shard_store = None
    done: set[int] = set()
    description = dict(
        fingerprint=fingerprint,
        settings=settings,
        n_chunks=len(plan.chunks),
        n_configs=int(len(plan.width)),
    )
    if store is not None:
        shard_store = ShardStore(store, store_format)
        shard_store.open(description)
        done = shard_store.done() & {c.index for c in plan.chunks}

    traces_before = _TRACES["run_one"]
    results: dict[int, tuple[np.ndarray, dict]] = {}
    pending = [c for c in plan.chunks if c.index not in done]
    if executor == "ray":
        from ._ray import run_chunks_on_ray

        device_names = run_chunks_on_ray(
            task,
            pending,
            shard_store,
            results,
            ray_options,
            progress=progress,
            total=len(plan.chunks),
            initial=len(done),
        )
    else:
        device_names = [str(d) for d in devices]
        _run_local(
            task,
            pending,
            shard_store,
            results,
            devices,
            progress=progress,
            total=len(plan.chunks),
            initial=len(done),
        )

    if shard_store is not None:
        for index in sorted(done):
            rows, arrays = dataset_to_arrays(shard_store.read(index))
            results[index] = (rows, arrays)

    ds = _assemble(plan, problems, results, ts, scale_pairs, init)
    ds.attrs.update(dict(_versions()))
    ds.attrs.update({k: _attr(v) for k, v in settings.items()})
    ds.attrs["devices"] = json.dumps(device_names)
    ds.attrs["n_chunks"] = len(plan.chunks)
    ds.attrs["chunks_resumed_from_store"] = len(done)
    ds.attrs["compiled_shapes"] = _TRACES["run_one"] - traces_before
    ds.attrs["status_codes"] = json.dumps(status_names())
    ds.attrs["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    ds.attrs["fingerprint"] = fingerprint
    if shard_store is not None:
        shard_store.write_result(ds)
    return ds


def _attr(value):
    """A netCDF-storable attribute: bools as 0/1, containers and None as JSON text."""
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return value


def _as_key(key):
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key))
    return key


class SweepTask:
    """Everything needed to compute any chunk of a sweep; picklable, so that another process
    (a Ray worker) can compute chunks with its own devices."""

    def __init__(self, dyn: _Dynamic, static_common: dict, plan: SweepPlan, dtype, batch_size):
        self.dyn = dyn
        self.static_common = static_common
        self.plan = plan
        self.dtype = np.dtype(dtype)
        self.batch_size = batch_size

    def static(self, chunk: Chunk, mesh) -> _Static:
        n_dev = mesh.devices.size
        if len(chunk.rows) % n_dev:
            raise ValueError(
                f"chunk of {len(chunk.rows)} configurations cannot be split over {n_dev} devices"
            )
        per_device = len(chunk.rows) // n_dev
        batch_size = self.batch_size
        if batch_size is None:
            batch_size = _default_batch_size(mesh, per_device)
        return _Static(
            **self.static_common,
            pad_to=int(chunk.pad_to),
            batch_size=int(batch_size),
            mesh=mesh,
        )

    def inputs(self, chunk: Chunk) -> dict:
        r, plan = chunk.rows, self.plan
        return {
            "problem": np.asarray(plan.problem[r], np.int32),
            "width": np.asarray(plan.width[r], np.int32),
            "s1": np.asarray(plan.scales[plan.scale_index[r], 0], self.dtype),
            "s2": np.asarray(plan.scales[plan.scale_index[r], 1], self.dtype),
            "seed": np.asarray(plan.seed[r], np.int32),
        }

    def launch(self, chunk: Chunk, mesh, dyn=None) -> dict:
        """Start computing `chunk` on the devices of `mesh` (returns without waiting)."""
        split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(_DEVICE_AXIS))
        if dyn is None:
            replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
            dyn = jax.device_put(self.dyn, replicated)
        inputs = jax.device_put(self.inputs(chunk), split)
        return dispatch_chunk(chunk, dyn, inputs, self.static(chunk, mesh))

    @staticmethod
    def collect(chunk: Chunk, out: dict) -> tuple[np.ndarray, dict]:
        """Wait for a launched chunk; its rows and host arrays (padding dropped)."""
        arrays = {k: np.asarray(v)[: chunk.valid] for k, v in out.items()}
        return chunk.rows[: chunk.valid], arrays

    def compute(self, chunk: Chunk, devices=None) -> tuple[np.ndarray, dict]:
        """Compute one chunk synchronously on `devices` (default: this process's devices)."""
        return self.collect(chunk, self.launch(chunk, make_mesh(devices)))


def _default_batch_size(mesh, per_device: int) -> int:
    """Configurations vmapped together on one device when `batch_size` is not given.

    GPUs: the whole per-device share of the chunk. CPUs: one at a time (`jax.lax.map`). On
    CPU, jaxlib runs a LAPACK call (eigh, svd, qr — used by the diagnostics, theory and bound
    checks) by queueing pieces of it on the same intra-op thread pool that runs the devices'
    programs and blocking until they finish; with as many such calls in flight as pool
    threads the process deadlocks (seen with jaxlib 0.9.2 and 0.10.2 on 2 cores: batches of
    64 12×12 matrices per device over 4 host devices, and also unbatched 101×101 SVDs over 4
    devices). The fix is a larger pool, set at import (`flowlin._size_cpu_thread_pool`);
    running one configuration at a time (and one chunk in flight) keeps the number of
    kernels in flight small as well, in case JAX was initialized before flowlin. The price:
    on the performance.md grid batches of 8 took ~1.8× less CPU time than one at a time
    (benchmarks/README.md); pass `batch_size=8` if the pool is sized.
    """
    if all(d.platform == "cpu" for d in mesh.devices.flat):
        return min(per_device, CPU_BATCH_SIZE)
    return per_device


def make_mesh(devices=None) -> jax.sharding.Mesh:
    devices = jax.local_devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.array(devices), (_DEVICE_AXIS,))


def _run_local(
    task: SweepTask, pending, shard_store, results, devices, *, progress, total, initial
):
    """Run the pending chunks on this process's devices, two chunks in flight (JAX dispatch is
    asynchronous: the next chunk is launched while the last one's results are written)."""
    from ._progress import progress_bar

    mesh = make_mesh(devices)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    dyn = jax.device_put(task.dyn, replicated)
    inflight = collections.deque()
    with progress_bar(total=total, initial=initial, enabled=progress, unit="chunk") as bar:

        def finish():
            chunk, out = inflight.popleft()
            rows, arrays = task.collect(chunk, out)
            if shard_store is not None:
                shard_store.write(chunk.index, shard_to_dataset(chunk.index, rows, arrays))
            results[chunk.index] = (rows, arrays)
            bar.update(1)

        # On CPU, one chunk at a time: two executions sharing the host thread pool can
        # deadlock in jaxlib's batched LAPACK kernels (each blocks a pool thread waiting for
        # its batch items; seen with the batched SVD of check_bounds, jaxlib 0.9.2, 2 cores).
        on_cpu = all(d.platform == "cpu" for d in mesh.devices.flat)
        max_inflight = 1 if on_cpu else 2
        for chunk in pending:
            inflight.append((chunk, task.launch(chunk, mesh, dyn)))
            if len(inflight) >= max_inflight:
                finish()
        while inflight:
            finish()


def dispatch_chunk(chunk: Chunk, dyn: _Dynamic, inputs: dict, static: _Static) -> dict:
    """Launch one chunk (asynchronously) and return its device arrays."""
    return _run_chunk(dyn, inputs, static)


def _assemble(plan: SweepPlan, problems, results, ts, scale_pairs, init) -> xr.Dataset:
    n = len(plan.width)
    names = None
    store: dict[str, np.ndarray] = {}
    for rows, arrays in results.values():
        if names is None:
            names = list(arrays)
            for k, v in arrays.items():
                fill = (
                    False
                    if v.dtype == bool
                    else (-1 if np.issubdtype(v.dtype, np.integer) else np.nan)
                )
                store[k] = np.full((n,) + v.shape[1:], fill, dtype=v.dtype)
        for k, v in arrays.items():
            store[k][rows] = v
    if names is None:
        raise RuntimeError("flowlin.sweep: no chunk produced results")
    time = np.asarray(ts)
    scale_is_pair = not np.all(scale_pairs[:, 0] == scale_pairs[:, 1])
    if plan.grid_shape is not None:
        P, W, S, K = plan.grid_shape
        dims = ("problem", "width", "scale", "seed")
        coords = {
            "problem": np.arange(P),
            "width": plan.widths,
            "scale": np.arange(S) if scale_is_pair else scale_pairs[:, 0],
            "seed": plan.seeds,
            "time": time,
        }
        if scale_is_pair or init == "gaussian":
            coords["std1"] = ("scale", scale_pairs[:, 0])
            coords["std2"] = ("scale", scale_pairs[:, 1])
        shape = (P, W, S, K)
    else:
        dims = ("config",)
        coords = {
            "config": np.arange(n),
            "problem": ("config", plan.problem),
            "width": ("config", plan.width),
            "seed": ("config", plan.seed),
            "time": time,
        }
        if scale_is_pair:
            coords["std1"] = ("config", scale_pairs[:, 0])
            coords["std2"] = ("config", scale_pairs[:, 1])
        else:
            coords["scale"] = ("config", scale_pairs[:, 0])
        shape = (n,)
    data = {}
    for k in names:
        v = store[k]
        if k.startswith("time_"):
            data[k[len("time_") :]] = (dims + ("time",), v.reshape(shape + v.shape[1:]))
        else:
            data[k] = (dims, v.reshape(shape))
    ds = xr.Dataset(data, coords=coords)
    if plan.grid_shape is not None and len(problems) == 1:
        ds = ds.isel(problem=0, drop=True)
    ds.attrs["scale_meaning"] = (
        "alpha: entries N(0, h^-2alpha)"
        if init == "paper"
        else "std of the entries (std1 for W1, std2 for W2)"
    )
    return ds
