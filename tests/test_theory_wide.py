"""`flowlin.theory`, §2(g): ICML Lemma 1 and Theorem 2 (hand-evaluated constants, flags, and
Lemma 1's probability over random draws)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_theory import numpy_problem

import flowlin
from flowlin import theory


def test_wide_network_bound_constants_and_flags(getkey):
    problem = numpy_problem(18, 4, 6, 1)  # whitened: λ1 = λr = 1
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


LEMMA1_SEEDS = 128


@pytest.mark.parametrize("alpha", [0.5, 0.375])
def test_lemma1_probability(alpha):
    """ICML Lemma 1 at h > h0: each of its three statements holds in >= 1 - δ of the draws.

    The draws are N(0, h^{-2α}) entries (`flowlin.init.paper`), made with NumPy for speed. All
    three quantities and their bounds scale as h^{-2α} times an α-free quantity, so the events
    do not depend on α for a fixed draw; each α gets its own seeds.
    """
    problem = numpy_problem(3, 4, 6, 1)
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
