r"""`flowlin reproduce depth`: the implicit-bias gap of deep linear networks (docs/theory.md §6).

Not a figure of the papers (and not part of `reproduce all`): ICML Fig. 1's data and
initialization ($\alpha = \frac12$, every layer's entries $N(0, 1/h)$) at depths
$L = 2, 3, 4$, to see what the numbers say about the $h^{-1/2}$ law beyond two layers.

`depth_data` computes (one sweep over depths × widths × seeds, and four flows at $L = 3$ from
different inits), `depth_figures` draws, `depth_numbers`/`depth_markdown` report; `run_depth`
runs the three.
"""

import dataclasses
import functools
import math
import pathlib
import time

import jax
import numpy as np
import xarray as xr

from .. import _dataset as schema, problems
from .._problem import Problem
from .._progress import stage
from .._saveat import DIAGNOSTICS, SaveAt
from .._summary import fit_loglog_slope, md_table, summarize_bounds
from .._sweep import sweep
from ..theory._law import MIN_RUNS
from ._depth_decay import (
    DECAY_LEVEL as DECAY_LEVEL,
    decay_data,
    decay_markdown,
    decay_numbers,
    figure_decay,
)
from ._report import (
    Section,
    plt,
    save_figure,
    save_netcdf,
    sweep_executor,
    sweep_kept,
    sweep_store,
)


#: ICML Theorem 2's exponent at α = 1/2 (two layers): the law whose survival at depth is tested.
TWO_LAYER_SLOPE = -0.5


@dataclasses.dataclass(frozen=True)
class DepthSizes:
    """Sizes of `flowlin reproduce depth` (`DEPTH_FULL`, and `DEPTH_QUICK` for `--quick`)."""

    n: int
    D: int
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    seeds: int
    t1: float
    saves: int
    decay_width: int  # the loss-decay comparison at L = 3
    decay_t1: float
    decay_saves: int
    sweep_bounds: bool  # check every run of the sweep (each shape compiles the checks too)


#: ICML Fig. 1's data (n = 100, D = 400, m = 1); widths to 800 (the deep solver's step costs
#: O(r·L·h²): benchmarks/README.md, "Deep networks").
DEPTH_FULL = DepthSizes(
    n=100, D=400, depths=(2, 3, 4), widths=(100, 200, 400, 800), seeds=5, t1=50.0, saves=26,
    decay_width=200, decay_t1=50.0, decay_saves=101, sweep_bounds=True,
)  # fmt: skip
#: Fig. 1's generator at a fifth of its size, two widths: a minute on 2 cores, most of it
#: compiling (one shape per (depth, width)); bounds checked on the L = 3 flows only.
DEPTH_QUICK = DepthSizes(
    n=20, D=80, depths=(2, 3, 4), widths=(20, 80), seeds=3, t1=50.0, saves=11,
    decay_width=40, decay_t1=50.0, decay_saves=26, sweep_bounds=False,
)  # fmt: skip
#: What the sweep saves when it does not check bounds (which need every diagnostic): the
#: gap's law needs the distance and the excess loss; the imbalance gives the per-layer drift.
SWEEP_DIAGNOSTICS = ("excess_loss", "distance_to_min_norm", "imbalance_drift")


@dataclasses.dataclass
class DepthResult:
    """What `depth_data` computed: the sweep (`ds`, scale α = 1/2 selected), the fits per
    depth, and the loss-decay flows at L = 3 with their bound checks."""

    sizes: DepthSizes
    problem: Problem
    ds: xr.Dataset
    fits: dict  # depth -> {"distance": (slope, lo, hi, n), "head": (...), "law": LawFit}
    decay: xr.Dataset  # (init, time): excess loss, distance, balancedness drift
    decay_checks: dict  # init name -> {bound: `bound_state`}


def usable_distance(ds: xr.Dataset) -> xr.DataArray:
    """The final distance to the min-norm solution of every run that converged (NaN else):
    what the slopes are fitted to."""
    d = ds[schema.final_var("distance_to_min_norm")]
    return d.where(ds[schema.CONVERGED].astype(bool))


def fit_depth(ds: xr.Dataset, depth: int) -> dict:
    """The log–log slopes against h at one depth (distance, ‖W_L···W_2(∞)‖) with their 95%
    CIs, and the gaps tested against their exact law (all widths pooled)."""
    one = ds.sel({schema.DEPTH: depth})
    d = usable_distance(one).transpose(schema.WIDTH, schema.SEED)
    head = one[schema.HEAD_NORM].where(one[schema.CONVERGED].astype(bool))
    head = head.transpose(schema.WIDTH, schema.SEED)
    widths = np.repeat(one[schema.WIDTH].values, one.sizes[schema.SEED])
    laws = summarize_bounds(one).laws
    pooled = [row.fit for row in laws if row.width == "all"] or [r.fit for r in laws]
    return dict(
        distance=fit_loglog_slope(widths, d.values.ravel()),
        head=fit_loglog_slope(widths, head.values.ravel()),
        law=pooled[0] if pooled else None,
    )


def depth_data(sizes: DepthSizes, *, seed: int = 0, progress: bool = True) -> DepthResult:
    """The computation of `flowlin reproduce depth` (see `run_depth`)."""
    problem = problems.gaussian(jax.random.key(seed), n=sizes.n, D=sizes.D, m=1)
    ts = np.linspace(0.0, sizes.t1, sizes.saves)
    saveat = SaveAt(ts, diagnostics=DIAGNOSTICS if sizes.sweep_bounds else SWEEP_DIAGNOSTICS)
    with stage("depth: widths × depths"):
        ds = sweep_kept(
            functools.partial(
                sweep, problem, sizes.widths, scales=[0.5], seeds=sizes.seeds,
                depths=sizes.depths, key=seed + 1, t1=sizes.t1, saveat=saveat, theory=False,
                bounds=sizes.sweep_bounds, progress=progress, executor=sweep_executor(),
            ),
            sweep_store("depths"),
        )  # fmt: skip
    ds = ds.sel({schema.SCALE: 0.5})
    fits = {int(L): fit_depth(ds, int(L)) for L in ds[schema.DEPTH].values}
    decay, checks = decay_data(problem, sizes.decay_width, sizes.decay_t1, sizes.decay_saves,
                               jax.random.key(seed + 3), progress)  # fmt: skip
    return DepthResult(sizes, problem, ds, fits, decay, checks)


# --------------------------------------------------------------------------------------------
# Verdicts: one line each, what the numbers say
# --------------------------------------------------------------------------------------------
def slope_verdict(depth: int, fit) -> str:
    """Whether the distance's fitted slope at `depth` is consistent with h^(-1/2)."""
    slope, lo, hi, n = fit
    head = f"h^(-1/2) law at L = {depth}: "
    if not np.isfinite(slope):
        return head + f"**undetermined** (only {n} usable runs)."
    where = f"fitted slope {slope:.3f}, 95% CI [{lo:.3f}, {hi:.3f}] ({n} runs)"
    if lo <= TWO_LAYER_SLOPE <= hi:
        return head + f"**consistent** — {where} contains −1/2."
    side = "steeper" if hi < TWO_LAYER_SLOPE else "shallower"
    return head + f"**not supported** — {where} excludes −1/2 ({side})."


def slope_difference(fit, base) -> tuple[float, float, float]:
    """The slope of `fit` minus that of `base` with a 95% CI, the two fits' standard errors
    (recovered from their t intervals) combined as independent (the depths' runs are
    independent draws)."""
    from scipy import stats

    def se(f):
        slope, _, hi, n = f
        return (hi - slope) / stats.t.ppf(0.975, n - 2) if n > 2 else math.nan

    diff = fit[0] - base[0]
    half = stats.norm.ppf(0.975) * math.sqrt(se(fit) ** 2 + se(base) ** 2)
    return diff, diff - half, diff + half


def relative_verdict(depth: int, diff) -> str:
    """Whether the distance's slope at `depth` differs from L = 2's (the control)."""
    d, lo, hi = diff
    head = f"slope at L = {depth} minus L = 2: "
    if not np.isfinite(d) or not np.isfinite(lo):
        return head + "**undetermined**."
    where = f"{d:+.3f}, 95% CI [{lo:+.3f}, {hi:+.3f}]"
    if lo <= 0.0 <= hi:
        return head + f"**no depth effect resolved** — {where} contains 0."
    return head + f"**{'shallower' if lo > 0 else 'steeper'} than at L = 2** — {where}."


#: Said when the control L = 2 itself misses −1/2 over the widths run.
CONTROL_NOTE = (
    "L = 2 is the control: ICML Theorem 2 proves slope −1/2 there as h → ∞, so a CI that "
    "excludes −1/2 at L = 2 says that these widths are pre-asymptotic (‖W_2(∞)‖ still grows "
    "towards its h → ∞ limit; ICML Fig. 1's widths 500–10⁴ give −0.49), and the deeper slopes "
    "are to be read against L = 2's, not against −1/2."
)


def head_verdict(depth: int, fit) -> str:
    """Whether ‖W_L···W_2(∞)‖_F stays bounded as h grows (slope 0) at `depth`."""
    slope, lo, hi, n = fit
    head = f"‖W_L···W_2(∞)‖ vs h at L = {depth}: "
    if not np.isfinite(slope):
        return head + f"**undetermined** (only {n} usable runs)."
    where = f"slope {slope:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]"
    if lo <= 0.0 <= hi:
        return head + f"**flat** — {where} contains 0."
    return head + f"**{'grows' if lo > 0 else 'shrinks'}** — {where} excludes 0."


def law_verdict(depth: int, fit) -> str:
    """The gaps at `depth` against their exact conditional law (docs/theory.md §6)."""
    head = f"exact law of the gap at L = {depth}: "
    if fit is None:
        return head + "**not recorded**."
    detail = (
        f"{fit.n} runs, mean d² {fit.mean_square:.4g} vs exact {fit.expected_mean_square:.4g}"
        + (f", KS p = {fit.ks_pvalue:.3g}" if fit.n >= MIN_RUNS else "")
    )
    if fit.status == "not checked":
        return head + f"**not checked** ({detail}; {fit.reason})."
    return head + f"**{fit.status}** ({detail})."


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def figure_widths(res: DepthResult, path: pathlib.Path, files: list) -> None:
    """Distance vs h, ‖W_L···W_2(∞)‖ vs h, and the standardized gap against its χ law."""
    from scipy import stats

    ds, k = res.ds, res.problem.D - res.problem.rank
    widths = ds[schema.WIDTH].values
    fig, ax = plt().subplots(1, 3, figsize=(16, 4.5))
    hh = np.geomspace(widths.min(), widths.max(), 50)
    for i, L in enumerate(ds[schema.DEPTH].values):
        one = ds.sel({schema.DEPTH: L})
        d = usable_distance(one)
        slope, lo, hi, _ = res.fits[int(L)]["distance"]
        ax[0].loglog(np.repeat(widths, one.sizes[schema.SEED]),
                     d.transpose(schema.WIDTH, schema.SEED).values.ravel(), f"C{i}o", ms=3,
                     alpha=0.6)  # fmt: skip
        gm = np.exp(np.log(d).mean(schema.SEED)).values
        label = f"L = {L}: slope {slope:.3f} [{lo:.3f}, {hi:.3f}]"
        ax[0].loglog(widths, gm, f"C{i}-", label=label)
        head = one[schema.HEAD_NORM].where(one[schema.CONVERGED].astype(bool))
        hs, hlo, hhi, _ = res.fits[int(L)]["head"]
        ax[1].errorbar(widths * (1 + 0.03 * i), head.mean(schema.SEED),
                       head.std(schema.SEED, ddof=1), fmt=f"C{i}o-", capsize=3,
                       label=f"L = {L}: slope {hs:.3f} [{hlo:.3f}, {hhi:.3f}]")  # fmt: skip
        z = one[schema.LAW_VARS[0]].transpose(schema.WIDTH, schema.SEED).values
        ax[2].semilogx(np.repeat(widths * (1 + 0.03 * i), one.sizes[schema.SEED]),
                       z.ravel(), f"C{i}o", ms=4, label=f"L = {L}")  # fmt: skip
    if np.isfinite(res.fits[int(ds[schema.DEPTH].values[0])]["distance"][0]):
        ref = np.exp(np.nanmean(np.log(usable_distance(ds)).values)) * np.sqrt(
            np.exp(np.log(widths).mean()) / hh
        )
        ax[0].loglog(hh, ref, "k--", lw=1, label="h^(-1/2) (reference)")
    lo, hi = stats.chi.ppf([0.05, 0.95], k)
    ax[2].axhspan(lo, hi, color="k", alpha=0.1, label=f"χ_{k}: 90% band (exact law)")
    ax[2].axhline(stats.chi.mean(k), color="k", ls="--", lw=1, label=f"E χ_{k}")
    ax[0].set(xlabel="width h", ylabel=r"$\|W(t_1) - W^\star\|_F$", title="Distance vs width")
    ax[1].set(xscale="log", xlabel="width h", ylabel=r"$\|W_L\cdots W_2(t_1)\|_F$",
              title="The head's norm vs width")  # fmt: skip
    ax[2].set(xlabel="width h", ylabel=r"$d\,/\,(\sigma_1\|W_L\cdots W_2(\infty)\|_F)$",
              title="Standardized gap vs its exact law")  # fmt: skip
    for a in ax:
        a.grid(alpha=0.3, which="both")
        a.legend(fontsize=8)
    save_figure(fig, path, files)


def depth_figures(res: DepthResult, out: pathlib.Path) -> list[pathlib.Path]:
    """Write `depth.png`, `depth_decay.png` and the data `depth.nc`, `depth_decay.nc`."""
    files: list = []
    figure_widths(res, out / "depth.png", files)
    figure_decay(res.decay, out / "depth_decay.png", files)
    save_netcdf(res.ds, out / "depth.nc", files)
    save_netcdf(res.decay, out / "depth_decay.nc", files)
    return files


# --------------------------------------------------------------------------------------------
# Numbers and report
# --------------------------------------------------------------------------------------------
def _fit_numbers(fit) -> dict:
    return dict(slope=fit[0], ci=[fit[1], fit[2]], runs=int(fit[3]))


def _law_numbers(law) -> dict | None:
    if law is None:
        return None
    return dict(
        status=law.status, runs=law.n, left_out=law.excluded, ks_pvalue=law.ks_pvalue,
        mean_square=law.mean_square, expected_mean_square=law.expected_mean_square,
        reason=law.reason,
    )  # fmt: skip


def depth_numbers(res: DepthResult) -> dict:
    """The numbers reported (numbers.json)."""
    ds, per_depth = res.ds, {}
    for L, fit in res.fits.items():
        one = ds.sel({schema.DEPTH: L})
        d, head = usable_distance(one), one[schema.HEAD_NORM]
        base = res.fits.get(2, {}).get("distance")
        per_depth[str(L)] = dict(
            distance_mean=[float(v) for v in d.mean(schema.SEED).values],
            distance_std=[float(v) for v in d.std(schema.SEED, ddof=1).values],
            head_norm_mean=[float(v) for v in head.mean(schema.SEED).values],
            distance=_fit_numbers(fit["distance"]),
            slope_minus_depth_2=base and list(slope_difference(fit["distance"], base)),
            head_norm=_fit_numbers(fit["head"]),
            law=_law_numbers(fit["law"]),
            converged=int(one[schema.CONVERGED].values.sum()),
            max_balancedness_drift=float(one["balancedness_drift"].max()),
        )
    decay = decay_numbers(res.decay, res.decay_checks)
    held = schema.all_bounds_held(ds)[0] and decay.pop("held")
    return dict(
        widths=[int(w) for w in ds[schema.WIDTH].values],
        depths=[int(L) for L in ds[schema.DEPTH].values],
        seeds=int(ds.sizes[schema.SEED]),
        by_depth=per_depth,
        **decay,
        runs=int(ds[schema.SUCCEEDED].size + res.decay.sizes["init"]),
        all_converged=bool(ds[schema.CONVERGED].all()),
        sweep_bounds=res.sizes.sweep_bounds,
        bounds_held=bool(held),
    )


def verdict_lines(numbers: dict, fits: dict) -> list[str]:
    """The report's one-line verdicts, from the fits."""
    lines = []
    for L, fit in fits.items():
        lines += [slope_verdict(L, fit["distance"]), head_verdict(L, fit["head"]),
                  law_verdict(L, fit["law"])]  # fmt: skip
    if 2 in fits:
        base = fits[2]["distance"]
        lo, hi = base[1:3]
        if np.isfinite(base[0]) and not lo <= TWO_LAYER_SLOPE <= hi:
            lines.append(CONTROL_NOTE)
        for L, fit in fits.items():
            if L != 2:
                lines.append(relative_verdict(L, slope_difference(fit["distance"], base)))
    where = (
        "the sweep's runs and the L = 3 flows"
        if numbers["sweep_bounds"]
        else ("the L = 3 flows; the sweep's runs are not checked at this size")
    )
    lines.append(
        f"bounds: **every applicable bound held** ({where})."
        if numbers["bounds_held"]
        else f"bounds: **violated somewhere or a run failed** ({where}; see the tables below)."
    )
    return lines


def depth_markdown(res: DepthResult, numbers: dict) -> str:
    """The report's section."""
    p, s = res.problem, res.sizes
    rows = []
    for L in numbers["depths"]:
        n = numbers["by_depth"][str(L)]
        for w, mu, sd, hn in zip(numbers["widths"], n["distance_mean"], n["distance_std"],
                                 n["head_norm_mean"]):  # fmt: skip
            rows.append([L, w, f"{mu:.4g} ± {sd:.2g}", f"{hn:.4g}", f"{mu * math.sqrt(w):.4g}"])
    md = [
        "## Deep linear networks — the implicit-bias gap at depth L = 2, 3, 4\n",
        f"Not a figure of the papers. ICML Fig. 1's data generator (n = {p.n}, D = {p.D}, "
        f"m = {p.m}, r = {p.rank}), every layer's entries N(0, 1/h) (α = 1/2, "
        f"`flowlin.init.deep_gaussian`), {s.seeds} seeds per width, exact gradient flow of the "
        f"weights (`flowlin.FullWeights()`) to t1 = {s.t1:g}; distance d = ‖W(t1) − W*‖_F of "
        "the runs that converged. Whether the two-layer O(h^(-1/2)) law (ICML Theorem 2) holds "
        "at depth is open; this is what the numbers say (docs/theory.md §6):\n",
        "\n".join(f"- {line}" for line in verdict_lines(numbers, res.fits)),
        "",
        md_table(["L", "h", "d (mean ± sd)", "‖W_L···W_2(t1)‖_F", "√h·d"], rows),
        "\nThe exact law at depth: W_1(0)Φ2 is i.i.d. N(0, 1/h), independent of everything "
        "else, and never moves, so given the final head W_L···W_2(∞) the gap is "
        f"σ1‖W_L···W_2(∞)‖·χ_{p.D - p.rank} (m = 1), as at two layers. The slope of d is "
        "therefore −1/2 plus the slope of ‖W_L···W_2(∞)‖: the law at depth is a statement "
        "about the head's norm (measured above, not proved).\n",
        "\n### Loss decay at L = 3\n",
        f"Hidden widths ({s.decay_width}, {s.decay_width}); bound entries of "
        "`flowlin.check_bounds` for a deep init (n/a: the theorem's hypotheses fail for that "
        "init, e.g. no deficiency margin; 'not checked', with the reason: a run that did not "
        "succeed, which counts against 'every applicable bound held', or round-off).\n",
        decay_markdown(numbers),
    ]
    return "\n".join(md)


def run_depth(out: pathlib.Path, sizes, *, seed: int = 0, progress: bool = True) -> Section:
    r"""Deep linear networks on ICML Fig. 1's data: the distance to the min-norm solution
    against width at $L = 2, 3, 4$ with fitted slopes and CIs, the gaps against their exact
    law, $\|W_L\cdots W_2(\infty)\|$ against $h$, and the loss decay at $L = 3$ from Gaussian,
    orthogonal and balanced inits (docs/theory.md §6). `sizes`: a `DepthSizes`, or the
    reproduction's `QUICK`/`FULL` (mapped to `DEPTH_QUICK`/`DEPTH_FULL`).
    """
    from ._sizes import QUICK

    if not isinstance(sizes, DepthSizes):
        sizes = DEPTH_QUICK if sizes == QUICK else DEPTH_FULL
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    res = depth_data(sizes, seed=seed, progress=progress)
    files = depth_figures(res, out)
    numbers = depth_numbers(res)
    md = depth_markdown(res, numbers)
    return Section("depth", numbers, md, files, time.perf_counter() - start)
