"""Executors: where and how the chunks of a sweep are computed. `flowlin.sweep` hands each
executor the pending chunks; it yields every finished chunk's records, having written its
shard to the store (when there is one)."""

import abc
import collections
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import numpy as np

from .. import _dataset as schema
from .._errors import NamedArguments
from .._interrupt import raise_if_interrupted
from .._progress import progress_bar, resumed_label
from ._kernel import SweepTask, make_mesh, on_cpu
from ._plan import Chunk
from ._settings import SweepSettings
from ._store import ShardStore


class Finished(NamedTuple):
    """One computed chunk: its rows (flat configuration indices), their records, and where it
    ran (the devices; for a Ray task "host/pid: devices")."""

    chunk: Chunk
    rows: np.ndarray
    arrays: dict[str, np.ndarray]
    where: tuple[str, ...]


class AbstractExecutor(eqx.Module, metaclass=NamedArguments):
    """Computes the chunks of a sweep (`flowlin.sweep(executor=...)`).

    `flowlin.LocalExecutor` runs them on this process's devices; `flowlin.RayExecutor`
    submits one Ray task per chunk to a cluster. Both give the same records for the same
    chunks.
    """

    #: Configurations vmapped together on one device (None: the executor's default).
    batch_size: eqx.AbstractVar[int | None]

    @abc.abstractmethod
    def resolve(self, call: str, settings: SweepSettings) -> "AbstractExecutor":
        """Check that this executor can run a sweep with `settings`, before anything is
        computed, and return it with its defaults filled in (e.g. the devices)."""

    @abc.abstractmethod
    def known_devices(self) -> tuple[str, ...]:
        """The devices this executor is known to compute on before it runs anything (recorded
        in the result's attrs, also when every chunk is resumed from a store); `()` where only
        running tells (a Ray cluster)."""

    @abc.abstractmethod
    def devices_per_chunk(self) -> int:
        """The devices one chunk is split over (chunks are cut to a multiple of it); only
        called on a resolved executor."""

    @abc.abstractmethod
    def run(
        self,
        task: SweepTask,
        chunks: Sequence[Chunk],
        store: ShardStore | None,
        *,
        progress: bool,
        total: int,
        initial: int,
    ) -> Iterator[Finished]:
        """Compute `chunks` (writing each shard to `store` first, if given), yielding each as
        it finishes; `total`/`initial` size the progress bar."""


def caller_stacklevel() -> int:
    """`warnings.warn`'s stacklevel, called from a method, that points at the first frame
    outside flowlin (and the equinox/jaxtyping wrappers around its methods): the user's call."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in _INTERNAL:
        frame, level = frame.f_back, level + 1
    return level


_INTERNAL = ("flowlin", "equinox", "jaxtyping")


def check_executor(call: str, executor) -> None:
    if not isinstance(executor, AbstractExecutor):
        raise TypeError(
            f'`{call}`: executor must be one of "local", "ray", flowlin.LocalExecutor(...) or '
            f"flowlin.RayExecutor(...) (a flowlin.AbstractExecutor), got {executor!r}"
        )


def as_batch_size(batch_size):
    """A NumPy integer `batch_size` as a Python int (a static field must hash and print as
    one); anything else unchanged, for `check_batch_size` to judge."""
    if isinstance(batch_size, np.integer):
        return int(batch_size)
    return batch_size


def check_batch_size(call: str, batch_size) -> None:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"`{call}`: batch_size must be a positive int or None, got {batch_size!r}")


class LocalExecutor(AbstractExecutor):
    """Compute the chunks on this process's devices, each chunk split over `devices` with
    `shard_map` (every device runs its own adaptive loops, never in lockstep with the others).

    **Arguments:**

    - `devices`: the devices to split each chunk over (default: all local devices). A sweep
      with `stop_at_loss` runs on the first one only, with a warning (diffrax's event does not
      trace under `shard_map`).
    - `batch_size`: configurations vmapped together on a device; a chunk runs as sequential
      batches of this size (`jax.lax.map`). Default: the device's whole share on GPUs, 1 on
      CPUs (jaxlib's batched LAPACK kernels can deadlock the CPU thread pool; batches of 8
      were ~1.8× faster on small problems, see `_sweep._kernel.default_batch_size`).

    On CPU one chunk is in flight at a time; on accelerators two (the next chunk is launched
    while the last one's results are written).
    """

    devices: tuple[jax.Device, ...] | None = eqx.field(default=None, static=True)
    batch_size: int | None = eqx.field(default=None, static=True)

    def __init__(self, devices: Sequence[jax.Device] | None = None, batch_size: int | None = None):
        call = "flowlin.LocalExecutor(...)"
        if devices is not None and not isinstance(devices, Sequence):
            raise TypeError(
                f"`{call}`: devices must be a list of jax.Device (e.g. jax.devices()[:2]), got "
                f"{type(devices).__name__} {devices!r}"
            )
        self.devices = None if devices is None else tuple(devices)
        self.batch_size = as_batch_size(batch_size)

    def __check_init__(self):
        call = "flowlin.LocalExecutor(...)"
        if self.devices is not None:
            if not self.devices:
                raise ValueError(f"`{call}`: devices is empty")
            bad = [d for d in self.devices if not isinstance(d, jax.Device)]
            if bad:
                raise TypeError(
                    f"`{call}`: devices must be jax.Device objects (e.g. jax.devices()[:2]), "
                    f"got {bad[0]!r}"
                )
            if len(set(self.devices)) < len(self.devices):
                raise ValueError(f"`{call}`: devices lists a device twice: {list(self.devices)}")
        check_batch_size(call, self.batch_size)

    def resolve(self, call, settings):
        devices = self.devices if self.devices is not None else tuple(jax.local_devices())
        if settings.stop_at_loss is not None and len(devices) > 1:
            # diffrax's event root find (stop_at_loss) fails to trace inside shard_map
            # ("pytree does not match out_structure", jax 0.9.2 / diffrax 0.7.2).
            warnings.warn(
                f"`{call}`: stop_at_loss runs on one device ({devices[0]}) — the event "
                f"does not trace under shard_map over {len(devices)} devices",
                stacklevel=caller_stacklevel(),
            )
            devices = devices[:1]
        return LocalExecutor(devices, self.batch_size)

    def known_devices(self):
        assert self.devices is not None, "resolve() first"
        return tuple(str(d) for d in self.devices)

    def devices_per_chunk(self):
        assert self.devices is not None, "resolve() first"
        return len(self.devices)

    def run(self, task, chunks, store, *, progress, total, initial):
        mesh = make_mesh(self.devices)
        where = tuple(str(d) for d in mesh.devices.flat)
        payload = task.replicated(mesh)
        # On CPU, one chunk at a time: two executions sharing the host thread pool can
        # deadlock in jaxlib's batched LAPACK kernels (each blocks a pool thread waiting for
        # its batch items; seen with the batched SVD of check_bounds, jaxlib 0.9.2, 2 cores).
        max_inflight = 1 if on_cpu(mesh) else 2
        inflight = collections.deque()
        with progress_bar(
            total=total,
            initial=initial,
            enabled=progress,
            unit="chunk",
            desc=resumed_label(initial, total),
        ) as bar:
            for chunk in chunks:
                raise_if_interrupted()
                inflight.append((chunk, task.launch(chunk, mesh, payload)))
                if len(inflight) >= max_inflight:
                    yield _finish(task, *inflight.popleft(), store, where)
                    bar.update(1)
            while inflight:
                yield _finish(task, *inflight.popleft(), store, where)
                bar.update(1)


def _finish(task: SweepTask, chunk: Chunk, out: dict, store, where) -> Finished:
    rows, arrays = task.collect(chunk, out)
    if store is not None:
        store.write(chunk.index, schema.shard_dataset(chunk.index, rows, arrays))
    return Finished(chunk, rows, arrays, where)
