r"""v2 Figs. 2–5: imbalance spectrum, v2 Theorem 3 envelope, v2 Proposition 1 rate bound.

`v2_data` computes (per width: flow, gradient descent, spectrum, envelopes, rate bounds),
`v2_figure` draws, `v2_numbers`/`v2_markdown` report; `run_v2` runs the three.
"""

import dataclasses
import pathlib
import time

import jax
import numpy as np
import xarray as xr

from .. import _dataset as schema, init, problems, theory
from .._flow import gradient_flow
from .._method import Gram
from .._network import LinearNetwork
from .._problem import Problem
from .._progress import progress_bar
from .._summary import md_table
from .._trajectory import Trajectory
from ._compute import descent_reduced
from ._report import (
    Section,
    bounds_markdown,
    crossing_time,
    plt,
    save_figure,
    save_netcdf,
)
from ._sizes import Sizes
from .paper import V2_LR


#: Rates are plotted only where the excess loss is this far above the solver's noise floor
#: (relative to L(0) − L*): below it ρ = −d log(L − L*)/dt measures round-off, not dynamics.
RATE_PLOT_FLOOR = 1e-10


@dataclasses.dataclass
class V2Width:
    """One width's runs and the theory drawn beside them."""

    h: int
    net: LinearNetwork
    ts: np.ndarray
    traj: Trajectory  # the exact flow (gram method)
    gd: np.ndarray  # gradient descent's excess loss at `ts`
    eigenvalues: np.ndarray  # of the imbalance Λ
    spreads: tuple[float, float, float]  # Δ₊, Δ₋, Δ
    envelope_margin: np.ndarray  # v2 Theorem 3
    envelope_icml: np.ndarray  # ICML Theorem 1
    rate_bound: np.ndarray  # v2 Proposition 1
    rate_icml: float  # ICML Theorem 1's rate

    @property
    def t1(self) -> float:
        return float(self.ts[-1])

    @property
    def above_floor(self) -> np.ndarray:
        """Saves where the excess loss is above RATE_PLOT_FLOOR · (L(0) − L*)."""
        loss = np.asarray(self.traj.excess_loss)
        return loss > float(loss[0]) * RATE_PLOT_FLOOR


def v2_width(problem, k_init, h: int, sizes: Sizes) -> V2Width:
    r"""The runs at width h: init entries $N(0, (mh)^{-1/2})$, the flow to $t_1 = \eta_h k$ and
    gradient descent with $\eta_h = \eta/\sqrt{mh}$ (the paper's iterates)."""
    D, m = problem.D, problem.m
    scale = (m * h) ** -0.25
    net = init.gaussian(jax.random.fold_in(k_init, h), D, m, h, scale, scale)
    lr = V2_LR / np.sqrt(m * h)
    t1 = lr * sizes.v2_steps
    ts = np.linspace(0.0, t1, sizes.saves)
    tr = gradient_flow(net, problem, t1, saveat=ts, method=Gram())
    gd = descent_reduced([net], problem, lr, sizes.v2_steps, ts)[0]
    return V2Width(
        h=h,
        net=net,
        ts=ts,
        traj=tr,
        gd=gd,
        eigenvalues=np.asarray(theory.imbalance_eigenvalues(net, problem)),
        spreads=tuple(float(x) for x in theory.imbalance_spreads(net, problem)),
        envelope_margin=np.asarray(theory.loss_envelope(ts, net, problem, theorem="margin")),
        envelope_icml=np.asarray(theory.loss_envelope(ts, net, problem)),
        rate_bound=np.asarray(
            theory.instantaneous_rate_bound(
                net, problem, product_min_singular_value=tr.product_min_singular_value
            )
        ),
        rate_icml=float(theory.rate_imbalance(net, problem)),
    )


@dataclasses.dataclass
class V2Result:
    """What `v2_data` computed: the runs per width and their dataset (dims case × s = t/t1)."""

    sizes: Sizes
    problem: Problem
    runs: list[V2Width]
    ds: xr.Dataset


def v2_dataset(problem, runs: list[V2Width]) -> xr.Dataset:
    """One dataset per width (time grids differ), concatenated along "case" on a common
    normalized time axis s = t/t1."""
    dss = []
    for w in runs:
        d = schema.trajectory_dataset([f"h={w.h}"], [w.traj], [w.net], problem)
        d = d.assign_coords({schema.TIME: np.linspace(0.0, 1.0, d.sizes[schema.TIME])})
        dss.append(d.rename({schema.TIME: "fraction_of_t1"}))
    ds = xr.concat(dss, schema.CASE)
    ds["t1"] = (schema.CASE, np.asarray([w.t1 for w in runs]))
    ds["gd_excess_loss"] = ((schema.CASE, "fraction_of_t1"), np.stack([w.gd for w in runs]))
    ds["imbalance_eigenvalues"] = ((schema.CASE, "k"), np.stack([w.eigenvalues for w in runs]))
    return ds


def v2_data(sizes: Sizes, *, seed: int = 0, progress: bool = True) -> V2Result:
    """The computation of the v2 figures (see `run_v2`)."""
    k_data, k_init = jax.random.split(jax.random.key(seed + 20))
    problem = problems.factorization(k_data, n=sizes.v2_n, m=sizes.v2_m)
    runs = []
    widths = list(sizes.v2_widths)
    with progress_bar(total=len(widths), enabled=progress, desc="v2", unit="width") as bar:
        for h in widths:
            runs.append(v2_width(problem, k_init, h, sizes))
            bar.update(1)
    return V2Result(sizes, problem, runs, v2_dataset(problem, runs))


def draw_spectrum(a, w: V2Width, r: int) -> None:
    """Row 1: the imbalance spectrum with Δ₊, Δ₋, Δ."""
    ev = w.eigenvalues
    dp, dm, d = w.spreads
    idx = np.arange(1, len(ev) + 1)
    a.bar(idx, ev, color=np.where(ev >= 0, "C0", "C3"))
    lam1, lamr = ev[0], max(ev[r - 1], 0.0)
    neg1, negm = ev[-1], min(ev[r], 0.0)
    a.axhline(lamr, color="C0", ls=":", lw=1)
    a.axhline(negm, color="C3", ls=":", lw=1)
    xa = len(ev) + 1.5
    for y0, y1, lab, col in (
        (lamr, lam1, "Δ₊", "C0"),
        (neg1, negm, "Δ₋", "C3"),
        (negm, lamr, "Δ", "k"),
    ):
        a.annotate("", xy=(xa, y1), xytext=(xa, y0), arrowprops=dict(arrowstyle="<->", color=col))
        a.text(xa + 0.5, (y0 + y1) / 2, lab, color=col, va="center")
    a.set(
        xlim=(0, len(ev) + 4),
        xlabel="index i",
        ylabel=r"$\lambda_i(\Lambda)$",
        title=f"h = {w.h}: Δ₊={dp:.2f}, Δ₋={dm:.2f}, Δ={d:.2f}",
    )


def draw_loss(a, w: V2Width) -> None:
    """Row 2: the excess loss and v2 Theorem 3's envelope (and ICML Theorem 1's)."""
    ts, loss = w.ts, np.asarray(w.traj.excess_loss)
    a.semilogy(ts, loss, "C0-", lw=2, label="gradient flow")
    a.semilogy(ts[::8], w.gd[::8], "C1.", ms=4, label="gradient descent")
    a.semilogy(ts, w.envelope_margin, "k--", lw=1, label="v2 Thm 3 envelope")
    a.semilogy(ts, w.envelope_icml, "k:", lw=1, label="ICML Thm 1 envelope")
    floor = float(loss[0]) * RATE_PLOT_FLOOR
    # Show the decay down to the noise floor (the papers' horizon runs far past it).
    t_floor = crossing_time(ts, loss, floor)
    t_show = w.t1 if not np.isfinite(t_floor) else min(w.t1, 1.3 * t_floor)
    a.set(xlim=(0, t_show), ylim=(floor, 2 * float(loss[0])), xlabel="flow time t", ylabel="L − L*")


def draw_rate(a, w: V2Width) -> None:
    """Row 3: the measured rate and v2 Proposition 1's bound."""
    ok = w.above_floor
    a.plot(w.ts[ok], np.asarray(w.traj.rate)[ok], "C0-", lw=2, label=r"measured $\rho(t)$")
    a.plot(w.ts[ok], w.rate_bound[ok], "k--", lw=1, label="v2 Prop 1 bound")
    a.axhline(w.rate_icml, color="k", ls=":", lw=1, label="ICML Thm 1 rate")
    a.set(xlabel="flow time t", ylabel="rate")


def v2_figure(res: V2Result, out: pathlib.Path) -> list[pathlib.Path]:
    """Write `v2.png` (three rows per width) and the data `v2.nc`."""
    files: list = []
    cols = len(res.runs)
    fig, ax = plt().subplots(3, cols, figsize=(3.9 * cols, 10), squeeze=False)
    for j, w in enumerate(res.runs):
        draw_spectrum(ax[0, j], w, res.problem.rank)
        draw_loss(ax[1, j], w)
        draw_rate(ax[2, j], w)
    for a in ax[1:, :].ravel():
        a.grid(alpha=0.3, which="both")
    ax[1, 0].legend(fontsize=7)
    ax[2, 0].legend(fontsize=7)
    fig.suptitle(
        f"v2: matrix factorization n = {res.problem.n}, m = {res.problem.m}\n(t = t_paper/√(mh))"
    )
    save_figure(fig, out / "v2.png", files)
    save_netcdf(res.ds, out / "v2.nc", files)
    return files


def v2_numbers(res: V2Result) -> dict:
    """The numbers reported (numbers.json)."""
    spreads = [w.spreads for w in res.runs]
    return dict(
        widths=[w.h for w in res.runs],
        spreads=[list(s) for s in spreads],
        c=[s[2] for s in spreads],
        c_margin=[float(x) for x in res.ds[schema.theory_var("c_margin")].values],
        rate_asymptotic=[float(x) for x in res.ds[schema.theory_var("rate_asymptotic")].values],
        bounds_held=schema.all_bounds_held(res.ds)[0],
    )


def v2_markdown(res: V2Result) -> str:
    """The report's section."""
    ds, sizes = res.ds, res.sizes
    rows = [
        [
            w.h,
            f"{w.spreads[0]:.3f}",
            f"{w.spreads[1]:.3f}",
            f"{w.spreads[2]:.3f}",
            f"{float(cm):.3f}",
            f"{float(ra):.3f}",
            f"{w.t1:.3g}",
            f"{float(fe):.2e}",
        ]
        for w, cm, ra, fe in zip(
            res.runs,
            ds[schema.theory_var("c_margin")].values,
            ds[schema.theory_var("rate_asymptotic")].values,
            ds[schema.final_var("excess_loss")].values,
        )
    ]
    md = [
        "## v2 — imbalance spectrum, Theorem 3 envelope, Proposition 1 rate bound\n",
        f"Matrix factorization n = {res.problem.n}, m = {res.problem.m}, Y entries N(0, 0.1²); "
        f"init entries N(0, (mh)^(-1/2)) (the paper's N(0, 1) with the 1/√(mh) output scaling); "
        f"gradient descent η = {V2_LR}/√(mh) for {sizes.v2_steps} steps (the paper's iterates), "
        "beside the exact flow (gram method).\n",
        md_table(
            ["h", "Δ₊", "Δ₋", "Δ = c", "c(0) (Thm 3)", "asymptotic rate", "t1", "L − L* at t1"],
            rows,
        ),
        "\n### Bound checks\n\n" + bounds_markdown(ds),
    ]
    return "\n".join(md)


def run_v2(out: pathlib.Path, sizes: Sizes, *, seed: int = 0, progress: bool = True) -> Section:
    r"""v2 Figs. 2–5 on matrix factorization $\tfrac12\|Y - UV^\top/\sqrt{mh}\|^2$.

    In flowlin's units $W_1^\top = U/(mh)^{1/4}$, $W_2^\top = V/(mh)^{1/4}$ (entries
    $N(0, (mh)^{-1/2})$) and $t = t_{paper}/\sqrt{mh}$; the paper's gradient descent with
    $\eta = 0.05$ is gradient descent with $\eta/\sqrt{mh}$ here (same iterates). Per width:
    the imbalance spectrum with $\Delta_+, \Delta_-, \Delta$; the excess loss with the v2
    Theorem 3 envelope; the measured rate $\rho(t)$ with the v2 Proposition 1 bound.
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    res = v2_data(sizes, seed=seed, progress=progress)
    files = v2_figure(res, out)
    return Section("v2", v2_numbers(res), v2_markdown(res), files, time.perf_counter() - start)
