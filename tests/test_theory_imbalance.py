"""`flowlin.theory`, §2(a): the imbalance, its spectrum and spreads against an independent
h x h eigendecomposition, theory.md's index conventions, and ICML Fig. 2's printed constants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_theory import SHAPES, TOL, indexed, numpy_net, numpy_parts, numpy_problem

import flowlin
from flowlin import theory
from flowlin.reproduce.paper import PAPER_C


@pytest.mark.parametrize("shape", SHAPES)
def test_imbalance_spectrum_matches_h_by_h(shape, getkey):
    n, D, m, h, r, spread = shape
    problem = numpy_problem(9, n, D, m, r=r, spread=spread)
    assert problem.rank == r
    net = numpy_net(101, D, m, h, 0.7, 0.5)
    U1, U2, V = numpy_parts(net, problem)
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
    lam_1, lam_r = max(eig[0], 0), max(indexed(eig, r), 0)
    neg_1, neg_m = max(neg[0], 0), max(indexed(neg, m), 0)
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
    problem = numpy_problem(10, 5, 12, 3)
    # h = 2 < m < r: Λ (2×2) has no r-th eigenvalue and no m-th eigenvalue of -Λ.
    net = numpy_net(102, 12, 3, 2, 1.0, 1.0)
    q = theory.quantities(net, problem)
    assert q["lambda_r"] == 0 and q["lambda_m_neg"] == 0 and q["c"] == 0
    assert q["rate_imbalance"] == 0 and not q["theorem1_applies"]
    assert q["distance_bound"] == jnp.inf
    # h = 3 >= m: the m-th eigenvalue of -Λ exists.
    net = numpy_net(103, 12, 3, 3, 0.01, 1.0)
    q = theory.quantities(net, problem)
    assert q["lambda_r"] == 0 and q["lambda_m_neg"] > 0 and q["theorem1_applies"]


def test_balanced_init_has_zero_c(getkey):
    problem = numpy_problem(11, 4, 10, 2)
    net = flowlin.init.balanced_like(numpy_net(1, 10, 2, 8, 0.5, 0.5), problem)
    # balanced_like leaves U2 = 0 only if the product has no null-space part; Λ = 0 anyway.
    np.testing.assert_allclose(theory.imbalance(net, problem), 0, atol=TOL)
    dp, dm, c = theory.imbalance_spreads(net, problem)
    assert dp == 0 and dm == 0 and c == 0
    assert theory.rate_imbalance(net, problem) == 0


# -- the papers' numbers ---------------------------------------------------------------------


#: ICML Fig. 2 legend: c for (σ_U, σ_V), from the papers' numbers' one home.
FIG2 = list(PAPER_C.items())


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
