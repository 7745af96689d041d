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
