r"""docs/theory.md §2(b)–(d): loss-decay rates and envelopes.

ICML 2021 Theorem 1 (the imbalance rate), v2 Lemma 7 and Proposition 1 (the instantaneous rate
and its lower bounds), v2 Theorem 3 and Corollaries 4–6 (imbalance and margin), and the loss
envelopes they give. Every `rate_*` is the decay exponent $\rho$ of the excess loss,
$L(t) - L^\star \le e^{-\rho t}(L(0) - L^\star)$.

The public functions are re-exported by `flowlin.theory`. Internal API: the `*_of` functions
compute a result from an already built `InitStatistics` (or a checked `GramInit`), without
checks; `flowlin.theory.quantities` and `flowlin._bounds` use them.
"""

from typing import Literal

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._errors import check_not_negative
from .._gram_init import GramInit
from .._misc import frobenius, full_precision
from .._network import LinearNetwork
from .._problem import Problem
from ._statistics import InitStatistics, as_gram, error_of, index_split, plus, split


# -- internal: the formulas, from an InitStatistics ---------------------------------------------


def rate_imbalance_of(stats: InitStatistics) -> Float[Array, ""]:
    r"""ICML Theorem 1's rate $2\lambda_r(\Sigma)c$."""
    return 2 * stats.lambda_r_sigma * stats.c


def prop1_bound_of(stats: InitStatistics, product_min_singular_value) -> Float[Array, "*times"]:
    r"""v2 Proposition 1's bound at $\sigma_{\min}(U_1V^\top)$ = `product_min_singular_value`."""
    sigma_m, sigma_r = index_split(stats.rank, stats.m, product_min_singular_value)
    dp, dm, d = stats.spread_plus, stats.spread_minus, stats.c
    return stats.lambda_r_sigma * (_root_gap(dp, d, 2 * sigma_m) + _root_gap(dm, d, 2 * sigma_r))


def _root_gap(spread, c, x):
    r"""$-\Delta + \sqrt{(\Delta + c)^2 + x^2}$ for $\Delta, c, x \ge 0$, as
    $(c(2\Delta + c) + x^2)/(\sqrt{\cdot} + \Delta)$ at unit scale: no cancellation when
    $\Delta \gg c$, and no squares that underflow (float32 inits of 1e-12) or overflow."""
    s = jnp.maximum(spread + c, x)  # NaN stays NaN (a failed run's values pass through)
    safe = jnp.where((s > 0) & jnp.isfinite(s), s, 1.0)
    a, b, p, q = (spread + c) / safe, x / safe, spread / safe, c / safe
    out = jnp.where(s == 0, 0.0, safe * (q * (2 * p + q) + b**2) / (jnp.sqrt(a**2 + b**2) + p))
    # An infinite argument (a save after stop_at_loss): −Δ + ∞, as the formula reads.
    return jnp.where(jnp.isinf(s), jnp.where(jnp.isfinite(spread), jnp.inf, jnp.nan), out)


def _margin_c(stats: InitStatistics, mu_m, mu_r):
    r"""v2 Theorem 3's $c$ at margins $\mu_m, \mu_r$."""
    dp, dm, d = stats.spread_plus, stats.spread_minus, stats.c
    root_lam1 = jnp.sqrt(stats.lambda_1_sigma)
    return _root_gap(dp, d, 2 * mu_m / root_lam1) + _root_gap(dm, d, 2 * mu_r / root_lam1)


def rate_margin_of(stats: InitStatistics, error_norm) -> Float[Array, "*times"]:
    r"""v2 Theorem 3's rate $\lambda_r(\Sigma)c(t_0)$ at $\|E(t_0)\|_F$ = `error_norm`."""
    mu_m = plus(stats.target_sigma_m - error_norm)
    mu_r = plus(stats.target_sigma_r - error_norm)
    return stats.lambda_r_sigma * _margin_c(stats, mu_m, mu_r)


def rate_asymptotic_of(stats: InitStatistics) -> Float[Array, ""]:
    r"""v2 Corollary 6's rate $\lambda_r(\Sigma)c(\infty)$."""
    return stats.lambda_r_sigma * _margin_c(stats, stats.target_sigma_m, stats.target_sigma_r)


def instantaneous_rate_of(gram: GramInit, problem: Problem) -> Float[Array, ""]:
    """`instantaneous_rate` of a checked `GramInit`."""
    Q11, _, Q22 = split(problem, gram.Q)
    E = error_of(gram, problem)
    # E at unit norm first: ⟨E, Q11E⟩ of float32 weights of 1e6 overflows (the rate does not).
    norm = frobenius(E)
    e = E / jnp.where(norm > 0, norm, 1.0)
    rate = 2 * (jnp.sum(e * (Q11 @ e)) + jnp.sum((problem.sigma[:, None] * e) * (e @ Q22)))
    return jnp.where(norm > 0, rate, jnp.nan)


def lemma7_bound_of(gram: GramInit, problem: Problem) -> Float[Array, ""]:
    """`lemma7_bound` of a checked `GramInit`."""
    Q11, _, Q22 = split(problem, gram.Q)
    s = problem.sqrt_sigma
    UU = Q11 / s[:, None] / s[None, :]
    lam_u = plus(jnp.linalg.eigvalsh(0.5 * (UU + UU.T))[0])
    lam_v = plus(jnp.linalg.eigvalsh(0.5 * (Q22 + Q22.T))[0])
    return 2 * problem.sigma[-1] * (lam_u + lam_v)


# -- (b) ICML Theorem 1 -----------------------------------------------------------------------


@full_precision
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

    docs/theory.md §2(b). Valid for any initialization and width; if $h \ge r + m$ the brackets
    can be dropped.
    """
    stats = InitStatistics.of(init, problem, call="flowlin.theory.rate_imbalance(...)")
    return rate_imbalance_of(stats)


# -- (c) v2 Lemma 7 and Proposition 1 ---------------------------------------------------------


@full_precision
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

    docs/theory.md §2(c), v2 Lemma 7 (the identity; `lemma7_bound` is its lower bound). Equals the
    `rate` diagnostic of a `flowlin.Trajectory`.
    """
    gram = as_gram("flowlin.theory.instantaneous_rate(...)", state, problem)
    return instantaneous_rate_of(gram, problem)


@full_precision
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
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    flowlin.theory.lemma7_bound(net, problem) <= flowlin.theory.instantaneous_rate(net, problem)
    ```

    docs/theory.md §2(c), v2 Lemma 7; holds at every state, any width.
    """
    gram = as_gram("flowlin.theory.lemma7_bound(...)", state, problem)
    return lemma7_bound_of(gram, problem)


@full_precision
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
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net0 = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    traj = flowlin.gradient_flow(net0, problem, t1=20.0)
    bound = flowlin.theory.instantaneous_rate_bound(
        net0, problem, product_min_singular_value=traj.product_min_singular_value)
    jnp.all(traj.rate >= bound)
    ```

    docs/theory.md §2(c), v2 Proposition 1; valid at every time, any width, any initialization.
    """
    call = "flowlin.theory.instantaneous_rate_bound(...)"
    stats = InitStatistics.of(init, problem, call=call)
    if product_min_singular_value is not None:  # a singular value: >= 0
        check_not_negative(call, "product_min_singular_value", product_min_singular_value)
    if product_min_singular_value is None:
        sigma = stats.product_min_singular_value
    else:
        sigma = jnp.asarray(product_min_singular_value, stats.gram.Q.dtype)
    return prop1_bound_of(stats, sigma)


# -- (d) v2 Theorem 3 and Corollaries 4–6 -----------------------------------------------------


@full_precision
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

    docs/theory.md §2(d), v2 Theorem 3 (local form: Corollaries 4–5). A positive margin
    ($\sigma_{\min}(\tilde Y) > \|E(0)\|_F$) guarantees convergence even at zero imbalance.
    """
    call = "flowlin.theory.rate_margin(...)"
    stats = InitStatistics.of(init, problem, call=call)
    if error_norm is not None:  # a norm: >= 0
        check_not_negative(call, "error_norm", error_norm)
    if error_norm is None:
        error_norm = stats.error_norm
    else:
        error_norm = jnp.asarray(error_norm, stats.gram.Q.dtype)
    return rate_margin_of(stats, error_norm)


@full_precision
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

    docs/theory.md §2(d), v2 Corollary 6: every rate measured over $[t_0, t]$ with $t_0$ late
    enough is at least close to it; it assumes the flow converges ($E \to 0$).
    """
    stats = InitStatistics.of(init, problem, call="flowlin.theory.rate_asymptotic(...)")
    return rate_asymptotic_of(stats)


@full_precision
def excess_loss(init: LinearNetwork | GramInit, problem: Problem) -> Float[Array, ""]:
    r"""The excess loss $L - L^\star = \tfrac12\|E\|_F^2$, $E = \tilde Y - \Sigma^{1/2}U_1V^\top$.

    From the Gram statistics, $E = \tilde Y - Q_{12}$ (no cancellation against $L^\star$).

    **Arguments:** `init` (a `flowlin.LinearNetwork` or `flowlin.GramInit`), `problem`.

    **Returns:** $L - L^\star \ge 0$, the prefactor of every loss envelope.

    **Example:** `flowlin.theory.excess_loss(net, problem)`. docs/theory.md §1.
    """
    gram = as_gram("flowlin.theory.excess_loss(...)", init, problem)
    return 0.5 * jnp.sum(error_of(gram, problem) ** 2)


@full_precision
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
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    import matplotlib.pyplot as plt
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    ts = jnp.linspace(0, 10, 101)
    plt.semilogy(ts, flowlin.theory.loss_envelope(ts, net, problem), "--")
    ```

    docs/theory.md §2(b) and §2(d); valid for gradient flow, any initialization and width.
    """
    call = "flowlin.theory.loss_envelope(...)"
    stats = InitStatistics.of(init, problem, call=call)
    e2 = jnp.sum(stats.error**2)
    if theorem == "imbalance":
        rate = rate_imbalance_of(stats)
    elif theorem == "margin":
        rate = rate_margin_of(stats, jnp.sqrt(e2))
    else:
        raise ValueError(f"`{call}`: theorem must be 'imbalance' or 'margin', got {theorem!r}")
    check_not_negative(call, "t", t)  # flow time: the envelope holds for t >= 0
    t = jnp.asarray(t, stats.gram.Q.dtype)
    # A zero rate (e.g. a balanced init under Theorem 1) at t = inf: exp(-0·inf) would be NaN.
    decay = jnp.where(rate == 0, jnp.ones_like(t), jnp.exp(-rate * t))
    return decay * (0.5 * e2)
