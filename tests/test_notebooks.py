"""Every notebook in notebooks/ runs top to bottom (each enables float64 itself)."""

import pathlib

import nbformat
import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: Per-cell limit: a notebook is meant to run in well under 2 minutes on a CPU.
CELL_TIMEOUT_S = 600


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    # Stored stripped: outputs are regenerated, never committed.
    assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code")
    client = NotebookClient(
        book,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},  # import this checkout's flowlin
    )
    client.execute()
    errors = [
        o
        for c in book.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors
