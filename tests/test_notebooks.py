"""Every notebook in notebooks/ runs top to bottom (each enables float64 itself), and is
committed with its outputs (executed top to bottom, so that browsing it, or the docs site that
renders it, shows the results), and those outputs are what the code prints now."""

import os
import pathlib
import re

import nbformat
import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: Per-cell limit, a guard against a hang: each notebook runs in 15-60 s on a 2-core CPU.
CELL_TIMEOUT_S = 600
#: A number in printed output: masked when stored and fresh outputs are compared, since the
#: last digits move with round-off (and with XLA's choices) from machine to machine.
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _printed(book) -> list[str]:
    """Each code cell's printed text (stdout and text results; not stderr, where warnings
    differ between installs), numbers masked."""
    out = []
    for c in book.cells:
        if c.cell_type != "code":
            continue
        text = "".join(
            o.get("text", "")
            if o.output_type == "stream"
            else o.get("data", {}).get("text/plain", "")
            for o in c.outputs
            if o.get("name", "stdout") == "stdout"
        )
        text = NUMBER.sub("#", re.sub(r" at 0x[0-9a-f]+", "", text))
        # A table's column widths follow its numbers' printed widths: padding and rule lengths
        # are not compared, the words and the layout of lines are.
        out.append(re.sub(r"-{2,}", "-", re.sub(r"[ \t]+", " ", text)))
    return out


def test_notebooks_found():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_committed_with_outputs(path):
    book = nbformat.read(path, as_version=4)
    code = [c for c in book.cells if c.cell_type == "code"]
    # Executed in order, top to bottom, in one kernel: execution counts 1, 2, 3, ...
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert sum(len(c.outputs) for c in code) >= 2
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]


def _as_a_user_runs_it(flags: str) -> str:
    """XLA_FLAGS for a notebook kernel: the test process's, less the host-device count that
    conftest.py forces for the multi-device tests. A user's kernel has one CPU device; with
    four, every sweep in a notebook is split over four devices on two cores (06_depth: 75 s
    instead of 51 s on this machine)."""
    return " ".join(f for f in flags.split() if "xla_force_host_platform_device_count" not in f)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("XLA_FLAGS", _as_a_user_runs_it(os.environ.get("XLA_FLAGS", "")))

    book = nbformat.read(path, as_version=4)
    stored = _printed(book)
    client = NotebookClient(
        book,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},  # import this checkout's flowlin
    )
    client.execute()  # raises on an error in a cell, an assert among them
    # The committed outputs are what the notebook prints now, up to the numbers' digits (a
    # table that gained rows, a message that changed, a print added or removed all count).
    for i, (old, new) in enumerate(zip(stored, _printed(book), strict=True)):
        assert old == new, f"{path.name}, code cell {i + 1}: stale output; re-run the notebook"
