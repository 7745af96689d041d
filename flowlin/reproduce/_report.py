"""What the reproduction's figures, the TOML runner and the demo share: figures, files,
Markdown tables, the bound verdict, crossing times, the report. Internal API.

matplotlib is imported here (lazily, by `plt`) and in the figure modules of this package only:
`import flowlin` never loads it.
"""

import contextlib
import contextvars
import dataclasses
import datetime
import json
import os
import pathlib
import sys

import jax
import numpy as np
import xarray as xr

from .._dataset import all_bounds_held, netcdf_safe, versions
from .._interrupt import raise_if_interrupted
from .._summary import summarize_bounds
from .._sweep._manifest import temp_name
from .._sweep._store import StoreMismatchError, store_progress


@dataclasses.dataclass
class Section:
    """One target's results: the numbers (for tests and JSON) and its Markdown report."""

    name: str
    numbers: dict
    markdown: str
    files: list[pathlib.Path]
    seconds: float = 0.0


def plt():
    """`matplotlib.pyplot` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _atomically(path: pathlib.Path, write) -> None:
    """Call `write(tmp)` on a temporary name beside `path`, then rename it into place: a
    reader (or an interrupted run) sees the old file or the new one, never half of one."""
    tmp = path.parent / temp_name(path.suffix)
    try:
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: pathlib.Path, text: str) -> None:
    """Write a text file (a report) atomically."""
    _atomically(path, lambda tmp: tmp.write_text(text))


def check_writable(call: str, out: pathlib.Path, targets) -> None:
    """Make `out` and its `out/<target>` folders, and write a file in each: a `ValueError`
    naming `out` (and `call`) if any of them cannot take the results."""
    for folder in (out, *(out / t for t in targets)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / temp_name(".probe")
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:  # a file of that name, no permission, a read-only disk
            raise ValueError(
                f"`{call}`: out={str(out)!r} cannot take the results: {str(folder)!r} is not a "
                f"writable folder ({e.strerror or e})"
            ) from None


def save_figure(fig, path: pathlib.Path, files: list) -> None:
    """Save `fig` as a PNG at `path` (atomically), close it, and add `path` to `files`."""
    fig.tight_layout()
    try:
        _atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt().close(fig)
    files.append(path)


def save_netcdf(ds: xr.Dataset, path: pathlib.Path, files: list) -> None:
    """Write `ds` to netCDF (attributes made storable, booleans as 0/1; atomically); add `path`
    to `files`."""
    _atomically(path, netcdf_safe(ds, bools_as_int8=True).to_netcdf)
    files.append(path)


# --------------------------------------------------------------------------------------------
# Degenerate runs: left out of the figures, listed in the report
# --------------------------------------------------------------------------------------------
#: Runs listed by name in a report's "left out" section (the rest are counted).
MAX_LISTED = 10


def _run_labels(bad: xr.DataArray) -> list[str]:
    """`dim=value, ...` of each True entry of `bad`."""
    if bad.ndim == 0:
        return ["the run"] if bool(bad) else []
    series = bad.to_series()
    names = series.index.names
    labels = []
    for key in series.index[series.values]:
        key = key if isinstance(key, tuple) else (key,)
        labels.append(", ".join(f"{n}={v}" for n, v in zip(names, key)))
    return labels


def _listed(labels: list[str]) -> str:
    head = "; ".join(labels[:MAX_LISTED])
    return head + (f"; and {len(labels) - MAX_LISTED} more" if len(labels) > MAX_LISTED else "")


def plottable(ds: xr.Dataset, log_vars, *, time: str = "time") -> tuple[xr.Dataset, list[str]]:
    """`ds` made safe to plot, and what was left out (one line each, for the report).

    - a coordinate value repeated along a dimension: only its first entry is kept;
    - a run whose `log_vars` (variables drawn on a log axis) are not finite somewhere
      (diverged): masked (NaN) in those variables;
    - values <= 0 of a `log_vars` variable (e.g. all-zero data) cannot be drawn on a log axis:
      masked; a variable left with nothing to draw is named.
    """
    skipped = []
    for dim in list(ds.dims):
        if dim not in ds.coords or ds[dim].ndim != 1:
            continue
        values = [str(v) for v in ds[dim].values]
        first = sorted({v: i for i, v in reversed(list(enumerate(values)))}.values())
        if len(first) < len(values):
            repeated = sorted({v for v in values if values.count(v) > 1})
            skipped.append(
                f"repeated {dim} {', '.join(repeated)}: only the first entry of each is plotted"
            )
            ds = ds.isel({dim: first})
    ds = ds.copy()
    for var in log_vars:
        if var not in ds:
            continue
        x = ds[var]
        finite = np.isfinite(x).all(time) if time in x.dims else np.isfinite(x)
        labels = _run_labels(~finite)
        if labels:
            skipped.append(f"{var} not finite (diverged), not plotted: {_listed(labels)}")
        x = x.where(finite)
        if not bool((x > 0).any()):
            skipped.append(f"{var} has no finite positive value (e.g. all zero): nothing to plot")
        ds[var] = x.where(x > 0)
    return ds, skipped


def draw_or_skip(draw, what: str, skipped: list[str]) -> None:
    """Call `draw()`; if drawing fails, note why in `skipped` instead: a figure never costs
    the report or the data (both are written whatever the figures do)."""
    try:
        draw()
    except Exception as e:  # any plotting failure: recorded, the report still gets written
        plt().close("all")
        skipped.append(f"{what} not drawn: {type(e).__name__}: {e}")


def skipped_markdown(skipped: list[str]) -> str:
    """The report's section on what the figures leave out ("" when nothing is)."""
    if not skipped:
        return ""
    return "\n## Left out of the figures\n\n" + "\n".join(f"- {s}" for s in skipped) + "\n"


#: What the columns of `flowlin.summarize_bounds`'s table mean (`flowlin.BoundCheck`).
SLACK_DEFINITION = (
    "Slack = log(bound / observed) at the bound's tightest checked time (≥ 0: held; the bound "
    "had e^slack times room there, so 13.8 means ~10⁶×; for the loss envelopes, in loss "
    "units); tightness = observed / bound at the last checked time (1 = exact; for the loss "
    "envelopes, the fraction of the observed log-decay the theorem guarantees)."
)


def bounds_markdown(ds: xr.Dataset, *, slopes: bool = True) -> str:
    """The verdict on every bound of `ds` and `flowlin.summarize_bounds`'s table (without the
    distance-vs-width slope where `slopes` is False: where the widths' inits differ in more
    than width, the slope means nothing)."""
    held, failed = all_bounds_held(ds)
    verdict = (
        "**Every applicable bound held in every run.**"
        if held
        else f"**Bounds violated or runs failed: {failed or 'a run did not succeed'}.**"
    )
    summary = summarize_bounds(ds)
    if not slopes:
        summary = dataclasses.replace(summary, slopes=[])
    return verdict + " " + SLACK_DEFINITION + "\n\n" + summary.to_markdown()


def key_values(config, *sections: str) -> str:
    """`[problem] kind = gaussian, n = 100, ...; [init] ...` for a report's configuration line
    (`config[section]` is a mapping; unset keys, None, are left out)."""
    return "; ".join(
        f"[{k}] " + ", ".join(f"{a} = {b}" for a, b in config[k].items() if b is not None)
        for k in sections
    )


def crossing_time(ts, values, level):
    """First time at which a decreasing positive series crosses `level`, interpolating
    log(value) linearly between saves (exact for exponential decay); NaN if never."""
    ts, values = np.asarray(ts), np.asarray(values)
    below = np.nonzero(values <= level)[0]
    if below.size == 0:
        return float("nan")
    i = int(below[0])
    if i == 0:
        return 0.0
    la, lb, ll = np.log(values[i - 1]), np.log(values[i]), np.log(level)
    return float(ts[i - 1] + (ts[i] - ts[i - 1]) * (la - ll) / (la - lb))


def sweep_executor(batch_size: int | None = None):
    """The executor of the reproduction's sweeps: all local accelerators, but one CPU device
    (`flowlin.LocalExecutor`; `batch_size` as there).

    Several CPU "devices" (``--xla_force_host_platform_device_count``, as the test suite sets)
    share the same cores, so splitting over them gains nothing here (and multiplies the
    LAPACK calls in flight on the shared thread pool; see README "Known issues").
    """
    from .. import LocalExecutor

    devices = jax.local_devices()
    devices = devices[:1] if devices[0].platform == "cpu" else devices
    return LocalExecutor(devices=devices, batch_size=batch_size)


#: The files `write_report` writes (removed at the start of a run: never stale).
REPORT_FILES = ("report.md", "numbers.json")


def sweep_store(name: str) -> pathlib.Path | None:
    """Where the reproduction keeps the store of its sweep `name` (pass it as
    `flowlin.sweep(store=...)`): `<out>/<target>/store/<name>` while `flowlin.reproduce.reproduce`
    runs a target, so that the same command resumes an interrupted sweep; None outside it."""
    folder = STORE_FOLDER.get()
    return None if folder is None else folder / name


#: The store folder of the target being reproduced (set by `reproduce`).
STORE_FOLDER: contextvars.ContextVar[pathlib.Path | None] = contextvars.ContextVar(
    "flowlin_reproduce_store", default=None
)


def stores_progress(folder: pathlib.Path) -> tuple[int, int]:
    """Chunks saved and chunks planned, summed over the sweep stores under `folder` (not
    those set aside in `previous-*` folders)."""
    saved = total = 0
    for manifest in sorted(folder.rglob("manifest.json")):
        if any(part.startswith("previous-") for part in manifest.relative_to(folder).parts):
            continue
        done, n = store_progress(manifest.parent)
        saved, total = saved + done, total + (n or 0)
    return saved, total


@contextlib.contextmanager
def resumable(store: pathlib.Path, command: str):
    """On Ctrl-C inside the block: print how many chunks the sweep store `store` has saved and
    the `command` that resumes, then let the interrupt go on."""
    try:
        yield
        raise_if_interrupted()  # one swallowed during the block (flowlin/_interrupt.py)
    except KeyboardInterrupt:
        saved, total = store_progress(store)
        print(
            f"\ninterrupted: {saved} of {total or '?'} chunk(s) saved in {store}; to resume, "
            f"run the same command again: {command}",
            file=sys.stderr,
        )
        raise


def sweep_resumably(run, store: pathlib.Path, command: str, outputs=()):
    """`run(store=store)`: a sweep kept in `store`, so that `command` run again resumes it (on
    Ctrl-C, see `resumable`); see `sweep_kept`."""
    with resumable(store, command):
        return sweep_kept(run, store, outputs)


def sweep_kept(run, store: pathlib.Path | None, outputs=()):
    """`run(store=store)`, where a store left by another sweep (the command's settings, sizes,
    seed or versions changed since) belongs to no result any more: it is started over, with a
    note, after moving it (and the files `outputs` made from it) aside with `set_aside`:
    finished work is never deleted. `store=None`: `run()` with no store."""
    if store is None:
        return run()
    try:
        return run(store=store)
    except StoreMismatchError as e:
        set_aside([store, *outputs], f"{store} held another sweep: {e.differences}")
    return run(store=store)


def set_aside(paths, reason: str, *, then: str = "Starting over") -> pathlib.Path | None:
    """Move those of `paths` that exist into a new folder `previous-<UTC time>` beside the
    first (keeping their places below that folder: `fig1/fig1.png` stays `fig1/fig1.png`),
    printing where, why (`reason`) and what happens `then`; None if none exists."""
    present = [pathlib.Path(p) for p in paths if pathlib.Path(p).exists()]
    if not present:
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    parent = pathlib.Path(paths[0]).parent
    dest, n = parent / f"previous-{stamp}", 1
    while dest.exists():
        n += 1
        dest = parent / f"previous-{stamp}-{n}"
    dest.mkdir(parents=True)
    moved = []
    for p in present:
        place = p.relative_to(parent) if p.is_relative_to(parent) else pathlib.Path(p.name)
        (dest / place).parent.mkdir(parents=True, exist_ok=True)
        os.replace(p, dest / place)
        moved.append(str(place))
    moved = ", ".join(moved)
    print(f"note: {reason}. {then[:1].upper()}{then[1:]}; {moved} moved to {dest}", file=sys.stderr)
    return dest


def json_safe(value):
    """`value` (dicts, lists, numbers, strings) with array scalars made Python numbers and
    NaN/inf made None (JSON's null; JSON has no NaN): what `numbers.json` holds."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, str):
        return value
    value = np.asarray(value)  # Python, NumPy and JAX scalars alike
    if value.ndim:
        return [json_safe(v) for v in value.tolist()]
    if value.dtype == bool or np.issubdtype(value.dtype, np.integer):
        return value.item()
    value = float(value)
    return value if np.isfinite(value) else None


def write_report(sections: dict[str, Section], out: pathlib.Path, *, quick: bool) -> None:
    """`out/report.md` (every section) and `out/numbers.json` (the numbers reported)."""
    installed = versions()
    sizes = "reduced sizes (--quick)" if quick else "the papers' sizes"
    head = [
        "# flowlin reproduction report\n",
        "Min, Tarmoun, Vidal & Mallada, ICML 2021 (arXiv 2105.06351) and its extended version.",
        f"flowlin {installed['flowlin'] or 'source'}, jax {installed['jax']}, float64 "
        f"{'on' if jax.config.read('jax_enable_x64') else 'OFF'}, "
        f"{sizes}; wall time "
        + ", ".join(f"{k} {s.seconds:.1f} s" for k, s in sections.items())
        + ".\n",
    ]
    for sec in sections.values():
        rel = [str(p.relative_to(out)) for p in sec.files]
        figs = [f"![{p}]({p})" for p in rel if p.endswith(".png")]
        head += [sec.markdown, "\nFiles: " + ", ".join(f"`{p}`" for p in rel) + "\n", *figs, ""]
    numbers = {k: dict(s.numbers, seconds=s.seconds) for k, s in sections.items()}
    write_text(out / "numbers.json", json.dumps(json_safe(numbers), indent=2, allow_nan=False))
    write_text(out / "report.md", "\n".join(head))
