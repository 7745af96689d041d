r"""Every result of theory.md §2 as a function of the initialization (and, where a result is
about a time-$t$ state, of that state).

Scalar results take the initialization as a `flowlin.LinearNetwork` or as its width-independent
statistics `flowlin.GramInit` $(Q, K)$ (theory.md §3): with $S = \Sigma^{1/2}$,
$Z_0 = [SU_1(0); V(0)]$ and $G_0 = U_2(0)Z_0^\top$,

- $Q = Z_0Z_0^\top$ gives $U_1U_1^\top = S^{-1}Q_{11}S^{-1}$, $VV^\top = Q_{22}$,
  $U_1V^\top = S^{-1}Q_{12}$, $E(0) = \tilde Y - Q_{12}$ and the nonzero spectrum of the
  imbalance $\Lambda = U_1^\top U_1 - V^\top V$ (that of $J P$, $P = D^{-1}QD^{-1}$ the Gram of
  $[U_1; V]$, $D = \mathrm{diag}(S, I_m)$, $J = \mathrm{diag}(I_r, -I_m)$);
- $K = G_0^\top G_0$ gives the invariant-set residuals $\|VU_2^\top\|_F^2 = \mathrm{tr}\,K_{22}$ and
  $\|U_1U_2^\top\|_F^2 = \mathrm{tr}(S^{-1}K_{11}S^{-1})$.

Conventions (theory.md §1, api.md): eigenvalues and singular values are in decreasing order, an
index beyond the matrix's size gives 0, $[a]_+ = \max(a, 0)$; every `rate_*` is the decay
exponent $\rho$ of the excess loss, $L(t) - L^\star \le e^{-\rho t}(L(0) - L^\star)$; distances
are Frobenius norms of $W - W^\star$ unless the name says otherwise.
"""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Real

from ._custom_types import ScalarLike
from ._errors import is_concrete
from ._gram_init import GramInit, gram_init
from ._network import LinearNetwork, check_compatible
from ._problem import Problem


#: Eigenvalues of the imbalance within this many `k·eps·‖P‖` of zero are treated as exact
#: zeros: they are the round-off images of the zero eigenvalues that a width h < r + m or
#: zero-padded units create (eigh's backward error is O(k·eps·‖P‖), Weyl's bound carries it to
#: the eigenvalues; 64 is the safety factor). Without it, c would be ±1e-17 instead of 0 and a
#: theorem would "apply" on round-off.
_ZERO_EIGENVALUE_FACTOR = 64

#: A hidden width: a Python/NumPy number or a 0-d (possibly traced) integer or float array.
WidthLike = int | float | np.number | Real[ArrayLike, ""]


# -- input handling -------------------------------------------------------------------------


def _check_problem(call: str, problem) -> None:
    if not isinstance(problem, Problem):
        raise TypeError(
            f"`{call}`: problem must be a flowlin.Problem, got {type(problem).__name__}"
        )


def _as_gram(call: str, init, problem: Problem) -> GramInit:
    """The `GramInit` of `init` (a network or already a `GramInit`), checked against `problem`."""
    _check_problem(call, problem)
    if isinstance(init, LinearNetwork):
        check_compatible(call, init, problem)
        return gram_init(init, problem)
    if isinstance(init, GramInit):
        k = problem.rank + problem.m
        if init.Q.shape != (k, k) or init.K.shape != (k, k):
            raise ValueError(
                f"`{call}`: init.Q and init.K must be (r+m)x(r+m) = ({k}, {k}) for this problem "
                f"(r={problem.rank}, m={problem.m}), got Q.shape={init.Q.shape}, "
                f"K.shape={init.K.shape}; use jax.vmap for a batch"
            )
        return init
    raise TypeError(
        f"`{call}`: init must be a flowlin.LinearNetwork or a flowlin.GramInit, got "
        f"{type(init).__name__}"
    )


def _as_network(call: str, net, problem: Problem | None, name: str = "net") -> LinearNetwork:
    if not isinstance(net, LinearNetwork):
        raise TypeError(
            f"`{call}`: {name} must be a flowlin.LinearNetwork (this result is a matrix of the "
            f"width-h weights, which a GramInit does not hold), got {type(net).__name__}"
        )
    if problem is not None:
        _check_problem(call, problem)
        check_compatible(call, net, problem)
    return net


def _split(problem: Problem, M):
    r = problem.rank
    return M[:r, :r], M[:r, r:], M[r:, r:]


def _lambda_r_sigma(problem: Problem) -> Float[Array, ""]:
    return problem.sigma[-1]


def _lambda_1_sigma(problem: Problem) -> Float[Array, ""]:
    return problem.sigma[0]


def _plus(a):
    return jnp.maximum(a, 0)


# -- (a) the conserved imbalance --------------------------------------------------------------


def imbalance(net: LinearNetwork, problem: Problem) -> Float[Array, "h h"]:
    r"""The reduced imbalance $\Lambda = U_1^\top U_1 - V^\top V$ ($h\times h$), conserved in time.

    $$\Lambda = U_1^\top U_1 - V^\top V,\qquad U_1 = \Phi_1^\top W_1^\top,\ V = W_2.$$

    **Arguments:**

    - `net`: a `flowlin.LinearNetwork` (a matrix of the width-$h$ weights: a `GramInit` does
      not hold it; use `imbalance_eigenvalues` for its spectrum).
    - `problem`: the `flowlin.Problem` (gives $\Phi_1$).

    **Returns:** $\Lambda$, shape `(h, h)`.

    **Example:**

    ```python
    lam = flowlin.theory.imbalance(net, problem)   # (h, h), constant along gradient flow
    ```

    theory.md §2(a) (ICML 2021 §3): $\dot\Lambda = 0$ under gradient flow, for any
    initialization; $\Lambda$ has at most $r$ positive and at most $m$ negative eigenvalues.
    """
    call = "flowlin.theory.imbalance(...)"
    net = _as_network(call, net, problem)
    U1 = problem.row_part(net.W1)
    return U1.T @ U1 - net.W2.T @ net.W2


def full_imbalance(net: LinearNetwork) -> Float[Array, "h h"]:
    r"""The full imbalance $W_1W_1^\top - W_2^\top W_2 = \Lambda + U_2^\top U_2$ (conserved).

    **Arguments:** `net`, a `flowlin.LinearNetwork`.

    **Returns:** shape `(h, h)`.

    **Example:** `flowlin.theory.full_imbalance(net)`.

    theory.md §2(a): conserved because $U_2$ never moves ($X\Phi_2 = 0$) and $\Lambda$ is
    conserved; holds for any data.
    """
    net = _as_network("flowlin.theory.full_imbalance(...)", net, None)
    return net.W1 @ net.W1.T - net.W2.T @ net.W2


def _eigenvalues(gram: GramInit, problem: Problem) -> Float[Array, " k"]:
    """Decreasing eigenvalues of $B^\\top J B$, $BB^\\top = P$ (the Gram of $[U_1; V]$)."""
    r, m = problem.rank, problem.m
    dtype = gram.Q.dtype
    scale = jnp.concatenate([1.0 / problem.sqrt_sigma, jnp.ones(m, problem.dtype)]).astype(dtype)
    P = gram.Q * scale[:, None] * scale[None, :]
    P = 0.5 * (P + P.T)
    w, O = jnp.linalg.eigh(P)
    threshold = _ZERO_EIGENVALUE_FACTOR * (r + m) * jnp.finfo(dtype).eps * w[-1]
    # Directions of P at round-off level are exact zeros (width h < r + m, padding, a balanced
    # init's rank-deficient Z): drop them before the square root. Keeping them would put their
    # sqrt(eps)-sized columns into B and couple them to the rest at first order, moving a zero
    # eigenvalue of Λ by ~sqrt(eps)·‖P‖ instead of eps·‖P‖. Dropping them perturbs Λ by at most
    # `threshold`.
    w = jnp.where(w > threshold, w, 0.0)
    B = O * jnp.sqrt(w)
    signs = jnp.concatenate([jnp.ones(r, dtype), -jnp.ones(m, dtype)])
    M = B.T @ (signs[:, None] * B)
    ev = jnp.linalg.eigvalsh(0.5 * (M + M.T))[::-1]
    return jnp.where(jnp.abs(ev) <= threshold, 0.0, ev)


def imbalance_eigenvalues(init: LinearNetwork | GramInit, problem: Problem) -> Float[Array, " k"]:
    r"""The $r + m$ eigenvalues of $\Lambda = U_1^\top U_1 - V^\top V$ that can be nonzero.

    In decreasing order.

    $\Lambda = Z'^\top JZ'$ with $Z' = [U_1; V]$, $J = \mathrm{diag}(I_r, -I_m)$, so its nonzero
    eigenvalues are those of $B^\top JB$ for any $B$ with $BB^\top = Z'Z'^\top$; flowlin takes
    $B$ from the eigendecomposition of that $(r+m)\times(r+m)$ Gram (from `init.Q`), whatever
    the width. For $h \ge r + m$ the spectrum of the $h\times h$ matrix is this one plus
    $h - r - m$ zeros; for $h < r + m$ this one holds at least $r + m - h$ zeros. Values within
    round-off of zero are returned as exact zeros.

    **Arguments:**

    - `init`: a `flowlin.LinearNetwork` or a `flowlin.GramInit`.
    - `problem`: the `flowlin.Problem`.

    **Returns:** shape `(r + m,)`; the first $\le r$ are $\ge 0$, the last $\le m$ are $\le 0$
    (Sylvester's law of inertia).

    **Example:** `flowlin.theory.imbalance_eigenvalues(net, problem)[: problem.rank]`.

    theory.md §2(a), §3.
    """
    gram = _as_gram("flowlin.theory.imbalance_eigenvalues(...)", init, problem)
    return _eigenvalues(gram, problem)


def _spreads_from_eigenvalues(ev, r: int):
    lam_1, lam_r = _plus(ev[0]), _plus(ev[r - 1])
    neg_1, neg_m = _plus(-ev[-1]), _plus(-ev[r])  # λ1(-Λ), λm(-Λ): ev[r + m - m] = ev[r]
    return lam_1 - lam_r, neg_1 - neg_m, lam_r + neg_m


def imbalance_spreads(
    init: LinearNetwork | GramInit, problem: Problem
) -> tuple[Float[Array, ""], Float[Array, ""], Float[Array, ""]]:
    r"""The imbalance spreads $(\Delta_+, \Delta_-, \Delta)$ of v2; $\Delta = c$ of ICML Theorem 1.

    $$\Delta_+ = [\lambda_1(\Lambda)]_+ - [\lambda_r(\Lambda)]_+,\quad
      \Delta_- = [\lambda_1(-\Lambda)]_+ - [\lambda_m(-\Lambda)]_+,\quad
      \Delta = c = [\lambda_r(\Lambda)]_+ + [\lambda_m(-\Lambda)]_+,$$
    eigenvalues of the $h\times h$ matrix $\Lambda = U_1^\top U_1 - V^\top V$ at $t = 0$ (it is
    conserved, so any time gives the same), with an index beyond its size giving 0 (so
    $h < r$ gives $[\lambda_r(\Lambda)]_+ = 0$ and $h < m$ gives $[\lambda_m(-\Lambda)]_+ = 0$).

    **Arguments:**

    - `init`: a `flowlin.LinearNetwork` or a `flowlin.GramInit` (or a state at any time).
    - `problem`: the `flowlin.Problem`.

    **Returns:** `(spread_plus, spread_minus, c)`, scalars.

    **Example:**

    ```python
    dp, dm, c = flowlin.theory.imbalance_spreads(net, problem)
    ```

    theory.md §2(b)–(c): ICML Theorem 1 ($c$), v2 Proposition 1 / Theorem 3 ($\Delta_\pm$).
    """
    gram = _as_gram("flowlin.theory.imbalance_spreads(...)", init, problem)
    return _spreads_from_eigenvalues(_eigenvalues(gram, problem), problem.rank)


# -- (b) ICML Theorem 1 -----------------------------------------------------------------------


def _rate_imbalance(spreads, problem):
    return 2 * _lambda_r_sigma(problem) * spreads[2]


def rate_imbalance(init: LinearNetwork | GramInit, problem: Problem) -> Float[Array, ""]:
    r"""The loss-decay rate guaranteed by the imbalance alone (ICML 2021 Theorem 1).

    $$L(t) - L^\star \le e^{-\rho t}(L(0) - L^\star),\qquad
      \rho = 2\lambda_r(\Sigma)\,c,\quad c = [\lambda_r(\Lambda)]_+ + [\lambda_m(-\Lambda)]_+ .$$

    **Arguments:**

    - `init`: a `flowlin.LinearNetwork` or a `flowlin.GramInit`.
    - `problem`: the `flowlin.Problem`.

    **Returns:** $\rho \ge 0$. $\rho = 0$ (e.g. a balanced initialization, or $h < r$ with
    $h < m$) means the theorem guarantees no decay: the envelope is the trivial
    $L(t) - L^\star \le L(0) - L^\star$.

    **Example:** `flowlin.theory.rate_imbalance(net, problem)`.

    theory.md §2(b). Valid for any initialization and width; if $h \ge r + m$ the brackets
    can be dropped.
    """
    gram = _as_gram("flowlin.theory.rate_imbalance(...)", init, problem)
    spreads = _spreads_from_eigenvalues(_eigenvalues(gram, problem), problem.rank)
    return _rate_imbalance(spreads, problem)


# -- (c) v2 Lemma 7 and Proposition 1 ---------------------------------------------------------


def _error(gram: GramInit, problem: Problem):
    _, Q12, _ = _split(problem, gram.Q)
    return problem.Y_tilde.astype(gram.Q.dtype) - Q12


def _product(gram: GramInit, problem: Problem):
    """U1 Vᵀ = S^{-1} Q12 (r×m)."""
    _, Q12, _ = _split(problem, gram.Q)
    return Q12 / problem.sqrt_sigma[:, None]


def _min_singular_value(A) -> Float[Array, ""]:
    return jnp.linalg.svd(A, compute_uv=False)[-1]


def instantaneous_rate(state: LinearNetwork | GramInit, problem: Problem) -> Float[Array, ""]:
    r"""The exact instantaneous decay rate $\rho(t) = -\tfrac{d}{dt}\log(L - L^\star)$ at a state.

    Since $\dot E = -\Sigma^{1/2}U_1U_1^\top\Sigma^{1/2}E - \Sigma EVV^\top$,
    $$\rho = \frac{2\left(\|U_1^\top\Sigma^{1/2}E\|_F^2 + \langle E, \Sigma EVV^\top\rangle\right)}
      {\|E\|_F^2}
      = \frac{2\left(\mathrm{tr}(E^\top Q_{11}E) + \mathrm{tr}(\Sigma EQ_{22}E^\top)\right)}
      {\|E\|_F^2}.$$

    **Arguments:**

    - `state`: the network at time $t$ (a `flowlin.LinearNetwork` or its `flowlin.GramInit`).
    - `problem`: the `flowlin.Problem`.

    **Returns:** $\rho(t)$; NaN where $E = 0$ exactly (the rate of a zero loss is undefined).

    **Example:** `flowlin.theory.instantaneous_rate(traj.final_network, problem)`.

    theory.md §2(c), v2 Lemma 7 (the identity; `lemma7_bound` is its lower bound). Equals the
    `rate` diagnostic of a `flowlin.Trajectory`.
    """
    gram = _as_gram("flowlin.theory.instantaneous_rate(...)", state, problem)
    Q11, _, Q22 = _split(problem, gram.Q)
    E = _error(gram, problem)
    num = jnp.sum(E * (Q11 @ E)) + jnp.sum((problem.sigma[:, None] * E) * (E @ Q22))
    e2 = jnp.sum(E**2)
    return jnp.where(e2 > 0, 2 * num / jnp.where(e2 > 0, e2, 1.0), jnp.nan)


def lemma7_bound(state: LinearNetwork | GramInit, problem: Problem) -> Float[Array, ""]:
    r"""Lower bound on the instantaneous rate from the layers' spectra (v2 Lemma 7).

    $$\rho(t) \ge 2\lambda_r(\Sigma)\left(\lambda_r(U_1U_1^\top) + \lambda_m(VV^\top)\right),$$
    $U_1, V$ at time $t$ ($U_1U_1^\top$ is $r\times r$, $VV^\top$ is $m\times m$: the smallest
    eigenvalue of each, zero when $h < r$, resp. $h < m$).

    **Arguments:**

    - `state`: the network at time $t$ (a `flowlin.LinearNetwork` or its `flowlin.GramInit`).
    - `problem`: the `flowlin.Problem`.

    **Returns:** the bound, $\ge 0$.

    **Example:**

    ```python
    flowlin.theory.lemma7_bound(net, problem) <= flowlin.theory.instantaneous_rate(net, problem)
    ```

    theory.md §2(c), v2 Lemma 7; holds at every state, any width.
    """
    gram = _as_gram("flowlin.theory.lemma7_bound(...)", state, problem)
    Q11, _, Q22 = _split(problem, gram.Q)
    s = problem.sqrt_sigma
    UU = Q11 / s[:, None] / s[None, :]
    lam_u = _plus(jnp.linalg.eigvalsh(0.5 * (UU + UU.T))[0])
    lam_v = _plus(jnp.linalg.eigvalsh(0.5 * (Q22 + Q22.T))[0])
    return 2 * _lambda_r_sigma(problem) * (lam_u + lam_v)


def _prop1(spreads, sigma_m, sigma_r, problem):
    dp, dm, d = spreads
    term_m = -dp + jnp.sqrt((dp + d) ** 2 + 4 * sigma_m**2)
    term_r = -dm + jnp.sqrt((dm + d) ** 2 + 4 * sigma_r**2)
    return _lambda_r_sigma(problem) * (term_m + term_r)


def _index_split(problem: Problem, smallest):
    """(σ_m, σ_r) of an r×m matrix from its smallest singular value σ_{min(r,m)}: an index
    beyond min(r, m) gives 0 (theory.md §1)."""
    zero = jnp.zeros_like(smallest)
    r, m = problem.rank, problem.m
    return (smallest if m <= r else zero), (smallest if r <= m else zero)


def instantaneous_rate_bound(
    init: LinearNetwork | GramInit,
    problem: Problem,
    *,
    product_min_singular_value: Float[ArrayLike, "*times"] | None = None,
) -> Float[Array, "*times"]:
    r"""Lower bound on the instantaneous rate from imbalance and margin (v2 Proposition 1).

    $$\rho(t) \ge \lambda_r(\Sigma)\Big(-\Delta_+ + \sqrt{(\Delta_+ + \Delta)^2
      + 4\sigma_m^2(U_1V^\top)} - \Delta_-
      + \sqrt{(\Delta_- + \Delta)^2 + 4\sigma_r^2(U_1V^\top)}\Big),$$
    with $\Delta_\pm, \Delta$ of the (conserved) imbalance and $U_1V^\top$ ($r\times m$) at time
    $t$; $\sigma_m = 0$ if $m > r$, $\sigma_r = 0$ if $r > m$. For $r = m$ it reads
    $2\lambda_r(\Sigma)\sqrt{\Delta^2 + 4\sigma_{\min}^2(U_1V^\top)}$.

    **Arguments:**

    - `init`: the initialization (gives $\Delta_\pm, \Delta$; any state of the same trajectory
      gives the same), a `flowlin.LinearNetwork` or a `flowlin.GramInit`.
    - `problem`: the `flowlin.Problem`.
    - `product_min_singular_value`: $\sigma_{\min}(U_1(t)V(t)^\top)$, any shape (e.g. the
      `product_min_singular_value` diagnostic of a trajectory, one per saved time). Default:
      that of `init`, i.e. the bound at $t = 0$ (or at the time of the state passed).

    **Returns:** the bound, of the shape of `product_min_singular_value` (a scalar by default).
    At $\sigma = 0$ it is `rate_imbalance`.

    **Example:**

    ```python
    bound = flowlin.theory.instantaneous_rate_bound(
        net0, problem, product_min_singular_value=traj.product_min_singular_value)
    jnp.all(traj.rate >= bound)
    ```

    theory.md §2(c), v2 Proposition 1; valid at every time, any width, any initialization.
    """
    gram = _as_gram("flowlin.theory.instantaneous_rate_bound(...)", init, problem)
    spreads = _spreads_from_eigenvalues(_eigenvalues(gram, problem), problem.rank)
    if product_min_singular_value is None:
        sigma = _min_singular_value(_product(gram, problem))
    else:
        sigma = jnp.asarray(product_min_singular_value, gram.Q.dtype)
    return _prop1(spreads, *_index_split(problem, sigma), problem)


# -- (d) v2 Theorem 3 and Corollaries 4–6 -----------------------------------------------------


def _margin_c(spreads, mu_m, mu_r, problem):
    dp, dm, d = spreads
    lam1 = _lambda_1_sigma(problem)
    return (
        -dp
        + jnp.sqrt((dp + d) ** 2 + 4 * mu_m**2 / lam1)
        - dm
        + jnp.sqrt((dm + d) ** 2 + 4 * mu_r**2 / lam1)
    )


def _target_singular_values(problem: Problem):
    """(σ_m(Ỹ), σ_r(Ỹ)), an index beyond min(r, m) giving 0."""
    smallest = _min_singular_value(problem.Y_tilde)
    return _index_split(problem, smallest)


def _rate_margin(spreads, error_norm, problem):
    s_m, s_r = _target_singular_values(problem)
    mu_m, mu_r = _plus(s_m - error_norm), _plus(s_r - error_norm)
    return _lambda_r_sigma(problem) * _margin_c(spreads, mu_m, mu_r, problem)


def rate_margin(
    init: LinearNetwork | GramInit,
    problem: Problem,
    *,
    error_norm: Float[ArrayLike, "*times"] | None = None,
) -> Float[Array, "*times"]:
    r"""The loss-decay rate from imbalance and margin, $\lambda_r(\Sigma)\,c(t)$ (v2 Theorem 3).

    With $\mu_m = [\sigma_m(\tilde Y) - \|E(t)\|_F]_+$ and
    $\mu_r = [\sigma_r(\tilde Y) - \|E(t)\|_F]_+$:
    $$c(t) = -\Delta_+ + \sqrt{(\Delta_+ + \Delta)^2 + 4\mu_m^2/\lambda_1(\Sigma)}
      - \Delta_- + \sqrt{(\Delta_- + \Delta)^2 + 4\mu_r^2/\lambda_1(\Sigma)},$$
    $$L(t) - L^\star \le e^{-\lambda_r(\Sigma)c(t_0)(t - t_0)}(L(t_0) - L^\star)\quad(t\ge t_0).$$

    **Arguments:**

    - `init`: the initialization (gives $\Delta_\pm, \Delta$), or the state at $t_0$: a
      `flowlin.LinearNetwork` or a `flowlin.GramInit`.
    - `problem`: the `flowlin.Problem`.
    - `error_norm`: $\|E(t_0)\|_F = \sqrt{2(L(t_0) - L^\star)}$, any shape (e.g. one per saved
      time of a trajectory, for the local form, v2 Corollaries 4–5). Default: that of `init`.

    **Returns:** $\rho = \lambda_r(\Sigma)c(t_0) \ge$ `rate_imbalance` (since $c \ge 2\Delta$),
    of the shape of `error_norm`.

    **Example:** `flowlin.theory.rate_margin(net, problem)`.

    theory.md §2(d), v2 Theorem 3 (local form: Corollaries 4–5). A positive margin
    ($\sigma_{\min}(\tilde Y) > \|E(0)\|_F$) guarantees convergence even at zero imbalance.
    """
    gram = _as_gram("flowlin.theory.rate_margin(...)", init, problem)
    spreads = _spreads_from_eigenvalues(_eigenvalues(gram, problem), problem.rank)
    if error_norm is None:
        error_norm = jnp.sqrt(jnp.sum(_error(gram, problem) ** 2))
    else:
        error_norm = jnp.asarray(error_norm, gram.Q.dtype)
    return _rate_margin(spreads, error_norm, problem)


def _rate_asymptotic(spreads, problem):
    s_m, s_r = _target_singular_values(problem)
    return _lambda_r_sigma(problem) * _margin_c(spreads, s_m, s_r, problem)


def rate_asymptotic(init: LinearNetwork | GramInit, problem: Problem) -> Float[Array, ""]:
    r"""The local rate of v2 Theorem 3 in the limit $t_0\to\infty$ (v2 Corollary 6).

    $\lambda_r(\Sigma)\,c(\infty)$ with $c$ as in `rate_margin` and $\mu_m = \sigma_m(\tilde Y)$,
    $\mu_r = \sigma_r(\tilde Y)$ ($\|E\|\to 0$):
    $$\rho_\infty = \lambda_r(\Sigma)\Big(-\Delta_+ + \sqrt{(\Delta_+ + \Delta)^2
      + 4\sigma_m^2(\tilde Y)/\lambda_1(\Sigma)} - \Delta_- + \sqrt{(\Delta_- + \Delta)^2
      + 4\sigma_r^2(\tilde Y)/\lambda_1(\Sigma)}\Big).$$

    **Arguments:** `init` (a `flowlin.LinearNetwork` or `flowlin.GramInit`), `problem`.

    **Returns:** $\rho_\infty$. For a λ-balanced initialization of width $h = r = m$ on
    whitened data it is the exact asymptotic rate $2\sqrt{\lambda^2 + 4\sigma_{\min}^2(\tilde Y)}$
    (`flowlin.exact.asymptotic_rate_balanced`).

    **Example:** `flowlin.theory.rate_asymptotic(net, problem)`.

    theory.md §2(d), v2 Corollary 6: every rate measured over $[t_0, t]$ with $t_0$ late
    enough is at least close to it; it assumes the flow converges ($E \to 0$).
    """
    gram = _as_gram("flowlin.theory.rate_asymptotic(...)", init, problem)
    spreads = _spreads_from_eigenvalues(_eigenvalues(gram, problem), problem.rank)
    return _rate_asymptotic(spreads, problem)


def excess_loss(init: LinearNetwork | GramInit, problem: Problem) -> Float[Array, ""]:
    r"""The excess loss $L - L^\star = \tfrac12\|E\|_F^2$, $E = \tilde Y - \Sigma^{1/2}U_1V^\top$.

    From the Gram statistics, $E = \tilde Y - Q_{12}$ (no cancellation against $L^\star$).

    **Arguments:** `init` (a `flowlin.LinearNetwork` or `flowlin.GramInit`), `problem`.

    **Returns:** $L - L^\star \ge 0$, the prefactor of every loss envelope.

    **Example:** `flowlin.theory.excess_loss(net, problem)`. theory.md §1.
    """
    gram = _as_gram("flowlin.theory.excess_loss(...)", init, problem)
    return 0.5 * jnp.sum(_error(gram, problem) ** 2)


def loss_envelope(
    t: Float[ArrayLike, "*times"],
    init: LinearNetwork | GramInit,
    problem: Problem,
    *,
    theorem: Literal["imbalance", "margin"] = "imbalance",
) -> Float[Array, "*times"]:
    r"""The envelope $e^{-\rho t}(L(0) - L^\star)$ bounding the excess loss $L(t) - L^\star$.

    $$L(t) - L^\star \le e^{-\rho t}\,(L(0) - L^\star),$$
    $\rho$ = `rate_imbalance` (ICML Theorem 1) or `rate_margin` (v2 Theorem 3).

    **Arguments:**

    - `t`: times (any shape), measured from the time of `init`.
    - `init`: a `flowlin.LinearNetwork` or `flowlin.GramInit`. Passing the state at a time
      $t_0$ gives the local form (times then count from $t_0$).
    - `problem`: the `flowlin.Problem`.
    - `theorem`: `"imbalance"` (ICML Theorem 1) or `"margin"` (v2 Theorem 3, tighter).

    **Returns:** the bound on the **excess** loss $L(t) - L^\star$ (add `problem.loss_star` for
    the loss), of the shape of `t`.

    **Example:**

    ```python
    ts = jnp.linspace(0, 10, 101)
    plt.semilogy(ts, flowlin.theory.loss_envelope(ts, net, problem), "--")
    ```

    theory.md §2(b) and §2(d); valid for gradient flow, any initialization and width.
    """
    call = "flowlin.theory.loss_envelope(...)"
    gram = _as_gram(call, init, problem)
    spreads = _spreads_from_eigenvalues(_eigenvalues(gram, problem), problem.rank)
    E = _error(gram, problem)
    e2 = jnp.sum(E**2)
    if theorem == "imbalance":
        rate = _rate_imbalance(spreads, problem)
    elif theorem == "margin":
        rate = _rate_margin(spreads, jnp.sqrt(e2), problem)
    else:
        raise ValueError(f"`{call}`: theorem must be 'imbalance' or 'margin', got {theorem!r}")
    t = jnp.asarray(t, gram.Q.dtype)
    return jnp.exp(-rate * t) * (0.5 * e2)


# -- (e) the invariant set and the limit identity ---------------------------------------------


def _residuals(gram: GramInit, problem: Problem):
    K11, _, K22 = _split(problem, gram.K)
    v = jnp.sqrt(_plus(jnp.trace(K22)))
    u = jnp.sqrt(_plus(jnp.sum(jnp.diagonal(K11) / problem.sigma)))
    return v, u


def invariant_set_residual(
    init: LinearNetwork | GramInit, problem: Problem
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Distance of an init from the invariant set: $(\|VU_2^\top\|_F, \|U_1U_2^\top\|_F)$.

    From $K = G_0^\top G_0$, $G_0 = U_2Z_0^\top$:
    $\|VU_2^\top\|_F^2 = \mathrm{tr}\,K_{22}$,
    $\|U_1U_2^\top\|_F^2 = \mathrm{tr}(\Sigma^{-1/2}K_{11}\Sigma^{-1/2})$.
    Both zero means $\Theta(\infty) = \hat\Theta$ exactly whenever the flow converges;
    $VU_2^\top = 0$ alone is not enough. Their root-sum-square is the prefactor of
    `distance_bound`.

    **Arguments:** `init` (a `flowlin.LinearNetwork` or `flowlin.GramInit`), `problem`.

    **Returns:** `(v_residual, u1_residual)`, scalars.

    **Example:**

    ```python
    net = flowlin.init.project_to_invariant_set(net, problem)
    flowlin.theory.invariant_set_residual(net, problem)   # (0, 0) up to round-off
    ```

    theory.md §2(e), ICML Proposition 1.
    """
    gram = _as_gram("flowlin.theory.invariant_set_residual(...)", init, problem)
    return _residuals(gram, problem)


def limit_identity(
    final: LinearNetwork, init: LinearNetwork, problem: Problem
) -> Float[Array, "m D"]:
    r"""The end-to-end map ICML Proposition 1 predicts: $W^\star + V(t)U_2(0)^\top\Phi_2^\top$.

    $$\Theta(\infty) = \hat\Theta + \Phi_2U_2(0)V(\infty)^\top,\qquad
      \|W(\infty) - W^\star\|_F = \|V(\infty)U_2(0)^\top\|_F .$$
    At a finite time the two sides differ by exactly $-(\Sigma^{-1/2}E(t))^\top\Phi_1^\top$ (so
    $\|W(t) - W^\star\|_F^2 = \|\Sigma^{-1/2}E(t)\|_F^2 + \|V(t)U_2(0)^\top\|_F^2$), which vanishes
    as the flow converges.

    **Arguments:**

    - `final`: the network at the end of a run ($t\to\infty$ in the theorem), e.g.
      `traj.final_network`.
    - `init`: the network at $t = 0$ (gives $U_2(0)$, which never moves).
    - `problem`: the `flowlin.Problem`.

    **Returns:** the predicted $W(\infty)$, shape `(m, D)`; compare with `final.product`.

    **Example:**

    ```python
    pred = flowlin.theory.limit_identity(traj.final_network, net0, problem)
    jnp.linalg.norm(traj.final_network.product - pred)   # -> 0 as the loss converges
    ```

    theory.md §2(e), ICML Proposition 1 (assumes convergence, $E(\infty) = 0$).
    """
    call = "flowlin.theory.limit_identity(...)"
    final = _as_network(call, final, problem, "final")
    init = _as_network(call, init, problem, "init")
    if final.width != init.width:
        raise ValueError(
            f"`{call}`: final and init must have the same width, got {final.width} and {init.width}"
        )
    return problem.min_norm + final.W2 @ problem.null_part(init.W1)


# -- (f) distance to the min-norm solution ----------------------------------------------------


def _distance_bound(gram, problem, spreads, error_integral):
    v, u = _residuals(gram, problem)
    residual = jnp.sqrt(v**2 + u**2)
    sqrt_l1 = jnp.sqrt(_lambda_1_sigma(problem))
    if error_integral is None:
        c = spreads[2]
        e0 = jnp.sqrt(jnp.sum(_error(gram, problem) ** 2))
        ok = c > 0
        exponent = sqrt_l1 * e0 / (_lambda_r_sigma(problem) * jnp.where(ok, c, 1.0))
        growth = jnp.where(ok, jnp.exp(exponent), jnp.inf)
    else:
        growth = jnp.exp(sqrt_l1 * error_integral)
    # 0·inf would be NaN; a zero residual stays zero whatever the growth factor.
    return jnp.where(residual == 0, jnp.zeros_like(growth), residual * growth)


def distance_bound(
    init: LinearNetwork | GramInit,
    problem: Problem,
    *,
    error_integral: Float[ArrayLike, "*times"] | None = None,
) -> Float[Array, "*times"]:
    r"""Bound on the distance $\|W(\infty) - W^\star\|_F$ of the limit to the min-norm solution.

    Deterministic (`error_integral=None`), for any initialization with $c > 0$:
    $$\|\Theta(\infty) - \hat\Theta\|_F \le \big\|[V(0)U_2(0)^\top; U_1(0)U_2(0)^\top]\big\|_F
      \exp\!\Big(\frac{\lambda_1(\Sigma)^{1/2}\|E(0)\|_F}{\lambda_r(\Sigma)\,c}\Big).$$
    A-posteriori (given $I = \int_0^t\|E(s)\|_F\,ds$ along a computed path): the exponent is
    $\lambda_1(\Sigma)^{1/2} I$; with $I = \int_0^\infty$ it bounds the limit, with $I(t)$ it bounds
    $\|V(t)U_2(0)^\top\|_F$ at time $t$.

    Derivation: $G(t) = [V(t)U_2^\top; U_1(t)U_2^\top]$ obeys $\dot G = A(t)G$ with
    $\|A(t)\|_2 \le \lambda_1(\Sigma)^{1/2}\|E(t)\|_F$, so $\|G(t)\|_F \le \|G(0)\|_F
    e^{\lambda_1(\Sigma)^{1/2}\int_0^t\|E\|_F}$, and Theorem 1 gives
    $\int_0^\infty\|E\|_F \le \|E(0)\|_F/(\lambda_r(\Sigma)c)$.

    **Arguments:**

    - `init`: a `flowlin.LinearNetwork` or `flowlin.GramInit`.
    - `problem`: the `flowlin.Problem`.
    - `error_integral`: $\int_0^t\|E\|_F ds$, any shape (e.g. the trajectory's `error_integral`
      diagnostic); `None` for the deterministic bound.

    **Returns:** the bound; `inf` for the deterministic bound when $c = 0$ (the theorem gives
    nothing); 0 on the invariant set.

    **Example:** `flowlin.theory.distance_bound(net, problem)`.

    theory.md §2(f) (derived from the proof of ICML Theorem 2).
    """
    gram = _as_gram("flowlin.theory.distance_bound(...)", init, problem)
    spreads = _spreads_from_eigenvalues(_eigenvalues(gram, problem), problem.rank)
    if error_integral is not None:
        error_integral = jnp.asarray(error_integral, gram.Q.dtype)
    return _distance_bound(gram, problem, spreads, error_integral)


# -- (g) wide random networks: ICML Lemma 1 and Theorem 2 -------------------------------------


def _b(problem: Problem, delta):
    return jnp.sqrt(jnp.asarray(problem.m + problem.D, problem.dtype)) + 0.5 * jnp.log(2 / delta)


def _h0(problem: Problem, delta):
    b = _b(problem, delta)
    l1, lr = _lambda_1_sigma(problem), _lambda_r_sigma(problem)
    return jnp.maximum(16 * b**2, 4 * (l1 / lr**3) * problem.m * b**2)


def _check_delta(call: str, delta) -> None:
    if is_concrete(delta):
        d = np.asarray(delta, dtype=float)
        if d.ndim != 0 or not (0 < d < 1):
            raise ValueError(f"`{call}`: delta must be in (0, 1), got {delta!r}")


def h0(problem: Problem, delta: ScalarLike = 0.05) -> Float[Array, ""]:
    r"""The width above which ICML Lemma 1 holds with probability $\ge 1 - \delta$.

    $$h_0 = \max\Big\{16\,b^2,\ 4\,\frac{\lambda_1(\Sigma)}{\lambda_r(\Sigma)^3}\,m\,b^2\Big\},
      \qquad b(\delta) = \sqrt{m + D} + \tfrac12\log(2/\delta).$$
    ICML Theorem 2 needs $h > h_0^{1/(4\alpha - 1)}$.

    **Arguments:** `problem`; `delta` in $(0, 1)$.

    **Returns:** $h_0$ (a float: compare it with the width).

    **Example:** `flowlin.theory.h0(problem, delta=0.05)`.

    theory.md §2(g), ICML Lemma 1.
    """
    call = "flowlin.theory.h0(...)"
    _check_problem(call, problem)
    _check_delta(call, delta)
    return _h0(problem, jnp.asarray(delta, problem.dtype))


class Lemma1Quantities(eqx.Module):
    r"""The three random quantities of an initialization that ICML Lemma 1 bounds.

    **Fields:**

    - `imbalance`: $c = [\lambda_r(\Lambda)]_+ + [\lambda_m(-\Lambda)]_+$
      (Lemma 1: $> h^{1-2\alpha}$).
    - `invariant_residual`: $\|[V(0)U_2(0)^\top; U_1(0)U_2(0)^\top]\|_F$
      (Lemma 1: $\le 2\sqrt{m+r}\,b/h^{2\alpha-1/2}$).
    - `product_norm`: $\|U_1(0)V(0)^\top\|_F$ (Lemma 1: $\le 2\sqrt m\,b/h^{2\alpha-1/2}$).

    Field names match `WideNetworkBound`'s, so `q.imbalance > w.imbalance` reads as the lemma.
    """

    imbalance: Float[Array, ""]
    invariant_residual: Float[Array, ""]
    product_norm: Float[Array, ""]


def _lemma1_quantities(gram, problem, spreads) -> Lemma1Quantities:
    v, u = _residuals(gram, problem)
    return Lemma1Quantities(
        imbalance=spreads[2],
        invariant_residual=jnp.sqrt(v**2 + u**2),
        product_norm=jnp.sqrt(jnp.sum(_product(gram, problem) ** 2)),
    )


def lemma1_quantities(init: LinearNetwork | GramInit, problem: Problem) -> Lemma1Quantities:
    r"""The quantities of an initialization that ICML Lemma 1 bounds, as a `Lemma1Quantities`.

    $c$, $\|[V(0)U_2(0)^\top; U_1(0)U_2(0)^\top]\|_F$ and $\|U_1(0)V(0)^\top\|_F$; compare them with
    `wide_network_bound(h, alpha, delta, problem)`.

    **Arguments:** `init` (a `flowlin.LinearNetwork` or `flowlin.GramInit`), `problem`.

    **Returns:** a `flowlin.theory.Lemma1Quantities`.

    **Example:**

    ```python
    q = flowlin.theory.lemma1_quantities(net, problem)
    w = flowlin.theory.wide_network_bound(net.width, 0.5, 0.05, problem)
    q.imbalance > w.imbalance
    ```

    theory.md §2(g), ICML Lemma 1.
    """
    gram = _as_gram("flowlin.theory.lemma1_quantities(...)", init, problem)
    spreads = _spreads_from_eigenvalues(_eigenvalues(gram, problem), problem.rank)
    return _lemma1_quantities(gram, problem, spreads)


class WideNetworkBound(eqx.Module):
    r"""What ICML Lemma 1 and Theorem 2 guarantee for a random initialization of width $h$.

    Initialization: all entries of $W_1, W_2$ i.i.d. $N(0, h^{-2\alpha})$ (`flowlin.init.paper`).
    Each statement holds with probability $\ge 1 - \delta$ (`confidence`).

    **Fields:**

    - `h0`: $h_0 = \max\{16b^2, 4\lambda_1(\Sigma)\lambda_r(\Sigma)^{-3}mb^2\}$,
      $b = \sqrt{m+D} + \tfrac12\log(2/\delta)$.
    - `width_threshold`: $h_0^{1/(4\alpha-1)}$, the width Theorem 2 needs.
    - `lemma1_applies`: $1/4 < \alpha \le 1/2$ and $h > h_0$.
    - `theorem2_applies`: $1/4 < \alpha \le 1/2$ and $h > h_0^{1/(4\alpha-1)}$.
    - `imbalance`: Lemma 1's lower bound $h^{1-2\alpha}$ on $c$ (NaN unless `lemma1_applies`).
    - `invariant_residual`: Lemma 1's $2\sqrt{m+r}\,b/h^{2\alpha-1/2}$ (NaN unless
      `lemma1_applies`).
    - `product_norm`: Lemma 1's $2\sqrt m\,b/h^{2\alpha-1/2}$ (NaN unless `lemma1_applies`).
    - `distance`: Theorem 2's $2C^{1/h^{1-2\alpha}}\sqrt{m+r}\,b/h^{2\alpha-1/2}$,
      $C = \exp(1 + \lambda_1(\Sigma)^{1/2}\|Y\|_F/\lambda_r(\Sigma))$, a bound on
      $\|\Theta(\infty) - \hat\Theta\|_2$ (NaN unless `theorem2_applies`).
    - `confidence`: $1 - \delta$.
    """

    h0: Float[Array, ""]
    width_threshold: Float[Array, ""]
    lemma1_applies: Bool[Array, ""]
    theorem2_applies: Bool[Array, ""]
    imbalance: Float[Array, ""]
    invariant_residual: Float[Array, ""]
    product_norm: Float[Array, ""]
    distance: Float[Array, ""]
    confidence: Float[Array, ""]


def _wide_network_bound(h, alpha, delta, problem) -> WideNetworkBound:
    """Unchecked: out-of-range alpha gives `applies = False` and NaNs (for sweeps)."""
    dtype = problem.dtype
    h = jnp.asarray(h, dtype)
    alpha = jnp.asarray(alpha, dtype)
    delta = jnp.asarray(delta, dtype)
    r, m = problem.rank, problem.m
    b = _b(problem, delta)
    h0_ = _h0(problem, delta)
    alpha_ok = (alpha > 0.25) & (alpha <= 0.5)
    # Outside (1/4, 1/2] the exponent 1/(4α - 1) is meaningless: report NaN, not a number.
    exponent = 1 / jnp.where(alpha_ok, 4 * alpha - 1, 1.0)
    threshold = jnp.where(alpha_ok, h0_**exponent, jnp.nan)
    lemma1 = alpha_ok & (h > h0_)
    theorem2 = alpha_ok & (h > threshold)
    nan = jnp.asarray(jnp.nan, dtype)
    decay = h ** (2 * alpha - 0.5)
    l1, lr = _lambda_1_sigma(problem), _lambda_r_sigma(problem)
    log_C = 1 + jnp.sqrt(l1) * jnp.sqrt(jnp.sum(problem.Y**2)) / lr
    distance = 2 * jnp.exp(log_C / h ** (1 - 2 * alpha)) * jnp.sqrt(r + m) * b / decay
    return WideNetworkBound(
        h0=h0_,
        width_threshold=threshold,
        lemma1_applies=lemma1,
        theorem2_applies=theorem2,
        imbalance=jnp.where(lemma1, h ** (1 - 2 * alpha), nan),
        invariant_residual=jnp.where(lemma1, 2 * jnp.sqrt(r + m) * b / decay, nan),
        product_norm=jnp.where(lemma1, 2 * jnp.sqrt(m) * b / decay, nan),
        distance=jnp.where(theorem2, distance, nan),
        confidence=1 - delta,
    )


def wide_network_bound(
    h: WidthLike, alpha: ScalarLike, delta: ScalarLike, problem: Problem
) -> WideNetworkBound:
    r"""ICML Lemma 1 and Theorem 2 for a random initialization $N(0, h^{-2\alpha})$ of width $h$.

    For $h > h_0$ (see `h0`), with probability $\ge 1 - \delta$:
    $c > h^{1-2\alpha}$, $\|[VU_2^\top; U_1U_2^\top]\|_F \le 2\sqrt{m+r}\,b/h^{2\alpha-1/2}$,
    $\|U_1V^\top\|_F \le 2\sqrt m\,b/h^{2\alpha-1/2}$ (Lemma 1); and for $h > h_0^{1/(4\alpha-1)}$
    $$\|\Theta(\infty) - \hat\Theta\|_2
      \le 2\,C^{1/h^{1-2\alpha}}\sqrt{m+r}\,\frac{b}{h^{2\alpha-1/2}},
      \qquad C = \exp\Big(1 + \frac{\lambda_1(\Sigma)^{1/2}\|Y\|_F}{\lambda_r(\Sigma)}\Big)$$
    (Theorem 2). At $\alpha = 1/2$ the distance is $O(h^{-1/2})$; the constants are loose (orders
    of magnitude above observed distances), the $h^{-1/2}$ slope is the informative part.

    **Arguments:**

    - `h`: the width (may be a traced array, e.g. in a sweep).
    - `alpha`: the scaling exponent, $1/4 < \alpha \le 1/2$.
    - `delta`: the failure probability, in $(0, 1)$.
    - `problem`: the `flowlin.Problem`.

    **Returns:** a `flowlin.theory.WideNetworkBound`; where a statement does not apply
    ($h \le h_0$, resp. $h \le h_0^{1/(4\alpha-1)}$) its fields are NaN and its flag is False.

    **Example:**

    ```python
    w = flowlin.theory.wide_network_bound(4000, 0.5, 0.05, problem)
    w.theorem2_applies, w.distance
    ```

    theory.md §2(g), ICML Lemma 1 and Theorem 2.
    """
    call = "flowlin.theory.wide_network_bound(...)"
    _check_problem(call, problem)
    if is_concrete(alpha):
        a = np.asarray(alpha, dtype=float)
        if a.ndim != 0 or not (0.25 < a <= 0.5):
            raise ValueError(f"`{call}`: alpha must be in (1/4, 1/2], got {alpha!r}")
    if is_concrete(h):
        hv = np.asarray(h, dtype=float)
        if hv.ndim != 0 or not (hv >= 1):
            raise ValueError(f"`{call}`: h must be a width >= 1, got {h!r}")
    _check_delta(call, delta)
    return _wide_network_bound(h, alpha, delta, problem)


# -- everything at once -----------------------------------------------------------------------

#: The keys of `quantities`, in order, with what each holds (also the sweep's variable names).
QUANTITY_KEYS: dict[str, str] = {
    "c": "Δ = c = [λr(Λ)]₊ + [λm(−Λ)]₊ (ICML Thm 1)",
    "spread_plus": "Δ₊ = [λ1(Λ)]₊ − [λr(Λ)]₊ (v2)",
    "spread_minus": "Δ₋ = [λ1(−Λ)]₊ − [λm(−Λ)]₊ (v2)",
    "lambda_r": "[λr(Λ)]₊",
    "lambda_m_neg": "[λm(−Λ)]₊",
    "c_margin": "c(0) of v2 Thm 3 (dimensionless; rate_margin / λr(Σ))",
    "c_asymptotic": "c(∞) of v2 Cor 6 (dimensionless)",
    "rate_imbalance": "2 λr(Σ) c (ICML Thm 1)",
    "rate_margin": "λr(Σ) c(0) (v2 Thm 3)",
    "rate_asymptotic": "λr(Σ) c(∞) (v2 Cor 6)",
    "rate_initial": "exact instantaneous rate ρ(0) (v2 Lemma 7); NaN if E(0) = 0",
    "rate_bound_lemma7": "v2 Lemma 7 bound at t = 0",
    "rate_bound_prop1": "v2 Prop 1 bound at t = 0",
    "theorem1_applies": "c > 0: ICML Thm 1 and the deterministic distance bound say something",
    "excess_loss": "L(0) − L* = ½‖E(0)‖²",
    "error_norm": "‖E(0)‖_F",
    "product_norm": "‖U1(0)V(0)ᵀ‖_F",
    "product_min_singular_value": "σ_min(U1(0)V(0)ᵀ)",
    "residual_v": "‖V(0)U2(0)ᵀ‖_F (ICML Prop 1)",
    "residual_u1": "‖U1(0)U2(0)ᵀ‖_F (ICML Prop 1)",
    "invariant_residual": "‖[V(0)U2(0)ᵀ; U1(0)U2(0)ᵀ]‖_F",
    "distance_initial": "‖W(0) − W*‖_F",
    "distance_bound": "deterministic bound on ‖W(∞) − W*‖_F (§2(f)); inf if c = 0",
    "width": "h used by the wide-network bounds (NaN if unknown)",
    "h0": "h0 of ICML Lemma 1 at this delta",
    "width_threshold": "h0^{1/(4α−1)} (ICML Thm 2); NaN if alpha not given or not in (1/4, 1/2]",
    "lemma1_applies": "1/4 < α ≤ 1/2 and h > h0",
    "theorem2_applies": "1/4 < α ≤ 1/2 and h > h0^{1/(4α−1)}",
    "lemma1_imbalance_bound": "h^{1−2α} (lower bound on c); NaN unless lemma1_applies",
    "lemma1_residual_bound": "2√(m+r) b / h^{2α−1/2}; NaN unless lemma1_applies",
    "lemma1_product_bound": "2√m b / h^{2α−1/2}; NaN unless lemma1_applies",
    "wide_network_bound": "ICML Thm 2 bound on ‖W(∞) − W*‖₂; NaN unless theorem2_applies",
}


def _width_of(init, width):
    if width is not None:
        return width
    if isinstance(init, LinearNetwork):
        return init.width
    return None


def quantities(
    init: LinearNetwork | GramInit,
    problem: Problem,
    *,
    width: WidthLike | None = None,
    alpha: ScalarLike | None = None,
    delta: ScalarLike = 0.05,
) -> dict[str, Array]:
    r"""Every scalar theory quantity of an initialization, as a dict with a fixed key set.

    The keys and their meaning are `flowlin.theory.QUANTITY_KEYS` (the same keys whatever the
    inputs; NaN where a quantity is not defined or a theorem does not apply, with the
    `*_applies` flags saying which). All values are 0-d arrays (bool for the flags), so the
    function works under `jax.jit` and `jax.vmap` (e.g. over a batch of inits and widths).

    **Arguments:**

    - `init`: a `flowlin.LinearNetwork` or a `flowlin.GramInit`.
    - `problem`: the `flowlin.Problem`.
    - `width`: the true width $h$ for the wide-network bounds (may be traced). Default: the
      network's width; pass it for zero-padded networks and for a `GramInit` (without it the
      width-dependent keys are NaN).
    - `alpha`: the init's scaling exponent (`flowlin.init.paper`), for ICML Lemma 1 /
      Theorem 2; `None` (or outside $(1/4, 1/2]$) makes those keys NaN and their flags False.
    - `delta`: the failure probability of Lemma 1 / Theorem 2.

    **Returns:** `dict[str, Array]` with the keys below (`QUANTITY_KEYS`).

    **Example:**

    ```python
    q = flowlin.theory.quantities(net, problem, alpha=0.5)
    q["c"], q["rate_imbalance"], q["distance_bound"], q["theorem2_applies"]
    ```

    theory.md §2(a)–(g).
    """
    call = "flowlin.theory.quantities(...)"
    gram = _as_gram(call, init, problem)
    _check_delta(call, delta)
    dtype = gram.Q.dtype
    # Numbers become arrays so that the compiled function is reused across their values.
    h = _width_of(init, width)
    h = None if h is None else jnp.asarray(h, dtype)
    alpha = None if alpha is None else jnp.asarray(alpha, dtype)
    return _quantities(gram, problem, h, alpha, jnp.asarray(delta, dtype))


@eqx.filter_jit
def _quantities(gram, problem, h, alpha, delta):
    dtype = gram.Q.dtype
    ev = _eigenvalues(gram, problem)
    spreads = _spreads_from_eigenvalues(ev, problem.rank)
    dp, dm, c = spreads
    E = _error(gram, problem)
    e_norm = jnp.sqrt(jnp.sum(E**2))
    lr = _lambda_r_sigma(problem)
    product = _product(gram, problem)
    sigma_min = _min_singular_value(product)
    rate_m = _rate_margin(spreads, e_norm, problem)
    rate_a = _rate_asymptotic(spreads, problem)
    v, u = _residuals(gram, problem)
    l1q = _lemma1_quantities(gram, problem, spreads)
    distance_initial = jnp.sqrt(jnp.sum((E / problem.sqrt_sigma[:, None]) ** 2) + v**2)

    nan = jnp.asarray(jnp.nan, dtype)
    if h is None or alpha is None:
        false = jnp.asarray(False)
        wide = WideNetworkBound(
            h0=_h0(problem, delta),
            width_threshold=nan,
            lemma1_applies=false,
            theorem2_applies=false,
            imbalance=nan,
            invariant_residual=nan,
            product_norm=nan,
            distance=nan,
            confidence=1 - delta,
        )
    else:
        wide = _wide_network_bound(h, alpha, delta, problem)
    out = {
        "c": c,
        "spread_plus": dp,
        "spread_minus": dm,
        "lambda_r": _plus(ev[problem.rank - 1]),
        "lambda_m_neg": _plus(-ev[problem.rank]),
        "c_margin": rate_m / lr,
        "c_asymptotic": rate_a / lr,
        "rate_imbalance": _rate_imbalance(spreads, problem),
        "rate_margin": rate_m,
        "rate_asymptotic": rate_a,
        "rate_initial": instantaneous_rate(gram, problem),
        "rate_bound_lemma7": lemma7_bound(gram, problem),
        "rate_bound_prop1": _prop1(spreads, *_index_split(problem, sigma_min), problem),
        "theorem1_applies": c > 0,
        "excess_loss": 0.5 * e_norm**2,
        "error_norm": e_norm,
        "product_norm": l1q.product_norm,
        "product_min_singular_value": sigma_min,
        "residual_v": v,
        "residual_u1": u,
        "invariant_residual": l1q.invariant_residual,
        "distance_initial": distance_initial,
        "distance_bound": _distance_bound(gram, problem, spreads, None),
        "width": nan if h is None else h,
        "h0": wide.h0,
        "width_threshold": wide.width_threshold,
        "lemma1_applies": wide.lemma1_applies,
        "theorem2_applies": wide.theorem2_applies,
        "lemma1_imbalance_bound": wide.imbalance,
        "lemma1_residual_bound": wide.invariant_residual,
        "lemma1_product_bound": wide.product_norm,
        "wide_network_bound": wide.distance,
    }
    assert tuple(out) == tuple(QUANTITY_KEYS)
    return {k: jnp.asarray(v) for k, v in out.items()}


def _key_table(keys: dict[str, str]) -> str:
    return "\n".join(f"    - `{k}`: {v}" for k, v in keys.items())


# One source of truth for the key lists: the constant, rendered into the docstring.
quantities.__doc__ = (
    (quantities.__doc__ or "") + "\n    **Keys:**\n\n" + _key_table(QUANTITY_KEYS) + "\n"
)
