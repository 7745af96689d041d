"""Reproduce the papers' experiments (docs/theory.md §5): data, figures and a report of the bounds.

An application of flowlin, above the library: `import flowlin` does not import it (nor
matplotlib); `import flowlin.reproduce` or `from flowlin.reproduce import reproduce` does.

- `reproduce("fig1" | "fig2" | "v2" | "all", out)`: ICML Fig. 1 (distance to the min-norm
  solution vs width, `fig1.py`), ICML Fig. 2 (rate vs imbalance, `fig2.py`) and the v2
  imbalance-spectrum / rate figures (`v2.py`) with the exact gradient flow (and the papers'
  gradient descent, mapped to flow time); netCDF data and PNG figures under `out/<target>/`,
  and `out/report.md` with every bound check and the numbers the papers print (`paper.py`)
  beside ours. Each figure module computes, then draws, then reports.
- `config.py`: `flowlin sweep CONFIG.toml`, a user-defined sweep from a TOML file.
- `demo.py`: `flowlin demo`.
"""

import pathlib
from collections.abc import Callable

from ._report import Section as Section, write_report
from ._sizes import FULL as FULL, QUICK as QUICK, Sizes as Sizes
from .fig1 import run_fig1
from .fig2 import run_fig2
from .v2 import run_v2


TARGETS = ("fig1", "fig2", "v2")
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
    r"""Run the papers' experiments (docs/theory.md §5) and write data, figures and a report.

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

    **Example:**

    ```python
    import jax
    jax.config.update("jax_enable_x64", True)
    from flowlin.reproduce import reproduce

    sections = reproduce("fig2", "flowlin-results", quick=True)
    print(sections["fig2"].numbers["c"])
    ```
    """
    call = "flowlin.reproduce.reproduce(...)"
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
