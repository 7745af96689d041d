"""Chunked, resumable result storage: one shard per chunk, written atomically.

Layout of a store folder::

    store/
      sweep.json            what was asked (and its fingerprint), written once, atomically
      shards/chunk-000017.nc   (or .zarr) one finished chunk each; a name appears only once the
                               shard is completely written (temporary name + atomic rename)
      result.nc             (or .zarr) the merged dataset, written when the sweep completes

A sweep restarted with the same store reads `sweep.json`, refuses a store that holds a
different sweep, skips every chunk whose shard exists, and never reads a temporary (partially
written) shard: those are removed and recomputed.
"""

import json
import os
import pathlib
import shutil
import uuid

import xarray as xr


FORMATS = {".nc": "netcdf", ".zarr": "zarr"}
#: Where the shards of a store are, and the name of its merged result.
SHARDS = "shards"
RESULT = "result"
_SHARD_PREFIX = "chunk-"
_TMP_PREFIX = ".tmp-"


def _shard_name(index: int, suffix: str) -> str:
    return f"{_SHARD_PREFIX}{index:06d}{suffix}"


class StoreMismatchError(ValueError):
    """The store holds the shards of another job (its description's fingerprint differs)."""


class ShardStore:
    """A folder of per-chunk result shards (netCDF or Zarr, `fmt`; default: Zarr if the path
    ends in `.zarr`). It stores whatever datasets it is given: the caller owns their schema."""

    def __init__(self, path, fmt: str | None = None):
        self.path = pathlib.Path(path)
        if fmt is None:
            fmt = "zarr" if self.path.suffix == ".zarr" else "netcdf"
        if fmt not in FORMATS.values():
            raise ValueError(f"`ShardStore(fmt=...)`: expected 'netcdf' or 'zarr', got {fmt!r}")
        self.format = fmt
        self.suffix = ".zarr" if fmt == "zarr" else ".nc"
        self.shards = self.path / SHARDS

    # -- the job description -----------------------------------------------------------------
    def open(self, description: dict) -> None:
        """Create the store, or check that an existing one holds the same job (the same
        `description["fingerprint"]`; else `StoreMismatchError`)."""
        self.shards.mkdir(parents=True, exist_ok=True)
        meta = self.path / "sweep.json"
        if meta.exists():
            existing = json.loads(meta.read_text())
            if existing.get("fingerprint") != description["fingerprint"]:
                raise StoreMismatchError(
                    f"the store {str(self.path)!r} holds a different job (fingerprint "
                    f"{existing.get('fingerprint')!r})"
                )
        else:
            tmp = self.path / f"{_TMP_PREFIX}{uuid.uuid4().hex}.json"
            tmp.write_text(json.dumps(description, indent=2, sort_keys=True))
            os.replace(tmp, meta)
        # Leftovers of an interrupted write are never valid: remove them.
        for p in self.shards.glob(f"{_TMP_PREFIX}*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    def done(self) -> set[int]:
        """Indices of the chunks whose shard is completely written."""
        out = set()
        for p in self.shards.glob(f"{_SHARD_PREFIX}*{self.suffix}"):
            try:
                out.add(int(p.name[len(_SHARD_PREFIX) : -len(self.suffix)]))
            except ValueError:
                continue
        return out

    # -- shards ------------------------------------------------------------------------------
    def write(self, index: int, shard: xr.Dataset) -> None:
        """Write one chunk's shard under a temporary name, then rename it into place."""
        final = self.shards / _shard_name(index, self.suffix)
        tmp = self.shards / f"{_TMP_PREFIX}{uuid.uuid4().hex}{self.suffix}"
        if self.format == "zarr":
            shard.to_zarr(tmp, mode="w", consolidated=False)
        else:
            shard.to_netcdf(tmp, engine="netcdf4")
        os.replace(tmp, final) if self.format == "netcdf" else os.rename(tmp, final)

    def read(self, index: int) -> xr.Dataset:
        path = self.shards / _shard_name(index, self.suffix)
        if self.format == "zarr":
            ds = xr.open_zarr(path, consolidated=False)
        else:
            ds = xr.open_dataset(path, engine="netcdf4")
        with ds:
            return ds.load()

    def write_result(self, ds: xr.Dataset) -> pathlib.Path:
        final = self.path / f"{RESULT}{self.suffix}"
        tmp = self.path / f"{_TMP_PREFIX}{uuid.uuid4().hex}{self.suffix}"
        if self.format == "zarr":
            ds.to_zarr(tmp, mode="w", consolidated=False)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        else:
            ds.to_netcdf(tmp, engine="netcdf4")
            os.replace(tmp, final)
        return final


def read_result(path) -> xr.Dataset | None:
    """The merged result in the store folder `path` (netCDF or Zarr, loaded into memory), or
    `None` if there is none (the job has not finished)."""
    path = pathlib.Path(path)
    for suffix, fmt in FORMATS.items():
        result = path / f"{RESULT}{suffix}"
        if result.exists():
            if fmt == "zarr":
                ds = xr.open_zarr(result, consolidated=False)
            else:
                ds = xr.open_dataset(result, engine="netcdf4")
            with ds:
                return ds.load()
    return None
