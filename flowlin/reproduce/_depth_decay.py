"""`flowlin reproduce depth`'s loss-decay comparison at L = 3: four inits, their flows, the
bound checks of each, a figure and a table. Internal API of `depth.py`."""

import math
import pathlib

import jax
import numpy as np
import xarray as xr

from .. import _dataset as schema, init
from .._bounds import BoundCheck, check_bounds
from .._flow import gradient_flow
from .._problem import Problem
from .._progress import progress_bar
from .._saveat import DIAGNOSTICS, SaveAt
from .._summary import md_table
from ._report import crossing_time, plt, save_figure


#: The excess loss at which the loss-decay table reads off each init's time.
DECAY_LEVEL = 1e-8
#: The states that make "every applicable bound held" false: a violation, or a run that failed
#: (a bound left unchecked by round-off is neither, as in `flowlin.summarize_bounds`).
FAILED = ("violated", "not checked: run did not succeed")


def decay_inits(problem: Problem, width: int, key) -> dict:
    """The four L = 3 inits of the loss-decay comparison (hidden widths h, h)."""
    D, m, widths = problem.D, problem.m, (width, width)
    gauss = init.deep_gaussian(key, D, m, widths, alpha=0.5)
    return {
        "Gaussian, α = 1/2": gauss,
        "orthogonal": init.deep_orthogonal(jax.random.fold_in(key, 1), D, m, widths),
        "balanced, same product as the Gaussian": init.deep_balanced(
            jax.random.fold_in(key, 2), gauss.product, widths
        ),
        "balanced, product W*/2 (deficiency margin)": init.deep_balanced(
            jax.random.fold_in(key, 3), 0.5 * problem.min_norm, widths
        ),
    }


def bound_state(check: BoundCheck) -> str:
    """`BoundCheck.verdict`, "not applicable" shortened: "held" or "violated" (the only
    verdicts), "not applicable" (the theorem's hypotheses fail for that init), or
    "not checked: <why>" (a run that did not succeed, round-off)."""
    words = check.verdict()
    return "not applicable" if words.startswith("not applicable") else words


def decay_data(problem: Problem, width: int, t1: float, saves: int, key, progress: bool):
    """Loss decay at L = 3 from each of `decay_inits`: the curves (a Dataset over inits and
    times) and each init's `{bound: bound_state}`."""
    ts = np.linspace(0.0, t1, saves)
    nets = decay_inits(problem, width, key)
    curves, checks = {}, {}
    saveat = SaveAt(ts, diagnostics=DIAGNOSTICS)
    with progress_bar(total=len(nets), enabled=progress, desc="depth: L = 3 inits") as bar:
        for name, net in nets.items():
            traj = gradient_flow(net, problem, t1, saveat=saveat)
            curves[name] = traj
            checks[name] = {b: bound_state(c) for b, c in check_bounds(traj, net, problem).items()}
            bar.update(1)
    names = list(nets)
    drift = [np.asarray(curves[k].balancedness_drift).max(axis=-1) for k in names]
    decay = xr.Dataset(
        {
            "excess_loss": (("init", schema.TIME), [curves[k].excess_loss for k in names]),
            "distance_to_min_norm": (
                ("init", schema.TIME),
                [curves[k].distance_to_min_norm for k in names],
            ),
            "balancedness_drift_max": (("init", schema.TIME), drift),
            schema.CONVERGED: ("init", [bool(curves[k].converged) for k in names]),
        },
        coords={"init": names, schema.TIME: ts},
        attrs=dict(depth=3, width=width),
    )
    return decay, checks


def figure_decay(dec: xr.Dataset, path: pathlib.Path, files: list) -> None:
    """Excess loss against flow time at L = 3 for the four inits."""
    fig, ax = plt().subplots(1, 2, figsize=(12, 4.5))
    for i, name in enumerate(dec["init"].values):
        ax[0].semilogy(dec[schema.TIME], dec.excess_loss.sel(init=name), f"C{i}-", label=name)
        ax[1].semilogy(dec[schema.TIME], dec.distance_to_min_norm.sel(init=name), f"C{i}-")
    ax[0].axhline(DECAY_LEVEL, color="k", ls=":", lw=1)
    ax[0].set(xlabel="flow time t", ylabel="excess loss L − L*",
              title=f"Loss decay at L = 3, h = {dec.attrs['width']}")  # fmt: skip
    ax[1].set(xlabel="flow time t", ylabel=r"$\|W(t) - W^\star\|_F$", title="Distance")
    for a in ax:
        a.grid(alpha=0.3, which="both")
    ax[0].legend(fontsize=8)
    save_figure(fig, path, files)


def decay_numbers(dec: xr.Dataset, checks: dict) -> dict:
    """The numbers of the comparison (numbers.json), `held` among them: no bound violated or
    left unchecked."""
    names = [str(name) for name in dec["init"].values]
    return dict(
        decay_time_to_level={
            name: crossing_time(
                dec[schema.TIME].values, dec.excess_loss.sel(init=name).values, DECAY_LEVEL
            )
            for name in names
        },  # fmt: skip
        decay_level=DECAY_LEVEL,
        decay_final_distance={
            name: float(dec.distance_to_min_norm.sel(init=name)[-1]) for name in names
        },
        decay_converged={name: bool(dec[schema.CONVERGED].sel(init=name)) for name in names},
        decay_bounds=checks,
        held=not any(s in FAILED for c in checks.values() for s in c.values()),
    )


def decay_markdown(numbers: dict) -> str:
    """The comparison's table: time to `DECAY_LEVEL`, final distance, every bound's state."""
    checks = numbers["decay_bounds"]
    bounds = sorted({b for c in checks.values() for b in c})
    shown = {"held": "held", "violated": "**VIOLATED**", "not applicable": "n/a"}
    rows = []
    for name, c in checks.items():
        t = numbers["decay_time_to_level"][name]
        cells = [name, "yes" if numbers["decay_converged"][name] else "**no**",
                 "—" if not math.isfinite(t) else f"{t:.2f}",
                 f"{numbers['decay_final_distance'][name]:.3g}"]  # fmt: skip
        cells += [shown.get(c.get(b, "not applicable"), c.get(b)) for b in bounds]
        rows.append(cells)
    head = ["init (L = 3)", "converged", f"t to L − L* < {DECAY_LEVEL:g}", "final ‖W − W*‖"]
    return md_table(head + bounds, rows)
