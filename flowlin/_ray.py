"""Sweeps over a Ray cluster: one Ray task per chunk, results merged as a local sweep's.

Ray does the placement (CPUs, GPUs), the retries of tasks whose worker died, and the failure
reporting; flowlin only submits one task per pending chunk and collects them. Each task
unpickles the `SweepTask` (after mirroring the driver's float64 setting: see
`_compute_chunk`), computes its chunk on the devices Ray gave it, and, with `store=`, writes its
own shard to the store (atomically: temporary name + rename), which therefore must be on a
filesystem that every node sees.
"""

import dataclasses
import math
import os
import pathlib
import pickle
import socket
import warnings
from collections.abc import Mapping

import numpy as np


#: The keys of `flowlin.sweep(executor="ray", executor_options=...)`.
RAY_OPTIONS = (
    "address",
    "num_cpus",
    "num_gpus",
    "memory",
    "resources",
    "max_retries",
    "runtime_env",
    "local_num_cpus",
)
#: Retries of a chunk whose worker process died (Ray's default for tasks is 3 as well).
DEFAULT_MAX_RETRIES = 3
#: CPUs of the local Ray instance started when no cluster is given (small: a laptop or CI).
DEFAULT_LOCAL_NUM_CPUS = 2
_CALL = "flowlin.sweep(executor='ray', executor_options=...)"
TASK_NAME = "flowlin_chunk"


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """Validated `executor_options` of a Ray sweep."""

    address: str | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None  # None: 1 per task if the cluster has GPUs, else 0
    memory: int | None = None
    resources: dict | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    runtime_env: dict | None = None
    local_num_cpus: int | None = None

    @property
    def devices_per_task(self) -> int:
        """JAX devices a task computes on: as many whole GPUs as it asks for (Ray makes exactly
        those visible to it), else one device (a CPU task, or a share of one GPU)."""
        if self.num_gpus is None or self.num_gpus < 1:
            return 1
        return int(self.num_gpus)


def _number(name, value, minimum, *, integer=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and value >= minimum and (not integer or value == int(value))
    if not ok:
        kind = "an int" if integer else "a number"
        raise ValueError(f"`{_CALL}`: {name} must be {kind} >= {minimum}, got {value!r}")
    return int(value) if integer else float(value)


def resolve_options(options: Mapping | None) -> RayOptions:
    """Check `executor_options` for a Ray sweep (before anything starts)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(RAY_OPTIONS))
    if unknown:
        raise ValueError(
            f"`{_CALL}`: unknown option(s) {unknown}; expected some of {list(RAY_OPTIONS)}"
        )
    out = {}
    address = options.get("address")
    if address is not None and not (isinstance(address, str) and address):
        raise ValueError(
            f"`{_CALL}`: address must be a Ray cluster address such as 'auto' or "
            f"'ray://head:10001', got {address!r}"
        )
    out["address"] = address
    if "num_cpus" in options:
        out["num_cpus"] = _number("num_cpus", options["num_cpus"], 0)
    if options.get("num_gpus") is not None:
        num_gpus = _number("num_gpus", options["num_gpus"], 0)
        if num_gpus > 1 and num_gpus != int(num_gpus):
            raise ValueError(
                f"`{_CALL}`: num_gpus must be a fraction of one GPU or a whole number of GPUs, "
                f"got {num_gpus!r}"
            )
        out["num_gpus"] = num_gpus
    if options.get("memory") is not None:
        out["memory"] = _number("memory", options["memory"], 1, integer=True)
    if options.get("resources") is not None:
        resources = options["resources"]
        if not isinstance(resources, Mapping):
            raise ValueError(
                f"`{_CALL}`: resources must be a dict of custom resource names to amounts, "
                f"got {resources!r}"
            )
        out["resources"] = {
            str(k): _number(f"resources[{k!r}]", v, 0) for k, v in resources.items()
        }
    if "max_retries" in options:
        out["max_retries"] = _number("max_retries", options["max_retries"], -1, integer=True)
    if options.get("runtime_env") is not None:
        if not isinstance(options["runtime_env"], Mapping):
            raise ValueError(
                f"`{_CALL}`: runtime_env must be a dict (a Ray runtime environment), "
                f"got {options['runtime_env']!r}"
            )
        out["runtime_env"] = dict(options["runtime_env"])
    if options.get("local_num_cpus") is not None:
        if address is not None:
            raise ValueError(
                f"`{_CALL}`: local_num_cpus sizes a local Ray instance; it cannot be combined "
                "with address (the cluster's size is set by `ray start`)"
            )
        out["local_num_cpus"] = _number(
            "local_num_cpus", options["local_num_cpus"], 1, integer=True
        )
    return RayOptions(**out)


def _import_ray():
    try:
        import ray
    except ImportError as e:
        raise ImportError(
            "`flowlin.sweep(executor='ray')` needs Ray: `pip install flowlin[ray]`"
        ) from e
    return ray


def _connect(ray, opts: RayOptions) -> bool:
    """Connect to the cluster (or start a local one); True if this call started Ray."""
    if ray.is_initialized():
        if opts.address is not None:
            raise ValueError(
                f"`{_CALL}`: address={opts.address!r} was given but Ray is already initialized "
                "in this process; call `ray.shutdown()` first or drop address"
            )
        return False
    if opts.address is not None or os.environ.get("RAY_ADDRESS"):
        ray.init(address=opts.address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=opts.local_num_cpus or min(DEFAULT_LOCAL_NUM_CPUS, os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=False,
        )
    return True


def _compute_chunk(payload, chunk, x64: bool, n_devices: int, store):
    """The body of one Ray task (runs in a worker process).

    `payload` is the pickled `SweepTask`: it is unpickled only after the worker's JAX float64
    setting mirrors the driver's, else float64 arrays would arrive as float32. (This is the one
    place flowlin sets a global JAX flag: the worker process belongs to the sweep.)
    """
    import jax

    jax.config.update("jax_enable_x64", x64)
    task = pickle.loads(payload)
    devices = jax.local_devices()
    if len(devices) < n_devices:
        raise RuntimeError(
            f"flowlin.sweep(executor='ray'): the task asked for {n_devices} devices but its "
            f"worker sees {len(devices)} ({devices})"
        )
    devices = devices[:n_devices]
    rows, arrays = task.compute(chunk, devices)
    where = f"{socket.gethostname()}/pid{os.getpid()}: " + ", ".join(str(d) for d in devices)
    if store is None:
        return where, rows, arrays
    from ._store import ShardStore, shard_to_dataset

    path, fmt = store
    shard_store = ShardStore(path, fmt)
    if not shard_store.shards.is_dir():
        raise FileNotFoundError(
            f"flowlin.sweep(executor='ray', store={path!r}): the store is not visible on "
            f"{socket.gethostname()}; a Ray sweep with store= needs a filesystem shared by all "
            "nodes (or run without store= to return results to the driver)"
        )
    shard_store.write(chunk.index, shard_to_dataset(chunk.index, rows, arrays))
    return where, None, None


def run_chunks_on_ray(
    task, pending, shard_store, results, opts: RayOptions, *, progress, total, initial
) -> list[str]:
    """Compute the `pending` chunks as Ray tasks, filling `results[chunk.index] = (rows,
    arrays)`; return where they ran (host/pid: devices), in order of first use.

    With a store, each task writes its shard and the driver reads it back from the store;
    without, the arrays come back through Ray's object store. A task whose worker died is
    retried by Ray (`max_retries`); a task that fails for good (or exhausts its retries)
    makes the sweep raise, after the other tasks' shards are written (so that a restart with
    the same store recomputes only what is missing).
    """
    import jax

    from ._progress import progress_bar

    ray = _import_ray()
    started = _connect(ray, opts)
    try:
        available = ray.cluster_resources()
        num_gpus = opts.num_gpus
        if num_gpus is None:
            num_gpus = 1.0 if available.get("GPU", 0) > 0 else 0.0
        for name, want in (("CPU", opts.num_cpus), ("GPU", num_gpus)):
            if want > available.get(name, 0):
                warnings.warn(
                    f"`{_CALL}`: each task asks for {want:g} {name}(s) but the Ray cluster has "
                    f"{available.get(name, 0):g} now; the tasks wait until Ray (or its "
                    "autoscaler) provides them",
                    stacklevel=3,
                )
        runtime_env = dict(opts.runtime_env or {})
        if 0 < num_gpus < 1:
            # Several tasks share a GPU: JAX must not grab 75% of it in each of them.
            env_vars = dict(runtime_env.get("env_vars", {}))
            env_vars.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
            runtime_env["env_vars"] = env_vars
        task_options = dict(
            num_cpus=opts.num_cpus,
            num_gpus=num_gpus,
            max_retries=opts.max_retries,
        )
        if opts.memory is not None:
            task_options["memory"] = opts.memory
        if opts.resources:
            task_options["resources"] = opts.resources
        if runtime_env:
            task_options["runtime_env"] = runtime_env
        remote = ray.remote(_compute_chunk)
        store = None
        if shard_store is not None:
            store = (str(pathlib.Path(shard_store.path).resolve()), shard_store.format)
        # cloudpickle: a solver or other setting defined in the user's `__main__` travels too.
        payload = ray.put(ray.cloudpickle.dumps(task))
        x64 = bool(jax.config.read("jax_enable_x64"))
        n_devices = opts.devices_per_task
        refs = {
            # Named per chunk (Ray's dashboard and the worker's process title: ray::<name>).
            remote.options(name=f"{TASK_NAME}_{c.index}", **task_options).remote(
                payload, c, x64, n_devices, store
            ): c
            for c in pending
        }
        where: dict[str, None] = {}
        failures = []
        with progress_bar(total=total, initial=initial, enabled=progress, unit="chunk") as bar:
            waiting = list(refs)
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                chunk = refs[ready[0]]
                try:
                    place, rows, arrays = ray.get(ready[0])
                except Exception as e:  # a RayTaskError, WorkerCrashedError, ...
                    failures.append((chunk, e))
                    if shard_store is None:  # nothing of the other chunks survives: stop now
                        for ref in waiting:
                            ray.cancel(ref, force=True)
                        break
                    continue
                where[place] = None
                if shard_store is not None:
                    from ._store import dataset_to_arrays

                    rows, arrays = dataset_to_arrays(shard_store.read(chunk.index))
                results[chunk.index] = (rows, arrays)
                bar.update(1)
        if failures:
            chunk, error = failures[0]
            resume = (
                " The shards of the finished chunks are in the store: run the same sweep again "
                "to compute only the missing ones."
                if shard_store is not None
                else ""
            )
            raise RuntimeError(
                f"flowlin.sweep(executor='ray'): {len(failures)} chunk(s) failed (first: chunk "
                f"{chunk.index}, after up to {opts.max_retries} retries).{resume}"
            ) from error
        return list(where)
    finally:
        if started:
            ray.shutdown()
