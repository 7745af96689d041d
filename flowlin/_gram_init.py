"""The width-independent statistics of an initialization (theory.md §3)."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._network import LinearNetwork, check_compatible
from ._problem import Problem


class GramInit(eqx.Module):
    r"""Everything two-layer gradient flow on squared loss needs to know about an initialization.

    With $S = \Sigma^{1/2}$, $Z_0 = [SU_1(0); V(0)]$ ($(r+m)\times h$) and the cross-Gram
    $G_0 = U_2(0)Z_0^\top$ ($(D-r)\times(r+m)$), theory.md §3 shows that the loss, error, rate,
    imbalance spectrum and distance to the min-norm solution at every time depend on the
    initialization only through

    - `Q` $= Z_0Z_0^\top$, $(r+m)\times(r+m)$, and
    - `K` $= G_0^\top G_0 = Z_0U_2(0)^\top U_2(0)Z_0^\top$, $(r+m)\times(r+m)$ (the distance only
      needs norms of $G_0\Psi^\top$, and $\Phi_2$ has orthonormal columns).

    Neither depends on the width $h$ in size, so a width-$10^9$ initialization is as cheap to
    hold as a width-10 one. The invariant set of ICML Proposition 1 is exactly $K = 0$.

    Build one from a network with `flowlin.init.gram_init(net, problem)`, or sample that of a
    Gaussian initialization of any width, without its weights, with `flowlin.init.wishart`;
    integrate it with `flowlin.gradient_flow(init, problem, t1, method="gram")`.
    """

    Q: Float[Array, "k k"]
    K: Float[Array, "k k"]


def gram_init(net: LinearNetwork, problem: Problem) -> GramInit:
    r"""The `flowlin.GramInit` of a network: $Q = Z_0Z_0^\top$, $K = G_0^\top G_0$.

    Cost $O(hD(r+m))$, once. Zero-padded hidden units contribute nothing, so a padded network
    gives the same statistics as the unpadded one.
    """
    check_compatible("flowlin.init.gram_init(...)", net, problem)
    U1 = problem.row_part(net.W1)  # r×h
    Z = jnp.concatenate([problem.sqrt_sigma[:, None] * U1, net.W2], axis=0)  # (r+m)×h
    # Φ2 G0 = P⊥ W1ᵀ Z0ᵀ in input coordinates (D×(r+m)); its Gram equals G0ᵀ G0.
    G0 = problem.null_part(net.W1).T @ Z.T
    return GramInit(Q=Z @ Z.T, K=G0.T @ G0)
