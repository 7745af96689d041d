r"""docs/theory.md §6: results for the deep linear network $W = W_L\cdots W_1$.

- the conserved balancedness $C_l = W_{l+1}^\top W_{l+1} - W_lW_l^\top$ (§6(b));
- the limit identity $W(\infty) - W^\star = W_L\cdots W_2(\infty)\,W_1(0)\Phi_2\Phi_2^\top$ and the
  invariant set (§6(c));
- the deficiency margin and the loss envelope of a balanced initialization, the Arora, Cohen,
  Golowich & Hu (ICLR 2019) guarantee extended to non-whitened under-determined least squares
  (§6(e), proved there).

The public functions are re-exported by `flowlin.theory`. Internal API: the `*_of` functions
compute a result from already checked inputs; `flowlin._deep_bounds` uses them.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._deep_network import DeepLinearNetwork, check_deep_compatible
from .._errors import check_not_negative
from .._misc import frobenius, full_precision, to_unit_scale
from .._problem import Problem
from ._statistics import index_split, min_singular_value, plus


#: A network counts as balanced when every $\|C_l\|_F$ is at most this many machine epsilons
#: of $\|W_{l+1}\|_F^2 + \|W_l\|_F^2$: what building an exactly balanced network from SVDs
#: leaves in round-off (O(L·h) operations of relative error eps), with room; the theorem of
#: §6(e) is about exact balance, so nothing coarser counts (float64: 2.2e-12, float32: 1.2e-3).
BALANCE_FACTOR = 1e4


def _check_net(call: str, net, name: str = "net") -> None:
    if not isinstance(net, DeepLinearNetwork):
        raise TypeError(
            f"`{call}`: {name} must be a flowlin.DeepLinearNetwork, got {type(net).__name__}"
        )


def _sq(A) -> Float[Array, "..."]:
    """Squared Frobenius norm over the last two axes."""
    return jnp.sum(A**2, axis=(-2, -1))


def _t(A):
    return jnp.swapaxes(A, -1, -2)


# -- internal: the formulas, from checked inputs --------------------------------------------


def balancedness_of(weights) -> tuple[Float[Array, "*batch h h"], ...]:
    r"""$(C_1, \dots, C_{L-1})$, $C_l = W_{l+1}^\top W_{l+1} - W_lW_l^\top$ ($h_l\times h_l$)."""
    with jax.default_matmul_precision("highest"):
        return tuple(
            _t(weights[i + 1]) @ weights[i + 1] - weights[i] @ _t(weights[i])
            for i in range(len(weights) - 1)
        )


def balance_error_of(weights) -> Float[Array, "*batch"]:
    r"""$\max_l \|C_l\|_F / (\|W_{l+1}\|_F^2 + \|W_l\|_F^2)$ (0 for zero layers), each pair
    of layers brought to unit scale first (the ratio does not depend on it)."""
    errs = []
    for i in range(len(weights) - 1):
        (lo, hi), _ = to_unit_scale(weights[i], weights[i + 1])
        (C,) = balancedness_of((lo, hi))
        scale = _sq(hi) + _sq(lo)
        errs.append(frobenius(C, axis=(-2, -1)) / jnp.where(scale > 0, scale, 1.0))
    return jnp.max(jnp.stack(errs), axis=0)


def is_balanced_of(weights) -> jax.Array:
    """Balanced to `BALANCE_FACTOR` epsilons of the weights' dtype."""
    eps = jnp.finfo(weights[0].dtype).eps
    return balance_error_of(weights) <= BALANCE_FACTOR * eps


def deep_limit_identity_of(
    final: DeepLinearNetwork, init: DeepLinearNetwork, problem: Problem
) -> Float[Array, "m D"]:
    r"""$W^\star + H(t)W_1(0)(I - \Phi_1\Phi_1^\top)$, $H = W_L\cdots W_2$: one $m\times D$
    product $P = H(t)W_1(0)$, projected (never the $h_1\times D$ null part)."""
    with jax.default_matmul_precision("highest"):
        P = final.head @ init.weights[0]
        return problem.min_norm + (P - (P @ problem.Phi1) @ problem.Phi1.T)


def invariant_residuals_of(init: DeepLinearNetwork, problem: Problem, *, unit_scale=False):
    r"""$(\|W_2W_1\Phi_2\|_F, \|\Phi_1^\top W_1^\top W_1\Phi_2\|_F)$ at `init`.

    Formed from $W_1, W_2$ divided by their largest entry $s$, then multiplied by $s^2$. With
    `unit_scale=True`: the residuals of the divided weights, not multiplied back, and those
    weights' norms $\|W_1/s\|_F$, $\|W_2/s\|_F$ (for comparisons that do not depend on $s$).
    """
    (W1, W2), unit = to_unit_scale(init.weights[0], init.weights[1])
    with jax.default_matmul_precision("highest"):
        N = problem.null_part(W1)  # W1 Φ2 Φ2ᵀ: same norms as W1 Φ2 after any left factor
        a = frobenius(W2 @ N, axis=(-2, -1))
        b = frobenius(problem.row_part(W1) @ N, axis=(-2, -1))
    if unit_scale:
        return a, b, frobenius(W1, axis=(-2, -1)), frobenius(W2, axis=(-2, -1))
    return unit**2 * a, unit**2 * b


def margin_of(net: DeepLinearNetwork, problem: Problem):
    r"""(deficiency margin $c$, $\|E(0)\|_F$):
    $c = \sigma_m(W^\star) - \|E(0)\|_F/\lambda_r(\Sigma)^{1/2}$
    ($\sigma_m(W^\star) = 0$ if $m > r$)."""
    with jax.default_matmul_precision("highest"):
        E = problem.error(net.product)
    e0 = frobenius(E)
    target = problem.Y_tilde / problem.sqrt_sigma[:, None]  # Σ^{-1/2}Ỹ: W*ᵀ in Φ1's basis
    sigma_m, _ = index_split(problem.rank, problem.m, min_singular_value(target))
    return sigma_m - e0 / jnp.sqrt(problem.sigma[-1]), e0


def deep_rate_of(c, depth: int, lambda_r_sigma) -> Float[Array, ""]:
    r"""§6(e)'s rate $2\lambda_r(\Sigma)[c]_+^{2(L-1)/L}$."""
    return 2 * lambda_r_sigma * plus(c) ** (2 * (depth - 1) / depth)


# -- public -------------------------------------------------------------------------------------


@full_precision
def balancedness(net: DeepLinearNetwork) -> tuple[Float[Array, "*batch h h"], ...]:
    r"""The balancedness of every hidden layer: $C_l = W_{l+1}^\top W_{l+1} - W_lW_l^\top$.

    $$\frac{d}{dt}W_lW_l^\top = -\,(W_L\cdots W_{l+1})^\top\,G\,(W_l\cdots W_1)^\top
      = \frac{d}{dt}W_{l+1}^\top W_{l+1},\qquad G = \nabla\ell(W),$$
    so each $C_l$ ($h_l\times h_l$, $l = 1, \dots, L-1$) is constant along the gradient flow,
    for any data and any initialization. At $L = 2$, $C_1 = W_2^\top W_2 - W_1W_1^\top$ is minus
    the full imbalance of `flowlin.theory.full_imbalance`. A network with every $C_l = 0$ is
    **balanced** (Arora et al. 2018), the hypothesis of `deep_loss_bound`.

    **Arguments:** `net`, a `flowlin.DeepLinearNetwork` (batch axes allowed).

    **Returns:** a tuple of $L - 1$ arrays, $C_l$ of shape `(*batch, h_l, h_l)`.

    **Example:**

    ```python
    import jax, flowlin
    jax.config.update("jax_enable_x64", True)
    ks = jax.random.split(jax.random.key(0), 3)
    net = flowlin.DeepLinearNetwork([jax.random.normal(ks[0], (5, 8)),
                                     jax.random.normal(ks[1], (6, 5)),
                                     jax.random.normal(ks[2], (2, 6))])
    [C.shape for C in flowlin.theory.balancedness(net)]   # [(5, 5), (6, 6)]
    ```

    docs/theory.md §6(b); Arora, Cohen & Hazan (2018), Du, Hu & Lee (2018).
    """
    _check_net("flowlin.theory.balancedness(...)", net)
    return balancedness_of(net.weights)


@full_precision
def deep_limit_identity(
    final: DeepLinearNetwork, init: DeepLinearNetwork, problem: Problem
) -> Float[Array, "m D"]:
    r"""The end-to-end map the limit identity predicts: $W^\star + W_L\cdots W_2(t)\,W_1(0)
    \Phi_2\Phi_2^\top$.

    $W_1\Phi_2$ never moves ($\dot W_1 = (W_L\cdots W_2)^\top R^\top X$ and $X\Phi_2 = 0$), so at
    every time exactly
    $$W(t) - \big(W^\star + H(t)W_1(0)\Phi_2\Phi_2^\top\big) = -E(t)^\top\Sigma^{-1/2}\Phi_1^\top,
      \qquad H = W_L\cdots W_2,$$
    whose norm $\|\Sigma^{-1/2}E(t)\|_F \le \|E(t)\|_F/\lambda_r(\Sigma)^{1/2}$ vanishes as the
    flow converges: then $W(\infty) - W^\star = H(\infty)W_1(0)\Phi_2\Phi_2^\top$.

    **Arguments:** `final` (the network at the end of a run, e.g. `traj.final_network`),
    `init` (the network at $t = 0$), `problem`. Same widths.

    **Returns:** the predicted $W(\infty)$, shape `(m, D)`; compare with `final.product`.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=6, D=10, m=2)
    ks = jax.random.split(jax.random.key(1), 3)
    net0 = flowlin.DeepLinearNetwork([0.3 * jax.random.normal(ks[0], (8, 10)),
                                      0.3 * jax.random.normal(ks[1], (8, 8)),
                                      0.3 * jax.random.normal(ks[2], (2, 8))])
    pred = flowlin.theory.deep_limit_identity(net0, net0, problem)
    # at any time the difference is the row-space part ‖Σ^{-1/2}E‖ (E(t) -> 0 on convergence)
    E = problem.error(net0.product)
    jnp.linalg.norm(net0.product - pred), jnp.linalg.norm(E / problem.sqrt_sigma[:, None])
    ```

    docs/theory.md §6(c). Assumes convergence ($E(\infty) = 0$) for the limit.
    """
    call = "flowlin.theory.deep_limit_identity(...)"
    for name, net in (("final", final), ("init", init)):
        _check_net(call, net, name)
        check_deep_compatible(call, net, problem)
    if final.widths != init.widths:
        raise ValueError(
            f"`{call}`: final and init must have the same widths, got {final.widths} and "
            f"{init.widths}"
        )
    return deep_limit_identity_of(final, init, problem)


@full_precision
def deep_invariant_set_residual(
    init: DeepLinearNetwork, problem: Problem
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    r"""Distance of a deep init from the invariant set: $(\|W_2W_1\Phi_2\|_F,
    \|\Phi_1^\top W_1^\top W_1\Phi_2\|_F)$.

    With $N = W_1(0)\Phi_2$ (constant), $a = W_2N$ and $b = \Phi_1^\top W_1^\top N$ obey the
    linear system $\dot a = A^\top E^\top\Sigma^{1/2}b$, $\dot b = \Sigma^{1/2}EAa$,
    $A = W_L\cdots W_3$, so $a(0) = b(0) = 0$ keeps them zero; then $W(t)\Phi_2 = Aa = 0$ and a
    converging flow ends at $W^\star$ exactly. $W_1(0)\Phi_2 = 0$
    (`init.project_to_invariant_set`) is the simplest member. At $L = 2$ these are ICML
    Proposition 1's $(\|VU_2^\top\|_F, \|U_1U_2^\top\|_F)$.

    **Arguments:** `init`, `problem`. **Returns:** the two residuals (scalars).

    docs/theory.md §6(c).
    """
    call = "flowlin.theory.deep_invariant_set_residual(...)"
    _check_net(call, init, "init")
    check_deep_compatible(call, init, problem)
    return invariant_residuals_of(init, problem)


@full_precision
def deficiency_margin(net: DeepLinearNetwork, problem: Problem) -> Float[Array, ""]:
    r"""The deficiency margin of an initialization: $c = \sigma_m(W^\star) -
    \|E(0)\|_F/\lambda_r(\Sigma)^{1/2}$.

    $\|E\|_F = \|(W - W^\star)\Phi_1\Sigma^{1/2}\|_F = \sqrt{2(L - L^\star)}$ is the
    $\Sigma$-weighted distance of $W$ to the minimizers; $c > 0$ says the initial product is
    closer to $W^\star$ than $W^\star$ is to rank deficiency, in that metric. For whitened data
    it is Arora et al.'s (2019) margin $\sigma_{\min}(\Phi) - \|W(0) - \Phi\|_F$ restricted to
    the row space of $X$. $\sigma_m(W^\star) = 0$ when $m > r$ (then $c \le 0$).

    **Arguments:** `net` (a `flowlin.DeepLinearNetwork`), `problem`.

    **Returns:** $c$ (any sign; the theorem needs $c > 0$).

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=6, D=10, m=2)
    net = flowlin.DeepLinearNetwork([0.9 * problem.min_norm, jnp.eye(2), jnp.eye(2)])
    flowlin.theory.deficiency_margin(net, problem)   # 0.57 > 0: W(0) = 0.9 W*
    ```

    docs/theory.md §6(e); Arora, Cohen, Golowich & Hu (ICLR 2019), Definition 2.
    """
    call = "flowlin.theory.deficiency_margin(...)"
    _check_net(call, net)
    check_deep_compatible(call, net, problem)
    return margin_of(net, problem)[0]


@full_precision
def deep_rate(init: DeepLinearNetwork, problem: Problem) -> Float[Array, ""]:
    r"""The loss-decay rate of a balanced initialization with a deficiency margin $c > 0$:
    $\rho = 2\lambda_r(\Sigma)\,c^{2(L-1)/L}$.

    **Returns:** $\rho$; 0 when $c \le 0$ (no guaranteed decay); NaN when `init` is not
    balanced (to `BALANCE_FACTOR` epsilons): the theorem then says nothing.

    docs/theory.md §6(e) (proved there).
    """
    call = "flowlin.theory.deep_rate(...)"
    _check_net(call, init, "init")
    check_deep_compatible(call, init, problem)
    c, _ = margin_of(init, problem)
    rate = deep_rate_of(c, init.depth, problem.sigma[-1])
    return jnp.where(is_balanced_of(init.weights), rate, jnp.nan)


@full_precision
def deep_loss_bound(
    t: Float[ArrayLike, "*times"], init: DeepLinearNetwork, problem: Problem
) -> Float[Array, "*times"]:
    r"""The envelope of the excess loss from a balanced init with deficiency margin $c > 0$.

    $$L(t) - L^\star \le \exp\!\big(-2\lambda_r(\Sigma)\,c^{2(L-1)/L}\,t\big)\,(L(0) - L^\star),
      \qquad c = \sigma_m(W^\star) - \|E(0)\|_F/\lambda_r(\Sigma)^{1/2} > 0 .$$

    *Why* (docs/theory.md §6(e)). Balance is conserved, so the end-to-end map obeys
    $\dot W = -\sum_{j=1}^L (WW^\top)^{(L-j)/L}G(W^\top W)^{(j-1)/L}$; every term is a positive
    semi-definite operator on $G$ and the $j = 1$ term alone gives
    $\frac{d}{dt}(L - L^\star) \le -\sigma_m(W)^{2(L-1)/L}\|G\|_F^2$; $\|G\|_F^2 =
    \|\Sigma^{1/2}E\|_F^2 \ge 2\lambda_r(\Sigma)(L - L^\star)$; and $\|E(t)\|$ never increases,
    so Weyl's inequality keeps $\sigma_m(W(t)) \ge \sigma_m(W(t)\Phi_1) \ge c$.

    **Arguments:** `t` (times, any shape), `init` (a balanced `flowlin.DeepLinearNetwork`),
    `problem`.

    **Returns:** the bound on $L(t) - L^\star$, shape of `t`: the trivial $L(0) - L^\star$ when
    $c \le 0$ (the loss never increases), NaN when `init` is not balanced.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=6, D=10, m=2)
    # a balanced depth-3 network with product 0.9 W* (W_l = ... S^(1/3) ...)
    U, s, Vt = jnp.linalg.svd(0.9 * problem.min_norm, full_matrices=False)
    root = jnp.diag(s ** (1 / 3))
    net = flowlin.DeepLinearNetwork([root @ Vt, root, U @ root])
    flowlin.theory.deficiency_margin(net, problem)        # 0.57 > 0
    flowlin.theory.deep_loss_bound(jnp.linspace(0, 5, 6), net, problem)
    ```

    docs/theory.md §6(e); Arora, Cohen, Golowich & Hu (ICLR 2019), Theorem 1 (whitened data,
    gradient descent), here for the flow on $\frac12\|Y - XW^\top\|_F^2$.
    """
    call = "flowlin.theory.deep_loss_bound(...)"
    _check_net(call, init, "init")
    check_deep_compatible(call, init, problem)
    check_not_negative(call, "t", t)  # flow time: the envelope holds for t >= 0
    c, e0 = margin_of(init, problem)
    rate = deep_rate_of(c, init.depth, problem.sigma[-1])
    t = jnp.asarray(t, e0.dtype)
    # rate 0 (c <= 0) at t = inf: exp(-0·inf) would be NaN; the trivial bound holds at every t.
    decay = jnp.where(rate == 0, jnp.ones_like(t), jnp.exp(-rate * t))
    bound = decay * (0.5 * e0**2)
    return jnp.where(is_balanced_of(init.weights), bound, jnp.nan)
