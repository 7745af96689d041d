"""The baselines the benchmarks time flowlin against compute what flowlin computes.

`benchmarks/_harness.py` holds a scipy `solve_ivp` integration of the flow and the papers'
NumPy gradient descent. Here they are checked against flowlin's solvers: gradient descent step
for step, and the flow of all three ODE solvers (scipy, flowlin full, flowlin gram) to the
agreement the benchmarks state (`ODE_AGREEMENT`; gradient descent to O(η)). No timings.
"""

import jax
import numpy as np
import pytest

import flowlin
from benchmarks import _harness as H


def test_numpy_gradient_descent_is_flowlins_iteration():
    # The papers' procedure written in NumPy takes exactly flowlin.gradient_descent's steps
    # (same loss, same update), to round-off, with either loss convention.
    problem = flowlin.problems.gaussian(jax.random.key(3), n=8, D=20, m=2)
    W1, W2 = H.baseline_init(20, 2, 15, 0.5, seed=1)
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    net = flowlin.LinearNetwork(W1, W2)
    for averaged in (False, True):
        lr, steps = 0.05, 300
        P, k = H.numpy_gradient_descent(W1, W2, X, Y, lr, [steps], averaged=averaged)
        ref = flowlin.gradient_descent(net, problem, lr, steps, averaged=averaged)
        expected = np.asarray(ref.final_network.W2 @ ref.final_network.W1)
        assert k == steps
        np.testing.assert_allclose(P[-1], expected, rtol=1e-11, atol=1e-13)


def test_numpy_gradient_descent_stops_at_the_papers_threshold():
    # Stopping on the averaged loss (1/n)‖R‖² ≤ stop: the last iterate is the first below it.
    problem = flowlin.problems.gaussian(jax.random.key(4), n=8, D=20, m=1)
    W1, W2 = H.baseline_init(20, 1, 30, 0.5, seed=0)
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    stop, lr = 1e-4, 0.05
    P, k = H.numpy_gradient_descent(W1, W2, X, Y, lr, [], averaged=True, stop=stop)
    loss = lambda W: np.mean(np.sum((Y - X @ W.T) ** 2, axis=1))
    assert loss(P[-1]) <= stop
    Pprev, kprev = H.numpy_gradient_descent(W1, W2, X, Y, lr, [k - 1], averaged=True)
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
    W1, W2 = H.baseline_init(40, 2, 12, 0.5, seed=3)
    tr = flowlin.gradient_flow(flowlin.LinearNetwork(W1, W2), problem, 2.0, saveat=[0.0, 2.0])
    np.testing.assert_allclose(
        float(ds["final_distance_to_min_norm"].squeeze()),
        float(tr.distance_to_min_norm[-1]),
        rtol=1e-6,
    )


def test_scipy_gradient_descent_and_both_flowlin_methods_agree():
    # The throughput benchmark's quick grid (4 configurations, 21 save times): scipy RK45,
    # flowlin FullWeights and Gram (same rtol 1e-6/atol 1e-9) agree to the stated tolerance;
    # gradient descent with η = 1e-3 matches the flow to O(η) (stated: 10·η).
    grid, lr = H.THROUGHPUT_QUICK, H.GD_LR
    problem = flowlin.problems.gaussian(jax.random.key(0), n=grid["n"], D=grid["D"], m=grid["m"])
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    ts = np.linspace(0.0, grid["t1"], 21)
    configs = H.grid_configs(grid)
    inits = [H.baseline_init(grid["D"], grid["m"], *c) for c in configs]
    scipy = np.stack(
        [H.numpy_flow_scipy(W1, W2, X, Y, grid["t1"], ts, H.RTOL, H.ATOL)[0] for W1, W2 in inits]
    )
    ks = np.rint(ts / lr).astype(np.int64)
    gd = np.stack([H.numpy_gradient_descent(W1, W2, X, Y, lr, ks)[0] for W1, W2 in inits])
    curves = {"scipy": H.curves_from_products(problem, scipy)}
    curves["gd"] = H.curves_from_products(problem, gd)
    for key, method in (("full", flowlin.FullWeights()), ("gram", flowlin.Gram())):
        ds = H.flowlin_grid_sweep(problem, grid, method, ts)
        assert bool(ds["succeeded"].all())
        curves[key] = H.curves_from_sweep(ds, configs)
    d = H.disagreement(curves, scipy, gd)
    ode, gd_tol = H.ODE_AGREEMENT, H.GD_AGREEMENT_PER_LR * lr
    assert d["ode_distance"] < ode and d["ode_loss"] < ode
    assert d["gd_distance"] < gd_tol and d["gd_loss"] < gd_tol
    assert d["gd_products"] < gd_tol
    # ...and gradient descent is not trivially equal to the flow (its O(η) error is visible).
    assert d["gd_distance"] > 100 * d["ode_distance"]


def test_sweep_stop_at_loss_on_one_device():
    # What benchmarks/fig1_cost.py times: a gram sweep stopped at a loss threshold. On one
    # device (no shard_map) the stopping times are the single solves' ones.
    problem = flowlin.problems.gaussian(jax.random.key(0), n=10, D=40, m=1)
    grid = dict(widths=[20], scales=[0.5], seeds=3, t1=100.0, stop_at_loss=1e-6)
    options = dict(theory=False, bounds=False, progress=False)
    one = flowlin.LocalExecutor(devices=jax.devices()[:1])
    ds = flowlin.sweep(problem, **grid, **options, executor=one)
    # On several devices the sweep falls back to one (the event does not trace under
    # shard_map), says so, and gives the same numbers.
    with pytest.warns(UserWarning, match="stop_at_loss runs on one device"):
        multi = flowlin.sweep(problem, **grid, **options)
    np.testing.assert_array_equal(multi["final_time"].values, ds["final_time"].values)
    for s in range(3):
        W1, W2 = H.baseline_init(40, 1, 20, 0.5, seed=s)
        tr = flowlin.gradient_flow(
            flowlin.LinearNetwork(W1, W2),
            problem,
            100.0,
            method=flowlin.Gram(),
            stop_at_loss=1e-6,
            saveat=[0.0],
        )
        assert bool(tr.reached_threshold)
        np.testing.assert_allclose(
            float(ds["final_time"].sel(seed=s).squeeze()), float(tr.final_time), rtol=1e-6
        )
        assert float(ds["final_excess_loss"].sel(seed=s).squeeze()) == pytest.approx(1e-6, rel=1e-6)
