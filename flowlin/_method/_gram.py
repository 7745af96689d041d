r"""The width-independent method: integrate the reduced state $Z_r$ (docs/theory.md §3).

With $S = \Sigma^{1/2}$ and $Z = [SU_1; V]$ ($k\times h$, $k = r + m$), gradient flow is
$\dot Z = A(Q)Z$ with $Q = ZZ^\top$, $E = \tilde Y - Q_{12}$ and
$A(Q) = \begin{pmatrix}0 & \Sigma E\\ E^\top & 0\end{pmatrix}$, while $U_2$ never moves.
So $Z(t) = \Psi(t)Z_0$ for a $k\times k$ state transition $\Psi$, and only $\Psi$ on the
range of $Q_0$ matters. Factor $Z_0 = L\,\Omega$ with $L$ ($k\times w$, $w \le k$) and
$\Omega$ ($w\times h$) with orthonormal rows; then $Z(t) = Z_r(t)\Omega$, where

$$\dot Z_r = A(Z_rZ_r^\top)\,Z_r,\qquad Z_r(0) = L,$$

is the same flow for a width-$w$ network, and every quantity flowlin reports is a function of
$Z_r(t)$, $L$ and the null-space Gram $J = \Omega U_2(0)^\top U_2(0)\Omega^\top$ ($w\times w$;
$K = G_0^\top G_0 = LJL^\top$): see `GramSystem.diagnostics`. Per step: $O(k^3)$, whatever
the width $h$.

- From a `LinearNetwork`: $w = \min(h, k)$; for $h > k$, $\Omega = Q_h^\top$ from the thin QR
  $Z_0^\top = Q_hR$ (so $L = R^\top$, as in `flowlin.init.reduce_width`), for $h \le k$,
  $\Omega = I_h$ and $L = Z_0$. No pseudo-inverse, no rank decision.
- From a `flowlin.GramInit` $(Q_0, K)$: $w = k$, $L = P\,\mathrm{diag}(\sqrt{q})$ from
  $Q_0 = P\,\mathrm{diag}(q)P^\top$ with eigenvalues below `_rank_rtol` $\cdot\max q$ set to
  zero, and $J = L^+KL^{+\top}$ (range $K \subseteq$ range $Q_0$ for every $G_0^\top G_0$).

**Why not $\Psi$ or $Q$.** $Q$ alone obeys an autonomous ODE of the same size, but it
forgets how the hidden units moved: the distance to the min-norm solution needs
$G_0\Psi^\top$, the imbalance drift needs $\Psi^\top M\Psi$ on the range of $Q_0$, and the
final weights need $\Psi Z_0$. $\Psi$ itself carries them all but is unstable: when $Q_0$ is
singular (width $h < k$, or a rank-deficient initialization) and the flow settles at a
non-global stationary point ($E(\infty) \ne 0$), $\Psi$ grows like $e^{tA(\infty)}$ on the
null space of $Q_0$, where it never touches $Z$, and round-off in $Q_0$ turns that growth
into garbage in $Q = \Psi Q_0\Psi^\top$. $Z_r$ is $\Psi$ restricted to where it acts: it stays
bounded (it is a network's weights), keeps $Q = Z_rZ_r^\top$ positive semi-definite, and its
step-size control sees exactly the state the final weights are rebuilt from.
"""

import dataclasses
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._diagnostics import safe_div, safe_norm
from .._gram_init import GramInit, check_gram_compatible
from .._misc import full_precision
from .._native import weights_product
from .._network import LinearNetwork, check_compatible
from .._problem import Problem
from ._base import AbstractFlowMethod
from ._pass import first_factor, gram_and_cross, use_native_product


def _rank_rtol(dtype, k: int) -> float:
    """Eigenvalues of a `GramInit`'s Q0 below this times the largest count as zero.

    Q0 = Z0Z0ᵀ is singular only for width h < k = r + m (or a rank-deficient init); its zero
    eigenvalues then come out as round-off of ~h·eps·‖Q0‖ < 10·k·eps·‖Q0‖. Dropping them keeps
    those directions out of the state; what is dropped is below the round-off of Q0 itself.
    """
    return 10 * k * float(jnp.finfo(dtype).eps)


class GramSystem(eqx.Module):
    r"""The data of the reduced system: the problem's $\Sigma$, $\tilde Y$, $L^\star$ and the
    initialization's factor $L = Z_r(0)$ and null-space Gram $J$."""

    sigma: Float[Array, " r"]
    Y_tilde: Float[Array, "r m"]
    loss_star: Float[Array, ""]
    L: Float[Array, "k w"]
    J: Float[Array, "w w"]

    @property
    def rank(self) -> int:
        return self.Y_tilde.shape[0]

    @full_precision
    def error(self, Z: Float[Array, "k w"]) -> Float[Array, "r m"]:
        r"""$E = \tilde Y - Q_{12}$, $Q_{12} = Z_{top}Z_{bot}^\top = SU_1V^\top$."""
        r = self.rank
        return self.Y_tilde - Z[:r] @ Z[r:].T

    @full_precision
    def diagnostics(
        self, Z: Float[Array, "k w"], error_integral, names: tuple[str, ...]
    ) -> dict[str, Float[Array, ""]]:
        r"""The requested diagnostics (see `flowlin.Trajectory`) at the reduced state $Z_r$.

        With $Z = Z_r\Omega$ ($\Omega$ orthonormal rows), norms of products with $Z$ on the
        right equal those with $Z_r$. Writing $Z_t$, $Z_b$ for the first $r$ and last $m$
        rows of $Z_r$ and $M = \mathrm{diag}(\Sigma^{-1}, -I_m)$:

        - loss $= \tfrac12\|E\|^2 + L^\star$; excess loss $= \tfrac12\|E\|^2$.
        - rate $= 2(\|Z_t^\top E\|^2 + \|SEZ_b\|^2)/\|E\|^2$, since $U_1^\top SE = Z_{top}^\top E$
          and $SEV = SEZ_{bot}$.
        - imbalance drift: $\Lambda = U_1^\top U_1 - V^\top V = Z^\top MZ$, so
          $\|\Lambda(t) - \Lambda(0)\|_F = \|Z_r^\top MZ_r - L^\top ML\|_F$; normalized, as in
          the full solver, by $\|U_1(0)\|_F^2 + \|V(0)\|_F^2 = \sum_{ij}|M_{ii}|L_{ij}^2$.
        - distance: $\Theta - \hat\Theta = -\Phi_1S^{-1}E + \Phi_2U_2V^\top$, two orthogonal
          parts, and $U_2V^\top = U_2\Omega^\top Z_b^\top$, so
          $\|W - W^\star\|_F^2 = \|S^{-1}E\|_F^2 + \mathrm{tr}(Z_bJZ_b^\top)$.
        - $\sigma_{\min}(U_1V^\top) = \sigma_{\min}(S^{-1}Z_tZ_b^\top)$.
        - u2 drift: identically $0$ ($U_2$ is constant in exact arithmetic and the gram method
          never changes it).
        """
        r = self.rank
        out = {}
        E = self.error(Z)
        e2 = jnp.sum(E**2)
        sqrt_sigma = jnp.sqrt(self.sigma)
        top, bot = Z[:r], Z[r:]
        if "loss" in names:
            out["loss"] = 0.5 * e2 + self.loss_star
        if "excess_loss" in names:
            out["excess_loss"] = 0.5 * e2
        if "rate" in names:
            num = jnp.sum((top.T @ E) ** 2) + jnp.sum(((sqrt_sigma[:, None] * E) @ bot) ** 2)
            out["rate"] = 2.0 * safe_div(num, e2)
        if "imbalance_drift" in names:
            M = jnp.concatenate([1.0 / self.sigma, -jnp.ones(Z.shape[0] - r, Z.dtype)])
            change = (Z.T * M) @ Z - (self.L.T * M) @ self.L
            scale = jnp.sum(jnp.abs(M)[:, None] * self.L**2)
            out["imbalance_drift"] = safe_div(safe_norm(change), scale)
        if "distance_to_min_norm" in names:
            row = jnp.sum((E / sqrt_sigma[:, None]) ** 2)
            null = jnp.maximum(jnp.sum(bot * (bot @ self.J)), 0.0)  # tr(Z_b J Z_bᵀ) >= 0
            out["distance_to_min_norm"] = jnp.sqrt(row + null)
        if "u2_drift" in names:
            out["u2_drift"] = jnp.zeros((), Z.dtype)
        if "product_min_singular_value" in names:
            P = (top @ bot.T) / sqrt_sigma[:, None]  # S^{-1}Q12 = U1Vᵀ
            out["product_min_singular_value"] = jnp.linalg.svd(P, compute_uv=False)[-1]
        if "error_integral" in names:
            out["error_integral"] = error_integral
        return {key: out[key] for key in names}


class NetworkFrame(eqx.Module):
    r"""How a network's weights hang off the reduced state: $Z_0 = L\Omega$ and $W_1(0)$, $W_2(0)$.

    $\Omega$ is kept implicit: for $h \le r + m$, $\Omega = I_h$ (`PS` is `None`); else
    $\Omega^\top = Z_0^\top T$ with $T = L^{-\top}$ (Cholesky route, `cholesky` true) or the
    $Q_h$ of the Householder QR of $Z_0^\top$; $Z_0^\top = [W_1\Phi_1S, W_2^\top]$ is formed
    again from `PS` $= \Phi_1S$ when needed. So a solve that does not rebuild the weights
    writes nothing of size $h$.
    """

    W1: Float[Array, "h D"]
    W2: Float[Array, "m h"]
    PS: Float[Array, "D r"] | None
    T: Float[Array, "k k"] | None
    cholesky: Bool[Array, ""] | None

    def moved(self, C: Float[Array, "w D"], dV: Float[Array, "m w"]) -> LinearNetwork:
        r"""The network $(W_1 + \Omega^\top C,\ W_2 + dV\,\Omega)$: one $O(h(r+m)D)$ product,
        and one $h\times D$ array written."""
        if self.PS is None:
            return LinearNetwork(self.W1 + C, self.W2 + dV)
        r = self.PS.shape[1]

        def by_cholesky():  # Ωᵀ = Zt T, Zt = [W1 PS, W2ᵀ] not formed: its two blocks'
            # products are taken apart (an h×r temporary, not h×(r+m) and a concatenation)
            TC, dVT = self.T @ C, dV @ self.T.T

            def by_xla(W1, W2, PS):
                W1n = W1 + ((W1 @ PS) @ TC[:r] + W2.T @ TC[r:])
                return W1n, W2 + ((dVT[:, :r] @ PS.T) @ W1.T + dVT[:, r:] @ W2)

            def by_kernel(W1, W2, PS):  # one product [W1', W2'ᵀ] = [W1, W2ᵀ] R
                D, m = W1.shape[1], W2.shape[0]
                top = jnp.concatenate([PS @ TC[:r], (dVT[:, :r] @ PS.T).T], axis=1)
                low = jnp.concatenate([TC[r:], dVT[:, r:].T], axis=1)
                R = jnp.eye(D + m, dtype=C.dtype) + jnp.concatenate([top, low])
                return weights_product(W1, W2, R)

            args = (self.W1, self.W2, self.PS)
            if use_native_product(*args):  # on a CPU; a GPU keeps the XLA products
                return jax.lax.platform_dependent(*args, cpu=by_kernel, default=by_xla)
            return by_xla(*args)

        def by_householder():  # Ωᵀ = Qh
            Qh = _householder(first_factor(self.W1, self.W2, self.PS))[0]
            return self.W1 + Qh @ C, self.W2 + dV @ Qh.T

        return LinearNetwork(*jax.lax.cond(self.cholesky, by_cholesky, by_householder))


#: Below this ratio of the smallest to the largest eigenvalue of $Q_0 = Z_0Z_0^\top$ (i.e.
#: above a condition number 100 of $Z_0^\top$), `from_network` factors by Householder QR;
#: above it by Cholesky QR, whose loss of orthogonality, $\sim\kappa(Z_0)^2\epsilon$, is then
#: below $10^4\epsilon$ (float64: ~2e-12, so both routes agree to 1e-10).
_CHOLESKY_MIN_EIGEN_RATIO = 1e-4


def _householder(Zt):
    """The thin QR $Z_0^\top = Q_hR$ with $R$'s diagonal made non-negative, as Cholesky's is:
    both routes then start from the same state (a column sign flip would not change the steps
    anyway: the controller's max norm ignores signs)."""
    Qh, R = jnp.linalg.qr(Zt)
    signs = jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0).astype(R.dtype)
    return Qh * signs, R * signs[:, None]


@full_precision
def from_network(net: LinearNetwork, problem: Problem):
    r"""(L, J, frame, Q0) of a network: the exact factorization $Z_0 = L\Omega$ of
    docs/theory.md §3, and $Q_0 = Z_0Z_0^\top$.

    Only products of the weights with $h\times(r+m)$ matrices, $O(hD(r+m))$ once:
    $Z_0^\top = [W_1\Phi_1 S, W_2^\top]$; for $h > r + m$ a thin QR $Z_0^\top = Q_hR$
    ($\Omega = Q_h^\top$, $L = R^\top$) and $N = \Omega W_1$ ($(r+m)\times D$); then
    $\Omega U_2^\top\Phi_2^\top = N(I - \Phi_1\Phi_1^\top)$ and $J$ is its Gram. The null-space
    part of $W_1$ ($h\times D$) is never formed.

    The QR is a Cholesky QR when $Z_0$ is well conditioned (a wide random init):
    $Q_0 = L_cL_c^\top$, $L = L_c$, $N = L_c^{-1}(Z_0W_1)$, with $Q_0$ and $Z_0W_1$ from one
    pass over the weights and no $h$-sized intermediate. Otherwise a Householder QR (any
    conditioning; exact for rank-deficient inits).
    """
    Phi1 = problem.Phi1
    PS = Phi1 * problem.sqrt_sigma
    k = problem.rank + net.out_features
    if net.width <= k:
        Zt = first_factor(net.W1, net.W2, PS)
        N = net.W1 - (net.W1 @ Phi1) @ Phi1.T  # Ω = I_h
        frame = NetworkFrame(net.W1, net.W2, None, None, None)
        return Zt.T, N @ N.T, frame, Zt.T @ Zt
    Q0, B = gram_and_cross(net.W1, net.W2, PS)
    q = jnp.linalg.eigvalsh(jax.lax.stop_gradient(Q0))
    cholesky = q[0] > _CHOLESKY_MIN_EIGEN_RATIO * q[-1]

    def by_cholesky():
        Lc = jnp.linalg.cholesky(Q0)  # lower, Lc Lcᵀ = Q0: L = Lc, Ω = Lc⁻¹ Z0
        # κ(Lc) = κ(Z0) <= 100 here, so the explicit k×k inverse costs at most ~100 eps.
        T = jax.scipy.linalg.solve_triangular(Lc, jnp.eye(k, dtype=Lc.dtype), lower=True)
        return Lc, T @ B, T.T

    def by_householder():
        Qh, R = _householder(first_factor(net.W1, net.W2, PS))
        return R.T, Qh.T @ net.W1, jnp.zeros((k, k), Q0.dtype)

    L, N, T = jax.lax.cond(cholesky, by_cholesky, by_householder)
    N = N - (N @ Phi1) @ Phi1.T  # (U2 Ωᵀ)ᵀ in input coordinates
    return L, N @ N.T, NetworkFrame(net.W1, net.W2, PS, T, cholesky), Q0


@full_precision
def from_gram(gram: GramInit):
    """(L, J) of a `GramInit`: Q0 = LLᵀ by eigh, J = A K Aᵀ with A L = I.

    The factorization is of D Q0 D, D = diag(Q0)^-½ (each row at unit scale): an entry of a
    Gram is known to its own rows' scale, so a cut relative to the largest eigenvalue of Q0
    itself dropped every Σ^½U1 direction of small-scale data (X of 1e-8: U1's rows ~1e-16
    against V's ~1) and changed the conserved imbalance. Rows below ε² of the largest keep
    that scale (they are round-off, and not blown up to unit size)."""
    Q0, K = gram.Q, gram.K
    Q = 0.5 * (Q0 + Q0.T)
    diag, eps = jnp.diagonal(Q), jnp.finfo(Q.dtype).eps
    top = jnp.max(diag)
    rows = jnp.where(diag > eps**2 * top, diag, jnp.where(top > 0, top, 1.0))
    d = 1.0 / jnp.sqrt(rows)
    q, P = jnp.linalg.eigh(d[:, None] * Q * d[None, :])
    keep = q > _rank_rtol(Q0.dtype, Q0.shape[0]) * jnp.max(q)
    root = jnp.where(keep, jnp.sqrt(jnp.where(keep, q, 1.0)), 0.0)
    inv_root = jnp.where(keep, 1.0 / jnp.where(keep, root, 1.0), 0.0)
    L = (P * root) / d[:, None]  # D⁻¹ L̃
    A = (P * inv_root).T * d[None, :]  # L̃⁺ D: A L = I on the kept directions
    J = A @ K @ A.T
    return L, 0.5 * (J + J.T)


@full_precision
def reconstruct_network(
    Z: Float[Array, "k w"], L: Float[Array, "k w"], frame: NetworkFrame, problem: Problem
) -> LinearNetwork:
    r"""The weights at the reduced state $Z_r$ of the flow started from `frame`'s network.

    $Z(t) = Z_r\Omega$ gives $U_1(t)$ and $V(t) = W_2(t)$; $U_2$ is constant, so
    $W_1(t) = W_1(0) + (U_1(t) - U_1(0))^\top\Phi_1^\top$. The change is formed from
    $(Z_r - L)\Omega$, so a short run keeps the initial weights to full precision.
    Cost $O(hwD)$ (one product $\Omega^\top C$ with $C$ of size $w\times D$), once.
    """
    r = problem.rank
    dZ = Z - L
    # ΔW1 = ((dZ Ω)[:r] / S)ᵀ Φ1ᵀ = Ωᵀ C with C (w×D): one O(hwD) product, no h×r temporary.
    C = (dZ[:r] / problem.sqrt_sigma[:, None]).T @ problem.Phi1.T
    return frame.moved(C, dZ[r:])


class FactoredInit(eqx.Module):
    """A start factored by `from_network` (or `from_gram`): all the solve needs ($L$, $J$,
    $Q_0$) and nothing of size $h$ beyond $w = \\min(h, r + m)$, so one compiled solve serves
    every width $h \\ge r + m$ (`solve_by_parts`)."""

    L: Float[Array, "k w"]
    J: Float[Array, "w w"]
    Q0: Float[Array, "k k"]


@eqx.filter_jit
def _factor(init: LinearNetwork | GramInit, problem: Problem, null_gram: bool):
    """`from_network` or `from_gram`, compiled on its own: the `FactoredInit`, and for a
    network the frame's parts other than the weights (returning those would copy them).

    `null_gram=False` (no saved diagnostic reads $J$: only `distance_to_min_norm` does) gives
    a zero $J$, so that XLA drops the $Z_0W_1$ half of the pass over the weights, as it did
    when the factorization and the solve were one program."""
    if isinstance(init, GramInit):
        L, J = from_gram(init)
        Q0, parts = init.Q, None
    else:
        L, J, frame, Q0 = from_network(init, problem)
        parts = (frame.PS, frame.T, frame.cholesky)
    if not null_gram:
        J = jnp.zeros_like(J)
    return FactoredInit(L, J, Q0), parts


_rebuild = eqx.filter_jit(reconstruct_network)


def solve_by_parts(
    method: "Gram", init: LinearNetwork | GramInit, problem: Problem, names: tuple, solve
):
    r"""A gram solve as three compiled programs: the factorization (reads the weights, or the
    `GramInit`), the solve from the `FactoredInit` (`solve(start)` returns the trajectory and
    the final reduced state; one program for every width $h \ge r + m$ and for a `GramInit`
    alike), and for a network the rebuilt final weights. Compiled as one program, each new
    width recompiled the whole solve. `names`: the diagnostics the solve saves."""
    start, parts = _factor(init, problem, "distance_to_min_norm" in names)
    traj, Z_f = solve(start)
    if parts is None or method.reconstruct is False:
        return traj
    frame = NetworkFrame(init.W1, init.W2, *parts)
    return dataclasses.replace(traj, final_network=_rebuild(Z_f, start.L, frame, problem))


class _GramRun(eqx.Module):
    """The reduced system (with the initial factor $L$), and, from a network, how to rebuild
    the weights."""

    system: GramSystem
    frame: NetworkFrame | None
    problem: Problem
    Q0: Float[Array, "k k"]


class Gram(AbstractFlowMethod):
    r"""Integrate the width-independent reduced state (docs/theory.md §3).

    With $Z = [\Sigma^{1/2}U_1; V]$ ($(r+m)\times h$) factored once as $Z_0 = L\Omega$
    ($\Omega$ with orthonormal rows), the flow keeps $Z(t) = Z_r(t)\Omega$, where
    $\dot Z_r = A(Z_rZ_r^\top)Z_r$, $Z_r(0) = L$, is of size $(r+m)\times\min(h, r+m)$:
    cost $O((r+m)^3)$ per step whatever the width. Every diagnostic is computed from $Z_r$
    and the initialization's statistics; `u2_drift` is identically 0 ($U_2$ is constant and
    not integrated) and `imbalance_drift` is the drift of $\Lambda$ along the computed
    $Z(t) = Z_r(t)\Omega$, normalized as in `FullWeights`.

    Takes a `flowlin.LinearNetwork` (factored once from one pass over the weights,
    $O(hD(r+m))$: at $h = 2\cdot10^5$, $D = 30$ that pass, not the solve, is most of the
    call; `reconstruct=False` also skips writing the $h\times D$ final weights), or a
    `flowlin.GramInit` (its statistics $Q_0$, $K$ alone, e.g. from `flowlin.init.wishart` at
    any width without materialising the weights).

    **Arguments:**

    - `reconstruct`: rebuild `Trajectory.final_network` from $Z_r(t_1)$ (one $O(hD(r+m))$
      product). Default (`None`): `True` for a `LinearNetwork`; a `GramInit` has no weights,
      so its `final_network` is `None` (and `True` is an error).

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    init = flowlin.init.wishart(jax.random.key(1), problem, h=10**9, std1=1e-4, std2=1e-4)
    traj = flowlin.gradient_flow(init, problem, 50.0, method=flowlin.Gram())
    ```
    """

    name: ClassVar[str] = "gram"
    reconstruct: bool | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.reconstruct is not None and not isinstance(self.reconstruct, bool):
            raise TypeError(
                "`flowlin.Gram(reconstruct=...)`: reconstruct must be a bool or None, got "
                f"{type(self.reconstruct).__name__} {self.reconstruct!r}"
            )

    def check(self, call, init, problem, networks):
        if isinstance(init, GramInit):
            check_gram_compatible(call, init, problem)
            if self.reconstruct:
                raise ValueError(
                    f"`{call}`: method=flowlin.Gram(reconstruct=True): reconstruct=True needs "
                    "the initial weights, but net is a GramInit (which holds only Q and K); "
                    "pass the LinearNetwork, or reconstruct=False"
                )
            if networks:
                raise ValueError(
                    f"`{call}`: SaveAt(networks=True) needs the initial weights, but net is a "
                    "GramInit (which holds only Q and K); pass the LinearNetwork to save "
                    "networks"
                )
            return jnp.result_type(init.Q.dtype, init.K.dtype, problem.dtype)
        check_compatible(call, init, problem)
        return jnp.result_type(init.dtype, problem.dtype)

    def start(self, init, problem):
        # `flowlin.gradient_flow` hands the solve a `FactoredInit` (`solve_by_parts`), or the
        # network itself when the weights are saved at every time (`SaveAt(networks=True)`).
        if isinstance(init, LinearNetwork):
            L, J, frame, Q0 = from_network(init, problem)
        else:
            (L, J), frame, Q0 = (init.L, init.J), None, init.Q0
        system = GramSystem(problem.sigma, problem.Y_tilde, problem.loss_star, L, J)
        return L, _GramRun(system, frame, problem, Q0)

    def initial_gram(self, run, init, problem):
        return run.Q0  # formed once in `start`, with the factor

    @full_precision
    def vector_field(self, run, y):
        Z, system = y, run.system
        r = system.rank
        E = system.error(Z)
        dZ = jnp.concatenate([system.sigma[:, None] * (E @ Z[r:]), E.T @ Z[:r]], axis=0)
        return dZ, E

    def error(self, run, y):
        return run.system.error(y)

    def diagnostics(self, run, y, error_integral, names):
        return run.system.diagnostics(y, error_integral, names)

    def snapshot(self, run, y, error_integral, names, networks):
        # The state is (r+m)×w: keep it, and compute the diagnostics once after the solve
        # (vmapped) rather than inside diffrax's save machinery (halves compile time).
        return y, error_integral

    def unpack(self, run, saved, names, networks):
        states, integrals = saved
        diag = jax.vmap(lambda Z, i: run.system.diagnostics(Z, i, names))(states, integrals)
        nets = None
        if networks:
            nets = jax.vmap(lambda Z: reconstruct_network(Z, run.system.L, run.frame, run.problem))(
                states
            )
        return diag, nets

    @full_precision
    def output_gram(self, run, y):
        # V = Z_r[r:] Ω with Ω's rows orthonormal, so V Vᵀ = Z_r[r:] Z_r[r:]ᵀ.
        V = y[run.system.rank :]
        return V @ V.T

    def final_network(self, run, y):
        reconstruct = self.reconstruct
        if run.frame is None or reconstruct is False:
            return None
        return reconstruct_network(y, run.system.L, run.frame, run.problem)
