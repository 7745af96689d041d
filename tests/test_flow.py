"""`flowlin.gradient_flow(method=flowlin.FullWeights())` against closed forms and conserved
quantities."""

import warnings

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin


# Tight solver settings for the closed-form comparisons: Dopri8 at rtol 1e-12 puts the
# integration error ~3 orders below the 1e-8 the issue asks for.
TIGHT = dict(solver=dfx.Dopri8(), rtol=1e-12, atol=1e-14)


def _scalar_problem(y):
    # n = m = 1, X = [1, 0]: D = 2 > r = 1; the second input direction never moves.
    return flowlin.Problem(jnp.array([[1.0, 0.0]]), jnp.reshape(y, (1, 1)), rank=1)


SCALAR_CASES = [  # (u0, v0, y): unbalanced, balanced (u0 = v0), negative target, tiny u0.
    (0.3, 0.1, 1.0),
    (0.2, 0.2, 0.7),
    (1.5, -0.2, -0.5),
    (0.01, 0.5, 2.0),
    (-0.4, -0.4, 1.3),
]


def test_scalar_closed_form():
    u0, v0, y = (jnp.array(c) for c in zip(*SCALAR_CASES))
    ts = jnp.linspace(0.0, 10.0, 201)

    def run(u0, v0, y):
        net = flowlin.LinearNetwork(jnp.stack([u0, 0.3])[None, :], v0.reshape(1, 1))
        saveat = flowlin.SaveAt(ts, diagnostics=("loss",), networks=True)
        return flowlin.gradient_flow(net, _scalar_problem(y), 10.0, saveat=saveat, **TIGHT)

    traj = jax.vmap(run)(u0, v0, y)
    assert bool(jnp.all(traj.succeeded))
    u, v = jax.vmap(lambda a, b, c: flowlin.exact.scalar(ts, a, b, c))(u0, v0, y)
    rel_u = jnp.abs(traj.networks.W1[..., 0, 0] - u) / jnp.abs(u)
    rel_v = jnp.abs(traj.networks.W2[..., 0, 0] - v) / jnp.abs(v)
    assert float(jnp.max(rel_u)) < 1e-8 and float(jnp.max(rel_v)) < 1e-8
    # The null-space coordinate is untouched, and the balanced formula agrees too.
    np.testing.assert_array_equal(traj.networks.W1[..., 0, 1], 0.3)
    w_bal = flowlin.exact.balanced_scalar(ts, 0.2 * 0.2, 0.7)
    np.testing.assert_allclose(u[1] * v[1], w_bal, rtol=1e-12)
    # Loss from the closed form, L = ½(y - uv)²: the residual |y - uv| agrees to 1e-8·|y|.
    residual = jnp.abs(y[:, None] - u * v)
    np.testing.assert_allclose(jnp.sqrt(2 * traj.loss), residual, rtol=0, atol=1e-8)


def test_lambda_balanced_riccati():
    """Matrix case r = 4, m = 3 on whitened data, three imbalance levels λ."""
    problem = flowlin.problems.whitened(jax.random.key(0), n=4, D=10, m=3)
    ts = jnp.linspace(0.0, 10.0, 51)
    width = 7
    cases = [(0.5, 4), (-0.3, 3), (0.0, 7)]  # (λ, h): h <= r for λ > 0, h <= m for λ < 0
    nets = [
        flowlin.init.lambda_balanced(jax.random.key(i), problem, h, lam, scale=0.3)
        for i, (lam, h) in enumerate(cases)
    ]
    # Zero-padded to one width (exact, theory.md §3) so that one vmapped solve covers all.
    batch = jax.tree.map(lambda *x: jnp.stack(x), *[flowlin.init.pad_width(n, width) for n in nets])
    saveat = flowlin.SaveAt(ts, diagnostics=("excess_loss",), networks=True)
    traj = jax.vmap(lambda n: flowlin.gradient_flow(n, problem, 10.0, saveat=saveat, **TIGHT))(
        batch
    )
    r = problem.rank
    gram = jax.vmap(flowlin.exact.lambda_balanced_gram, in_axes=(0, None, None, None))
    for i, (lam, _) in enumerate(cases):
        Z0 = jnp.concatenate([problem.row_part(nets[i].W1), nets[i].W2])
        Q = gram(ts, Z0, problem.Y_tilde, lam)
        P_exact = Q[:, :r, r:]  # U1 Vᵀ (Σ = I)
        P_flow = jax.vmap(lambda W1, W2: problem.row_part(W1) @ W2.T)(
            traj.networks.W1[i], traj.networks.W2[i]
        )
        rel = jnp.linalg.norm(P_flow - P_exact, axis=(1, 2)) / jnp.linalg.norm(P_exact, axis=(1, 2))
        assert float(jnp.max(rel)) < 1e-8, (lam, float(jnp.max(rel)))
        # The excess loss ½‖Ỹ - U1Vᵀ‖² then agrees to 1e-8 of the initial error's scale.
        e_exact = 0.5 * jnp.sum((problem.Y_tilde - P_exact) ** 2, axis=(1, 2))
        np.testing.assert_allclose(traj.excess_loss[i], e_exact, rtol=1e-6, atol=1e-8 * e_exact[0])


@pytest.fixture(scope="module")
def nonwhite():
    """Non-whitened, rank-deficient X (r = 5 < n = 7), m = 2."""
    rng = np.random.default_rng(3)
    X = (rng.standard_normal((7, 5)) * np.linspace(0.5, 2.0, 5)) @ rng.standard_normal((5, 16))
    Y = rng.standard_normal((7, 2))
    return flowlin.Problem(X / 4, Y)


def test_conservation_over_100_time_units(nonwhite):
    problem = nonwhite
    net = flowlin.init.gaussian(jax.random.key(1), problem.D, problem.m, 30, 0.4, 0.3)
    traj = flowlin.gradient_flow(net, problem, 100.0)  # default float64 tolerances
    assert bool(traj.succeeded)
    U1 = problem.row_part(net.W1)
    lam0 = U1.T @ U1 - net.W2.T @ net.W2
    scale = jnp.sum(U1**2) + jnp.sum(net.W2**2)  # the diagnostic's normalization
    rel_drift = traj.imbalance_drift * scale / jnp.linalg.norm(lam0)
    assert float(jnp.max(rel_drift)) < 1e-8
    # Independent recomputation of Λ(t1) from the final network.
    U1f = problem.row_part(traj.final_network.W1)
    lam1 = U1f.T @ U1f - traj.final_network.W2.T @ traj.final_network.W2
    assert float(jnp.linalg.norm(lam1 - lam0) / jnp.linalg.norm(lam0)) < 1e-8
    # U2 never moves (XΦ2 = 0): unchanged to 1e-12 relative.
    u2_0 = jnp.linalg.norm(problem.null_part(net.W1))
    u2_change = jnp.linalg.norm(problem.null_part(traj.final_network.W1 - net.W1))
    assert float(u2_change / u2_0) < 1e-12
    assert float(jnp.max(traj.u2_drift)) < 1e-12
    # It converged, to the least attainable loss (r < n: L* > 0).
    assert float(problem.loss_star) > 1e-3
    assert float(traj.excess_loss[-1]) < 1e-10 * float(traj.excess_loss[0])
    np.testing.assert_allclose(traj.loss[-1], problem.loss_star, rtol=1e-10)


def test_limit_identity_and_invariant_set(nonwhite):
    """Θ(∞) = Θ̂ + Φ2U2(0)V(∞)ᵀ (ICML Prop. 1); the projected init converges to W* exactly."""
    problem = nonwhite
    net = flowlin.init.gaussian(jax.random.key(2), problem.D, problem.m, 25, 0.5, 0.5)
    proj = flowlin.init.project_to_invariant_set(net, problem)
    batch = jax.tree.map(lambda a, b: jnp.stack([a, b]), net, proj)
    traj = jax.vmap(lambda n: flowlin.gradient_flow(n, problem, 60.0, rtol=1e-11, atol=1e-13))(
        batch
    )
    assert float(jnp.max(traj.final_values["excess_loss"])) < 1e-18  # ‖E‖ ~ 1e-9: converged
    W_inf = traj.final_network.W2[0] @ traj.final_network.W1[0]
    # W(∞) = W* + V(∞) U2(0)ᵀ Φ2ᵀ, with U2(0)ᵀΦ2ᵀ = null_part(W1(0)).
    predicted = problem.min_norm + traj.final_network.W2[0] @ problem.null_part(net.W1)
    assert float(jnp.linalg.norm(W_inf - predicted) / jnp.linalg.norm(W_inf)) < 1e-8
    # A generic init does not reach W*, the projected one does.
    assert float(traj.final_values["distance_to_min_norm"][0]) > 1e-2
    W_proj = traj.final_network.W2[1] @ traj.final_network.W1[1]
    err = jnp.linalg.norm(W_proj - problem.min_norm) / jnp.linalg.norm(problem.min_norm)
    assert float(err) < 1e-8


def test_rate_and_error_integral_against_finite_differences(nonwhite):
    problem = nonwhite
    net = flowlin.init.gaussian(jax.random.key(3), problem.D, problem.m, 12, 0.3, 0.2)
    ts = jnp.linspace(0.0, 3.0, 3001)
    traj = flowlin.gradient_flow(
        net, problem, 3.0, saveat=ts, rtol=1e-12, atol=1e-14, solver=dfx.Dopri8()
    )
    log_e = np.log(np.asarray(traj.excess_loss))
    dt = float(ts[1] - ts[0])
    # Central differences with steps dt and 2dt, Richardson-combined: error O(dt⁴), needed
    # because ρ(t) starts large (~100) and changes fast.
    d1 = -(log_e[3:-1] - log_e[1:-3]) / (2 * dt)
    d2 = -(log_e[4:] - log_e[:-4]) / (4 * dt)
    fd_rate = (4 * d1 - d2) / 3
    # From t = 0.01 on (before, the rate falls from ~110 at a pace the stencil cannot follow).
    np.testing.assert_allclose(traj.rate[2:-2][8:], fd_rate[8:], rtol=1e-5)
    # ∫‖E‖ds carried by the solver vs composite Simpson (error O(dt⁴)) on the saves from
    # t = 0.2, where dt = 1e-3 resolves ‖E‖; the first 0.2 time units are checked on their own
    # finer grid below.
    f = np.sqrt(2 * np.asarray(traj.excess_loss))[200:]
    simpson = np.concatenate([[0.0], np.cumsum(dt / 3 * (f[:-2:2] + 4 * f[1:-1:2] + f[2::2]))])
    increments = np.asarray(traj.error_integral)[200::2] - float(traj.error_integral[200])
    np.testing.assert_allclose(increments, simpson, rtol=1e-9, atol=1e-13)
    fine_ts = jnp.linspace(0.0, 0.2, 20001)
    fine = flowlin.gradient_flow(
        net,
        problem,
        0.2,
        saveat=flowlin.SaveAt(fine_ts, diagnostics=("excess_loss", "error_integral")),
        rtol=1e-12,
        atol=1e-14,
        solver=dfx.Dopri8(),
    )
    f = np.sqrt(2 * np.asarray(fine.excess_loss))
    h = float(fine_ts[1])
    simpson = np.concatenate([[0.0], np.cumsum(h / 3 * (f[:-2:2] + 4 * f[1:-1:2] + f[2::2]))])
    np.testing.assert_allclose(fine.error_integral[::2], simpson, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(fine.error_integral[-1], traj.error_integral[200], rtol=1e-10)
    # σ_min(U1 Vᵀ) at the saved end equals the final network's.
    U1 = problem.row_part(traj.final_network.W1)
    s = jnp.linalg.svd(U1 @ traj.final_network.W2.T, compute_uv=False)
    np.testing.assert_allclose(traj.product_min_singular_value[-1], s[-1], rtol=1e-12)
    np.testing.assert_allclose(
        traj.loss - problem.loss_star, traj.excess_loss, rtol=1e-9, atol=1e-15
    )


def test_stop_at_loss(nonwhite):
    problem = nonwhite
    net = flowlin.init.gaussian(jax.random.key(4), problem.D, problem.m, 20, 0.5, 0.5)
    threshold = 1e-6
    traj = flowlin.gradient_flow(net, problem, 50.0, stop_at_loss=threshold, rtol=1e-10, atol=1e-12)
    assert bool(traj.reached_threshold) and bool(traj.succeeded)
    t_stop = float(traj.final_time)
    assert 0 < t_stop < 50.0
    # The root find puts the stop on the crossing: L - L* = threshold there.
    np.testing.assert_allclose(traj.final_values["excess_loss"], threshold, rtol=1e-7)
    # Saves after the stop are inf, those before are finite and above the threshold.
    after = np.asarray(traj.ts) == np.inf
    assert after.any() and np.all(np.isinf(np.asarray(traj.loss)[after]))
    before = np.asarray(traj.excess_loss)[~after]
    assert np.all(before > threshold)
    # An independent check of the crossing time: a plain solve to t_stop lands on the threshold.
    plain = flowlin.gradient_flow(net, problem, t_stop, saveat=[t_stop], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(plain.excess_loss[-1], threshold, rtol=1e-6)


def test_stop_at_loss_default_tolerances(nonwhite):
    """The crossing is located (and the run reported a success) for every seed of a batch."""
    problem = nonwhite
    keys = jax.random.split(jax.random.key(8), 8)
    nets = jax.vmap(lambda k: flowlin.init.paper(k, problem.D, problem.m, 9, 0.5))(keys)
    saveat = flowlin.SaveAt(jnp.linspace(0.0, 80.0, 5), diagnostics=("excess_loss",))
    traj = jax.vmap(
        lambda n: flowlin.gradient_flow(n, problem, 80.0, saveat=saveat, stop_at_loss=1e-6)
    )(nets)
    assert bool(jnp.all(traj.reached_threshold)) and bool(jnp.all(traj.succeeded))
    np.testing.assert_allclose(traj.final_values["excess_loss"], 1e-6, rtol=1e-6)


def test_status_reported_not_raised(nonwhite):
    problem = nonwhite
    net = flowlin.init.gaussian(jax.random.key(5), problem.D, problem.m, 20, 0.5, 0.5)
    traj = flowlin.gradient_flow(net, problem, 50.0, max_steps=5)
    assert traj.result == flowlin.RESULTS.max_steps_reached
    assert not bool(traj.succeeded)


def test_max_steps_may_be_a_numpy_integer(nonwhite):
    # A NumPy integer budget is the same budget (it used to end in equinox's loop as a traced
    # bool), and a too-small one is still reported.
    problem = nonwhite
    net = flowlin.init.gaussian(jax.random.key(5), problem.D, problem.m, 20, 0.5, 0.5)
    short = flowlin.gradient_flow(net, problem, 50.0, max_steps=np.int64(5))
    assert short.result == flowlin.RESULTS.max_steps_reached
    a = flowlin.gradient_flow(net, problem, 1.0, max_steps=np.int32(1000))
    b = flowlin.gradient_flow(net, problem, 1.0, max_steps=1000)
    np.testing.assert_array_equal(a.loss, b.loss)


def test_only_requested_diagnostics_saved(nonwhite):
    problem = nonwhite
    net = flowlin.init.gaussian(jax.random.key(6), problem.D, problem.m, 8, 0.5, 0.5)
    saveat = flowlin.SaveAt(jnp.array([0.0, 1.0]), diagnostics=("distance_to_min_norm",))
    traj = flowlin.gradient_flow(net, problem, 1.0, saveat=saveat)
    assert traj.loss is None and traj.rate is None and traj.networks is None
    assert traj.distance_to_min_norm.shape == (2,)
    np.testing.assert_allclose(
        traj.distance_to_min_norm[0], jnp.linalg.norm(net.product - problem.min_norm), rtol=1e-13
    )
    assert set(traj.final_values) == {"distance_to_min_norm"}


def test_flow_errors(nonwhite):
    problem = nonwhite
    net = flowlin.init.gaussian(jax.random.key(7), problem.D, problem.m, 8, 0.5, 0.5)
    with pytest.raises(ValueError, match="t1 must be finite and > 0"):
        flowlin.gradient_flow(net, problem, -1.0)
    with pytest.raises(ValueError, match="t1 must be finite and > 0"):
        flowlin.gradient_flow(net, problem, float("nan"))
    # Under the test suite's beartype hook the annotation check names the parameter first;
    # without it (users), flowlin's own message does.
    with pytest.raises(
        TypeError, match=r"method must be a flow method object.*'euler'|parameter 'method'"
    ):
        flowlin.gradient_flow(net, problem, 1.0, method="euler")
    with pytest.raises(ValueError, match=r"saveat times must lie in \[0, t1"):
        flowlin.gradient_flow(net, problem, 1.0, saveat=[0.0, 2.0])
    with pytest.raises(ValueError, match="non-decreasing"):
        flowlin.gradient_flow(net, problem, 1.0, saveat=[0.5, 0.1])
    with pytest.raises(ValueError, match="stop_at_loss must be finite and > 0"):
        flowlin.gradient_flow(net, problem, 1.0, stop_at_loss=0.0)
    with pytest.raises(ValueError, match="unknown diagnostic"):
        flowlin.SaveAt(diagnostics=("los",))
    other = flowlin.init.gaussian(jax.random.key(7), problem.D, 3, 8, 0.5, 0.5)
    with pytest.raises(ValueError, match="m = 2 columns"):
        flowlin.gradient_flow(other, problem, 1.0)
    with pytest.raises(TypeError, match="problem"):
        flowlin.gradient_flow(net, (problem.X, problem.Y), 1.0)


def _small():
    problem = flowlin.problems.whitened(jax.random.key(0), n=3, D=5, m=1)
    return problem, flowlin.init.paper(jax.random.key(1), 5, 1, 7, 0.5)


def test_save_times_above_t1_by_round_off_are_t1():
    """`0.1 * 3 > 0.3` in floating point: flowlin accepts such a last save time (within 1e-12
    of t1), and the solve saves at t1 itself (diffrax would refuse any time above t1)."""
    problem, net = _small()
    ts = np.arange(4) * 0.1
    assert ts[-1] > 0.3
    run = flowlin.gradient_flow(net, problem, 0.3, saveat=ts, method=flowlin.Gram())
    exact = flowlin.gradient_flow(net, problem, 0.3, saveat=[0.0, 0.1, 0.2, 0.3],
                                  method=flowlin.Gram())  # fmt: skip
    assert bool(run.succeeded) and float(run.ts[-1]) == 0.3
    np.testing.assert_array_equal(run.excess_loss[-1], exact.excess_loss[-1])


def test_traced_invalid_arguments_are_a_status_of_their_run_only():
    """Under `vmap` over t1, flowlin cannot refuse a bad t1 by name before the solve: the run
    whose save times exceed its t1 ends with `RESULTS.invalid_arguments` and NaN numbers, and
    the other runs of the batch are unaffected (equal to their own solves)."""
    problem, net = _small()
    ts = jnp.linspace(0.0, 2.0, 3)

    def solve(t1):
        return flowlin.gradient_flow(net, problem, t1, saveat=ts, method=flowlin.Gram())

    batch = jax.vmap(solve)(jnp.array([2.0, 1.0, 3.0]))
    invalid = np.asarray(batch.result == flowlin.RESULTS.invalid_arguments)
    assert invalid.tolist() == [False, True, False]
    assert bool(jnp.all(jnp.isnan(batch.excess_loss[1])))
    assert bool(jnp.all(jnp.isnan(batch.final_network.W1[1])))
    assert not bool(batch.succeeded[1])
    for i, t1 in ((0, 2.0), (2, 3.0)):
        alone = solve(t1)
        assert bool(batch.succeeded[i])
        np.testing.assert_allclose(batch.excess_loss[i], alone.excess_loss, rtol=1e-10)


def test_a_loss_that_rose_is_diverged_and_a_loose_rtol_does_not_make_a_run_converge():
    """The flow never raises the loss. A fixed Euler step of 0.2 beyond stability takes the
    excess loss from ~7 to ~1.7e4 (the exact flow: down to 0.07): `diverged`, not
    `not_converged` with usable numbers. And the 'converged as far as the arithmetic can tell'
    floor, ½(100·rtol·‖Ỹ‖)², passed any run at rtol = 1e-2: the zero network, a stationary
    point whose excess never moves, was `successful`."""
    import diffrax as dfx

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 12)), rng.standard_normal((5, 2))
    problem = flowlin.Problem(X, Y)
    net = flowlin.init.gaussian(jax.random.key(0), 12, 2, 7, 0.3, 0.3)
    euler = flowlin.gradient_flow(
        net, problem, 0.4, solver=dfx.Euler(), stepsize_controller=dfx.ConstantStepSize(),
        dt0=0.2,
    )  # fmt: skip
    exact = flowlin.gradient_flow(net, problem, 0.4, saveat=[0.0, 0.4], **TIGHT)
    start, end = float(exact.excess_loss[0]), float(exact.excess_loss[-1])
    assert end < start < float(euler.final_values["excess_loss"]) / 100
    assert euler.result == flowlin.RESULTS.diverged and not bool(euler.succeeded)
    zero = flowlin.LinearNetwork(jnp.zeros((7, 12)), jnp.zeros((2, 7)))
    for rtol in (1e-8, 1e-2):
        run = flowlin.gradient_flow(zero, problem, 5.0, rtol=rtol, atol=1e-12)
        assert float(run.excess_loss[-1]) == float(run.excess_loss[0])  # it never moved
        assert run.result == flowlin.RESULTS.not_converged and not bool(run.converged), rtol


def test_a_start_whose_loss_overflows_never_converges():
    """float32 data of 9e18 with weights of 3e9: ½‖E(0)‖² is inf (the Problem holds Y), so
    'at most 1e-3 of the start' held for any end; a run that only took its loss to 16% of its
    start (the same run at unit scale, exactly rescaled: excess 7.2 → 1.1) was `successful`."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((5, 12)), rng.standard_normal((5, 2))
    net = flowlin.init.gaussian(jax.random.key(0), 12, 2, 7, 0.3, 0.3)
    saves = flowlin.SaveAt(ts=[0.0, 0.2], diagnostics=("excess_loss",))
    unit = flowlin.gradient_flow(net, flowlin.Problem(X, Y), 0.2, saveat=saves)
    assert float(unit.excess_loss[-1]) > 0.1 * float(unit.excess_loss[0])
    assert unit.result == flowlin.RESULTS.not_converged
    b, f32 = 9e18, np.float32
    big = flowlin.Problem((X).astype(f32), (b * Y).astype(f32))
    scaled = flowlin.LinearNetwork(
        jnp.asarray(np.sqrt(b) * np.asarray(net.W1), f32),
        jnp.asarray(np.sqrt(b) * np.asarray(net.W2), f32),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32's resolution warning: not what is tested
        run = flowlin.gradient_flow(
            scaled, big, 0.2 / b, dt0=1e-3 / b,
            saveat=flowlin.SaveAt(ts=[0.0, 0.2 / b], diagnostics=("excess_loss",)),
        )  # fmt: skip
    assert np.isinf(float(run.excess_loss[0]))
    assert not bool(run.converged) and run.result != flowlin.RESULTS.successful
