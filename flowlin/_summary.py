"""The in-bulk verdict of a sweep: which bounds held, how tight, and the distance-vs-width law."""

import dataclasses

import numpy as np
import pandas as pd
import xarray as xr

from . import _dataset as schema
from ._errors import check_number
from ._results import status_names
from .theory._law import MIN_RUNS, cdf_error_limit
from .theory._law_fit import LawFit, fit_values


#: Quantiles of the slack reported per bound.
SLACK_QUANTILES = (0.05, 0.5, 0.95)


@dataclasses.dataclass
class BoundRow:
    bound: str
    runs: int  # runs that succeeded
    applicable: int  # ... for which the bound's assumptions hold
    held: int
    slack_q05: float
    slack_median: float
    slack_q95: float
    tightness_median: float
    tightness_max: float

    @property
    def fraction_held(self) -> float:
        return self.held / self.applicable if self.applicable else float("nan")


@dataclasses.dataclass
class SlopeRow:
    scale: float | str
    slope: float
    ci_low: float
    ci_high: float
    n: int
    widths: tuple


@dataclasses.dataclass
class LawRow:
    """One width cell's gaps against their exact law (docs/theory.md §2(h))."""

    scale: float | str
    width: int | str  # "all": the runs of every width pooled (valid: each is tested against
    fit: LawFit  # its own conditional law, so their F(d) are i.i.d. uniform together)


@dataclasses.dataclass
class BoundsSummary:
    """Result of `flowlin.summarize_bounds`: print it, or `.to_markdown()` for a report."""

    bounds: list[BoundRow]
    slopes: list[SlopeRow]
    runs: int
    failed: int
    confidence: float
    #: Runs that succeeded but reached t1 without converging (status `not_converged`): their
    #: bounds are checked (the numbers are valid), but their late-time verdicts say nothing
    #: about the limit.
    not_converged: int = 0
    #: Per (scale, width) cell: the gaps tested against their exact law (empty when the sweep
    #: did not record it).
    laws: list[LawRow] = dataclasses.field(default_factory=list)
    #: How many runs ended with each `flowlin.RESULTS` status (by name).
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)

    def _headline(self) -> str:
        out = (
            f"{self.runs} runs: {self.failed} failed (never counted as a bound holding), "
            f"{self.not_converged} reached t1 without converging"
        )
        if self.statuses:
            out += " (statuses: " + ", ".join(f"{k} {v}" for k, v in self.statuses.items()) + ")"
        return out

    def table(self):
        """The bound rows as a `pandas.DataFrame`."""
        rows = [dict(dataclasses.asdict(b), fraction_held=b.fraction_held) for b in self.bounds]
        return pd.DataFrame(rows).set_index("bound") if rows else pd.DataFrame()

    def _rows(self):
        head = [
            "bound",
            "applicable",
            "held",
            "fraction",
            "slack q05",
            "slack median",
            "slack q95",
            "tightness med",
            "tightness max",
        ]
        body = [
            [
                b.bound,
                str(b.applicable),
                str(b.held),
                _fmt(b.fraction_held, "{:.3f}"),
                _fmt(b.slack_q05),
                _fmt(b.slack_median),
                _fmt(b.slack_q95),
                _fmt(b.tightness_median),
                _fmt(b.tightness_max),
            ]
            for b in self.bounds
        ]
        return head, body

    def _slope_rows(self):
        pct = int(round(100 * self.confidence))
        head = ["scale", "slope of log distance vs log h", f"{pct}% CI", "runs", "widths"]
        body = [
            [
                str(s.scale),
                f"{s.slope:.4f}",
                f"[{s.ci_low:.4f}, {s.ci_high:.4f}]",
                str(s.n),
                f"{min(s.widths)}..{max(s.widths)}",
            ]
            for s in self.slopes
        ]
        return head, body

    def _law_rows(self):
        head = ["scale", "width", "law", "runs", "left out", "KS p", "mean d²", "exact E d²",
                "CI"]  # fmt: skip
        body = [
            [
                str(r.scale),
                str(r.width),
                r.fit.status,
                str(r.fit.n),
                str(r.fit.excluded),
                _fmt(r.fit.ks_pvalue),
                _fmt(r.fit.mean_square, "{:.4g}"),
                _fmt(r.fit.expected_mean_square, "{:.4g}"),
                f"[{_fmt(r.fit.ci_low, '{:.4g}')}, {_fmt(r.fit.ci_high, '{:.4g}')}]",
            ]
            for r in self.laws
        ]
        return head, body

    def __str__(self) -> str:
        lines = [self._headline()]
        head, body = self._rows()
        lines += _text_table(head, body)
        if self.slopes:
            lines.append("")
            lines += _text_table(*self._slope_rows())
        if self.laws:
            lines.append("")
            lines += _text_table(*self._law_rows())
        return "\n".join(lines)

    def to_markdown(self) -> str:
        out = [self._headline() + ".", ""]
        out += md_table(*self._rows()).splitlines()
        if self.slopes:
            out += ["", *md_table(*self._slope_rows()).splitlines()]
        if self.laws:
            level = self.laws[0].fit.level
            out += [
                "",
                f"Implicit-bias gap against its exact law (docs/theory.md §2(h)), per width: "
                f"KS test of F(d) and the mean of d² against its exact expectation, at the "
                f"{1 - level:.0%} level; 'not checked' below {MIN_RUNS} usable runs.",
                "",
                *md_table(*self._law_rows()).splitlines(),
            ]
        return "\n".join(out) + "\n"


def _fmt(x, spec="{:.3g}"):
    return "-" if x is None or not np.isfinite(x) else spec.format(x)


def _text_table(head, body):
    widths = [
        max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)
    ]
    line = lambda cells: "  ".join(
        c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    return [line(head), line(["-" * w for w in widths]), *(line(r) for r in body)]


def md_table(head, rows) -> str:
    """A Markdown table with header `head` and `rows` (cells formatted with `str`); internal
    API, shared with the reproduction's reports."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def fit_loglog_slope(widths, distances, confidence: float = 0.95):
    """Least-squares slope of log(distance) on log(width) with a t-based confidence interval.

    Returns (slope, ci_low, ci_high, n). Needs at least 3 points and 2 distinct widths.
    """
    from scipy import stats  # here, not at the top: importing scipy.stats costs ~0.5 s

    x = np.log(np.asarray(widths, float))
    y = np.log(np.asarray(distances, float))
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan"), n
    xm = x - x.mean()
    slope = float(np.sum(xm * (y - y.mean())) / np.sum(xm**2))
    resid = y - y.mean() - slope * xm
    se = np.sqrt(np.sum(resid**2) / (n - 2) / np.sum(xm**2))
    t = stats.t.ppf(0.5 + confidence / 2, n - 2)
    return slope, slope - t * se, slope + t * se, n


def summarize_bounds(
    ds: xr.Dataset,
    *,
    distance: str = schema.final_var("distance_to_min_norm"),
    confidence: float = 0.95,
    law_level: float = 0.99,
) -> BoundsSummary:
    r"""Summarize a `flowlin.sweep` result: the in-bulk verdict on every bound.

    For each bound: over the runs that succeeded and where the bound's assumptions hold, how
    many held at every saved time, the quantiles of the worst slack (`SLACK_QUANTILES`) and the
    tightness (observed / bound). Failed runs are counted separately and never as a bound
    holding; runs that reached t1 without converging (status `not_converged`) are counted
    separately too (`BoundsSummary.not_converged`), and their bounds are checked.

    For a sweep over widths, the least-squares slope of $\log\|W(\infty) - W^\star\|_F$ against
    $\log h$ (per scale, pooled over seeds and problems) with a `confidence` interval from the
    t distribution — ICML Theorem 2 predicts $-1/2$ at $\alpha = 1/2$. Only converged runs
    enter it: at t1 a run that did not converge is not at $W(\infty)$.

    Where the sweep recorded the gap's exact law (`flowlin.theory.run_law`; every Gaussian
    init), per (scale, width) cell: the gaps tested against it (`flowlin.theory.law_fit`, at
    `law_level`), with how many runs were left out: those whose gap is not usable for the law
    (`flowlin.theory.RunLaw.usable`: not converged, or its gap not yet at its limit — the
    row-space part above 1e-6 of d², as when t1 is short —, or a law at round-off).

    **Arguments:**

    - `ds`: the `xarray.Dataset` of `flowlin.sweep` (or `flowlin.open_sweep`), one depth at a
      time for a sweep over depths.
    - `distance`: the variable the slope is fitted on (default `final_distance_to_min_norm`).
    - `confidence`: the level of the slope's confidence interval, in (0, 1) (default 0.95).
    - `law_level`: the level at which `flowlin.theory.law_fit` tests the gaps against their
      exact law, in (0, 1) (default 0.99).

    **Returns:** a `BoundsSummary`; `print` it, or `.to_markdown()`, or `.table()` for pandas.
    """
    call = "flowlin.summarize_bounds(ds)"
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"`{call}`: ds must be an xarray.Dataset, got {type(ds).__name__}")
    for name, level in (("confidence", confidence), ("law_level", law_level)):
        check_number(call, name, level)
        if not 0 < float(level) < 1:
            raise ValueError(f"`{call}`: {name} must be in (0, 1), got {level!r}")
    default = distance == schema.final_var("distance_to_min_norm")  # may be absent: no slope
    if not isinstance(distance, str) or (distance not in ds and not default):
        finals = sorted(str(v) for v in ds.data_vars if str(v).startswith("final_"))
        raise ValueError(
            f"`{call}`: distance={distance!r} is not a variable of ds (its final_* variables: "
            f"{', '.join(finals) or 'none'})"
        )
    for dim, index in ds.indexes.items():
        if dim in (schema.WIDTH, schema.SCALE, schema.SEED) and not index.is_unique:
            raise ValueError(
                f"`{call}`: ds has repeated {dim!r} labels, which would count the same runs "
                "twice; select or drop the duplicates first"
            )
    if "depth" in ds.coords and ds["depth"].size > 1:
        depths = [int(d) for d in np.unique(ds["depth"].values)]
        raise ValueError(
            f"`{call}`: ds holds several depths {depths}; the slopes and laws of different "
            "depths must not be pooled: summarize one depth at a time, e.g. "
            f"summarize_bounds(ds.sel(depth={depths[-1]}))"
        )
    if schema.SUCCEEDED not in ds:
        raise ValueError(
            "`flowlin.summarize_bounds(ds)`: ds is not a flowlin.sweep result "
            f"(no {schema.SUCCEEDED!r} variable)"
        )
    succeeded = ds[schema.SUCCEEDED].values.astype(bool)
    converged = succeeded
    if schema.CONVERGED in ds:
        converged = ds[schema.CONVERGED].values.astype(bool)
    return BoundsSummary(
        _bound_rows(ds, succeeded),
        _slope_rows(ds, distance, confidence, converged),
        runs=int(succeeded.size),
        failed=int((~succeeded).sum()),
        confidence=confidence,
        not_converged=int((succeeded & ~converged).sum()),
        statuses=_status_counts(ds),
        laws=_law_rows(ds, law_level),
    )


def _status_counts(ds: xr.Dataset) -> dict[str, int]:
    """Runs per status name (`flowlin.RESULTS`), from the stored integer codes."""
    if schema.STATUS not in ds:
        return {}
    names = status_names()
    codes, counts = np.unique(ds[schema.STATUS].values, return_counts=True)
    return {names.get(int(c), f"code {int(c)}"): int(n) for c, n in zip(codes, counts)}


def _bound_rows(ds: xr.Dataset, succeeded: np.ndarray) -> list[BoundRow]:
    rows = []
    for name in schema.bound_names(ds):
        check = schema.bound_arrays(ds, name)
        applicable = check["applicable"].astype(bool) & succeeded
        holds = check["holds"].astype(bool) & applicable
        slack = check["worst_slack"][applicable]
        tight = check["tightness"][applicable]
        slack = slack[np.isfinite(slack)]
        tight = tight[np.isfinite(tight)]
        q = (
            np.quantile(slack, SLACK_QUANTILES)
            if slack.size
            else [float("nan")] * len(SLACK_QUANTILES)
        )
        rows.append(
            BoundRow(
                bound=name,
                runs=int(succeeded.sum()),
                applicable=int(applicable.sum()),
                held=int(holds.sum()),
                slack_q05=float(q[0]),
                slack_median=float(q[1]),
                slack_q95=float(q[2]),
                tightness_median=float(np.median(tight)) if tight.size else float("nan"),
                tightness_max=float(np.max(tight)) if tight.size else float("nan"),
            )
        )
    return rows


def _slope_rows(ds: xr.Dataset, distance: str, confidence: float, converged) -> list[SlopeRow]:
    slopes = []
    if distance in ds and schema.WIDTH in ds.coords:
        d = ds[distance].where(xr.DataArray(converged, dims=ds[schema.SUCCEEDED].dims))
        width = ds[schema.WIDTH].broadcast_like(d)
        scale = schema.SCALE
        if scale in d.dims:
            groups = [(s, d.sel({scale: s}), width.sel({scale: s})) for s in d[scale].values]
        elif scale in ds.coords and schema.CONFIG in d.dims:
            groups = [
                (s, d.where(ds[scale] == s, drop=True), width.where(ds[scale] == s, drop=True))
                for s in np.unique(ds[scale].values)
            ]
        else:
            groups = [("all", d, width)]
        for s, dg, wg in groups:
            slope, lo, hi, n = fit_loglog_slope(wg.values.ravel(), dg.values.ravel(), confidence)
            ws = tuple(int(w) for w in np.unique(wg.values[np.isfinite(wg.values)]))
            if n >= 3 and len(ws) >= 2:
                label = (
                    float(s)
                    if np.ndim(s) == 0 and np.issubdtype(np.asarray(s).dtype, np.number)
                    else str(s)
                )
                slopes.append(SlopeRow(label, slope, lo, hi, n, ws))
    return slopes


def _law_rows(ds: xr.Dataset, level: float) -> list[LawRow]:
    """Per (scale, width) cell, the recorded gaps tested against their exact law."""
    names = (schema.final_var("distance_to_min_norm"), *schema.LAW_VARS, schema.LAW_USABLE)
    if not all(n in ds for n in names) or schema.WIDTH not in ds.dims:
        return []
    scales = ds[schema.SCALE].values if schema.SCALE in ds.dims else [None]
    rows = []
    for s in scales:
        cell_ds = ds if s is None else ds.sel({schema.SCALE: s})
        widths = [int(w) for w in cell_ds[schema.WIDTH].values]
        cells = [(w, cell_ds.sel({schema.WIDTH: w})) for w in widths]
        if len(widths) > 1:
            cells.append(("all", cell_ds))
        for w, cell in cells:
            d, _, u, mu, var, usable = (cell[n].values for n in names)
            # A stored CDF value is within cdf_error_limit of exact (run_law: NaN beyond).
            error = cdf_error_limit(u.dtype) if np.issubdtype(u.dtype, np.floating) else 0.0
            fit = fit_values(d, u, mu, var, usable=usable.astype(bool), level=level, u_error=error)
            rows.append(LawRow("all" if s is None else float(s), w, fit))
    return rows
