r"""docs/theory.md §2(g): wide random networks, ICML 2021 Lemma 1 and Theorem 2.

The public names are re-exported by `flowlin.theory`. Internal API: the `*_of` functions
compute a result from already checked inputs, without checks (out-of-range values give NaN and
False flags, for sweeps); `flowlin.theory.quantities` and `flowlin._bounds` use them.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from .._custom_types import ScalarLike
from .._errors import check_number, is_concrete
from .._gram_init import GramInit
from .._misc import full_precision
from .._network import LinearNetwork
from .._problem import Problem, check_problem
from ._statistics import InitStatistics, WidthLike, check_delta


def _b(problem: Problem, delta):
    return jnp.sqrt(jnp.asarray(problem.m + problem.D, problem.dtype)) + 0.5 * jnp.log(2 / delta)


def h0_of(problem: Problem, delta) -> Float[Array, ""]:
    """ICML Lemma 1's $h_0$ at an array `delta`, unchecked."""
    b = _b(problem, delta)
    l1, lr = problem.sigma[0], problem.sigma[-1]
    return jnp.maximum(16 * b**2, 4 * (l1 / lr**3) * problem.m * b**2)


@full_precision
def h0(problem: Problem, delta: ScalarLike = 0.05) -> Float[Array, ""]:
    r"""The width above which ICML Lemma 1 holds with probability $\ge 1 - \delta$.

    $$h_0 = \max\Big\{16\,b^2,\ 4\,\frac{\lambda_1(\Sigma)}{\lambda_r(\Sigma)^3}\,m\,b^2\Big\},
      \qquad b(\delta) = \sqrt{m + D} + \tfrac12\log(2/\delta).$$
    ICML Theorem 2 needs $h > h_0^{1/(4\alpha - 1)}$.

    **Arguments:** `problem`; `delta` in $(0, 1)$.

    **Returns:** $h_0$ (a float: compare it with the width).

    **Example:** `flowlin.theory.h0(problem, delta=0.05)`.

    docs/theory.md §2(g), ICML Lemma 1.
    """
    call = "flowlin.theory.h0(...)"
    check_problem(call, problem)
    check_delta(call, delta)
    return h0_of(problem, jnp.asarray(delta, problem.dtype))


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


def lemma1_quantities_of(stats: InitStatistics) -> Lemma1Quantities:
    """The `Lemma1Quantities` of an `InitStatistics`."""
    return Lemma1Quantities(
        imbalance=stats.c,
        invariant_residual=stats.invariant_residual,
        product_norm=stats.product_norm,
    )


@full_precision
def lemma1_quantities(init: LinearNetwork | GramInit, problem: Problem) -> Lemma1Quantities:
    r"""The quantities of an initialization that ICML Lemma 1 bounds, as a `Lemma1Quantities`.

    $c$, $\|[V(0)U_2(0)^\top; U_1(0)U_2(0)^\top]\|_F$ and $\|U_1(0)V(0)^\top\|_F$; compare them with
    `wide_network_bound(h, alpha, delta, problem)`.

    **Arguments:** `init` (a `flowlin.LinearNetwork` or `flowlin.GramInit`), `problem`.

    **Returns:** a `flowlin.theory.Lemma1Quantities`.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    q = flowlin.theory.lemma1_quantities(net, problem)
    w = flowlin.theory.wide_network_bound(net.width, 0.5, 0.05, problem)
    q.imbalance > w.imbalance
    ```

    docs/theory.md §2(g), ICML Lemma 1.
    """
    stats = InitStatistics.of(init, problem, call="flowlin.theory.lemma1_quantities(...)")
    return lemma1_quantities_of(stats)


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


def wide_network_bound_of(h, alpha, delta, problem: Problem) -> WideNetworkBound:
    """Unchecked: out-of-range alpha gives `applies = False` and NaNs (for sweeps)."""
    dtype = problem.dtype
    h = jnp.asarray(h, dtype)
    alpha = jnp.asarray(alpha, dtype)
    delta = jnp.asarray(delta, dtype)
    r, m = problem.rank, problem.m
    b = _b(problem, delta)
    h0_ = h0_of(problem, delta)
    alpha_ok = (alpha > 0.25) & (alpha <= 0.5)
    # Outside (1/4, 1/2] the exponent 1/(4α - 1) is meaningless: report NaN, not a number.
    exponent = 1 / jnp.where(alpha_ok, 4 * alpha - 1, 1.0)
    threshold = jnp.where(alpha_ok, h0_**exponent, jnp.nan)
    lemma1 = alpha_ok & (h > h0_)
    theorem2 = alpha_ok & (h > threshold)
    nan = jnp.asarray(jnp.nan, dtype)
    decay = h ** (2 * alpha - 0.5)
    l1, lr = problem.sigma[0], problem.sigma[-1]
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


@full_precision
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
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    w = flowlin.theory.wide_network_bound(4000, 0.5, 0.05, problem)
    w.theorem2_applies, w.distance
    ```

    docs/theory.md §2(g), ICML Lemma 1 and Theorem 2.
    """
    call = "flowlin.theory.wide_network_bound(...)"
    check_problem(call, problem)
    check_number(call, "alpha", alpha)
    check_number(call, "h", h)
    if is_concrete(alpha) and not 0.25 < float(np.asarray(alpha)) <= 0.5:
        raise ValueError(f"`{call}`: alpha must be in (1/4, 1/2], got {alpha!r}")
    if is_concrete(h):
        hv = float(np.asarray(h))
        if not (np.isfinite(hv) and hv >= 1 and hv == round(hv)):
            raise ValueError(f"`{call}`: h must be a whole number >= 1 (a width), got {h!r}")
    check_delta(call, delta)
    return wide_network_bound_of(h, alpha, delta, problem)
