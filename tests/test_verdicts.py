"""Statuses say what happened, at every scale of the init: a tiny init (entries 1e-8, the
papers' small-init regime) still on its plateau at t1 is `not_converged` with true verdicts
(no false conservation violation), and converges given time; a large init (entries 30) leaves
t = 0 (the first step follows the vector field's scale), runs out of steps as `stiff` (not as
a plain step budget), and with `stop_at_loss` converges with every checked bound holding. The
status reaches the dataset and `summarize_bounds`."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin
from flowlin import _dataset as schema


N, D, M, H = 6, 10, 1, 8
TINY, LARGE = 1e-8, 30.0
#: The statuses and verdicts asserted; both methods, one compilation each per t1 setting.
METHODS = (flowlin.FullWeights(), flowlin.Gram())


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    A, _, Bt = np.linalg.svd(rng.normal(size=(N, D)), full_matrices=False)
    return flowlin.Problem(A @ Bt, rng.normal(size=(N, M)))


def _net(std):
    rng = np.random.default_rng(1)
    return flowlin.LinearNetwork(std * rng.normal(size=(H, D)), std * rng.normal(size=(M, H)))


def _violated(checks):
    return [k for k, c in checks.items() if bool(c.applicable) and not bool(c.holds)]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_tiny_init_plateau_then_convergence(problem, method):
    net = _net(TINY)
    # Escaping a 1e-8 init takes ~log(1e16)/(2σ) ≈ 20 time units here: at t1 = 5 the run is
    # still on its plateau.
    plateau = flowlin.gradient_flow(net, problem, 5.0, method=method)
    assert plateau.result == flowlin.RESULTS.not_converged
    assert bool(plateau.succeeded) and not bool(plateau.converged)
    assert float(plateau.final_values["excess_loss"]) > 0.5 * float(plateau.excess_loss[0])
    checks = flowlin.check_bounds(plateau, net, problem)
    assert _violated(checks) == []
    assert bool(checks["imbalance_conserved"].applicable)  # checked, and held
    done = flowlin.gradient_flow(net, problem, 80.0, method=method)
    assert done.result == flowlin.RESULTS.successful and bool(done.converged)
    checks = flowlin.check_bounds(done, net, problem)
    assert _violated(checks) == []
    for key in ("imbalance_conserved", "loss_imbalance", "loss_margin", "limit_identity"):
        assert bool(checks[key].holds), key
    # The status reaches the dataset and the summary.
    ds = schema.trajectory_dataset(["plateau", "done"], [plateau, done], [net, net], problem)
    np.testing.assert_array_equal(ds[schema.CONVERGED].values, [False, True])
    np.testing.assert_array_equal(ds[schema.SUCCEEDED].values, [True, True])
    summary = flowlin.summarize_bounds(ds)
    assert (summary.failed, summary.not_converged) == (0, 1)
    assert "1 reached t1 without converging" in str(summary)
    assert summary.statuses == {"successful": 1, "not_converged": 1}


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_large_init_is_stiff_not_stuck(problem, method):
    net = _net(LARGE)
    traj = flowlin.gradient_flow(net, problem, 25.0, method=method, max_steps=500)
    # It left t = 0 (diffrax's first step of 0.01 overflowed and stalled it there for good).
    assert float(traj.final_time) > 0
    assert traj.result == flowlin.RESULTS.stiff
    assert "stiff" in str(traj.result) and "stop_at_loss" in str(traj.result)
    checks = flowlin.check_bounds(traj, net, problem)
    for c in checks.values():  # nothing claimed about a run that did not finish
        assert not bool(c.applicable) and not bool(c.holds)
    assert int(checks["loss_imbalance"].reason) == flowlin.BoundCheck.REASONS.index(
        "run did not succeed"
    )
    # With a loss threshold the run ends (converged) long before the step budget does.
    stop = flowlin.gradient_flow(net, problem, 25.0, method=method, stop_at_loss=1e-8)
    assert stop.result == flowlin.RESULTS.event_occurred and bool(stop.converged)
    checks = flowlin.check_bounds(stop, net, problem)
    assert _violated(checks) == []
    for key in ("imbalance_conserved", "distance_a_posteriori", "limit_identity"):
        assert bool(checks[key].holds), key
    # Every save time after the stop is inf: no consecutive pair for the local form.
    assert int(checks["loss_margin_local"].reason) == 2


def test_gram_init_fingerprint(problem):
    """A `GramInit` start is recognised too, and another one refused."""
    net = _net(0.3)
    gram = flowlin.init.gram_init(net, problem)
    traj = flowlin.gradient_flow(gram, problem, 10.0, method=flowlin.Gram(), saveat=[0.0, 10.0])
    assert _violated(flowlin.check_bounds(traj, gram, problem, width=H)) == []
    other = flowlin.GramInit(Q=gram.Q * 1.01, K=gram.K)
    with pytest.raises(ValueError, match="did not start from this init"):
        flowlin.check_bounds(traj, other, problem, width=H)
    assert traj.init_fingerprint.shape == ((problem.rank + M) ** 2 + 2,)
    assert jnp.isfinite(traj.state_tolerance) and float(traj.solver_rtol) == 1e-8


def test_drift_of_a_diverged_state_is_nan_not_zero():
    """`safe_norm` keeps a zero derivative at 0 but must not turn NaN into 0: a diverged run's
    imbalance drift would otherwise read as perfectly conserved."""
    import jax.numpy as jnp

    from flowlin._diagnostics import safe_norm

    assert float(safe_norm(jnp.zeros(3))) == 0.0
    assert float(safe_norm(jnp.array([3.0, 4.0]))) == 5.0
    assert bool(jnp.isnan(safe_norm(jnp.array([1.0, jnp.nan]))))


def test_an_implicit_solver_out_of_steps_is_not_called_stiff(problem):
    """`stiff` says an explicit solver's step is held down by stability, and advises an
    implicit solver. Kvaerno5 (implicit) from the same large init, out of its 20 steps, was
    called `stiff` too, and told to use an implicit solver; it is `max_steps_reached`."""
    import diffrax as dfx

    net = _net(LARGE)
    short = flowlin.gradient_flow(net, problem, 25.0, solver=dfx.Kvaerno5(), max_steps=20)
    assert short.result == flowlin.RESULTS.max_steps_reached
    explicit = flowlin.gradient_flow(net, problem, 25.0, max_steps=20)
    assert explicit.result == flowlin.RESULTS.stiff  # the same budget, explicit: stiff


def test_a_check_prints_its_verdict(problem):
    """`print(check)` showed the fields' shapes only (`holds=bool[]`): it now says the verdict,
    which agrees with the fields, and why a bound was not checked."""
    net = _net(0.3)
    ok = flowlin.gradient_flow(net, problem, 30.0, method=flowlin.Gram())
    failed = flowlin.gradient_flow(net, problem, 30.0, method=flowlin.Gram(), max_steps=3)
    for traj in (ok, failed):
        for name, c in flowlin.check_bounds(traj, net, problem, alpha=0.5).items():
            words = c.verdict()
            if bool(c.applicable):
                assert words == ("held" if bool(c.holds) else "violated"), name
            elif int(c.reason) == 1:
                assert words == "not applicable: hypotheses do not hold", name
            else:
                assert words == "not checked: " + flowlin.BoundCheck.REASONS[int(c.reason)]
            assert repr(c).startswith(f"BoundCheck({words}") and "bool[]" not in repr(c)
    # A failed run: nothing held or violated; what the init's hypotheses rule out still says so.
    failed_checks = flowlin.check_bounds(failed, net, problem, alpha=0.5)
    assert {c.verdict() for c in failed_checks.values()} == {
        "not checked: run did not succeed",
        "not applicable: hypotheses do not hold",
    }
    held = flowlin.check_bounds(ok, net, problem)["loss_imbalance"]
    assert held.verdict() == "held" and "worst_slack=" in repr(held)
    batched = jax.tree.map(lambda x: jnp.stack([x, x]), held)
    with pytest.raises(ValueError, match="one concrete check"):
        batched.verdict()
    assert "bool[2]" in repr(batched)  # a batch prints its shapes


def test_a_trajectory_checked_against_its_start_in_another_dtype_says_so():
    """A float32 run checked against the float64 init and problem it was cast from: refused
    (their statistics differ beyond float32's tolerance), and the message names the dtypes (it
    said only "pass the same seed and data", which they were)."""
    import jax

    problem = flowlin.problems.gaussian(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), 40, 1, 50, 0.5)
    p32 = flowlin.Problem(problem.X.astype(jnp.float32), problem.Y.astype(jnp.float32))
    net32 = jax.tree.map(lambda x: x.astype(jnp.float32), net)
    traj = flowlin.gradient_flow(net32, p32, 10.0, method=flowlin.Gram())
    with pytest.raises(ValueError, match="ran in float32 and the init/problem given are float64"):
        flowlin.check_bounds(traj, net, problem)
    assert flowlin.check_bounds(traj, net32, p32)["loss_imbalance"].verdict() == "held"


def test_status_names_the_result(problem):
    """`Trajectory.status` names `result` (printing `result` showed `RESULTS<>` for a
    successful run): the name of the RESULTS member the run's result equals, one per run of a
    batch."""
    import jax

    net = _net(0.3)
    for kw in (dict(t1=30.0), dict(t1=0.05), dict(t1=30.0, max_steps=3)):
        traj = flowlin.gradient_flow(net, problem, method=flowlin.Gram(), **kw)
        (name,) = [
            n for n in flowlin._results.STATUS_NAMES if traj.result == getattr(flowlin.RESULTS, n)
        ]
        assert traj.status == name
    assert {
        flowlin.gradient_flow(net, problem, t, method=flowlin.Gram()).status for t in (30.0, 0.05)
    } == {"successful", "not_converged"}
    batch = jax.vmap(
        lambda s: flowlin.gradient_flow(_net(1.0), problem, 30.0 * s, method=flowlin.Gram())
    )(jnp.array([1.0, 0.002]))
    assert list(batch.status) == ["successful", "not_converged"]


def test_verdict_words_for_stored_codes():
    """A depth's unrecorded bound (reason −1, as `flowlin.sweep` stores it) read as reason 6's
    text (gradient descent), and an applicable check with a NaN slack as "violated"."""
    nan = float("nan")

    def check(applicable, holds, slack, reason):
        return flowlin.BoundCheck(*map(jnp.asarray, (holds, applicable, slack, nan, 0, reason)))

    assert check(False, False, nan, -1).verdict() == "not checked: not recorded at this depth"
    assert check(False, False, nan, 99).verdict() == "not checked: unknown reason code 99"
    assert check(True, False, nan, 0).verdict() == "not checked: NaN slack"
    assert check(True, False, -0.1, 0).verdict() == "violated"
    assert repr(check(True, True, 0.5, 0)) == "BoundCheck(held, worst_slack=0.5)"
    # A slack of −inf is a bound that failed outright (Lemma 1's at a too-narrow width sets it):
    # a violation, as summarize_bounds and all_bounds_held count it, not a NaN.
    assert check(True, False, -float("inf"), 0).verdict() == "violated"


_ENVELOPES = ("loss_imbalance", "loss_margin", "loss_margin_local")


def test_weights_far_larger_than_their_product_do_not_fake_a_violated_envelope():
    """Two pairs of units whose contributions to W2W1 cancel (weights 20, product ~1): the
    default float64 solve floors ‖E‖ at its own error (excess loss ~1e-11), which a noise level
    proportional to ‖E(0)‖ read as a violated loss envelope. Independent truth: the same flow
    solved at rtol 1e-12 goes on down past that floor (to ≤ 1e-16), so the floor was the
    solver's. The checks now allow for what the solver's error moves E by (2 rtol·‖V‖‖W1‖):
    not violated."""
    rng = np.random.default_rng(3)
    n, d, m, h, big = 3, 6, 1, 12, 20.0
    problem = flowlin.Problem(rng.standard_normal((n, d)), rng.standard_normal((n, m)))
    W1, W2 = rng.standard_normal((h, d)) * 0.3, rng.standard_normal((m, h)) * 0.3
    a = rng.standard_normal(d)
    a /= np.linalg.norm(a)
    for i in (0, 2):
        W1[i] = W1[i + 1] = big * a
        W2[0, i], W2[0, i + 1] = big, -big
    net = flowlin.LinearNetwork(W1, W2)
    default = flowlin.gradient_flow(net, problem, 8.0)
    tight = flowlin.gradient_flow(net, problem, 8.0, rtol=1e-12, atol=1e-14)
    floor = float(np.max(np.asarray(default.excess_loss)[-20:]))
    assert floor > 1e-13 and float(tight.final_values["excess_loss"]) < 1e-3 * floor
    checks = flowlin.check_bounds(default, net, problem)
    assert not _violated({k: checks[k] for k in _ENVELOPES})


def _unbalanced(big, dtype):
    """Whitened data (2 × 5), Ỹ = (0, 1e-3); U1 with one direction of size `big` beside V of
    1e-4, hidden units rotated at random."""
    rng = np.random.default_rng(0)
    d, h = 5, 4
    Qd, _ = np.linalg.qr(rng.standard_normal((d, d)))
    X, Y = Qd[:2], np.array([[0.0], [1e-3]])
    U = np.zeros((h, d))
    U[0], U[1] = big * Qd[0], Qd[1]
    V = np.zeros((1, h))
    V[0, 1] = 1e-4
    Oh, _ = np.linalg.qr(rng.standard_normal((h, h)))
    problem = flowlin.Problem(X.astype(dtype), Y.astype(dtype))
    return problem, flowlin.LinearNetwork((Oh @ U).astype(dtype), (V @ Oh.T).astype(dtype))


def test_tolerances_below_what_a_run_resolves_are_raised_with_a_warning():
    """check_bounds(rtol=1e-5, atol=1e-5) on a float32 run (which resolves ~1.2e-3) read the
    loss envelope as violated, and rtol = atol = 0 the limit identity too, where float64 holds.
    Such tolerances are now raised to what the run resolves, saying so."""
    problem64, net64 = _unbalanced(3.0, np.float64)
    truth = flowlin.check_bounds(flowlin.gradient_flow(net64, problem64, 8.0), net64, problem64)
    assert not _violated(truth)
    problem, net = _unbalanced(3.0, np.float32)
    traj = flowlin.gradient_flow(net, problem, 8.0)
    for tol in (1e-5, 0.0):
        with pytest.warns(UserWarning, match="below what this run can resolve"):
            checks = flowlin.check_bounds(traj, net, problem, rtol=tol, atol=tol)
        assert not _violated(checks), tol
    with warnings.catch_warnings():  # a tolerance the run resolves: used as given, no warning
        warnings.simplefilter("error")
        flowlin.check_bounds(traj, net, problem, rtol=1e-2, atol=1e-2)


def test_float32_envelopes_of_an_unbalanced_init_agree_with_float64():
    """U1 with one direction of size 30 beside V of 1e-4 (whitened data, Ỹ = (0, 1e-3)): float32
    read the loss envelopes as violated (its ‖E‖ off by ~3e-6 through ‖U1‖·δV, above a noise
    level of 1.2e-3·(‖E(0)‖ + ‖Ỹ‖)). The same weights in float64 hold, with a margin; float32
    now holds too (or says it cannot check), never violated."""
    for method in METHODS:
        verdicts = {}
        for dtype in (np.float64, np.float32):
            problem, net = _unbalanced(30.0, dtype)
            traj = flowlin.gradient_flow(net, problem, 8.0, method=method)
            checks = flowlin.check_bounds(traj, net, problem)
            verdicts[dtype] = {k: checks[k] for k in _ENVELOPES}
        assert all(bool(c.holds) for c in verdicts[np.float64].values()), method.name
        assert not _violated(verdicts[np.float32]), method.name


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
def test_a_rate_where_the_error_underflowed_is_not_checked(method):
    """A one-unit network on Y = 0 whose ‖E‖² underflows to 0 before t1 (atol 1e-300): the saved
    rate is then 0/0 = 0, which read as a violated Proposition 1 (slack −inf). Those times are
    now excluded; at the resolved ones the bound holds, as the closed-form scalar flow says
    (the rate tends to 2(u² + v²) ≥ the bound)."""
    problem = flowlin.Problem(np.array([[1.0, 0.0, 0.0]]), np.array([[0.0]]))
    net = flowlin.LinearNetwork(np.array([[3.0, 0.0, 0.5]]), np.array([[0.3]]))
    traj = flowlin.gradient_flow(net, problem, 60.0, method=method, atol=1e-300)
    assert float(np.min(np.asarray(traj.excess_loss))) == 0.0  # it did underflow
    rate = flowlin.check_bounds(traj, net, problem)["rate_instantaneous"]
    assert bool(rate.applicable) and bool(rate.holds), rate
    assert int(rate.excluded) > 0


def test_the_deep_noise_floor_covers_what_the_two_layer_one_does():
    """The same weights as a depth-2 `DeepLinearNetwork` and as a `LinearNetwork`, on data of
    scale 30 (√λ1(Σ) ≈ 35): E = Ỹ − Σ^½Φ1ᵀWᵀ carries Σ^½ at any depth, so the deep checks'
    solver-error floor (the generic bound, 2‖y‖τ) must be at least the two-layer one (the
    block bound, tighter): it lacked the factor √λ1(Σ) and was 35 times below it."""
    from flowlin._bounds import Observed
    from flowlin._deep_bounds import _observed
    from flowlin.theory._statistics import InitStatistics

    rng = np.random.default_rng(4)
    problem = flowlin.Problem(30 * rng.standard_normal((3, 6)), rng.standard_normal((3, 1)))
    W1, W2 = 0.5 * rng.standard_normal((4, 6)), 0.5 * rng.standard_normal((1, 4))
    two = flowlin.LinearNetwork(W1, W2)
    deep = flowlin.DeepLinearNetwork([W1, W2])
    floors = []
    for net in (two, deep):
        traj = flowlin.gradient_flow(net, problem, 0.01, method=flowlin.FullWeights())
        tol = jnp.asarray(1e-6)
        if net is two:
            stats = InitStatistics.of(net, problem, call="test")
            obs = Observed.of_statistics(traj, stats, problem, tol, tol)
        else:
            obs = _observed(traj, net, problem, tol, tol)
        floors.append(float(obs.e_noise))
    assert floors[1] >= floors[0] > 0, floors


def test_a_failed_run_checks_nothing_lemma1_included():
    """Lemma 1 reads only the init, and was checked on a run that ran out of steps: the sweep
    stored it with reason 0 ("checked") beside applicable = false and a finite slack. Now every
    check of a failed run is reason 3 with NaN slack and no excluded times, in `check_bounds`
    and in the sweep's record; on a successful run Lemma 1 still holds at a width above h0."""
    rng = np.random.default_rng(1)
    problem = flowlin.Problem(rng.standard_normal((6, 12)), rng.standard_normal((6, 1)))
    h = 10**9
    init = flowlin.init.wishart(jax.random.key(0), problem, h, h**-0.5, h**-0.5)
    ok = flowlin.gradient_flow(init, problem, 20.0, method=flowlin.Gram())
    failed = flowlin.gradient_flow(init, problem, 20.0, method=flowlin.Gram(), max_steps=3)
    assert bool(ok.succeeded) and not bool(failed.succeeded)
    good = flowlin.check_bounds(ok, init, problem, width=h, alpha=0.5)
    assert bool(good["lemma1_imbalance"].applicable) and bool(good["lemma1_imbalance"].holds)
    checks = flowlin.check_bounds(failed, init, problem, width=h, alpha=0.5)
    for name, c in checks.items():
        assert not bool(c.applicable) and int(c.reason) in (1, 2, 3), name
        assert int(c.excluded) == 0 and np.isnan(float(c.worst_slack)), name
    assert checks["lemma1_imbalance"].verdict() == "not checked: run did not succeed"
    ds = flowlin.sweep(problem, widths=[h], scales=[0.5], sampling="wishart", t1=20.0,
                       max_steps=3, theory=False, progress=False)  # fmt: skip
    for name in ("lemma1_imbalance", "lemma1_residual", "lemma1_product"):
        assert int(ds[f"bound_{name}_reason"].item()) == 3, name
        assert np.isnan(float(ds[f"bound_{name}_worst_slack"].item())), name
