"""`flowlin.theory`, §2(e)–(f): invariant-set residuals against explicit Φ2, the limit identity
and the distance bounds along a computed flow."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from helpers_theory import numpy_net, numpy_parts, numpy_problem

import flowlin
from flowlin import theory


def test_invariant_set_residuals_and_limit_identity(getkey):
    problem = numpy_problem(17, 4, 10, 2, r=3, spread=True)
    net = numpy_net(106, 10, 2, 9, 0.6, 0.6)
    U1, U2, V = numpy_parts(net, problem)
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


def test_invariant_set_residuals_at_extreme_float32_scales():
    """The residuals are quadratic in the weights, K quartic: float32 weights of 1e-12 give K
    of 1e-48 (0) and of 1e10, 1e40 (inf). Formed at unit scale, they equal float64 NumPy's
    from the same float32 weights (‖VU₂ᵀ‖, ‖U₁U₂ᵀ‖ with U = ΦᵀW₁ᵀ), at 1e-12, 1 and 1e10:
    from `invariant_set_residual` and from the statistics every other result reads
    (`theory.quantities`, as in `check_bounds` and a sweep)."""
    f32 = jnp.float32
    p64 = flowlin.problems.gaussian(jax.random.key(0), n=6, D=12, m=2)
    p32 = flowlin.Problem(p64.X.astype(f32), p64.Y.astype(f32))
    base = flowlin.init.paper(jax.random.key(1), 12, 2, 20, 0.5)
    Phi1 = np.asarray(p64.Phi1)
    for s in (1e-12, 1.0, 1e10):
        net = flowlin.LinearNetwork((s * base.W1).astype(f32), (s * base.W2).astype(f32))
        W1, W2 = np.asarray(net.W1, np.float64), np.asarray(net.W2, np.float64)
        U2t = W1 - W1 @ Phi1 @ Phi1.T  # U₂ᵀΦ₂ᵀ: the same norms after any left factor
        want = (np.linalg.norm(W2 @ U2t), np.linalg.norm(Phi1.T @ W1.T @ U2t))
        got = flowlin.theory.invariant_set_residual(net, p32)
        np.testing.assert_allclose([float(g) for g in got], want, rtol=1e-4, err_msg=str(s))
        q = flowlin.theory.quantities(net, p32)
        got = [float(q["residual_v"]), float(q["residual_u1"])]
        np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=f"quantities, {s}")
