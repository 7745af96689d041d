"""`flowlin.init.wishart`: the statistics (Q0, K) of a Gaussian initialization at any width,
sampled without the weights, against materialised Gaussian networks."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_gram import random_problem
from scipy import stats

import flowlin
from flowlin._wishart import bartlett


#: Two-sample Kolmogorov–Smirnov tests (fixed keys, so deterministic): a correct sampler fails
#: one with probability P_MIN per statistic; a wrong distribution shows p-values ~ 0.
P_MIN = 1e-3
#: Sample means must lie within this many standard errors of their target.
N_SE = 5.0

SHAPE = (6, 10, 2, 4)  # n, D, m, r: k = r + m = 6, D - r = 6
STD1, STD2 = 0.7, 1.3


@functools.partial(jax.jit, static_argnums=(2,))
def materialised(keys, problem, h: int):
    """gram_init of Gaussian networks of width h, one per key (what wishart must match)."""
    D, m = problem.D, problem.m
    return jax.vmap(
        lambda k: flowlin.init.gram_init(flowlin.init.gaussian(k, D, m, h, STD1, STD2), problem)
    )(keys)


@eqx.filter_jit
def sampled(keys, problem, h, std1=STD1, std2=STD2):
    return jax.vmap(lambda k: flowlin.init.wishart(k, problem, h, std1, std2))(keys)


def _T(problem):
    return jnp.concatenate([STD1 * problem.sqrt_sigma, jnp.full((problem.m,), STD2)])


@pytest.mark.parametrize("dof", [3, 9])  # singular (dof < k) and regular
def test_bartlett_factor_moments(dof):
    """LLᵀ ~ Wishart_k(dof, I): E = dof·I, Var(W_ii) = 2 dof, Var(W_ij) = dof (i ≠ j), and
    rank min(k, dof) — also in the singular extension."""
    k, n = 6, 20_000
    L = jax.vmap(lambda key: bartlett(key, k, dof, jnp.float64))(
        jax.random.split(jax.random.key(0), n)
    )
    W = np.asarray(L @ jnp.swapaxes(L, 1, 2))
    mean, var = W.mean(0), W.var(0)
    var_target = dof * (1 + np.eye(k))
    assert np.all(np.abs(mean - dof * np.eye(k)) < N_SE * np.sqrt(var_target / n))
    # Var of a sample variance ≈ (μ4 - σ⁴)/n; with ~χ²-like tails, 2σ⁴·(1 + 6/dof)/n bounds it.
    assert np.all(np.abs(var - var_target) < N_SE * np.sqrt(2 * var_target**2 * (1 + 6 / dof) / n))
    ranks = np.linalg.matrix_rank(W[:50], tol=1e-9)
    assert np.all(ranks == min(k, dof))


@pytest.mark.parametrize("h", [2, 30])  # h < r + m (singular Q0) and h > r + m
def test_same_distribution_as_materialised_gaussian_init(h, getkey):
    n_samples = 3000
    problem = random_problem(getkey(), *SHAPE)
    ours = sampled(jax.random.split(getkey(), n_samples), problem, h)
    theirs = materialised(jax.random.split(getkey(), n_samples), problem, h)
    T = _T(problem)
    p = SHAPE[1] - SHAPE[3]
    # Exact means: E Q0 = h T², E K = std1² h (D - r) T² (module docstring of _wishart).
    targets = {"Q": h * jnp.diag(T**2), "K": STD1**2 * h * p * jnp.diag(T**2)}
    for name, target in targets.items():
        for sample in (ours, theirs):
            x = np.asarray(getattr(sample, name))
            se = x.std(0) / np.sqrt(n_samples) + 1e-12
            assert np.all(np.abs(x.mean(0) - np.asarray(target)) < N_SE * se), name
    statistics = {
        "Q[0,0]": lambda g: g.Q[:, 0, 0],
        "Q[0,r]": lambda g: g.Q[:, 0, SHAPE[3]],  # a U1–V cross term
        "Q[r,r+1]": lambda g: g.Q[:, SHAPE[3], SHAPE[3] + 1],
        "tr K": lambda g: jnp.trace(g.K, axis1=1, axis2=2),
        "K[1,r]": lambda g: g.K[:, 1, SHAPE[3]],
        "λmax(K)": lambda g: jnp.linalg.eigvalsh(g.K)[:, -1],
        "λmax(Q)": lambda g: jnp.linalg.eigvalsh(g.Q)[:, -1],
        "det of Q's top 2x2": lambda g: g.Q[:, 0, 0] * g.Q[:, 1, 1] - g.Q[:, 0, 1] ** 2,
    }
    pvalues = {
        name: stats.ks_2samp(np.asarray(f(ours)), np.asarray(f(theirs))).pvalue
        for name, f in statistics.items()
    }
    print(f"h={h}: KS p-values {pvalues}")
    assert min(pvalues.values()) > P_MIN, pvalues


@pytest.mark.slow  # ~20 s on 2 shared cores
def test_final_distance_at_width_2000_matches_materialised_inits(getkey):
    """Issue 5: mean and spread of the final distance to the min-norm solution at h = 2000,
    over 256 seeds, from Wishart-sampled statistics vs materialised Gaussian networks (NTK
    scaling, std 1/√h), both integrated by the gram solver."""
    h, n_seeds, t1 = 2000, 256, 30.0
    problem = random_problem(getkey(), *SHAPE)
    std = 1.0 / np.sqrt(h)
    saves = flowlin.SaveAt(ts=jnp.array([t1]), diagnostics=("distance_to_min_norm", "excess_loss"))

    @eqx.filter_jit
    def final_distances(inits):
        run = lambda g: flowlin.gradient_flow(g, problem, t1, saveat=saves, method=flowlin.Gram())  # noqa: E731
        traj = jax.vmap(run)(inits)
        return traj.distance_to_min_norm[:, -1], traj.excess_loss[:, -1], traj.succeeded

    @jax.jit
    def gaussian_stats(keys):
        D, m = problem.D, problem.m
        return jax.vmap(
            lambda k: flowlin.init.gram_init(flowlin.init.gaussian(k, D, m, h, std, std), problem)
        )(keys)

    a, ea, oka = final_distances(sampled(jax.random.split(getkey(), n_seeds), problem, h, std, std))
    b, eb, okb = final_distances(gaussian_stats(jax.random.split(getkey(), n_seeds)))
    assert bool(jnp.all(oka)) and bool(jnp.all(okb))
    assert float(jnp.max(ea)) < 1e-8 and float(jnp.max(eb)) < 1e-8  # converged: distance final
    a, b = np.asarray(a), np.asarray(b)
    ks = stats.ks_2samp(a, b)
    se_mean = np.sqrt(a.var(ddof=1) / n_seeds + b.var(ddof=1) / n_seeds)
    # Standard error of a sample standard deviation: s·sqrt((κ - 1)/(4n)) with κ the kurtosis.
    kurt = stats.kurtosis(np.concatenate([a - a.mean(), b - b.mean()]), fisher=False)
    se_std = np.sqrt((kurt - 1) / (4 * n_seeds)) * np.sqrt(a.var() + b.var())
    print(
        f"h={h}, {n_seeds} seeds: wishart mean {a.mean():.5f} std {a.std(ddof=1):.5f}; "
        f"materialised mean {b.mean():.5f} std {b.std(ddof=1):.5f}; "
        f"KS D={ks.statistic:.4f} p={ks.pvalue:.3f}; "
        f"mean diff {abs(a.mean() - b.mean()) / se_mean:.2f} SE, "
        f"std diff {abs(a.std(ddof=1) - b.std(ddof=1)) / se_std:.2f} SE"
    )
    assert ks.pvalue > P_MIN
    assert abs(a.mean() - b.mean()) < N_SE * se_mean
    assert abs(a.std(ddof=1) - b.std(ddof=1)) < N_SE * se_std


def test_any_width_costs_the_same_and_h_may_be_traced(getkey):
    """h = 10⁹ works (law of large numbers: Q0/h → T² to ~1/√h), and a traced h gives the
    same draw as a concrete one."""
    problem = random_problem(getkey(), *SHAPE)
    key = getkey()
    huge = flowlin.init.wishart(key, problem, 10**9, STD1, STD2)
    T = np.asarray(_T(problem))
    assert np.allclose(np.asarray(huge.Q) / 1e9, np.diag(T**2), atol=1e-3 * T.max() ** 2)
    traced = jax.jit(lambda h: flowlin.init.wishart(key, problem, h, STD1, STD2))(10**9)
    np.testing.assert_array_equal(np.asarray(traced.Q), np.asarray(huge.Q))
    np.testing.assert_array_equal(np.asarray(traced.K), np.asarray(huge.K))
    std = 1e-9**0.5  # NTK scaling: O(1) statistics at any width
    ntk = flowlin.init.wishart(key, problem, 10**9, std, std)
    traj = flowlin.gradient_flow(ntk, problem, 20.0, method=flowlin.Gram())
    assert bool(traj.succeeded)
    assert float(traj.excess_loss[-1]) < 1e-6 * float(traj.excess_loss[0])


def test_full_column_rank_has_no_null_space(getkey):
    """r = D (matrix factorization): U2 is empty, K = 0."""
    problem = flowlin.problems.factorization(getkey(), n=4, m=2)
    init = flowlin.init.wishart(getkey(), problem, 50, 0.3, 0.3)
    assert init.Q.shape == (6, 6) and bool(jnp.all(init.K == 0))


def test_bad_inputs(getkey):
    problem = random_problem(getkey(), *SHAPE)
    key = getkey()
    with pytest.raises(ValueError, match=r"wishart.*std1 must be finite and >= 0"):
        flowlin.init.wishart(key, problem, 10, -0.1, 1.0)
    with pytest.raises(ValueError, match=r"wishart.*std2 must be finite and >= 0"):
        flowlin.init.wishart(key, problem, 10, 0.1, -1.0)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match=r"wishart.*h must be an integer >= 1"):
            flowlin.init.wishart(key, problem, bad, 0.1, 0.1)
    # (The type checker of the test suite refuses it first; both messages name call and h.)
    with pytest.raises((ValueError, TypeError), match=r"wishart[\s\S]*h"):
        flowlin.init.wishart(key, problem, np.array([10, 20]), 0.1, 0.1)
