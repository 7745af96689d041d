"""docs/theory.md §2(h): the exact law of the implicit-bias gap.

The law's arithmetic is checked against SciPy's chi distribution (m = 1) and against an
independent numerical convolution (m = 2); the law itself against the flow: over 1000 seeds
on three problems (r = n, r < n, m = 2) the gaps of converged Gaussian-init flows pass the
goodness-of-fit and mean tests at the 1% level. Inits outside the premises (on the invariant
set) are a negative control: there the gap is exactly 0 and the law is rejected.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

import flowlin
from flowlin.theory import DistanceLaw, distance_law, law_fit, wide_limit_law


def test_m1_law_is_the_scaled_chi_distribution():
    w, k = 0.37, 7
    law = DistanceLaw(jnp.asarray([w]), k)
    d = np.array([0.2, 0.9, 1.6, 3.0])
    np.testing.assert_allclose(law.cdf(d), stats.chi.cdf(d / np.sqrt(w), k), atol=1e-14)
    np.testing.assert_allclose(law.mean(), np.sqrt(w) * stats.chi.mean(k), rtol=1e-13)
    np.testing.assert_allclose(law.quantile(0.9), np.sqrt(w) * stats.chi.ppf(0.9, k), rtol=1e-10)
    np.testing.assert_allclose(law.mean_square(), k * w, rtol=1e-15)
    np.testing.assert_allclose(law.variance_square(), stats.chi2.var(k) * w**2, rtol=1e-13)


def convolution_cdf(x, w1, w2, k):
    """P(w1·A + w2·B ≤ x), A, B ~ χ²_k independent, by quadrature over B."""
    f = lambda b: stats.chi2.cdf((x - w2 * b) / w1, k) * stats.chi2.pdf(b, k)  # noqa: E731
    return integrate.quad(f, 0, x / w2, epsabs=1e-13, epsrel=1e-12, limit=200)[0]


@pytest.mark.parametrize("w, k", [((0.3, 0.05), 5), ((1.0, 0.6), 1), ((2.0, 0.25), 12)])
def test_m2_law_matches_a_numerical_convolution(w, k):
    law = DistanceLaw(jnp.asarray(w), k)
    for d in (0.3, 1.0, 2.0, 4.0):
        expected = convolution_cdf(d**2, *w, k)
        np.testing.assert_allclose(law.cdf(d), expected, atol=1e-8)
    # E d = ∫ (1 − F), an independent route to the mean (Simpson's rule on a fine grid)
    grid = np.linspace(0.0, 40.0, 4001)
    mean = integrate.simpson(1 - np.asarray(law.cdf(jnp.asarray(grid))), x=grid)
    np.testing.assert_allclose(law.mean(), mean, rtol=1e-7)
    q = float(law.quantile(0.25))
    np.testing.assert_allclose(convolution_cdf(q**2, *w, k), 0.25, atol=1e-8)


def test_law_is_nan_not_wrong_where_its_series_is_too_short():
    law = DistanceLaw(jnp.asarray([1.0, 1e-4]), 6, n_terms=64)
    assert np.isnan(law.cdf(1.0)) and np.isnan(law.mean())


def test_zero_weights_are_a_point_mass_at_zero():
    law = DistanceLaw(jnp.zeros(2), 5)
    assert float(law.cdf(0.0)) == 1.0 and float(law.mean()) == 0.0


def test_no_law_gives_nan_numbers_not_a_certain_gap():
    # NaN weights mark "no law" (run_law outside the premises): every number is NaN. They used
    # to read as zero weights, i.e. a gap of exactly 0 with probability 1.
    law = DistanceLaw(jnp.asarray([jnp.nan, 1.0]), 4)
    assert np.isnan(law.cdf(1.0)) and np.isnan(law.quantile(0.5)) and np.isnan(law.mean())


def test_quantile_takes_probabilities_only_and_any_shape():
    law = DistanceLaw(jnp.asarray([0.37]), 7)
    ps = jnp.asarray([0.1, 0.5, 0.9])
    want = np.sqrt(0.37) * stats.chi.ppf(np.asarray(ps), 7)  # the m = 1 closed form
    np.testing.assert_allclose(law.quantile(ps), want, rtol=1e-10)  # an unbatched law, 3 p's
    # Traced (no concrete check possible): outside [0, 1] the quantile is NaN, not a number.
    out = jax.jit(lambda p: law.quantile(p))(jnp.asarray([-0.2, 0.5, 1.5]))
    assert np.isnan(out[0]) and np.isnan(out[2])
    np.testing.assert_allclose(out[1], np.sqrt(0.37) * stats.chi.ppf(0.5, 7), rtol=1e-10)


def test_a_batch_of_networks_gives_each_its_own_law():
    # Batch axes lead (as for the Gram V(∞)V(∞)ᵀ); a batched W2 was transposed whole before.
    problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=6, m=2)
    keys = jax.random.split(jax.random.key(1), 3)
    nets = [flowlin.init.gaussian(k, 6, 2, 5, 0.5, 0.5) for k in keys]
    batch = jax.tree.map(lambda *x: jnp.stack(x), *nets)
    each = np.stack([distance_law(n, 0.5, problem).weights for n in nets])
    np.testing.assert_allclose(distance_law(batch, 0.5, problem).weights, each, rtol=1e-13)


def test_a_diverged_run_has_no_law_not_an_error():
    # Gradient descent with a step far too large: the final Gram is not finite. run_law marks
    # the run unusable with a NaN law (as it does inside a sweep), where distance_law, given
    # such a Gram by hand, refuses it.
    problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=6, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=6, m=1, h=12, alpha=0.5)
    gd = flowlin.gradient_descent(net, problem, 50.0, 200)
    assert not bool(gd.succeeded)
    run = flowlin.theory.run_law(gd, 12**-0.5, problem)
    assert np.all(np.isnan(run.law.weights)) and not bool(run.usable)
    with pytest.raises(ValueError, match="non-finite"):
        distance_law(gd.final_output_gram, 12**-0.5, problem)


def test_point_mass_laws_are_not_checked_not_rejected():
    # Every weight 0 (or no null space, dof 0): d = 0 exactly under the law, and a d of 0
    # agrees with it. KS on F(0) = 1 would "reject"; there is nothing to test.
    for law in (DistanceLaw(jnp.zeros((25, 1)), 3), DistanceLaw(jnp.ones((25, 1)), 0)):
        fit = law_fit(np.zeros(25), law)
        assert fit.status == "not checked" and "point mass" in fit.reason


# -- the law against the flow ------------------------------------------------------------------

SEEDS = 1000


def _problem(kind):
    key = jax.random.PRNGKey({"full_rank": 1, "rank_deficient": 2, "two_outputs": 3}[kind])
    k1, k2, k3 = jax.random.split(key, 3)
    if kind == "full_rank":  # r = n = 5 < D = 12, m = 1
        X = jax.random.normal(k1, (5, 12))
        Y = jax.random.normal(k2, (5, 1))
    elif kind == "rank_deficient":  # r = 3 < n = 6 < D = 10, m = 1
        X = jax.random.normal(k1, (6, 3)) @ jax.random.normal(k3, (3, 10))
        Y = jax.random.normal(k2, (6, 1))
    else:  # r = n = 4 < D = 9, m = 2
        X = jax.random.normal(k1, (4, 9))
        Y = jax.random.normal(k2, (4, 2))
    return flowlin.Problem(X, Y)


#: The flows' horizon. Every seed's excess loss is at the arithmetic's floor by t = 10 (its
#: row-space part ≤ 1e-15·d² over 100 seeds of each problem here); past that an explicit
#: solver only takes stability-limited steps (60 cost 3× as much). The tests assert convergence.
T1 = 20.0


def gaps(problem, init, seeds=SEEDS):
    """Final gaps and the final networks of converged Gram flows, one per seed."""
    h, std1, std2 = 12, 12**-0.5, 0.7

    def one(key):
        net = init(key, problem, h, std1, std2)
        traj = flowlin.gradient_flow(
            net, problem, T1, saveat=jnp.asarray([0.0, T1]), method=flowlin.Gram()
        )
        return traj.final_values["distance_to_min_norm"], traj.final_network, traj.excess_loss

    d, final, loss = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(7), seeds))
    return d, final, loss, std1


def gaussian(key, problem, h, std1, std2):
    return flowlin.init.gaussian(key, problem.D, problem.m, h, std1, std2)


@pytest.mark.parametrize("kind", ["full_rank", "rank_deficient", "two_outputs"])
def test_gap_follows_its_exact_law_over_1000_seeds(kind):
    problem = _problem(kind)
    d, final, loss, std1 = gaps(problem, gaussian)
    # converged: the row-space part of the gap, ‖Σ^{-1/2}E‖² ≤ 2(L − L*)/λ_r, is negligible
    row_space = 2 * np.asarray(loss[:, -1]) / float(problem.sigma[-1])
    assert np.all(row_space <= 1e-12 * np.asarray(d) ** 2)
    law = jax.vmap(lambda f: distance_law(f, std1, problem))(final)
    fit = law_fit(d, law, level=0.99)
    assert fit.status == "consistent", fit.reason
    assert fit.n == SEEDS and fit.ks_pvalue >= 0.01
    assert fit.ci_low <= fit.mean_square <= fit.ci_high
    # the exact expectation is (D − r)·σ1²·mean‖V(∞)‖²
    v2 = np.sum(np.asarray(final.W2) ** 2, axis=(1, 2))
    np.testing.assert_allclose(
        fit.expected_mean_square, (problem.D - problem.rank) * std1**2 * v2.mean(), rtol=1e-12
    )


def test_negative_control_invariant_set_init_breaks_the_law():
    """Projected onto the invariant set the gap is exactly 0: the law's premises fail."""
    problem = _problem("full_rank")

    def projected(key, problem, h, std1, std2):
        return flowlin.init.project_to_invariant_set(gaussian(key, problem, h, std1, std2), problem)

    d, final, loss, std1 = gaps(problem, projected, seeds=40)
    # only the row-space part at the solver's floor remains: √(2(L − L*)/λ_r) ~ 1e-8
    row_space = np.sqrt(2 * np.asarray(loss[:, -1]) / float(problem.sigma[-1]))
    assert np.all(np.asarray(d) <= 2 * row_space + 1e-12) and float(jnp.max(d)) < 1e-6
    law = jax.vmap(lambda f: distance_law(f, std1, problem))(final)
    assert law_fit(d, law).status == "rejected"


def test_fit_is_not_checked_on_a_few_runs():
    law = DistanceLaw(jnp.ones((5, 1)), 4)
    fit = law_fit(np.ones(5), law)
    assert fit.status == "not checked" and "5 usable" in fit.reason


def test_wide_limit_law_matches_wishart_widths():
    """√h·d at h = 10⁶ and 10⁹ (Wishart-sampled paper init, α = ½) against the h → ∞ law."""
    problem = _problem("full_rank")
    limit = wide_limit_law(problem)
    for h in (1e6, 1e9):

        def one(key, h=h):
            g = flowlin.init.wishart(key, problem, h, h**-0.5, h**-0.5)
            traj = flowlin.gradient_flow(
                g, problem, T1, saveat=jnp.asarray([0.0, T1]), method=flowlin.Gram()
            )
            d = traj.final_values["distance_to_min_norm"]
            return d * np.sqrt(h), traj.final_values["excess_loss"] / d**2

        scaled, loss_per_d2 = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(11), 400))
        # converged: the row-space part of the gap, ‖Σ^{-1/2}E‖² ≤ 2(L − L*)/λ_r, moves d by
        # less than 1e-6 relative (d ~ 10⁻⁴ at h = 10⁹, where the loss's floor is ~3e-7·d²)
        row_space = 2 * np.asarray(loss_per_d2) / float(problem.sigma[-1])
        assert np.all(np.sqrt(1 + row_space) - 1 <= 1e-6), h
        laws = DistanceLaw(jnp.broadcast_to(limit.weights, (400, problem.m)), limit.dof)
        fit = law_fit(scaled, laws, level=0.99)
        assert fit.status == "consistent", (h, fit.reason)


def test_run_law_per_run_and_not_applicable_outside_the_premises():
    """`run_law` from each method agrees with `distance_law` of the final network; a balanced
    (non-Gaussian) init is reported "not applicable", never "consistent"."""
    problem = _problem("two_outputs")
    net = gaussian(jax.random.PRNGKey(3), problem, 12, 12**-0.5, 0.7)
    for method in (flowlin.FullWeights(), flowlin.Gram()):
        traj = flowlin.gradient_flow(net, problem, T1, method=method)
        run = flowlin.theory.run_law(traj, 12**-0.5, problem)
        direct = distance_law(traj.final_network, 12**-0.5, problem)
        np.testing.assert_allclose(run.law.weights, direct.weights, rtol=1e-9)
        np.testing.assert_allclose(run.quantile, direct.cdf(run.gap), rtol=1e-9)
        assert bool(run.usable) and bool(run.applies)

    def balanced(key):
        net = flowlin.init.balanced_like(gaussian(key, problem, 12, 0.3, 0.3), problem, key=key)
        traj = flowlin.gradient_flow(net, problem, T1, method=flowlin.Gram())
        return flowlin.theory.run_law(traj, None, problem)

    runs = jax.vmap(balanced)(jax.random.split(jax.random.PRNGKey(4), 30))
    fit = law_fit(runs)
    assert fit.status == "not applicable" and fit.n == 0


def test_sweep_records_the_law_and_summary_tests_it_per_width():
    problem = _problem("full_rank")
    ds = flowlin.sweep(
        problem, [8, 40], scales=[0.5], seeds=range(40), init="paper",
        method=flowlin.Gram(), t1=T1, progress=False,
    )  # fmt: skip
    assert bool(ds.law_usable.all())
    # the recorded standardized gap is d/(σ1‖V(∞)‖) with σ1 = h^(-1/2): E[(std gap)²] = D - r
    k, z2 = problem.D - problem.rank, (ds.law_standardized_gap**2).values.ravel()
    assert abs(z2.mean() - k) < 4 * np.sqrt(2 * k / z2.size)  # χ²_k: mean k, variance 2k
    rows = flowlin.summarize_bounds(ds).laws
    statuses = [(r.width, r.fit.status, r.fit.n) for r in rows]
    assert statuses == [(8, "consistent", 40), (40, "consistent", 40), ("all", "consistent", 80)]
    assert "exact E d²" in flowlin.summarize_bounds(ds).to_markdown()
