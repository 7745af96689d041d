"""Closed-form gradient-flow solutions (theory.md §4): test oracles and tools in their own right."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import ScalarLike


def scalar(
    t: Float[ArrayLike, "*times"], u0: ScalarLike, v0: ScalarLike, y: ScalarLike
) -> tuple[Float[Array, "*times"], Float[Array, "*times"]]:
    r"""Exact scalar gradient flow $\dot u = (y - uv)v$, $\dot v = (y - uv)u$ (theory.md §4).

    This is the network with $n = m = h = 1$ on $X = [1, 0]$ (the second input direction never
    moves). With $d = u_0^2 - v_0^2$ (conserved), $k = \sqrt{d^2 + 4y^2}$,
    $F = \begin{pmatrix} d/2 & y \\ y & -d/2\end{pmatrix}$ and $z_0 = (u_0, v_0)$:
    $$a(t) = \cosh(kt/2)\,z_0 + \tfrac2k\sinh(kt/2)\,Fz_0,\qquad
      (u, v)(t) = a(t)/\sqrt{N(t)},$$
    $$N(t) = 1 + \tfrac{\sinh kt}{k}(u_0^2 + v_0^2) + \tfrac{2}{k^2}(\cosh kt - 1)
      (d^2/2 + 2yu_0v_0),$$
    so $uv = a_1a_2/N$. Evaluated with everything divided by $\cosh^2(kt/2)$, so it does not
    overflow at large $t$.

    **Arguments:** times `t` (any shape), initial weights `u0`, `v0`, target `y`; needs $k > 0$
    (not both $y = 0$ and $u_0^2 = v_0^2$).

    **Returns:** `(u(t), v(t))`, each of the shape of `t`.
    """
    t = jnp.asarray(t)
    dtype = jnp.result_type(t.dtype, float)
    t = t.astype(dtype)
    u0, v0, y = (jnp.asarray(a, dtype) for a in (u0, v0, y))
    d = u0**2 - v0**2
    k = jnp.sqrt(d**2 + 4 * y**2)
    th = jnp.tanh(k * t / 2)
    sech2 = 1.0 / jnp.cosh(k * t / 2) ** 2
    # F z0
    fz1 = d / 2 * u0 + y * v0
    fz2 = y * u0 - d / 2 * v0
    a1 = u0 + (2 / k) * th * fz1  # a / cosh(kt/2)
    a2 = v0 + (2 / k) * th * fz2
    # N / cosh²(kt/2), using sinh(kt) = 2 sinh cosh and cosh(kt) - 1 = 2 sinh².
    N = sech2 + (2 * th / k) * (u0**2 + v0**2) + (4 * th**2 / k**2) * (d**2 / 2 + 2 * y * u0 * v0)
    s = jnp.sqrt(N)
    return a1 / s, a2 / s


def balanced_scalar(
    t: Float[ArrayLike, "*times"], w0: ScalarLike, y: ScalarLike
) -> Float[Array, "*times"]:
    r"""Product $w = uv$ of the balanced scalar flow ($u_0^2 = v_0^2$, $w_0 = u_0v_0$,
    theory.md §4):
    $$w(t) = \frac{y\,w_0\,e^{2yt}}{y - w_0 + w_0 e^{2yt}}.$$
    """
    t = jnp.asarray(t)
    dtype = jnp.result_type(t.dtype, float)
    t, w0, y = t.astype(dtype), jnp.asarray(w0, dtype), jnp.asarray(y, dtype)
    g = jnp.exp(2 * y * t)
    return y * w0 * g / (y - w0 + w0 * g)


def _sym_fn(F, fn):
    """Apply a scalar function to a symmetric matrix through its eigendecomposition."""
    f, P = jnp.linalg.eigh(F)
    return (P * fn(f)) @ P.T


def lambda_balanced_gram(
    t: Float[ArrayLike, ""],
    Z0: Float[ArrayLike, "r+m h"],
    Y_tilde: Float[ArrayLike, "r m"],
    lam: ScalarLike,
) -> Float[Array, "r+m r+m"]:
    r"""Riccati closed form of the λ-balanced flow on whitened data ($\Sigma = I$, theory.md §4).

    With $Z = [U_1; V]$ and $\Lambda = U_1^\top U_1 - V^\top V = \lambda I_h$, the Gram
    $Q = ZZ^\top$ solves $\dot Q = FQ + QF - Q^2$ with
    $F = \begin{pmatrix}(\lambda/2)I_r & \tilde Y\\ \tilde Y^\top & -(\lambda/2)I_m\end{pmatrix}$:
    $$Q(t) = e^{tF}Z_0\,(I_h + Z_0^\top G(t) Z_0)^{-1}Z_0^\top e^{tF},\qquad
      G(t) = \int_0^t e^{2sF}ds.$$
    The top-right $r\times m$ block of $Q$ is $U_1V^\top$, so $E(t) = \tilde Y - Q_{12}(t)$.
    $\lambda = 0$ is the balanced case (Fukumizu 1998; Braun et al. 2022).

    **Arguments:** time `t` (scalar; `jax.vmap` for several), initial `Z0` ($(r+m)\times h$),
    `Y_tilde` ($r\times m$), `lam` ($\lambda$; `Z0` must be λ-balanced, e.g. from
    `flowlin.init.lambda_balanced`).

    **Returns:** $Q(t)$, $(r+m)\times(r+m)$.
    """
    Z0 = jnp.asarray(Z0)
    dtype = jnp.result_type(Z0.dtype, float)
    Z0 = Z0.astype(dtype)
    Yt = jnp.asarray(Y_tilde, dtype)
    t = jnp.asarray(t, dtype)
    r, m = Yt.shape
    h = Z0.shape[1]
    half = jnp.asarray(lam, dtype) / 2
    F = jnp.block([[half * jnp.eye(r, dtype=dtype), Yt], [Yt.T, -half * jnp.eye(m, dtype=dtype)]])
    expF = _sym_fn(F, lambda f: jnp.exp(t * f))

    def integral(f):
        # ∫₀ᵗ e^{2sf} ds = (e^{2tf} - 1)/(2f), = t at f = 0 (expm1 keeps it accurate near 0).
        small = jnp.abs(f) < 1e-300
        safe = jnp.where(small, 1.0, f)
        return jnp.where(small, t, jnp.expm1(2 * t * safe) / (2 * safe))

    G = _sym_fn(F, integral)
    A = expF @ Z0
    M = jnp.eye(h, dtype=dtype) + Z0.T @ G @ Z0
    return A @ jnp.linalg.solve(M, A.T)


def lambda_balanced_error(
    t: Float[ArrayLike, ""],
    Z0: Float[ArrayLike, "r+m h"],
    Y_tilde: Float[ArrayLike, "r m"],
    lam: ScalarLike,
) -> Float[Array, "r m"]:
    r"""$E(t) = \tilde Y - U_1(t)V(t)^\top$ of the λ-balanced flow (see `lambda_balanced_gram`)."""
    Yt = jnp.asarray(Y_tilde)
    r = Yt.shape[0]
    return Yt - lambda_balanced_gram(t, Z0, Yt, lam)[:r, r:]


def asymptotic_rate_balanced(Y_tilde: Float[ArrayLike, "r m"], lam: ScalarLike) -> Float[Array, ""]:
    r"""Asymptotic decay rate of $L - L^\star$ for λ-balanced flows on whitened data:
    $2\sqrt{\lambda^2 + 4\sigma_{\min}(\tilde Y)^2}$ (Tarmoun et al., 2021; theory.md §4)."""
    s = jnp.linalg.svd(jnp.asarray(Y_tilde), compute_uv=False)
    lam = jnp.asarray(lam, s.dtype)
    return 2 * jnp.sqrt(lam**2 + 4 * s[-1] ** 2)

