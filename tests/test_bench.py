"""Smoke tests of the benchmark scripts (`benchmarks/`): they run, and their JSON carries the
machine record. Nothing here checks a number the benchmarks measure: timings are reported,
never asserted, and the agreement between the approaches is asserted by
tests/test_baselines.py."""

import json
import subprocess
import sys

import jax
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
