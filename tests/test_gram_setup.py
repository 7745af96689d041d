"""The gram method's setup from weights (`flowlin._method._gram.from_network`): the one-pass
Cholesky QR route and the Householder route give the numbers of the formulas they replaced
(docs/theory.md §3), at the same state and along whole trajectories, to 1e-10."""

import diffrax as dfx
import jax
import jax.numpy as jnp
import pytest
from helpers_gram import gaussian_net, random_problem, rel_err, rel_fro

import flowlin
from flowlin._method._gram import from_network


#: Identities evaluated at the same state: only round-off separates them (float64, k ≤ 10).
IDENTITY_RTOL = 1e-10
#: Compare ratios of round-off only while the excess loss is above this fraction of its start.
RESOLVED_EXCESS = 1e-6

# -- the O(h·D·(r+m)) setup against the formulas it replaced ----------------------------------


def _old_setup(net, problem):
    """What the setup computed before it avoided the h×D null-space part of W1: the null part
    W1(I − Φ1Φ1ᵀ) formed per hidden unit, projected on Ω afterwards; K from the same; the
    weights rebuilt from (Z − L)Ω; the limit identity from the null part."""
    S = problem.sqrt_sigma[:, None]
    Z0 = jnp.concatenate([S * (problem.Phi1.T @ net.W1.T), net.W2], axis=0)  # k×h
    null = net.W1 - (net.W1 @ problem.Phi1) @ problem.Phi1.T  # h×D
    Omega = None
    if net.width > Z0.shape[0]:
        Qh, R = jnp.linalg.qr(Z0.T)
        L, Omega, N = R.T, Qh.T, Qh.T @ null
    else:
        L, N = Z0, null
    G0 = null.T @ Z0.T
    return L, N @ N.T, Omega, G0.T @ G0, null


def _old_rebuild(Z, L, net, Omega, problem):
    r = problem.rank
    dZ = Z - L if Omega is None else (Z - L) @ Omega
    W1 = net.W1 + (dZ[:r] / problem.sqrt_sigma[:, None]).T @ problem.Phi1.T
    return W1, net.W2 + dZ[r:]


@pytest.mark.parametrize(
    "h, std2, route",
    [(3, 0.9, None), (40, 0.9, True), (40, 1e-5, False)],
    ids=["h<=r+m (Omega=I)", "well conditioned (Cholesky QR)", "ill conditioned (Householder)"],
)
def test_cheap_setup_equals_the_null_space_formulas(h, std2, route, getkey):
    """The setup that touches the weights only through products with h×(r+m) matrices gives
    the numbers of the formulas that formed W1's h×D null-space part and took a Householder
    QR of Z0ᵀ (to round-off, 1e-10), by either factorization route: the factor's invariants
    LLᵀ = Q0 and LJLᵀ = K (L itself is unique only up to an orthogonal factor), the rebuilt
    weights of any reduced state, `gram_init`'s Q and K and the limit identity of
    `check_bounds`."""
    from flowlin._method._gram import reconstruct_network
    from flowlin.theory._distance import limit_identity_of

    n, D, m, r = 6, 13, 2, 4
    problem = random_problem(getkey(), n, D, m, r)
    net = gaussian_net(getkey(), D, m, h, 0.7, std2)
    k, w = r + m, min(h, r + m)
    Z = jax.random.normal(getkey(), (k, w))  # any reduced state

    @jax.jit
    def both(net, problem, Z):
        L, J, frame, Q0 = from_network(net, problem)
        # The same reduced state in the new factor's coordinates: Z_new = Z_old·(L_old⁺L_new)
        # keeps Z_new Ω_new = Z_old Ω_old (Ω = L⁺Z0 on either route).
        L_old = _old_setup(net, problem)[0]
        Z_new = Z @ (jnp.linalg.pinv(L_old) @ L)
        new = dict(L=L @ L.T, J=L @ J @ L.T, Q0=Q0, route=frame.cholesky)
        new["net"] = reconstruct_network(Z_new, L, frame, problem)
        gram = flowlin.init.gram_init(net, problem)
        new |= dict(Q=gram.Q, K=gram.K, limit=limit_identity_of(new["net"], net, problem))
        L0, J0, Omega0, K0, null0 = _old_setup(net, problem)
        W1, W2 = _old_rebuild(Z, L0, net, Omega0, problem)
        Z0 = L0 if Omega0 is None else L0 @ Omega0
        limit = problem.min_norm + W2 @ null0
        old = dict(L=L0 @ L0.T, J=L0 @ J0 @ L0.T, W1=W1, W2=W2, Q=Z0 @ Z0.T, K=K0, limit=limit)
        old["Q0"] = old["Q"]
        return new, old

    new, old = both(net, problem, Z)
    assert route is None if new["route"] is None else bool(new["route"]) == route
    assert float(jnp.max(jnp.abs(old["K"]))) > 1e-2  # a real null-space part
    for name in ("L", "J", "Q", "Q0", "K", "limit"):
        assert rel_fro(new[name], old[name]) < IDENTITY_RTOL, name
    assert rel_fro(new["net"].W1, old["W1"]) < IDENTITY_RTOL
    assert rel_fro(new["net"].W2, old["W2"]) < IDENTITY_RTOL


def test_cholesky_route_gives_the_householder_trajectory(getkey, monkeypatch):
    """A whole `Gram()` solve from weights by the Cholesky-QR setup (the default for a
    well-conditioned wide init) equals the same solve by the Householder QR setup it replaced,
    to 1e-10: every diagnostic at every save time, the final network and Q0's fingerprint."""
    import flowlin._method._gram as gram_module

    problem = random_problem(getkey(), 6, 13, 2, 4)
    net = gaussian_net(getkey(), 13, 2, 60, 0.1, 0.12)  # NTK-like scale: rates O(1)

    def solve():
        jax.clear_caches()  # the route is chosen while tracing
        # Tight enough that each run's own error (~1e-12) is far below 1e-10: the routes'
        # round-off may flip one borderline step acceptance, which must not matter.
        tight = dict(solver=dfx.Dopri8(), rtol=1e-13, atol=1e-15)
        return flowlin.gradient_flow(net, problem, 10.0, method=flowlin.Gram(), **tight)

    cholesky = solve()
    assert bool(from_network(net, problem)[2].cholesky)  # this init takes the new route
    monkeypatch.setattr(gram_module, "_CHOLESKY_MIN_EIGEN_RATIO", 2.0)  # never Cholesky
    assert not bool(from_network(net, problem)[2].cholesky)
    householder = solve()
    assert bool(cholesky.succeeded) and bool(householder.succeeded)
    # Both routes start from the same state (L with a non-negative diagonal) to round-off.
    # Ratios of round-off (the rate, σ_min once the loss is at its floor) are compared only
    # while the excess loss is resolved.
    resolved = householder.excess_loss >= RESOLVED_EXCESS * householder.excess_loss[0]
    assert int(jnp.sum(resolved)) >= 5
    for name in flowlin.DIAGNOSTICS:
        a, b = getattr(cholesky, name), getattr(householder, name)
        if name == "u2_drift":
            assert float(jnp.max(jnp.abs(a))) == 0.0 == float(jnp.max(jnp.abs(b)))
            continue
        if name == "imbalance_drift":  # round-off of a conserved quantity, already relative
            assert float(jnp.max(jnp.abs(a - b))) < 1e-12
            continue
        if name in ("rate", "excess_loss", "product_min_singular_value"):
            a, b = a[resolved], b[resolved]
        if name == "error_integral":  # 0 at t = 0
            a, b = a[1:], b[1:]
        assert rel_err(a, b) < IDENTITY_RTOL, name
    for new, old in zip(
        jax.tree.leaves(cholesky.final_network), jax.tree.leaves(householder.final_network)
    ):
        assert rel_fro(new, old) < IDENTITY_RTOL
    assert rel_err(cholesky.init_fingerprint, householder.init_fingerprint) < IDENTITY_RTOL
