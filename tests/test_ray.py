"""`flowlin.sweep(executor=flowlin.RayExecutor())`: equal to the local sweep bit for bit,
survives a killed worker (Ray retries the chunk), resumes an interrupted sweep from the shards
already written, and rejects bad options by name.

All tests share one local Ray instance (2 CPUs, started once per module): each Ray worker
imports JAX and compiles the chunk program itself, which costs seconds, so the problems are
tiny and the chunks few. The test process has 4 forced host CPU devices (conftest) and the
workers inherit that environment; each task still computes on one device (a CPU task has one
device; only `num_gpus=k >= 1` gives a task k devices).
"""

import json
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time

import jax
import numpy as np
import pytest
from helpers_store import COMMON, GRID, N_CHUNKS, D, M

import flowlin
from flowlin._sweep._ray import (
    TASK_NAME,  # a worker running a chunk is ray::TASK_NAME_<i>
    _connect,
)


ray = pytest.importorskip("ray", reason="the Ray executor needs `pip install flowlin[ray]`")
psutil = pytest.importorskip("psutil", reason="the worker-kill tests find Ray workers by pid")

pytestmark = [
    # ray.init forks its helper processes after JAX started threads (fork + exec: harmless).
    pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning"),
]


@pytest.fixture(scope="module")
def problem():
    return flowlin.problems.gaussian(jax.random.key(0), n=5, D=D, m=M)


@pytest.fixture(scope="module")
def reference(problem):
    """The local sweep with the same chunks (one device: chunks are then cut exactly as for
    Ray tasks of one device each, so every chunk is the same computation)."""
    one_device = flowlin.LocalExecutor(devices=jax.devices()[:1])
    ds = flowlin.sweep(problem, executor=one_device, **GRID, **COMMON)
    assert ds.attrs["n_chunks"] == N_CHUNKS
    return ds


@pytest.fixture(scope="module")
def cluster():
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _assert_identical(got, want):
    assert set(got.data_vars) == set(want.data_vars)
    for name in want.data_vars:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    for name in want.coords:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


def _pids(ds) -> set[int]:
    """The worker pids that computed a Ray sweep's chunks (from attrs['devices'])."""
    return {int(w.split("/pid")[1].split(":")[0]) for w in json.loads(ds.attrs["devices"])}


class _WorkerKiller(threading.Thread):
    """Kills (SIGKILL, by pid) the first process of this test's Ray instance that is running a
    chunk task; the pids it killed are in `.killed`."""

    def __init__(self):
        super().__init__(daemon=True)
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self):
        me = psutil.Process()
        while not self.stop.is_set():
            for proc in me.children(recursive=True):
                try:
                    title = " ".join(proc.cmdline())
                except psutil.Error:
                    continue
                if title.startswith(f"ray::{TASK_NAME}"):
                    os.kill(proc.pid, signal.SIGKILL)
                    self.killed.append(proc.pid)
                    return
            time.sleep(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join()


def test_ray_equals_local(problem, reference, cluster):
    ds = flowlin.sweep(problem, executor=flowlin.RayExecutor(), **GRID, **COMMON)
    _assert_identical(ds, reference)
    workers = json.loads(ds.attrs["devices"])
    assert 1 <= len(workers) <= 2  # 2 CPUs, 1 CPU per task: at most 2 worker processes
    # One device per task, though the workers see the 4 forced host devices.
    assert all(w.endswith(": TFRT_CPU_0") for w in workers), workers


def _fresh_workers(tag: str) -> dict:
    """Task options that make Ray start new worker processes (a runtime env of their own): a
    cold worker spends seconds importing JAX and compiling inside the chunk task, so the killer
    finds it running (a warm worker finishes a tiny chunk in milliseconds)."""
    return {"runtime_env": {"env_vars": {"FLOWLIN_TEST_WORKERS": tag}}}


def test_killed_worker_is_retried(problem, reference, cluster):
    options = {"max_retries": 2, **_fresh_workers("retried")}
    with _WorkerKiller() as killer:
        ds = flowlin.sweep(problem, executor=flowlin.RayExecutor(**options), **GRID, **COMMON)
    assert len(killer.killed) == 1
    assert not psutil.pid_exists(killer.killed[0])
    # The chunk the dead worker held was computed again elsewhere, to the same bits.
    assert killer.killed[0] not in _pids(ds)
    _assert_identical(ds, reference)


def test_interrupted_sweep_resumes_missing_chunks(problem, reference, cluster, tmp_path):
    store = tmp_path / "sweep"
    shards = store / "shards"
    # No retries: the chunk whose worker is killed fails, the others finish and are written.
    options = {"max_retries": 0, **_fresh_workers("interrupted")}
    failed = "1 chunk\\(s\\) failed \\(first: chunk \\d+; its worker died"
    with _WorkerKiller() as killer, pytest.raises(RuntimeError, match=failed):
        flowlin.sweep(
            problem,
            executor=flowlin.RayExecutor(**options),
            store=store,
            **GRID,
            **COMMON,
        )
    assert len(killer.killed) == 1
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards.iterdir()}
    assert len(before) == N_CHUNKS - 1
    assert not (store / "result.nc").exists()

    # Restart (retries on again), on the surviving workers of that runtime env: warm, so fast.
    restart = {"max_retries": 3, **_fresh_workers("interrupted")}
    ds = flowlin.sweep(
        problem, executor=flowlin.RayExecutor(**restart), store=store, **GRID, **COMMON
    )
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards.iterdir()}
    # Exactly the missing chunk was computed; the shards already there were not rewritten.
    assert len(after) == N_CHUNKS
    assert {k: after[k] for k in before} == before
    assert ds.attrs["chunks_resumed_from_store"] == N_CHUNKS - 1
    _assert_identical(ds, reference)
    _assert_identical(flowlin.open_sweep(store), reference)


def test_a_recorded_interrupt_stops_a_ray_sweep(problem, cluster, tmp_path):
    """A Ctrl-C that the CLI's handler recorded but Python dropped (inside a garbage-collection
    callback: tests/test_interrupt.py) still stops a Ray sweep, as it stops a local one."""
    from flowlin._interrupt import _INTERRUPTED, catch_interrupts

    with catch_interrupts():  # as the CLI's main() does
        _INTERRUPTED.set()  # the record the handler leaves, its KeyboardInterrupt lost
        with pytest.raises(KeyboardInterrupt):
            flowlin.sweep(
                problem, executor=flowlin.RayExecutor(), store=tmp_path / "s", **GRID, **COMMON
            )
    assert not (tmp_path / "s" / "result.nc").exists()


def test_zarr_store_resumes_bit_for_bit_with_ray(problem, reference, cluster, tmp_path):
    # Written locally (one device per chunk: the same chunks as Ray's), then one shard deleted
    # and one damaged; a Ray sweep recomputes exactly those two, on the warm workers.
    store = tmp_path / "sweep.zarr"
    one_device = flowlin.LocalExecutor(devices=jax.devices()[:1])
    flowlin.sweep(problem, executor=one_device, store=store, **GRID, **COMMON)
    shards = tmp_path / "sweep.zarr.parts" / "shards"
    shutil.rmtree(shards / "chunk-000001.zarr")
    shutil.rmtree(shards / "chunk-000002.zarr" / "final_loss")
    with pytest.warns(UserWarning, match="chunk-000002.zarr' differs from what was written"):
        ds = flowlin.sweep(problem, executor=flowlin.RayExecutor(), store=store, **GRID, **COMMON)
    assert ds.attrs["chunks_resumed_from_store"] == N_CHUNKS - 2
    assert len(json.loads(ds.attrs["devices"])) >= 1  # computed by Ray workers
    _assert_identical(ds, reference)
    _assert_identical(flowlin.open_sweep(store), reference)


def test_over_request_fails_fast(problem, cluster):
    # The test's Ray instance has 2 CPUs and no autoscaler: a task asking for 3 can never run.
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"each task asks for CPU 3.*no node.*could never start"):
        flowlin.sweep(problem, executor=flowlin.RayExecutor(num_cpus=3), **GRID, **COMMON)
    with pytest.raises(ValueError, match=r"asks for .*GPU 1.*no node"):
        flowlin.sweep(problem, executor=flowlin.RayExecutor(num_gpus=1), **GRID, **COMMON)
    assert time.monotonic() - start < 30  # at once, not after a wait
    assert ray.is_initialized()  # the test's instance is left running


@pytest.mark.parametrize(
    "options, match",
    [
        (dict(num_cpus=-1), "num_cpus must be a number"),
        (dict(num_gpus=1.5), "num_gpus must be a fraction"),
        (
            dict(address="auto", local_num_cpus=2),
            "local_num_cpus .* cannot be combined with address",
        ),
    ],
)
def test_bad_executor_options_rejected(options, match):
    with pytest.raises(ValueError, match=match):
        flowlin.RayExecutor(**options)


# Options of the wrong type: a TypeError naming the option (under the test suite's
# jaxtyping/beartype hook, its own TypeError naming the argument comes first).
@pytest.mark.parametrize(
    "options, match",
    [
        (dict(num_gpu=1), "num_gpu"),
        (dict(max_retries=0.5), "max_retries"),
        (dict(address=7), "address"),
    ],
)
def test_wrongly_typed_executor_options_rejected(options, match):
    with pytest.raises(TypeError, match=match):
        flowlin.RayExecutor(**options)


def test_missing_ray_is_named(problem, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ImportError, match=r"pip install flowlin\[ray\]"):
        flowlin.sweep(problem, executor=flowlin.RayExecutor(), **GRID, **COMMON)


class _RayNotStarted:
    """Stands in for the `ray` module, not initialized; `init` does what it is given."""

    def __init__(self, init):
        self.init = init

    def is_initialized(self):
        return False


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("form", ["127.0.0.1:{}", "ray://127.0.0.1:{}"])
def test_an_address_nobody_answers_is_named_at_once(form, capsys):
    """`ray.init` retried such an address for minutes (C++ warnings every 5 s) before it gave
    up; flowlin asks the port first and names the address."""
    address = form.format(_unused_port())

    def init(**kwargs):
        raise AssertionError("ray.init was called")

    start = time.monotonic()
    with pytest.raises(
        ConnectionError, match=rf"no Ray cluster answers at address='{re.escape(address)}'"
    ) as e:
        _connect(_RayNotStarted(init), flowlin.RayExecutor(address=address), progress=True)
    assert "ray start --head" in str(e.value) and e.value.__cause__ is None
    assert time.monotonic() - start < 5
    assert capsys.readouterr().err == f"connecting to the Ray cluster at address={address!r}\n"


def test_starting_a_local_instance_is_said(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    given = {}
    ray = _RayNotStarted(lambda **kwargs: given.update(kwargs))
    assert _connect(ray, flowlin.RayExecutor(local_num_cpus=2), progress=True) is True
    assert given["num_cpus"] == 2
    assert capsys.readouterr().err == "starting a local Ray instance (2 CPUs)\n"
    _connect(ray, flowlin.RayExecutor(local_num_cpus=2), progress=False)
    assert capsys.readouterr().err == ""


def test_rays_own_connection_error_is_named_with_the_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def init(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    with pytest.raises(ConnectionError, match=r"at address='auto': Could not find any") as e:
        _connect(_RayNotStarted(init), flowlin.RayExecutor(address="auto"))
    assert e.value.__cause__ is None and e.value.__suppress_context__
