r"""The width-independent exact gradient flow of the two-layer network (theory.md §3).

With $S = \Sigma^{1/2}$ and $Z = [SU_1; V]$ ($k\times h$, $k = r + m$), gradient flow is
$\dot Z = A(Q)Z$ with $Q = ZZ^\top$, $E = \tilde Y - Q_{12}$ and
$A(Q) = \begin{pmatrix}0 & \Sigma E\\ E^\top & 0\end{pmatrix}$, while $U_2$ never moves.
So $Z(t) = \Psi(t)Z_0$ for a $k\times k$ state transition $\Psi$, and only $\Psi$ on the
range of $Q_0$ matters. Factor $Z_0 = L\,\Omega$ with $L$ ($k\times w$, $w \le k$) and
$\Omega$ ($w\times h$) with orthonormal rows; then $Z(t) = Z_r(t)\Omega$, where

$$\dot Z_r = A(Z_rZ_r^\top)\,Z_r,\qquad Z_r(0) = L,$$

is the same flow for a width-$w$ network, and every quantity flowlin reports is a function of
$Z_r(t)$, $L$ and the null-space Gram $J = \Omega U_2(0)^\top U_2(0)\Omega^\top$ ($w\times w$;
$K = G_0^\top G_0 = LJL^\top$): see `_GramSystem.diagnostics`. Per step: $O(k^3)$, whatever
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

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from ._diagnostics import _safe_div
from ._errors import check_finite
from ._gram_init import GramInit
from ._network import LinearNetwork
from ._problem import Problem
from ._results import RESULTS
from ._saveat import SaveAt, diffrax_saveat, split_solution
from ._trajectory import Trajectory, make_trajectory


def _rank_rtol(dtype, k: int) -> float:
    """Eigenvalues of a `GramInit`'s Q0 below this times the largest count as zero.

    Q0 = Z0Z0ᵀ is singular only for width h < k = r + m (or a rank-deficient init); its zero
    eigenvalues then come out as round-off of ~h·eps·‖Q0‖ < 10·k·eps·‖Q0‖. Dropping them keeps
    those directions out of the state; what is dropped is below the round-off of Q0 itself.
    """
    return 10 * k * float(jnp.finfo(dtype).eps)


class _GramSystem(eqx.Module):
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

    def error(self, Z: Float[Array, "k w"]) -> Float[Array, "r m"]:
        r"""$E = \tilde Y - Q_{12}$, $Q_{12} = Z_{top}Z_{bot}^\top = SU_1V^\top$."""
        r = self.rank
        return self.Y_tilde - Z[:r] @ Z[r:].T

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
            out["rate"] = 2.0 * _safe_div(num, e2)
        if "imbalance_drift" in names:
            M = jnp.concatenate([1.0 / self.sigma, -jnp.ones(Z.shape[0] - r, Z.dtype)])
            change = (Z.T * M) @ Z - (self.L.T * M) @ self.L
            scale = jnp.sum(jnp.abs(M)[:, None] * self.L**2)
            out["imbalance_drift"] = _safe_div(jnp.sqrt(jnp.sum(change**2)), scale)
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


class _GramField(eqx.Module):
    r"""$\dot Z_r = A(Z_rZ_r^\top)Z_r = [\Sigma EZ_b;\ E^\top Z_t]$ (theory.md §3).

    With `integrate_error`, the state carries $I$ with $\dot I = \|E\|_F$ (theory.md §2(f)).
    """

    system: _GramSystem
    integrate_error: bool = eqx.field(static=True)

    def __call__(self, t, y, args):
        Z = y[0]
        r = self.system.rank
        E = self.system.error(Z)
        dZ = jnp.concatenate([self.system.sigma[:, None] * (E @ Z[r:]), E.T @ Z[:r]], axis=0)
        if not self.integrate_error:
            return (dZ,)
        return dZ, jnp.sqrt(jnp.sum(E**2))


def _log_excess_minus_threshold(t, y, args, **kwargs):
    """Event function: log(L - L*) - log(threshold), crossing zero downward at the stop."""
    system, log_threshold = args
    excess = 0.5 * jnp.sum(system.error(y[0]) ** 2)
    tiny = jnp.finfo(excess.dtype).tiny
    return jnp.log(jnp.maximum(excess, tiny)) - log_threshold


class _NetworkFrame(eqx.Module):
    r"""How a network's weights hang off the reduced state: $Z_0 = L\Omega$ and $W_1(0)$, $W_2(0)$.

    `Omega` is `None` for $h \le r + m$ (then $\Omega = I_h$ and $Z_r = Z$).
    """

    W1: Float[Array, "h D"]
    W2: Float[Array, "m h"]
    Omega: Float[Array, "w h"] | None


def _from_network(net: LinearNetwork, problem: Problem):
    """(L, J, frame) of a network: the exact QR factorization of theory.md §3."""
    S = problem.sqrt_sigma[:, None]
    Z0 = jnp.concatenate([S * problem.row_part(net.W1), net.W2], axis=0)  # k×h
    null = problem.null_part(net.W1)  # h×D, rows Φ2 U2 per hidden unit
    if net.width > Z0.shape[0]:
        Qh, R = jnp.linalg.qr(Z0.T)  # Z0ᵀ = Qh R, Qh h×k
        L, Omega = R.T, Qh.T
        null = Omega @ null  # (U2 Ωᵀ)ᵀ in input coordinates, k×D
    else:
        L, Omega = Z0, None
    return L, null @ null.T, _NetworkFrame(net.W1, net.W2, Omega)


def _from_gram(gram: GramInit):
    """(L, J) of a `GramInit`: Q0 = LLᵀ by eigh, J = L⁺ K L⁺ᵀ."""
    Q0, K = gram.Q, gram.K
    q, P = jnp.linalg.eigh(0.5 * (Q0 + Q0.T))
    keep = q > _rank_rtol(Q0.dtype, Q0.shape[0]) * jnp.max(q)
    root = jnp.where(keep, jnp.sqrt(jnp.where(keep, q, 1.0)), 0.0)
    inv_root = jnp.where(keep, 1.0 / jnp.where(keep, root, 1.0), 0.0)
    L = P * root
    A = (P * inv_root).T  # L⁺
    J = A @ K @ A.T
    return L, 0.5 * (J + J.T)


def reconstruct_network(
    Z: Float[Array, "k w"], L: Float[Array, "k w"], frame: _NetworkFrame, problem: Problem
) -> LinearNetwork:
    r"""The weights at the reduced state $Z_r$ of the flow started from `frame`'s network.

    $Z(t) = Z_r\Omega$ gives $U_1(t)$ and $V(t) = W_2(t)$; $U_2$ is constant, so
    $W_1(t) = W_1(0) + (U_1(t) - U_1(0))^\top\Phi_1^\top$. The change is formed from
    $(Z_r - L)\Omega$, so a short run keeps the initial weights to full precision.
    Cost $O(hk^2 + hrD)$, once.
    """
    r = problem.rank
    dZ = Z - L
    if frame.Omega is not None:
        dZ = dZ @ frame.Omega
    W1 = frame.W1 + (dZ[:r] / problem.sqrt_sigma[:, None]).T @ problem.Phi1.T
    return LinearNetwork(W1, frame.W2 + dZ[r:])


def check_gram_init(call: str, init: GramInit, problem: Problem) -> None:
    """Raise a clear error when a `GramInit` does not fit `problem` (shapes, finiteness)."""
    k = problem.rank + problem.m
    for name in ("Q", "K"):
        x = getattr(init, name)
        if not eqx.is_array(x) or not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(
                f"`{call}`: net.{name} (of the GramInit) must be a floating-point array, got "
                f"{type(x).__name__}"
            )
        if x.ndim > 2:
            raise ValueError(
                f"`{call}`: net.{name} is batched (shape {x.shape}); use jax.vmap over the batch"
            )
        if x.shape != (k, k):
            raise ValueError(
                f"`{call}`: net.{name} (of the GramInit) must have shape (r+m, r+m) = ({k}, {k}) "
                f"for this problem (rank r={problem.rank}, m={problem.m} outputs), got {x.shape}"
            )
        check_finite(call, f"net.{name}", x)


def _solve_gram_impl(
    init,
    problem,
    t1,
    ts,
    threshold,
    *,
    saveat: SaveAt,
    solver,
    controller,
    adjoint,
    max_steps,
    dt0,
    event_tol,
    reconstruct: bool,
) -> Trajectory:
    names = saveat.diagnostics
    integrate_error = "error_integral" in names
    if isinstance(init, LinearNetwork):
        L, J, frame = _from_network(init, problem)
    else:
        (L, J), frame = _from_gram(init), None
    system = _GramSystem(problem.sigma, problem.Y_tilde, problem.loss_star, L, J)
    dtype = L.dtype

    # The state is (r+m)×w: save it at every time and compute the diagnostics once, after the
    # solve (vmapped), rather than inside diffrax's save machinery (halves compile time).
    # BacksolveAdjoint accepts only one plain SaveAt; the two subs are otherwise kept, as
    # diffrax differentiates the event time only through the t1 save of its own sub.
    dfx_saveat = diffrax_saveat(ts, adjoint)
    event = None
    args = None
    if threshold is not None:
        args = (system, jnp.log(threshold))
        event = dfx.Event(
            _log_excess_minus_threshold,
            root_finder=optx.Newton(rtol=event_tol, atol=event_tol),
            direction=False,
        )
    y0 = (L, jnp.zeros((), dtype)) if integrate_error else (L,)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(_GramField(system, integrate_error)),
        solver,
        t0=jnp.zeros((), ts.dtype),
        t1=t1,
        dt0=dt0,
        y0=y0,
        args=args,
        saveat=dfx_saveat,
        stepsize_controller=controller,
        adjoint=adjoint,
        max_steps=max_steps,
        event=event,
        throw=False,
    )

    def diagnostics(y):
        return system.diagnostics(y[0], y[1] if integrate_error else None, names)

    # Saves after an early stop are inf in `ts` (diffrax's fill); so are their diagnostics
    # and networks, as in the full solver.
    save_ts, final_time, saved_ys, y_f = split_solution(sol, adjoint)
    saved = jnp.isfinite(save_ts)
    diag = jax.vmap(diagnostics)(saved_ys)
    diag = {key: jnp.where(saved, v, jnp.inf) for key, v in diag.items()}
    states = saved_ys[0]
    Z_f = y_f[0]
    final_values = diagnostics(y_f)
    result = RESULTS.promote(sol.result)
    result = RESULTS.where(jnp.all(jnp.isfinite(Z_f)), result, RESULTS.diverged)
    final_network = networks = None
    if frame is not None and reconstruct:
        final_network = reconstruct_network(Z_f, L, frame, problem)
    if saveat.networks:
        networks = jax.vmap(lambda Z: reconstruct_network(Z, L, frame, problem))(states)
        networks = jax.tree_util.tree_map(
            lambda x: jnp.where(saved[:, None, None], x, jnp.inf), networks
        )
    return make_trajectory(
        save_ts,
        diag,
        networks=networks,
        final_network=final_network,
        final_time=final_time,
        final_values=final_values,
        result=result,
        num_steps=sol.stats["num_steps"],
        iterations=None,
        method="gram",
    )


_solve_gram_jit = eqx.filter_jit(_solve_gram_impl)


def solve_gram(
    init: LinearNetwork | GramInit,
    problem: Problem,
    t1,
    ts,
    threshold,
    *,
    saveat: SaveAt,
    solver,
    controller,
    adjoint,
    max_steps,
    dt0,
    event_tol,
    reconstruct=None,
) -> Trajectory:
    r"""`flowlin.gradient_flow(..., method="gram")`: integrate $Z_r$ (theory.md §3).

    Inputs are validated by `gradient_flow`; this checks what only the gram method has:

    - `reconstruct`: rebuild `Trajectory.final_network` from $Z_r(t_1)$ (one
      $O(hD(r+m))$ product, the cost of forming $Q_0$ from the network). Default: `True`
      when `init` is a `LinearNetwork`; a `GramInit` has no weights to rebuild, so it gives
      `final_network=None` and `reconstruct=True` is an error.
    """
    call = "flowlin.gradient_flow(..., method='gram')"
    is_net = isinstance(init, LinearNetwork)
    if reconstruct is None:
        reconstruct = is_net
    elif not isinstance(reconstruct, bool):
        raise TypeError(f"`{call}`: reconstruct must be a bool, got {type(reconstruct).__name__}")
    if not is_net and reconstruct:
        raise ValueError(
            f"`{call}`: reconstruct=True needs the initial weights, but net is a GramInit "
            "(which holds only Q and K); pass the LinearNetwork, or reconstruct=False"
        )
    if not is_net and saveat.networks:
        raise ValueError(
            f"`{call}`: SaveAt(networks=True) needs the initial weights, but net is a GramInit "
            "(which holds only Q and K); pass the LinearNetwork to save networks"
        )
    return _solve_gram_jit(
        init,
        problem,
        t1,
        ts,
        threshold,
        saveat=saveat,
        solver=solver,
        controller=controller,
        adjoint=adjoint,
        max_steps=max_steps,
        dt0=dt0,
        event_tol=event_tol,
        reconstruct=reconstruct,
    )
