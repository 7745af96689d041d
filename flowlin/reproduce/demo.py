"""`flowlin demo`: a one-minute tour, gradient flow and gradient descent on the ICML Fig. 1 data."""

import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from .. import init, problems
from .._descent import gradient_descent
from .._flow import gradient_flow
from .._problem import Problem
from .._trajectory import Trajectory
from ._report import plt


T1 = 200.0
LR = 0.05


def demo_runs(width: int, seed: int) -> tuple[Problem, list[tuple[str, Trajectory]]]:
    """The problem and three runs from one init: the flow, the flow from its projection onto
    the invariant set ($U_2(0) = 0$), and gradient descent."""
    key_data, key_init = jax.random.split(jax.random.key(seed))
    problem = problems.gaussian(key_data, n=20, D=80, m=1)
    net = init.paper(key_init, problem.D, problem.m, width, alpha=0.5)
    ts = jnp.linspace(0.0, T1, 201)
    flow = gradient_flow(net, problem, T1, saveat=ts)
    proj = gradient_flow(init.project_to_invariant_set(net, problem), problem, T1, saveat=ts)
    gd = gradient_descent(net, problem, LR, int(T1 / LR), saveat=ts)
    runs = [
        ("gradient flow", flow),
        ("gradient flow, U2(0) = 0", proj),
        (f"gradient descent, lr={LR}", gd),
    ]
    return problem, runs


def demo_figure(runs, path: pathlib.Path) -> None:
    """Excess loss and distance to the min-norm solution over time, one curve per run."""
    pyplot = plt()
    fig, ax = pyplot.subplots(1, 2, figsize=(10, 4))
    for name, tr in runs:
        ax[0].semilogy(tr.ts, tr.excess_loss, label=name)
        ax[1].plot(tr.ts, tr.distance_to_min_norm, label=name)
    ax[0].set(xlabel="time t", ylabel="excess loss L - L*", title="Convergence")
    ax[1].set(xlabel="time t", ylabel="‖W(t) - W*‖_F", title="Distance to the min-norm solution")
    for a in ax:
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot.close(fig)


def demo(
    out: pathlib.Path, *, width: int = 200, seed: int = 0, echo: Callable[[str], None] = print
) -> pathlib.Path:
    """Run the tour, print a table of the final values, write `out/demo.png`; its path."""
    start = time.perf_counter()
    problem, runs = demo_runs(width, seed)
    elapsed = time.perf_counter() - start
    echo(f"n={problem.n} D={problem.D} m={problem.m} h={width}, t1={T1}, {problem.X.dtype}")
    echo(f"{'run':<28}{'L - L*':>12}{'|W - W*|':>12}{'max imbalance drift':>22}")
    for name, tr in runs:
        echo(
            f"{name:<28}{float(tr.final_values['excess_loss']):>12.3e}"
            f"{float(tr.final_values['distance_to_min_norm']):>12.4f}"
            f"{float(jnp.max(tr.imbalance_drift)):>22.2e}"
        )
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    demo_figure(runs, out / "demo.png")
    echo(f"wrote {out / 'demo.png'} ({elapsed:.1f} s)")
    return out / "demo.png"
