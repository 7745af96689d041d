"""Sweeps over a Ray cluster: one Ray task per chunk, results merged as a local sweep's.

Ray does the placement (CPUs, GPUs), the retries of tasks whose worker died, and the failure
reporting; flowlin only submits one task per pending chunk and collects them. Each task
unpickles the `SweepTask` (after mirroring the driver's float64 setting: see
`_compute_chunk`), computes its chunk on the devices Ray gave it, and, with `store=`, writes its
own shard to the store (atomically: temporary name + rename), which therefore must be on a
filesystem that every node sees.
"""

import contextlib
import math
import os
import pathlib
import pickle
import socket
import warnings
from collections.abc import Mapping

import equinox as eqx
import jax
import numpy as np

from .. import _dataset as schema
from .._interrupt import raise_if_interrupted
from .._progress import progress_bar, resumed_label, say
from ._executor import (
    AbstractExecutor,
    Finished,
    as_batch_size,
    caller_stacklevel,
    check_batch_size,
)
from ._store import write_shard


#: Retries of a chunk whose worker process died (Ray's default for tasks is 3 as well).
DEFAULT_MAX_RETRIES = 3
#: CPUs of the local Ray instance started when no cluster is given (small: a laptop or CI).
DEFAULT_LOCAL_NUM_CPUS = 2
_CALL = "flowlin.RayExecutor(...)"
#: A worker running a chunk is titled ray::TASK_NAME_<chunk index>.
TASK_NAME = "flowlin_chunk"


def _check_number(name, value, minimum, *, integer=False) -> None:
    kind = "an int" if integer else "a number"
    number = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if not isinstance(value, number) or isinstance(value, bool):
        raise TypeError(f"`{_CALL}`: {name} must be {kind} >= {minimum}, got {value!r}")
    if not (math.isfinite(value) and value >= minimum):
        raise ValueError(f"`{_CALL}`: {name} must be {kind} >= {minimum}, got {value!r}")


def _check_mapping(name, value, what) -> None:
    if value is not None and not isinstance(value, Mapping):
        raise TypeError(f"`{_CALL}`: {name} must be a dict ({what}), got {value!r}")


class RayExecutor(AbstractExecutor):
    """Compute each chunk as one Ray task on a Ray cluster (`pip install flowlin[ray]`; see
    docs/ray.md). Ray places the tasks, retries those whose worker died, and the results are
    merged into the same Dataset as a local sweep's; with `store=`, each task writes its own
    shard, so the store must be on a filesystem shared by all nodes.

    **Arguments:**

    - `address`: an existing cluster (e.g. `"auto"` or `"ray://head:10001"`). Default: Ray
      already initialized in this process, else `RAY_ADDRESS`, else a local instance of
      `local_num_cpus` CPUs (default 2), shut down after the sweep.
    - per task: `num_cpus` (default 1); `num_gpus` (default 1 if the cluster has GPUs, else
      0; a fraction shares a GPU; $k \\geq 1$ gives each task $k$ devices, and chunks a
      multiple of $k$ configurations); `memory` (bytes); `resources` (custom Ray resources);
      `max_retries` (retries of a task whose worker died, default 3); `runtime_env`.
    - `autoscaling`: whether the cluster has an autoscaler that can add nodes. A task that no
      node of the cluster can host (more CPUs, GPUs, memory or resources than any node has)
      fails at once with a message; with `autoscaling=True` (never for the local instance
      flowlin starts itself) the sweep warns and waits for the autoscaler instead.
    - `batch_size`: as in `flowlin.LocalExecutor`, on each task's devices.
    """

    address: str | None = eqx.field(default=None, static=True)
    num_cpus: float | int = eqx.field(default=1.0, static=True)
    num_gpus: float | int | None = eqx.field(default=None, static=True)
    memory: int | None = eqx.field(default=None, static=True)
    resources: Mapping[str, float | int] | None = None
    max_retries: int = eqx.field(default=DEFAULT_MAX_RETRIES, static=True)
    runtime_env: Mapping | None = None
    local_num_cpus: int | None = eqx.field(default=None, static=True)
    autoscaling: bool = eqx.field(default=False, static=True)
    batch_size: int | None = eqx.field(default=None, static=True, converter=as_batch_size)

    def __check_init__(self):
        if self.address is not None and not (isinstance(self.address, str) and self.address):
            raise TypeError(
                f"`{_CALL}`: address must be a Ray cluster address such as 'auto' or "
                f"'ray://head:10001', got {self.address!r}"
            )
        _check_number("num_cpus", self.num_cpus, 0)
        if self.num_gpus is not None:
            _check_number("num_gpus", self.num_gpus, 0)
            if self.num_gpus > 1 and self.num_gpus != int(self.num_gpus):
                raise ValueError(
                    f"`{_CALL}`: num_gpus must be a fraction of one GPU or a whole number of "
                    f"GPUs, got {self.num_gpus!r}"
                )
        if self.memory is not None:
            _check_number("memory", self.memory, 1, integer=True)
        _check_mapping("resources", self.resources, "custom resource names to amounts")
        for k, v in (self.resources or {}).items():
            if not isinstance(k, str) or k in ("CPU", "GPU", "memory"):
                raise ValueError(
                    f"`{_CALL}`: resources holds custom resources, named by str; got {k!r} "
                    "(CPUs, GPUs and memory are num_cpus, num_gpus and memory)"
                )
            _check_number(f"resources[{k!r}]", v, 0)
        _check_number("max_retries", self.max_retries, -1, integer=True)
        _check_mapping("runtime_env", self.runtime_env, "a Ray runtime environment")
        if self.local_num_cpus is not None:
            if self.address is not None:
                raise ValueError(
                    f"`{_CALL}`: local_num_cpus sizes a local Ray instance; it cannot be "
                    "combined with address (the cluster's size is set by `ray start`)"
                )
            _check_number("local_num_cpus", self.local_num_cpus, 1, integer=True)
        if not isinstance(self.autoscaling, bool):
            raise TypeError(
                f"`{_CALL}`: autoscaling must be True or False, got {self.autoscaling!r}"
            )
        check_batch_size(_CALL, self.batch_size)

    def resolve(self, call, settings):
        _import_ray(call)
        if settings.stop_at_loss is not None and self.devices_per_chunk() > 1:
            # diffrax's event root find fails to trace under shard_map (LocalExecutor falls
            # back to one device; a Ray task's GPUs are its own, so it is refused here).
            raise ValueError(
                f"`{call}`: stop_at_loss cannot run on the {self.devices_per_chunk()} GPUs of "
                "one task (the event does not trace when a chunk is split over devices); use "
                "RayExecutor(num_gpus=1), one task per GPU, or no stop_at_loss"
            )
        return self

    def known_devices(self) -> tuple[str, ...]:
        return ()  # where a task runs is known once it has run (Finished.where)

    def devices_per_chunk(self) -> int:
        """JAX devices a task computes on: as many whole GPUs as it asks for (Ray makes exactly
        those visible to it), else one device (a CPU task, or a share of one GPU)."""
        if self.num_gpus is None or self.num_gpus < 1:
            return 1
        return int(self.num_gpus)

    def run(self, task, chunks, store, *, progress, total, initial):
        ray = _import_ray("flowlin.sweep(executor=flowlin.RayExecutor(...))")
        started = _connect(ray, self, progress)
        try:
            refs = self._submit(ray, task, chunks, store, started)
            yield from _gather(ray, refs, store, self.max_retries, progress, total, initial)
        finally:
            if started:
                ray.shutdown()

    def _task_options(self, ray, started: bool) -> dict:
        available = ray.cluster_resources()
        num_gpus = self.num_gpus
        if num_gpus is None:
            num_gpus = 1.0 if available.get("GPU", 0) > 0 else 0.0
        need = dict(CPU=self.num_cpus, GPU=num_gpus, **(self.resources or {}))
        if self.memory is not None:
            need["memory"] = self.memory
        _check_feasible(ray, need, started, self.autoscaling)
        runtime_env = dict(self.runtime_env or {})
        if 0 < num_gpus < 1:
            # Several tasks share a GPU: JAX must not grab 75% of it in each of them.
            env_vars = dict(runtime_env.get("env_vars", {}))
            env_vars.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
            runtime_env["env_vars"] = env_vars
        options = dict(num_cpus=self.num_cpus, num_gpus=num_gpus, max_retries=self.max_retries)
        if self.memory is not None:
            options["memory"] = self.memory
        if self.resources:
            options["resources"] = dict(self.resources)
        if runtime_env:
            options["runtime_env"] = runtime_env
        return options

    def _submit(self, ray, task, chunks, store, started: bool) -> dict:
        options = self._task_options(ray, started)
        remote = ray.remote(_compute_chunk)
        where = None
        if store is not None:
            where = (str(pathlib.Path(store.shards).resolve()), store.format)
        # cloudpickle: a solver or other setting defined in the user's `__main__` travels too.
        payload = ray.put(ray.cloudpickle.dumps(task))
        x64 = bool(jax.config.read("jax_enable_x64"))
        n_devices = self.devices_per_chunk()
        return {
            # Named per chunk (Ray's dashboard and the worker's process title: ray::<name>).
            remote.options(name=f"{TASK_NAME}_{c.index}", **options).remote(
                payload, c, x64, n_devices, where
            ): c
            for c in chunks
        }


def _check_feasible(ray, need: dict, started: bool, autoscaling: bool) -> None:
    """Fail at once when no alive node can host one task (Ray would wait forever), unless an
    autoscaler may add such a node (then warn)."""
    need = {k: v for k, v in need.items() if v > 0}
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(all(have.get(k, 0) >= v for k, v in need.items()) for have in nodes):
        return
    largest = {k: max((have.get(k, 0) for have in nodes), default=0) for k in need}
    asked = ", ".join(f"{k} {v:g}" for k, v in need.items())
    most = ", ".join(f"{k} {v:g}" for k, v in largest.items())
    what = f"each task asks for {asked}, but no node of the Ray cluster has that much "
    what += f"(the most any of its {len(nodes)} node(s) has: {most})"
    if autoscaling and not started:
        warnings.warn(
            f"`{_CALL}`: {what}; the tasks wait for the autoscaler to add such a node",
            stacklevel=caller_stacklevel(),
        )
        return
    fix = (
        "start the local instance larger (local_num_cpus=...)"
        if started
        else "pass autoscaling=True if the cluster's autoscaler can add such a node"
    )
    raise ValueError(
        f"`{_CALL}`: {what}, so the tasks could never start. Ask for less per task "
        f"(num_cpus, num_gpus, memory, resources), or {fix}"
    )


def _import_ray(call: str):
    try:
        import ray
    except ImportError as e:
        raise ImportError(f"`{call}` needs Ray: `pip install flowlin[ray]`") from e
    return ray


def _connect(ray, ex: RayExecutor, progress: bool = False) -> bool:
    """Connect to the cluster (or start a local one); True if this call started Ray. With
    `progress`, says which (a local instance takes seconds to start)."""
    if ray.is_initialized():
        if ex.address is not None:
            raise ValueError(
                f"`{_CALL}`: address={ex.address!r} was given but Ray is already initialized "
                "in this process; call `ray.shutdown()` first or drop address"
            )
        return False
    address = ex.address or os.environ.get("RAY_ADDRESS")
    if not address:
        cpus = ex.local_num_cpus or min(DEFAULT_LOCAL_NUM_CPUS, os.cpu_count() or 1)
        say(f"starting a local Ray instance ({cpus} CPUs)", enabled=progress)
        ray.init(
            num_cpus=cpus,
            include_dashboard=False,
            log_to_driver=False,
        )
        return True
    where = "address" if ex.address else "RAY_ADDRESS"
    say(f"connecting to the Ray cluster at {where}={address!r}", enabled=progress)
    _probe(address, where)
    try:
        ray.init(address=ex.address, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:  # what Ray raises for an address
        raise ConnectionError(
            f"`{_CALL}`: could not connect to the Ray cluster at {where}={address!r}: {e}"
        ) from None
    return True


#: Seconds to wait for a cluster's head to accept a connection before giving up.
PROBE_TIMEOUT_S = 10.0


def _probe(address: str, where: str) -> None:
    """Fail fast, naming the address, when nothing listens at a `host:port` (or
    `ray://host:port`) address: `ray.init` retries such an address for minutes, logging
    C++ warnings, before it gives up. Other forms ("auto", "local") are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise ConnectionError(
            f"`{_CALL}`: no Ray cluster answers at {where}={address!r} "
            f"({e.strerror or e}); start one there with `ray start --head`, or fix the address"
        ) from None


def _gather(ray, refs, store, max_retries, progress, total, initial):
    """Yield the submitted chunks as they finish. With a store, each task wrote its shard and
    the records are read back from it; without, they come back through Ray's object store.

    A task whose worker died is retried by Ray (`max_retries`); a task that fails for good
    makes the sweep raise, after the other tasks' shards are written (so that a restart with
    the same store recomputes only what is missing). A Ctrl-C (also one the CLI recorded and
    Python dropped, `flowlin/_interrupt.py`, seen within a second) stops the sweep and cancels
    the tasks not yet finished."""
    failures = []
    waiting = list(refs)
    desc = ", ".join(x for x in ("Ray tasks", resumed_label(initial, total)) if x)
    with progress_bar(
        total=total, initial=initial, enabled=progress, unit="chunk", desc=desc
    ) as bar:
        try:
            while waiting:
                # A Ctrl-C the CLI recorded, even one Python dropped: seen within a second.
                ready, waiting = ray.wait(waiting, num_returns=1, timeout=1.0)
                raise_if_interrupted()
                if not ready:
                    continue
                chunk = refs[ready[0]]
                try:
                    place, rows, arrays, record = ray.get(ready[0])
                except Exception as e:  # a RayTaskError, WorkerCrashedError, ...
                    failures.append((chunk, e))
                    if store is None:  # nothing of the other chunks survives: stop now
                        for ref in waiting:
                            ray.cancel(ref, force=True)
                        break
                    continue
                if store is not None:
                    store.add(record)
                    rows, arrays = schema.shard_arrays(store.read(chunk.index))
                bar.update(1)
                yield Finished(chunk, rows, arrays, (place,))
        except BaseException:
            # Interrupted, or the caller stopped or failed: cancel the unfinished tasks (a task
            # inside a compiled run stops when that run returns). The shards the finished
            # tasks wrote stay in the store, for a resume.
            for ref in waiting:
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            raise
    if failures:
        chunk, error = failures[0]
        died = isinstance(error, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError))
        if died:  # Ray retried it; a run again may well succeed
            why = f"its worker died, and so did {max_retries} retries"
            again = "run the same sweep again to compute only the missing ones"
        else:  # the computation raised: Ray does not retry that, and a run again would repeat it
            cause = getattr(error, "cause", None) or error
            why = f"it raised {type(cause).__name__}: {str(cause).strip().splitlines()[-1]}"
            again = "fix the cause, then run the same sweep again to compute only the missing ones"
        resume = (
            f" The shards of the finished chunks are in the store: {again}."
            if store is not None
            else ""
        )
        raise RuntimeError(
            f"flowlin.sweep(executor=flowlin.RayExecutor(...)): {len(failures)} chunk(s) failed "
            f"(first: chunk {chunk.index}; {why}).{resume}"
        ) from error


def _compute_chunk(payload, chunk, x64: bool, n_devices: int, store):
    """The body of one Ray task (runs in a worker process).

    `payload` is the pickled `SweepTask`: it is unpickled only after the worker's JAX float64
    setting mirrors the driver's, else float64 arrays would arrive as float32. (This is the one
    place flowlin sets a global JAX flag: the worker process belongs to the sweep.)
    """
    jax.config.update("jax_enable_x64", x64)
    task = pickle.loads(payload)
    devices = jax.local_devices()
    if len(devices) < n_devices:
        raise RuntimeError(
            f"flowlin.RayExecutor: the task asked for {n_devices} devices but its worker sees "
            f"{len(devices)} ({devices})"
        )
    devices = devices[:n_devices]
    rows, arrays = task.compute(chunk, devices)
    where = f"{socket.gethostname()}/pid{os.getpid()}: " + ", ".join(str(d) for d in devices)
    if store is None:
        return where, rows, arrays, None
    shards, fmt = store
    if not pathlib.Path(shards).is_dir():
        raise FileNotFoundError(
            f"flowlin.RayExecutor(store=...): the store's folder {shards!r} is not visible on "
            f"{socket.gethostname()}; a Ray sweep with store= needs a filesystem shared by all "
            "nodes (or run without store= to return results to the driver)"
        )
    shard = schema.shard_dataset(chunk.index, rows, arrays)
    return where, None, None, write_shard(pathlib.Path(shards), chunk.index, fmt, shard)
