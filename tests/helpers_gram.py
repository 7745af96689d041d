"""Shared builders for the gram / width-reduction / Wishart / closed-form tests."""

import functools

import jax
import jax.numpy as jnp

import flowlin


# Both builders are jitted: op by op, JAX dispatch compiles every primitive separately, which
# costs seconds per new shape on a small CPU.


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def random_problem(key, n: int, D: int, m: int, r: int) -> flowlin.Problem:
    """Non-whitened, rank-deficient data: X = U diag(s) Vᵀ with rank r < n, singular values
    in [0.5, 2]; Y Gaussian (so it is not in the column space of X and L* > 0)."""
    kx1, kx2, ks, ky = jax.random.split(key, 4)
    U, _ = jnp.linalg.qr(jax.random.normal(kx1, (n, r)))
    V, _ = jnp.linalg.qr(jax.random.normal(kx2, (D, r)))
    s = jax.random.uniform(ks, (r,), minval=0.5, maxval=2.0)
    X = (U * s) @ V.T
    Y = jax.random.normal(ky, (n, m))
    return flowlin.Problem(X, Y, rank=r)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def gaussian_net(key, D: int, m: int, h: int, std1, std2) -> flowlin.LinearNetwork:
    """`flowlin.init.gaussian`, compiled."""
    return flowlin.init.gaussian(key, D, m, h, std1, std2)


def rel_err(a, b):
    """Largest relative error of `a` against the reference `b`, elementwise."""
    return float(jnp.max(jnp.abs(a - b) / jnp.abs(b)))


def rel_fro(a, b):
    """Relative Frobenius error of matrix `a` against `b` (over the last two axes)."""
    return float(jnp.max(jnp.linalg.norm(a - b, axis=(-2, -1)) / jnp.linalg.norm(b, axis=(-2, -1))))
