"""Exact gradient flow of the two-layer linear network, integrated with diffrax."""

import functools
import warnings
from collections.abc import Sequence

import diffrax as dfx
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import ScalarLike
from ._deep_network import DeepLinearNetwork
from ._errors import check_int, check_positive, check_tolerances, is_concrete
from ._gram_init import GramInit
from ._method import AbstractFlowMethod, FullWeights, Gram
from ._method._gram import solve_by_parts
from ._method._integrate import event_tolerance, integrate
from ._misc import full_precision, tree_cast
from ._network import LinearNetwork
from ._problem import Problem, check_problem, check_same_precision
from ._saveat import DEFAULT_NUM_SAVES, SaveAt
from ._trajectory import Trajectory


#: Default (rtol, atol) per dtype. float64: rtol 1e-8 leaves ~7 digits of margin over
#: round-off and meets the 1e-8-level checks against closed forms with Dopri8/Tsit5 at 1e-10.
#: float32: eps ≈ 1.2e-7, so asking for more than ~1e-6 relative accuracy is not meaningful.
DEFAULT_TOLERANCES = {
    jnp.dtype("float64"): (1e-8, 1e-10),
    jnp.dtype("float32"): (1e-5, 1e-7),
}
#: float32 cannot resolve relative changes much below its epsilon (≈1.2e-7).
_FLOAT32_RTOL_FLOOR = 1e-6
#: Solver steps before giving up (reported as `RESULTS.max_steps_reached`, not raised).
DEFAULT_MAX_STEPS = 100_000


def resolve_tolerances(dtype, rtol, atol) -> tuple[float, float]:
    """Default tolerances for `dtype`; warn when float32 cannot meet what was asked."""
    d_rtol, d_atol = DEFAULT_TOLERANCES.get(
        jnp.dtype(dtype), DEFAULT_TOLERANCES[jnp.dtype("float32")]
    )
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    low = is_concrete(rtol) and rtol < _FLOAT32_RTOL_FLOOR
    if jnp.dtype(dtype) != jnp.dtype("float64") and low:
        warnings.warn(
            f"rtol={rtol} is below what {jnp.dtype(dtype).name} can resolve "
            f"(~{_FLOAT32_RTOL_FLOOR:g}); "
            "the solve will take many steps without reaching it. Enable float64 with "
            "jax.config.update('jax_enable_x64', True) and pass float64 arrays.",
            stacklevel=3,
        )
    return rtol, atol


def resolve_save_times(call: str, saveat, t1, dtype) -> tuple[SaveAt, Float[Array, " times"]]:
    """Normalize `saveat` (None, array of times, or `SaveAt`) and return it with its times."""
    if saveat is None:
        saveat = SaveAt()
    elif not isinstance(saveat, SaveAt):
        saveat = SaveAt(ts=saveat)
    if saveat.ts is None:
        ts = jnp.linspace(0.0, 1.0, DEFAULT_NUM_SAVES, dtype=dtype) * jnp.asarray(t1, dtype)
    else:
        ts = saveat.ts.astype(dtype)
        if is_concrete(ts) and is_concrete(t1):
            ts_np, t1_np = np.asarray(ts), float(np.asarray(t1))
            if not np.all(np.isfinite(ts_np)) or ts_np[0] < 0 or ts_np[-1] > t1_np * (1 + 1e-12):
                raise ValueError(
                    f"`{call}`: saveat times must lie in [0, t1={t1_np}], got "
                    f"[{ts_np.min()}, {ts_np.max()}]"
                )
            if np.any(np.diff(ts_np) < 0):
                raise ValueError(f"`{call}`: saveat times must be non-decreasing")
    return saveat, ts


def check_solve_options(
    call, *, t1, stop_at_loss, rtol, atol, max_steps, dt0, solver, stepsize_controller, adjoint
) -> None:
    """Every option of `gradient_flow` that needs neither the network nor the problem."""
    check_positive(call, "t1", t1, scalar=True)
    if stop_at_loss is not None:
        check_positive(call, "stop_at_loss", stop_at_loss, scalar=True)
    check_tolerances(call, rtol, atol)
    if max_steps is not None:
        check_int(call, "max_steps", max_steps, minimum=1)
    if dt0 is not None:
        check_positive(call, "dt0", dt0, scalar=True)
    for name, value, kind, example in (
        ("solver", solver, dfx.AbstractSolver, "diffrax.Tsit5()"),
        ("stepsize_controller", stepsize_controller, dfx.AbstractStepSizeController,
         "diffrax.PIDController(rtol=1e-8, atol=1e-10)"),
        ("adjoint", adjoint, dfx.AbstractAdjoint, "diffrax.DirectAdjoint()"),
    ):  # fmt: skip
        if value is not None and not isinstance(value, kind):
            raise TypeError(
                f"`{call}`: {name} must be a diffrax {kind.__name__} (e.g. {example}), got "
                f"{type(value).__name__}"
            )
    terms = getattr(solver, "term_structure", dfx.AbstractTerm)
    if not (isinstance(terms, type) and issubclass(terms, dfx.AbstractTerm)):
        raise ValueError(
            f"`{call}`: solver=diffrax.{type(solver).__name__}() integrates several terms (an "
            "IMEX, split or SDE solver); the flow is one ODE term: pass an ODE solver "
            "(diffrax.Tsit5(), diffrax.Dopri8(), or implicit diffrax.Kvaerno5())"
        )
    adaptive = stepsize_controller is None or isinstance(
        stepsize_controller, dfx.AbstractAdaptiveStepSizeController
    )
    if solver is not None and adaptive and not isinstance(solver, dfx.AbstractAdaptiveSolver):
        raise ValueError(
            f"`{call}`: solver=diffrax.{type(solver).__name__}() has no error estimate, which "
            "the adaptive step-size controller needs; pass an adaptive solver (diffrax.Tsit5(), "
            "diffrax.Dopri8()) or fixed steps: stepsize_controller=diffrax.ConstantStepSize() "
            "with dt0="
        )
    if isinstance(stepsize_controller, dfx.ConstantStepSize) and dt0 is None:
        raise ValueError(
            f"`{call}`: stepsize_controller=diffrax.ConstantStepSize() needs the step: pass dt0="
        )
    if isinstance(stepsize_controller, dfx.StepTo):
        steps = stepsize_controller.ts
        if is_concrete(steps) and is_concrete(t1):
            steps, end = np.asarray(steps, dtype=float), float(np.asarray(t1))
            increasing = bool(np.all(np.diff(steps) > 0))
            if steps[0] != 0 or steps[-1] != end or not increasing:
                raise ValueError(
                    f"`{call}`: stepsize_controller=diffrax.StepTo(ts=...) must step from 0 to "
                    f"t1={end}, strictly increasing; got ts from {steps[0]} to {steps[-1]}"
                    + ("" if increasing else ", not increasing")
                )
    if stop_at_loss is not None and isinstance(adjoint, dfx.BacksolveAdjoint):
        raise ValueError(
            f"`{call}`: adjoint=diffrax.BacksolveAdjoint() cannot differentiate through the "
            "event of stop_at_loss (diffrax does not support events with it); use the default "
            "diffrax.RecursiveCheckpointAdjoint() or diffrax.DirectAdjoint()"
        )


@full_precision
def gradient_flow(
    net: LinearNetwork | DeepLinearNetwork | GramInit,
    problem: Problem,
    t1: ScalarLike,
    *,
    saveat: SaveAt | Float[ArrayLike, " times"] | Sequence[float] | None = None,
    method: AbstractFlowMethod = FullWeights(),
    solver: dfx.AbstractSolver | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = DEFAULT_MAX_STEPS,
    stop_at_loss: ScalarLike | None = None,
    dt0: ScalarLike | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    adjoint: dfx.AbstractAdjoint | None = None,
) -> Trajectory:
    r"""Integrate the gradient flow of $L = \tfrac12\|Y - XW_1^\top W_2^\top\|_F^2$ exactly.

    $$\dot W_1 = W_2^\top R^\top X,\qquad \dot W_2 = R^\top X W_1^\top,\qquad
      R = Y - XW_1^\top W_2^\top$$
    (docs/theory.md §1), from `net` at $t = 0$ to `t1`, with an adaptive diffrax solver, saving the
    diagnostics of `flowlin.Trajectory` at the requested times.

    **Arguments:**

    - `net`: the initialization, a `flowlin.LinearNetwork` with `W1` (h×D), `W2` (m×h); or,
      for `method=flowlin.Gram()` only, a `flowlin.GramInit` (its statistics $Q_0$, $K$, e.g.
      from `flowlin.init.wishart` at any width without materialising it); or, for the default
      `method=flowlin.FullWeights()` only, a `flowlin.DeepLinearNetwork` of any depth $L$,
      whose flow $\dot W_l = (W_L\cdots W_{l+1})^\top R^\top X(W_{l-1}\cdots W_1)^\top$
      (docs/theory.md §6) is integrated with the same diagnostics, computed from the
      end-to-end $W = W_L\cdots W_1$, plus each hidden layer's balancedness drift
      (`Trajectory.balancedness_drift`).
    - `problem`: the `flowlin.Problem` (X, Y).
    - `t1`: final time (may be traced).
    - `saveat`: a `flowlin.SaveAt`, or just an array of save times in `[0, t1]`. Default:
      101 equally spaced times, all diagnostics.
    - `method`: how to integrate, a `flowlin.AbstractFlowMethod`:
      `flowlin.FullWeights()` (default) integrates $(W_1, W_2)$, cost per step $O(nDh)$;
      `flowlin.Gram()` integrates the width-independent reduced system of docs/theory.md §3,
      $\dot Z_r = A(Z_rZ_r^\top)Z_r$ of size $(r+m)\times\min(h, r+m)$, cost $O((r+m)^3)$ per
      step whatever $h$. Both give the same trajectory to tolerance. A method's options are
      its fields (e.g. `flowlin.Gram(reconstruct=False)`).
    - `solver`: any diffrax ODE solver (default `diffrax.Tsit5()`; `diffrax.Dopri8()` is
      cheaper at very tight tolerances).
    - `rtol`, `atol`: step-size-controller tolerances; defaults follow the dtype (float64:
      1e-8/1e-10, float32: 1e-5/1e-7; float32 warns below ~1e-6).
    - `max_steps`: solver step budget (default `flowlin.DEFAULT_MAX_STEPS`, 100 000; `None`:
      no budget); exceeding it is reported in `Trajectory.result` (`max_steps_reached`).
    - `stop_at_loss`: stop when the excess loss $L - L^\star$ falls below this (the crossing
      time is located by a root find on the dense solution, so it is exact and
      differentiable). Saves after it are `inf`. If the initial excess loss is already below
      the threshold, no crossing occurs and the run goes to `t1`.
    - `dt0`: initial step (default: chosen automatically).
    - `stepsize_controller`: overrides the default `diffrax.PIDController(rtol, atol,
      norm=optimistix.max_norm)` (max norm: every weight meets the tolerance, and zero-padded
      units do not change the steps taken).
    - `adjoint`: how `jax.grad`/`jax.jacfwd` differentiate through the solve (see
      `docs/gradients.md`). Every choice gives the derivative of the computed trajectory
      with respect to `net` (its weights or `GramInit` statistics), `problem` (X and Y,
      through its SVD: correct only when X has distinct nonzero singular values, silently
      wrong otherwise, e.g. for whitened data), `t1` and
      `stop_at_loss`; with tolerances ~1e-12 these agree with central finite differences to
      ~1e-7 (float64).

      - `diffrax.RecursiveCheckpointAdjoint()` (default): reverse mode (`jax.grad`,
        `jax.vjp`) through the solver's own steps, exact for the discretized solution;
        memory $O(\sqrt{\text{steps}})$ states by binomial checkpointing (pass
        `checkpoints=` to trade memory for recomputation). Not forward mode.
      - `diffrax.DirectAdjoint()`: forward and reverse mode (`jax.jacfwd`, `jax.jvp`,
        `jax.hessian`); reverse mode costs more memory and compile time than the default.
      - `diffrax.ForwardMode()`: forward mode only, the cheapest for few inputs and many
        outputs (`jax.jacfwd` with respect to a handful of scales).
      - `diffrax.BacksolveAdjoint()`: the continuous adjoint, re-solving the flow backwards:
        memory $O(1)$ in the number of steps, but a gradient flow run backwards is
        exponentially unstable (it expands at the rates, up to $\lambda_1(\Sigma)\|W\|^2$,
        at which it contracts), so its gradients are only usable on short horizons. No
        gradient with respect to `t1` (JAX raises a `CustomVJPException`), no
        `stop_at_loss`. The states at the save times are kept and the diagnostics computed
        after the solve.

      The event time `Trajectory.event_time` of `stop_at_loss` is differentiable with every
      adjoint that supports events: its derivative follows from the implicit function
      theorem applied to $\log(L(t) - L^\star) = \log(\text{threshold})$.

    **Returns:** a `flowlin.Trajectory`. Non-convergence (step budget, non-finite values) is
    reported in `result`/`succeeded`, never raised.

    **Example:**

    ```python
    import jax, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    traj = flowlin.gradient_flow(net, problem, t1=20.0)
    traj.excess_loss[-1], traj.distance_to_min_norm[-1]
    ```
    """
    call = "flowlin.gradient_flow(...)"
    check_problem(call, problem)
    if not isinstance(method, AbstractFlowMethod):
        hint = ""
        if isinstance(method, str):
            hint = " (the strings 'full'/'gram' are only for sweep TOML files and the CLI)"
        raise TypeError(
            f"`{call}`: method must be a flow method object, flowlin.FullWeights() or "
            f"flowlin.Gram(), got {method!r}{hint}"
        )
    if not isinstance(net, (LinearNetwork, DeepLinearNetwork, GramInit)):
        raise TypeError(
            f"`{call}`: net must be a flowlin.LinearNetwork or flowlin.DeepLinearNetwork, or "
            f"for method=flowlin.Gram() a flowlin.GramInit, got {type(net).__name__}"
        )
    if isinstance(net, DeepLinearNetwork) and not isinstance(method, FullWeights):
        raise ValueError(
            f"`{call}`: net is a flowlin.DeepLinearNetwork (depth {net.depth}), which only "
            f"method=flowlin.FullWeights() integrates; got method={method!r} (the gram "
            "method's width reduction is for two layers, docs/theory.md §6). Drop method=, or "
            "pass method=flowlin.FullWeights()"
        )
    networks = isinstance(saveat, SaveAt) and saveat.networks
    dtype = method.check(call, net, problem, networks)
    check_same_precision(call, problem, dtype)
    check_solve_options(
        call, t1=t1, stop_at_loss=stop_at_loss, rtol=rtol, atol=atol, max_steps=max_steps,
        dt0=dt0, solver=solver, stepsize_controller=stepsize_controller, adjoint=adjoint,
    )  # fmt: skip
    rtol, atol = resolve_tolerances(dtype, rtol, atol)
    saveat, ts = resolve_save_times(call, saveat, t1, dtype)
    max_steps = None if max_steps is None else int(max_steps)  # a NumPy integer too
    solver = dfx.Tsit5() if solver is None else solver
    if stepsize_controller is None:
        # Max norm: every weight meets the tolerance, and zero-padded hidden units (whose error
        # is exactly zero) cannot dilute the error estimate, so a padded network takes exactly
        # the steps of the unpadded one (an RMS norm would loosen the control by sqrt(h_pad/h)).
        stepsize_controller = dfx.PIDController(rtol=rtol, atol=atol, norm=optx.max_norm)
    adjoint = dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    t1 = jnp.asarray(t1, dtype)
    threshold = None if stop_at_loss is None else jnp.asarray(stop_at_loss, dtype)
    net = tree_cast(net, dtype)
    problem = tree_cast(problem, dtype)
    event_tol = None if threshold is None else event_tolerance(problem, threshold)
    solve = functools.partial(
        integrate,
        method,
        problem=problem,
        t1=t1,
        ts=ts,
        threshold=threshold,
        saveat=saveat,
        solver=solver,
        controller=stepsize_controller,
        adjoint=adjoint,
        max_steps=max_steps,
        dt0=dt0,
        event_tol=event_tol,
    )
    if isinstance(method, Gram) and not networks:
        # The solve compiles once for every width h >= r + m (and for a GramInit): only the
        # factorization and the rebuilt weights read the network.
        return solve_by_parts(
            method, net, problem, saveat.diagnostics, lambda s: solve(s, return_state=True)
        )
    return solve(net)
