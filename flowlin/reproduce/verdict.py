"""The one-line verdicts `flowlin sweep` and `flowlin reproduce` end with: how many runs, whether
every applicable bound held, and the fitted distance-vs-width slope (ICML Theorem 2: −1/2 at
α = 1/2)."""

import xarray as xr

from .. import _dataset as schema
from .._summary import summarize_bounds
from ._report import Section
from .paper import PAPER_C, PAPER_SLOPE


def _bounds_phrase(held: bool, failed: list[str], checked: bool) -> str:
    if not checked:
        return "bounds not checked (gradient descent)"
    if held:
        return "every applicable bound held"
    return "BOUNDS VIOLATED or runs failed: " + (", ".join(failed) or "a run did not succeed")


def sweep_verdict(ds: xr.Dataset) -> str:
    """`sweep: 25 runs (25 succeeded), every applicable bound held, slope −0.480 [...]`."""
    runs = int(ds[schema.SUCCEEDED].size)
    ok = int(ds[schema.SUCCEEDED].values.sum())
    held, failed = schema.all_bounds_held(ds)
    line = f"sweep: {runs} runs ({ok} succeeded), "
    line += _bounds_phrase(held, failed, bool(schema.bound_names(ds)))
    slopes = summarize_bounds(ds).slopes if schema.WIDTH in ds.dims else []
    for s in slopes:
        line += (
            f"; slope of log distance vs log h at scale {s.scale}: {s.slope:.3f} "
            f"[{s.ci_low:.3f}, {s.ci_high:.3f}]"
        )
    if not slopes:
        widths = int(ds.sizes.get(schema.WIDTH, 1))
        why = "one width" if widths < 2 else f"fewer than 3 converged runs over its {widths} widths"
        line += f"; no distance-vs-width slope ({why})"
    return line + "."


def reproduce_verdict(sections: dict[str, Section]) -> str:
    """`reproduce fig1, fig2, v2: 102 flow runs, every applicable bound held, Fig. 1 slope
    −0.489 (Theorem 2: −0.5).`"""
    runs = sum(int(s.numbers.get("runs", 0)) for s in sections.values())
    failed = [name for name, s in sections.items() if not s.numbers["bounds_held"]]
    line = f"reproduce {', '.join(sections)}: {runs} flow runs, "
    line += (
        "every applicable bound held" if not failed else "BOUNDS VIOLATED in " + ", ".join(failed)
    )
    if "fig1" in sections:
        slope = sections["fig1"].numbers["slope"]
        line += f", Fig. 1 slope {slope:.3f} (Theorem 2: {PAPER_SLOPE})"
    if "fig2" in sections:
        c = sections["fig2"].numbers["c"]
        line += ", Fig. 2 c = " + " / ".join(f"{x:.2f}" for x in c)
        line += " (paper, printed: " + " / ".join(f"{x:g}" for x in PAPER_C.values()) + ")"
    return line + "."
