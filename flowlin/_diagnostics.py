"""Diagnostics of a network state in weight space (docs/theory.md §1–2), shared by the full
gradient-flow solver and gradient descent."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._problem import Problem


def safe_div(a, b):
    ok = b > 0
    return jnp.where(ok, a / jnp.where(ok, b, 1.0), jnp.where(a == 0, 0.0, jnp.nan))


def safe_norm(x) -> Float[Array, ""]:
    r"""$\|x\|_F$ with a finite derivative (zero) where $x = 0$ (`jnp.sqrt` has an infinite one
    there, and a zero cotangent times it is NaN: e.g. a drift at t = 0)."""
    sq = jnp.sum(x**2)
    nonzero = sq != 0  # NaN (a diverged state) stays NaN, never reads as a zero drift
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


class Reference(eqx.Module):
    r"""What the drift diagnostics compare against: the initial $W_1$, $U_1$ and $V$."""

    W1: Float[Array, "h D"]
    U1: Float[Array, "r h"]
    V: Float[Array, "m h"]
    imbalance_scale: Float[Array, ""]
    w1_norm: Float[Array, ""]

    def __init__(self, problem: Problem, W1, W2):
        self.W1 = W1
        self.U1 = problem.row_part(W1)
        self.V = W2
        self.imbalance_scale = jnp.sum(self.U1**2) + jnp.sum(W2**2)
        self.w1_norm = jnp.sqrt(jnp.sum(W1**2))


def imbalance_change_norm(U1, V, U1_0, V_0) -> Float[Array, ""]:
    r"""$\|\Lambda - \Lambda_0\|_F$ with $\Lambda = U_1^\top U_1 - V^\top V$, without forming
    $h\times h$ matrices when the width is large, and without squaring away accuracy.

    With $B = [U_1; V; U_{1,0}; V_0]$ ($k\times h$, $k = 2(r+m)$) and
    $K = \mathrm{diag}(I_r, -I_m, -I_r, I_m)$, $\Lambda - \Lambda_0 = B^\top K B$.

    - $h \ge k$: a thin QR $B^\top = QR$ gives $\|B^\top K B\|_F = \|RKR^\top\|_F$: cost
      $O(hk^2)$, and QR's backward stability keeps the absolute error at $O(\epsilon\|B\|^2)$
      (a Gram-matrix route would lose half the digits to a square root).
    - $h < k$: $B^\top K B$ itself, $h\times h$ (cost $O(h^2k)$, no more than the QR). JAX
      differentiates QR only for tall or square matrices, so this branch is also what keeps
      `jax.grad` through `flowlin.gradient_flow` working at small widths.
    """
    r, m = U1.shape[0], V.shape[0]
    B = jnp.concatenate([U1, V, U1_0, V_0], axis=0)
    signs = jnp.concatenate([jnp.ones(r), -jnp.ones(m), -jnp.ones(r), jnp.ones(m)]).astype(B.dtype)
    if B.shape[1] < B.shape[0]:  # h < k: a wide Bᵀ, whose QR has no derivative in JAX
        change = (B.T * signs) @ B
    else:
        _, R = jnp.linalg.qr(B.T)
        change = (R * signs) @ R.T
    return safe_norm(change)  # Λ(0) - Λ0 = 0 exactly at t = 0


def weight_diagnostics(
    problem: Problem, W1, W2, ref: Reference, names: tuple[str, ...], error_integral=None
) -> dict[str, Float[Array, ""]]:
    r"""The requested diagnostics (see `flowlin.Trajectory`) of the state (W1, W2).

    `error_integral` is the running value of $\int_0^t\|E\|_F ds$, carried by the solver.
    """
    out = {}
    if "error_integral" in names:
        out["error_integral"] = error_integral
    need_E = {"excess_loss", "rate"} & set(names)
    if "loss" in names:
        R = problem.Y - (problem.X @ W1.T) @ W2.T
        out["loss"] = 0.5 * jnp.sum(R**2)
    if need_E or "imbalance_drift" in names or "product_min_singular_value" in names:
        U1 = problem.row_part(W1)
    if need_E:
        S = problem.sqrt_sigma[:, None]
        E = problem.Y_tilde - S * (U1 @ W2.T)  # r×m, docs/theory.md §1
        e2 = jnp.sum(E**2)
        if "excess_loss" in names:
            out["excess_loss"] = 0.5 * e2
        if "rate" in names:
            # ρ = 2(‖U1ᵀ Σ^{1/2} E‖² + ⟨E, Σ E V Vᵀ⟩)/‖E‖², and ⟨E, ΣEVVᵀ⟩ = ‖Σ^{1/2} E V‖².
            SE = S * E
            num = jnp.sum((U1.T @ SE) ** 2) + jnp.sum((SE @ W2) ** 2)
            out["rate"] = 2.0 * safe_div(num, e2)
    if "imbalance_drift" in names:
        change = imbalance_change_norm(U1, W2, ref.U1, ref.V)
        out["imbalance_drift"] = safe_div(change, ref.imbalance_scale)
    if "product_min_singular_value" in names:
        # σ_min(U1 Vᵀ) (r×m): the only singular value of v2 Proposition 1's bound that can be
        # nonzero among σ_m and σ_r (an index beyond min(r, m) gives 0).
        out["product_min_singular_value"] = jnp.linalg.svd(U1 @ W2.T, compute_uv=False)[-1]
    if "distance_to_min_norm" in names:
        out["distance_to_min_norm"] = jnp.sqrt(jnp.sum((W2 @ W1 - problem.min_norm) ** 2))
    if "u2_drift" in names:
        # U2 is linear in W1: project the movement (not the two states) for full accuracy.
        d = problem.null_part(W1 - ref.W1)
        out["u2_drift"] = safe_div(jnp.sqrt(jnp.sum(d**2)), ref.w1_norm)
    return {k: out[k] for k in names}
