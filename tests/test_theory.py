"""Unit tests of `flowlin.theory`: each function against an independent truth (an h x h
eigendecomposition, explicit Φ2, closed forms of `flowlin.exact`, finite differences along a
computed flow, hand-evaluated constants)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin
from flowlin import theory


#: float64 agreement of two routes to the same number (eigh of an (r+m) Gram vs of the h x h
#: matrix): a few hundred eps of the matrices' scale.
TOL = 1e-10


def _problem(seed, n, D, m, *, r=None, spread=False):
    """Whitened data (as `flowlin.problems.whitened`), or (spread=True) rank-r data with
    singular values from 2 down to 0.5. NumPy draws: every new shape of `jax.random.normal`
    costs seconds of float64 compilation on CPU, which would dominate these tests."""
    rng = np.random.default_rng(seed)
    r = n if r is None else r
    if spread:
        A = np.linalg.qr(rng.normal(size=(n, r)))[0]
        B = np.linalg.qr(rng.normal(size=(D, r)))[0]
        X = (A * np.linspace(2.0, 0.5, r)) @ B.T
    else:
        A, _, Bt = np.linalg.svd(rng.normal(size=(n, D)), full_matrices=False)
        X = A @ Bt
    return flowlin.Problem(X, rng.normal(size=(n, m)))


def _net(seed, D, m, h, std1, std2):
    """Gaussian init as `flowlin.init.gaussian`, drawn with NumPy (see `_problem`)."""
    rng = np.random.default_rng(seed)
    return flowlin.LinearNetwork(std1 * rng.normal(size=(h, D)), std2 * rng.normal(size=(m, h)))


def _numpy_parts(net, problem):
    """U1 (r×h), U2 (D-r × h), V (m×h) from a NumPy SVD of X (independent of flowlin's)."""
    X = np.asarray(problem.X)
    _, s, Vt = np.linalg.svd(X)
    r = int(np.sum(s > 1e-10 * s[0]))
    Phi1, Phi2 = Vt[:r].T, Vt[r:].T
    W1, W2 = np.asarray(net.W1), np.asarray(net.W2)
    return Phi1.T @ W1.T, Phi2.T @ W1.T, W2


def _indexed(eigs_desc, i):
    """λ_i with theory.md's convention: an index beyond the size gives 0."""
    return eigs_desc[i - 1] if i <= len(eigs_desc) else 0.0


# (n, D, m, h, r, spread): h >= r+m, h < r+m, h < r, h < m, r < n, non-whitened.
SHAPES = [
    (4, 10, 2, 12, 4, False),
    (4, 10, 2, 5, 4, False),
    (5, 9, 3, 2, 5, True),
    (3, 8, 4, 3, 3, False),
    (6, 12, 2, 4, 3, True),
    (3, 7, 1, 1, 3, True),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_imbalance_spectrum_matches_h_by_h(shape, getkey):
    n, D, m, h, r, spread = shape
    problem = _problem(9, n, D, m, r=r, spread=spread)
    assert problem.rank == r
    net = _net(101, D, m, h, 0.7, 0.5)
    U1, U2, V = _numpy_parts(net, problem)
    lam_h = U1.T @ U1 - V.T @ V

    @jax.jit  # one compilation instead of one per operation and shape
    def compute(net, problem):
        gram = flowlin.init.gram_init(net, problem)
        padded = flowlin.init.pad_width(net, h + 7)
        return (
            theory.imbalance(net, problem),
            theory.full_imbalance(net),
            theory.imbalance_spreads(net, problem),
            theory.imbalance_eigenvalues(net, problem),
            theory.imbalance_spreads(gram, problem),
            theory.imbalance_spreads(padded, problem),
        )

    lam, full, spreads, ev, spreads_gram, spreads_padded = compute(net, problem)
    np.testing.assert_allclose(lam, lam_h, atol=TOL)
    np.testing.assert_allclose(full, lam_h + U2.T @ U2, atol=TOL)

    eig = np.sort(np.linalg.eigvalsh(lam_h))[::-1]
    neg = np.sort(-eig)[::-1]
    lam_1, lam_r = max(eig[0], 0), max(_indexed(eig, r), 0)
    neg_1, neg_m = max(neg[0], 0), max(_indexed(neg, m), 0)
    np.testing.assert_allclose(spreads, [lam_1 - lam_r, neg_1 - neg_m, lam_r + neg_m], atol=TOL)
    # The (r+m) spectrum is the h x h one without (some of) its zeros.
    ev = np.asarray(ev)
    k = r + m
    padded = np.concatenate([eig, np.zeros(max(k - h, 0))])
    nonzero = padded[np.abs(padded) > 1e-9]
    np.testing.assert_allclose(ev[np.abs(ev) > 1e-9], nonzero, atol=TOL)
    assert np.sum(ev > 0) <= r and np.sum(ev < 0) <= m
    if h < r + m:
        assert np.sum(ev == 0) >= k - h  # round-off of exact zeros is cleaned to 0
    # The same from the width-independent statistics, and from a zero-padded network.
    np.testing.assert_allclose(spreads_gram, spreads, atol=TOL)
    np.testing.assert_allclose(spreads_padded, spreads, atol=TOL)


def test_index_beyond_size_gives_zero(getkey):
    problem = _problem(10, 5, 12, 3)
    # h = 2 < m < r: Λ (2×2) has no r-th eigenvalue and no m-th eigenvalue of -Λ.
    net = _net(102, 12, 3, 2, 1.0, 1.0)
    q = theory.quantities(net, problem)
    assert q["lambda_r"] == 0 and q["lambda_m_neg"] == 0 and q["c"] == 0
    assert q["rate_imbalance"] == 0 and not q["theorem1_applies"]
    assert q["distance_bound"] == jnp.inf
    # h = 3 >= m: the m-th eigenvalue of -Λ exists.
    net = _net(103, 12, 3, 3, 0.01, 1.0)
    q = theory.quantities(net, problem)
    assert q["lambda_r"] == 0 and q["lambda_m_neg"] > 0 and q["theorem1_applies"]


def test_balanced_init_has_zero_c(getkey):
    problem = _problem(11, 4, 10, 2)
    net = flowlin.init.balanced_like(_net(1, 10, 2, 8, 0.5, 0.5), problem)
    # balanced_like leaves U2 = 0 only if the product has no null-space part; Λ = 0 anyway.
    np.testing.assert_allclose(theory.imbalance(net, problem), 0, atol=TOL)
    dp, dm, c = theory.imbalance_spreads(net, problem)
    assert dp == 0 and dm == 0 and c == 0
    assert theory.rate_imbalance(net, problem) == 0


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_rates_at_a_state(shape, getkey):
    """Lemma 7 identity vs a direct weight-space formula; the chain
    ρ >= Lemma 7 bound >= Proposition 1 bound >= Theorem 1 rate at random states; Theorem 3."""
    n, D, m, h, r, spread = shape
    problem = _problem(12, n, D, m, r=r, spread=spread)
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
    U1, _, V = _numpy_parts(net0, problem)
    lam_u = np.linalg.eigvalsh(U1 @ U1.T)[0] if h >= r else 0.0
    lam_v = np.linalg.eigvalsh(V @ V.T)[0] if h >= m else 0.0
    expected = 2 * float(problem.sigma[-1]) * (max(lam_u, 0) + max(lam_v, 0))
    np.testing.assert_allclose(lemma7[0], expected, rtol=1e-9, atol=1e-12)


def test_prop1_square_case_formula(getkey):
    """For r = m, Proposition 1 is 2λr(Σ)√(Δ² + 4σ_min²(U1Vᵀ)) when Δ± = 0 (λ-balanced)."""
    problem = _problem(13, 2, 6, 2)
    net = flowlin.init.lambda_balanced(getkey(), problem, 2, 0.7, scale=0.4)
    dp, dm, c = theory.imbalance_spreads(net, problem)
    np.testing.assert_allclose([dp, dm, c], [0, 0, 0.7], atol=TOL)
    U1, _, V = _numpy_parts(net, problem)
    s = np.linalg.svd(U1 @ V.T, compute_uv=False)[-1]
    np.testing.assert_allclose(
        theory.instantaneous_rate_bound(net, problem), 2 * np.sqrt(0.7**2 + 4 * s**2), rtol=1e-10
    )


def test_rate_against_finite_differences_of_the_flow(getkey):
    """ρ(t) = -d/dt log(L - L*): the trajectory's `rate`, `instantaneous_rate` of the saved
    networks, and a central difference of the saved log excess loss agree."""
    problem = _problem(14, 4, 9, 2, r=3, spread=True)
    net = _net(104, 9, 2, 6, 0.5, 0.4)
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
    problem = _problem(15, 2, 6, 2)
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
    problem = _problem(16, 3, 8, 3, spread=True)
    net = _net(105, 8, 3, 9, 0.6, 0.3)
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


def test_invariant_set_residuals_and_limit_identity(getkey):
    problem = _problem(17, 4, 10, 2, r=3, spread=True)
    net = _net(106, 10, 2, 9, 0.6, 0.6)
    U1, U2, V = _numpy_parts(net, problem)
    v, u = theory.invariant_set_residual(net, problem)
    np.testing.assert_allclose(
        [v, u], [np.linalg.norm(V @ U2.T), np.linalg.norm(U1 @ U2.T)], rtol=1e-10
    )
    proj = flowlin.init.project_to_invariant_set(net, problem)
    np.testing.assert_allclose(theory.invariant_set_residual(proj, problem), 0, atol=1e-12)
    # Same U1, V (so the same growth factor), residual at round-off: the bound drops by as much.
    assert theory.distance_bound(proj, problem) < 1e-14 * theory.distance_bound(net, problem)

    # Run both to convergence, in one vmapped solve: 60 e-folds of ICML Theorem 1's envelope.
    t1 = 60.0 / float(theory.rate_imbalance(net, problem))
    saveat = flowlin.SaveAt(ts=jnp.array([0.0, t1]), diagnostics=("excess_loss", "error_integral"))
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), net, proj)
    trajs = eqx.filter_vmap(
        lambda n: flowlin.gradient_flow(n, problem, t1, saveat=saveat, rtol=1e-11, atol=1e-13)
    )(both)
    assert bool(jnp.all(trajs.succeeded))
    assert bool(jnp.all(trajs.final_values["excess_loss"] <= 1e-18))
    traj = jax.tree.map(lambda x: x[0], trajs)
    final = traj.final_network
    predicted = theory.limit_identity(final, net, problem)
    np.testing.assert_allclose(final.product, predicted, atol=1e-8)
    # ‖W(∞) - W*‖ = ‖V(∞) U2(0)ᵀ‖ (explicit Φ2), and the deterministic and a-posteriori bounds.
    distance = np.linalg.norm(np.asarray(final.product - problem.min_norm))
    np.testing.assert_allclose(distance, np.linalg.norm(np.asarray(final.W2) @ U2.T), rtol=1e-7)
    a_post = theory.distance_bound(net, problem, error_integral=traj.final_values["error_integral"])
    deterministic = theory.distance_bound(net, problem)
    assert distance <= a_post <= deterministic
    # A-posteriori bound from the theory.md §2(f) formula, by hand.
    l1 = float(problem.sigma[0])
    expected = np.hypot(v, u) * np.exp(np.sqrt(l1) * float(traj.final_values["error_integral"]))
    np.testing.assert_allclose(a_post, expected, rtol=1e-12)
    # The projected network converges to the min-norm solution exactly.
    projected_final = jax.tree.map(lambda x: x[1], trajs.final_network)
    np.testing.assert_allclose(projected_final.product, problem.min_norm, atol=1e-8)


def test_wide_network_bound_constants_and_flags(getkey):
    problem = _problem(18, 4, 6, 1)  # whitened: λ1 = λr = 1
    delta = 0.1
    b = np.sqrt(1 + 6) + 0.5 * np.log(2 / delta)
    h0 = max(16 * b**2, 4 * 1 * b**2)
    np.testing.assert_allclose(theory.h0(problem, delta), h0, rtol=1e-12)
    w = theory.wide_network_bound(300, 0.5, delta, problem)
    assert h0 < 300 and w.lemma1_applies and w.theorem2_applies
    np.testing.assert_allclose(w.imbalance, 1.0, rtol=1e-12)  # h^{1-2α} = 1 at α = 1/2
    np.testing.assert_allclose(
        w.invariant_residual, 2 * np.sqrt(1 + 4) * b / np.sqrt(300), rtol=1e-12
    )
    np.testing.assert_allclose(w.product_norm, 2 * b / np.sqrt(300), rtol=1e-12)
    C = np.exp(1 + np.linalg.norm(problem.Y))
    np.testing.assert_allclose(w.distance, 2 * C * np.sqrt(5) * b / np.sqrt(300), rtol=1e-12)
    # α = 0.4: Theorem 2 needs h > h0^{1/0.6}; Lemma 1 only h > h0.
    w = theory.wide_network_bound(300, 0.4, delta, problem)
    np.testing.assert_allclose(w.width_threshold, h0 ** (1 / 0.6), rtol=1e-12)
    assert w.lemma1_applies and not w.theorem2_applies and np.isnan(w.distance)
    np.testing.assert_allclose(w.imbalance, 300**0.2, rtol=1e-12)
    w = theory.wide_network_bound(100, 0.5, delta, problem)  # h <= h0: nothing applies
    assert not w.lemma1_applies and not w.theorem2_applies
    assert all(np.isnan(x) for x in (w.imbalance, w.invariant_residual, w.product_norm, w.distance))


def test_errors_name_the_argument(getkey):
    problem = _problem(19, 4, 6, 1)
    net = _net(107, 6, 1, 5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"wide_network_bound.*alpha must be in \(1/4, 1/2\]"):
        theory.wide_network_bound(100, 0.1, 0.05, problem)
    with pytest.raises(ValueError, match="delta must be in"):
        theory.wide_network_bound(100, 0.5, 1.5, problem)
    with pytest.raises(ValueError, match="delta must be in"):
        theory.quantities(net, problem, delta=0.0)
    with pytest.raises(ValueError, match="h must be a width"):
        theory.wide_network_bound(0, 0.5, 0.05, problem)
    # Wrong types: flowlin's own message, or (tests run with beartype) the annotation check.
    with pytest.raises(TypeError, match="init"):
        theory.rate_imbalance(np.zeros((3, 3)), problem)
    with pytest.raises(TypeError, match="problem"):
        theory.rate_imbalance(net, None)
    with pytest.raises(ValueError, match=r"init.Q and init.K must be \(r\+m\)x\(r\+m\)"):
        theory.rate_imbalance(flowlin.GramInit(Q=jnp.eye(3), K=jnp.eye(3)), problem)
    with pytest.raises(TypeError, match="net"):
        theory.imbalance(flowlin.init.gram_init(net, problem), problem)
    with pytest.raises((ValueError, TypeError), match="theorem"):
        theory.loss_envelope(1.0, net, problem, theorem="lemma")
    other = _net(108, 7, 1, 5, 0.5, 0.5)
    with pytest.raises(ValueError, match="input features"):
        theory.rate_margin(other, problem)


def test_quantities_fixed_keys_jit_vmap(getkey):
    problem = _problem(20, 4, 6, 1)
    keys = set(theory.QUANTITY_KEYS)
    net = _net(5, 6, 1, 400, 400**-0.5, 400**-0.5)  # as flowlin.init.paper(..., alpha=0.5)
    gram = flowlin.init.gram_init(net, problem)
    variants = [
        theory.quantities(net, problem),
        theory.quantities(net, problem, alpha=0.5),
        theory.quantities(gram, problem),
        theory.quantities(gram, problem, width=400, alpha=0.5),
        theory.quantities(net, problem, alpha=0.1),  # outside Theorem 2's range: NaN, no raise
    ]
    for q in variants:
        assert set(q) == keys
        assert all(v.shape == () for v in q.values())
    full, gram_q = variants[1], variants[3]
    for k in keys:  # a network and its GramInit give the same numbers
        np.testing.assert_allclose(full[k], gram_q[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert np.isnan(variants[0]["wide_network_bound"]) and not variants[0]["lemma1_applies"]
    assert np.isnan(variants[2]["width"])
    assert bool(full["theorem2_applies"]) and np.isfinite(full["wide_network_bound"])
    assert np.isnan(variants[4]["width_threshold"]) and not variants[4]["theorem2_applies"]
    # consistent with the individual functions
    np.testing.assert_allclose(full["rate_imbalance"], theory.rate_imbalance(net, problem))
    np.testing.assert_allclose(full["distance_bound"], theory.distance_bound(net, problem))
    np.testing.assert_allclose(
        full["rate_bound_prop1"], theory.instantaneous_rate_bound(net, problem)
    )
    np.testing.assert_allclose(
        full["distance_initial"],
        np.linalg.norm(np.asarray(net.product - problem.min_norm)),
        rtol=1e-10,
    )

    # One compilation for a sweep over widths (zero-padded), alphas and seeds.
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def sweep(keys, widths, alphas):
        def one(key, h, alpha):
            net = flowlin.init.paper(key, 6, 1, h, alpha, pad_to=64)
            return theory.quantities(net, problem, width=h, alpha=alpha)

        return jax.vmap(one)(keys, widths, alphas)

    widths = jnp.array([8, 16, 32, 64])
    alphas = jnp.array([0.5, 0.4, 0.3, 0.5])
    out = sweep(jax.random.split(getkey(), 4), widths, alphas)
    out2 = sweep(jax.random.split(getkey(), 4), widths + 0, alphas * 1.0)
    assert set(out) == keys and all(v.shape == (4,) for v in out.values())
    assert set(out2) == keys


# -- the papers' numbers --------------------------------------------------------------------

#: ICML Fig. 2 legend: c for (σ_U, σ_V).
FIG2 = [((0.1, 0.1), 6.02), ((0.5, 0.02), 39.6), ((0.05, 0.2), 20.1)]
FIG2_SEEDS = 4


def test_fig2_imbalance_constants():
    """ICML Fig. 2 (n=100, D=400, m=1, h=500, whitened): the printed c is
    λr(Λ) + λm(−Λ) (flowlin's `c`), not the rate 2λr(Σ)c (= 2c here, Σ = I)."""
    problem = flowlin.problems.whitened(jax.random.key(2), 100, 400, 1)

    @jax.jit
    def c_of(key, std1, std2):
        net = flowlin.init.gaussian(key, 400, 1, 500, std1, std2)
        return theory.quantities(net, problem)["c"], theory.rate_imbalance(net, problem)

    for (su, sv), printed in FIG2:
        cs, rates = zip(*[c_of(jax.random.key(s), su, sv) for s in range(FIG2_SEEDS)], strict=True)
        c = float(np.mean(cs))
        assert abs(c / printed - 1) < 0.15, (su, sv, c, printed)
        assert abs(float(np.mean(rates)) / printed - 1) > 0.5  # the rate convention is 2x off
        print(
            f"Fig. 2 (σU, σV) = ({su}, {sv}): c = {c:.3f} vs printed {printed} "
            f"({100 * (c / printed - 1):+.1f}%)"
        )


LEMMA1_SEEDS = 128


@pytest.mark.parametrize("alpha", [0.5, 0.375])
def test_lemma1_probability(alpha):
    """ICML Lemma 1 at h > h0: each of its three statements holds in >= 1 - δ of the draws.

    The draws are N(0, h^{-2α}) entries (`flowlin.init.paper`), made with NumPy for speed. All
    three quantities and their bounds scale as h^{-2α} times an α-free quantity, so the events
    do not depend on α for a fixed draw; each α gets its own seeds.
    """
    problem = _problem(3, 4, 6, 1)
    delta = 0.1
    h0 = float(theory.h0(problem, delta))
    h = int(h0 * 1.1) + 1
    bound = theory.wide_network_bound(h, alpha, delta, problem)
    assert bool(bound.lemma1_applies)
    rng = np.random.default_rng(int(alpha * 1000))
    std = h**-alpha
    nets = jax.vmap(flowlin.LinearNetwork)(
        jnp.asarray(std * rng.normal(size=(LEMMA1_SEEDS, h, 6))),
        jnp.asarray(std * rng.normal(size=(LEMMA1_SEEDS, 1, h))),
    )
    q = jax.jit(jax.vmap(lambda net: theory.lemma1_quantities(net, problem)))(nets)
    holds_c = np.asarray(q.imbalance > bound.imbalance)
    holds_res = np.asarray(q.invariant_residual <= bound.invariant_residual)
    holds_prod = np.asarray(q.product_norm <= bound.product_norm)
    freq = [
        float(np.mean(x))
        for x in (holds_c, holds_res, holds_prod, holds_c & holds_res & holds_prod)
    ]
    msg = (
        f"alpha={alpha}, h={h} (h0={h0:.1f}), {LEMMA1_SEEDS} seeds: empirical frequency "
        f"c > h^(1-2α): {freq[0]:.3f}, residual bound: {freq[1]:.3f}, product bound: "
        f"{freq[2]:.3f}, all three: {freq[3]:.3f} (Lemma 1: each >= {1 - delta}); median "
        f"bound/c {float(jnp.median(bound.imbalance / q.imbalance)):.2f}, residual/bound "
        f"{float(jnp.median(q.invariant_residual / bound.invariant_residual)):.2f}, "
        f"product/bound {float(jnp.median(q.product_norm / bound.product_norm)):.2f}"
    )
    print(msg)
    assert min(freq[:3]) >= 1 - delta, msg
