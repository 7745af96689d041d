"""What the reproduction's figures, the TOML runner and the demo share: figures, files,
Markdown tables, the bound verdict, crossing times, the report. Internal API.

matplotlib is imported here (lazily, by `plt`) and in the figure modules of this package only:
`import flowlin` never loads it.
"""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import xarray as xr

from .._dataset import all_bounds_held, netcdf_safe, versions
from .._summary import summarize_bounds


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


def save_figure(fig, path: pathlib.Path, files: list) -> None:
    """Save `fig` as a PNG at `path`, close it, and add `path` to `files`."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt().close(fig)
    files.append(path)


def save_netcdf(ds: xr.Dataset, path: pathlib.Path, files: list) -> None:
    """Write `ds` to netCDF (attributes made storable, booleans as 0/1); add `path` to `files`."""
    netcdf_safe(ds, bools_as_int8=True).to_netcdf(path)
    files.append(path)


def bounds_markdown(ds: xr.Dataset) -> str:
    """The verdict on every bound of `ds` and `flowlin.summarize_bounds`'s table."""
    held, failed = all_bounds_held(ds)
    verdict = (
        "**Every applicable bound held in every run.**"
        if held
        else f"**Bounds violated or runs failed: {failed or 'a run did not succeed'}.**"
    )
    return (
        verdict
        + " Slack = bound − observed (relative); tightness = observed / bound.\n\n"
        + summarize_bounds(ds).to_markdown()
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
    (out / "report.md").write_text("\n".join(head))
    (out / "numbers.json").write_text(
        json.dumps(
            {k: dict(s.numbers, seconds=s.seconds) for k, s in sections.items()},
            indent=2,
            default=float,
        )
    )
