"""`flowlin.check_bounds`: fixed keys, applicability, detection of a violated bound, early
stops, vmap/jit, and the tightness cases (ICML Theorem 1's envelope is tight for strongly
unbalanced initializations)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin
from flowlin import theory


#: ICML Lemma 1 / Theorem 2 setting: whitened n = 4, D = 6, m = 1; h = 400 > h0 ≈ 323 (δ = 0.05).
N, D, M, H, ALPHA = 4, 6, 1, 400, 0.5
T1 = 20.0


def _whitened(seed, n, D, m):
    rng = np.random.default_rng(seed)
    A, _, Bt = np.linalg.svd(rng.normal(size=(n, D)), full_matrices=False)
    return flowlin.Problem(A @ Bt, rng.normal(size=(n, m)))


def _nets(seed, count, D, m, h, std1, std2):
    """`count` Gaussian inits (as `flowlin.init.gaussian`), stacked; NumPy draws (every new
    shape of `jax.random.normal` costs seconds of float64 compilation on CPU)."""
    rng = np.random.default_rng(seed)
    std1 = np.broadcast_to(std1, (count,))[:, None, None]
    std2 = np.broadcast_to(std2, (count,))[:, None, None]
    return jax.vmap(flowlin.LinearNetwork)(
        jnp.asarray(std1 * rng.normal(size=(count, h, D))),
        jnp.asarray(std2 * rng.normal(size=(count, m, h))),
    )


def _index(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@eqx.filter_jit
def _solve_and_check(nets, problem, claimed, t1, stop_at_loss):
    """Solve from `nets` (vmapped) and check the bounds as if they had started at `claimed`."""

    def one(net, claimed):
        traj = flowlin.gradient_flow(net, problem, t1, stop_at_loss=stop_at_loss)
        return traj, flowlin.check_bounds(traj, claimed, problem, alpha=ALPHA)

    return eqx.filter_vmap(one)(nets, claimed)


@pytest.fixture(scope="module")
def wide():
    """Three N(0, 1/h) inits and two others, solved once (one compilation)."""
    problem = _whitened(0, N, D, M)
    std = H**-ALPHA
    nets = _nets(
        1, 5, D, M, H, [std, std, std, 3 * std, 0.2 * std], [std, std, std, 0.2 * std, 3 * std]
    )
    trajs, checks = _solve_and_check(nets, problem, nets, T1, None)
    return problem, nets, trajs, checks


def test_keys_all_applicable_and_hold(wide):
    problem, nets, trajs, checks = wide
    assert set(checks) == set(flowlin.CHECK_KEYS)  # (jit returns dicts with sorted keys)
    assert bool(theory.wide_network_bound(H, ALPHA, 0.05, problem).theorem2_applies)
    for key, check in checks.items():
        assert isinstance(check, flowlin.BoundCheck)
        for field in (check.holds, check.applicable, check.worst_slack, check.tightness):
            assert field.shape == (5,)
        # The first three are the paper's N(0, 1/h) init: every bound applies there.
        assert bool(jnp.all(check.applicable[:3])), key
        assert bool(jnp.all(check.holds[:3])), (key, check.worst_slack)
        np.testing.assert_array_equal(check.holds, check.applicable & (check.worst_slack >= 0))
        # BoundCheck's NaN contract: worst_slack is NaN exactly where the bound is not
        # applicable (an applicable check always has a number: NaN there would be a bug that
        # the line above reads as a failure).
        np.testing.assert_array_equal(np.isnan(check.worst_slack), ~np.asarray(check.applicable))
        # And `reason` says why: 0 ("checked") exactly where the bound was checked.
        np.testing.assert_array_equal(
            np.asarray(check.reason) == 0, np.asarray(check.applicable), err_msg=key
        )
    # Theorem 2's constants are loose: orders of magnitude above the observed distance.
    assert bool(jnp.all(checks["distance_wide_network"].tightness[:3] < 1e-2))


def test_per_instance_equals_batched(wide):
    """vmap changes nothing: the unbatched check of one trajectory gives the same numbers."""
    problem, nets, trajs, checks = wide
    single = flowlin.check_bounds(_index(trajs, 1), _index(nets, 1), problem, alpha=ALPHA)
    for key in checks:
        for name in ("holds", "applicable", "worst_slack", "tightness"):
            # 1e-6: limit_identity compares two converged (~1e-9) residuals, each computed with
            # O(1) cancellation, so batched and unbatched round-off differ at ~1e-8 relative.
            np.testing.assert_allclose(
                getattr(single[key], name), getattr(checks[key], name)[1], rtol=1e-6, err_msg=key
            )
    with pytest.raises(ValueError, match="batched"):
        flowlin.check_bounds(trajs, _index(nets, 0), problem)


def test_a_wrong_init_is_caught(wide):
    """Checking a trajectory against an initialization or data it did not start from is
    refused (its recorded start differs); and a trajectory that does not follow the flow it
    claims violates the bounds: the checks can fail."""
    problem, nets, trajs, _ = wide
    traj = _index(trajs, 0)
    # Another scale or seed of the init, or another draw of the data of the same shape.
    for claimed, other in (
        (jax.tree.map(lambda x: 10 * x, _index(nets, 0)), problem),
        (_index(nets, 1), problem),
        (_index(nets, 0), _whitened(7, N, D, M)),
    ):
        with pytest.raises(ValueError, match="did not start from this init and problem"):
            flowlin.check_bounds(traj, claimed, other, alpha=ALPHA)
    # The same for gradient descent's trajectories.
    descent = flowlin.gradient_descent(_index(nets, 0), problem, 0.01, 5)
    with pytest.raises(ValueError, match="did not start from this init and problem"):
        flowlin.check_bounds(descent, _index(nets, 1), problem, alpha=ALPHA)
    # Under vmap (traced, as in a sweep), nothing can be raised: every bound of a mismatched
    # row is not applicable, with the reason; the matching (middle) row is unaffected.
    swapped = jax.tree.map(lambda x: x[::-1], nets)
    checks = eqx.filter_vmap(lambda t, n: flowlin.check_bounds(t, n, problem))(trajs, swapped)
    reason = flowlin.BoundCheck.REASONS.index(
        "the trajectory did not start from this init and problem (traced check)"
    )
    others = np.array([0, 1, 3, 4])
    for key, c in checks.items():
        np.testing.assert_array_equal(np.asarray(c.reason)[others], reason, err_msg=key)
        assert not np.any(np.asarray(c.applicable)[others]), key
    assert int(checks["loss_imbalance"].reason[2]) == 0 and bool(checks["loss_imbalance"].holds[2])
    # A trajectory whose losses decay 100x slower than the flow's (excess loss raised to the
    # power 1/100 of its decay) breaks Theorem 1's promise.
    e0 = traj.excess_loss[0]
    slow = eqx.tree_at(
        lambda t: (t.excess_loss, t.final_values),
        traj,
        (e0 * (traj.excess_loss / e0) ** 0.01, {**traj.final_values, "excess_loss": e0}),
    )
    checks = flowlin.check_bounds(slow, _index(nets, 0), problem, alpha=ALPHA)
    for key in ("loss_imbalance", "loss_margin"):
        assert bool(checks[key].applicable) and not bool(checks[key].holds), key
        assert checks[key].worst_slack < -1, key
    # Final weights that are not the flow's: the limit identity fails.
    moved = eqx.tree_at(lambda t: t.final_network.W1, traj, 1.1 * traj.final_network.W1)
    checks = flowlin.check_bounds(moved, _index(nets, 0), problem, alpha=ALPHA)
    assert bool(checks["limit_identity"].applicable)
    assert not bool(checks["limit_identity"].holds)


def test_not_applicable_is_explicit(wide):
    problem, nets, trajs, checks = wide
    net, traj = _index(nets, 0), _index(trajs, 0)
    # Without alpha, the wide-network checks do not apply (and do not hold).
    plain = flowlin.check_bounds(traj, net, problem)
    for key in ("distance_wide_network", "lemma1_imbalance", "lemma1_residual", "lemma1_product"):
        assert not bool(plain[key].applicable) and not bool(plain[key].holds)
        assert np.isnan(plain[key].worst_slack) and np.isnan(plain[key].tightness)
    # A GramInit gives the same checks, except the limit identity (it needs U2(0) itself).
    gram = flowlin.init.gram_init(net, problem)
    from_gram = flowlin.check_bounds(traj, gram, problem, width=H, alpha=ALPHA)
    assert not bool(from_gram["limit_identity"].applicable)
    for key in flowlin.CHECK_KEYS:
        if key != "limit_identity":
            np.testing.assert_allclose(
                from_gram[key].worst_slack, checks[key].worst_slack[0], rtol=1e-7, err_msg=key
            )
    # Below h0 (a width of 50 claimed), Lemma 1 and Theorem 2 do not apply.
    narrow = flowlin.check_bounds(traj, gram, problem, width=50, alpha=ALPHA)
    assert not bool(narrow["lemma1_imbalance"].applicable)
    assert not bool(narrow["distance_wide_network"].applicable)


def test_vacuous_bounds_are_not_applicable():
    """A bound that says nothing is not reported as held, although its inequality is then
    satisfied vacuously: at width h = 1 < r = m = 2, c = 0, so ICML Theorem 1's rate is 0 (its
    envelope is the constant L(0) - L*, which the flow never exceeds), the deterministic
    distance bound is inf, and v2 Proposition 1's bound is 0 up to round-off."""
    problem = _whitened(7, 2, 5, 2)
    net = _index(_nets(8, 1, 5, 2, 1, 0.5, 0.5), 0)
    assert float(theory.rate_imbalance(net, problem)) == 0
    assert np.isinf(theory.distance_bound(net, problem))
    traj = flowlin.gradient_flow(net, problem, 10.0)
    checks = flowlin.check_bounds(traj, net, problem)
    for key in ("loss_imbalance", "distance_deterministic", "rate_instantaneous"):
        assert not bool(checks[key].applicable) and not bool(checks[key].holds), key
        assert np.isnan(checks[key].worst_slack) and np.isnan(checks[key].tightness), key
    # The bounds that do say something here apply and hold.
    for key in ("imbalance_conserved", "loss_margin_local", "distance_a_posteriori"):
        assert bool(checks[key].applicable) and bool(checks[key].holds), key


def test_missing_diagnostics_and_early_stop():
    """Unsaved diagnostics make their checks not applicable; saves after an early stop (inf,
    as `Trajectory` documents) are ignored."""
    problem = _whitened(3, 3, 7, 2)
    net = _index(_nets(4, 1, 7, 2, 6, 0.5, 0.5), 0)
    saveat = flowlin.SaveAt(ts=jnp.linspace(0, 30.0, 31), diagnostics=("excess_loss",))
    traj = flowlin.gradient_flow(net, problem, 30.0, saveat=saveat)
    checks = flowlin.check_bounds(traj, net, problem)
    for key in ("loss_imbalance", "loss_margin", "loss_margin_local", "limit_identity"):
        assert bool(checks[key].applicable) and bool(checks[key].holds), key
        assert np.isfinite(checks[key].worst_slack) and np.isfinite(checks[key].tightness)
    for key in (
        "imbalance_conserved",
        "rate_instantaneous",
        "distance_deterministic",
        "distance_a_posteriori",
    ):
        assert not bool(checks[key].applicable) and not bool(checks[key].holds), key

    # The same run as if it had stopped at t = 5 (`stop_at_loss`): later saves are inf.
    # (Built by hand so that the test does not depend on the event's root find.)
    k = 5
    after = jnp.arange(traj.ts.shape[0]) > k
    stopped = eqx.tree_at(
        lambda t: (t.ts, t.excess_loss, t.final_time, t.final_values, t.result),
        traj,
        (
            jnp.where(after, jnp.inf, traj.ts),
            jnp.where(after, jnp.inf, traj.excess_loss),
            traj.ts[k],
            {"excess_loss": traj.excess_loss[k]},
            flowlin.RESULTS.event_occurred,
        ),
    )
    short = flowlin.check_bounds(stopped, net, problem)
    for key in ("loss_imbalance", "loss_margin", "loss_margin_local"):
        assert bool(short[key].holds), key
        assert np.isfinite(short[key].worst_slack) and np.isfinite(short[key].tightness)
        # only the times before the stop count: the worst slack can only be larger
        assert short[key].worst_slack >= checks[key].worst_slack - 1e-12, key
    # A bound violated only after the stop would not be seen: make the stopped run's
    # late entries huge instead of inf and the check fails.
    corrupted = eqx.tree_at(
        lambda t: t.excess_loss, stopped, jnp.where(after, 1e3, traj.excess_loss)
    )
    corrupted = eqx.tree_at(lambda t: t.ts, corrupted, traj.ts)
    assert not bool(flowlin.check_bounds(corrupted, net, problem)["loss_imbalance"].holds)
    # And a real early stop (default tolerances): the stopped run is a success whose checks
    # apply and hold.
    real = flowlin.gradient_flow(net, problem, 30.0, saveat=saveat, stop_at_loss=1e-8)
    assert bool(real.reached_threshold) and bool(real.succeeded)
    real_checks = flowlin.check_bounds(real, net, problem)
    for key in ("loss_imbalance", "loss_margin", "loss_margin_local"):
        assert bool(real_checks[key].applicable) and bool(real_checks[key].holds), key


@pytest.mark.parametrize(
    "case",
    [
        # V-heavy (λm(−Λ) dominant), m = 1: the observed rate is 2(λ(U1U1ᵀ) + ‖V‖²) with
        # ‖V‖² ≈ λ1(−Λ) = λm(−Λ), so Theorem 1 is almost exact.
        ("v_heavy", 3, 12, 1, 60, 0.005, 0.6),
        # U-heavy (λr(Λ) dominant): late-time decay along the weakest direction of U1U1ᵀ,
        # whose eigenvalue is ≈ λr(Λ). (Same shapes as above: one compilation.)
        ("u_heavy", 3, 12, 1, 60, 0.6, 0.005),
    ],
    ids=lambda c: c[0],
)
def test_theorem1_is_tight_for_unbalanced_inits(case):
    name, n, D, m, h, std1, std2 = case
    problem = _whitened(5, n, D, m)
    net = _index(_nets(6, 1, D, m, h, std1, std2), 0)
    rho = float(theory.rate_imbalance(net, problem))
    t1 = 30.0 / rho
    ts = jnp.linspace(0.0, t1, 61)
    traj = flowlin.gradient_flow(net, problem, t1, saveat=ts)
    ex = np.asarray(traj.excess_loss)
    # Late times: the excess loss between 1e-6 and 1e-12 of its start (after the transient,
    # above the solver's noise floor).
    late = np.flatnonzero((ex < 1e-6 * ex[0]) & (ex > 1e-12 * ex[0]))
    i, j = late[0], late[-1]
    slope = -(np.log(ex[j]) - np.log(ex[i])) / float(ts[j] - ts[i])
    ratio = slope / rho
    print(f"{name}: late-time slope / (2 λr(Σ) c) = {ratio:.4f}")
    assert 1 <= ratio < 1.1, ratio
    checks = flowlin.check_bounds(traj, net, problem)
    for key in ("loss_imbalance", "loss_margin", "loss_margin_local", "rate_instantaneous"):
        assert bool(checks[key].holds), key
    # The guaranteed fraction of the observed log-decay, from t = 0 to the last resolved time,
    # and the guaranteed vs observed rate on the last interval.
    print(
        f"{name}: tightness loss_imbalance {float(checks['loss_imbalance'].tightness):.4f}, "
        f"loss_margin_local {float(checks['loss_margin_local'].tightness):.4f}, "
        f"rate_instantaneous {float(checks['rate_instantaneous'].tightness):.4f}"
    )
    # (loss_imbalance's tightness measures from t = 0, so it includes the early transient in
    # which the loss falls faster than the late rate; the last interval is the late-time one.)
    assert checks["loss_margin_local"].tightness > 0.9


@pytest.mark.parametrize("widths", [(8,), (8, 8)], ids=["two_layers", "three_layers"])
def test_an_init_at_the_min_norm_solution_is_its_own_start(widths):
    """E(0) = 0: the recorded start and the claimed one hold two round-offs of zero, which
    differ entirely; they match relative to what cancels (‖Ỹ‖), and other data still does not
    (a 1e-6 change of Y)."""
    problem = flowlin.problems.gaussian(jax.random.key(0), n=6, D=12, m=1)  # n < D: L* = 0
    net = flowlin.init.deep_balanced(jax.random.key(2), problem.min_norm, widths=widths)
    if len(widths) == 1:
        net = flowlin.LinearNetwork(*net.weights)
    traj = flowlin.gradient_flow(net, problem, 5.0)
    assert float(traj.init_fingerprint[-2]) < 1e-28  # ½‖E(0)‖²: round-off of zero
    checks = flowlin.check_bounds(traj, net, problem)
    assert bool(checks["limit_identity"].holds)  # at W* already: the identity is exact
    other = flowlin.Problem(problem.X, problem.Y * (1 + 1e-6))
    with pytest.raises(ValueError, match="did not start from this init and problem"):
        flowlin.check_bounds(traj, net, other)


def test_a_new_width_recompiles_only_what_reads_the_weights(caplog):
    """Only `limit_identity` and the init's statistics read the weights: at a new width
    check_bounds compiles those two small programs, not the other checks again (they took
    ~1.5 s per width), and it gives what one program traced around the whole call gives."""
    import logging

    problem = _whitened(3, N, D, M)
    key = jax.random.key(5)

    def solve(h):
        net = flowlin.init.paper(key, D, M, h, ALPHA)
        return flowlin.gradient_flow(net, problem, 5.0, method=flowlin.Gram()), net

    traj, net = solve(30)
    flowlin.check_bounds(traj, net, problem, width=30, alpha=ALPHA)
    traj, net = solve(60)
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        checks = flowlin.check_bounds(traj, net, problem, width=60, alpha=ALPHA)
    compiled = {r.getMessage().split()[1] for r in caplog.records if "Compiling " in r.message}
    assert {"jit(_network_statistics)", "jit(_check_limit_identity)"} <= compiled
    assert not compiled & {"jit(_check)", "jit(_merge)"}, compiled
    traced = eqx.filter_jit(flowlin.check_bounds)(traj, net, problem, width=60, alpha=ALPHA)
    for name, c in checks.items():
        assert bool(c.applicable) == bool(traced[name].applicable), name
        assert bool(c.holds) == bool(traced[name].holds), name
        np.testing.assert_allclose(c.worst_slack, traced[name].worst_slack, rtol=1e-9, atol=1e-12)
    assert bool(checks["limit_identity"].applicable) and bool(checks["limit_identity"].holds)
