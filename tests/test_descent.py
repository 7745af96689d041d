"""`flowlin.gradient_descent`: the Euler discretisation of the flow, driven by optax."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flowlin


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(11)
    X = (rng.standard_normal((6, 4)) * np.array([1.0, 0.8, 0.5, 0.3])) @ rng.standard_normal(
        (4, 14)
    )  # rank 4 < n = 6, non-whitened
    problem = flowlin.Problem(X / 3, rng.standard_normal((6, 2)))
    net = flowlin.init.gaussian(jax.random.key(0), problem.D, problem.m, 10, 0.4, 0.4)
    return problem, net


def test_descent_converges_to_flow_linearly_in_step(setup):
    problem, net = setup
    T = 2.0
    flow = flowlin.gradient_flow(net, problem, T, saveat=[T], rtol=1e-12, atol=1e-14)
    W_flow = flow.final_network.product
    lrs = jnp.array([4e-3, 2e-3, 1e-3, 5e-4])
    steps = jnp.round(T / lrs).astype(jnp.int32)

    def run(lr, k):
        return flowlin.gradient_descent(
            net, problem, lr, k, saveat=flowlin.SaveAt([0.0])
        ).final_network

    finals = jax.vmap(run)(lrs, steps)
    errors = jnp.linalg.norm(finals.W2 @ finals.W1 - W_flow, axis=(1, 2))
    ratios = errors[:-1] / errors[1:]
    # Explicit Euler is first order: halving η halves the error (ratio 2 up to O(η) terms).
    np.testing.assert_allclose(ratios, 2.0, rtol=0.05)
    assert float(errors[-1]) < 1e-2 * float(jnp.linalg.norm(W_flow))


def test_averaged_loss_time_mapping(setup):
    problem, net = setup
    eta, n = 0.01, problem.n
    avg = flowlin.gradient_descent(net, problem, eta, 300, averaged=True)
    plain = flowlin.gradient_descent(net, problem, 2 * eta / n, 300)
    # GD on (1/n)‖R‖² with step η is GD on ½‖R‖² with step 2η/n: the same iterates...
    np.testing.assert_allclose(avg.final_network.W1, plain.final_network.W1, rtol=1e-12)
    np.testing.assert_allclose(avg.loss, plain.loss, rtol=1e-12)
    # ...at flow time t = 2ηk/n.
    np.testing.assert_allclose(avg.ts, 2 * eta * avg.iterations / n, rtol=1e-14)
    np.testing.assert_allclose(avg.final_time, 2 * eta * 300 / n, rtol=1e-14)


def test_u2_frozen_and_saves_on_iterations(setup):
    problem, net = setup
    traj = flowlin.gradient_descent(net, problem, 0.01, 2000, saveat=[0.0, 1.0, 2.0, 20.0])
    assert bool(traj.succeeded)
    np.testing.assert_array_equal(traj.iterations, [0, 100, 200, 2000])
    np.testing.assert_allclose(traj.ts, [0.0, 1.0, 2.0, 20.0], rtol=1e-14)
    move = jnp.linalg.norm(problem.null_part(traj.final_network.W1 - net.W1))
    assert float(move / jnp.linalg.norm(problem.null_part(net.W1))) < 1e-12
    assert float(jnp.max(traj.u2_drift)) < 1e-12
    # Diagnostics at a save equal those recomputed from an independent shorter run.
    short = flowlin.gradient_descent(net, problem, 0.01, 200, saveat=[2.0])
    np.testing.assert_allclose(traj.excess_loss[2], short.excess_loss[0], rtol=1e-12)
    np.testing.assert_allclose(
        short.excess_loss[0],
        0.5 * jnp.sum(problem.error(short.final_network.product) ** 2),
        rtol=1e-12,
    )


def test_stop_at_loss(setup):
    problem, net = setup
    thr = 1e-5
    traj = flowlin.gradient_descent(net, problem, 0.01, 5000, stop_at_loss=thr)
    k = int(traj.num_steps)
    assert 0 < k < 5000 and bool(traj.reached_threshold) and bool(traj.succeeded)
    assert float(traj.final_values["excess_loss"]) <= thr
    before = flowlin.gradient_descent(net, problem, 0.01, k - 1)
    assert float(before.final_values["excess_loss"]) > thr  # the first crossing
    finite = np.isfinite(np.asarray(traj.ts))
    assert not finite.all() and np.all(np.asarray(traj.iterations)[finite] <= k)
    assert np.all(np.isinf(np.asarray(traj.loss)[~finite]))
    # Saved networks after the stop are inf too, as the flow's; before it, the iterates.
    saved = flowlin.gradient_descent(
        net, problem, 0.01, 5000, stop_at_loss=thr, saveat=flowlin.SaveAt(networks=True)
    )
    assert np.all(np.isinf(np.asarray(saved.networks.W1)[~finite]))
    assert np.all(np.isfinite(np.asarray(saved.networks.W1)[finite]))


def test_divergence_is_reported(setup):
    problem, net = setup
    traj = flowlin.gradient_descent(net, problem, 50.0, 200)
    assert traj.result == flowlin.RESULTS.diverged
    assert not bool(traj.succeeded)
    assert int(traj.num_steps) < 200


def test_any_optax_optimizer_matches_hand_written_momentum(setup):
    problem, net = setup
    lr, mu, steps = 0.02, 0.9, 60
    traj = flowlin.gradient_descent(net, problem, lr, steps, optimizer=optax.sgd(lr, momentum=mu))
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    W1, W2 = np.array(net.W1), np.array(net.W2)
    m1, m2 = np.zeros_like(W1), np.zeros_like(W2)
    for _ in range(steps):  # heavy ball on ½‖Y - XW1ᵀW2ᵀ‖²
        R = Y - X @ W1.T @ W2.T
        g1, g2 = -W2.T @ R.T @ X, -R.T @ X @ W1.T
        m1, m2 = g1 + mu * m1, g2 + mu * m2
        W1, W2 = W1 - lr * m1, W2 - lr * m2
    np.testing.assert_allclose(traj.final_network.W1, W1, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(traj.final_network.W2, W2, rtol=1e-11, atol=1e-14)


def test_descent_errors(setup):
    problem, net = setup
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        flowlin.gradient_descent(net, problem, 0.0, 10)
    with pytest.raises(ValueError, match="steps must be a non-negative integer"):
        flowlin.gradient_descent(net, problem, 0.1, -3)
    with pytest.raises(ValueError, match="stop_at_loss must be finite and > 0"):
        flowlin.gradient_descent(net, problem, 0.1, 3, stop_at_loss=-1.0)


def test_descent_status_says_whether_it_converged(setup):
    """All steps done with the excess loss still above 1e-3 of its start: `not_converged`
    (usable numbers, not converged); run long enough: `successful`."""
    problem, net = setup[0], setup[1]
    few = flowlin.gradient_descent(net, problem, 0.01, 3)
    assert few.result == flowlin.RESULTS.not_converged
    assert bool(few.succeeded) and not bool(few.converged)
    many = flowlin.gradient_descent(net, problem, 0.01, 2000)
    assert float(many.final_values["excess_loss"]) <= 1e-3 * float(many.excess_loss[0])
    assert many.result == flowlin.RESULTS.successful and bool(many.converged)


def test_flow_theorems_are_not_claimed_for_descent():
    """On a descent run the flow's theorems are not applicable (`reason` 6), not "violated":
    one step of size η changes Λ by O(η²) (NumPy: 8e-6 of its scale after 10⁴ steps at
    η = 1e-3, above the flow's tolerance). The limit identity, which descent keeps (U₂ stays
    put), is checked; for Adam, which moves U₂, it is not. Lemma 1 (about the init) is checked
    as for the flow."""
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    saves = flowlin.SaveAt(
        jnp.linspace(0.0, 10.0, 11),
        diagnostics=("excess_loss", "distance_to_min_norm", "u2_drift", "imbalance_drift"),
    )
    flow = flowlin.check_bounds(
        flowlin.gradient_flow(net, problem, 10.0, saveat=saves), net, problem, alpha=0.5
    )
    gd = flowlin.gradient_descent(net, problem, 1e-3, 10_000, saveat=saves)
    # Independent: Λ = U1ᵀU1 − VᵀV from the weights, in NumPy, moved by far more than round-off.
    Phi1 = np.asarray(problem.Phi1)

    def imbalance(n):
        U1 = np.asarray(n.W1) @ Phi1
        return U1 @ U1.T - np.asarray(n.W2).T @ np.asarray(n.W2)

    drift = np.linalg.norm(imbalance(gd.final_network) - imbalance(net))
    assert drift > 1e-6 * np.linalg.norm(imbalance(net)), drift
    checks = flowlin.check_bounds(gd, net, problem, alpha=0.5)
    for key, c in checks.items():
        if key.startswith("lemma1"):
            assert (int(c.reason), bool(c.holds)) == (int(flow[key].reason), bool(flow[key].holds))
        elif key == "limit_identity":
            assert bool(c.applicable) and bool(c.holds), key
        else:
            assert int(c.reason) == 6 and not bool(c.applicable), (key, int(c.reason))
    adam = flowlin.gradient_descent(net, problem, 0.05, 400, optimizer=optax.adam(0.05),
                                    saveat=saves)  # fmt: skip
    null = np.eye(40) - Phi1 @ Phi1.T  # the projector onto X's null space
    moved = (np.asarray(adam.final_network.W1) - np.asarray(net.W1)) @ null
    assert np.linalg.norm(moved) > 1e-2 * np.linalg.norm(net.W1)
    assert int(flowlin.check_bounds(adam, net, problem)["limit_identity"].reason) == 6


def test_a_loss_that_blew_up_is_diverged_not_unconverged():
    """Five steps at η = 2 take the excess loss from 0.13 to ~8e63 (NumPy below): finite, but
    `diverged` (it was `not_converged`, "the numbers are valid", and its bounds checked)."""
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    run = flowlin.gradient_descent(net, problem, 2.0, 5)
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    W1, W2 = np.asarray(net.W1), np.asarray(net.W2)
    for _ in range(5):
        R = Y - X @ W1.T @ W2.T
        W1, W2 = W1 + 2.0 * (W2.T @ R.T @ X), W2 + 2.0 * (R.T @ X @ W1.T)
    excess = 0.5 * np.sum((Y - X @ W1.T @ W2.T) ** 2) - float(problem.loss_star)
    assert np.isfinite(excess) and excess > 1e50
    np.testing.assert_allclose(float(run.final_values["excess_loss"]), excess, rtol=1e-6)
    assert run.result == flowlin.RESULTS.diverged and not bool(run.succeeded)
    checks = flowlin.check_bounds(run, net, problem)
    assert not any(bool(c.applicable) for c in checks.values())


def test_limit_identity_is_checked_on_a_descent_run_stopped_early():
    """Saves after `stop_at_loss` are inf: they say nothing about U₂, which stayed put (NumPy),
    so the limit identity is still checked, and holds."""
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    saves = flowlin.SaveAt(
        jnp.linspace(0.0, 20.0, 21), diagnostics=("excess_loss", "distance_to_min_norm", "u2_drift")
    )
    run = flowlin.gradient_descent(net, problem, 0.01, 2000, saveat=saves, stop_at_loss=1e-6)
    assert run.result == flowlin.RESULTS.event_occurred and np.isinf(run.u2_drift[-1])
    null = np.eye(40) - np.asarray(problem.Phi1) @ np.asarray(problem.Phi1).T
    moved = (np.asarray(run.final_network.W1) - np.asarray(net.W1)) @ null
    assert np.linalg.norm(moved) < 1e-12 * np.linalg.norm(net.W1)
    check = flowlin.check_bounds(run, net, problem)["limit_identity"]
    assert bool(check.applicable) and bool(check.holds), int(check.reason)


def test_traced_invalid_step_counts_are_a_status_of_their_run_only(setup):
    """Under `vmap` over `steps`, a negative count cannot be refused by name: that run ends
    with `RESULTS.invalid_arguments` and NaN numbers (it read as a success whose times and
    losses were all inf), and the other runs equal their own descents."""
    problem, net = setup
    ts = jnp.array([0.0, 0.01])

    def descend(steps):
        return flowlin.gradient_descent(net, problem, 0.005, steps, saveat=ts)

    batch = jax.vmap(descend)(jnp.array([4, -5, 6]))
    invalid = np.asarray(batch.result == flowlin.RESULTS.invalid_arguments)
    assert invalid.tolist() == [False, True, False]
    assert bool(jnp.all(jnp.isnan(batch.excess_loss[1]))) and not bool(batch.succeeded[1])
    assert bool(jnp.all(jnp.isnan(batch.final_network.W1[1])))
    for i, steps in ((0, 4), (2, 6)):
        alone = descend(steps)
        assert bool(batch.succeeded[i])
        np.testing.assert_allclose(batch.excess_loss[i], alone.excess_loss, rtol=1e-12)
