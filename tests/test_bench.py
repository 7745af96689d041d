"""`flowlin bench`: the baselines it times against must compute the same thing as flowlin.

No timings are asserted here (benchmarks report them); what is checked is that the scipy
loop, the NumPy gradient descent and both flowlin solvers agree to the stated tolerance on the
benchmark grid, and that the JSON carries the machine record.
"""

import json

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

import flowlin
from flowlin import _bench
from flowlin._cli import app


def test_numpy_gradient_descent_is_flowlins_iteration():
    # The papers' procedure written in NumPy takes exactly flowlin.gradient_descent's steps
    # (same loss, same update), to round-off, with either loss convention.
    problem = flowlin.problems.gaussian(jax.random.key(3), n=8, D=20, m=2)
    W1, W2 = _bench._baseline_init(20, 2, 15, 0.5, seed=1)
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    net = flowlin.LinearNetwork(W1, W2)
    for averaged in (False, True):
        lr, steps = 0.05, 300
        P, k = _bench.numpy_gradient_descent(W1, W2, X, Y, lr, [steps], averaged=averaged)
        ref = flowlin.gradient_descent(net, problem, lr, steps, averaged=averaged)
        expected = np.asarray(ref.final_network.W2 @ ref.final_network.W1)
        assert k == steps
        np.testing.assert_allclose(P[-1], expected, rtol=1e-11, atol=1e-13)


def test_numpy_gradient_descent_stops_at_the_papers_threshold():
    # Stopping on the averaged loss (1/n)‖R‖² ≤ stop: the last iterate is the first below it.
    problem = flowlin.problems.gaussian(jax.random.key(4), n=8, D=20, m=1)
    W1, W2 = _bench._baseline_init(20, 1, 30, 0.5, seed=0)
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    stop, lr = 1e-4, 0.05
    P, k = _bench.numpy_gradient_descent(W1, W2, X, Y, lr, [], averaged=True, stop=stop)
    loss = lambda W: np.mean(np.sum((Y - X @ W.T) ** 2, axis=1))
    assert loss(P[-1]) <= stop
    Pprev, kprev = _bench.numpy_gradient_descent(W1, W2, X, Y, lr, [k - 1], averaged=True)
    assert kprev == k - 1 and loss(Pprev[-1]) > stop


def test_baseline_init_is_the_sweeps():
    # The unpadded weights handed to scipy and NumPy are the ones flowlin.sweep initializes:
    # the full solver from them reproduces the sweep's distance to the min-norm solution.
    problem = flowlin.problems.gaussian(jax.random.key(0), n=10, D=40, m=2)
    ds = flowlin.sweep(
        problem,
        widths=[12],
        scales=[0.5],
        seeds=[3],
        t1=2.0,
        theory=False,
        bounds=False,
        progress=False,
    )
    W1, W2 = _bench._baseline_init(40, 2, 12, 0.5, seed=3)
    tr = flowlin.gradient_flow(flowlin.LinearNetwork(W1, W2), problem, 2.0, saveat=[0.0, 2.0])
    np.testing.assert_allclose(
        float(ds["final_distance_to_min_norm"].squeeze()),
        float(tr.distance_to_min_norm[-1]),
        rtol=1e-6,
    )


def test_bench_throughput_quick_agrees_and_records_machine(tmp_path):
    result = CliRunner().invoke(app, ["bench", "throughput", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "sweep_throughput-latest.json").read_text())
    assert len(list(tmp_path.glob("sweep_throughput-2*.json"))) == 1
    # The machine record.
    m = record["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["backend"] == jax.default_backend()
    assert m["versions"]["jax"] == jax.__version__ and "gpu" in m and m["x64"]
    assert record["memory"]["host_peak_rss_mib"] > 0
    # Four approaches, every row timed.
    assert len(record["rows"]) == 4
    assert all(r["run_s"] > 0 and r["configs_per_s"] > 0 for r in record["rows"])
    assert record["settings"]["n_configs"] == 4
    # The three ODE solvers (same rtol 1e-6) agree to the stated tolerance; gradient descent
    # with η = 1e-3 matches the flow to O(η) (stated: 10·η).
    d, tol = record["disagreement"], record["tolerance"]
    assert tol["ode"] == _bench.ODE_AGREEMENT and tol["gd"] == 10 * _bench.GD_LR
    assert d["ode_distance"] < tol["ode"] and d["ode_loss"] < tol["ode"]
    assert d["gd_distance"] < tol["gd"] and d["gd_loss"] < tol["gd"]
    assert d["gd_products"] < tol["gd"]
    # ...and gradient descent is not trivially equal to the flow (its O(η) error is visible).
    assert d["gd_distance"] > 100 * d["ode_distance"]
    assert "flowlin.sweep(method='gram')" in result.output


def test_bench_rejects_unknown_benchmark(tmp_path):
    result = CliRunner().invoke(app, ["bench", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert "BENCHMARK" in result.output and "throughput" in result.output
    with pytest.raises(ValueError, match="benchmark must be one of"):
        _bench.run("nope", True, tmp_path)


def test_sweep_stop_at_loss_on_one_device():
    # What `flowlin bench fig1` runs: a gram sweep stopped at a loss threshold. On one device
    # (no shard_map) the stopping times are the single solves' ones.
    problem = flowlin.problems.gaussian(jax.random.key(0), n=10, D=40, m=1)
    grid = dict(widths=[20], scales=[0.5], seeds=3, t1=100.0, stop_at_loss=1e-6)
    options = dict(theory=False, bounds=False, progress=False)
    ds = flowlin.sweep(problem, **grid, **options, devices=jax.devices()[:1])
    # On several devices the sweep falls back to one (the event does not trace under
    # shard_map), says so, and gives the same numbers.
    with pytest.warns(UserWarning, match="stop_at_loss runs on one device"):
        multi = flowlin.sweep(problem, **grid, **options)
    np.testing.assert_array_equal(multi["final_time"].values, ds["final_time"].values)
    for s in range(3):
        W1, W2 = _bench._baseline_init(40, 1, 20, 0.5, seed=s)
        tr = flowlin.gradient_flow(
            flowlin.LinearNetwork(W1, W2),
            problem,
            100.0,
            method="gram",
            stop_at_loss=1e-6,
            saveat=[0.0],
        )
        assert bool(tr.reached_threshold)
        np.testing.assert_allclose(
            float(ds["final_time"].sel(seed=s).squeeze()), float(tr.final_time), rtol=1e-6
        )
        assert float(ds["final_excess_loss"].sel(seed=s).squeeze()) == pytest.approx(1e-6, rel=1e-6)
