"""Smoke tests of the benchmark scripts (`benchmarks/`): they run, and their JSON carries the
machine record. Nothing here checks a number the benchmarks measure: timings are reported,
never asserted, and the agreement between the approaches is asserted by
tests/test_baselines.py."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from benchmarks import _harness as H


def test_machine_record():
    m = H.machine()
    assert m["cpu"] and m["cores"] >= 1 and m["backend"] == jax.default_backend()
    assert m["versions"]["jax"] == jax.__version__ and "gpu" in m and m["x64"]
    assert H.peak_memory()["host_peak_rss_mib"] > 0


@pytest.mark.slow
def test_sweep_throughput_script_runs_and_writes_json(tmp_path):
    # Smoke test: the script, as a user runs it, from the checkout.
    script = H.ROOT / "benchmarks" / "sweep_throughput.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "sweep_throughput-latest.json").read_text())
    assert len(list(tmp_path.glob("sweep_throughput-2*.json"))) == 1
    assert record["machine"]["x64"] and record["machine"]["versions"]["jax"] == jax.__version__
    assert len(record["rows"]) == 4 and record["settings"]["n_configs"] == 4
    assert set(record["disagreement"]) == {
        "ode_distance",
        "ode_loss",
        "gd_distance",
        "gd_loss",
        "gd_products",
    }
    assert "flowlin.sweep(method=Gram())" in proc.stdout


@pytest.mark.slow
def test_deep_cost_script_runs_and_writes_json(tmp_path):
    # Smoke test of benchmarks/deep_cost.py --quick (issue 20): the rows of every width and
    # depth, each with its ratio to the two-layer step of the same width (1 for the baseline).
    script = H.ROOT / "benchmarks" / "deep_cost.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--repeats", "1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "deep_cost-latest.json").read_text())
    assert record["machine"]["x64"] and record["load_before"] is not None
    rows = record["rows"]
    assert [(r["h"], r["depth"], r["network"][:4]) for r in rows] == [
        (h, L, net) for h in (10, 100) for L, net in ((2, "Line"), (2, "Deep"), (3, "Deep"))
    ]
    assert all(r["ratio"] == 1.0 for r in rows if r["network"] == "LinearNetwork")
    assert all(r["steps"] > 0 and r["excess_loss"] < 1 for r in rows)


@pytest.mark.slow
def test_gpu_sweep_runs_on_a_cpu_and_float32_agrees_with_float64(tmp_path):
    """benchmarks/gpu_sweep.py, the GPU path of issue 18, on a CPU (CI has no GPU): its rows
    say which call was timed, and its paired float32/float64 runs (same problem and weights)
    agree to well within the 1e-4 the issue asks of float32 on the median distance."""
    from benchmarks import gpu_sweep

    lines = []
    record = gpu_sweep.gpu_sweep(
        [12], chunk_size=12, pairs_per_cell=2, agreement_widths=(30,), echo=lines.append
    )
    assert [(r["dtype"], r["configs"], r["timed"]) for r in record["rows"]] == [
        ("float32", 12, "warm"),
        ("float64", 12, "warm"),
    ]
    paired = record["float32_vs_float64"]
    assert paired["pairs"] == 2 * 3  # seeds x scales, one width
    assert paired["median_gap"] <= 1e-4 * paired["median_distance_float64"]
    assert paired["max_relative_difference"] < 1e-4
    assert any("paired runs" in line for line in lines)


def test_slot_step_utilisation_counts_lockstep_by_hand():
    """benchmarks/fig1_gpu.py's accounting: a vmapped batch costs len(batch) × its slowest
    run's steps; padding rows (a bucket's last chunk repeats its last row) are waste."""
    from benchmarks.fig1_gpu import utilisation
    from flowlin._sweep._plan import Chunk

    steps = np.array([3, 5, 4, 10])
    chunks = [Chunk(0, 1, np.array([0, 1]), 2), Chunk(1, 1, np.array([2, 3]), 2)]
    assert utilisation(steps, chunks, 1, 1)["utilisation"] == 1.0
    whole = utilisation(steps, chunks, 1, None)
    assert (whole["useful_steps"], whole["slot_steps"]) == (22, 2 * 5 + 2 * 10)
    # Two devices: each holds one run of each chunk, so there is no lockstep at all.
    assert utilisation(steps, chunks, 2, None)["utilisation"] == 1.0
    # Five runs in batches of 2: two full batches, then the remainder as its own batch.
    five = utilisation(np.array([1, 2, 3, 4, 5]), [Chunk(0, 1, np.arange(5), 5)], 1, 2)
    assert five["slot_steps"] == 2 * 2 + 2 * 4 + 1 * 5
    padded = [Chunk(0, 1, np.array([0, 1, 2, 3]), 4), Chunk(1, 1, np.array([3, 3, 3, 3]), 1)]
    extra = utilisation(np.append(steps, 0), padded, 1, 2)
    assert (extra["useful_steps"], extra["slot_steps"]) == (22 + 10, 2 * 5 + 2 * 10 + 4 * 10)


@pytest.mark.slow
def test_fig1_gpu_script_on_a_cpu_reports_lockstep_use(tmp_path):
    """benchmarks/fig1_gpu.py (issue 18's 10⁶-configuration Fig. 1 sweep) on a CPU: one
    configuration at a time and vmapped batches give every run the same step count (what its
    predicted utilisations assume), and one whole-grid batch uses mean/max of its slot-steps."""
    from benchmarks import fig1_gpu

    lines = []
    record = fig1_gpu.fig1_gpu(
        28,
        chunk_sizes=(28,),
        batch_sizes=(1, None, 28),
        quick=True,
        devices=jax.local_devices()[:1],
        echo=lines.append,
    )
    one, default, vmapped = record["rows"]
    assert default["batch_size"] == "1 (default)"  # a CPU runs one configuration at a time
    assert all(r["configs"] == 28 and r["succeeded_fraction"] == 1.0 for r in record["rows"])
    assert vmapped["steps_as_first_batching"] and default["steps_as_first_batching"]
    assert one["slot_steps"] == one["useful_steps"] == default["slot_steps"]
    # One chunk, one batch of all 28 runs: 28 × the slowest run's steps.
    assert vmapped["slot_steps"] == 28 * vmapped["max_steps"]
    assert vmapped["utilisation"] == pytest.approx(vmapped["mean_steps"] / vmapped["max_steps"])
    assert [p["batch_size"] for p in record["predicted"]] == ["28 (chunk)", 16]
    assert any("slot-step utilisation" in line for line in lines)
