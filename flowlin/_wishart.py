r"""The statistics of a Gaussian initialization at any width, sampled without the weights.

For $W_1 = \sigma_1A$, $W_2 = \sigma_2B$ with i.i.d. $N(0,1)$ entries, hidden unit $i$
contributes the column $Tg_i$ to $Z_0 = [SU_1; V]$ and $\sigma_1u_i$ to $U_2$, where
$g_i = [\Phi_1^\top a_i; b_i] \in \mathbb R^k$ ($k = r + m$), $u_i = \Phi_2^\top a_i$ and
$T = \mathrm{diag}(\sigma_1S, \sigma_2I_m)$. Since $[\Phi_1, \Phi_2]$ is orthogonal,
$(g_i, u_i)$ are i.i.d. standard normal vectors of dimension $k + (D - r)$, so

$$Q_0 = TW_{gg}T,\qquad G_0 = \sigma_1W_{ug}T,\qquad K = G_0^\top G_0
  = \sigma_1^2\,TW_{gu}W_{ug}T,$$

with $W = \sum_i [g_i; u_i][g_i; u_i]^\top \sim \mathrm{Wishart}_{D+m}(h, I)$. In its
Bartlett decomposition $W = LL^\top$ (lower triangular $L$, independent entries,
$L_{jj}^2\sim\chi^2_{h-j}$, $L_{ij}\sim N(0,1)$ below the diagonal, 0-based $j$; columns
$j \ge h$ vanish when $h < D + m$), ordering $g$ before $u$ gives
$W_{gg} = L_{11}L_{11}^\top$ and $W_{ug} = L_{21}L_{11}^\top$, where $L_{21}$
($(D-r)\times k$) is standard normal and independent of $L_{11}$. Hence

$$Q_0 = TL_{11}L_{11}^\top T,\qquad K = \sigma_1^2\,TL_{11}\,(L_{21}^\top L_{21})\,L_{11}^\top T,
  \qquad L_{21}^\top L_{21}\sim\mathrm{Wishart}_k(D - r, I),$$

and two $k\times k$ Bartlett factors suffice: cost $O(k^3)$, independent of $h$ and of $D$.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ._custom_types import KeyLike, ScalarLike
from ._errors import check_key, check_positive, is_concrete
from ._gram_init import GramInit
from ._misc import full_precision
from ._problem import Problem, check_problem


def bartlett(key: KeyLike, k: int, dof, dtype) -> Float[Array, "k k"]:
    r"""A lower-triangular $L$ ($k\times k$) with $LL^\top \sim \mathrm{Wishart}_k(\text{dof}, I)$.

    $L_{jj} = \sqrt{\chi^2_{\text{dof}-j}}$ and $L_{ij}\sim N(0,1)$ for $i > j$ (0-based),
    all independent, for the columns $j < \text{dof}$; columns $j \ge \text{dof}$ are zero.
    The last rule extends Bartlett's decomposition to the singular case
    $\text{dof} < k$: it is Gram–Schmidt on the rows of a $k\times\text{dof}$ Gaussian
    matrix, whose first dof rows already span everything. `dof` may be traced (an
    integer-valued scalar); the $\chi^2$ draws are `2 * jax.random.gamma(dof_j / 2)`.
    """
    k_chi, k_normal = jax.random.split(key)
    j = jnp.arange(k)
    dof = jnp.asarray(dof, dtype)
    alive = j < dof
    # Gamma(0) is degenerate: draw a harmless shape for dead columns and mask them.
    shape = jnp.where(alive, (dof - j) / 2, 1.0)
    diag = jnp.sqrt(2 * jax.random.gamma(k_chi, shape, dtype=dtype))
    below = jnp.tril(jax.random.normal(k_normal, (k, k), dtype), -1)
    L = below + jnp.diag(diag)
    return jnp.where(alive[None, :], L, 0.0)


@full_precision
def wishart(
    key: KeyLike,
    problem: Problem,
    h: int | Int[ArrayLike, ""] | Float[ArrayLike, ""],
    std1: ScalarLike,
    std2: ScalarLike,
) -> GramInit:
    r"""Sample the `flowlin.GramInit` of a width-`h` Gaussian initialization without forming it.

    Returns $(Q_0, K)$ with exactly the joint distribution of
    `flowlin.init.gram_init(flowlin.init.gaussian(key_, D, m, h, std1, std2), problem)`
    (entries of $W_1$ i.i.d. $N(0, \text{std1}^2)$, of $W_2$ i.i.d. $N(0, \text{std2}^2)$),
    for any width $1 \le h$ — $10^9$ costs what $10$ does, $O((r+m)^3)$. The construction
    is the Bartlett decomposition of the joint Wishart Gram of the Gaussian hidden units,
    reduced to two $(r+m)\times(r+m)$ factors (module docstring).

    **What this reproduces.** The distribution of $Q_0 = Z_0Z_0^\top$ and
    $K = G_0^\top G_0$, hence of everything `flowlin.gradient_flow(..., method=flowlin.Gram())`
    computes from them: the whole trajectory of the loss, excess loss, rate, imbalance drift,
    distance to the min-norm solution, $\sigma_{\min}(U_1V^\top)$ and error integral; and of
    the initialization's theory quantities that are functions of $(Q_0, K)$: the nonzero
    spectrum of $\Lambda(0)$ (that of $\mathrm{diag}(\Sigma^{-1}, -I_m)Q_0$), the margin
    $\|E(0)\|$, $U_1(0)V(0)^\top$ and the invariant-set residual $\|G_0\|$. Not reproduced:
    the weights themselves (nor the bits of any `gaussian(key, ...)` draw), and what involves
    the part of $U_2$ outside the span of $Z_0$'s rows, e.g. $\|W_1(0)\|_F$ or the spectrum
    of $W_1W_1^\top - W_2^\top W_2$.

    **Arguments:**

    - `key`: a `jax.random` key.
    - `problem`: the `flowlin.Problem` (gives $\Sigma$, $r$, $D$, $m$ and the dtype).
    - `h`: hidden width, an integer $\ge 1$; may be traced (a sweep over widths compiles
      once).
    - `std1`, `std2`: entry standard deviations of $W_1$ and $W_2$ ($\ge 0$, may be traced);
      for the paper's scaling (`flowlin.init.paper`) pass `h ** -alpha` for both.

    **Returns:** a `flowlin.GramInit` for `flowlin.gradient_flow(init, problem, t1,
    method=flowlin.Gram())`.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.gaussian(jax.random.key(0), n=10, D=40, m=1)
    h = 10**9
    init = flowlin.init.wishart(jax.random.key(1), problem, h, h**-0.5, h**-0.5)
    traj = flowlin.gradient_flow(init, problem, t1=50.0, method=flowlin.Gram())
    ```
    """
    call = "flowlin.init.wishart(...)"
    check_key(call, "key", key)
    check_problem(call, problem)
    if is_concrete(h):
        h_np = np.asarray(h)
        if h_np.ndim != 0:
            raise ValueError(f"`{call}`: h must be a scalar width, got shape {h_np.shape}")
        if not np.isfinite(h_np) or h_np < 1 or h_np != np.round(h_np):
            raise ValueError(f"`{call}`: h must be an integer >= 1, got {h!r}")
    elif jnp.ndim(h) != 0:
        raise ValueError(f"`{call}`: h must be a scalar width, got shape {jnp.shape(h)}")
    check_positive(call, "std1", std1, allow_zero=True, scalar=True)
    check_positive(call, "std2", std2, allow_zero=True, scalar=True)
    # As arrays, so that new values of h or the stds do not recompile.
    h, std1, std2 = (jnp.asarray(x, problem.dtype) for x in (h, std1, std2))
    return _wishart(key, problem, h, std1, std2)


@eqx.filter_jit
def _wishart(key, problem: Problem, h, std1, std2) -> GramInit:
    # Compiled as a whole: op-by-op, the gamma sampler alone takes seconds to dispatch.
    dtype = problem.dtype
    r, m, D = problem.rank, problem.m, problem.D
    k = r + m
    key_g, key_u = jax.random.split(key)
    T = jnp.concatenate([std1 * problem.sqrt_sigma, jnp.broadcast_to(std2, (m,))])
    TL = T[:, None] * bartlett(key_g, k, h, dtype)  # T L11, so that Q0 = (TL)(TL)ᵀ
    Q = TL @ TL.T
    if D > r:
        Lu = bartlett(key_u, k, D - r, dtype)  # L21ᵀL21 = Lu Luᵀ ~ Wishart_k(D - r, I)
        G = std1 * (TL @ Lu)  # K = G Gᵀ
        K = G @ G.T
    else:  # r = D: no null space, U2 is empty and K = 0
        K = jnp.zeros((k, k), dtype)
    return GramInit(Q=Q, K=K)
