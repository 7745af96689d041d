r"""docs/theory.md §2(e)–(f): the invariant set, the limit identity (ICML Proposition 1) and the
distance of the limit to the min-norm solution. Distances are Frobenius norms of $W - W^\star$.

The public functions are re-exported by `flowlin.theory`. Internal API: the `*_of` functions
compute a result from already checked inputs (an `InitStatistics`, networks), without checks;
`flowlin.theory.quantities` and `flowlin._bounds` use them.
"""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._errors import check_not_negative
from .._gram_init import GramInit
from .._misc import full_precision
from .._network import LinearNetwork
from .._problem import Problem
from ._statistics import InitStatistics, as_network, gram_and_residuals, residuals_of


# -- internal: the formulas, from checked inputs --------------------------------------------


def limit_identity_of(final: LinearNetwork, init: LinearNetwork, problem: Problem):
    r"""ICML Proposition 1's $W^\star + V(t)U_2(0)^\top\Phi_2^\top$, shape `(m, D)`.

    $V(t)U_2(0)^\top\Phi_2^\top = P(I - \Phi_1\Phi_1^\top)$ with $P = V(t)W_1(0)$ ($m\times D$):
    one $O(hDm)$ product, the $h\times D$ null-space part of $W_1(0)$ is never formed.
    """
    P = final.W2 @ init.W1
    return problem.min_norm + (P - (P @ problem.Phi1) @ problem.Phi1.T)


def distance_bound_of(stats: InitStatistics, error_integral) -> Float[Array, "*times"]:
    """§2(f)'s bound: deterministic (`error_integral=None`) or a-posteriori."""
    residual = stats.invariant_residual
    sqrt_l1 = jnp.sqrt(stats.lambda_1_sigma)
    if error_integral is None:
        c = stats.c
        ok = c > 0
        exponent = sqrt_l1 * stats.error_norm / (stats.lambda_r_sigma * jnp.where(ok, c, 1.0))
        growth = jnp.where(ok, jnp.exp(exponent), jnp.inf)
    else:
        growth = jnp.exp(sqrt_l1 * error_integral)
    # 0·inf would be NaN; a zero residual stays zero whatever the growth factor.
    return jnp.where(residual == 0, jnp.zeros_like(growth), residual * growth)


# -- (e) the invariant set and the limit identity ---------------------------------------------


@full_precision
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
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    net = flowlin.init.project_to_invariant_set(net, problem)
    flowlin.theory.invariant_set_residual(net, problem)   # (0, 0) up to round-off
    ```

    docs/theory.md §2(e), ICML Proposition 1.
    """
    gram, residuals = gram_and_residuals(
        "flowlin.theory.invariant_set_residual(...)", init, problem
    )
    return residuals_of(gram, problem) if residuals is None else residuals


@full_precision
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
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net0 = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    traj = flowlin.gradient_flow(net0, problem, t1=50.0)
    pred = flowlin.theory.limit_identity(traj.final_network, net0, problem)
    jnp.linalg.norm(traj.final_network.product - pred)   # -> 0 as the loss converges
    ```

    docs/theory.md §2(e), ICML Proposition 1 (assumes convergence, $E(\infty) = 0$).
    """
    call = "flowlin.theory.limit_identity(...)"
    final = as_network(call, final, problem, "final")
    init = as_network(call, init, problem, "init")
    if final.width != init.width:
        raise ValueError(
            f"`{call}`: final and init must have the same width, got {final.width} and {init.width}"
        )
    return limit_identity_of(final, init, problem)


# -- (f) distance to the min-norm solution ----------------------------------------------------


@full_precision
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

    docs/theory.md §2(f) (derived from the proof of ICML Theorem 2).
    """
    call = "flowlin.theory.distance_bound(...)"
    stats = InitStatistics.of(init, problem, call=call)
    if error_integral is not None:  # an integral of a norm: >= 0
        check_not_negative(call, "error_integral", error_integral)
        error_integral = jnp.asarray(error_integral, stats.gram.Q.dtype)
    return distance_bound_of(stats, error_integral)
