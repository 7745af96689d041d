"""Closed-form gradient-flow solutions (docs/theory.md §4): test oracles, and tools in their own
right.

Everything here is exact (no integration) and jit/vmap-compatible; value checks on the inputs
(e.g. that an initialization is λ-balanced) run only on concrete arrays.
"""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import ScalarLike
from ._errors import as_float_array, check_int, check_ndim, check_number, is_concrete
from ._misc import full_precision


#: `lambda_balanced_gram` refuses a concrete Z0 whose imbalance is farther than this (relative to
#: its size) from λI: the closed form is then not the flow's. Inits built by
#: `flowlin.init.lambda_balanced` are balanced to ~1e-15 in float64 (to round-off in float32,
#: where the bound is 100 float32 epsilons instead).
_BALANCE_RTOL = 1e-8


@full_precision
def scalar(
    t: Float[ArrayLike, "*times"], u0: ScalarLike, v0: ScalarLike, y: ScalarLike
) -> tuple[Float[Array, "*times"], Float[Array, "*times"]]:
    r"""Exact scalar gradient flow $\dot u = (y - uv)v$, $\dot v = (y - uv)u$ (docs/theory.md §4).

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

    **Example:** the flow of `LinearNetwork(W1=[[u0, a]], W2=[[v0]])` on `Problem(X=[[1., 0.]],
    Y=[[y]])` has `W1(t) = [[u(t), a]]`, `W2(t) = [[v(t)]]`:

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    u, v = flowlin.exact.scalar(jnp.linspace(0, 5, 6), u0=0.1, v0=-0.3, y=2.0)
    ```

    **Reference:** the $2\times2$ Riccati solution of Fukumizu (1998), "Effect of batch learning
    in multilayer neural networks"; its λ-balanced matrix form is `lambda_balanced_gram`.
    """
    call = "flowlin.exact.scalar(...)"
    t = as_float_array(call, "t", t)
    for name, a in (("u0", u0), ("v0", v0), ("y", y)):
        check_number(call, name, a)
    dtype = t.dtype
    u0, v0, y = (jnp.asarray(a, dtype) for a in (u0, v0, y))
    d = u0**2 - v0**2
    k = jnp.sqrt(d**2 + 4 * y**2)
    if is_concrete(k) and np.any(np.asarray(k) == 0):
        raise ValueError(
            "`flowlin.exact.scalar(...)`: y = 0 with u0² = v0² is a degenerate case of this "
            "formula (k = 0); there the flow is u = v·sign, with uv → 0 — use y != 0"
        )
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


@full_precision
def balanced_scalar(
    t: Float[ArrayLike, "*times"], w0: ScalarLike, y: ScalarLike
) -> Float[Array, "*times"]:
    r"""Product $w = uv$ of the balanced scalar flow ($u_0^2 = v_0^2$, $w_0 = u_0v_0$,
    docs/theory.md §4). Balanced, $u^2 + v^2 = 2|w|$, so $\dot w = 2|w|(y - w)$, and $w$ keeps
    the sign of $w_0$: with $s = \operatorname{sign}(w_0)$,
    $$w(t) = \frac{y\,w_0}{w_0 + (y - w_0)\,e^{-2syt}}$$
    (evaluated in this form, which does not overflow at large $t$), and for $y = 0$,
    $w(t) = w_0/(1 + 2|w_0|t)$.

    It is `scalar` with $d = 0$ (a logistic curve). For $w_0 > 0 < y$ it rises from $w_0$ to
    $y$ at rate $2y$, so the excess loss decays at $4y$; for $w_0 < 0 < y$ the product cannot
    cross zero and decays to it as $e^{-2yt}$ (the saddle at the origin).

    **Example:** `flowlin.exact.balanced_scalar(jnp.linspace(0, 5, 6), w0=0.01, y=1.0)`.
    """
    call = "flowlin.exact.balanced_scalar(...)"
    t = as_float_array(call, "t", t)
    check_number(call, "w0", w0)
    check_number(call, "y", y)
    dtype = t.dtype
    w0, y = jnp.asarray(w0, dtype), jnp.asarray(y, dtype)
    g = jnp.exp(-2 * jnp.sign(w0) * y * t)
    denominator = w0 + (y - w0) * g
    zero_target = w0 / (1 + 2 * jnp.abs(w0) * t)
    safe = jnp.where(denominator == 0, 1.0, denominator)
    return jnp.where(y == 0, zero_target, jnp.where(denominator == 0, 0.0, y * w0 / safe))


def _sym_fn(F, fn):
    """Apply a scalar function to a symmetric matrix through its eigendecomposition."""
    f, P = jnp.linalg.eigh(F)
    return (P * fn(f)) @ P.T


@full_precision
def lambda_balanced_gram(
    t: Float[ArrayLike, ""],
    Z0: Float[ArrayLike, "k h"],
    Y_tilde: Float[ArrayLike, "r m"],
    lam: ScalarLike,
) -> Float[Array, "k k"]:
    r"""Riccati closed form of the λ-balanced flow, whitened data (docs/theory.md §4).

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

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    key = jax.random.key(0)
    problem = flowlin.problems.whitened(key, n=4, D=9, m=2)
    net = flowlin.init.lambda_balanced(key, problem, h=2, lam=0.5)
    Z0 = jnp.concatenate([problem.row_part(net.W1), net.W2])   # [U1; V], Σ = I
    Q = flowlin.exact.lambda_balanced_gram(3.0, Z0, problem.Y_tilde, 0.5)
    E = problem.Y_tilde - Q[:4, 4:]                              # = lambda_balanced_error
    ```

    **References:** Fukumizu (1998) and Braun, Dominé, Fitzgerald, Saxe (2022), "Exact learning
    dynamics of deep linear networks with prior knowledge", for λ = 0.
    """
    call = "flowlin.exact.lambda_balanced_gram(...)"
    Z0 = as_float_array(call, "Z0", Z0)
    dtype = Z0.dtype
    Yt = as_float_array(call, "Y_tilde", Y_tilde, dtype=dtype)
    check_number(call, "t", t)
    check_number(call, "lam", lam)
    t = jnp.asarray(t, dtype)
    check_ndim(call, "Y_tilde", Yt, 2, "r x m")
    check_ndim(call, "Z0", Z0, 2, "(r+m) x h, the stacked [U1; V]")
    r, m = Yt.shape
    h = Z0.shape[1]
    if Z0.shape[0] != r + m:
        raise ValueError(
            f"`{call}`: Z0 must have r + m = {r + m} rows ([U1; V] for Y_tilde of shape "
            f"{Yt.shape}), got shape {Z0.shape}"
        )
    if is_concrete(Z0) and is_concrete(lam):
        Zn = np.asarray(Z0)
        imbalance = Zn[:r].T @ Zn[:r] - Zn[r:].T @ Zn[r:]
        off = np.linalg.norm(imbalance - float(lam) * np.eye(h))
        size = max(np.linalg.norm(Zn) ** 2, abs(float(lam)) * np.sqrt(h))
        rtol = max(_BALANCE_RTOL, 100 * float(jnp.finfo(dtype).eps))
        if off > rtol * size:
            raise ValueError(
                f"`{call}`: Z0 is not λ-balanced: ‖U1ᵀU1 - VᵀV - λI‖_F = {off:.3g} for "
                f"lam={float(lam)} (relative {off / size:.3g}); build it with "
                "flowlin.init.lambda_balanced"
            )
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


@full_precision
def lambda_balanced_error(
    t: Float[ArrayLike, ""],
    Z0: Float[ArrayLike, "k h"],
    Y_tilde: Float[ArrayLike, "r m"],
    lam: ScalarLike,
) -> Float[Array, "r m"]:
    r"""$E(t) = \tilde Y - U_1(t)V(t)^\top$ of the λ-balanced flow (see `lambda_balanced_gram`)."""
    Yt = jnp.asarray(Y_tilde)
    r = Yt.shape[0]
    return Yt - lambda_balanced_gram(t, Z0, Yt, lam)[:r, r:]


@full_precision
def asymptotic_rate_balanced(
    Y_tilde: Float[ArrayLike, "r m"], lam: ScalarLike, width: int | None = None
) -> Float[Array, ""]:
    r"""Asymptotic decay rate $\rho_\infty = \lim_{t\to\infty} -\tfrac{d}{dt}\log(L - L^\star)$
    of a converging λ-balanced flow on whitened data ($\Sigma = I$, docs/theory.md §4).

    At the limit $U_1V^\top = \tilde Y$ and $U_1^\top U_1 - V^\top V = \lambda I_h$ fix the
    spectra of $U_1U_1^\top$ ($r\times r$) and $VV^\top$ ($m\times m$): each singular value
    $s$ of $\tilde Y$ contributes $\alpha(s) = (\lambda + \sqrt{\lambda^2 + 4s^2})/2$ to the
    first and $\beta(s) = \alpha(s) - \lambda$ to the second; the other $h - q$ hidden
    directions ($q = \min(r, m)$) contribute $\lambda$ to $U_1U_1^\top$ if $\lambda > 0$,
    $|\lambda|$ to $VV^\top$ if $\lambda < 0$, nothing if $\lambda = 0$; the rest of each
    spectrum is zeros. Near the limit $\dot E = -(U_1U_1^\top E + EVV^\top)$, a Sylvester
    operator with eigenvalues $a_i + b_j$, so
    $$\rho_\infty = 2\,\big(\lambda_{\min}(U_1U_1^\top) + \lambda_{\min}(VV^\top)\big).$$
    For $r = m = h$ this is $2\sqrt{\lambda^2 + 4\sigma_{\min}(\tilde Y)^2}$ (Tarmoun et al.,
    2021: "rate² = imbalance² + 4·margin²"); otherwise a direction that $U_1U_1^\top$ or
    $VV^\top$ leaves at zero makes it slower, e.g. $2\sigma_{\min}(\tilde Y)$ for $\lambda = 0$,
    $r > m$.

    **Arguments:**

    - `Y_tilde`: $\tilde Y$ ($r\times m$), assumed of full rank $q = \min(r, m)$.
    - `lam`: $\lambda$ (may be traced).
    - `width`: the width $h$ ($q \le h$, so that the flow can converge; $h \le r$ for
      $\lambda > 0$, $h \le m$ for $\lambda < 0$). `None` only when $r = m$, meaning $h = r$.

    **Returns:** $\rho_\infty$, so that $L - L^\star \approx C e^{-\rho_\infty t}$.

    **Reference:** S. Tarmoun, G. França, B. Haeffele, R. Vidal (2021), "Understanding the
    dynamics of gradient flow in overparameterized linear models", ICML.
    """
    call = "flowlin.exact.asymptotic_rate_balanced(...)"
    Yt = as_float_array(call, "Y_tilde", Y_tilde)
    check_ndim(call, "Y_tilde", Yt, 2, "r x m")
    check_number(call, "lam", lam)
    if is_concrete(Yt):
        s = np.linalg.svd(np.asarray(Yt, np.float64), compute_uv=False)
        if not s[-1] > 10 * max(Yt.shape) * float(jnp.finfo(Yt.dtype).eps) * s[0]:
            raise ValueError(
                f"`{call}`: Y_tilde must have full rank min(r, m) = {min(Yt.shape)} (its "
                f"singular values are {s.tolist()}): a zero singular value has no rate"
            )
    r, m = Yt.shape
    q = min(r, m)
    if width is None:
        if r != m:
            raise ValueError(
                f"`{call}`: Y_tilde is {r}x{m} (r != m): pass width=h, the rate depends on it"
            )
        width = r
    h = check_int(call, "width", width, minimum=1)
    if h < q:
        raise ValueError(
            f"`{call}`: width={h} < min(r, m) = {q}: U1Vᵀ has rank <= {h} < rank(Y_tilde), so "
            "the flow does not converge to L* and has no asymptotic rate"
        )
    if is_concrete(lam):
        if float(lam) > 0 and h > r:
            raise ValueError(f"`{call}`: lam > 0 needs width <= r = {r}, got {h}")
        if float(lam) < 0 and h > m:
            raise ValueError(f"`{call}`: lam < 0 needs width <= m = {m}, got {h}")
    lam = jnp.asarray(lam, Yt.dtype)
    s_min = jnp.linalg.svd(Yt, compute_uv=False)[-1]
    alpha = (lam + jnp.sqrt(lam**2 + 4 * s_min**2)) / 2
    beta = alpha - lam
    pos, neg = lam > 0, lam < 0
    # λ_min(U1U1ᵀ): zero unless U1U1ᵀ is full rank, i.e. it has r nonzero eigenvalues — h of
    # them for λ > 0 (every α ≥ λ > 0), q otherwise; then the least is λ if extra directions
    # (h > q) carry it, else α(σ_min). Symmetrically for VVᵀ.
    a_min = jnp.where(jnp.where(pos, h >= r, q >= r), jnp.where(pos & (h > q), lam, alpha), 0.0)
    b_min = jnp.where(jnp.where(neg, h >= m, q >= m), jnp.where(neg & (h > q), -lam, beta), 0.0)
    return 2 * (a_min + b_min)
