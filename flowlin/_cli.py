"""The `flowlin` command line (typer). Turns on float64 once, visibly, for exact results."""

import pathlib
import time
from typing import Annotated

import typer


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="flowlin: exact training dynamics of overparametrized linear networks.",
)


@app.callback()
def _root() -> None:
    """flowlin: exact training dynamics of overparametrized linear networks."""


def _enable_x64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


@app.command()
def demo(
    out: Annotated[pathlib.Path, typer.Option(help="Output folder.")] = pathlib.Path(
        "flowlin-results/demo"
    ),
    width: Annotated[int, typer.Option(min=1, help="Hidden width h.")] = 200,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """A one-minute tour: gradient flow and gradient descent on the ICML Fig. 1 data."""
    _enable_x64()
    import jax
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import flowlin

    start = time.perf_counter()
    key_data, key_init = jax.random.split(jax.random.key(seed))
    problem = flowlin.problems.gaussian(key_data, n=20, D=80, m=1)
    net = flowlin.init.paper(key_init, problem.D, problem.m, width, alpha=0.5)
    t1 = 200.0
    ts = jnp.linspace(0.0, t1, 201)
    flow = flowlin.gradient_flow(net, problem, t1, saveat=ts)
    proj = flowlin.gradient_flow(
        flowlin.init.project_to_invariant_set(net, problem), problem, t1, saveat=ts
    )
    lr = 0.05
    gd = flowlin.gradient_descent(net, problem, lr, int(t1 / lr), saveat=ts)
    elapsed = time.perf_counter() - start

    rows = [
        ("gradient flow", flow),
        ("gradient flow, U2(0) = 0", proj),
        (f"gradient descent, lr={lr}", gd),
    ]
    typer.echo(f"n={problem.n} D={problem.D} m={problem.m} h={width}, t1={t1}, float64")
    typer.echo(f"{'run':<28}{'L - L*':>12}{'|W - W*|':>12}{'max imbalance drift':>22}")
    for name, tr in rows:
        typer.echo(
            f"{name:<28}{float(tr.final_values['excess_loss']):>12.3e}"
            f"{float(tr.final_values['distance_to_min_norm']):>12.4f}"
            f"{float(jnp.max(tr.imbalance_drift)):>22.2e}"
        )
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for name, tr in rows:
        ax[0].semilogy(tr.ts, tr.excess_loss, label=name)
        ax[1].plot(tr.ts, tr.distance_to_min_norm, label=name)
    ax[0].set(xlabel="time t", ylabel="excess loss L - L*", title="Convergence")
    ax[1].set(xlabel="time t", ylabel="‖W(t) - W*‖_F", title="Distance to the min-norm solution")
    for a in ax:
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=120)
    typer.echo(f"wrote {out / 'demo.png'} ({elapsed:.1f} s)")


@app.command()
def reproduce(
    target: Annotated[
        str, typer.Argument(help="What to reproduce: fig1, fig2, v2 or all.")
    ] = "all",
    out: Annotated[pathlib.Path, typer.Option(help="Output folder.")] = pathlib.Path(
        "flowlin-results"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Reduced sizes (a minute or two; used by the tests).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the data and initializations.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Reproduce the papers' figures (theory.md §5): netCDF data, PNGs and report.md."""
    from ._reproduce import RUNNERS

    if target != "all" and target not in RUNNERS:
        raise typer.BadParameter(
            f"must be one of {', '.join([*RUNNERS, 'all'])}, got {target!r}", param_hint="TARGET"
        )
    _enable_x64()
    from ._reproduce import reproduce as run

    start = time.perf_counter()
    run(target, out, quick=quick, seed=seed, progress=progress, echo=typer.echo)
    typer.echo(f"wrote {out / 'report.md'} ({time.perf_counter() - start:.1f} s)")


@app.command()
def sweep(
    config: Annotated[
        pathlib.Path, typer.Argument(help="A sweep configuration (TOML, docs/sweep-config.md).")
    ],
    out: Annotated[pathlib.Path, typer.Option(help="Output folder.")] = pathlib.Path(
        "flowlin-results/sweep"
    ),
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a user-defined sweep from a TOML file: netCDF data, PNGs and report.md."""
    from ._sweep_config import ConfigError, load_config, run_config

    try:
        cfg = load_config(config)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    _enable_x64()
    start = time.perf_counter()
    run_config(cfg, out, progress=progress)
    typer.echo(f"wrote {out / 'report.md'} ({time.perf_counter() - start:.1f} s)")


@app.command()
def bench(
    benchmark: Annotated[
        str, typer.Argument(help="throughput | width | fig1 | compile | all")
    ] = "all",
    quick: Annotated[bool, typer.Option(help="A small grid: seconds, not minutes.")] = False,
    out: Annotated[pathlib.Path, typer.Option(help="Folder for the JSON results.")] = (
        pathlib.Path("flowlin-results/bench")
    ),
) -> None:
    """Benchmarks against scipy and NumPy gradient descent (tables + JSON; see benchmarks/)."""
    from ._bench import BENCHMARKS, run

    if benchmark != "all" and benchmark not in BENCHMARKS:
        raise typer.BadParameter(
            f"must be one of {', '.join(BENCHMARKS)} or all, got {benchmark!r}",
            param_hint="BENCHMARK",
        )
    run(benchmark, quick, out, echo=typer.echo)


def main() -> None:
    app()
