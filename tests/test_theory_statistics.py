"""`flowlin.theory._statistics.InitStatistics` (internal API): an initialization's statistics,
computed once, agree with the public functions, from a network and from its `GramInit`, and
under `jax.jit`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_theory import SHAPES, TOL, numpy_net, numpy_parts, numpy_problem

import flowlin
from flowlin import theory
from flowlin.theory._statistics import InitStatistics


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_statistics_agree_with_the_functions(shape):
    n, D, m, h, r, spread = shape
    problem = numpy_problem(9, n, D, m, r=r, spread=spread)
    net = numpy_net(101, D, m, h, 0.7, 0.5)
    call = "test"
    stats = InitStatistics.of(net, problem, call=call)
    gram = flowlin.init.gram_init(net, problem)
    from_gram = jax.jit(InitStatistics)(gram, problem)
    for name in ("c", "error_norm", "distance_initial", "product_min_singular_value"):
        np.testing.assert_allclose(
            getattr(from_gram, name), getattr(stats, name), atol=TOL, err_msg=name
        )
    np.testing.assert_allclose(
        (stats.spread_plus, stats.spread_minus, stats.c), theory.imbalance_spreads(net, problem)
    )
    np.testing.assert_allclose(stats.eigenvalues, theory.imbalance_eigenvalues(net, problem))
    np.testing.assert_allclose(0.5 * stats.error_norm**2, theory.excess_loss(net, problem))
    np.testing.assert_allclose(
        (stats.residual_v, stats.residual_u1), theory.invariant_set_residual(net, problem)
    )
    q = theory.lemma1_quantities(net, problem)
    np.testing.assert_allclose(
        (stats.c, stats.invariant_residual, stats.product_norm),
        (q.imbalance, q.invariant_residual, q.product_norm),
    )
    # Against the weights themselves (an independent NumPy split).
    U1, _, V = numpy_parts(net, problem)
    np.testing.assert_allclose(stats.product, U1 @ V.T, atol=TOL)
    np.testing.assert_allclose(stats.weight_scale, np.sum(U1**2) + np.sum(V**2), rtol=TOL)
    np.testing.assert_allclose(
        stats.distance_initial,
        np.linalg.norm(np.asarray(net.product - problem.min_norm)),
        rtol=1e-10,
    )
    assert stats.lambda_1_sigma == problem.sigma[0] and stats.lambda_r_sigma == problem.sigma[-1]


def test_statistics_check_their_inputs():
    """Errors name the caller's call (`call=`) and the argument."""
    problem = numpy_problem(19, 4, 6, 1)
    wrong = flowlin.GramInit(Q=jnp.eye(3), K=jnp.eye(3))  # r + m = 5
    with pytest.raises(ValueError, match=r"`my_call\(\.\.\.\)`: init.Q and init.K must be"):
        InitStatistics.of(wrong, problem, call="my_call(...)")
    # Wrong types: flowlin's own message, or (tests run with beartype) the annotation check.
    with pytest.raises(TypeError, match="init"):
        InitStatistics.of(np.zeros((3, 3)), problem, call="my_call(...)")
    with pytest.raises(TypeError, match="problem"):
        InitStatistics.of(numpy_net(1, 6, 1, 5, 0.5, 0.5), None, call="my_call(...)")
