"""The width-independent statistics of an initialization (docs/theory.md §3)."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import NamedArguments, as_float_array, check_finite, is_concrete
from ._misc import full_precision
from ._network import LinearNetwork, check_compatible
from ._problem import Problem


def _symmetry_rtol(dtype, k: int) -> float:
    """A Gram matrix formed in floating point is symmetric to round-off (~k·eps relative to
    its largest entry); anything 100 times farther from symmetric is not one."""
    return 100 * k * float(jnp.finfo(dtype).eps)


class GramInit(eqx.Module, metaclass=NamedArguments):
    r"""Everything two-layer gradient flow on squared loss needs to know about an initialization.

    With $S = \Sigma^{1/2}$, $Z_0 = [SU_1(0); V(0)]$ ($(r+m)\times h$) and the cross-Gram
    $G_0 = U_2(0)Z_0^\top$ ($(D-r)\times(r+m)$), docs/theory.md §3 shows that the loss, error, rate,
    imbalance spectrum and distance to the min-norm solution at every time depend on the
    initialization only through

    - `Q` $= Z_0Z_0^\top$, $(r+m)\times(r+m)$, and
    - `K` $= G_0^\top G_0 = Z_0U_2(0)^\top U_2(0)Z_0^\top$, $(r+m)\times(r+m)$ (the distance only
      needs norms of $G_0\Psi^\top$, and $\Phi_2$ has orthonormal columns).

    Neither depends on the width $h$ in size, so a width-$10^9$ initialization is as cheap to
    hold as a width-10 one. The invariant set of ICML Proposition 1 is exactly $K = 0$.

    Build one from a network with `flowlin.init.gram_init(net, problem)`, or sample that of a
    Gaussian initialization of any width, without its weights, with `flowlin.init.wishart`;
    integrate it with `flowlin.gradient_flow(init, problem, t1, method=flowlin.Gram())`.
    """

    Q: Float[Array, "k k"]
    K: Float[Array, "k k"]

    def __init__(self, Q: ArrayLike, K: ArrayLike):  # (k, k) each: validated below
        call = "flowlin.GramInit(Q=..., K=...)"
        self.Q = as_float_array(call, "Q", Q)
        self.K = as_float_array(call, "K", K)

    def __check_init__(self):
        call = "flowlin.GramInit(Q=..., K=...)"
        for name in ("Q", "K"):
            x = getattr(self, name)
            if not eqx.is_array(x) or not jnp.issubdtype(x.dtype, jnp.floating):
                raise TypeError(
                    f"`{call}`: {name} must be a floating-point array, got {type(x).__name__}"
                )
            if x.ndim != 2 or x.shape[0] != x.shape[1]:
                raise ValueError(f"`{call}`: {name} must be a square matrix, got shape {x.shape}")
        if self.K.shape != self.Q.shape:
            raise ValueError(
                f"`{call}`: Q and K must have one shape (r+m, r+m), got {self.Q.shape} and "
                f"{self.K.shape}"
            )
        for name in ("Q", "K"):
            x = getattr(self, name)
            check_finite(call, name, x)
            if is_concrete(x):
                a = np.asarray(x)
                tol = _symmetry_rtol(a.dtype, a.shape[0]) * np.max(np.abs(a), initial=0.0)
                if np.max(np.abs(a - a.T), initial=0.0) > tol:
                    raise ValueError(f"`{call}`: {name} must be symmetric (a Gram matrix)")
                # A Gram matrix is positive semidefinite; one formed in floating point, to
                # round-off. A clearly negative eigenvalue makes every result garbage.
                low = float(np.min(np.linalg.eigvalsh(0.5 * (a + a.T)), initial=0.0))
                if low < -tol:
                    raise ValueError(
                        f"`{call}`: {name} must be positive semidefinite (a Gram matrix), got "
                        f"smallest eigenvalue {low:.3g} (largest entry "
                        f"{np.max(np.abs(a), initial=0.0):.3g})"
                    )


@full_precision
def gram_init(net: LinearNetwork, problem: Problem) -> GramInit:
    r"""The `flowlin.GramInit` of a network: $Q = Z_0Z_0^\top$, $K = G_0^\top G_0$.

    Cost $O(hD(r+m))$, once. Zero-padded hidden units contribute nothing, so a padded network
    gives the same statistics as the unpadded one.
    """
    check_compatible("flowlin.init.gram_init(...)", net, problem)
    U1 = problem.row_part(net.W1)  # r×h
    Z = jnp.concatenate([problem.sqrt_sigma[:, None] * U1, net.W2], axis=0)  # (r+m)×h
    # Φ2 G0 = P⊥ W1ᵀ Z0ᵀ = W1ᵀZ0ᵀ − Φ1(U1Z0ᵀ) in input coordinates (D×(r+m)); its Gram equals
    # G0ᵀ G0. Products with Z0ᵀ only: the h×D null-space part of W1 is never formed.
    G0 = net.W1.T @ Z.T - problem.Phi1 @ (U1 @ Z.T)
    return GramInit(Q=Z @ Z.T, K=G0.T @ G0)


def check_gram_compatible(call: str, init: GramInit, problem: Problem, name: str = "net") -> None:
    """Raise a clear error when a `GramInit` does not fit `problem`: floating-point, unbatched,
    $(r+m)\times(r+m)$, finite (`name` is the argument it was passed as). Its invariants are
    checked at construction; this also catches one assembled without it (`eqx.tree_at`)."""
    k = problem.rank + problem.m
    for field in ("Q", "K"):
        x = getattr(init, field)
        if not eqx.is_array(x) or not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(
                f"`{call}`: {name}.{field} (of the GramInit) must be a floating-point array, got "
                f"{type(x).__name__}"
            )
        if x.ndim > 2:
            raise ValueError(
                f"`{call}`: {name}.{field} is batched (shape {x.shape}); use jax.vmap over the "
                "batch"
            )
    if init.Q.shape != (k, k) or init.K.shape != (k, k):
        raise ValueError(
            f"`{call}`: {name}.Q and {name}.K must be (r+m)x(r+m) matrices, shape (r+m, r+m) = "
            f"({k}, {k}) for this problem (rank r={problem.rank}, m={problem.m} outputs), got "
            f"{name}.Q.shape={init.Q.shape}, {name}.K.shape={init.K.shape}"
        )
    for field in ("Q", "K"):
        check_finite(call, f"{name}.{field}", getattr(init, field))
