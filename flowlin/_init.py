"""Initializations of the factorized network (docs/theory.md §2(e), §2(g), §4, §5)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Int

from ._custom_types import KeyLike, ScalarLike
from ._deep_network import DeepLinearNetwork, check_deep_compatible
from ._errors import (
    check_bool,
    check_fits_in_memory,
    check_int,
    check_key,
    check_number,
    check_positive,
    float_dtype,
    is_concrete,
)
from ._misc import full_precision
from ._network import LinearNetwork, check_compatible, zeros_like_padding
from ._problem import Problem, check_problem


def _check_width(call: str, h, pad_to: int | None) -> int:
    """Return the array width; `h` may be traced only when `pad_to` fixes the shape."""
    if pad_to is None:
        if not isinstance(h, (int, np.integer)) or isinstance(h, bool):
            raise TypeError(
                f"`{call}`: h must be a Python int (it sets an array shape), got "
                f"{type(h).__name__}; to use a traced width, pass pad_to=<max width>"
            )
        return check_int(call, "h", h, minimum=1)
    pad_to = check_int(call, "pad_to", pad_to, minimum=1)
    if is_concrete(h):
        h_val = np.asarray(h)
        if h_val.ndim != 0 or not (1 <= h_val <= pad_to):
            raise ValueError(f"`{call}`: h must satisfy 1 <= h <= pad_to={pad_to}, got {h!r}")
    return pad_to


def check_std_fits(call: str, what: str, std, dtype, *, asked=None) -> None:
    """Refuse a concrete std that `dtype` holds only as 0 (unless the argument `asked`, a scale
    or std as given, is 0: zeros wanted), a subnormal or inf: the weights would be all zeros,
    round-off noise, or not numbers. `what` names the arguments that set it.

    `std` is the value in float64 (`float64_std`), before any cast to `dtype`: a cast that
    overflows would print NumPy's RuntimeWarning before this error."""
    if not is_concrete(std):
        return
    value = float(np.asarray(std, np.float64))
    finfo = jnp.finfo(dtype)
    zero_ok = asked is not None and is_concrete(asked) and float(np.asarray(asked)) == 0
    if (value == 0 and zero_ok) or float(finfo.tiny) <= value <= float(finfo.max):
        return
    wider = jnp.finfo(dtype).bits < 64
    raise ValueError(
        f"`{call}`: the std set by {what} is {value:.3g} in {jnp.dtype(dtype).name}, outside the "
        f"normal numbers it holds ({float(finfo.tiny):.1e} to {float(finfo.max):.1e}): the "
        "weights would be zeros or not numbers. Use "
        + ("float64 (jax.config.update('jax_enable_x64', True)) or " if wider else "")
        + "a scale nearer 1"
    )


def float64_std(scale, width, alpha) -> float:
    """scale · width^(−alpha) of concrete numbers, in float64 (NumPy's warnings off: an
    overflow is inf, refused by `check_std_fits` by name)."""
    with np.errstate(all="ignore"):
        s, w, a = (np.asarray(x, np.float64) for x in (scale, width, alpha))
        return float(s * w ** (-a))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _unit_normals(key, width: int, D: int, m: int, dtype):
    """Standard normals for hidden units 0..width-1, unit i drawn from `fold_in(key, i)`.

    Drawing per unit makes the first h units of a padded draw the same numbers as an unpadded
    draw of width h (from the same random bits; XLA may round the normal transform differently
    for another array size, by at most an ulp), so zero-padding changes only the array shape.
    """

    def one(i):
        k1, k2 = jax.random.split(jax.random.fold_in(key, i))
        return jax.random.normal(k1, (D,), dtype), jax.random.normal(k2, (m,), dtype)

    a, b = jax.vmap(one)(jnp.arange(width))
    return a, b.T


@full_precision
def gaussian(
    key: KeyLike,
    D: int,
    m: int,
    h: int | Int[ArrayLike, ""],
    std1: ScalarLike,
    std2: ScalarLike,
    *,
    pad_to: int | None = None,
    dtype=None,
) -> LinearNetwork:
    r"""I.i.d. Gaussian initialization: $W_1 \sim \sigma_1 N(0,1)^{h\times D}$,
    $W_2 \sim \sigma_2 N(0,1)^{m\times h}$ (the paper's $\sigma_U$, $\sigma_V$, docs/theory.md §5).

    With $h \gg r+m$ the imbalance's extreme eigenvalues are roughly
    $\lambda_r(\Lambda)\approx\sigma_1^2(\sqrt h-\sqrt r)^2$ and
    $\lambda_m(-\Lambda)\approx\sigma_2^2(\sqrt h-\sqrt m)^2$ (docs/theory.md §2(b)).

    **Arguments:**

    - `key`: a `jax.random` key. Hidden unit $i$ is drawn from `fold_in(key, i)`, so the same
      key gives the same first units at every width and padding (up to an ulp).
    - `D`, `m`: input and output dimensions.
    - `h`: hidden width. A Python int, or (with `pad_to`) a traced integer.
    - `std1`, `std2`: entry standard deviations of the two layers (may be traced).
    - `pad_to`: if given, return an array of width `pad_to` whose units `h..pad_to-1` are zero —
      an exactly equivalent network (docs/theory.md §3) whose shape does not depend on `h`, so a
      sweep over widths compiles once.
    - `dtype`: defaults to JAX's default float (float64 under `jax_enable_x64`).

    **Returns:** a `flowlin.LinearNetwork`.
    """
    call = "flowlin.init.gaussian(...)"
    check_key(call, "key", key)
    D = check_int(call, "D", D, minimum=1)
    m = check_int(call, "m", m, minimum=1)
    width = _check_width(call, h, pad_to)
    check_positive(call, "std1", std1, allow_zero=True, scalar=True)
    check_positive(call, "std2", std2, allow_zero=True, scalar=True)
    dtype = float_dtype(call, dtype)
    check_fits_in_memory(
        call, f"h = {width}: the weights (D = {D}, m = {m})", width * (D + m), dtype
    )
    check_std_fits(call, "std1", std1, dtype, asked=std1)
    check_std_fits(call, "std2", std2, dtype, asked=std2)
    a, b = _unit_normals(key, width, D, m, dtype)
    W1 = jnp.asarray(std1, dtype) * a
    W2 = jnp.asarray(std2, dtype) * b
    if pad_to is not None:
        active = (jnp.arange(width) < h).astype(dtype)
        W1 = W1 * active[:, None]
        W2 = W2 * active[None, :]
    return LinearNetwork(W1, W2)


@full_precision
def paper(
    key: KeyLike,
    D: int,
    m: int,
    h: int | Int[ArrayLike, ""],
    alpha: ScalarLike,
    *,
    pad_to: int | None = None,
    dtype=None,
) -> LinearNetwork:
    r"""The wide-network initialization of ICML Lemma 1 / Theorem 2 (docs/theory.md §2(g)):
    all entries of $W_1, W_2$ i.i.d. $N(0, h^{-2\alpha})$.

    $\alpha = 1/2$ is the NTK-like scaling (variance $1/h$) of ICML Fig. 1; Theorem 2 covers
    $1/4 < \alpha \le 1/2$, but any $\alpha \ge 0$ is a valid initialization.

    **Arguments:** as `gaussian`, with `alpha` (>= 0, may be traced) in place of the two stds.
    The std uses the true width `h`, also when padded.
    """
    call = "flowlin.init.paper(...)"
    check_key(call, "key", key)  # (also checked by `gaussian`, under its own name)
    D = check_int(call, "D", D, minimum=1)
    m = check_int(call, "m", m, minimum=1)
    check_positive(call, "alpha", alpha, allow_zero=True, scalar=True)
    dtype = float_dtype(call, dtype)
    width = _check_width(call, h, pad_to)
    check_fits_in_memory(
        call, f"h = {width}: the weights (D = {D}, m = {m})", width * (D + m), dtype
    )
    if is_concrete(h) and is_concrete(alpha):
        check_std_fits(call, "alpha (h^-alpha)", float64_std(1.0, h, alpha), dtype)
    std = jnp.asarray(h, dtype) ** (-jnp.asarray(alpha, dtype))
    return gaussian(key, D, m, h, std, std, pad_to=pad_to, dtype=dtype)


@full_precision
def pad_width(net: LinearNetwork, width: int) -> LinearNetwork:
    """Zero-pad `net` with hidden units up to `width`.

    Exact for gradient flow and gradient descent: a unit with zero input and output weights has
    zero gradient and stays zero (docs/theory.md §3), so the padded network's product, loss and
    every diagnostic equal the original's at all times.
    """
    call = "flowlin.init.pad_width(...)"
    if not isinstance(net, LinearNetwork):
        raise TypeError(f"`{call}`: net must be a flowlin.LinearNetwork, got {type(net).__name__}")
    width = check_int(call, "width", width, minimum=1)
    if width < net.width:
        raise ValueError(f"`{call}`: width={width} is smaller than the network's {net.width}")
    return zeros_like_padding(net, width)


@full_precision
def project_to_invariant_set(
    net: LinearNetwork | DeepLinearNetwork, problem: Problem
) -> LinearNetwork | DeepLinearNetwork:
    r"""Remove from every hidden unit's input weights the part outside the row space of X.

    Sets $U_2 = \Phi_2^\top W_1^\top = 0$, i.e. $W_1 \leftarrow W_1\Phi_1\Phi_1^\top$, which puts
    the network in the invariant set $\{VU_2^\top = 0, U_1U_2^\top = 0\}$ of ICML Proposition 1
    (docs/theory.md §2(e)): if gradient flow converges from there, it converges to the min-norm
    solution $W^\star$ exactly. Unlike `balanced_like`, the product changes (by the part of
    $W$ that $X$ cannot see).

    A `flowlin.DeepLinearNetwork` is projected the same way, in its first layer only:
    $W_1 \leftarrow W_1\Phi_1\Phi_1^\top$, so $W_1\Phi_2 = 0$, which the flow keeps at every
    depth; if it converges, it converges to $W^\star$ (docs/theory.md §6).
    """
    call = "flowlin.init.project_to_invariant_set(...)"
    if isinstance(net, DeepLinearNetwork):
        check_deep_compatible(call, net, problem)
        W1 = net.weights[0]
        return DeepLinearNetwork([W1 - problem.null_part(W1), *net.weights[1:]])
    check_compatible(call, net, problem)
    return LinearNetwork(net.W1 - problem.null_part(net.W1), net.W2)


def _sym_power(M, p):
    """M^p for a symmetric positive-definite matrix, by its eigendecomposition."""
    w, Q = jnp.linalg.eigh(M)
    return (Q * w**p) @ Q.T


@full_precision
def balanced_like(
    net: LinearNetwork, problem: Problem, *, key: KeyLike | None = None
) -> LinearNetwork:
    r"""The balanced initialization with the same product (ICML Fig. 2, docs/theory.md §5).

    With $\Theta_0 = W_2W_1^\top{}^\top$ ($D\times m$) and $M = \Theta_0^\top\Phi_1\Phi_1^\top
    \Theta_0$ ($m\times m$):
    $U_{bal} = \Theta_0 M^{-1/4} q^\top$, $V_{bal} = M^{1/4} q^\top$, with $q$ ($h\times m$,
    $q^\top q = I$). Then $U_{bal}V_{bal}^\top = \Theta_0$ and the reduced imbalance
    $\Lambda = U_1^\top U_1 - V^\top V = 0$ (so ICML Theorem 1 gives no rate: $c = 0$).

    **Arguments:**

    - `net`: the network whose product to keep (width $h \ge m$).
    - `problem`: gives $\Phi_1$. $M$ must be invertible: the product's row-space part must have
      rank $m$.
    - `key`: if given, $q$ is a random orthonormal frame; otherwise the first $m$ hidden units.
    """
    call = "flowlin.init.balanced_like(...)"
    check_compatible(call, net, problem)
    if key is not None:
        check_key(call, "key", key)
    h, m = net.width, net.out_features
    if h < m:
        raise ValueError(f"`{call}`: the balanced init needs width h >= m, got h={h}, m={m}")
    theta0 = net.product.T  # D×m
    proj = problem.Phi1.T @ theta0  # r×m
    M = proj.T @ proj
    if is_concrete(M):
        w = np.linalg.eigvalsh(np.asarray(M))
        if w[0] <= w[-1] * m * np.finfo(np.asarray(M).dtype).eps * 100 or w[-1] == 0:
            raise ValueError(
                f"`{call}`: the product's row-space part Φ1ᵀΘ0 is rank-deficient (eigenvalues "
                f"of M = Θ0ᵀΦ1Φ1ᵀΘ0: {w}); the balanced factorization needs it to have rank m"
            )
    if key is None:
        q = jnp.eye(h, m, dtype=net.dtype)
    else:
        q, _ = jnp.linalg.qr(jax.random.normal(key, (h, m), net.dtype))
    U = theta0 @ _sym_power(M, -0.25) @ q.T  # D×h
    V = _sym_power(M, 0.25) @ q.T  # m×h
    return LinearNetwork(U.T, V)


@full_precision
def lambda_balanced(
    key: KeyLike,
    problem: Problem,
    h: int,
    lam: ScalarLike,
    *,
    scale: ScalarLike = 1.0,
) -> LinearNetwork:
    r"""A λ-balanced initialization: $\Lambda = U_1^\top U_1 - V^\top V = \lambda I_h$, $U_2 = 0$.

    These are the initializations whose flow has the Riccati closed form of docs/theory.md §4
    (`flowlin.exact.lambda_balanced_gram`). Existence needs $h \le r$ for $\lambda > 0$ and
    $h \le m$ for $\lambda < 0$ (for $\lambda = 0$ any $h$).

    Construction: for $\lambda > 0$, $V = $ `scale` $\cdot N(0,1)^{m\times h}$ and
    $U_1 = O(\lambda I + V^\top V)^{1/2}$ with $O$ ($r\times h$) random orthonormal; for
    $\lambda < 0$ the roles swap; for $\lambda = 0$, $U_1 = O_1 A$, $V = O_2 A$ with $A$
    ($k\times h$, $k = \min(r, m, h)$) Gaussian.

    **Arguments:** `key`; `problem`; width `h`; `lam` ($\lambda$, a concrete float); `scale`,
    the std of the free factor.
    """
    call = "flowlin.init.lambda_balanced(...)"
    check_key(call, "key", key)
    check_problem(call, problem)
    h = check_int(call, "h", h, minimum=1)
    check_number(call, "lam", lam)
    if not is_concrete(lam):
        raise TypeError(f"`{call}`: lam must be a concrete number (it selects the construction)")
    lam = float(lam)
    if not np.isfinite(lam):
        raise ValueError(f"`{call}`: lam must be finite, got {lam}")
    check_positive(call, "scale", scale, allow_zero=True, scalar=True)
    r, m, dtype = problem.rank, problem.m, problem.dtype
    if lam > 0 and h > r:
        raise ValueError(
            f"`{call}`: lam > 0 needs h <= r = {r} (Λ has <= r positive eigenvalues), got h={h}"
        )
    if lam < 0 and h > m:
        raise ValueError(
            f"`{call}`: lam < 0 needs h <= m = {m} (Λ has <= m negative eigenvalues), got h={h}"
        )
    k1, k2, k3 = jax.random.split(key, 3)
    scale = jnp.asarray(scale, dtype)
    eye = jnp.eye(h, dtype=dtype)
    if lam > 0:
        V = scale * jax.random.normal(k1, (m, h), dtype)
        O, _ = jnp.linalg.qr(jax.random.normal(k2, (r, h), dtype))
        U1 = O @ _sym_power(lam * eye + V.T @ V, 0.5)
    elif lam < 0:
        U1 = scale * jax.random.normal(k1, (r, h), dtype)
        O, _ = jnp.linalg.qr(jax.random.normal(k2, (m, h), dtype))
        V = O @ _sym_power(-lam * eye + U1.T @ U1, 0.5)
    else:
        k = min(r, m, h)
        A = scale * jax.random.normal(k1, (k, h), dtype)
        O1, _ = jnp.linalg.qr(jax.random.normal(k2, (r, k), dtype))
        O2, _ = jnp.linalg.qr(jax.random.normal(k3, (m, k), dtype))
        U1, V = O1 @ A, O2 @ A
    W1 = (problem.Phi1 @ U1).T  # U2 = 0: input weights inside the row space of X
    return LinearNetwork(W1, V)


@full_precision
def reduce_width(
    net: LinearNetwork, problem: Problem, *, keep_null_space: bool = False
) -> LinearNetwork:
    r"""An exactly equivalent network of width at most $r + m$ (docs/theory.md §3).

    The loss is invariant under $(W_1, W_2)\mapsto(RW_1, W_2R^\top)$ for orthogonal $R$
    ($h\times h$) and gradient flow and descent are equivariant, so only the span of the
    hidden-unit directions that move matters. Those are the rows of
    $Z_0 = [\Sigma^{1/2}U_1(0); V(0)]$ ($(r+m)\times h$): $Z(t) = \Psi(t)Z_0$ keeps its row
    space, and $U_2$ never moves. With the thin QR $Z_0^\top = Q_hR$ ($Q_h$:
    $h\times k$, $k = \min(h, r+m)$) the reduced network is
    $$W_1' = Q_h^\top W_1,\qquad W_2' = W_2Q_h.$$

    **Exactness.** For gradient flow and for gradient descent (plain, or any optimizer whose
    update commutes with an orthogonal change of hidden basis: SGD, momentum, Nesterov — not
    Adam or RMSProp, which act per coordinate), at every time or iteration, in exact
    arithmetic:

    - the product is the same: $W_2'(t)W_1'(t) = W_2(t)W_1(t)$; hence so are the loss, $E$,
      $\Theta$, the distance to $W^\star$, the rate and $\sigma_{\min}(U_1V^\top)$;
    - so are $Q_0$ and $K$ (`gram_init` gives the same `GramInit`) and the nonzero spectrum of
      $\Lambda = U_1^\top U_1 - V^\top V$;
    - the original weights are recovered from the reduced ones:
      $W_1(t) = Q_hW_1'(t) + (I - Q_hQ_h^\top)W_1(0)$, $W_2(t) = W_2'(t)Q_h^\top$.

    What is *not* kept by default is the null-space part $(I - Q_hQ_h^\top)W_1(0)$ of the
    input weights of hidden directions that carry no $U_1$ or $V$: those units have zero
    output weights, never move and never touch the product, but they count in
    $\|W_1\|_F$ and in the spectrum of $W_1W_1^\top - W_2^\top W_2 = \Lambda + U_2^\top U_2$.
    With `keep_null_space=True` the QR is of $[Z_0^\top, U_2(0)^\top]$ instead, giving width
    $\min(h, D + m)$: an orthogonal change of hidden basis that drops only exactly-zero
    units, so *every* weight-space quantity is preserved (the first $\min(h, r+m)$ units
    still carry all of the motion).

    A network no wider than the target width is returned unchanged. When $Z_0$ is
    rank-deficient some of the $k$ units carry (numerically) zero $U_1$ and $V$: still exact.

    **Arguments:**

    - `net`: the network to reduce.
    - `problem`: gives $\Phi_1$, $\Sigma$ (and $\Phi_2$ for `keep_null_space`).
    - `keep_null_space`: keep the full input weights (width $\le D + m$) rather than only
      what the dynamics sees (width $\le r + m$).

    **Returns:** a `flowlin.LinearNetwork` of width $\min(h, r+m)$ (or $\min(h, D+m)$).
    """
    call = "flowlin.init.reduce_width(...)"
    check_compatible(call, net, problem)
    check_bool(call, "keep_null_space", keep_null_space)
    r, m, D, h = problem.rank, problem.m, problem.D, net.width
    width = min(h, D + m) if keep_null_space else min(h, r + m)
    if width >= h:
        return net
    net = LinearNetwork(net.W1.astype(problem.dtype), net.W2.astype(problem.dtype))
    Z0 = jnp.concatenate([problem.sqrt_sigma[:, None] * problem.row_part(net.W1), net.W2], 0)
    A = Z0.T  # h×(r+m)
    if keep_null_space and D > r:
        # Φ2: the last D - r columns of a complete QR of Φ1 (see `Problem.phi2`).
        Phi2 = jnp.linalg.qr(problem.Phi1, mode="complete")[0][:, r:]
        A = jnp.concatenate([A, net.W1 @ Phi2], axis=1)  # [Z0ᵀ, U2ᵀ], h×(D+m)
    # Householder QR: A[:, :j] = Qh[:, :j] R[:j, :j] for every j, so the span of Z0's rows
    # lies in the first min(h, r+m) columns of Qh even when Z0 is rank-deficient.
    Qh, _ = jnp.linalg.qr(A)  # h×width
    return LinearNetwork(Qh.T @ net.W1, net.W2 @ Qh)
