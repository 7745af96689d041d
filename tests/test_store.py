"""`flowlin.sweep(store=...)`: a store never adopts what it did not write. Changed bytes, a
shard copied over another, a Zarr variable deleted, a truncated shard and a shard nobody
recorded are rejected with a warning naming the file (before any compute) and recomputed, to
the same bits as an uninterrupted sweep; a store without a readable manifest is refused; a
second writer (another process) is refused while the first finishes; a path's suffix means
what it says.

The sweeps are tiny (8 configurations, 4 chunks of 2, gradient descent: a fixed-length loop
that compiles fast) and share one compiled shape; each test copies a store written once.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest
import xarray as xr
from helpers_store import COMMON, GRID, N_CHUNKS, STEPS, D, M

import flowlin


class Counting(flowlin.AbstractExecutor):
    """One device; records the chunks it computes, and calls `hook()` before the first."""

    computed: list
    hook: object = None
    batch_size = None

    def resolve(self, call, settings):
        return self

    def known_devices(self):
        return (str(jax.devices()[0]),)

    def devices_per_chunk(self):
        return 1

    def run(self, task, chunks, store, **kwargs):
        inner = flowlin.LocalExecutor(jax.devices()[:1])
        for chunk in chunks:
            if self.hook is not None and not self.computed:
                self.hook()
            self.computed.append(chunk.index)
            yield from inner.run(task, [chunk], store, **kwargs)


class NoCompute(Counting):
    """Fails the test if the sweep computes anything."""

    def run(self, task, chunks, store, **kwargs):
        if chunks:
            raise AssertionError(f"computed chunks {[c.index for c in chunks]}")
        yield from ()


@pytest.fixture(scope="module")
def problem():
    return flowlin.problems.gaussian(jax.random.key(0), n=5, D=D, m=M)


def _sweep(problem, store=None, executor=None, **kw):
    executor = Counting([]) if executor is None else executor
    ds = flowlin.sweep(problem, store=store, executor=executor, **{**GRID, **COMMON, **kw})
    return ds, executor.computed


@pytest.fixture(scope="module")
def reference(problem):
    ds, computed = _sweep(problem)
    assert computed == list(range(N_CHUNKS))
    return ds


@pytest.fixture(scope="module")
def written(problem, tmp_path_factory):
    """A finished netCDF folder store and a finished `.zarr` store."""
    base = tmp_path_factory.mktemp("stores")
    for name in ("folder", "sweep.zarr"):
        _sweep(problem, base / name)
    return base


def _copy(written, name, tmp_path):
    """A copy of a written store; returns (store path, its shards folder)."""
    for src in written.glob(f"{name}*"):
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / src.name)
    parts = tmp_path / (name if name == "folder" else f"{name}.parts")
    return tmp_path / name, parts / "shards"


def _assert_identical(got, want):
    for name in want.data_vars:
        np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)


def _resume(problem, store, reference, *, recomputed, warns):
    """Resume `store`: exactly `recomputed` chunks are computed, one warning per pattern in
    `warns`, and the result equals the uninterrupted sweep bit for bit."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds, computed = _sweep(problem, store)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == len(warns), messages
    for message, pattern in zip(sorted(messages), sorted(warns)):
        assert pattern in message, (pattern, message)
        assert "is recomputed" in message
    assert computed == recomputed
    assert ds.attrs["chunks_resumed_from_store"] == N_CHUNKS - len(recomputed)
    _assert_identical(ds, reference)
    _assert_identical(flowlin.open_sweep(store), reference)
    return ds


def test_changed_bytes_are_recomputed(problem, reference, written, tmp_path):
    store, shards = _copy(written, "folder", tmp_path)
    shard = shards / "chunk-000001.nc"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    _resume(problem, store, reference, recomputed=[1], warns=[f"{shard}' differs"])
    assert (store / "rejected" / shard.name).exists()  # kept for inspection, never read


def test_swapped_and_unexplained_shards_are_recomputed(problem, reference, written, tmp_path):
    store, shards = _copy(written, "folder", tmp_path)
    shutil.copy(shards / "chunk-000000.nc", shards / "chunk-000002.nc")
    shutil.copy(shards / "chunk-000000.nc", shards / "chunk-000009.nc")  # no such chunk
    warns = [
        "chunk-000002.nc' is a copy of chunk 0's shard",
        "chunk-000009.nc' is not in the store's manifest",
    ]
    _resume(problem, store, reference, recomputed=[2], warns=warns)


def test_deleted_zarr_variable_is_recomputed(problem, reference, written, tmp_path):
    store, shards = _copy(written, "sweep.zarr", tmp_path)
    shutil.rmtree(shards / "chunk-000001.zarr" / "final_loss")
    _resume(problem, store, reference, recomputed=[1], warns=["chunk-000001.zarr' differs"])
    with xr.open_zarr(store, consolidated=False) as ds:  # the .zarr named is the result
        _assert_identical(ds, reference)


def test_truncated_shard_is_detected_before_any_compute(problem, reference, written, tmp_path):
    store, shards = _copy(written, "folder", tmp_path)
    shard = shards / "chunk-000003.nc"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    # As an error: raised while opening the store, before the executor is reached.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match=f"{shard}' differs from what was written"):
            _sweep(problem, store, executor=NoCompute([]))
    # The store was released, and the rejected shard is not adopted by the next run.
    _resume(problem, store, reference, recomputed=[3], warns=[])


def test_store_without_readable_manifest_is_refused(problem, written, tmp_path):
    store, _ = _copy(written, "folder", tmp_path)
    manifest = store / "manifest.json"
    manifest.unlink()
    # With other settings (more steps) too: shards that cannot be verified are never adopted.
    with pytest.raises(ValueError, match="holds 4 shard.*manifest.*is missing.*delete"):
        _sweep(problem, store, executor=NoCompute([]), steps=STEPS + 10)
    manifest.write_text('{"manifest_version": 1, "header":')
    with pytest.raises(ValueError, match="is unreadable: manifest.json is not readable JSON"):
        _sweep(problem, store, executor=NoCompute([]))


def test_other_settings_are_refused_naming_them(problem, written, tmp_path):
    store, _ = _copy(written, "folder", tmp_path)
    with pytest.raises(ValueError, match=r"holds a different sweep.*lr: 0\.05 in the store, 0\.1"):
        _sweep(problem, store, executor=NoCompute([]), lr=0.1)
    saved = json.loads((store / "manifest.json").read_text())
    assert set(saved["header"]["versions"]) == {"flowlin", "jax", "jaxlib", "diffrax"}
    assert saved["header"]["settings"]["dtype"] == "float64"
    record = saved["shards"]["1"]
    assert record["file"] == "chunk-000001.nc" and len(record["sha256"]) == 64
    assert set(record["configs"]) == {"rows", "problem", "width", "scale", "seed"}
    assert record["configs"]["scale"] == [[0.4, 0.4]] * 2 and len(record["configs"]["rows"]) == 2


SECOND_WRITER = """
import jax, sys
jax.config.update("jax_enable_x64", True)
import flowlin
from helpers_store import COMMON, GRID
p = flowlin.problems.gaussian(jax.random.key(0), n=5, D=12, m=2)
try:
    flowlin.sweep(p, store=sys.argv[1], executor=flowlin.LocalExecutor(jax.devices()[:1]),
                  **GRID, **COMMON)
except RuntimeError as e:
    print(e)
    sys.exit(3)
"""


def test_second_writer_is_refused_while_the_first_finishes(problem, reference, tmp_path):
    store = tmp_path / "shared.nc"
    answers = []

    def second_writer():
        # A second process opens the same store while this sweep is writing it.
        script = textwrap.dedent(SECOND_WRITER)
        env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
        answers.append(
            subprocess.run(
                [sys.executable, "-c", script, str(store)],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
            )  # fmt: skip
        )

    ds, computed = _sweep(problem, store, executor=Counting([], second_writer))
    (second,) = answers
    assert second.returncode == 3, second.stderr[-2000:]
    holder = f"pid {os.getpid()} on host {socket.gethostname()}"
    assert f"another sweep is writing to this store ({holder}" in second.stdout
    # The first was not disturbed: everything computed, written, and equal to the reference.
    assert computed == list(range(N_CHUNKS))
    _assert_identical(ds, reference)
    _assert_identical(xr.open_dataset(store), reference)


def test_only_dead_processes_temporaries_are_removed(problem, written, tmp_path):
    store, shards = _copy(written, "folder", tmp_path)
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    host = socket.gethostname()
    alive = shards / f".tmp-{os.getppid()}@{host}-0a.nc"  # a live process's write in flight
    dead = shards / f".tmp-{done.pid}@{host}-0b.nc"
    alive.write_text("in flight")
    dead.write_text("left over")
    _sweep(problem, store, executor=NoCompute([]))
    assert alive.exists() and not dead.exists()


@pytest.mark.parametrize(
    "store, store_format, match",
    [
        ("fig1.h5", None, "names a file flowlin does not write"),
        ("fig1.nc", "zarr", "names a netcdf result but store_format='zarr'"),
    ],
)
def test_store_path_suffix_is_checked(problem, tmp_path, store, store_format, match):
    with pytest.raises(ValueError, match=match):
        _sweep(problem, tmp_path / store, executor=NoCompute([]), store_format=store_format)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("store, store_format", [("fig1.zarr", None), ("folder", "zarr")])
def test_zarr_store_without_zarr_is_refused_before_any_compute(
    problem, tmp_path, monkeypatch, store, store_format
):
    # `zarr` is an extra: without it a Zarr store is refused by name before a chunk is computed
    # (it used to fail in xarray when the first finished chunk was written).
    monkeypatch.setitem(sys.modules, "zarr", None)  # what `import zarr` sees when not installed
    with pytest.raises(ImportError, match=r"store=.*needs the `zarr` package.*flowlin\[zarr\]"):
        _sweep(problem, tmp_path / store, executor=NoCompute([]), store_format=store_format)
    assert not any(tmp_path.iterdir())


def test_open_sweep_of_zarr_result_without_zarr_names_the_package(written, monkeypatch):
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r"open_sweep.*needs the `zarr` package"):
        flowlin.open_sweep(written / "sweep.zarr")
    flowlin.open_sweep(written / "folder")  # netCDF needs nothing more


def test_open_sweep_of_unfinished_store_says_resume(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the same flowlin.sweep.*to resume"):
        flowlin.open_sweep(tmp_path / "fig1.nc")


def test_a_filesystem_without_locks_is_named_not_blamed_on_another_sweep(tmp_path, monkeypatch):
    """Every error of flock was read as "another sweep is writing" (naming the last holder's
    record): on NFS without its lock service (ENOLCK) every sweep was refused that way. Only
    EWOULDBLOCK/EAGAIN mean held."""
    import errno
    import fcntl

    from flowlin._sweep._lock import StoreLockedError, WriterLock

    (tmp_path / "writer.lock").write_text('{"pid": 4242, "host": "nodeA", "since": "then"}')

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)
    with pytest.raises(StoreLockedError, match="filesystem refused a file lock") as e:
        WriterLock(tmp_path).acquire("flowlin.sweep(...)")
    assert "another sweep" not in str(e.value) and "No locks available" in str(e.value)

    def held(fd, op):
        raise BlockingIOError(errno.EWOULDBLOCK, "Resource temporarily unavailable")

    monkeypatch.setattr(fcntl, "flock", held)
    with pytest.raises(StoreLockedError, match="another sweep is writing.*pid 4242 on host nodeA"):
        WriterLock(tmp_path).acquire("flowlin.sweep(...)")


def test_a_store_refuses_another_format_instead_of_discarding_its_shards(problem, tmp_path):
    """The same sweep with store_format='zarr' on a folder of netCDF shards moved every shard
    to rejected/ ("not written by this sweep") and recomputed them all; the manifest now
    records the format, and the other one is refused before any work."""
    store = tmp_path / "folder"
    first, _ = _sweep(problem, store)
    shards = sorted(p.name for p in (store / "shards").iterdir())
    with pytest.raises(ValueError, match="pass store_format='netcdf' to resume") as refused:
        _sweep(problem, store, store_format="zarr")
    assert "Nothing was computed" in str(refused.value)
    assert sorted(p.name for p in (store / "shards").iterdir()) == shards
    assert not (store / "rejected").exists()
    again, computed = _sweep(problem, store)
    assert computed == [] and again.attrs["chunks_resumed_from_store"] == N_CHUNKS
    xr.testing.assert_identical(first.drop_attrs(), again.drop_attrs())


class NoComputeBatchedByOne(NoCompute):
    batch_size = 1


class NoComputeOnFourDevices(NoCompute):
    def devices_per_chunk(self):
        return 4


def test_another_batch_size_resumes_the_store(problem, reference, written, tmp_path):
    """batch_size groups a device's runs; it does not change what they compute, so a store
    written with batch_size=None resumes with batch_size=1 (it was refused as a different
    sweep), and a NumPy integer chunk_size is the same chunking as the int."""
    store, _ = _copy(written, "folder", tmp_path)
    ds, computed = _sweep(
        problem, store, executor=NoComputeBatchedByOne([]), chunk_size=np.int64(2)
    )
    assert computed == [] and ds.attrs["chunks_resumed_from_store"] == N_CHUNKS
    _assert_identical(ds, reference)
    assert ds.attrs["batch_size"] == 1
    # A NumPy integer batch_size is that int (it was refused as "not a positive int").
    assert flowlin.LocalExecutor(batch_size=np.int64(1)) == flowlin.LocalExecutor(batch_size=1)
    assert flowlin.RayExecutor(batch_size=np.int64(2)).batch_size == 2


def test_other_devices_per_chunk_are_named_in_the_refusal(problem, written, tmp_path):
    """Chunks are cut in multiples of the devices per chunk: the refusal of a store written
    on one device per chunk, resumed on four, names that change, not only the chunk count."""
    store, _ = _copy(written, "folder", tmp_path)
    with pytest.raises(ValueError, match=r"n_chunks: 4 in the store, 2 now.*devices_per_chunk: 1 "
                                         r"in the store, 4 now"):  # fmt: skip
        _sweep(problem, store, executor=NoComputeOnFourDevices([]))


def test_progress_says_how_many_chunks_came_from_the_store(problem, written, tmp_path, capsys):
    store, shards = _copy(written, "folder", tmp_path)
    sorted(shards.iterdir())[0].unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the missing shard's warning (tested above)
        _, computed = _sweep(problem, store, progress=True)
    assert computed == [0]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "3 of 4 chunks read from the store: 3/4 chunks", lines
    assert lines[-1].startswith("3 of 4 chunks read from the store: 4/4 chunks"), lines
