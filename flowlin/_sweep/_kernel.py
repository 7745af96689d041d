"""What runs inside one compiled chunk: initialize → solve → theory and bounds → record, for
every configuration of the chunk, split over the devices of a mesh.

Internal API: `run_chunk`, `run_one`, `make_mesh`, `SweepTask` and `TRACES` are used by the
executors, and by the tests and `benchmarks/multi_device.py` to inspect the compiled chunk.
"""

import collections

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _dataset as schema
from .._bounds import check_bounds
from .._descent import gradient_descent
from .._flow import gradient_flow
from .._init import gaussian as gaussian_init
from .._misc import full_precision
from .._problem import Problem
from .._saveat import SaveAt
from .._wishart import wishart
from ..theory import quantities
from ..theory._law import run_law
from ._grid import Grid
from ._plan import Chunk
from ._settings import SweepSettings


#: On CPU, a chunk runs one configuration at a time (unless `batch_size` is given): see
#: `default_batch_size` — batched LAPACK kernels deadlock jaxlib's CPU thread pool.
#: Accelerators run each device's share of the chunk as one vmap.
CPU_BATCH_SIZE = 1
#: The mesh axis a chunk's configurations are split along.
DEVICE_AXIS = "devices"

#: The diagnostics `run_law` reads: the law's per-run values are recorded when both are saved.
LAW_NEEDS = {"distance_to_min_norm", "excess_loss"}

#: Number of times the per-configuration function (and the chunk program) was traced: the
#: compile-once guarantee is checked against this.
TRACES = collections.Counter()


class Payload(eqx.Module):
    """The arrays shared by every chunk of a sweep (replicated on the devices)."""

    settings: SweepSettings
    problems: Problem  # stacked along a leading axis


class ChunkProgram(eqx.Module):
    """What fixes one chunk's compiled program besides the settings (hashed by `filter_jit`)."""

    pad_to: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)
    mesh: jax.sharding.Mesh = eqx.field(static=True)
    #: A sweep over depths: the chunk's depth L, and the sweep's most hidden layers (per-layer
    #: records are NaN-padded to it, so that every chunk's records stack); None: two layers.
    depth: int | None = eqx.field(static=True, default=None)
    layers: int | None = eqx.field(static=True, default=None)


def _initialize(st: SweepSettings, problem: Problem, row: dict, pad_to: int):
    """The run's initialization, its `alpha` (for the paper's family, else None) and the
    standard deviation of $W_1(0)$'s i.i.d. Gaussian entries."""
    key = jax.random.fold_in(st.key, row["seed"])
    width_f = row["width"].astype(problem.dtype)
    if st.init == "paper":
        alpha, std1, std2 = row["s1"], width_f ** (-row["s1"]), width_f ** (-row["s1"])
    else:
        alpha, std1, std2 = None, row["s1"], row["s2"]
    if st.sampling == "wishart":
        return wishart(key, problem, row["width"], std1, std2), alpha, std1
    net = gaussian_init(
        key, problem.D, problem.m, row["width"], std1, std2, pad_to=pad_to, dtype=problem.dtype
    )
    return net, alpha, std1


def _initialize_deep(st: SweepSettings, problem: Problem, row: dict, width: int, depth: int):
    """A deep network's initialization (`init="paper"`: every layer's entries
    $N(0, h^{-2\alpha})$, `flowlin.init.deep_gaussian`), its `alpha` and the standard deviation
    of $W_1(0)$'s entries. Unpadded: `width` is the chunk's (static) hidden width."""
    from ..init import deep_gaussian  # (imported when a deep sweep runs)

    key = jax.random.fold_in(st.key, row["seed"])
    alpha = row["s1"]
    net = deep_gaussian(
        key, problem.D, problem.m, (width,) * (depth - 1), alpha=alpha, scaling="paper",
        dtype=problem.dtype,
    )  # fmt: skip
    return net, alpha, jnp.asarray(width, problem.dtype) ** (-alpha)


def _solve(st: SweepSettings, init, problem: Problem):
    saveat = SaveAt(st.ts, diagnostics=st.diagnostics)
    if st.dynamics == "flow":
        return gradient_flow(
            init,
            problem,
            st.t1,
            saveat=saveat,
            method=st.method_for_run,
            solver=st.solver,
            rtol=st.rtol,
            atol=st.atol,
            max_steps=st.max_steps,
            stop_at_loss=st.stop_at_loss,
        )
    return gradient_descent(
        init, problem, st.lr, st.steps, averaged=st.averaged, saveat=saveat,
        stop_at_loss=st.stop_at_loss,
    )  # fmt: skip


def run_one(
    payload: Payload, pad_to: int, row: dict, depth: int | None = None, layers: int | None = None
) -> dict:
    """One configuration (`row`: problem index, width, scales s1/s2, seed) → its record
    (a deep network of `depth` layers, `pad_to` wide, when `depth` is given)."""
    TRACES["run_one"] += 1
    st = payload.settings
    problem = jax.tree.map(lambda x: x[row["problem"]], payload.problems)
    if depth is not None:
        return _run_deep(st, problem, row, pad_to, depth, layers)
    init, alpha, std1 = _initialize(st, problem, row, pad_to)
    traj = _solve(st, init, problem)
    width = row["width"].astype(problem.dtype)
    wide = dict(width=width, alpha=alpha, delta=st.delta)
    q = quantities(init, problem, **wide) if st.theory else None
    checks = check_bounds(traj, init, problem, **wide) if st.bounds else None
    # Every sweep init has i.i.d. Gaussian W1(0): the gap's exact law applies (§2(h)).
    law = run_law(traj, std1, problem) if LAW_NEEDS <= set(st.diagnostics) else None
    return schema.record(traj, q, checks, law, dtype=problem.dtype)


def _run_deep(st: SweepSettings, problem: Problem, row: dict, width: int, depth: int, layers):
    """One deep configuration → its record (docs/theory.md §6). What applies at depth is
    recorded: every diagnostic, the per-layer balancedness drift, `flowlin.check_bounds`'
    entries for a deep init, the gap's exact law (W_1(0)Φ2 is i.i.d. Gaussian and never
    moves, so given the final head its law is the two-layer one) and ‖W_L···W_2(∞)‖_F. The
    two-layer `flowlin.theory.quantities` are recorded at depth 2 only (NaN deeper)."""
    init, alpha, std1 = _initialize_deep(st, problem, row, width, depth)
    traj = _solve(st, init, problem)
    q = None
    if st.theory and depth == 2:
        h = jnp.asarray(width, problem.dtype)
        q = quantities(init.as_two_layer(), problem, width=h, alpha=alpha, delta=st.delta)
    checks = check_bounds(traj, init, problem) if st.bounds else None
    law = run_law(traj, std1, problem) if LAW_NEEDS <= set(st.diagnostics) else None
    out = schema.record(traj, q, checks, law, dtype=problem.dtype)
    drift = getattr(traj, "balancedness_drift", None)
    if drift is not None and schema.time_var("balancedness_drift") not in out:
        out[schema.time_var("balancedness_drift")] = drift
    for key in [k for k in out if k.removeprefix("time_").removeprefix("final_") in schema.LAYERED]:
        missing = layers - out[key].shape[-1]
        out[key] = jnp.pad(out[key], [(0, 0)] * (out[key].ndim - 1) + [(0, missing)],
                           constant_values=jnp.nan)  # fmt: skip
    gram = traj.final_output_gram
    out[schema.HEAD_NORM] = jnp.sqrt(jnp.trace(gram, axis1=-2, axis2=-1)).astype(problem.dtype)
    return out


@eqx.filter_jit
@full_precision  # also where a Ray worker traces it, outside flowlin.sweep's own call
def run_chunk(payload: Payload, rows: dict, program: ChunkProgram) -> dict:
    """One chunk: split over the devices of `program.mesh` with `shard_map` (each device runs
    its own adaptive loops, no lockstep across devices — see docs/ray.md, "Several devices on
    one host"), vmapped (or mapped in batches of `program.batch_size`) on each."""
    TRACES["chunk"] += 1

    def one(row):
        return run_one(payload, program.pad_to, row, program.depth, program.layers)

    def local(rows):
        if program.batch_size >= rows["seed"].shape[0]:
            return jax.vmap(one)(rows)
        if program.batch_size == 1:
            # One configuration at a time: no batched LAPACK calls (see `default_batch_size`).
            return jax.lax.map(one, rows)
        # Sequential over sub-batches of `batch_size`, vmapped within: bounds lockstep waste.
        return jax.lax.map(one, rows, batch_size=program.batch_size)

    if program.mesh.devices.size == 1:
        # One device: no shard_map. (Inside shard_map, diffrax's event root find — used by
        # stop_at_loss — fails to trace with "pytree does not match out_structure" from lineax,
        # jax 0.9.2 / diffrax 0.7; on one device it is not needed.)
        return local(rows)
    spec = jax.sharding.PartitionSpec(DEVICE_AXIS)
    return jax.shard_map(
        local, mesh=program.mesh, in_specs=(spec,), out_specs=spec, check_vma=False
    )(rows)


def default_batch_size(mesh: jax.sharding.Mesh, per_device: int) -> int:
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
    on the sweep-throughput grid of benchmarks/README.md (48 configurations) batches of 8 took
    ~1.8× less CPU time than one at a time; pass `batch_size=8` if the pool is sized.
    """
    if on_cpu(mesh):
        return min(per_device, CPU_BATCH_SIZE)
    return per_device


def on_cpu(mesh: jax.sharding.Mesh) -> bool:
    return all(d.platform == "cpu" for d in mesh.devices.flat)


def make_mesh(devices=None) -> jax.sharding.Mesh:
    devices = jax.local_devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.array(devices), (DEVICE_AXIS,))


class SweepTask:
    """Everything needed to compute any chunk of a sweep; picklable, so that another process
    (a Ray worker) can compute chunks with its own devices."""

    def __init__(self, payload: Payload, grid: Grid, batch_size: int | None):
        self.payload = payload
        # The per-run inputs of every row, not the grid itself: the problems' data travel once,
        # stacked in the payload (a Ray task pickles the task).
        self.inputs = grid.rows(np.arange(len(grid)))
        self.batch_size = batch_size
        self.layers = grid.layers

    def program(self, chunk: Chunk, mesh: jax.sharding.Mesh) -> ChunkProgram:
        n_dev = mesh.devices.size
        if len(chunk.rows) % n_dev:
            raise ValueError(
                f"chunk of {len(chunk.rows)} configurations cannot be split over {n_dev} devices"
            )
        batch_size = self.batch_size
        if batch_size is None:
            batch_size = default_batch_size(mesh, len(chunk.rows) // n_dev)
        if chunk.depth is None:
            return ChunkProgram(int(chunk.pad_to), int(batch_size), mesh)
        return ChunkProgram(int(chunk.pad_to), int(batch_size), mesh, chunk.depth, self.layers)

    def replicated(self, mesh: jax.sharding.Mesh) -> Payload:
        """The payload, placed on every device of `mesh`."""
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return jax.device_put(self.payload, sharding)

    def arguments(self, chunk: Chunk, mesh, payload: Payload | None = None) -> tuple:
        """`(payload, rows, program)`: the arguments of `run_chunk` for `chunk`, placed on the
        devices of `mesh` (the rows split over them)."""
        split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DEVICE_AXIS))
        if payload is None:
            payload = self.replicated(mesh)
        rows = jax.device_put({k: v[chunk.rows] for k, v in self.inputs.items()}, split)
        return payload, rows, self.program(chunk, mesh)

    def launch(self, chunk: Chunk, mesh, payload: Payload | None = None) -> dict:
        """Start computing `chunk` on the devices of `mesh` (returns without waiting)."""
        return run_chunk(*self.arguments(chunk, mesh, payload))

    @staticmethod
    def collect(chunk: Chunk, out: dict) -> tuple[np.ndarray, dict]:
        """Wait for a launched chunk; its rows and host arrays (padding dropped)."""
        arrays = {k: np.asarray(v)[: chunk.valid] for k, v in out.items()}
        return chunk.rows[: chunk.valid], arrays

    def compute(self, chunk: Chunk, devices=None) -> tuple[np.ndarray, dict]:
        """Compute one chunk synchronously on `devices` (default: this process's devices)."""
        return self.collect(chunk, self.launch(chunk, make_mesh(devices)))
