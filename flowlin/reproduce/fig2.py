r"""ICML Fig. 2: the rate of convergence against the imbalance of the initialization.

`fig2_data` computes (four flows, gradient descent, a cross-check), `fig2_figure` draws,
`fig2_numbers`/`fig2_markdown` report; `run_fig2` runs the three.
"""

import dataclasses
import pathlib
import time

import jax
import numpy as np
import xarray as xr

from .. import _dataset as schema, init, problems, theory
from .._flow import gradient_flow
from .._method import FullWeights, Gram
from .._network import LinearNetwork
from .._problem import Problem
from .._progress import progress_bar
from .._summary import md_table
from .._trajectory import Trajectory
from ._compute import descent_reduced, saveat_only
from ._report import Section, bounds_markdown, plt, save_figure, save_netcdf
from ._sizes import Sizes
from .paper import FIG2_LR, PAPER_C


@dataclasses.dataclass
class Fig2Result:
    """What `fig2_data` computed: the inits, their flows, and the dataset of the four cases
    (with `gd_excess_loss`, gradient descent's excess loss at the same times)."""

    sizes: Sizes
    problem: Problem
    ts: np.ndarray
    pairs: list  # the (σ_U, σ_V) of the imbalanced inits, as in the paper's legend
    names: list[str]
    nets: list[LinearNetwork]
    trajs: list[Trajectory]
    ds: xr.Dataset
    cross: float  # max |Δ log(L − L*)|, full solver vs gram method (NaN: not run)

    @property
    def t1(self) -> float:
        return float(self.ts[-1])


def fig2_data(sizes: Sizes, *, seed: int = 0, progress: bool = True) -> Fig2Result:
    """The computation of ICML Fig. 2 (see `run_fig2`)."""
    k_data, k_init = jax.random.split(jax.random.key(seed + 10))
    problem = problems.whitened(k_data, n=sizes.fig2_n, D=sizes.fig2_D, m=1)
    n, D, m, h = problem.n, problem.D, problem.m, sizes.fig2_h
    t1 = 2 * FIG2_LR * sizes.fig2_steps / n
    ts = np.linspace(0.0, t1, sizes.saves)
    pairs = list(PAPER_C)
    nets = [init.gaussian(k_init, D, m, h, s1, s2) for s1, s2 in pairs]
    nets.append(init.balanced_like(nets[0], problem))
    names = [f"σU={s1}, σV={s2}" for s1, s2 in pairs] + ["balanced (same product as σ=0.1)"]
    trajs = []
    desc = "fig2: flows and gradient descent"
    with progress_bar(total=len(nets) + 1, enabled=progress, desc=desc, unit="run") as bar:
        for net in nets:
            trajs.append(gradient_flow(net, problem, t1, saveat=ts, method=Gram()))
            bar.update(1)
        # The paper's GD on the averaged loss (1/n)‖R‖² = (2/n)·½‖R‖²: step 2η/n on ½‖R‖².
        gd_loss = descent_reduced(nets, problem, 2 * FIG2_LR / n, sizes.fig2_steps, ts)
        bar.update(1)
    # Cross-check on the weights (diffrax on W1, W2), at every 10th save, one diagnostic.
    cross = float("nan")
    if sizes.cross_check:
        saveat = saveat_only(ts[::10], "excess_loss")
        full = gradient_flow(nets[0], problem, t1, saveat=saveat, method=FullWeights())
        cross = float(np.max(np.abs(np.log(full.excess_loss) - np.log(trajs[0].excess_loss[::10]))))
    ds = schema.trajectory_dataset(names, trajs, nets, problem)
    ds["gd_excess_loss"] = ((schema.CASE, schema.TIME), gd_loss)
    ds.attrs.update(lr=FIG2_LR, steps=sizes.fig2_steps, averaged=1, full_vs_gram_max_log=cross)
    return Fig2Result(sizes, problem, ts, pairs, names, nets, trajs, ds, cross)


def fig2_figure(res: Fig2Result, out: pathlib.Path) -> list[pathlib.Path]:
    """Write `fig2.png` (log loss vs iteration with the ICML Theorem 1 envelopes) and the data
    `fig2.nc`."""
    files: list = []
    n, cs, ts = res.problem.n, res.ds[schema.theory_var("c")].values, res.ts
    gd_loss = res.ds.gd_excess_loss.values
    fig, ax = plt().subplots(figsize=(7.5, 5))
    iters = ts * n / (2 * FIG2_LR)
    for i, (name, tr) in enumerate(zip(res.names, res.trajs)):
        label = f"{name}: c = {cs[i]:.2f}" + (
            f" (paper, printed: {PAPER_C[res.pairs[i]]})" if i < len(res.pairs) else ""
        )
        ax.semilogy(iters, tr.excess_loss, f"C{i}-", lw=2, label=label)
        ax.semilogy(iters[::10], gd_loss[i, ::10], f"C{i}.", ms=4)
        if cs[i] > 0:
            env = theory.loss_envelope(ts, res.nets[i], res.problem)
            ax.semilogy(iters, env, f"C{i}--", lw=1)
    ax.plot([], [], "k--", lw=1, label="ICML Thm 1 envelope $e^{-2\\lambda_r c t}(L_0-L^*)$")
    ax.plot([], [], "k.", label=f"gradient descent, η = {FIG2_LR} (averaged loss)")
    ax.set(
        xlabel=f"GD iteration k  (flow time t = 2ηk/n, up to {res.t1:.3g})",
        ylabel="excess loss L − L*",
        title=f"ICML Fig. 2: rate vs imbalance (h = {res.sizes.fig2_h})",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    save_figure(fig, out / "fig2.png", files)
    save_netcdf(res.ds, out / "fig2.nc", files)
    return files


def gd_vs_flow(ds: xr.Dataset) -> float:
    """Max |log(L − L*)| difference between gradient descent and the flow."""
    return float(np.max(np.abs(np.log(ds.gd_excess_loss.values) - np.log(ds.excess_loss.values))))


def fig2_numbers(res: Fig2Result) -> dict:
    """The numbers reported (numbers.json)."""
    cs = res.ds[schema.theory_var("c")].values
    return dict(
        c=[float(c) for c in cs[: len(res.pairs)]],
        c_paper=list(PAPER_C.values()),
        c_paper_source="printed, ICML Fig. 2 legend",
        c_balanced=float(cs[-1]),
        runs=len(res.trajs),
        gd_vs_flow_max_log=gd_vs_flow(res.ds),
        full_vs_gram_max_log=res.cross,
        bounds_held=schema.all_bounds_held(res.ds)[0],
    )


def fig2_markdown(res: Fig2Result) -> str:
    """The report's section."""
    ds, names, pairs = res.ds, res.names, res.pairs
    cs, final_loss = ds[schema.theory_var("c")].values, ds[schema.final_var("excess_loss")]
    rows = [
        [
            names[i],
            f"{cs[i]:.3f}",
            PAPER_C[pairs[i]],
            f"{cs[i] / PAPER_C[pairs[i]]:.3f}",
            f"{float(final_loss[i]):.3e}",
        ]
        for i in range(len(pairs))
    ]
    rows.append(
        [names[-1], f"{cs[-1]:.3g}", "0 (by construction)", "-", f"{float(final_loss[-1]):.3e}"]
    )
    p = res.problem
    md = [
        "## ICML Fig. 2 — convergence rate vs imbalance\n",
        f"Whitened data n = {p.n}, D = {p.D}, m = {p.m}; h = {res.sizes.fig2_h}; gradient descent "
        f"η = {FIG2_LR}, {res.sizes.fig2_steps} steps on the averaged loss (flow time "
        f"{res.t1:.3g}), run on the exactly equivalent reduced problem (width ≤ r + m, inputs in "
        "X's singular basis), beside the exact flow.\n",
        md_table(
            ["init", "c (ours)", "c (paper, printed in its legend)", "ratio", "L − L* at the end"],
            rows,
        ),
        f"\nMax |log(L−L*)| difference, GD vs flow: {gd_vs_flow(ds):.2e} (GD's O(η) error); "
        "full solver vs gram method: "
        + (f"{res.cross:.2e}.\n" if np.isfinite(res.cross) else "skipped (--quick).\n"),
        "\n### Bound checks\n\n" + bounds_markdown(ds),
    ]
    return "\n".join(md)


def run_fig2(out: pathlib.Path, sizes: Sizes, *, seed: int = 0, progress: bool = True) -> Section:
    r"""ICML Fig. 2: log loss vs iteration for three imbalanced inits and a balanced one, with
    the ICML Theorem 1 envelopes $e^{-2\lambda_r(\Sigma)ct}(L(0) - L^\star)$.

    Whitened data ($\Sigma = I$), $h = 500$. Gradient descent with $\eta = 5\cdot10^{-4}$ on
    the averaged loss ($t = 2\eta k/n$), run on the exactly equivalent width-$(r+m)$ network
    (`flowlin.init.reduce_width`), beside the exact flow (gram method; full solver as a
    cross-check on the first init).
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    res = fig2_data(sizes, seed=seed, progress=progress)
    files = fig2_figure(res, out)
    return Section(
        "fig2", fig2_numbers(res), fig2_markdown(res), files, time.perf_counter() - start
    )
