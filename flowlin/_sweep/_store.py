"""Chunked, resumable, verifiable result storage: one shard per chunk. Internal API.

What `flowlin.sweep(store=...)` names:

- a folder (no suffix): `store/result.nc` (or `result.zarr` with `store_format="zarr"`) is the
  merged result, and the folder also holds the working files below;
- a `.nc` file or a `.zarr` store: the merged result is written exactly there (open it with
  `xarray.open_dataset` / `xarray.open_zarr`, or `flowlin.open_sweep`), and the working files
  live in the folder beside it, `<name>.parts/`;
- any other file suffix (`.h5`, `.json`, ...) is refused with a message.

The working folder::

    manifest.json         the sweep's fingerprint and every shard's coordinates and checksum
    writer.lock           held (OS lock) by the one sweep writing here
    shards/chunk-000017.nc   (or .zarr) one finished chunk each, named only once complete
    rejected/             shards that failed verification (kept for inspection, never read)

Before any compute, `ShardStore.open` takes the lock, checks the manifest's fingerprint against
the sweep's, and verifies every shard file: one that is not in the manifest, whose checksum
differs (changed bytes, truncated, a variable deleted, a copy of another chunk) or whose
recorded configurations are not its chunk's is moved to `rejected/` with a warning naming it,
and recomputed. A store whose manifest is missing or unreadable while shards exist is refused.
"""

import importlib.util
import pathlib
import time

import xarray as xr

from ._lock import StoreLockedError, WriterLock
from ._manifest import (
    FLUSH_COST_FACTOR,
    FLUSH_INTERVAL_S,
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    checksum,
    is_temp,
    remove,
    stale_temp,
    sync_tree,
    temp_name,
)


FORMATS = {".nc": "netcdf", ".zarr": "zarr"}
SUFFIXES = {fmt: suffix for suffix, fmt in FORMATS.items()}
#: Where the shards of a store are, the merged result of a folder store, and the working
#: folder beside a `.nc`/`.zarr` result.
SHARDS, RESULT, PARTS, REJECTED = "shards", "result", ".parts", "rejected"
#: Suffixes that name a file flowlin does not write: refused rather than made a folder.
FILE_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nc4", ".cdf", ".netcdf", ".json", ".csv", ".npz")
_SHARD_PREFIX = "chunk-"


class StoreMismatchError(ValueError):
    """The store holds the shards of another sweep (its fingerprint differs); `differences`
    says what differs (settings, versions, sizes), as in the message."""

    def __init__(self, message: str, differences: str | None = None):
        super().__init__(message)
        self.differences = message if differences is None else differences


class StoreManifestError(ValueError):
    """The store has shards or a result but no readable manifest: nothing can be verified."""


def store_layout(call: str, store, store_format: str | None):
    """`(working folder, result path, format)` of what `store=` names (module docstring)."""
    path = pathlib.Path(store)
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        fmt = FORMATS[suffix]
        if store_format not in (None, fmt):
            raise ValueError(
                f"`{call}`: store={str(store)!r} names a {fmt} result but "
                f"store_format={store_format!r}; drop store_format or change the suffix"
            )
        require_zarr(call, store, fmt)
        return path.with_name(path.name + PARTS), path, fmt
    if suffix in FILE_SUFFIXES or path.is_file():
        raise ValueError(
            f"`{call}`: store={str(store)!r} names a file flowlin does not write; store= takes "
            "a folder (the result is <folder>/result.nc), a .nc file or a .zarr store"
        )
    fmt = store_format or "netcdf"
    require_zarr(call, store, fmt)
    return path, path / f"{RESULT}{SUFFIXES[fmt]}", fmt


def require_zarr(call: str, store, fmt: str) -> None:
    """Refuse a Zarr store before any compute when `zarr` is not installed (it is an extra:
    otherwise the sweep would fail only when writing its first finished chunk)."""
    if fmt == "zarr" and importlib.util.find_spec("zarr") is None:
        raise ImportError(
            f"`{call}`: store={str(store)!r} is a Zarr store, which needs the `zarr` package; "
            "install it (`pip install 'flowlin[zarr]'` or `pip install zarr`) or use a .nc "
            "file or a folder (netCDF)"
        )


def shard_name(index: int, fmt: str) -> str:
    return f"{_SHARD_PREFIX}{index:06d}{SUFFIXES[fmt]}"


def _shard_index(name: str, fmt: str) -> int | None:
    suffix = SUFFIXES[fmt]
    if not (name.startswith(_SHARD_PREFIX) and name.endswith(suffix)):
        return None
    try:
        return int(name[len(_SHARD_PREFIX) : -len(suffix)])
    except ValueError:
        return None


def write_dataset(ds: xr.Dataset, path: pathlib.Path, fmt: str) -> None:
    if fmt == "zarr":
        ds.to_zarr(path, mode="w", consolidated=False)
    else:
        ds.to_netcdf(path, engine="netcdf4")


def read_dataset(path: pathlib.Path, fmt: str) -> xr.Dataset:
    """A netCDF file or Zarr store, loaded into memory (the file is closed again)."""
    if fmt == "zarr":
        ds = xr.open_zarr(path, consolidated=False)
    else:
        ds = xr.open_dataset(path, engine="netcdf4")
    with ds:
        return ds.load()


def write_shard(shards: pathlib.Path, index: int, fmt: str, shard: xr.Dataset) -> dict:
    """Write one chunk's shard into the folder `shards` (temporary name, fsync, rename) and
    return its checksum record. Called by the sweep's process or by a Ray worker."""
    final = shards / shard_name(index, fmt)
    tmp = shards / temp_name(SUFFIXES[fmt])
    try:
        write_dataset(shard, tmp, fmt)
        sync_tree(tmp)
        record = checksum(tmp)
        if final.exists():  # a rejected or unrecorded shard of this chunk: replaced
            remove(final)
        tmp.rename(final)
    except BaseException:
        remove(tmp)
        raise
    return dict(record, file=final.name, chunk=index)


class ShardStore:
    """The store of one sweep (see the module docstring): `open` it (lock, verify), `write`
    and `add` shards, `read` them, `write_result`, then `close` it (flush, unlock)."""

    def __init__(self, call: str, store, fmt: str | None = None):
        self.call = call
        self.given = str(store)
        self.path, self.result, self.format = store_layout(call, store, fmt)
        self.shards = self.path / SHARDS
        self.manifest_path = self.path / MANIFEST_FILE
        self._lock = WriterLock(self.path)
        self._manifest: Manifest | None = None
        self._expected: dict[int, dict] = {}
        self._dirty, self._flushed, self._flush_cost = False, 0.0, 0.0
        #: Why shards were rejected by `open` (one message each, naming the file).
        self.rejected: list[str] = []

    # -- opening: lock, manifest, verification ------------------------------------------------
    def open(self, header: dict, expected: dict[int, dict]) -> set[int]:
        """Take the store for this sweep and return the chunks it already holds, verified.

        `header` describes the sweep (`header["fingerprint"]` identifies it); `expected` maps
        each chunk index to the coordinates of its configurations."""
        try:
            self.shards.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(self.call)  # (creates the lock file: a first write)
        except StoreLockedError:
            raise
        except OSError as e:  # a file of that name, no permission, a read-only disk
            raise ValueError(
                f"`{self.call}`: store cannot hold the results: {str(self.shards)!r} is not a "
                f"folder it can make or write ({e.strerror or e})"
            ) from None
        try:
            self._remove_stale_temps()
            self._manifest = self._read_manifest(dict(header, format=self.format))
            self._expected = expected
            done = self._verify(expected)
            self._save()
        except BaseException:
            self._lock.release()
            raise
        return done

    def _remove_stale_temps(self) -> None:
        for folder in (self.path, self.shards):
            for p in folder.iterdir():
                if is_temp(p.name) and stale_temp(p.name):
                    remove(p)

    def _read_manifest(self, header: dict) -> Manifest:
        try:
            manifest = Manifest.read(self.manifest_path)
        except ManifestError as e:
            manifest, problem = None, f"is unreadable: {e}"
        else:
            problem = "is missing"
        existing = [p.name for p in self.shards.iterdir() if not is_temp(p.name)]
        if manifest is None and (existing or self.result.exists()):
            what = f"{len(existing)} shard(s)" if existing else f"a result ({self.result})"
            raise StoreManifestError(
                f"`{self.call}`: the store {self.given!r} holds {what}, but its manifest "
                f"({self.manifest_path}) {problem}, so nothing in it can be verified against "
                f"this sweep. Nothing was computed. Use a new store path, or delete "
                f"{str(self.path)!r} (and {str(self.result)!r}) to start this sweep from zero."
            )
        if manifest is None:
            return Manifest(header, {})
        if manifest.header.get("fingerprint") != header["fingerprint"]:
            raise StoreMismatchError(_differences(manifest.header, header))
        stored = manifest.header.get("format")  # None: a store from before it was recorded
        if stored is not None and stored != self.format:
            raise StoreMismatchError(
                f"`{self.call}`: the store {self.given!r} holds this sweep's shards as {stored}; "
                f"pass store_format={stored!r} to resume it (store_format={self.format!r} would "
                "discard them), or use a new store path. Nothing was computed."
            )
        return manifest

    def _verify(self, expected: dict[int, dict]) -> set[int]:
        """Verify every shard file against the manifest; move the rest to `rejected/`."""
        records = self._manifest.shards
        by_sum = {r["sha256"]: i for i, r in records.items()}
        done = set()
        for p in sorted(self.shards.iterdir()):
            if is_temp(p.name):
                continue
            index = _shard_index(p.name, self.format)
            record = records.get(index) if index is not None else None
            reason = None
            if record is None:
                reason = (
                    "is not in the store's manifest: it finished after the manifest was last "
                    "saved (a sweep stopped in between), or another sweep wrote it"
                )
            elif record.get("configs") != expected.get(index):
                reason = f"is recorded with other configurations than chunk {index}'s"
            else:
                found = checksum(p)["sha256"]
                if found != record["sha256"]:
                    reason = "differs from what was written (checksum mismatch: changed bytes, "
                    reason += "truncated or data deleted)"
                    if found in by_sum:
                        reason = f"is a copy of chunk {by_sum[found]}'s shard, not chunk {index}'s"
            if reason is None:
                done.add(index)
                continue
            records.pop(index, None)
            self._reject(p, reason)
        for index in set(records) - done:  # recorded, but the file is gone: recompute
            records.pop(index)
        return done

    def _reject(self, path: pathlib.Path, reason: str) -> None:
        rejected = self.path / REJECTED
        rejected.mkdir(exist_ok=True)
        target = rejected / path.name
        remove(target)
        path.rename(target)
        self.rejected.append(
            f"`{self.call}`: the shard {str(path)!r} {reason}; it is not used and its chunk is "
            f"recomputed (the file was moved to {str(target)!r})"
        )
        self._dirty = True

    # -- shards ------------------------------------------------------------------------------
    def write(self, index: int, shard: xr.Dataset) -> None:
        """Write one chunk's shard atomically and record it in the manifest."""
        self.add(write_shard(self.shards, index, self.format, shard))

    def add(self, record: dict) -> None:
        """Record a shard written by `write_shard` (by this process or a Ray worker): its
        checksum record and its chunk's configurations."""
        index = record["chunk"]
        self._manifest.shards[index] = dict(record, configs=self._expected[index])
        self._dirty = True
        since = time.monotonic() - self._flushed
        if since >= FLUSH_INTERVAL_S and since >= FLUSH_COST_FACTOR * self._flush_cost:
            self._save()

    def _save(self) -> None:
        start = time.monotonic()
        self._manifest.save(self.manifest_path)
        self._flushed = time.monotonic()
        self._flush_cost, self._dirty = self._flushed - start, False

    def read(self, index: int) -> xr.Dataset:
        return read_dataset(self.shards / shard_name(index, self.format), self.format)

    def saved(self) -> int:
        """How many chunks have a recorded shard."""
        return 0 if self._manifest is None else len(self._manifest.shards)

    def write_result(self, ds: xr.Dataset) -> pathlib.Path:
        """Write the merged result (temporary name in the working folder, then renamed)."""
        tmp = self.path / temp_name(SUFFIXES[self.format])
        try:
            write_dataset(ds, tmp, self.format)
            sync_tree(tmp)
            if self.format == "zarr":
                remove(self.result)  # a folder cannot be replaced in one rename
            tmp.replace(self.result)
        except BaseException:
            remove(tmp)
            raise
        return self.result

    def close(self) -> None:
        """Flush the manifest and release the lock (also after an error or Ctrl-C)."""
        try:
            if self._lock.held and self._dirty and self._manifest is not None:
                self._save()
        finally:
            self._lock.release()


def _differences(old: dict, new: dict) -> str:
    """What differs between two stores' headers, for the refusal message."""
    diffs = []
    for group in ("settings", "versions", "run"):
        a, b = old.get(group) or {}, new.get(group) or {}
        for k in sorted((set(a) | set(b)) - {"batch_size"}):  # not in the fingerprint
            if a.get(k) != b.get(k):
                diffs.append(f"{k}: {a.get(k)!r} in the store, {b.get(k)!r} now")
    for k in ("n_configs", "n_chunks", "devices_per_chunk"):
        if k in old and old.get(k) != new.get(k):
            diffs.append(f"{k}: {old.get(k)!r} in the store, {new.get(k)!r} now")
    return "; ".join(diffs[:6]) or (
        "the problems' data (X and Y, their shapes or the rank), the grid or the chunks differ"
    )


def store_progress(store, store_format: str | None = None) -> tuple[int, int | None]:
    """`(chunks saved, chunks in the sweep)` of a store, read from its manifest without a lock
    (`(0, None)` where there is no readable manifest)."""
    folder, _, _ = store_layout("flowlin.sweep(...)", store, store_format)
    try:
        manifest = Manifest.read(folder / MANIFEST_FILE)
    except ManifestError:
        return 0, None
    if manifest is None:
        return 0, None
    return len(manifest.shards), manifest.header.get("n_chunks")


def find_result(path) -> tuple[pathlib.Path, str] | None:
    """The merged result a store path names, and its format; None if not written (yet)."""
    path = pathlib.Path(path)
    if path.is_dir() and (path / MANIFEST_FILE).exists():
        candidates = [(path / f"{RESULT}{s}", f) for s, f in FORMATS.items()]
    elif path.suffix.lower() in FORMATS:
        candidates = [(path, FORMATS[path.suffix.lower()])]
    else:
        candidates = [(path / f"{RESULT}{s}", f) for s, f in FORMATS.items()]
    for result, fmt in candidates:
        if result.exists():
            return result, fmt
    return None
