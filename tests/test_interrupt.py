"""The CLI never loses finished work: `flowlin sweep` interrupted by SIGINT says how many chunks
are saved and how to resume, and the same command resumes to the bits of an uninterrupted run;
reports are always written (degenerate runs left out of the figures and listed), never stale;
`flowlin reproduce` keeps the targets an interrupted run finished.

One CLI subprocess; the other runs are in-process and share its two compiled shapes (widths 2
and 5 are two width buckets, so the sweep has two chunks; gradient descent compiles fast).
"""

import gc
import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr

import flowlin.reproduce as reproduce_pkg
from flowlin._interrupt import catch_interrupts, raise_if_interrupted
from flowlin.reproduce import Section
from flowlin.reproduce._report import plottable
from flowlin.reproduce.config import load_config, run_config


CONFIG = """
title = "interrupt test"
[problem]
kind = "gaussian"
n = 5
D = 12
m = 1
[init]
widths = [2, 5]
scales = [0.4]
seeds = 2
[dynamics]
kind = "descent"
method = "full"
lr = {lr}
steps = 40
saves = 5
"""
#: Seconds to wait for the CLI's first chunk (import, compile, run on a loaded 2-core machine).
FIRST_CHUNK_S = 240


def _config(tmp_path: pathlib.Path, lr: float) -> pathlib.Path:
    path = tmp_path / f"sweep-lr{lr}.toml"
    path.write_text(CONFIG.format(lr=lr))
    return path


def _saved_chunks(out: pathlib.Path) -> int:
    try:
        return len(json.loads((out / "store" / "manifest.json").read_text())["shards"])
    except (OSError, ValueError, KeyError):
        return 0


def _interrupt_after_first_chunk(config: pathlib.Path, out: pathlib.Path):
    cli = [sys.executable, "-m", "flowlin", "sweep", str(config), "--out", str(out)]
    proc = subprocess.Popen(
        [*cli, "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + FIRST_CHUNK_S
    while _saved_chunks(out) == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout + stderr


def test_sigint_then_resume_is_bit_identical(tmp_path, capsys):
    config, out = _config(tmp_path, 0.05), tmp_path / "out"
    rc, output = _interrupt_after_first_chunk(config, out)
    assert rc != 0, output[-3000:]
    # SIGINT is sent once the first chunk is saved; the second may be saved too (the signal
    # waits while XLA computes it). The message must say exactly what the store holds.
    said = re.search(rf"interrupted: (\d) of 2 chunk\(s\) saved in {re.escape(str(out))}", output)
    assert said, output[-3000:]
    saved = int(said[1])
    assert saved >= 1 and saved == _saved_chunks(out), output[-3000:]
    assert f"run the same command again: flowlin sweep {config} --out {out}" in output
    assert not (out / "report.md").exists()
    # The same command again (here in-process): only the missing chunks are computed.
    resumed = run_config(load_config(config), out, progress=False)
    assert resumed.attrs["chunks_resumed_from_store"] == saved
    uninterrupted = run_config(load_config(config), tmp_path / "ref", progress=False)
    assert uninterrupted.attrs["chunks_resumed_from_store"] == 0
    with xr.open_dataset(out / "sweep.nc") as a, xr.open_dataset(tmp_path / "ref/sweep.nc") as b:
        assert set(a.data_vars) == set(b.data_vars)
        for name in b.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert (out / "report.md").exists() and (out / "loss.png").exists()
    # The configuration edited, the same --out: the new sweep starts over, and the old store
    # and the files made from it are moved aside (never deleted), with a note saying where.
    capsys.readouterr()
    other = run_config(load_config(_config(tmp_path, 0.07)), out, progress=False)
    assert other.attrs["chunks_resumed_from_store"] == 0
    err = capsys.readouterr().err
    assert f"note: {out / 'store'} held another sweep: lr: 0.05 in the store, 0.07 now" in err
    (previous,) = out.glob("previous-*")
    assert f"store, report.md, sweep.nc, loss.png, distance.png moved to {previous}" in err
    assert (previous / "report.md").exists() and _saved_chunks(previous) == 2
    with xr.open_dataset(previous / "sweep.nc") as a, xr.open_dataset(out / "sweep.nc") as b:
        assert a.attrs["fingerprint"] == uninterrupted.attrs["fingerprint"]
        assert b.attrs["fingerprint"] == other.attrs["fingerprint"] != a.attrs["fingerprint"]


def _swallowed_interrupt():
    """Ctrl-C arriving while the garbage collector runs a callback (JAX registers one): the
    KeyboardInterrupt is raised inside the callback, where Python prints and drops it."""

    def callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(callback)
            signal.raise_signal(signal.SIGINT)

    gc.callbacks.append(callback)
    gc.collect()  # must not raise: the interrupt is dropped


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_dropped_in_a_gc_callback_still_stops_the_sweep(tmp_path, capsys):
    config, out = _config(tmp_path, 0.05), tmp_path / "out"
    with catch_interrupts():  # as the CLI's main() does
        _swallowed_interrupt()
        with pytest.raises(KeyboardInterrupt):
            run_config(load_config(config), out, progress=False)
    assert f"interrupted: 0 of 2 chunk(s) saved in {out / 'store'}" in capsys.readouterr().err
    assert _saved_chunks(out) == 0 and not (out / "report.md").exists()
    # Without the CLI's handler (library use) the same dropped interrupt is simply lost.
    _swallowed_interrupt()
    raise_if_interrupted()


def test_degenerate_runs_are_left_out_and_listed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("STALE")
    (out / "distance.png").write_text("STALE")
    # lr = 50 diverges: every loss is inf/nan (same compiled shapes as above: lr is traced).
    run_config(load_config(_config(tmp_path, 50.0)), out, progress=False)
    report = (out / "report.md").read_text()
    assert "STALE" not in report
    assert "## Left out of the figures" in report
    assert "excess_loss not finite (diverged), not plotted: width=2, scale=0.4, seed=0" in report
    assert "the figures not drawn" in report  # nothing positive to draw on a log axis
    assert not (out / "distance.png").exists()  # the stale one was moved aside, none was drawn
    assert (out / "sweep.nc").exists()
    (previous,) = out.glob("previous-*")  # files no store vouched for: kept, not deleted
    assert (
        (previous / "report.md").read_text() == (previous / "distance.png").read_text() == "STALE"
    )


def test_plottable_drops_repeats_and_masks_zeros():
    loss = np.ones((3, 2, 4))
    loss[2] = 0.0  # all-zero data at the third width
    loss[0, 1, 2] = np.inf  # a diverged run
    ds = xr.Dataset(
        {"excess_loss": (("width", "seed", "time"), loss)},
        coords={"width": [3, 3, 5], "seed": [0, 1], "time": np.arange(4.0)},
    )
    shown, skipped = plottable(ds, ["excess_loss"])
    assert shown.width.values.tolist() == [3, 5]
    assert any("repeated width 3" in s for s in skipped)
    assert any("not finite (diverged), not plotted: width=3, seed=1" in s for s in skipped)
    assert np.isnan(shown.excess_loss.sel(width=5)).all()
    assert np.isnan(shown.excess_loss.sel(width=3, seed=1)).all()
    assert (shown.excess_loss.sel(width=3, seed=0) == 1.0).all()
    zeros, skipped = plottable(ds.isel(width=[2]), ["excess_loss"])
    assert skipped == ["excess_loss has no finite positive value (e.g. all zero): nothing to plot"]


def test_reproduce_keeps_finished_targets_and_never_a_stale_report(tmp_path, monkeypatch, capsys):
    calls = []

    def runner(name, fail):
        def run(out, sizes, *, seed, progress):
            calls.append(name)
            if fail:
                raise KeyboardInterrupt
            out.mkdir(parents=True, exist_ok=True)
            (out / "data.nc").write_text("data")
            return Section(name, {"bounds_held": True}, f"## {name}", [out / "data.nc"], 1.0)

        return run

    (tmp_path / "report.md").write_text("STALE")
    runners = {"fig1": runner("fig1", False), "fig2": runner("fig2", True)}
    monkeypatch.setattr(reproduce_pkg, "RUNNERS", runners)
    with pytest.raises(KeyboardInterrupt):
        reproduce_pkg.reproduce("all", tmp_path, quick=True)
    message = capsys.readouterr().err
    assert "interrupted: 1 of 2 target(s) finished (fig1, kept)" in message
    assert f"run the same command again: flowlin reproduce all --out {tmp_path} --quick" in message
    assert not (tmp_path / "report.md").exists()
    runners["fig2"] = runner("fig2", False)
    sections = reproduce_pkg.reproduce("all", tmp_path, quick=True)
    assert calls == ["fig1", "fig2", "fig2"]  # fig1 was not run again
    assert set(sections) == {"fig1", "fig2"}
    assert "## fig1" in (tmp_path / "report.md").read_text()
    # A finished run keeps nothing: the next run computes everything again.
    reproduce_pkg.reproduce("all", tmp_path, quick=True)
    assert calls[3:] == ["fig1", "fig2"]
