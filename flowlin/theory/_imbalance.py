r"""docs/theory.md §2(a): the conserved imbalance $\Lambda = U_1^\top U_1 - V^\top V$, its spectrum
and its spreads $\Delta_+, \Delta_-, \Delta = c$."""

from jaxtyping import Array, Float

from .._gram_init import GramInit
from .._misc import full_precision
from .._network import LinearNetwork
from .._problem import Problem
from ._statistics import InitStatistics, as_gram, as_network, imbalance_eigenvalues_of


@full_precision
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
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    lam = flowlin.theory.imbalance(net, problem)   # (h, h), constant along gradient flow
    ```

    docs/theory.md §2(a) (ICML 2021 §3): $\dot\Lambda = 0$ under gradient flow, for any
    initialization; $\Lambda$ has at most $r$ positive and at most $m$ negative eigenvalues.
    """
    call = "flowlin.theory.imbalance(...)"
    net = as_network(call, net, problem)
    U1 = problem.row_part(net.W1)
    return U1.T @ U1 - net.W2.T @ net.W2


@full_precision
def full_imbalance(net: LinearNetwork) -> Float[Array, "h h"]:
    r"""The full imbalance $W_1W_1^\top - W_2^\top W_2 = \Lambda + U_2^\top U_2$ (conserved).

    **Arguments:** `net`, a `flowlin.LinearNetwork`.

    **Returns:** shape `(h, h)`.

    **Example:** `flowlin.theory.full_imbalance(net)`.

    docs/theory.md §2(a): conserved because $U_2$ never moves ($X\Phi_2 = 0$) and $\Lambda$ is
    conserved; holds for any data.
    """
    net = as_network("flowlin.theory.full_imbalance(...)", net, None)
    return net.W1 @ net.W1.T - net.W2.T @ net.W2


@full_precision
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

    docs/theory.md §2(a), §3.
    """
    gram = as_gram("flowlin.theory.imbalance_eigenvalues(...)", init, problem)
    return imbalance_eigenvalues_of(gram, problem)


@full_precision
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
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    dp, dm, c = flowlin.theory.imbalance_spreads(net, problem)
    ```

    docs/theory.md §2(b)–(c): ICML Theorem 1 ($c$), v2 Proposition 1 / Theorem 3 ($\Delta_\pm$).
    """
    stats = InitStatistics.of(init, problem, call="flowlin.theory.imbalance_spreads(...)")
    return stats.spread_plus, stats.spread_minus, stats.c
