"""Networks and initializations: shapes, statistics, and the algebraic properties each claims."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin


@pytest.fixture(scope="module")
def problem():
    return flowlin.problems.gaussian(jax.random.key(0), n=6, D=15, m=2)


def _imbalance(net, problem):
    U1 = problem.row_part(net.W1)
    return U1.T @ U1 - net.W2.T @ net.W2


def test_network_basics():
    net = flowlin.init.gaussian(jax.random.key(1), D=5, m=3, h=7, std1=1.0, std2=2.0)
    assert (net.width, net.in_features, net.out_features) == (7, 5, 3)
    x = jnp.arange(5.0)
    np.testing.assert_allclose(net(x), net.W2 @ net.W1 @ x, rtol=1e-14)
    np.testing.assert_allclose(net.product, net.W2 @ net.W1, rtol=1e-14)
    batch = jax.vmap(net)(jnp.ones((4, 5)))
    assert batch.shape == (4, 3)


def test_gaussian_statistics():
    h, D, m = 4000, 30, 3
    net = flowlin.init.gaussian(jax.random.key(2), D, m, h, std1=0.3, std2=0.05)
    # Sample std of 120k (resp. 12k) normals: relative standard error ≈ 1/sqrt(2N) < 1%.
    np.testing.assert_allclose(jnp.std(net.W1), 0.3, rtol=0.02)
    np.testing.assert_allclose(jnp.std(net.W2), 0.05, rtol=0.03)
    assert abs(float(jnp.mean(net.W1))) < 0.3 * 4 / np.sqrt(h * D)


def test_paper_scaling():
    for h, alpha in [(400, 0.5), (900, 0.3), (100, 0.0)]:
        net = flowlin.init.paper(jax.random.key(3), 20, 2, h, alpha)
        np.testing.assert_allclose(jnp.std(net.W1), h ** (-alpha), rtol=0.05)


def test_padding_is_bit_identical_and_exact(problem):
    key = jax.random.key(4)
    net = flowlin.init.paper(key, problem.D, problem.m, 9, 0.5)
    padded = flowlin.init.paper(key, problem.D, problem.m, 9, 0.5, pad_to=20)
    assert padded.width == 20
    # Same random bits per unit; XLA may vectorize the normal transform differently for
    # another array size, so equality is up to one rounding (not guaranteed bitwise).
    np.testing.assert_allclose(padded.W1[:9], net.W1, rtol=4e-16, atol=0)
    np.testing.assert_allclose(padded.W2[:, :9], net.W2, rtol=4e-16, atol=0)
    np.testing.assert_array_equal(padded.W1[9:], 0.0)
    np.testing.assert_array_equal(padded.W2[:, 9:], 0.0)
    np.testing.assert_allclose(flowlin.init.pad_width(net, 20).W1, padded.W1, rtol=4e-16)
    # A traced width gives the same network (what sweeps rely on).
    traced = jax.jit(lambda h: flowlin.init.paper(key, problem.D, problem.m, h, 0.5, pad_to=20))(9)
    np.testing.assert_allclose(traced.W1, padded.W1, rtol=4e-16, atol=0)


def test_balanced_like(problem):
    net = flowlin.init.gaussian(jax.random.key(5), problem.D, problem.m, 12, 0.5, 0.02)
    bal = flowlin.init.balanced_like(net, problem)
    np.testing.assert_allclose(bal.product, net.product, atol=1e-12)
    lam = _imbalance(bal, problem)
    assert float(jnp.max(jnp.abs(lam))) < 1e-12
    bal_random = flowlin.init.balanced_like(net, problem, key=jax.random.key(6))
    np.testing.assert_allclose(bal_random.product, net.product, atol=1e-12)
    assert float(jnp.max(jnp.abs(_imbalance(bal_random, problem)))) < 1e-12


def test_project_to_invariant_set(problem):
    net = flowlin.init.gaussian(jax.random.key(7), problem.D, problem.m, 12, 0.5, 0.5)
    proj = flowlin.init.project_to_invariant_set(net, problem)
    assert float(jnp.linalg.norm(problem.null_part(proj.W1))) < 1e-13
    # The row-space part, hence X W1ᵀ and the loss, is untouched.
    np.testing.assert_allclose(problem.X @ proj.W1.T, problem.X @ net.W1.T, atol=1e-13)
    np.testing.assert_allclose(problem.loss(proj.product), problem.loss(net.product), rtol=1e-12)


@pytest.mark.parametrize("lam,h", [(0.7, 4), (-0.4, 2), (0.0, 11)])
def test_lambda_balanced(problem, lam, h):
    net = flowlin.init.lambda_balanced(jax.random.key(8), problem, h, lam, scale=0.4)
    np.testing.assert_allclose(_imbalance(net, problem), lam * np.eye(h), atol=1e-12)
    assert float(jnp.linalg.norm(problem.null_part(net.W1))) < 1e-13


def test_init_errors(problem):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="h must be >= 1"):
        flowlin.init.gaussian(key, 5, 1, 0, 1.0, 1.0)
    with pytest.raises(ValueError, match="alpha must be finite and >= 0"):
        flowlin.init.paper(key, 5, 1, 10, -0.5)
    with pytest.raises(ValueError, match="std1 must be finite and >= 0"):
        flowlin.init.gaussian(key, 5, 1, 10, -1.0, 1.0)
    with pytest.raises(ValueError, match="1 <= h <= pad_to=8"):
        flowlin.init.gaussian(key, 5, 1, 9, 1.0, 1.0, pad_to=8)
    with pytest.raises(ValueError, match="width=3 is smaller"):
        flowlin.init.pad_width(flowlin.init.gaussian(key, 5, 1, 4, 1.0, 1.0), 3)
    with pytest.raises(ValueError, match="lam > 0 needs h <= r"):
        flowlin.init.lambda_balanced(key, problem, problem.rank + 1, 1.0)
    with pytest.raises(ValueError, match="lam < 0 needs h <= m"):
        flowlin.init.lambda_balanced(key, problem, problem.m + 1, -1.0)
    with pytest.raises(ValueError, match="needs width h >= m"):
        flowlin.init.balanced_like(flowlin.init.gaussian(key, 15, 2, 1, 1.0, 1.0), problem)
    wrong_D = flowlin.init.gaussian(key, 14, 2, 4, 1.0, 1.0)
    with pytest.raises(ValueError, match="D = 15 columns"):
        flowlin.init.project_to_invariant_set(wrong_D, problem)


@pytest.mark.parametrize(
    "W1,W2,match",
    [
        (np.ones(3), np.ones((1, 3)), "W1 must be 2-D"),
        (np.ones((3, 4)), np.ones(3), "W2 must be 2-D"),
        (np.ones((3, 4)), np.ones((1, 2)), "hidden widths disagree"),
        (np.ones((0, 4)), np.ones((1, 0)), "width must be >= 1"),
        (np.full((2, 4), np.inf), np.ones((1, 2)), "W1 contains 8 non-finite"),
        (np.ones((2, 4)), np.array([[np.nan, 1.0]]), "W2 contains 1 non-finite"),
    ],
)
def test_network_errors(W1, W2, match):
    with pytest.raises(ValueError, match=match):
        flowlin.LinearNetwork(W1, W2)


@pytest.mark.parametrize(
    "call,name",
    [
        ("init.gaussian(key, 5, 1, 4, 1e39, 1.0, dtype=f32)", "std1"),
        ("init.gaussian(key, 5, 1, 4, 1.0, 1e-39, dtype=f32)", "std2"),
        ("init.paper(key, 5, 1, 4, 1e39, dtype=f32)", "alpha"),
        ("init.deep_gaussian(key, 5, 1, (4, 4), scale=1e39, dtype=f32)", "scale"),
        (
            "init.deep_gaussian(key, 5, 1, (4, 4), scale=1e-40, scaling='fan_in', dtype=f32)",
            "scale",
        ),
    ],
)
def test_float32_std_out_of_range_is_refused_without_numpy_warnings(call, name):
    """A std float32 holds only as inf, 0 or a subnormal is refused by name, from its float64
    value: no cast overflows first (NumPy's RuntimeWarning would come before the error)."""
    import warnings

    env = dict(init=flowlin.init, key=jax.random.key(0), f32=jnp.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"std set by {name}.* in float32"):
            eval(call, env)
