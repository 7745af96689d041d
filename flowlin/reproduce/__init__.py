"""Reproduce the papers' experiments (docs/theory.md §5): data, figures and a report of the bounds.

An application of flowlin, above the library: `import flowlin` does not import it (nor
matplotlib); `import flowlin.reproduce` or `from flowlin.reproduce import reproduce` does.

- `reproduce("fig1" | "fig2" | "v2" | "all", out)`: ICML Fig. 1 (distance to the min-norm
  solution vs width, `fig1.py`), ICML Fig. 2 (rate vs imbalance, `fig2.py`) and the v2
  imbalance-spectrum / rate figures (`v2.py`) with the exact gradient flow (and the papers'
  gradient descent, mapped to flow time); netCDF data and PNG figures under `out/<target>/`,
  and `out/report.md` with every bound check and the numbers the papers print (`paper.py`)
  beside ours. Each figure module computes, then draws, then reports.
- `reproduce("depth", out)`: beyond the papers, deep linear networks on ICML Fig. 1's data
  (`depth.py`, docs/theory.md §6); not part of `"all"`, which reproduces the papers.
- `config.py`: `flowlin sweep CONFIG.toml`, a user-defined sweep from a TOML file.
- `demo.py`: `flowlin demo`.
"""

import json
import os
import pathlib
import shlex
import sys
from collections.abc import Callable

import jax
import numpy as np

from .._dataset import versions
from .._interrupt import raise_if_interrupted
from ._report import (
    REPORT_FILES,
    STORE_FOLDER,
    Section as Section,
    check_writable,
    set_aside,
    stores_progress,
    write_report,
    write_text,
)
from ._sizes import FULL as FULL, QUICK as QUICK, Sizes as Sizes
from .depth import run_depth
from .fig1 import run_fig1
from .fig2 import run_fig2
from .v2 import run_v2


#: The papers' figures: what `"all"` runs.
TARGETS = ("fig1", "fig2", "v2")
RUNNERS: dict[str, Callable[..., Section]] = {"fig1": run_fig1, "fig2": run_fig2, "v2": run_v2}
#: Targets beyond the papers, run only by name (not by `"all"`).
EXTRA_RUNNERS: dict[str, Callable[..., Section]] = {"depth": run_depth}
#: Seeds accepted (the targets seed their parts with `seed + k`, k ≤ 20, as 64-bit ints).
MAX_SEED = 2**62


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
      imbalance), `"v2"` (the extended version's spectrum/rate figures) or `"all"` (those
      three); or `"depth"` (deep linear networks on Fig. 1's data, docs/deep.md; beyond the
      papers, never part of `"all"`).
    - `out`: output folder; each target writes `out/<target>/` (netCDF data, PNG figures) and
      the run writes `out/report.md` and `out/numbers.json`.
    - `quick`: reduced sizes (`QUICK`) for tests; default the papers' sizes (`FULL`).
    - `seed`: seeds the data and initializations, an int in [0, 2⁶²].
    - `progress`: progress bars on a terminal or in a notebook, one line per stage in a log;
      `echo`: called with a line per finished target.

    **Returns:** `{target: Section}` with the numbers reported (c values, distances, slopes,
    whether every bound held).

    Call with float64 enabled (`jax.config.update("jax_enable_x64", True)`); the CLI does.

    **Example:**

    ```python
    import jax
    jax.config.update("jax_enable_x64", True)
    from flowlin.reproduce import reproduce

    sections = reproduce("fig2", "flowlin-results", quick=True)   # ~20 s
    print(sections["fig2"].numbers["bounds_held"])
    ```
    """
    call = "flowlin.reproduce.reproduce(...)"
    if not isinstance(target, str):
        raise TypeError(f"`{call}`: target must be one name (a str), got {type(target).__name__}")
    if target != "all" and target not in RUNNERS and target not in EXTRA_RUNNERS:
        choices = TARGETS + ("all", *EXTRA_RUNNERS)
        raise ValueError(f"`{call}`: target must be one of {choices}, got {target!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`{call}`: seed must be an int, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"`{call}`: seed must be in [0, 2**62], got {seed}")
    if seed + 20 >= 2**32 and not jax.config.read("jax_enable_x64"):
        # jax.random.key keeps the low 32 bits of a seed without x64: 2**32 + 5 would be 5.
        raise ValueError(
            f"`{call}`: seed {seed} needs float64 on (without it JAX keys keep only a seed's low "
            "32 bits, so this run would repeat a smaller seed's): call "
            "jax.config.update('jax_enable_x64', True) first, or use seed < 2**32 - 20"
        )
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"`{call}`: out must be a folder (str or os.PathLike), got {out!r}")
    out = pathlib.Path(out)
    targets = list(RUNNERS) if target == "all" else [target]
    # Before any work: a folder that cannot take the results is refused now, not after the
    # computation (fig2 and v2 keep no store: their work would be lost).
    check_writable(call, out, targets)
    # An earlier run's report, and the figures and data it describes, are moved aside together
    # (never deleted, never left beside new data); with no report there (a first run, or a
    # resumed one) the targets' files stay, and a resumed run keeps what it finished.
    if any((out / name).exists() for name in REPORT_FILES):
        earlier = [out / name for name in REPORT_FILES] + [
            path for name in (*RUNNERS, *EXTRA_RUNNERS) for path in sorted((out / name).glob("*"))
            if path.is_file() and path.suffix in (".png", ".nc")
        ]  # fmt: skip
        set_aside(earlier, f"{out} holds an earlier run's results", then="this run writes new ones")
    sizes = QUICK if quick else FULL
    key = dict(target=target, quick=quick, seed=seed, versions=versions(),
               float64=bool(jax.config.read("jax_enable_x64")))  # fmt: skip
    kept = _finished_targets(out, key)
    sections: dict[str, Section] = {}
    try:
        for name in targets:
            sec = kept.get(name) or _run_target(name, out, sizes, seed, progress)
            sections[name] = sec
            _save_finished(out, key, sections)
            if echo is not None:
                again = " (kept from the interrupted run)" if name in kept else ""
                echo(
                    f"{name}: {sec.seconds:.1f} s, bounds held: {sec.numbers['bounds_held']}{again}"
                )
            raise_if_interrupted()  # one swallowed during the target (flowlin/_interrupt.py)
    except KeyboardInterrupt:
        _say_interrupted(
            out, sections, [n for n in targets if n not in sections], target, quick, seed
        )
        raise
    write_report(sections, out, quick=quick)
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    return sections


#: Targets finished by a run that has not finished yet (so that the same command resumes).
PROGRESS_FILE = "reproduce-progress.json"


def _run_target(name: str, out: pathlib.Path, sizes: Sizes, seed: int, progress: bool) -> Section:
    """Run one target, its sweeps storing their chunks under `out/<name>/store/`."""
    token = STORE_FOLDER.set(out / name / "store")
    try:
        runner = RUNNERS.get(name) or EXTRA_RUNNERS[name]
        return runner(out / name, sizes, seed=seed, progress=progress)
    finally:
        STORE_FOLDER.reset(token)


def _save_finished(out: pathlib.Path, key: dict, sections: dict[str, Section]) -> None:
    finished = {
        name: dict(
            numbers=sec.numbers,
            markdown=sec.markdown,
            seconds=sec.seconds,
            files=[str(p.relative_to(out)) for p in sec.files],
        )  # fmt: skip
        for name, sec in sections.items()
    }
    text = json.dumps(dict(key=key, finished=finished), default=float)
    write_text(out / PROGRESS_FILE, text)


def _finished_targets(out: pathlib.Path, key: dict) -> dict[str, Section]:
    """The targets that an interrupted run of the same command (same target, sizes, seed and
    versions) finished, whose files are all still there."""
    try:
        saved = json.loads((out / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if saved.get("key") != json.loads(json.dumps(key, default=float)):
        return {}
    kept = {}
    for name, s in saved.get("finished", {}).items():
        files = [out / f for f in s["files"]]
        if all(f.exists() for f in files):
            kept[name] = Section(name, s["numbers"], s["markdown"], files, s["seconds"])
    return kept


def _say_interrupted(out, finished, pending, target, quick: bool, seed: int) -> None:
    """On Ctrl-C: what is kept, and the command that resumes."""
    saved, total = stores_progress(out / pending[0]) if pending else (0, 0)
    command = f"flowlin reproduce {target} --out {shlex.quote(str(out))}" + " --quick" * quick
    command += f" --seed {seed}" if seed else ""
    lines = [f"\ninterrupted: {len(finished)} of {len(finished) + len(pending)} target(s) finished"]
    if finished:
        lines[0] += f" ({', '.join(finished)}, kept)"
    if pending:
        lines.append(
            f"{pending[0]}: {saved} of {total} sweep chunk(s) saved under {out / pending[0]}"
        )
    lines.append(f"to resume, run the same command again: {command}")
    print("\n".join(lines), file=sys.stderr)
