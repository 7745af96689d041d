"""The `flowlin` command line (typer): `demo`, `reproduce`, `sweep CONFIG.toml`, `--version`.

Each command turns on float64 once, visibly, for exact results, and hands over to
`flowlin.reproduce` (the figures, the TOML runner, the demo: the only place matplotlib is
imported). The benchmarks are scripts of the source checkout (`benchmarks/`), not commands.
JAX is imported inside the commands only (and `import flowlin` is lazy), so `--help` and
`--version` answer in a fraction of a second. `sweep` and `reproduce` end with a one-line
verdict: runs, bounds held, slope.
"""

import contextlib
import pathlib
import time
from typing import Annotated

import typer


app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="flowlin: exact training dynamics of overparametrized linear networks.",
)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"flowlin {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """flowlin: exact training dynamics of overparametrized linear networks."""


def _enable_x64() -> None:
    # XLA:CPU's faster-compiling emitters, before JAX starts its backend (same numbers). A
    # command run inside a process whose backend exists (a test, a notebook) keeps its flags.
    import warnings

    from ._fast_compile import enable_fast_cpu_compiles

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        enable_fast_cpu_compiles()
    import jax

    jax.config.update("jax_enable_x64", True)
    # Compiled programs persist across runs (opt out: FLOWLIN_COMPILATION_CACHE=0).
    from ._cache import enable_compilation_cache

    enable_compilation_cache()


def _out_folder(out: pathlib.Path) -> pathlib.Path:
    """`--out`, made if missing; a usage error (exit 2) naming it if it cannot be a folder."""
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{str(out)!r} is a file, not a folder", param_hint="--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the path, no permission, a read-only disk
        raise typer.BadParameter(
            f"{str(out)!r} cannot be the output folder ({e.strerror or e})", param_hint="--out"
        ) from None
    return out


@contextlib.contextmanager
def _refusals_as_errors():
    """flowlin's own refusals of a value (a `ValueError`/`TypeError` whose message names the
    call, as every flowlin error does; a store another process is writing) end the command
    with `error: ...` and exit code 2, not a traceback. Anything else is a bug, and keeps its
    traceback."""
    from ._sweep._lock import StoreLockedError

    try:
        yield
    except StoreLockedError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    except (ValueError, TypeError) as e:
        if not str(e).startswith("`"):
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@app.command()
def demo(
    out: Annotated[pathlib.Path, typer.Option(help="Output folder.")] = pathlib.Path(
        "flowlin-results/demo"
    ),
    width: Annotated[int, typer.Option(min=1, max=10**6, help="Hidden width h.")] = 200,
    seed: Annotated[int, typer.Option(min=0, max=2**62, help="Random seed.")] = 0,
) -> None:
    """A one-minute tour: gradient flow and gradient descent on the ICML Fig. 1 data."""
    out = _out_folder(out)
    _enable_x64()
    from .reproduce.demo import demo as run

    with _refusals_as_errors():
        run(out, width=width, seed=seed, echo=typer.echo)


@app.command()
def reproduce(
    target: Annotated[
        str,
        typer.Argument(
            help="What to reproduce: fig1, fig2, v2 or all (the papers' figures); or depth "
            "(deep linear networks on Fig. 1's data, not part of all)."
        ),
    ] = "all",
    out: Annotated[pathlib.Path, typer.Option(help="Output folder.")] = pathlib.Path(
        "flowlin-results"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Reduced sizes (a minute or two; used by the tests).")
    ] = False,
    seed: Annotated[
        int, typer.Option(min=0, max=2**62, help="Seed of the data and initializations.")
    ] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Reproduce the papers' figures (docs/theory.md §5), or the depth study (docs/deep.md):
    netCDF data, PNGs and report.md."""
    from .reproduce import EXTRA_RUNNERS, RUNNERS

    if target != "all" and target not in RUNNERS and target not in EXTRA_RUNNERS:
        choices = ", ".join([*RUNNERS, "all", *EXTRA_RUNNERS])
        raise typer.BadParameter(f"must be one of {choices}, got {target!r}", param_hint="TARGET")
    out = _out_folder(out)
    _enable_x64()
    from .reproduce import reproduce as run
    from .reproduce.verdict import reproduce_verdict

    start = time.perf_counter()
    with _refusals_as_errors():
        sections = run(target, out, quick=quick, seed=seed, progress=progress, echo=typer.echo)
    typer.echo(f"wrote {out / 'report.md'} ({time.perf_counter() - start:.1f} s)")
    typer.echo(reproduce_verdict(sections))


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
    from .reproduce.config import ConfigError, load_config, run_config

    try:
        cfg = load_config(config)
    except ConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    out = _out_folder(out)
    _enable_x64()
    from ._progress import stage
    from .reproduce.verdict import sweep_verdict

    start = time.perf_counter()
    with stage("sweep"), _refusals_as_errors():
        ds = run_config(cfg, out, progress=progress)
    typer.echo(f"wrote {out / 'report.md'} ({time.perf_counter() - start:.1f} s)")
    typer.echo(sweep_verdict(ds))


def main() -> None:
    from ._interrupt import catch_interrupts

    with catch_interrupts():  # a Ctrl-C is never lost (see flowlin/_interrupt.py)
        app()
