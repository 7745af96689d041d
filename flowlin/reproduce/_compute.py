"""Computations the figures share: save-time helpers and gradient descent on the reduced
problem. Internal API."""

import jax
import jax.numpy as jnp
import numpy as np

from .. import init
from .._descent import gradient_descent
from .._network import LinearNetwork
from .._problem import Problem
from .._saveat import SaveAt


def saveat_only(ts, *diagnostics) -> SaveAt:
    """Save only `diagnostics` at `ts` (the full solver's diagnostics cost O(h²) per save)."""
    return SaveAt(np.asarray(ts), diagnostics=diagnostics)


def interp_at(ts, values, t) -> float:
    """`values` (saved at `ts`) linearly interpolated at time `t`; NaN where `t` is NaN."""
    if not np.isfinite(t):
        return float("nan")
    return float(np.interp(t, np.asarray(ts), np.asarray(values)))


def descent_reduced(nets, problem: Problem, lr, steps: int, ts):
    r"""Plain gradient descent (step `lr` on $L = \tfrac12\|Y - XW_1^\top W_2^\top\|^2$) from
    each of `nets`, on an exactly equivalent small problem: width $\le r + m$
    (`flowlin.init.reduce_width`) and inputs in the basis of $X$'s singular vectors,
    $X' = \Sigma^{1/2}$ ($r\times r$), $Y' = \tilde Y$, $W_1' = U_1^\top$. $U_2$ never moves
    under gradient descent ($X\Phi_2 = 0$) and $L - L^\star = \tfrac12\|\tilde Y -
    \Sigma^{1/2}U_1V^\top\|^2$, so the iterates of $(U_1, V)$ and the excess loss are those
    of gradient descent on the original weights. The runs are vmapped (one compile).
    Returns the excess loss at `ts` (flow time $t = \eta k$), shape (runs, times)."""
    reduced = Problem(jnp.diag(problem.sqrt_sigma), problem.Y_tilde, allow_full_column_rank=True)
    small = [init.reduce_width(n, problem) for n in nets]
    W1 = jnp.stack([problem.row_part(n.W1).T for n in small])
    W2 = jnp.stack([n.W2 for n in small])

    def one(W1, W2):
        gd = gradient_descent(LinearNetwork(W1, W2), reduced, lr, steps, saveat=ts)
        return gd.excess_loss

    return np.asarray(jax.vmap(one)(W1, W2))
