"""Initializations of `flowlin.DeepLinearNetwork` (`flowlin.init.deep_*`, and
`project_to_invariant_set` at depth) against what each promises: the papers' two-layer init at
L = 2, per-layer variances, singular values, exact balance and product, W1Φ2 = 0. No solves."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin
from flowlin import init


@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_deep_gaussian_at_depth_two_is_paper(alpha):
    key = jax.random.key(3)
    deep = init.deep_gaussian(key, 9, 2, (7,), alpha=alpha)
    ref = init.paper(key, 9, 2, 7, alpha)
    assert np.array_equal(deep.weights[0], ref.W1) and np.array_equal(deep.weights[1], ref.W2)
    scaled = init.deep_gaussian(key, 9, 2, (7,), alpha=alpha, scale=2.0)
    assert np.allclose(scaled.weights[0], 2 * ref.W1, rtol=1e-15, atol=0)


def _empirical_stds(net):
    return np.array([np.std(np.asarray(w)) for w in net.weights])


def test_deep_gaussian_variances():
    """Empirical std of each layer (≥ 2 000 entries: ~2% sampling error) against the rule."""
    D, m, widths = 200, 12, (20, 16, 10)
    paper = init.deep_gaussian(jax.random.key(0), D, m, widths, alpha=0.5)
    expected = [20**-0.5, (20 * 16) ** -0.25, (16 * 10) ** -0.25, 10**-0.5]
    assert np.allclose(_empirical_stds(paper)[:3], expected[:3], rtol=0.08)
    fan_in = init.deep_gaussian(jax.random.key(0), D, m, widths, scaling="fan_in", scale=3.0)
    expected = [3 / np.sqrt(h) for h in (D, *widths)]
    assert np.allclose(_empirical_stds(fan_in)[:3], expected[:3], rtol=0.08)
    # The layers are different draws, and the shapes follow the widths.
    assert [w.shape for w in paper.weights] == [(20, 200), (16, 20), (10, 16), (12, 10)]
    assert paper.depth == 4 and paper.widths == widths


def test_deep_gaussian_traced_scale_and_alpha():
    @jax.jit
    def draw(alpha, scale):
        return init.deep_gaussian(jax.random.key(1), 8, 2, (5, 6), alpha=alpha, scale=scale)

    a = draw(0.5, 1.0)
    b = draw(0.25, 2.0)
    ratio = b.weights[1] / a.weights[1]  # same normals, std 2·30^-1/8 against 30^-1/4
    assert np.allclose(ratio, 2 * 30**-0.125 / 30**-0.25, rtol=1e-12)


@pytest.mark.parametrize("widths", [(6, 12, 7), (3,)])
def test_deep_orthogonal_singular_values(widths):
    net = init.deep_orthogonal(jax.random.key(2), 8, 2, widths, scale=0.7)
    for w in net.weights:
        s = np.linalg.svd(np.asarray(w), compute_uv=False)
        assert np.allclose(s, 0.7, rtol=0, atol=1e-12)
        assert len(s) == min(w.shape)
    net2 = init.deep_orthogonal(jax.random.key(3), 8, 2, widths, scale=0.7)
    assert not np.allclose(net.weights[0], net2.weights[0])  # random frames


def _balance_errors(net):
    """‖W_(l+1)ᵀW_(l+1) - W_lW_lᵀ‖_F / ‖W_lW_lᵀ‖_F per hidden layer (NumPy: no compiles)."""
    ws = [np.asarray(w) for w in net.weights]
    return [
        np.linalg.norm(ws[i + 1].T @ ws[i + 1] - ws[i] @ ws[i].T) / np.linalg.norm(ws[i] @ ws[i].T)
        for i in range(len(ws) - 1)
    ]


def _product(ws):
    out = np.asarray(ws[0])
    for w in ws[1:]:
        out = np.asarray(w) @ out
    return out


@pytest.mark.parametrize("widths", [(5, 4, 6), (2, 2)])
def test_deep_balanced_is_balanced_with_the_product(widths):
    key = jax.random.key(4)
    # Rank 2 (m = 2): widths of 2 are the least allowed.
    product = jax.random.normal(jax.random.key(5), (2, 9))
    net = init.deep_balanced(key, product, widths)
    assert max(_balance_errors(net)) <= 1e-14
    assert np.max(np.abs(_product(net.weights) - np.asarray(product))) <= 1e-13
    # Control: a Gaussian net is far from balanced in the same measure.
    assert min(_balance_errors(init.deep_gaussian(key, 9, 2, widths))) > 0.1


def test_deep_balanced_rank_deficient_and_vmapped():
    u, v = (
        jax.random.normal(jax.random.key(6), (3, 1)),
        jax.random.normal(jax.random.key(7), (1, 8)),
    )
    product = u @ v  # rank 1: width 1 suffices
    net = init.deep_balanced(jax.random.key(8), product, (1, 3))
    assert np.max(np.abs(_product(net.weights) - np.asarray(product))) <= 1e-14
    assert max(_balance_errors(net)) <= 1e-14
    with pytest.raises(ValueError, match="widths"):
        init.deep_balanced(jax.random.key(8), jnp.eye(3, 8), (2, 3))  # rank 3 > 2
    keys = jax.random.split(jax.random.key(9), 3)
    products = jax.random.normal(jax.random.key(10), (3, 2, 8))
    batch = jax.vmap(lambda k, p: init.deep_balanced(k, p, (3, 4)))(keys, products)
    for i in range(3):
        one = flowlin.DeepLinearNetwork([w[i] for w in batch.weights])
        assert np.max(np.abs(_product(one.weights) - np.asarray(products[i]))) <= 1e-13
        assert max(_balance_errors(one)) <= 1e-14


def test_project_to_invariant_set_at_depth():
    problem = flowlin.problems.gaussian(jax.random.key(11), n=4, D=9, m=2)
    net = init.deep_gaussian(jax.random.key(12), 9, 2, (5, 6))
    projected = init.project_to_invariant_set(net, problem)
    W1, W1p, Phi1 = (np.asarray(a) for a in (net.weights[0], projected.weights[0], problem.Phi1))
    null = np.eye(9) - Phi1 @ Phi1.T
    assert np.max(np.abs(W1p @ null)) <= 1e-14  # W1Φ2 = 0
    assert np.max(np.abs(W1 @ null)) > 0.1  # (it was not before)
    assert np.allclose(W1p @ Phi1, W1 @ Phi1, rtol=0, atol=1e-14)
    for a, b in zip(net.weights[1:], projected.weights[1:]):
        assert np.array_equal(a, b)
