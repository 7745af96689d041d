"""`flowlin.theory`, §2(b)–(d): rates and envelopes against explicit formulas, closed forms of
`flowlin.exact` and finite differences along a computed flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_theory import SHAPES, TOL, numpy_net, numpy_parts, numpy_problem

import flowlin
from flowlin import theory


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_rates_at_a_state(shape, getkey):
    """Lemma 7 identity vs a direct weight-space formula; the chain
    ρ >= Lemma 7 bound >= Proposition 1 bound >= Theorem 1 rate at random states; Theorem 3."""
    n, D, m, h, r, spread = shape
    problem = numpy_problem(12, n, D, m, r=r, spread=spread)
    rng = np.random.default_rng(1)
    scale = np.linspace(0.05, 1.15, 64)[:, None, None]  # balanced, and unbalanced both ways
    nets = jax.vmap(flowlin.LinearNetwork)(
        jnp.asarray(scale * rng.normal(size=(64, h, D))),
        jnp.asarray((1.2 - scale) * rng.normal(size=(64, m, h))),
    )

    def rates(net):
        U1 = problem.row_part(net.W1)
        E = problem.error(net.product)
        S = problem.sqrt_sigma[:, None]
        direct = 2 * (jnp.sum((U1.T @ (S * E)) ** 2) + jnp.sum(((S * E) @ net.W2) ** 2))
        return (
            direct / jnp.sum(E**2),
            theory.instantaneous_rate(net, problem),
            theory.lemma7_bound(net, problem),
            theory.instantaneous_rate_bound(net, problem),
            theory.rate_imbalance(net, problem),
            theory.rate_margin(net, problem),
            theory.rate_asymptotic(net, problem),
        )

    direct, rho, lemma7, prop1, imb, margin, asym = jax.jit(jax.vmap(rates))(nets)
    np.testing.assert_allclose(rho, direct, rtol=1e-10)
    slack = 1e-10 * (1 + rho)
    assert np.all(rho >= lemma7 - slack)
    assert np.all(lemma7 >= prop1 - slack)
    assert np.all(prop1 >= imb - slack)
    assert np.all(margin >= imb - slack) and np.all(asym >= margin - slack)
    # Explicit Lemma 7 bound: eigenvalues of the r×r and m×m Grams, from NumPy.
    net0 = jax.tree.map(lambda x: x[0], nets)
    U1, _, V = numpy_parts(net0, problem)
    lam_u = np.linalg.eigvalsh(U1 @ U1.T)[0] if h >= r else 0.0
    lam_v = np.linalg.eigvalsh(V @ V.T)[0] if h >= m else 0.0
    expected = 2 * float(problem.sigma[-1]) * (max(lam_u, 0) + max(lam_v, 0))
    np.testing.assert_allclose(lemma7[0], expected, rtol=1e-9, atol=1e-12)


def test_prop1_square_case_formula(getkey):
    """For r = m, Proposition 1 is 2λr(Σ)√(Δ² + 4σ_min²(U1Vᵀ)) when Δ± = 0 (λ-balanced)."""
    problem = numpy_problem(13, 2, 6, 2)
    net = flowlin.init.lambda_balanced(getkey(), problem, 2, 0.7, scale=0.4)
    dp, dm, c = theory.imbalance_spreads(net, problem)
    np.testing.assert_allclose([dp, dm, c], [0, 0, 0.7], atol=TOL)
    U1, _, V = numpy_parts(net, problem)
    s = np.linalg.svd(U1 @ V.T, compute_uv=False)[-1]
    np.testing.assert_allclose(
        theory.instantaneous_rate_bound(net, problem), 2 * np.sqrt(0.7**2 + 4 * s**2), rtol=1e-10
    )


def test_rate_against_finite_differences_of_the_flow(getkey):
    """ρ(t) = -d/dt log(L - L*): the trajectory's `rate`, `instantaneous_rate` of the saved
    networks, and a central difference of the saved log excess loss agree."""
    problem = numpy_problem(14, 4, 9, 2, r=3, spread=True)
    net = numpy_net(104, 9, 2, 6, 0.5, 0.4)
    ts = jnp.linspace(0.0, 2.0, 401)
    saveat = flowlin.SaveAt(ts=ts, diagnostics=("excess_loss", "rate"), networks=True)
    traj = flowlin.gradient_flow(net, problem, 2.0, saveat=saveat, rtol=1e-11, atol=1e-13)
    dt = float(ts[1] - ts[0])
    log_e = np.log(np.asarray(traj.excess_loss))
    # five-point central difference, error dt⁴/30·|ρ⁗| ≲ 1e-7 relative here (ρ varies on a
    # time scale ~0.1, dt = 0.005); the solve is accurate to ~1e-11.
    fd = -(-log_e[4:] + 8 * log_e[3:-1] - 8 * log_e[1:-3] + log_e[:-4]) / (12 * dt)
    rate = np.asarray(traj.rate)[2:-2]
    np.testing.assert_allclose(fd, rate, rtol=1e-5)
    states = jax.vmap(lambda W1, W2: flowlin.LinearNetwork(W1, W2))(
        *[traj.networks.W1, traj.networks.W2]
    )
    rho = jax.vmap(lambda s: theory.instantaneous_rate(s, problem))(states)
    np.testing.assert_allclose(rho, traj.rate, rtol=1e-9)
    # Λ is conserved along the flow (theory.md §2(a)).
    final = jax.tree.map(lambda x: x[-1], states)
    np.testing.assert_allclose(
        theory.imbalance(final, problem), theory.imbalance(net, problem), atol=1e-9
    )
    np.testing.assert_allclose(
        theory.imbalance_spreads(final, problem), theory.imbalance_spreads(net, problem), atol=1e-9
    )


def test_asymptotic_rate_is_exact_for_lambda_balanced_square(getkey):
    """v2 Cor. 6 equals the exact asymptotic rate 2√(λ² + 4σ_min(Ỹ)²) of a λ-balanced init of
    width h = r = m on whitened data (flowlin.exact), and the flow's late-time slope to 1%."""
    problem = numpy_problem(15, 2, 6, 2)
    lam = 0.6
    net = flowlin.init.lambda_balanced(getkey(), problem, 2, lam, scale=0.3)
    rho = theory.rate_asymptotic(net, problem)
    np.testing.assert_allclose(
        rho, flowlin.exact.asymptotic_rate_balanced(problem.Y_tilde, lam), rtol=1e-12
    )
    t1 = 30.0 / float(rho)
    ts = jnp.linspace(0.0, t1, 61)
    traj = flowlin.gradient_flow(
        net,
        problem,
        t1,
        saveat=flowlin.SaveAt(ts=ts, diagnostics=("excess_loss", "rate")),
        rtol=1e-11,
        atol=1e-13,
    )
    ex = np.asarray(traj.excess_loss)
    # Late times: the excess loss between 1e-8 and 1e-16 of its start (after the transient,
    # above the ~1e-20 round-off floor of this tolerance).
    late = np.flatnonzero((ex < 1e-8 * ex[0]) & (ex > 1e-16 * ex[0]))
    i, j = late[0], late[-1]
    assert j - i >= 5
    slope = -(np.log(ex[j]) - np.log(ex[i])) / float(ts[j] - ts[i])
    print(f"λ-balanced h = r = m = 2: late-time slope / rate_asymptotic = {slope / float(rho):.6f}")
    assert abs(slope / float(rho) - 1) < 0.01, (slope, float(rho))
    np.testing.assert_allclose(traj.rate[i : j + 1], rho, rtol=0.01)


def test_margin_rate_and_envelope(getkey):
    problem = numpy_problem(16, 3, 8, 3, spread=True)
    net = numpy_net(105, 8, 3, 9, 0.6, 0.3)
    dp, dm, c = theory.imbalance_spreads(net, problem)
    excess = 0.5 * np.sum(np.asarray(problem.error(net.product)) ** 2)
    np.testing.assert_allclose(theory.excess_loss(net, problem), excess, rtol=1e-12)
    np.testing.assert_allclose(excess, problem.loss(net.product) - problem.loss_star, rtol=1e-10)
    # Theorem 3 with zero margin (‖E‖ >= σ_min(Ỹ)) is Theorem 1; with ‖E‖ = 0 it is Cor. 6.
    big = np.linalg.norm(problem.Y_tilde) * 10
    np.testing.assert_allclose(
        theory.rate_margin(net, problem, error_norm=big),
        theory.rate_imbalance(net, problem),
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        theory.rate_margin(net, problem, error_norm=0.0),
        theory.rate_asymptotic(net, problem),
        rtol=1e-12,
    )
    # Hand evaluation of c(t) for a mid-range ‖E‖ (r = m = 3, so μ_m = μ_r).
    s = np.linalg.svd(np.asarray(problem.Y_tilde), compute_uv=False)
    e = 0.5 * s[-1]
    mu = s[-1] - e
    l1, lr = float(problem.sigma[0]), float(problem.sigma[-1])
    expected = lr * (
        -dp + np.sqrt((dp + c) ** 2 + 4 * mu**2 / l1) - dm + np.sqrt((dm + c) ** 2 + 4 * mu**2 / l1)
    )
    np.testing.assert_allclose(theory.rate_margin(net, problem, error_norm=e), expected, rtol=1e-12)
    # Per-time error norms broadcast.
    assert theory.rate_margin(net, problem, error_norm=jnp.ones((5,))).shape == (5,)
    ts = jnp.linspace(0, 3, 7)
    for name, rate in (
        ("imbalance", theory.rate_imbalance(net, problem)),
        ("margin", theory.rate_margin(net, problem)),
    ):
        np.testing.assert_allclose(
            theory.loss_envelope(ts, net, problem, theorem=name),
            np.exp(-float(rate) * np.asarray(ts)) * excess,
            rtol=1e-12,
        )


def test_values_read_off_a_stopped_or_failed_run_pass_through():
    # Saves after stop_at_loss are inf, a failed run's are NaN: the theory functions that take
    # a trajectory's diagnostics give inf/NaN there (and refuse only negative values).
    problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=6, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=6, m=1, h=8, alpha=0.5)
    odd = jnp.asarray([0.5, jnp.inf, jnp.nan])
    for out in (
        theory.instantaneous_rate_bound(net, problem, product_min_singular_value=odd),
        theory.rate_margin(net, problem, error_norm=odd),
        theory.distance_bound(net, problem, error_integral=odd),
        theory.loss_envelope(odd, net, problem),
    ):
        out = np.asarray(out)
        assert out.shape == (3,) and np.isfinite(out[0]) and np.isnan(out[2]), out
    assert float(theory.loss_envelope(odd, net, problem)[1]) == 0.0  # e^{-ρ·∞}
    with pytest.raises(ValueError, match="error_norm must be >= 0"):
        theory.rate_margin(net, problem, error_norm=jnp.asarray([0.5, -1.0]))


def test_envelope_with_a_zero_rate_at_infinite_time():
    """The zero network is a stationary point: L(t) − L* = ½‖Ỹ‖² at every t, and Theorem 1's
    rate is exactly 0 (no imbalance). The envelope is then that constant, t = inf included
    (exp(−0·inf) is NaN)."""
    problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=8, m=1)
    zero = flowlin.LinearNetwork(jnp.zeros((5, 8)), jnp.zeros((1, 5)))
    assert float(theory.rate_imbalance(zero, problem)) == 0.0
    got = theory.loss_envelope(jnp.array([0.0, 1.0, jnp.inf]), zero, problem, theorem="imbalance")
    np.testing.assert_allclose(got, 0.5 * float(jnp.sum(problem.Y_tilde**2)), rtol=1e-14)


@pytest.mark.parametrize("scale", [1e-12, 1e6])
def test_float32_theory_at_tiny_and_huge_inits(scale):
    """The same float32 numbers in float64 give the same theory: at 1e-12 the squares inside
    the rate formulas and the invariant residual underflowed (rate_margin −1.2e-22 < 0,
    instantaneous_rate_bound < 0, distance_bound 0: "the limit is W* exactly"); at 1e6
    ⟨E, Q11E⟩ overflowed (instantaneous_rate inf)."""
    rng = np.random.default_rng(1)
    X, Y = rng.standard_normal((5, 12)), rng.standard_normal((5, 2))
    p32 = flowlin.Problem(jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32))
    p64 = flowlin.Problem(jnp.asarray(p32.X, jnp.float64), jnp.asarray(p32.Y, jnp.float64))
    W1, W2 = (scale * rng.standard_normal(s) for s in ((8, 12), (2, 8)))
    net32 = flowlin.LinearNetwork(jnp.asarray(W1, jnp.float32), jnp.asarray(W2, jnp.float32))
    net64 = jax.tree.map(lambda w: jnp.asarray(w, jnp.float64), net32)
    T = flowlin.theory
    for f in (T.rate_margin, T.rate_imbalance, T.instantaneous_rate_bound,
              T.instantaneous_rate, T.lemma7_bound, T.distance_bound):  # fmt: skip
        got, want = float(f(net32, p32)), float(f(net64, p64))
        if abs(want) > float(np.finfo(np.float32).max):  # beyond float32: inf is the answer
            assert got == np.inf, (f.__name__, got, want)
            continue
        assert np.isfinite(got) == np.isfinite(want), (f.__name__, got, want)
        if np.isfinite(want):
            assert got >= 0 and abs(got - want) <= 1e-3 * abs(want), (f.__name__, got, want)
    got = float(T.quantities(net32, p32)["invariant_residual"])
    want = float(np.hypot(*T.invariant_set_residual(net64, p64)))
    np.testing.assert_allclose(got, want, rtol=1e-4)
