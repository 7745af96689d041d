"""What a solve saves: times and diagnostics (never max_steps-sized buffers)."""

from collections.abc import Sequence

import diffrax as dfx
import equinox as eqx
import jax
from jaxtyping import Array, ArrayLike, Float

from ._errors import NamedArguments, as_float_array, check_bool


#: Every per-time diagnostic flowlin can save (docs/theory.md §2). See `flowlin.Trajectory`.
DIAGNOSTICS: tuple[str, ...] = (
    "loss",
    "excess_loss",
    "rate",
    "imbalance_drift",
    "distance_to_min_norm",
    "u2_drift",
    "product_min_singular_value",
    "error_integral",
)

#: Number of save points when no times are given (0, t1/100, ..., t1).
DEFAULT_NUM_SAVES = 101


class SaveAt(eqx.Module, metaclass=NamedArguments):
    """Which diagnostics to save, and when.

    **Arguments:**

    - `ts`: times at which to save (flow time; for gradient descent, mapped to the nearest
      iteration). Default: 101 equally spaced times from 0 to `t1`.
    - `diagnostics`: names from `flowlin.DIAGNOSTICS` (default: all of them). Unrequested ones
      are `None` in the `Trajectory` and cost nothing.
    - `networks`: also save $(W_1, W_2)$ at every time (memory: times × width × (D + m)).

    The final network and the diagnostics at the end of the run are always kept.
    """

    ts: Float[Array, " times"] | None
    diagnostics: tuple[str, ...] = eqx.field(static=True)
    networks: bool = eqx.field(static=True)

    def __init__(
        self,
        ts: Float[ArrayLike, " times"] | Sequence[float] | None = None,
        *,
        diagnostics: str | tuple[str, ...] | list[str] = DIAGNOSTICS,
        networks: bool = False,
    ):
        call = "flowlin.SaveAt(...)"
        if isinstance(diagnostics, str):
            diagnostics = (diagnostics,)
        if not isinstance(diagnostics, (tuple, list)):
            raise TypeError(
                "`flowlin.SaveAt(diagnostics=...)`: diagnostics must be a name or a tuple of "
                f"names from flowlin.DIAGNOSTICS, got {type(diagnostics).__name__}"
            )
        self.ts = None if ts is None else as_float_array(call, "ts", ts)
        self.diagnostics = tuple(diagnostics)
        self.networks = check_bool(call, "networks", networks)

    def __check_init__(self):
        unknown = [d for d in self.diagnostics if d not in DIAGNOSTICS]
        if unknown:
            raise ValueError(
                f"`flowlin.SaveAt(diagnostics=...)`: unknown diagnostic(s) {unknown}; "
                f"diagnostics must be names from {DIAGNOSTICS}"
            )
        if self.ts is not None and (self.ts.ndim != 1 or self.ts.shape[0] == 0):
            raise ValueError(
                f"`flowlin.SaveAt(ts=...)`: ts must be a non-empty 1-D array of times, "
                f"got shape {self.ts.shape}"
            )


def diffrax_saveat(ts, adjoint, fn=None):
    """The `diffrax.SaveAt` of a flowlin solve: `fn` of the state (or the state) at `ts`, and
    the state at the end of the run, as two subs.

    `diffrax.BacksolveAdjoint` accepts only one plain `SaveAt` of the state (no subs, no
    `fn`): then the state is saved at `ts` and at t1 together, and the caller applies `fn`
    after the solve. Otherwise the subs are kept (diffrax differentiates an event time only
    through the t1 save of its own sub). Unpack with `split_solution`.
    """
    if isinstance(adjoint, dfx.BacksolveAdjoint):
        return dfx.SaveAt(ts=ts, t1=True)
    at_ts = dfx.SubSaveAt(ts=ts) if fn is None else dfx.SubSaveAt(ts=ts, fn=fn)
    return dfx.SaveAt(subs=[at_ts, dfx.SubSaveAt(t1=True)])


def split_solution(sol, adjoint):
    """`(save_ts, final_time, saved, final)` of a solve saved with `diffrax_saveat`: what
    was saved at `ts` (batched over them) and the state at the end of the run (unbatched).
    Under `BacksolveAdjoint` the saves at `ts` are raw states too (apply `fn` yourself)."""
    if isinstance(adjoint, dfx.BacksolveAdjoint):
        saved = jax.tree_util.tree_map(lambda x: x[:-1], sol.ys)
        final = jax.tree_util.tree_map(lambda x: x[-1], sol.ys)
        return sol.ts[:-1], sol.ts[-1], saved, final
    final = jax.tree_util.tree_map(lambda x: x[0], sol.ys[1])
    return sol.ts[0], sol.ts[1][0], sol.ys[0], final
