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
