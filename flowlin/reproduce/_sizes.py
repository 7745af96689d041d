"""Problem sizes of a reproduction run: `FULL` (the papers') and `QUICK` (tests). Internal API."""

import dataclasses

from .paper import FIG2_STEPS, V2_STEPS


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Problem sizes of one reproduction run (`FULL` = the papers'; `QUICK` for tests)."""

    fig1_n: int
    fig1_D: int
    fig1_widths: tuple[int, ...]
    fig1_seeds: int
    fig1_t1: float
    fig1_saves: int
    fig1_sampling: str  # "weights" (exact weights, cross-checked with the full solver) or "wishart"
    fig1_wishart_widths: tuple[int, ...]
    fig1_wishart_seeds: int
    fig2_n: int
    fig2_D: int
    fig2_h: int
    fig2_steps: int
    v2_n: int
    v2_m: int
    v2_widths: tuple[int, ...]
    v2_steps: int
    saves: int
    cross_check: bool  # also run the full solver (diffrax on the weights) once per figure


FULL = Sizes(
    fig1_n=100,
    fig1_D=400,
    fig1_widths=(500, 1000, 2000, 3000, 5000, 7500, 10_000),
    fig1_seeds=5,
    fig1_t1=25.0,
    fig1_saves=126,
    fig1_sampling="weights",
    fig1_wishart_widths=(1_000, 10_000, 100_000, 1_000_000),
    fig1_wishart_seeds=12,
    fig2_n=100,
    fig2_D=400,
    fig2_h=500,
    fig2_steps=FIG2_STEPS,
    v2_n=20,
    v2_m=5,
    v2_widths=(30, 100, 300, 1000),
    v2_steps=V2_STEPS,
    saves=301,
    cross_check=True,
)
# Reduced runs (tests): ICML Fig. 2 keeps its sizes (c depends on h and r) with fewer GD
# steps; Fig. 1 keeps n, D, three widths of the paper's range and samples every init's
# statistics from their Wishart law (both sweeps then share one compiled program: same
# shapes); v2 one width, fewer steps. The full-solver cross-checks are skipped.
QUICK = Sizes(
    fig1_n=100,
    fig1_D=400,
    fig1_widths=(500, 2_000, 10_000),
    fig1_seeds=3,
    fig1_t1=25.0,
    fig1_saves=126,
    fig1_sampling="wishart",
    fig1_wishart_widths=(30_000, 100_000, 1_000_000),
    fig1_wishart_seeds=3,
    fig2_n=100,
    fig2_D=400,
    fig2_h=500,
    fig2_steps=3_000,
    v2_n=20,
    v2_m=5,
    v2_widths=(100,),
    v2_steps=3_000,
    saves=121,
    cross_check=False,
)
