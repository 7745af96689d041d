"""ICML Fig. 1's report on the gap's exact law (docs/theory.md §2(h); beyond the papers): its
test per width, the h → ∞ law of √h·d, and how far Theorem 2's bound is from the distances.
Internal API of `fig1.py`."""

import math

import numpy as np
import xarray as xr

from .. import _dataset as schema
from .._summary import md_table, summarize_bounds
from ..theory._law import MIN_RUNS
from .paper import PAPER_DISTANCE


def theorem2_over_distance(*sweeps: xr.Dataset) -> float:
    """The median, over the runs where Theorem 2's bound applies, of that bound over the
    distance at t1 (NaN where it applies to none)."""
    ratios = [
        (
            d[schema.theory_var("wide_network_bound")] / d[schema.final_var("distance_to_min_norm")]
        ).values.ravel()
        for d in sweeps
    ]
    ratios = np.concatenate(ratios)
    ratios = ratios[np.isfinite(ratios)]
    return float(np.median(ratios)) if ratios.size else math.nan


def law_numbers(res) -> dict:
    """The gap's exact law: its test per width and pooled, on both sweeps of `res` (a
    `Fig1Result`), the h → ∞ law of √h·d, and `theorem2_over_distance`."""
    lo, hi = (float(res.limit_law.quantile(p)) for p in (0.05, 0.95))
    tests = {}
    for name, d in (("paper_widths", res.ds), ("wishart_widths", res.ds_w)):
        for row in summarize_bounds(d).laws:
            f = row.fit
            tests[f"{name}/h={row.width}"] = dict(
                status=f.status, runs=f.n, left_out=f.excluded, ks_pvalue=f.ks_pvalue,
                mean_square=f.mean_square, expected_mean_square=f.expected_mean_square,
                ci99=[f.ci_low, f.ci_high], reason=f.reason,
            )  # fmt: skip
    return dict(
        limit_sqrt_h_mean=float(res.limit_law.mean()),
        limit_sqrt_h_band90=[lo, hi],
        limit_dof=res.limit_law.dof,
        theorem2_over_distance=theorem2_over_distance(res.ds, res.ds_w),
        tests=tests,
    )


def _theorem2_words(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "their Theorem 2 gives only O(h^(-1/2)), and its bound applies to none of these runs"
    times = f"{ratio:,.0f}" if ratio >= 100 else f"{ratio:.3g}"
    return (
        f"their Theorem 2 gives only O(h^(-1/2)), its bound being {times}× the distance at t1 "
        "here (median over the runs where it applies)"
    )


def law_markdown(numbers: dict) -> str:
    """The report's paragraph on the gap's exact law, from `fig1_numbers`' numbers."""
    law = numbers["law"]
    lo, hi = law["limit_sqrt_h_band90"]
    rows = [
        [key.replace("_", " "), t["status"], t["runs"], t["left_out"],
         f"{t['ks_pvalue']:.3g}" if t["runs"] >= MIN_RUNS else "-",
         f"{t['mean_square']:.4g}", f"{t['expected_mean_square']:.4g}",
         f"[{t['ci99'][0]:.4g}, {t['ci99'][1]:.4g}]"]
        for key, t in law["tests"].items()
    ]  # fmt: skip
    papers = ", ".join(f"h = {h}: {v}" for h, v in PAPER_DISTANCE.items())
    return (
        "\n### The exact law of the gap (docs/theory.md §2(h); beyond the papers)\n\n"
        f"Given V(∞), ‖W(∞) − W*‖ = σ₁‖V(∞)‖·χ_{{{law['limit_dof']}}} exactly (m = 1). As h → ∞, "
        f"√h·‖W(∞) − W*‖ → ‖V∞(∞)‖·χ_{{{law['limit_dof']}}}: mean {law['limit_sqrt_h_mean']:.4f}, "
        f"90% band [{lo:.4f}, {hi:.4f}], so the distance at width h is about "
        f"{law['limit_sqrt_h_mean']:.2f}/√h (the papers, read off their Fig. 1: {papers}; "
        f"{_theorem2_words(law['theorem2_over_distance'])}). Test of every run's gap against "
        f"its conditional law: KS of F(d) at the 1% level (the mean of d² is shown beside its "
        f"exact expectation and 99% interval, not tested); 'not checked' below {MIN_RUNS} runs; "
        "'all' pools the widths:\n\n"
        + md_table(
            ["cell", "law", "runs", "left out", "KS p", "mean d²", "exact E d²", "99% CI"], rows
        )  # fmt: skip
    )
