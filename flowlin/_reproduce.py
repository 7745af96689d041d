"""Reproduce the papers' experiments (theory.md §5): data, figures and a report of the bounds.

`reproduce("fig1" | "fig2" | "v2" | "all", out)` runs ICML Fig. 1 (distance to the min-norm
solution vs width), ICML Fig. 2 (rate vs imbalance) and the v2 imbalance-spectrum / rate
figures with the exact gradient flow (and the papers' gradient descent, mapped to flow time),
writes netCDF data and PNG figures under `out/<target>/`, and `out/report.md` with every bound
check and the numbers the papers print beside ours.
"""

import dataclasses
import json
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import _theory as th
from ._bounds import check_bounds
from ._descent import gradient_descent
from ._flow import gradient_flow
from ._generators import factorization, gaussian as gaussian_data, whitened
from ._init import balanced_like, gaussian as gaussian_init, paper as paper_init, reduce_width
from ._network import LinearNetwork
from ._problem import Problem
from ._progress import progress_bar
from ._saveat import DIAGNOSTICS, SaveAt
from ._summary import fit_loglog_slope, summarize_bounds
from ._sweep import sweep


TARGETS = ("fig1", "fig2", "v2")

#: What the papers print (theory.md §5), shown beside our numbers in the report.
PAPER_C = {(0.1, 0.1): 6.02, (0.5, 0.02): 39.6, (0.05, 0.2): 20.1}  # ICML Fig. 2 legend
PAPER_DISTANCE = {500: 0.8, 10_000: 0.2}  # ICML Fig. 1, ‖Θ(t_f) − Θ̂‖_F (read off the plot)
PAPER_SLOPE = -0.5  # ICML Theorem 2 at α = 1/2
#: ICML Fig. 1 stops gradient descent when the averaged loss (1/n)‖Y − XW1ᵀW2ᵀ‖² < 1e-8.
FIG1_AVERAGED_LOSS_STOP = 1e-8
FIG1_LR = 5e-3
FIG2_LR, FIG2_STEPS = 5e-4, 15_000
V2_LR, V2_STEPS = 0.05, 15_000
#: Rates are plotted only where the excess loss is this far above the solver's noise floor
#: (relative to L(0) − L*): below it ρ = −d log(L − L*)/dt measures round-off, not dynamics.
RATE_PLOT_FLOOR = 1e-10


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


@dataclasses.dataclass
class Section:
    """One target's results: the numbers (for tests and JSON) and its Markdown report."""

    name: str
    numbers: dict
    markdown: str
    files: list[pathlib.Path]
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: pathlib.Path, files: list) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    files.append(path)


def _cases_dataset(names, trajs, nets, problem, *, widths=None, alpha=None) -> xr.Dataset:
    """A dataset with dims (case, time) in `flowlin.sweep`'s naming: every diagnostic over
    time, `final_*`, `theory_*` and `bound_<name>_{holds,applicable,worst_slack,tightness}`,
    so that `flowlin.summarize_bounds` reads it."""
    data: dict = {}
    ts = np.asarray(trajs[0].ts)

    def put(name, values, with_time=False):
        arr = np.stack([np.asarray(v) for v in values])
        data[name] = (("case", "time") if with_time else ("case",), arr)

    for k in DIAGNOSTICS:
        put(k, [getattr(t, k) for t in trajs], True)
    for k in trajs[0].final_values:
        put(f"final_{k}", [t.final_values[k] for t in trajs])
    put("final_time", [t.final_time for t in trajs])
    put("num_steps", [t.num_steps for t in trajs])
    put("succeeded", [t.succeeded for t in trajs])
    hs = widths or [n.width for n in nets]
    qs = [th.quantities(n, problem, width=h, alpha=alpha) for n, h in zip(nets, hs)]
    for k in qs[0]:
        put(f"theory_{k}", [q[k] for q in qs])
    checks = [check_bounds(t, n, problem, width=h, alpha=alpha) for t, n, h in zip(trajs, nets, hs)]
    for k in checks[0]:
        ok = [c[k].applicable & t.succeeded for c, t in zip(checks, trajs)]
        put(f"bound_{k}_applicable", ok)
        put(f"bound_{k}_holds", [c[k].holds & a for c, a in zip(checks, ok)])
        put(f"bound_{k}_worst_slack", [c[k].worst_slack for c in checks])
        put(f"bound_{k}_tightness", [c[k].tightness for c in checks])
    return xr.Dataset(data, coords={"case": list(names), "time": ts, "width": ("case", hs)})


def _bounds_all_held(ds: xr.Dataset) -> tuple[bool, list[str]]:
    """Whether every applicable bound held in every run (and the names of those that did not)."""
    failed = []
    for v in ds.data_vars:
        if v.startswith("bound_") and v.endswith("_holds"):
            name = v[len("bound_") : -len("_holds")]
            applicable = ds[f"bound_{name}_applicable"].values.astype(bool)
            holds = ds[v].values.astype(bool)
            if np.any(applicable & ~holds):
                failed.append(name)
    return (not failed and bool(ds["succeeded"].values.all())), failed


def _md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _bounds_markdown(ds: xr.Dataset) -> str:
    held, failed = _bounds_all_held(ds)
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


def _to_netcdf(ds: xr.Dataset, path: pathlib.Path, files: list) -> None:
    ds = ds.copy()
    for k, v in list(ds.attrs.items()):
        if isinstance(v, bool):
            ds.attrs[k] = int(v)
        elif not isinstance(v, (str, int, float, np.number)):
            ds.attrs[k] = json.dumps(v, default=str)
    for k in ds.data_vars:
        if ds[k].dtype == bool:
            ds[k] = ds[k].astype(np.int8)
    ds.to_netcdf(path)
    files.append(path)


def _crossing_time(ts, values, level):
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


def sweep_devices() -> list:
    """The devices the reproduction's sweeps run on: all local accelerators, but one CPU device.

    Several CPU "devices" (``--xla_force_host_platform_device_count``, as the test suite sets)
    share the same cores, so splitting over them gains nothing here (and multiplies the
    LAPACK calls in flight on the shared thread pool; see README "Known issues").
    """
    devices = jax.local_devices()
    return devices[:1] if devices[0].platform == "cpu" else devices


def _only(ts, *diagnostics) -> SaveAt:
    """Save only `diagnostics` at `ts` (the full solver's diagnostics cost O(h²) per save)."""
    return SaveAt(np.asarray(ts), diagnostics=diagnostics)


def _interp_at(ts, values, t):
    return float(np.interp(t, np.asarray(ts), np.asarray(values)))


def _descent_reduced(nets, problem: Problem, lr, steps: int, ts):
    r"""Plain gradient descent (step `lr` on $L = \tfrac12\|Y - XW_1^\top W_2^\top\|^2$) from
    each of `nets`, on an exactly equivalent small problem: width $\le r + m$
    (`flowlin.init.reduce_width`) and inputs in the basis of $X$'s singular vectors,
    $X' = \Sigma^{1/2}$ ($r\times r$), $Y' = \tilde Y$, $W_1' = U_1^\top$. $U_2$ never moves
    under gradient descent ($X\Phi_2 = 0$) and $L - L^\star = \tfrac12\|\tilde Y -
    \Sigma^{1/2}U_1V^\top\|^2$, so the iterates of $(U_1, V)$ and the excess loss are those
    of gradient descent on the original weights. The runs are vmapped (one compile).
    Returns the excess loss at `ts` (flow time $t = \eta k$), shape (runs, times)."""
    reduced = Problem(jnp.diag(problem.sqrt_sigma), problem.Y_tilde, allow_full_column_rank=True)
    small = [reduce_width(n, problem) for n in nets]
    W1 = jnp.stack([problem.row_part(n.W1).T for n in small])
    W2 = jnp.stack([n.W2 for n in small])

    def one(W1, W2):
        gd = gradient_descent(LinearNetwork(W1, W2), reduced, lr, steps, saveat=ts)
        return gd.excess_loss

    return np.asarray(jax.vmap(one)(W1, W2))


# --------------------------------------------------------------------------------------------
# ICML Fig. 1: distance to the min-norm solution vs width
# --------------------------------------------------------------------------------------------
def _limit_network(problem: Problem) -> LinearNetwork:
    r"""The $h\to\infty$ limit of the paper's init (entries $N(0, 1/h)$): $U_1U_1^\top\to I_r$,
    $VV^\top\to I_m$, $U_1V^\top\to 0$, $U_2\to$ (a vanishing cross term), realized at width
    $r + m$ by $W_1 = [\Phi_1^\top; 0]$, $W_2 = [0, I_m]$."""
    r, m, D = problem.rank, problem.m, problem.D
    W1 = jnp.concatenate([problem.Phi1.T, jnp.zeros((m, D), problem.dtype)], axis=0)
    W2 = jnp.concatenate([jnp.zeros((m, r), problem.dtype), jnp.eye(m, dtype=problem.dtype)], 1)
    return LinearNetwork(W1, W2)


def run_fig1(out: pathlib.Path, sizes: Sizes, *, seed: int = 0, progress: bool = True) -> Section:
    r"""ICML Fig. 1: $\|\Theta(t_f) - \hat\Theta\|_F$ vs width $h$ at $\alpha = 1/2$.

    The paper runs gradient descent ($\eta = 5\cdot10^{-3}$ on the averaged loss) until the
    averaged loss is below $10^{-8}$; here the exact gradient flow (gram method, one
    `flowlin.sweep`) to the same loss level, with iterations mapped from flow time
    ($k = tn/(2\eta)$). Beyond the paper: widths to $10^6$ with Wishart sampling of the init's
    statistics, and the $h\to\infty$ limit: since $U_2(0)$ is independent of everything else,
    $\mathbb E[h\,\|W(\infty) - W^\star\|_F^2] = (D - r)\,\mathbb E\|V(\infty)\|_F^2$ exactly, and
    $V(\infty)$ tends to that of the flow from the limit init (`_limit_network`).
    """
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    files: list = []
    plt = _plt()
    key_data = jax.random.key(seed)
    problem = gaussian_data(key_data, n=sizes.fig1_n, D=sizes.fig1_D, m=1)
    n, D, r, m = problem.n, problem.D, problem.rank, problem.m
    # (1/n)‖R‖² < 1e-8  ⇔  ½‖R‖² < n·1e-8/2; here L* = 0 (r = n), so this is the excess loss.
    stop = sizes.fig1_n * FIG1_AVERAGED_LOSS_STOP / 2
    t1 = sizes.fig1_t1
    ts = np.linspace(0.0, t1, sizes.fig1_saves)
    common = dict(
        scales=[0.5],
        init="paper",
        method="gram",
        t1=t1,
        saveat=ts,
        progress=progress,
        devices=sweep_devices(),
    )
    ds = sweep(
        problem,
        sizes.fig1_widths,
        seeds=sizes.fig1_seeds,
        key=seed + 1,
        sampling=sizes.fig1_sampling,
        **common,
    )
    ds_w = sweep(
        problem,
        sizes.fig1_wishart_widths,
        seeds=sizes.fig1_wishart_seeds,
        key=seed + 2,
        sampling="wishart",
        **common,
    )
    ds, ds_w = ds.sel(scale=0.5), ds_w.sel(scale=0.5)

    def stop_stats(d):
        """Flow time to the paper's stopping loss, and the distance there, per run."""
        t_stop = xr.apply_ufunc(
            lambda e: _crossing_time(ts, e, stop),
            d.excess_loss,
            input_core_dims=[["time"]],
            vectorize=True,
        )
        dist = xr.apply_ufunc(
            _interp_at_pair,
            d.distance_to_min_norm,
            t_stop,
            input_core_dims=[["time"], []],
            vectorize=True,
            kwargs={"ts": ts},
        )
        return t_stop, dist

    t_stop, dist = stop_stats(ds)
    t_stop_w, dist_w = stop_stats(ds_w)
    ds["stop_time"], ds["stop_distance"] = t_stop, dist
    ds["stop_iterations"] = t_stop * n / (2 * FIG1_LR)
    ds_w["stop_time"], ds_w["stop_distance"] = t_stop_w, dist_w
    ds.attrs["stop_excess_loss"] = stop
    ds_w.attrs["stop_excess_loss"] = stop

    # The h → ∞ limit: (D - r)‖V(∞)‖² from the limit init (full solver, width r + m).
    limit = gradient_flow(_limit_network(problem), problem, t1, saveat=ts[[0, -1]])
    v_inf = float(jnp.sum(limit.final_network.W2**2))
    limit_const = float(np.sqrt((D - r) * v_inf))  # lim √h · RMS distance

    # Cross-check: the full solver (diffrax on the weights) at the smallest width, seed 0.
    h_x = int(sizes.fig1_widths[0])
    cross = float("nan")
    if sizes.cross_check and sizes.fig1_sampling == "weights":
        net_x = paper_init(jax.random.fold_in(jax.random.key(seed + 1), 0), D, m, h_x, 0.5)
        full = gradient_flow(
            net_x, problem, t1, saveat=_only(ts[::5], "distance_to_min_norm"), method="full"
        )
        gram_x = ds.distance_to_min_norm.sel(width=h_x, seed=0).values[::5]
        cross = float(np.max(np.abs(np.asarray(full.distance_to_min_norm) - gram_x)))

    widths = ds.width.values
    slope, lo, hi, _ = fit_loglog_slope(
        np.broadcast_to(widths[:, None], dist.shape).ravel(), dist.values.ravel()
    )
    all_w = np.concatenate([widths, ds_w.width.values])
    slope_all, lo_all, hi_all, _ = fit_loglog_slope(
        np.concatenate(
            [np.repeat(widths, dist.shape[1]), np.repeat(ds_w.width.values, dist_w.shape[1])]
        ),
        np.concatenate([dist.values.ravel(), dist_w.values.ravel()]),
    )
    mean, std = dist.mean("seed").values, dist.std("seed").values
    res_v = ds.theory_residual_v
    # W(∞): the distance at t1 (excess loss ~1e-20 there), not at the stop (where the residual
    # ‖E‖/√λr(Σ) ~ 2e-3 still adds ~1% to √h·distance at h = 10^6).
    rms_scaled = np.sqrt((ds.width * ds.final_distance_to_min_norm**2).mean("seed")).values
    rms_scaled_w = np.sqrt((ds_w.width * ds_w.final_distance_to_min_norm**2).mean("seed")).values

    # ---- figure: the three panels of ICML Fig. 1 ------------------------------------------
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.3))
    ax[0].errorbar(
        widths,
        res_v.mean("seed"),
        res_v.std("seed"),
        fmt="s-",
        capsize=3,
        label=r"$\|\Phi_2\Phi_2^\top(\Theta(0)-\hat\Theta)\|_F$ (init)",
    )
    ax[0].errorbar(
        widths, mean, std, fmt="o-", capsize=3, label=r"$\|\Theta(t_f)-\hat\Theta\|_F$ (flow)"
    )
    for h, v in PAPER_DISTANCE.items():
        ax[0].plot([h], [v], "k*", ms=11, label="paper (read off)" if h == 500 else None)
    ax[0].set(
        xscale="log",
        yscale="log",
        xlabel="width h",
        ylabel="distance",
        title="Distance to the min-norm solution",
    )
    x = 1 / np.sqrt(widths)
    ax[1].errorbar(x, res_v.mean("seed"), res_v.std("seed"), fmt="s", capsize=3, label="init")
    ax[1].errorbar(x, mean, std, fmt="o", capsize=3, label=r"$t_f$")
    for y, style in ((res_v.mean("seed").values, "C0--"), (mean, "C1--")):
        a, b = np.polyfit(x, y, 1)
        xx = np.linspace(0, x.max() * 1.05, 50)
        ax[1].plot(xx, a * xx + b, style, lw=1, label=f"fit {a:.2f}/√h {b:+.3f}")
    ax[1].set(xlabel=r"$1/\sqrt{h}$", ylabel="distance", title="Same vs $1/\\sqrt{h}$")
    ax[2].errorbar(
        widths,
        ds.stop_iterations.mean("seed"),
        ds.stop_iterations.std("seed"),
        fmt="o-",
        capsize=3,
        label=r"flow time mapped: $k = t_f n/(2\eta)$",
    )
    ax[2].set(
        xscale="log",
        xlabel="width h",
        ylabel=f"GD iterations to loss < 1e-8 (η={FIG1_LR})",
        title="Iterations to converge",
    )
    for a_ in ax:
        a_.grid(alpha=0.3, which="both")
        a_.legend(fontsize=8)
    _save(fig, out / "fig1.png", files)

    # ---- figure: beyond the paper, widths to 10^6 and the h → ∞ limit ----------------------
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.3))
    ax[0].loglog(
        np.repeat(widths, dist.shape[1]),
        dist.values.ravel(),
        "o",
        ms=3,
        alpha=0.6,
        label="weights sampled",
    )
    ax[0].loglog(
        np.repeat(ds_w.width.values, dist_w.shape[1]),
        dist_w.values.ravel(),
        "s",
        ms=3,
        alpha=0.6,
        label="Wishart-sampled statistics",
    )
    hh = np.geomspace(min(all_w), max(all_w), 50)
    ax[0].loglog(
        hh,
        limit_const / np.sqrt(hh),
        "k--",
        lw=1,
        label=r"$\sqrt{(D-r)\|V_\infty\|^2/h}$ (h→∞ limit)",
    )
    ax[0].set(
        xlabel="width h",
        ylabel=r"$\|\Theta(t_f)-\hat\Theta\|_F$",
        title=f"Distance vs width, fitted slope {slope_all:.3f}",
    )
    ax[1].semilogx(
        widths,
        rms_scaled,
        "o-",
        label=r"$\sqrt{h\,\mathrm{mean}\,\|\Theta(t_1)-\hat\Theta\|^2}$, weights",
    )
    ax[1].semilogx(ds_w.width.values, rms_scaled_w, "s-", label="same, Wishart-sampled")
    ax[1].axhline(limit_const, color="k", ls="--", lw=1, label="h→∞ limit")
    ax[1].set(
        xlabel="width h",
        ylabel=r"$\sqrt{h}\times$ RMS distance",
        title="Scaled distance and its h→∞ limit",
    )
    for a_ in ax:
        a_.grid(alpha=0.3, which="both")
        a_.legend(fontsize=8)
    _save(fig, out / "fig1_wide.png", files)

    ds.attrs.update(limit_sqrt_h_distance=limit_const, full_vs_gram_max_abs=cross)
    _to_netcdf(ds, out / "fig1.nc", files)
    _to_netcdf(ds_w, out / "fig1_wishart.nc", files)

    held, _ = _bounds_all_held(ds)
    held_w, _ = _bounds_all_held(ds_w)
    numbers = dict(
        widths=[int(w) for w in widths],
        distance_mean=[float(v) for v in mean],
        distance_std=[float(v) for v in std],
        initial_null_distance_mean=[float(v) for v in res_v.mean("seed").values],
        iterations_mean=[float(v) for v in ds.stop_iterations.mean("seed").values],
        slope=slope,
        slope_ci=[lo, hi],
        slope_to_1e6=slope_all,
        slope_to_1e6_ci=[lo_all, hi_all],
        limit_sqrt_h_distance=limit_const,
        sqrt_h_rms_distance_widest=float(rms_scaled_w[-1]),
        full_vs_gram_max_abs=cross,
        all_converged=bool(np.all(np.isfinite(t_stop.values)) and np.all(np.isfinite(t_stop_w))),
        bounds_held=bool(held and held_w),
    )
    rows = [
        [int(w), f"{mu:.4f} ± {sd:.4f}", f"{PAPER_DISTANCE.get(int(w), '')}", f"{float(iv):.3g}"]
        for w, mu, sd, iv in zip(widths, mean, std, numbers["iterations_mean"])
    ]
    md = [
        "## ICML Fig. 1 — distance to the min-norm solution vs width\n",
        f"n = {n}, D = {D}, m = {m}, X entries N(0, 1/D), init entries N(0, 1/h) (α = 1/2), "
        f"{sizes.fig1_seeds} seeds per width; exact gradient flow (gram method) to the paper's "
        f"stop, averaged loss < {FIG1_AVERAGED_LOSS_STOP:g} (excess loss {stop:.3g}); "
        f"iterations mapped from flow time, k = t n / (2η), η = {FIG1_LR}.\n",
        _md_table(["h", "‖Θ(t_f) − Θ̂‖_F (ours)", "paper", "GD iterations (mapped)"], rows),
        f"\nFitted slope of log distance vs log h: **{slope:.4f}** "
        f"(95% CI [{lo:.4f}, {hi:.4f}]; paper/Theorem 2: {PAPER_SLOPE}). "
        f"Including Wishart-sampled widths up to {max(all_w):.0e}: **{slope_all:.4f}** "
        f"[{lo_all:.4f}, {hi_all:.4f}].\n",
        f"\nh → ∞ limit: √h · RMS distance → √((D − r)‖V(∞)‖²) = **{limit_const:.4f}** "
        f"(flow from the limit init); measured at h = {max(all_w):.0e}: "
        f"{rms_scaled_w[-1]:.4f}.\n",
        (
            f"\nCross-check, full solver vs gram method (h = {h_x}, seed 0), max |Δ distance| "
            f"over time: {cross:.2e}.\n"
            if np.isfinite(cross)
            else "\nInits' statistics sampled from their Wishart law (--quick): no weights, "
            "no full-solver cross-check.\n"
        ),
        "\n### Bound checks (paper widths)\n\n" + _bounds_markdown(ds),
        "\n### Bound checks (Wishart-sampled widths)\n\n" + _bounds_markdown(ds_w),
    ]
    return Section("fig1", numbers, "\n".join(md), files, time.perf_counter() - start)


def _interp_at_pair(values, t, ts):
    return _interp_at(ts, values, t) if np.isfinite(t) else float("nan")


# --------------------------------------------------------------------------------------------
# ICML Fig. 2: rate vs imbalance
# --------------------------------------------------------------------------------------------
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
    files: list = []
    plt = _plt()
    k_data, k_init = jax.random.split(jax.random.key(seed + 10))
    problem = whitened(k_data, n=sizes.fig2_n, D=sizes.fig2_D, m=1)
    n, D, m, h = problem.n, problem.D, problem.m, sizes.fig2_h
    t1 = 2 * FIG2_LR * sizes.fig2_steps / n
    ts = np.linspace(0.0, t1, sizes.saves)
    pairs = list(PAPER_C)
    nets = [gaussian_init(k_init, D, m, h, s1, s2) for s1, s2 in pairs]
    nets.append(balanced_like(nets[0], problem))
    names = [f"σU={s1}, σV={s2}" for s1, s2 in pairs] + ["balanced (same product as σ=0.1)"]
    trajs = []
    with progress_bar(total=len(nets) + 1, enabled=progress, desc="fig2", unit="run") as bar:
        for net in nets:
            trajs.append(gradient_flow(net, problem, t1, saveat=ts, method="gram"))
            bar.update(1)
        # The paper's GD on the averaged loss (1/n)‖R‖² = (2/n)·½‖R‖²: step 2η/n on ½‖R‖².
        gd_loss = _descent_reduced(nets, problem, 2 * FIG2_LR / n, sizes.fig2_steps, ts)
        bar.update(1)
    # Cross-check on the weights (diffrax on W1, W2), at every 10th save, one diagnostic.
    cross = float("nan")
    if sizes.cross_check:
        full = gradient_flow(
            nets[0], problem, t1, saveat=_only(ts[::10], "excess_loss"), method="full"
        )
        cross = float(np.max(np.abs(np.log(full.excess_loss) - np.log(trajs[0].excess_loss[::10]))))
    ds = _cases_dataset(names, trajs, nets, problem)
    ds["gd_excess_loss"] = (("case", "time"), gd_loss)
    ds.attrs.update(lr=FIG2_LR, steps=sizes.fig2_steps, averaged=1, full_vs_gram_max_log=cross)
    cs = ds.theory_c.values
    gd_vs_flow = float(
        np.max(np.abs(np.log(ds.gd_excess_loss.values) - np.log(ds.excess_loss.values)))
    )

    fig, ax = plt.subplots(figsize=(7.5, 5))
    iters = ts * n / (2 * FIG2_LR)
    for i, (name, tr) in enumerate(zip(names, trajs)):
        label = f"{name}: c = {cs[i]:.2f}" + (
            f" (paper {PAPER_C[pairs[i]]})" if i < len(pairs) else ""
        )
        ax.semilogy(iters, tr.excess_loss, f"C{i}-", lw=2, label=label)
        ax.semilogy(iters[::10], gd_loss[i, ::10], f"C{i}.", ms=4)
        if cs[i] > 0:
            env = th.loss_envelope(ts, nets[i], problem)
            ax.semilogy(iters, env, f"C{i}--", lw=1)
    ax.plot([], [], "k--", lw=1, label="ICML Thm 1 envelope $e^{-2\\lambda_r c t}(L_0-L^*)$")
    ax.plot([], [], "k.", label=f"gradient descent, η = {FIG2_LR} (averaged loss)")
    ax.set(
        xlabel=f"GD iteration k  (flow time t = 2ηk/n, up to {t1:.3g})",
        ylabel="excess loss L − L*",
        title=f"ICML Fig. 2: rate vs imbalance (h = {h})",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    _save(fig, out / "fig2.png", files)
    _to_netcdf(ds, out / "fig2.nc", files)

    held, _ = _bounds_all_held(ds)
    numbers = dict(
        c=[float(c) for c in cs[: len(pairs)]],
        c_paper=list(PAPER_C.values()),
        c_balanced=float(cs[-1]),
        gd_vs_flow_max_log=gd_vs_flow,
        full_vs_gram_max_log=cross,
        bounds_held=held,
    )
    rows = [
        [
            names[i],
            f"{cs[i]:.3f}",
            PAPER_C[pairs[i]],
            f"{cs[i] / PAPER_C[pairs[i]]:.3f}",
            f"{float(ds.final_excess_loss[i]):.3e}",
        ]
        for i in range(len(pairs))
    ]
    rows.append(
        [names[-1], f"{cs[-1]:.3g}", "0 (balanced)", "-", f"{float(ds.final_excess_loss[-1]):.3e}"]
    )
    md = [
        "## ICML Fig. 2 — convergence rate vs imbalance\n",
        f"Whitened data n = {n}, D = {D}, m = {m}; h = {h}; gradient descent η = {FIG2_LR}, "
        f"{sizes.fig2_steps} steps on the averaged loss (flow time {t1:.3g}), run on the "
        "exactly equivalent reduced problem (width ≤ r + m, inputs in X's singular basis), "
        "beside the exact flow.\n",
        _md_table(["init", "c (ours)", "c (paper)", "ratio", "L − L* at the end"], rows),
        f"\nMax |log(L−L*)| difference, GD vs flow: {gd_vs_flow:.2e} (GD's O(η) error); full "
        "solver vs gram method: "
        + (f"{cross:.2e}.\n" if np.isfinite(cross) else "skipped (--quick).\n"),
        "\n### Bound checks\n\n" + _bounds_markdown(ds),
    ]
    return Section("fig2", numbers, "\n".join(md), files, time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# v2: imbalance spectrum, Theorem 3 envelope, Proposition 1 rate bound
# --------------------------------------------------------------------------------------------
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
    files: list = []
    plt = _plt()
    k_data, k_init = jax.random.split(jax.random.key(seed + 20))
    problem = factorization(k_data, n=sizes.v2_n, m=sizes.v2_m)
    D, m, r = problem.D, problem.m, problem.rank
    widths = list(sizes.v2_widths)
    cols = len(widths)
    fig, ax = plt.subplots(3, cols, figsize=(3.9 * cols, 10), squeeze=False)
    trajs, nets, gds, t_ends = [], [], [], []
    spectra, spreads = [], []
    with progress_bar(total=cols, enabled=progress, desc="v2", unit="width") as bar:
        for j, h in enumerate(widths):
            scale = (m * h) ** -0.25
            net = gaussian_init(jax.random.fold_in(k_init, h), D, m, h, scale, scale)
            lr = V2_LR / np.sqrt(m * h)
            t1 = lr * sizes.v2_steps
            ts = np.linspace(0.0, t1, sizes.saves)
            tr = gradient_flow(net, problem, t1, saveat=ts, method="gram")
            gd = _descent_reduced([net], problem, lr, sizes.v2_steps, ts)[0]
            trajs.append(tr), nets.append(net), gds.append(gd), t_ends.append(t1)
            ev = np.asarray(th.imbalance_eigenvalues(net, problem))
            dp, dm, d = (float(x) for x in th.imbalance_spreads(net, problem))
            spectra.append(ev), spreads.append((dp, dm, d))
            bar.update(1)

            # Row 1: the imbalance spectrum.
            a = ax[0, j]
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
                a.annotate(
                    "", xy=(xa, y1), xytext=(xa, y0), arrowprops=dict(arrowstyle="<->", color=col)
                )
                a.text(xa + 0.5, (y0 + y1) / 2, lab, color=col, va="center")
            a.set(
                xlim=(0, len(ev) + 4),
                xlabel="index i",
                ylabel=r"$\lambda_i(\Lambda)$",
                title=f"h = {h}: Δ₊={dp:.2f}, Δ₋={dm:.2f}, Δ={d:.2f}",
            )
            # Row 2: the excess loss and v2 Theorem 3's envelope (and ICML Theorem 1's).
            a = ax[1, j]
            a.semilogy(ts, tr.excess_loss, "C0-", lw=2, label="gradient flow")
            a.semilogy(ts[::8], gd[::8], "C1.", ms=4, label="gradient descent")
            a.semilogy(
                ts,
                th.loss_envelope(ts, net, problem, theorem="margin"),
                "k--",
                lw=1,
                label="v2 Thm 3 envelope",
            )
            a.semilogy(
                ts, th.loss_envelope(ts, net, problem), "k:", lw=1, label="ICML Thm 1 envelope"
            )
            floor = float(tr.excess_loss[0]) * RATE_PLOT_FLOOR
            # Show the decay down to the noise floor (the papers' horizon runs far past it).
            t_floor = _crossing_time(ts, np.asarray(tr.excess_loss), floor)
            t_show = t1 if not np.isfinite(t_floor) else min(t1, 1.3 * t_floor)
            a.set(
                xlim=(0, t_show),
                ylim=(floor, 2 * float(tr.excess_loss[0])),
                xlabel="flow time t",
                ylabel="L − L*",
            )
            # Row 3: the measured rate and v2 Proposition 1's bound.
            a = ax[2, j]
            ok = np.asarray(tr.excess_loss) > floor
            bound = th.instantaneous_rate_bound(
                net, problem, product_min_singular_value=tr.product_min_singular_value
            )
            a.plot(ts[ok], np.asarray(tr.rate)[ok], "C0-", lw=2, label=r"measured $\rho(t)$")
            a.plot(ts[ok], np.asarray(bound)[ok], "k--", lw=1, label="v2 Prop 1 bound")
            a.axhline(
                float(th.rate_imbalance(net, problem)),
                color="k",
                ls=":",
                lw=1,
                label="ICML Thm 1 rate",
            )
            a.set(xlabel="flow time t", ylabel="rate")
    for a in ax[1:, :].ravel():
        a.grid(alpha=0.3, which="both")
    ax[1, 0].legend(fontsize=7)
    ax[2, 0].legend(fontsize=7)
    fig.suptitle(f"v2: matrix factorization n = {problem.n}, m = {m}\n(t = t_paper/√(mh))")
    _save(fig, out / "v2.png", files)

    # One dataset per width (time grids differ), concatenated along "case" on a common
    # normalized time axis s = t/t1.
    dss = []
    for h, tr, net in zip(widths, trajs, nets):
        d = _cases_dataset([f"h={h}"], [tr], [net], problem)
        d = d.assign_coords(time=np.linspace(0.0, 1.0, d.sizes["time"]))
        d = d.rename(time="fraction_of_t1")
        dss.append(d)
    ds = xr.concat(dss, "case")
    ds["t1"] = ("case", np.asarray(t_ends))
    ds["gd_excess_loss"] = (
        ("case", "fraction_of_t1"),
        np.stack(gds),
    )
    ds["imbalance_eigenvalues"] = (("case", "k"), np.stack(spectra))
    _to_netcdf(ds, out / "v2.nc", files)

    held, _ = _bounds_all_held(ds)
    rate_margins = []
    for tr in trajs:
        ok = np.asarray(tr.excess_loss) > float(tr.excess_loss[0]) * RATE_PLOT_FLOOR
        rate_margins.append(float(np.min(np.asarray(tr.rate)[ok])))
    numbers = dict(
        widths=widths,
        spreads=[list(s) for s in spreads],
        c=[s[2] for s in spreads],
        c_margin=[float(x) for x in ds.theory_c_margin.values],
        rate_asymptotic=[float(x) for x in ds.theory_rate_asymptotic.values],
        bounds_held=held,
    )
    rows = [
        [
            h,
            f"{s[0]:.3f}",
            f"{s[1]:.3f}",
            f"{s[2]:.3f}",
            f"{float(cm):.3f}",
            f"{float(ra):.3f}",
            f"{t:.3g}",
            f"{float(fe):.2e}",
        ]
        for h, s, cm, ra, t, fe in zip(
            widths,
            spreads,
            ds.theory_c_margin.values,
            ds.theory_rate_asymptotic.values,
            t_ends,
            ds.final_excess_loss.values,
        )
    ]
    md = [
        "## v2 — imbalance spectrum, Theorem 3 envelope, Proposition 1 rate bound\n",
        f"Matrix factorization n = {problem.n}, m = {m}, Y entries N(0, 0.1²); init entries "
        f"N(0, (mh)^(-1/2)) (the paper's N(0, 1) with the 1/√(mh) output scaling); gradient "
        f"descent η = {V2_LR}/√(mh) for {sizes.v2_steps} steps (the paper's iterates), beside "
        "the exact flow (gram method).\n",
        _md_table(
            ["h", "Δ₊", "Δ₋", "Δ = c", "c(0) (Thm 3)", "asymptotic rate", "t1", "L − L* at t1"],
            rows,
        ),
        "\n### Bound checks\n\n" + _bounds_markdown(ds),
    ]
    return Section("v2", numbers, "\n".join(md), files, time.perf_counter() - start)


RUNNERS: dict[str, Callable[..., Section]] = {"fig1": run_fig1, "fig2": run_fig2, "v2": run_v2}


def reproduce(
    target: str = "all",
    out: str | pathlib.Path = "flowlin-results",
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Section]:
    r"""Run the papers' experiments (theory.md §5) and write data, figures and a report.

    **Arguments:**

    - `target`: `"fig1"` (ICML Fig. 1, distance vs width), `"fig2"` (ICML Fig. 2, rate vs
      imbalance), `"v2"` (the extended version's spectrum/rate figures) or `"all"`.
    - `out`: output folder; each target writes `out/<target>/` (netCDF data, PNG figures) and
      the run writes `out/report.md` and `out/numbers.json`.
    - `quick`: reduced sizes (`QUICK`) for tests; default the papers' sizes (`FULL`).
    - `seed`: seeds the data and initializations.
    - `progress`: progress bars (shown on a terminal only); `echo`: called with a line per
      finished target.

    **Returns:** `{target: Section}` with the numbers reported (c values, distances, slopes,
    whether every bound held).

    Call with float64 enabled (`jax.config.update("jax_enable_x64", True)`); the CLI does.
    """
    call = "flowlin.reproduce(...)"
    if target != "all" and target not in RUNNERS:
        raise ValueError(f"`{call}`: target must be one of {TARGETS + ('all',)}, got {target!r}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK if quick else FULL
    targets = list(RUNNERS) if target == "all" else [target]
    sections = {}
    for name in targets:
        sec = RUNNERS[name](out / name, sizes, seed=seed, progress=progress)
        sections[name] = sec
        if echo is not None:
            echo(f"{name}: {sec.seconds:.1f} s, bounds held: {sec.numbers['bounds_held']}")
    write_report(sections, out, quick=quick)
    return sections


def write_report(sections: dict[str, Section], out: pathlib.Path, *, quick: bool) -> None:
    """`out/report.md` (every section) and `out/numbers.json` (the numbers reported)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("flowlin")
    except importlib.metadata.PackageNotFoundError:
        version = "source"
    sizes = "reduced sizes (--quick)" if quick else "the papers' sizes"
    head = [
        "# flowlin reproduction report\n",
        "Min, Tarmoun, Vidal & Mallada, ICML 2021 (arXiv 2105.06351) and its extended version.",
        f"flowlin {version}, jax {jax.__version__}, float64 "
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
