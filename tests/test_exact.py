"""Closed forms (`flowlin.exact`, theory.md §4) against the gram solver, and vice versa."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_gram import rel_fro

import flowlin


#: Asked of the closed forms vs the gram solver (issue 5).
CLOSED_FORM_AGREEMENT = 1e-8
#: The solver's own error must sit far below CLOSED_FORM_AGREEMENT.
TIGHT = dict(solver=dfx.Dopri8(), rtol=1e-12, atol=1e-14, max_steps=20_000)
#: Weights here are O(1): an absolute floor for values that pass near zero, where both the
#: solver (~1e-12 absolute) and the closed form (cancellation in a(t)) lose relative digits.
WEIGHT_ATOL = 1e-10
TS = jnp.array([0.0, 0.3, 1.0, 2.5, 6.0])

# (u0, v0, a, y): a is the input weight along the null direction of X = [1, 0], fixed by the
# flow. Balanced (u0 = ±v0), unbalanced either way, a zero weight, negative target.
SCALAR_CASES = np.array(
    [
        [0.1, 0.1, 0.0, 1.0],
        [0.3, -0.3, 0.5, 2.0],
        [1.5, 0.2, -0.4, 0.7],
        [0.05, 1.2, 0.3, -1.1],
        [0.0, 0.8, 1.0, 0.5],
        [-0.6, 0.4, 0.0, -0.3],
    ]
)


def test_scalar_closed_form(getkey):
    """n = m = h = 1 on X = [1, 0]: W1(t) = [u(t), a], W2(t) = v(t), from `exact.scalar`."""

    @eqx.filter_jit
    def solve(case):
        u0, v0, a, y = case
        problem = flowlin.Problem(jnp.array([[1.0, 0.0]]), jnp.reshape(y, (1, 1)), rank=1)
        net = flowlin.LinearNetwork(jnp.stack([u0, a])[None], jnp.reshape(v0, (1, 1)))
        saves = flowlin.SaveAt(ts=TS, networks=True, diagnostics=("excess_loss",))
        return flowlin.gradient_flow(
            net, problem, TS[-1], saveat=saves, method=flowlin.Gram(), **TIGHT
        )

    traj = jax.vmap(solve)(jnp.asarray(SCALAR_CASES))
    worst = 0.0
    for i, (u0, v0, a, y) in enumerate(SCALAR_CASES):
        u, v = flowlin.exact.scalar(TS, u0, v0, y)
        W1, W2 = traj.networks.W1[i], traj.networks.W2[i]
        np.testing.assert_allclose(W1[:, 0, 0], u, rtol=CLOSED_FORM_AGREEMENT, atol=WEIGHT_ATOL)
        np.testing.assert_allclose(W2[:, 0, 0], v, rtol=CLOSED_FORM_AGREEMENT, atol=WEIGHT_ATOL)
        np.testing.assert_array_equal(W1[:, 0, 1], a)  # U2 never moves
        np.testing.assert_allclose(
            W2[:, 0, 0] * W1[:, 0, 0], u * v, rtol=CLOSED_FORM_AGREEMENT, atol=WEIGHT_ATOL
        )
        worst = max(worst, float(jnp.max(jnp.abs(W1[:, 0, 0] - u) + jnp.abs(W2[:, 0, 0] - v))))
        if abs(u0) == abs(v0):  # the balanced product has its own closed form
            # atol: for w0 < 0 < y the product decays to ~1e-12 by t = 6, where `scalar`
            # (ratios of cosh/sinh terms) keeps only absolute accuracy ~eps·|w0|
            np.testing.assert_allclose(
                u * v, flowlin.exact.balanced_scalar(TS, u0 * v0, y), rtol=1e-12, atol=1e-15
            )
    print(f"scalar: worst |Δu| + |Δv| = {worst:.2e}")


@pytest.mark.parametrize("w0, y", [(0.04, 0.7), (-0.04, 0.7), (0.04, -0.7), (-0.04, -0.7)])
def test_balanced_scalar_is_the_scalar_flow_of_either_sign(w0, y):
    # Every sign of w0 and y: the balanced closed form equals the general one at u0 = ±v0,
    # also at times where e^{2|y|t} overflows (atol: where w decays to 0, `scalar` keeps
    # only absolute accuracy ~eps·|w0|).
    u0 = np.sqrt(abs(w0))
    ts = jnp.concatenate([TS, jnp.array([400.0, 1000.0])])
    u, v = flowlin.exact.scalar(ts, u0, np.sign(w0) * u0, y)
    np.testing.assert_allclose(
        flowlin.exact.balanced_scalar(ts, w0, y), u * v, rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("w0", [0.3, -0.3, 0.0])
def test_balanced_scalar_without_a_target(w0):
    # y = 0 (where exact.scalar has no closed form, k = 0): w' = -2|w|w, against a fine RK4.
    def f(w):
        return -2 * abs(w) * w

    w, dt, out = w0, 1e-3, []
    for k in range(3001):
        if k % 1000 == 0:
            out.append(w)
        a = f(w)
        b = f(w + dt / 2 * a)
        c = f(w + dt / 2 * b)
        d = f(w + dt * c)
        w += dt / 6 * (a + 2 * b + 2 * c + d)
    got = flowlin.exact.balanced_scalar(jnp.array([0.0, 1.0, 2.0, 3.0]), w0, 0.0)
    np.testing.assert_allclose(got, out, rtol=1e-11, atol=1e-15)


# (lam, h) on whitened data with r = 4, m = 2: lam > 0 needs h <= r, lam < 0 needs h <= m.
LAMBDA_CASES = [(0.5, 2), (0.5, 4), (-0.5, 2), (-0.5, 1), (0.0, 3), (0.0, 6)]
PAD = 6


@pytest.mark.slow  # ~20 s on 2 shared cores
def test_lambda_balanced_riccati(getkey):
    """Q(t) = ZZᵀ of λ-balanced flows (Σ = I) from the Riccati closed form vs the gram
    solver; networks zero-padded to one width so that one compiled solver serves all."""
    problem = flowlin.problems.whitened(getkey(), n=4, D=9, m=2)
    r = problem.rank
    nets = [
        flowlin.init.lambda_balanced(getkey(), problem, h, lam, scale=0.5)
        for lam, h in LAMBDA_CASES
    ]
    padded = jax.tree_util.tree_map(
        lambda *x: jnp.stack(x), *[flowlin.init.pad_width(n, PAD) for n in nets]
    )

    @eqx.filter_jit
    def solve(nets):
        saves = flowlin.SaveAt(ts=TS, networks=True, diagnostics=("excess_loss",))
        return jax.vmap(
            lambda n: flowlin.gradient_flow(
                n, problem, TS[-1], saveat=saves, method=flowlin.Gram(), **TIGHT
            )
        )(nets)

    traj = solve(padded)
    worst_Q, worst_E = 0.0, 0.0
    for i, ((lam, _), net) in enumerate(zip(LAMBDA_CASES, nets, strict=True)):
        Z0 = jnp.concatenate([problem.row_part(net.W1), net.W2])
        W1, W2 = traj.networks.W1[i], traj.networks.W2[i]
        Z = jnp.concatenate([problem.Phi1.T @ jnp.swapaxes(W1, 1, 2), W2], axis=1)
        Q = Z @ jnp.swapaxes(Z, 1, 2)
        Q_exact = jax.vmap(flowlin.exact.lambda_balanced_gram, (0, None, None, None))(
            TS, Z0, problem.Y_tilde, lam
        )
        worst_Q = max(worst_Q, rel_fro(Q, Q_exact))
        E_exact = jax.vmap(flowlin.exact.lambda_balanced_error, (0, None, None, None))(
            TS, Z0, problem.Y_tilde, lam
        )
        E = jax.vmap(problem.error)(W2 @ W1)
        worst_E = max(
            worst_E, float(jnp.max(jnp.abs(E - E_exact))) / float(jnp.linalg.norm(problem.Y_tilde))
        )
        np.testing.assert_allclose(
            traj.excess_loss[i], 0.5 * jnp.sum(E_exact**2, axis=(1, 2)), rtol=1e-7, atol=1e-14
        )
    print(f"λ-balanced: worst relative error in Q {worst_Q:.2e}, in E {worst_E:.2e}")
    assert worst_Q < CLOSED_FORM_AGREEMENT and worst_E < CLOSED_FORM_AGREEMENT
    assert r == 4


#: The measured rate approaches ρ∞ like e^{-gap·t}; at the stop (excess 1e-12 of its initial
#: value) the slowest cases are within ~0.4%. The cases where ρ∞ differs from
#: 2√(λ² + 4σ_min²) differ by 10–100%, so this still tells the formulas apart.
ASYMPTOTE_RTOL = 1e-2


def test_asymptotic_rate(getkey):
    problem = flowlin.problems.whitened(getkey(), n=4, D=9, m=2)
    nets = [
        flowlin.init.lambda_balanced(getkey(), problem, h, lam, scale=0.3)
        for lam, h in LAMBDA_CASES
        if h >= 2
    ]  # h >= min(r, m): converges
    cases = [(lam, h) for lam, h in LAMBDA_CASES if h >= 2]
    padded = jax.tree_util.tree_map(
        lambda *x: jnp.stack(x), *[flowlin.init.pad_width(n, PAD) for n in nets]
    )
    excess0 = jax.vmap(lambda n: 0.5 * jnp.sum(problem.error(n.product) ** 2))(padded)

    @eqx.filter_jit
    def late_rates(nets, thresholds):
        saves = flowlin.SaveAt(ts=jnp.array([0.0]), diagnostics=("rate",))
        traj = jax.vmap(
            lambda n, thr: flowlin.gradient_flow(
                n, problem, 500.0, saveat=saves, method=flowlin.Gram(), stop_at_loss=thr, **TIGHT
            )
        )(nets, thresholds)
        return traj.final_values["rate"], traj.reached_threshold

    measured, reached = late_rates(padded, 1e-12 * excess0)
    assert bool(jnp.all(reached))
    s_min = float(jnp.linalg.svd(problem.Y_tilde, compute_uv=False)[-1])
    for (lam, h), rho in zip(cases, measured, strict=True):
        predicted = flowlin.exact.asymptotic_rate_balanced(problem.Y_tilde, lam, width=h)
        print(
            f"λ={lam}, h={h}: ρ∞ = {float(predicted):.6f}, measured {float(rho):.6f}, "
            f"square-case formula {2 * np.sqrt(lam**2 + 4 * s_min**2):.6f}"
        )
        assert abs(float(rho) / float(predicted) - 1) < ASYMPTOTE_RTOL
    # Square case r = m = h: the formula is Tarmoun et al.'s 2√(λ² + 4σ_min²).
    Y = jax.random.normal(getkey(), (3, 3))
    s = float(jnp.linalg.svd(Y, compute_uv=False)[-1])
    for lam in (-0.7, 0.0, 1.3):
        np.testing.assert_allclose(
            flowlin.exact.asymptotic_rate_balanced(Y, lam),
            2 * np.sqrt(lam**2 + 4 * s**2),
            rtol=1e-13,
        )


def test_bad_inputs(getkey):
    with pytest.raises(ValueError, match=r"exact\.scalar.*degenerate"):
        flowlin.exact.scalar(1.0, 0.5, -0.5, 0.0)
    problem = flowlin.problems.whitened(getkey(), n=4, D=9, m=2)
    net = flowlin.init.lambda_balanced(getkey(), problem, 2, 0.5)
    Z0 = jnp.concatenate([problem.row_part(net.W1), net.W2])
    with pytest.raises(ValueError, match=r"lambda_balanced_gram.*Z0 must have r \+ m = 6 rows"):
        flowlin.exact.lambda_balanced_gram(1.0, Z0[:5], problem.Y_tilde, 0.5)
    with pytest.raises(ValueError, match=r"lambda_balanced_gram.*not λ-balanced"):
        flowlin.exact.lambda_balanced_gram(1.0, Z0, problem.Y_tilde, 0.2)
    with pytest.raises(ValueError, match=r"asymptotic_rate_balanced.*pass width"):
        flowlin.exact.asymptotic_rate_balanced(problem.Y_tilde, 0.5)
    with pytest.raises(ValueError, match=r"asymptotic_rate_balanced.*does not converge"):
        flowlin.exact.asymptotic_rate_balanced(problem.Y_tilde, 0.5, width=1)
    with pytest.raises(ValueError, match=r"asymptotic_rate_balanced.*lam < 0 needs width <= m"):
        flowlin.exact.asymptotic_rate_balanced(problem.Y_tilde, -0.5, width=3)
