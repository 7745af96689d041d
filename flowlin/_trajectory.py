"""The result of a solve."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._deep_network import DeepLinearNetwork
from ._errors import is_concrete
from ._network import LinearNetwork
from ._problem import Problem
from ._results import CONVERGED_STATUSES, RESULTS, SUCCEEDED_STATUSES, status_code, status_names


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
    - `balancedness_drift`: for a run from a `flowlin.DeepLinearNetwork` (when
      `imbalance_drift` is saved), shape `(times, L - 1)`: for each hidden layer
      $l = 1, \dots, L-1$ the absolute drift $\|C_l(t) - C_l(0)\|_F$ of its balancedness
      $C_l = W_{l+1}^\top W_{l+1} - W_lW_l^\top$, conserved by the flow (docs/theory.md §6;
      for $l = 1$ with $W_1\Phi_1$ in place of $W_1$, since $W_1\Phi_2$ never moves and its
      drift is `u2_drift`). `None` for two-layer runs. At depth, `imbalance_drift` is the
      largest per-layer drift relative to its layer's scale,
      $\max_l \|C_l(t) - C_l(0)\|_F / (\|W_{l+1}(0)\|_F^2 + \|W_l(0)\|_F^2)$ (again $W_1\Phi_1$
      for $l = 1$), which at $L = 2$ is the two-layer `imbalance_drift`; the rate is
      $2\sum_l\|\dot W_l\|_F^2/\|E\|_F^2$ and $W = W_L\cdots W_1$ in every other diagnostic.
    - `networks`: the weights at each time if `SaveAt(networks=True)` (a `LinearNetwork`, or a
      `DeepLinearNetwork`, batched over the times), else `None`.
    - `final_network`: the network where the run ended, of the init's type (for the gram
      method, rebuilt from the reduced state when it started from a `LinearNetwork`; `None`
      when it started from a `flowlin.GramInit` or with `flowlin.Gram(reconstruct=False)`).
    - `final_output_gram`: $V V^\top = W_2W_2^\top$ ($m\times m$) where the run ended, for
      every method (also from a `GramInit`): its eigenvalues $s_j^2$ set the exact law of the
      implicit-bias gap (`flowlin.theory.run_law`, docs/theory.md §2(h)). At depth, with the
      head $V = W_L\cdots W_2$ (docs/theory.md §6).
    - `final_time`: the time the run ended ($t_1$, or the time the excess loss crossed
      `stop_at_loss`).
    - `final_values`: dict of the requested diagnostics at `final_time`.
    - `event_time` (property): `final_time` where the run stopped at `stop_at_loss`, else
      `inf`; differentiable (see `docs/gradients.md`).
    - `result`: a `flowlin.RESULTS` status (`successful`: reached `t1` and converged;
      `not_converged`: reached `t1` with the excess loss above `CONVERGED_FRACTION` = 1e-3 of
      its start; `event_occurred`: stopped at `stop_at_loss`; `stiff`, `max_steps_reached`,
      `diverged`, ...; its name is `status`); `num_steps`: solver steps (flow) or iterations
      (descent).
    - `iterations`: for gradient descent, the iteration index of each save; else `None`.
    - `method`: `"full"`, `"gram"` or `"descent"`.
    - `init_fingerprint`: what the run started from, $[\mathrm{vec}(Q_0), \tfrac12\|E(0)\|_F^2,
      L^\star]$ with $Q_0 = Z_0Z_0^\top$, $Z_0 = [\Sigma^{1/2}U_1(0); V(0)]$ (see
      `init_fingerprint`; at depth $V = W_L\cdots W_2$): `flowlin.check_bounds` refuses an
      init or problem that does not match it. `None` where the producer did not record it.
    - `solver_rtol`, `solver_atol`: the step-size controller's tolerances (`None` for a
      controller without them, and for gradient descent); `flowlin.check_bounds` derives its
      default tolerances from them.
    - `state_norm`: $\max(\|y(0)\|_F, \|y(t_f)\|_F)$ of the integrated ODE state $y$ (the
      weights, or the gram method's reduced state); `state_tolerance`: the error per step the
      controller allows on it, $\text{rtol}\cdot\text{state\_norm} + \text{atol}\sqrt{N}$
      ($N$ entries): the scale against which `imbalance_conserved` measures the drift.
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
    networks: LinearNetwork | DeepLinearNetwork | None
    final_network: LinearNetwork | DeepLinearNetwork | None
    final_time: Float[Array, "*batch"]
    final_values: dict[str, Float[Array, "*batch"]]
    result: RESULTS
    num_steps: Int[Array, "*batch"]
    iterations: Int[Array, "*batch times"] | None
    method: str = eqx.field(static=True)
    init_fingerprint: Float[Array, "*batch fingerprint"] | None = None
    solver_rtol: Float[Array, "*batch"] | None = None
    solver_atol: Float[Array, "*batch"] | None = None
    state_norm: Float[Array, "*batch"] | None = None
    state_tolerance: Float[Array, "*batch"] | None = None
    final_output_gram: Float[Array, "*batch m m"] | None = None
    balancedness_drift: Float[Array, "*batch times layers"] | None = None

    @property
    def succeeded(self) -> Bool[Array, "*batch"]:
        """Ran to `t1`/all steps (converged or not) or stopped at the loss threshold, with
        finite final values: the numbers are usable."""
        ok = _is_one_of(self.result, SUCCEEDED_STATUSES)
        finite = jnp.all(
            jnp.stack(
                [jnp.isfinite(v) for k, v in self.final_values.items() if k != "rate"]
                or [jnp.isfinite(self.final_time)]
            ),
            axis=0,
        )
        return ok & finite

    @property
    def converged(self) -> Bool[Array, "*batch"]:
        """`succeeded`, and converged: reached `t1` with the excess loss at most
        `CONVERGED_FRACTION` of its start, or stopped at `stop_at_loss`."""
        return self.succeeded & _is_one_of(self.result, CONVERGED_STATUSES)

    @property
    def status(self) -> str | np.ndarray:
        """The name of `result` (`"successful"`, `"not_converged"`, `"stiff"`, ...; what
        `flowlin.RESULTS` says of each), an array of names for a batch of runs. (Printing
        `result` itself shows diffrax's message, which is empty for `successful`.)"""
        codes = status_code(self.result)
        if not is_concrete(codes):
            raise ValueError(
                "`flowlin.Trajectory.status`: the status of a traced run is only known when it "
                "has run; read it outside jax.jit/vmap (or compare result == flowlin.RESULTS.x)"
            )
        names = status_names()
        out = np.vectorize(names.__getitem__, otypes=[object])(np.asarray(codes))
        return str(out) if out.ndim == 0 else out.astype(str)

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


def _is_one_of(result: RESULTS, names: tuple[str, ...]) -> Bool[Array, "*batch"]:
    out = result == getattr(RESULTS, names[0])
    for name in names[1:]:
        out = out | (result == getattr(RESULTS, name))
    return out


def init_fingerprint(Q0: Float[Array, "k k"], problem: Problem) -> Float[Array, " fingerprint"]:
    r"""What identifies a run's start (internal API): $[\mathrm{vec}(Q_0),
    \tfrac12\|E(0)\|_F^2, L^\star]$, $E(0) = \tilde Y - (Q_0)_{12}$.

    $Q_0$ changes with the init's draw (at any scale, relative to its own size) and with the
    data's $\Phi_1$; $E(0)$ with the data's $\tilde Y$. Zero-padded hidden units change
    nothing. Cost $O(k^2)$ given $Q_0$.
    """
    r = problem.rank
    E0 = problem.Y_tilde - Q0[:r, r:]
    excess = 0.5 * jnp.sum(E0**2)
    return jnp.concatenate([Q0.ravel(), jnp.stack([excess, problem.loss_star.astype(Q0.dtype)])])


def make_trajectory(ts, diagnostics: dict, **fields) -> Trajectory:
    """Build a `Trajectory` from a dict of saved diagnostics (missing ones become `None`;
    a deep run's per-layer `balancedness_drift` may be among them)."""
    from ._saveat import DIAGNOSTICS

    return Trajectory(
        ts=ts,
        **{k: diagnostics.get(k) for k in DIAGNOSTICS},
        balancedness_drift=diagnostics.get("balancedness_drift"),
        **fields,
    )
