"""Shared inputs of the `flowlin.theory` tests: NumPy-drawn problems and networks, an
independent NumPy split of the weights, and the shapes that exercise theory.md's index
conventions."""

import numpy as np

import flowlin


#: float64 agreement of two routes to the same number (eigh of an (r+m) Gram vs of the h x h
#: matrix): a few hundred eps of the matrices' scale.
TOL = 1e-10


def numpy_problem(seed, n, D, m, *, r=None, spread=False):
    """Whitened data (as `flowlin.problems.whitened`), or (spread=True) rank-r data with
    singular values from 2 down to 0.5. NumPy draws: every new shape of `jax.random.normal`
    costs seconds of float64 compilation on CPU, which would dominate these tests."""
    rng = np.random.default_rng(seed)
    r = n if r is None else r
    if spread:
        A = np.linalg.qr(rng.normal(size=(n, r)))[0]
        B = np.linalg.qr(rng.normal(size=(D, r)))[0]
        X = (A * np.linspace(2.0, 0.5, r)) @ B.T
    else:
        A, _, Bt = np.linalg.svd(rng.normal(size=(n, D)), full_matrices=False)
        X = A @ Bt
    return flowlin.Problem(X, rng.normal(size=(n, m)))


def numpy_net(seed, D, m, h, std1, std2):
    """Gaussian init as `flowlin.init.gaussian`, drawn with NumPy (see `numpy_problem`)."""
    rng = np.random.default_rng(seed)
    return flowlin.LinearNetwork(std1 * rng.normal(size=(h, D)), std2 * rng.normal(size=(m, h)))


def numpy_parts(net, problem):
    """U1 (r×h), U2 (D-r × h), V (m×h) from a NumPy SVD of X (independent of flowlin's)."""
    X = np.asarray(problem.X)
    _, s, Vt = np.linalg.svd(X)
    r = int(np.sum(s > 1e-10 * s[0]))
    Phi1, Phi2 = Vt[:r].T, Vt[r:].T
    W1, W2 = np.asarray(net.W1), np.asarray(net.W2)
    return Phi1.T @ W1.T, Phi2.T @ W1.T, W2


def indexed(eigs_desc, i):
    """λ_i with theory.md's convention: an index beyond the size gives 0."""
    return eigs_desc[i - 1] if i <= len(eigs_desc) else 0.0


# (n, D, m, h, r, spread): h >= r+m, h < r+m, h < r, h < m, r < n, non-whitened.
SHAPES = [
    (4, 10, 2, 12, 4, False),
    (4, 10, 2, 5, 4, False),
    (5, 9, 3, 2, 5, True),
    (3, 8, 4, 3, 3, False),
    (6, 12, 2, 4, 3, True),
    (3, 7, 1, 1, 3, True),
]
