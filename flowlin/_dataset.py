"""The dataset schema of flowlin's results: the one file that knows variable, coordinate and
attribute names.

Internal API: the names here have no leading underscore so that the sweep (kernel, store,
assembly), the summary and the reproduction code can share them; they are not exported from
`flowlin`.

A run becomes a flat *record* (`record`): a dict of arrays whose keys are the storage names.

- `time_<diagnostic>`: every saved diagnostic over time (`flowlin.DIAGNOSTICS`); in an
  assembled dataset the prefix is dropped and the variable gains a `time` dimension;
- `final_<diagnostic>`, `final_time`, `num_steps`, `status` (a `flowlin.RESULTS` code; names
  in `attrs["status_codes"]`: `successful` = reached t1 and converged, `not_converged`,
  `event_occurred`, `stiff`, ...), `succeeded` (usable numbers: `Trajectory.succeeded`),
  `converged` (`Trajectory.converged`: also converged);
- `theory_<key>`: `flowlin.theory.quantities` (`flowlin.theory.QUANTITY_KEYS`);
- `bound_<name>_<field>`: one variable per `flowlin.CHECK_KEYS` name and `flowlin.BoundCheck`
  field (`holds`, `applicable`, `worst_slack`, `tightness`, `excluded`, `reason`).

A sweep over deep networks (docs/theory.md §6) adds a `depth` dimension (or coordinate, for a
list), a `layer` dimension (hidden layers l = 1..L-1) for the per-layer `balancedness_drift`
(NaN beyond a run's own L - 1 layers), and `final_head_norm` = ‖W_L···W_2(∞)‖_F.

Records of many runs are stacked into arrays with a leading row axis and turned into an
`xarray.Dataset` by `to_dataset` (a sweep grid or list), `shard_dataset` (one stored chunk)
or `trajectory_dataset` (a handful of named runs, for the papers' figures).
"""

import dataclasses
import datetime
import functools
import importlib.metadata
import json
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import ArrayLike

from ._bounds import BoundCheck, check_bounds
from ._resolution import withdraw
from ._results import status_code
from ._saveat import DIAGNOSTICS
from ._trajectory import Trajectory
from .theory import quantities as theory_quantities


_TIME = "time_"
_FINAL = "final_"
_THEORY = "theory_"
_BOUND = "bound_"

#: Scalar variables of every record, besides the `final_*`/`theory_*`/`bound_*` families.
FINAL_TIME = "final_time"
NUM_STEPS = "num_steps"
STATUS = "status"
SUCCEEDED = "succeeded"
CONVERGED = "converged"
#: The exact law of the implicit-bias gap, per run (`flowlin.theory.run_law`, docs/theory.md
#: §2(h)): d/(σ1‖V(∞)‖), F(d), E[d² | V(∞)], Var[d² | V(∞)], and whether d is the limit gap.
LAW_VARS = ("law_standardized_gap", "law_quantile", "law_mean_square", "law_variance_square")
LAW_USABLE = "law_usable"

#: Deep networks (docs/theory.md §6): ‖W_L···W_2‖_F where the run ended (from the final output
#: Gram: its singular values set the gap's law, as V(∞)'s do at two layers).
HEAD_NORM = "final_head_norm"
#: Diagnostics with one column per hidden layer (stored with a trailing `layer` dimension).
LAYERED = ("balancedness_drift",)
#: What a sweep over depths says about what it recorded (its result's attributes).
DEPTH_ATTRS = {
    "theory_at_depth": (
        "theory_* are the two-layer results of docs/theory.md §2, recorded at depth 2 only; "
        "NaN at depth > 2, where they do not apply (docs/theory.md §6)"
    ),
    "bounds_at_depth": (
        "bound_* are flowlin.check_bounds' entries for a deep init (docs/theory.md §6); a "
        "bound a depth does not record is stored as not applicable (applicable = 0, NaN "
        "slack, reason -1), never as holding"
    ),
    "law_at_depth": (
        "law_* set d = ‖W(∞) − W*‖ against its exact law given W_L···W_2(∞) (W_1(0)Φ2 is "
        "i.i.d. Gaussian, independent of everything else, and never moves)"
    ),
}

#: The fields of a `flowlin.BoundCheck`, one stored variable each per bound.
BOUND_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(BoundCheck))

#: Dimension / coordinate names.
TIME = "time"
CONFIG = "config"
CASE = "case"
GRID_DIMS = ("problem", "width", "scale", "seed")
PROBLEM, WIDTH, SCALE, SEED = GRID_DIMS
#: A sweep over depths (deep networks): the depth L, and the hidden layer of a per-layer variable.
DEPTH = "depth"
LAYER = "layer"
DEEP_GRID_DIMS = (PROBLEM, DEPTH, WIDTH, SCALE, SEED)

#: Package versions recorded in every result (`versions`).
VERSIONED_PACKAGES = (
    "flowlin",
    "jax",
    "jaxlib",
    "equinox",
    "diffrax",
    "optax",
    "xarray",
    "numpy",
    "scipy",
)


# --------------------------------------------------------------------------------------------
# Variable names
# --------------------------------------------------------------------------------------------
def time_var(diagnostic: str) -> str:
    """Record key of a diagnostic saved over time (the dataset variable is `diagnostic`)."""
    return _TIME + diagnostic


def final_var(diagnostic: str) -> str:
    """Variable holding a diagnostic at the end of the run."""
    return _FINAL + diagnostic


def theory_var(key: str) -> str:
    """Variable holding `flowlin.theory.quantities(...)[key]`."""
    return _THEORY + key


def bound_var(name: str, field: str) -> str:
    """Variable holding field `field` of `flowlin.BoundCheck` for bound `name`."""
    if field not in BOUND_FIELDS:
        raise ValueError(f"`bound_var(...)`: field must be one of {BOUND_FIELDS}, got {field!r}")
    return f"{_BOUND}{name}_{field}"


def is_time_var(key: str) -> bool:
    """Whether a record key holds a diagnostic over time (stored with a `time` axis)."""
    return key.startswith(_TIME)


def bound_names(ds: xr.Dataset | Mapping) -> list[str]:
    """Names of the bounds stored in `ds` (sorted), read from its `bound_<name>_holds`."""
    head, tail = _BOUND, "_holds"
    return sorted(v[len(head) : -len(tail)] for v in ds if v.startswith(head) and v.endswith(tail))


# --------------------------------------------------------------------------------------------
# One run → a record
# --------------------------------------------------------------------------------------------
def record(
    traj: Trajectory,
    quantities: Mapping | None = None,
    checks: Mapping[str, BoundCheck] | None = None,
    law=None,
    *,
    dtype=None,
) -> dict[str, jax.Array]:
    """Flatten one run into its record (works under `jit`/`vmap`).

    **Arguments:** `traj`; optionally `quantities` (`flowlin.theory.quantities`), `checks`
    (`flowlin.check_bounds`) and `law` (`flowlin.theory.run_law`: the `LAW_VARS` and
    `LAW_USABLE`); `dtype`: cast every quantity to it (a sweep stores one float dtype, so the
    `*_applies` flags become 0/1).

    A failed run never counts as a bound holding: `applicable` is and-ed with `succeeded`, and
    `holds` with `applicable`.
    """
    succeeded = traj.succeeded
    out = {time_var(k): getattr(traj, k) for k in DIAGNOSTICS if getattr(traj, k) is not None}
    out.update({final_var(k): v for k, v in traj.final_values.items()})
    out[FINAL_TIME] = traj.final_time
    out[NUM_STEPS] = traj.num_steps
    out[STATUS] = status_code(traj.result)
    out[SUCCEEDED] = succeeded
    out[CONVERGED] = traj.converged
    for k, v in (quantities or {}).items():
        out[theory_var(k)] = jnp.asarray(v, dtype)
    for name, c in (checks or {}).items():
        # A failed run's checks are not checked (reason 3, NaN slack), whatever their own
        # status said (a check that reads only the init would otherwise keep reason 0).
        c = withdraw(c, ~succeeded & (c.reason == 0), 3)
        fields = {f: getattr(c, f) for f in BOUND_FIELDS}
        fields["applicable"] = c.applicable & succeeded
        fields["holds"] = c.holds & fields["applicable"]
        out.update({bound_var(name, f): v for f, v in fields.items()})
    if law is not None:
        values = (law.standardized, law.quantile, law.law.mean_square(), law.law.variance_square())
        out.update({k: jnp.asarray(v, dtype) for k, v in zip(LAW_VARS, values)})
        out[LAW_USABLE] = law.usable & succeeded
    return out


def stack_records(records: Sequence[Mapping]) -> dict[str, np.ndarray]:
    """Records of several runs → host arrays with a leading row axis."""
    return {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}


# --------------------------------------------------------------------------------------------
# Rows of records → datasets
# --------------------------------------------------------------------------------------------
def to_dataset(
    arrays: Mapping[str, np.ndarray],
    dims: tuple[str, ...],
    coords: Mapping,
    attrs: Mapping | None = None,
) -> xr.Dataset:
    """Stacked records (leading axes `dims`) → a Dataset: `time_*` keys lose their prefix and
    gain a trailing `time` axis; everything else is indexed by `dims` alone; a per-layer
    diagnostic (`LAYERED`) also gains a trailing `layer` axis."""
    data = {}
    for k, v in arrays.items():
        name = k[len(_TIME) :] if is_time_var(k) else k
        extra = (TIME,) if is_time_var(k) else ()
        if name.removeprefix(_FINAL) in LAYERED:
            extra += (LAYER,)
        data[name] = (tuple(dims) + extra, v)
    return xr.Dataset(data, coords=dict(coords), attrs=dict(attrs or {}))


def grid_coords(
    n_problems: int,
    widths: np.ndarray,
    scale_pairs: np.ndarray,
    seeds: np.ndarray,
    ts: ArrayLike,
    *,
    paper_init: bool,
    depths: np.ndarray | None = None,
) -> tuple[tuple[str, ...], dict]:
    """Dims and coordinates of a sweep over the grid problem × width × scale × seed (with
    `depths`: problem × depth × width × scale × seed, and the `layer` coordinate)."""
    scale_is_pair = not np.all(scale_pairs[:, 0] == scale_pairs[:, 1])
    coords = {
        "problem": np.arange(n_problems),
        "width": widths,
        "scale": np.arange(len(scale_pairs)) if scale_is_pair else scale_pairs[:, 0],
        "seed": seeds,
        TIME: np.asarray(ts),
    }
    if scale_is_pair or not paper_init:
        coords["std1"] = ("scale", scale_pairs[:, 0])
        coords["std2"] = ("scale", scale_pairs[:, 1])
    if depths is None:
        return GRID_DIMS, coords
    coords[DEPTH] = np.asarray(depths)
    coords[LAYER] = layer_coordinate(depths)
    return DEEP_GRID_DIMS, coords


def layer_coordinate(depths) -> np.ndarray:
    """The hidden layers 1..L-1 of the deepest network."""
    return np.arange(1, int(np.max(depths)))


def list_coords(
    problem: np.ndarray,
    width: np.ndarray,
    scale_pairs: np.ndarray,
    seed: np.ndarray,
    ts: ArrayLike,
    *,
    depth: np.ndarray | None = None,
) -> tuple[tuple[str, ...], dict]:
    """Dims and coordinates of a sweep over an explicit list of configurations."""
    coords = {
        CONFIG: np.arange(len(width)),
        "problem": (CONFIG, problem),
        "width": (CONFIG, width),
        "seed": (CONFIG, seed),
        TIME: np.asarray(ts),
    }
    if depth is not None:
        coords[DEPTH] = (CONFIG, depth)
        coords[LAYER] = layer_coordinate(depth)
    if not np.all(scale_pairs[:, 0] == scale_pairs[:, 1]):
        coords["std1"] = (CONFIG, scale_pairs[:, 0])
        coords["std2"] = (CONFIG, scale_pairs[:, 1])
    else:
        coords["scale"] = (CONFIG, scale_pairs[:, 0])
    return (CONFIG,), coords


def drop_single_problem(ds: xr.Dataset) -> xr.Dataset:
    """A grid over one problem drops its `problem` axis."""
    return ds.isel(problem=0, drop=True)


def scale_meaning(paper_init: bool) -> dict[str, str]:
    """The attribute saying what the `scale` coordinate means."""
    meaning = (
        "alpha: entries N(0, h^-2alpha)"
        if paper_init
        else "std of the entries (std1 for W1, std2 for W2)"
    )
    return {"scale_meaning": meaning}


def shard_dataset(index: int, rows: np.ndarray, arrays: Mapping[str, np.ndarray]) -> xr.Dataset:
    """One chunk's records as a Dataset along `config` (the flat configuration index), as a
    store keeps it (keys unchanged, so that `shard_arrays` gives them back)."""
    data = {}
    for name, value in arrays.items():
        if is_time_var(name):
            dims = (CONFIG, TIME) + tuple(f"{name}_dim{i}" for i in range(2, value.ndim))
        else:
            dims = (CONFIG,) + tuple(f"{name}_dim{i}" for i in range(1, value.ndim))
        data[name] = (dims, value)
    return xr.Dataset(data, coords={CONFIG: rows}, attrs={"chunk": index})


def shard_arrays(ds: xr.Dataset) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The rows and records of a shard written by `shard_dataset`."""
    return ds[CONFIG].values, {k: v.values for k, v in ds.data_vars.items()}


def trajectory_dataset(names, trajs, nets, problem, *, widths=None, alpha=None) -> xr.Dataset:
    """A few named runs as a Dataset with dims `(case[, time])`, in the sweep's naming (so
    `flowlin.summarize_bounds` reads it): each run's record with its
    `flowlin.theory.quantities` and `flowlin.check_bounds` (at `widths`, default each
    network's width, and `alpha`)."""
    hs = list(widths) if widths else [n.width for n in nets]
    records = []
    for t, n, h in zip(trajs, nets, hs):
        q = theory_quantities(n, problem, width=h, alpha=alpha)
        checks = check_bounds(t, n, problem, width=h, alpha=alpha)
        records.append(record(t, q, checks))
    coords = {CASE: list(names), TIME: np.asarray(trajs[0].ts), "width": (CASE, hs)}
    return to_dataset(stack_records(records), (CASE,), coords)


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------
def all_bounds_held(ds: xr.Dataset) -> tuple[bool, list[str]]:
    """Whether every run succeeded and every applicable bound held in every run, and the
    names of the bounds that did not hold somewhere."""
    failed = []
    for name in bound_names(ds):
        applicable = ds[bound_var(name, "applicable")].values.astype(bool)
        holds = ds[bound_var(name, "holds")].values.astype(bool)
        if np.any(applicable & ~holds):
            failed.append(name)
    return (not failed and bool(ds[SUCCEEDED].values.all())), failed


def bound_arrays(ds: xr.Dataset, name: str) -> dict[str, np.ndarray]:
    """The `flowlin.BoundCheck` fields of bound `name` as host arrays."""
    return {f: ds[bound_var(name, f)].values for f in BOUND_FIELDS}


# --------------------------------------------------------------------------------------------
# Attributes
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    """Installed versions of flowlin and the packages its numbers depend on (None: missing)."""
    out = {}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def version_attrs() -> dict[str, str]:
    """`versions()` as dataset attributes (`<package>_version`)."""
    return {f"{k}_version": v or "unknown" for k, v in versions().items()}


def run_attrs(
    *,
    settings: Mapping,
    devices: Sequence[str],
    n_chunks: int,
    resumed: int,
    compiled_shapes: int,
    fingerprint: str,
    status_codes: Mapping[int, str],
) -> dict:
    """The attributes a sweep stamps on its result: versions, settings (netCDF-safe), the
    devices used, chunking, compilations, status code names, time of creation, fingerprint."""
    out = version_attrs()
    out.update({k: attr_value(v) for k, v in settings.items()})
    out["devices"] = json.dumps(list(devices))
    out["n_chunks"] = int(n_chunks)
    out["chunks_resumed_from_store"] = int(resumed)
    out["compiled_shapes"] = int(compiled_shapes)
    out["status_codes"] = json.dumps(dict(status_codes))
    out["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat()
    out["fingerprint"] = fingerprint
    return out


def attr_value(value):
    """A netCDF-storable attribute: bools as 0/1, strings and numbers as they are, anything
    else (None, lists, dicts, objects) as JSON text."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.number)):
        return value
    return json.dumps(value, default=str)


def netcdf_safe(ds: xr.Dataset, *, bools_as_int8: bool = False) -> xr.Dataset:
    """A copy of `ds` whose attributes netCDF can store (`attr_value`); with `bools_as_int8`,
    boolean variables become int8 (xarray otherwise encodes them and reads them back as
    bool)."""
    ds = ds.copy()
    ds.attrs = {k: attr_value(v) for k, v in ds.attrs.items()}
    if bools_as_int8:
        for k in ds.data_vars:
            if ds[k].dtype == bool:
                ds[k] = ds[k].astype(np.int8)
    return ds
