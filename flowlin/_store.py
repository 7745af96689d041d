"""Chunked, resumable result storage for sweeps: one shard per chunk, written atomically.

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

import numpy as np
import xarray as xr


FORMATS = {".nc": "netcdf", ".zarr": "zarr"}
_SHARD_PREFIX = "chunk-"
_TMP_PREFIX = ".tmp-"


def _shard_name(index: int, suffix: str) -> str:
    return f"{_SHARD_PREFIX}{index:06d}{suffix}"


class ShardStore:
    """A folder of per-chunk result shards (netCDF or Zarr)."""

    def __init__(self, path, fmt: str | None = None):
        self.path = pathlib.Path(path)
        if fmt is None:
            fmt = "zarr" if self.path.suffix == ".zarr" else "netcdf"
        if fmt not in ("netcdf", "zarr"):
            raise ValueError(
                f"`flowlin.sweep(store_format=...)`: expected 'netcdf' or 'zarr', got {fmt!r}"
            )
        self.format = fmt
        self.suffix = ".zarr" if fmt == "zarr" else ".nc"
        self.shards = self.path / "shards"

    # -- the sweep description ---------------------------------------------------------------
    def open(self, description: dict) -> None:
        """Create the store, or check that an existing one holds the same sweep."""
        self.shards.mkdir(parents=True, exist_ok=True)
        meta = self.path / "sweep.json"
        if meta.exists():
            existing = json.loads(meta.read_text())
            if existing.get("fingerprint") != description["fingerprint"]:
                raise ValueError(
                    f"`flowlin.sweep(store={str(self.path)!r})`: this store holds a different "
                    "sweep (its problems, grid, settings or chunking differ; chunks depend on "
                    "chunk_size and on the devices per chunk); use a new store path or delete "
                    "the old one"
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
        final = self.path / f"result{self.suffix}"
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


def shard_to_dataset(index: int, rows: np.ndarray, arrays: dict[str, np.ndarray]) -> xr.Dataset:
    """One chunk's results as a Dataset along `config` (the flat configuration index)."""
    data = {}
    for name, value in arrays.items():
        dims = ("config",) + tuple(f"{name}_dim{i}" for i in range(1, value.ndim))
        if name.startswith("time_"):
            dims = ("config", "time")
        data[name] = (dims, value)
    return xr.Dataset(data, coords={"config": rows}, attrs={"chunk": index})


def dataset_to_arrays(ds: xr.Dataset) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    return ds["config"].values, {k: v.values for k, v in ds.data_vars.items()}


def open_sweep(path) -> xr.Dataset:
    """Load the merged result of a finished `flowlin.sweep(..., store=path)`.

    **Arguments:** `path`, the store folder given to `flowlin.sweep` (netCDF or Zarr).

    **Returns:** the same `xarray.Dataset` the sweep returned (loaded into memory).
    """
    path = pathlib.Path(path)
    for suffix, fmt in FORMATS.items():
        result = path / f"result{suffix}"
        if result.exists():
            opener = (
                (lambda p: xr.open_zarr(p, consolidated=False))
                if fmt == "zarr"
                else (lambda p: xr.open_dataset(p, engine="netcdf4"))
            )
            with opener(result) as ds:
                return ds.load()
    raise FileNotFoundError(
        f"`flowlin.open_sweep({str(path)!r})`: no result.nc or result.zarr there; the sweep may "
        "not have finished (run it again with the same store to resume)"
    )
