"""Data generators for the papers' experiments (docs/theory.md §5)."""

import jax
import jax.numpy as jnp

from ._custom_types import KeyLike, ScalarLike
from ._errors import check_int, check_key, check_positive, float_dtype, is_concrete
from ._misc import full_precision
from ._problem import Problem


def _rank(X, n: int):
    """`Problem`'s `rank=`: computed from X's singular values when X is concrete; under
    `jit`/`vmap` (a traced key) n, the rank of these n × D matrices (n < D) with probability
    one, since shapes cannot depend on traced values."""
    return None if is_concrete(X) else n


def _sizes(call, n, D, m):
    n = check_int(call, "n", n, minimum=1)
    D = check_int(call, "D", D, minimum=1)
    m = check_int(call, "m", m, minimum=1)
    if D <= n:
        raise ValueError(
            f"`{call}`: the papers' problems are under-determined, which needs D > n; got n={n}, "
            f"D={D} (a Gaussian X then has rank n = D and a unique least-squares solution)"
        )
    return n, D, m


def _targets(key, X, D, m, noise, dtype):
    k_theta, k_noise = jax.random.split(key)
    theta = jax.random.normal(k_theta, (D, m), dtype) / jnp.sqrt(jnp.asarray(D, dtype))
    return X @ theta + noise * jax.random.normal(k_noise, (X.shape[0], m), dtype)


@full_precision
def whitened(
    key: KeyLike, n: int, D: int, m: int, noise: ScalarLike = 0.01, *, dtype=None
) -> Problem:
    r"""Whitened data of ICML Fig. 2: all singular values of X equal 1 ($\Sigma = I$).

    $X_0$ has $N(0,1)$ entries, $X_0 = ASB^\top$ (thin SVD), $X = AB^\top$;
    $\Theta \sim N(0, I/D)$ ($D\times m$), $Y = X\Theta + $ `noise` $\cdot N(0,1)$.

    **Arguments:** `key` (a `jax.random` key); `n` samples, `D` input features, `m` outputs
    (positive integers with $n < D$: the problem is under-determined, $r \le n < D$);
    `noise`, the standard deviation of the label noise (default 0.01; 0 for none); `dtype`
    (default: JAX's default float, float64 once `jax_enable_x64` is on).

    **Returns:** a `flowlin.Problem`. Works under `jax.jit`/`jax.vmap` over keys (its rank is
    then n, exactly so here).
    """
    call = "flowlin.problems.whitened(...)"
    check_key(call, "key", key)
    n, D, m = _sizes(call, n, D, m)
    check_positive(call, "noise", noise, allow_zero=True)
    dtype = float_dtype(call, dtype)
    kx, ky = jax.random.split(key)
    A, _, Bt = jnp.linalg.svd(jax.random.normal(kx, (n, D), dtype), full_matrices=False)
    X = A @ Bt
    return Problem(X, _targets(ky, X, D, m, noise, dtype), rank=_rank(X, n))


@full_precision
def gaussian(
    key: KeyLike, n: int, D: int, m: int, noise: ScalarLike = 0.01, *, dtype=None
) -> Problem:
    r"""Gaussian data of ICML Fig. 1: X entries $N(0, 1/D)$, $\Theta\sim N(0, I/D)$,
    $Y = X\Theta + $ `noise` $\cdot N(0,1)$.

    **Arguments:** `key` (a `jax.random` key); `n` samples, `D` input features, `m` outputs
    (positive integers with $n < D$: the problem is under-determined, $r \le n < D$);
    `noise`, the standard deviation of the label noise (default 0.01; 0 for none); `dtype`
    (default: JAX's default float, float64 once `jax_enable_x64` is on).

    **Returns:** a `flowlin.Problem`. Works under `jax.jit`/`jax.vmap` over keys (its rank is
    then taken to be n, as it is with probability one).
    """
    call = "flowlin.problems.gaussian(...)"
    check_key(call, "key", key)
    n, D, m = _sizes(call, n, D, m)
    check_positive(call, "noise", noise, allow_zero=True)
    dtype = float_dtype(call, dtype)
    kx, ky = jax.random.split(key)
    X = jax.random.normal(kx, (n, D), dtype) / jnp.sqrt(jnp.asarray(D, dtype))
    return Problem(X, _targets(ky, X, D, m, noise, dtype), rank=_rank(X, n))


@full_precision
def factorization(
    key: KeyLike, n: int = 20, m: int = 5, *, y_std: ScalarLike = 0.1, dtype=None
) -> Problem:
    r"""Matrix factorization of v2 Figs. 2–5: $\min \tfrac12\|Y - UV^\top\|_F^2$, i.e. $X = I_n$.

    $Y$ ($n\times m$) has i.i.d. $N(0,$ `y_std`$^2)$ entries. Here $D = r = n$: the solution
    is unique, so this problem is built with `allow_full_column_rank=True` and serves the rate
    results (ICML Theorem 1, v2 Theorem 3 / Proposition 1), not the implicit-bias ones.

    The paper's loss $\tfrac12\|Y - UV^\top/\sqrt{mh}\|^2$ is this one for
    $W_1^\top = U/(mh)^{1/4}$, $W_2^\top = V/(mh)^{1/4}$, with time rescaled by
    $t_{here} = t_{paper}/\sqrt{mh}$.

    **Arguments:** `key` (a `jax.random` key); `n`, the size of the square $X = I_n$ (default
    20); `m`, the columns of $Y$ (default 5); `y_std` (default 0.1); `dtype` (default: JAX's
    default float).

    **Returns:** a `flowlin.Problem`.
    """
    call = "flowlin.problems.factorization(...)"
    check_key(call, "key", key)
    n = check_int(call, "n", n, minimum=1)
    m = check_int(call, "m", m, minimum=1)
    check_positive(call, "y_std", y_std)
    dtype = float_dtype(call, dtype)
    Y = y_std * jax.random.normal(key, (n, m), dtype)
    return Problem(jnp.eye(n, dtype=dtype), Y, allow_full_column_rank=True)
