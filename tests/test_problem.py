"""`flowlin.Problem` and the data generators against NumPy's independent linear algebra."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin


def _random_problem_data(rng, n, D, m, r):
    """X (n×D) of rank exactly r, non-whitened (spread singular values), and Y."""
    A = rng.standard_normal((n, r)) * np.linspace(1.0, 3.0, r)
    X = A @ rng.standard_normal((r, D))
    Y = rng.standard_normal((n, m))
    return X, Y


@pytest.mark.parametrize("n,D,m,r", [(5, 12, 1, 5), (6, 9, 3, 4), (8, 20, 2, 3)])
def test_svd_quantities_match_numpy(n, D, m, r):
    rng = np.random.default_rng(0)
    X, Y = _random_problem_data(rng, n, D, m, r)
    p = flowlin.Problem(X, Y)
    assert (p.rank, p.n, p.D, p.m) == (r, n, D, m)
    # Σ: the nonzero eigenvalues of XXᵀ, decreasing.
    eig = np.sort(np.linalg.eigvalsh(X @ X.T))[::-1][:r]
    np.testing.assert_allclose(p.sigma, eig, rtol=1e-12)
    # X = Wx Σ^{1/2} Φ1ᵀ, orthonormal factors.
    np.testing.assert_allclose(p.Wx @ np.diag(np.sqrt(p.sigma)) @ p.Phi1.T, X, atol=1e-12)
    np.testing.assert_allclose(p.Wx.T @ p.Wx, np.eye(r), atol=1e-13)
    np.testing.assert_allclose(p.Phi1.T @ p.Phi1, np.eye(r), atol=1e-13)
    # Min-norm solution W* = (X⁺ Y)ᵀ and L* = least-squares residual.
    W_star = (np.linalg.pinv(X) @ Y).T
    np.testing.assert_allclose(p.min_norm, W_star, atol=1e-11)
    resid = Y - X @ W_star.T
    np.testing.assert_allclose(p.loss_star, 0.5 * np.sum(resid**2), rtol=1e-10, atol=1e-13)
    if r == n:
        assert float(p.loss_star) < 1e-20
    # Φ2: orthonormal, orthogonal to Φ1, in the null space of X.
    phi2 = p.phi2()
    assert phi2.shape == (D, D - r)
    np.testing.assert_allclose(phi2.T @ phi2, np.eye(D - r), atol=1e-12)
    np.testing.assert_allclose(X @ phi2, 0.0, atol=1e-11)
    # null_part has the norms of U2 = Φ2ᵀW1ᵀ and vanishes under X.
    W1 = rng.standard_normal((7, D))
    np.testing.assert_allclose(
        np.linalg.norm(p.null_part(W1)), np.linalg.norm(phi2.T @ W1.T), rtol=1e-12
    )
    np.testing.assert_allclose(X @ p.null_part(W1).T, 0.0, atol=1e-11)
    # L - L* = ½‖E‖² for any product.
    W = rng.standard_normal((m, D))
    np.testing.assert_allclose(
        p.loss(W) - p.loss_star, 0.5 * np.sum(np.asarray(p.error(W)) ** 2), rtol=1e-10
    )


def test_generators():
    key = jax.random.key(0)
    p = flowlin.problems.whitened(key, n=10, D=40, m=3)
    np.testing.assert_allclose(p.sigma, 1.0, rtol=1e-12)  # Σ = I: whitened
    assert p.rank == 10 and p.min_norm.shape == (3, 40)
    q = flowlin.problems.gaussian(key, n=10, D=40, m=2, noise=0.0)
    assert q.rank == 10 and float(q.loss_star) < 1e-20
    # E[XXᵀ] = (D/D) I for N(0, 1/D) entries: eigenvalues of order one.
    assert 0.1 < float(q.sigma[-1]) < float(q.sigma[0]) < 5.0
    f = flowlin.problems.factorization(key, n=6, m=2)
    assert f.rank == f.D == 6
    np.testing.assert_allclose(f.min_norm, f.Y.T, atol=1e-14)  # X = I: unique solution Yᵀ
    # Same key, same bits.
    np.testing.assert_array_equal(flowlin.problems.whitened(key, 10, 40, 3).Y, p.Y)


def test_traced_problem_needs_rank():
    rng = np.random.default_rng(1)
    X, Y = _random_problem_data(rng, 4, 9, 2, 4)
    Xs = jnp.stack([X, 2 * X])
    with pytest.raises(ValueError, match="pass rank"):
        jax.vmap(lambda X: flowlin.Problem(X, Y))(Xs)
    batched = jax.vmap(lambda X: flowlin.Problem(X, Y, rank=4))(Xs)
    np.testing.assert_allclose(batched.sigma[1], 4 * batched.sigma[0], rtol=1e-12)


@pytest.mark.parametrize(
    "X,Y,match",
    [
        (np.ones(5), np.ones((5, 1)), "X must be 2-D"),
        (np.ones((3, 5)), np.ones(3), "Y must be 2-D"),
        (np.ones((3, 5)), np.ones((4, 1)), "same number of rows"),
        (np.full((2, 5), np.nan), np.ones((2, 1)), "X contains 10 non-finite"),
        (np.eye(2, 5), np.array([[1.0], [np.inf]]), "Y contains 1 non-finite"),
        (np.zeros((3, 5)), np.ones((3, 1)), "X is zero"),
        (np.random.default_rng(0).standard_normal((6, 4)), np.ones((6, 1)), "full column rank"),
        (np.eye(3), np.ones((3, 1)), "full column rank"),
        (np.zeros((0, 3)), np.zeros((0, 1)), "empty data"),
    ],
)
def test_bad_inputs_name_the_argument(X, Y, match):
    with pytest.raises(ValueError, match=match):
        flowlin.Problem(X, Y)


def test_rank_argument_checked():
    X, Y = _random_problem_data(np.random.default_rng(2), 5, 10, 1, 3)
    with pytest.raises(ValueError, match="rank=4 was given but X has numerical rank 3"):
        flowlin.Problem(X, Y, rank=4)
    with pytest.raises(TypeError, match="X must be an array of numbers"):
        flowlin.Problem(np.array([["a", "b"]]), Y)


def test_generator_errors():
    with pytest.raises(ValueError, match="D > n"):
        flowlin.problems.whitened(jax.random.key(0), n=10, D=10, m=1)
    with pytest.raises(ValueError, match="m must be >= 1"):
        flowlin.problems.gaussian(jax.random.key(0), n=3, D=10, m=0)
    with pytest.raises(ValueError, match="noise must be finite and >= 0"):
        flowlin.problems.gaussian(jax.random.key(0), n=3, D=10, m=1, noise=-1.0)
