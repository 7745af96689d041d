r"""The full-weights flow of a deep linear network (docs/theory.md §6): what
`flowlin.FullWeights` runs for a `flowlin.DeepLinearNetwork` (internal API).

With $\tilde X = \Sigma^{1/2}\Phi_1^\top$ ($r\times D$, so $X = W_x\tilde X$) the loss is
$L = L^\star + \tfrac12\|E\|_F^2$, $E = W_x^\top R = \tilde Y - \tilde XW_1^\top\cdots W_L^\top$,
and the flow $\dot W_l = (W_L\cdots W_{l+1})^\top R^\top X(W_{l-1}\cdots W_1)^\top$ is
$$\dot W_l = G_l^\top F_{l-1},\qquad F_l = F_{l-1}W_l^\top\ (F_0 = \tilde X),\qquad
  G_{l-1} = G_lW_l\ (G_L = E),$$
a forward pass of the $r$ rows of $\tilde X$ and a backward pass of $E$: cost
$O(r\sum_l h_lh_{l-1})$ per step, no $h\times h$ or $D\times D$ product is formed.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._deep_network import DeepLinearNetwork, chain
from .._diagnostics import Reference, imbalance_change_norm, safe_div, weight_diagnostics
from .._problem import Problem
from .._trajectory import init_fingerprint


#: Diagnostics whose two-layer formula does not hold at depth (computed here instead).
_DEPTH_SPECIFIC = ("rate", "imbalance_drift")


def reduced_inputs(problem: Problem) -> Float[Array, "r D"]:
    r"""$\tilde X = \Sigma^{1/2}\Phi_1^\top$: the data's $r$ informative rows
    ($X = W_x\tilde X$)."""
    return problem.sqrt_sigma[:, None] * problem.Phi1.T


def two_layer_view_gram(W1, head, problem: Problem) -> Float[Array, "k k"]:
    r"""$Q_0 = Z_0Z_0^\top$ of a network seen as two layers, $W_1$ and the head
    $V = W_L\cdots W_2$ ($W_2$ at two layers): $Z_0 = [\Sigma^{1/2}U_1; V]$
    ($(r+m)\times h_1$). Its off-diagonal block is $\Sigma^{1/2}\Phi_1^\top W^\top$, so
    $E = \tilde Y - (Q_0)_{12}$ at any depth."""
    Z = jnp.concatenate([problem.sqrt_sigma[:, None] * problem.row_part(W1), head])
    return Z @ Z.T


def deep_fingerprint(net: DeepLinearNetwork, problem: Problem) -> Float[Array, " fingerprint"]:
    r"""What identifies the start of a deep run (internal API; `Trajectory.init_fingerprint`
    of a `flowlin.DeepLinearNetwork` run): the two-layer fingerprint
    $[\mathrm{vec}(Q_0), \tfrac12\|E(0)\|_F^2, L^\star]$ of `two_layer_view_gram` ($W_1$'s
    row-space part and the head $W_L\cdots W_2$). At $L = 2$ it equals the fingerprint of the
    same weights as a `flowlin.LinearNetwork`. Cost $O(D h_1 r + m\sum_l h_lh_{l-1})$."""
    return init_fingerprint(two_layer_view_gram(net.weights[0], net.head, problem), problem)


class DeepSystem(eqx.Module):
    """What the deep vector field and diagnostics need: the data (also as $\\tilde X$), the
    initial weights and the scales of the drifts."""

    problem: Problem
    X_red: Float[Array, "r D"]
    initial: tuple[Float[Array, "..."], ...]
    ref: Reference
    scales: Float[Array, " layers"]


def _inner(problem: Problem, ws, c: int):
    """The factor whose Gram enters $C_c$ from below: $W_c^\top$, or for $c = 1$ the row-space
    part $U_1 = \\Phi_1^\\top W_1^\\top$ ($W_1\\Phi_2$ never moves; its drift is `u2_drift`)."""
    return problem.row_part(ws[0]) if c == 1 else ws[c - 1].T


def start(net: DeepLinearNetwork, problem: Problem) -> tuple[tuple[Array, ...], DeepSystem]:
    """`(y0, system)` of a deep run: the state is the tuple of weights, W1 first."""
    ws = net.weights
    L = len(ws)
    scales = jnp.stack(
        [jnp.sum(ws[c] ** 2) + jnp.sum(_inner(problem, ws, c) ** 2) for c in range(1, L)]
    )
    ref = Reference(problem, ws[0], net.head)
    return ws, DeepSystem(problem, reduced_inputs(problem), ws, ref, scales)


def vector_field(system: DeepSystem, ws) -> tuple[tuple[Array, ...], Float[Array, "r m"]]:
    r"""`(dW, E)`: $\dot W_l = G_l^\top F_{l-1}$ (module docstring) and $E$."""
    F = [system.X_red]
    for W in ws:
        F.append(F[-1] @ W.T)  # F_l = X̃ P_lᵀ, r×h_l
    E = system.problem.Y_tilde - F[-1]
    G = E
    dws = [None] * len(ws)
    for i in reversed(range(len(ws))):  # ws[i] is W_(i+1)
        dws[i] = G.T @ F[i]
        if i > 0:
            G = G @ ws[i]
    return tuple(dws), E


def error(system: DeepSystem, ws) -> Float[Array, "r m"]:
    """$E$ at the state `ws`."""
    F = system.X_red
    for W in ws:
        F = F @ W.T
    return system.problem.Y_tilde - F


def balancedness_drift(system: DeepSystem, ws) -> Float[Array, " layers"]:
    r"""$\|C_c(t) - C_c(0)\|_F$ for every hidden layer $c = 1, \dots, L-1$, with
    $C_c = W_{c+1}^\top W_{c+1} - W_cW_c^\top$ (for $c = 1$ with $W_1\Phi_1$ in place of
    $W_1$: $W_1\Phi_2$ is constant and measured by `u2_drift`). Computed as the two-layer
    imbalance drift (`imbalance_change_norm`): by a thin QR where $h_c$ exceeds the rows of
    the stacked factors, else as an $h_c\times h_c$ matrix; zero derivative at zero. A middle
    layer's $C_c$ is a full-rank $h_c\times h_c$ matrix, so this costs
    $O(h_c^2(h_{c-1} + h_{c+1}))$ per save time: at equal widths $h$, ~$4h^3$ flops per
    layer against ~$18rh^2$ for a Tsit5 step (six evaluations of the field), so with
    $h \gtrsim 5r$ each save costs more than a step."""
    p, W0 = system.problem, system.initial
    out = []
    for c in range(1, len(ws)):
        out.append(imbalance_change_norm(ws[c], _inner(p, ws, c), W0[c], _inner(p, W0, c)))
    return jnp.stack(out)


def diagnostics_and_drift(system: DeepSystem, ws, integral, names):
    """The requested diagnostics (see `flowlin.Trajectory`) and, when `imbalance_drift` is
    requested, the per-layer `balancedness_drift` (else `None`)."""
    plain = tuple(n for n in names if n not in _DEPTH_SPECIFIC)
    W1, head = ws[0], chain(ws[1:])
    # Everything but the rate and the imbalance is a function of W1 and the product head·W1.
    out = weight_diagnostics(system.problem, W1, head, system.ref, plain, integral)
    if "rate" in names:
        # ρ = -d/dt log(L - L*) = 2 Σ_l ‖Ẇ_l‖² / ‖E‖².
        dws, E = vector_field(system, ws)
        out["rate"] = 2.0 * safe_div(sum(jnp.sum(d**2) for d in dws), jnp.sum(E**2))
    drift = None
    if "imbalance_drift" in names:
        drift = balancedness_drift(system, ws)
        out["imbalance_drift"] = jnp.max(safe_div(drift, system.scales))
    return {k: out[k] for k in names}, drift


def snapshot(system: DeepSystem, ws, integral, names, networks):
    diag, drift = diagnostics_and_drift(system, ws, integral, names)
    if drift is not None:
        diag["balancedness_drift"] = drift
    return diag, (ws if networks else None)


def unpack(system: DeepSystem, saved, networks):
    diag, states = saved
    nets = None
    if networks:
        nets = jax.vmap(lambda *w: DeepLinearNetwork(w))(*states)
    return diag, nets
