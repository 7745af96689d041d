"""The result of a solve."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._network import LinearNetwork
from ._results import RESULTS


class Trajectory(eqx.Module):
    r"""A gradient-flow or gradient-descent trajectory, saved at chosen times.

    Every per-time field has shape `(times,)` (plus leading batch axes under `vmap`) and is
    `None` unless requested through `flowlin.SaveAt(diagnostics=...)`. Times after an early
    stop (`stop_at_loss`) are filled with `inf`, in `ts` and in every diagnostic, as diffrax
    does.

    **Fields:**

    - `ts`: save times (flow time $t$; for gradient descent $t = 2\eta k/n$ on the averaged loss,
      $t = \eta k$ otherwise).
    - `loss`: $L = \tfrac12\|Y - XW_1^\top W_2^\top\|_F^2$.
    - `excess_loss`: $L - L^\star = \tfrac12\|E\|_F^2$, computed from $E$ directly (no
      cancellation against $L^\star$).
    - `rate`: the measured instantaneous rate $\rho(t) = -\tfrac{d}{dt}\log(L - L^\star)
      = 2(\|U_1^\top\Sigma^{1/2}E\|^2 + \|\Sigma^{1/2}EV\|^2)/\|E\|^2$ (docs/theory.md §2(c));
      NaN where $E = 0$ exactly.
    - `imbalance_drift`: $\|\Lambda(t) - \Lambda(0)\|_F / (\|U_1(0)\|_F^2 + \|V(0)\|_F^2)$ with
      $\Lambda = U_1^\top U_1 - V^\top V$, conserved by the flow (docs/theory.md §2(a)): the
      integrator's accuracy, relative to the size of the terms whose difference is conserved
      (well defined also for balanced inits, where $\Lambda = 0$).
    - `distance_to_min_norm`: $\|W(t) - W^\star\|_F$, $W = W_2W_1$.
    - `u2_drift`: $\|U_2(t) - U_2(0)\|_F / \|W_1(0)\|_F$; exactly zero in exact arithmetic
      ($X\Phi_2 = 0$), for the flow and for gradient descent. The gram method does not
      integrate $U_2$ and reports exactly 0.
    - `product_min_singular_value`: $\sigma_{\min}(U_1V^\top)$, the singular value that enters
      v2 Proposition 1's rate bound at time $t$ (docs/theory.md §2(c)).
    - `error_integral`: $\int_0^t\|E(s)\|_F\,ds$, carried as an extra ODE state (exact to
      solver tolerance; a left Riemann sum $\sum_k\tau\|E_k\|$ for gradient descent), for
      the a-posteriori distance bound of docs/theory.md §2(f).
    - `networks`: $(W_1, W_2)$ at each time if `SaveAt(networks=True)`, else `None`.
    - `final_network`: the network where the run ended (for the gram method, rebuilt from the
      reduced state when it started from a `LinearNetwork`; `None` when it started from a
      `flowlin.GramInit` or with `flowlin.Gram(reconstruct=False)`).
    - `final_time`: the time the run ended ($t_1$, or the time the excess loss crossed
      `stop_at_loss`).
    - `final_values`: dict of the requested diagnostics at `final_time`.
    - `event_time` (property): `final_time` where the run stopped at `stop_at_loss`, else
      `inf`; differentiable (see `docs/gradients.md`).
    - `result`: a `flowlin.RESULTS` status; `num_steps`: accepted solver steps (flow) or
      iterations (descent).
    - `iterations`: for gradient descent, the iteration index of each save; else `None`.
    - `method`: `"full"`, `"gram"` or `"descent"`.
    """

    ts: Float[Array, "*batch times"]
    loss: Float[Array, "*batch times"] | None
    excess_loss: Float[Array, "*batch times"] | None
    rate: Float[Array, "*batch times"] | None
    imbalance_drift: Float[Array, "*batch times"] | None
    distance_to_min_norm: Float[Array, "*batch times"] | None
    u2_drift: Float[Array, "*batch times"] | None
    product_min_singular_value: Float[Array, "*batch times"] | None
    error_integral: Float[Array, "*batch times"] | None
    networks: LinearNetwork | None
    final_network: LinearNetwork | None
    final_time: Float[Array, "*batch"]
    final_values: dict[str, Float[Array, "*batch"]]
    result: RESULTS
    num_steps: Int[Array, "*batch"]
    iterations: Int[Array, "*batch times"] | None
    method: str = eqx.field(static=True)

    @property
    def succeeded(self) -> Bool[Array, "*batch"]:
        """Ran to `t1`/all steps or stopped at the loss threshold, with finite final values."""
        ok = (self.result == RESULTS.successful) | (self.result == RESULTS.event_occurred)
        finite = jnp.all(
            jnp.stack(
                [jnp.isfinite(v) for k, v in self.final_values.items() if k != "rate"]
                or [jnp.isfinite(self.final_time)]
            ),
            axis=0,
        )
        return ok & finite

    @property
    def event_time(self) -> Float[Array, "*batch"]:
        """The time the excess loss crossed `stop_at_loss` (`inf` where it did not).

        Differentiable (implicit function theorem on the event condition): `jax.grad` of it
        with respect to the initialization, the data, or the threshold is the sensitivity of
        the time to reach that loss. See `docs/gradients.md`.
        """
        return jnp.where(self.reached_threshold, self.final_time, jnp.inf)

    @property
    def reached_threshold(self) -> Bool[Array, "*batch"]:
        """Whether the run stopped because the excess loss fell below `stop_at_loss`."""
        return self.result == RESULTS.event_occurred


def make_trajectory(ts, diagnostics: dict, **fields) -> Trajectory:
    """Build a `Trajectory` from a dict of saved diagnostics (missing ones become `None`)."""
    from ._saveat import DIAGNOSTICS

    return Trajectory(ts=ts, **{k: diagnostics.get(k) for k in DIAGNOSTICS}, **fields)
