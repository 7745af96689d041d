"""The one solve routine every flow method runs through: diffeqsolve, the `stop_at_loss`
event, save times, status and the `Trajectory` (internal API)."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from .._misc import full_precision
from .._problem import Problem
from .._results import RESULTS, converged_by, rose
from .._saveat import SaveAt, diffrax_saveat, split_solution
from .._trajectory import Trajectory, init_fingerprint, make_trajectory
from ._base import AbstractFlowMethod
from ._checks import diffrax_checks_without_callbacks


def event_tolerance(problem: Problem, threshold) -> Float[Array, ""]:
    r"""Tolerance (in $\log(L - L^\star)$ and in $t$) of the root find that locates
    `stop_at_loss`.

    The event function $\log(L - L^\star) - \log(\text{threshold})$ is computed from
    $E = \tilde Y - \Sigma^{1/2}U_1V^\top$, which loses digits to cancellation as $E$ shrinks:
    at the crossing, $\|E\|_F = \sqrt{2\,\text{threshold}}$, it is known only to about
    $\epsilon(1 + \|\tilde Y\|_F/\|E\|_F)$. Asking for less makes the root find fail (a fixed
    $100\epsilon$ did, for thresholds below ~1e-4); this asks for 100 times that.
    """
    eps = jnp.finfo(problem.dtype).eps
    scale = jnp.sqrt(jnp.sum(problem.Y_tilde**2)) / jnp.sqrt(2 * threshold)
    return 100 * eps * (1 + scale)


class _Field(eqx.Module):
    r"""The ODE of a method, with $\int_0^t\|E\|_F$ carried as an extra component when asked
    (docs/theory.md §2(f)'s a-posteriori exponent). The state is `(y, integral-or-None)`."""

    method: AbstractFlowMethod
    integrate_error: bool = eqx.field(static=True)

    @full_precision  # also when traced after the solve: BacksolveAdjoint's backward pass
    def __call__(self, t, state, system):
        dy, E = self.method.vector_field(system, state[0])
        if not self.integrate_error:
            return dy, None
        return dy, jnp.sqrt(jnp.sum(E**2))


class _Event(eqx.Module):
    """Event function: log(L - L*) - log(threshold), crossing zero downward at the stop."""

    method: AbstractFlowMethod
    log_threshold: Float[Array, ""]

    @full_precision
    def __call__(self, t, y, args, **kwargs):
        # diffrax passes these by keyword: `y` is the state (y, integral), `args` the system.
        excess = 0.5 * jnp.sum(self.method.error(args, y[0]) ** 2)
        tiny = jnp.finfo(excess.dtype).tiny
        return jnp.log(jnp.maximum(excess, tiny)) - self.log_threshold


#: Explicit Runge-Kutta steps are stable up to about this many times 1/(fastest rate) (Tsit5's
#: stability interval on the negative real axis is ~3.5).
_STABLE_STEP_TIMES_RATE = 3.0
#: A flow is stiff (for the status) when explicit stability alone needs more than this many
#: steps to reach t1 (flowlin's default step budget), and more than half of `max_steps`: a
#: small step budget is not stiffness.
_STIFF_STEPS = 100_000
#: The excess loss a run cannot resolve below, in units of (max(rtol, eps)·‖Ỹ‖_F)²: a run
#: that ends there converged as far as its arithmetic can tell.
_CONVERGED_FLOOR = 100.0


def fastest_rate(Q0: Float[Array, "k k"], problem: Problem) -> Float[Array, ""]:
    r"""The flow's fastest rate at $t = 0$, the loss Hessian's largest eigenvalue, estimated
    as $\lambda_1(\Sigma)\sigma_1(V)^2 + \sigma_1(\Sigma^{1/2}U_1)^2
    = \lambda_1(\Sigma)\lambda_{\max}(Q_{22}) + \lambda_{\max}(Q_{11})$ (internal API; for
    the status only, so not differentiated)."""
    r = problem.rank
    Q0 = jax.lax.stop_gradient(Q0)
    top = jnp.linalg.eigvalsh(Q0[:r, :r])[-1]
    bottom = jnp.linalg.eigvalsh(Q0[r:, r:])[-1]
    return jnp.max(problem.sigma) * bottom + top


def initial_step(field, state0, system, t1, controller, solver, terms) -> Float[Array, ""]:
    """The first step of an adaptive solve, from the vector field's scale (Hairer, Nørsett &
    Wanner, *Solving ODEs I*, §II.4), as diffrax's `PIDController` would choose it.

    diffrax 0.7.2 runs this heuristic only when the terms are an `ODETerm`, but `diffeqsolve`
    wraps them first, so with `dt0=None` every solve starts at dt = 0.01. For a large
    initialization (entries ~30) that first step overflows, the error estimate is NaN, the
    controller's step factor becomes NaN, and the solve never leaves t = 0 whatever
    `max_steps`. Returns `None` for a controller without `rtol`/`atol`/`norm`.
    """
    if not isinstance(controller, dfx.PIDController):
        return None
    rtol, atol, norm = controller.rtol, controller.atol, controller.norm
    order = solver.error_order(terms) or solver.order(terms) or 1
    tmap = jax.tree_util.tree_map
    scale = tmap(lambda y: atol + rtol * jnp.abs(y), state0)
    f0 = field(0.0, state0, system)
    d0 = norm(tmap(jnp.divide, state0, scale))
    d1 = norm(tmap(jnp.divide, f0, scale))
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = jnp.where(small, 1e-6, 0.01 * d0 / jnp.where(small, 1.0, d1))
    f1 = field(h0, tmap(lambda y, f: y + h0 * f, state0, f0), system)
    d2 = norm(tmap(lambda a, b, c: (a - b) / c, f1, f0, scale)) / h0
    max_d = jnp.maximum(d1, d2)
    h1 = jnp.where(
        max_d <= 1e-15,
        jnp.maximum(1e-6, h0 * 1e-3),
        (0.01 / jnp.where(max_d <= 1e-15, 1.0, max_d)) ** (1 / order),
    )
    dt0 = jnp.minimum(jnp.minimum(100 * h0, h1), t1)
    # Non-finite only for a non-finite init (reported by the solve itself).
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(dt0) & (dt0 > 0), dt0, 0.01))


def valid_arguments(t1, ts, dt0) -> Array:
    """Whether `t1`, the save times and `dt0` are what diffrax's argument checks demand
    (`_checks.COVERED_CHECKS`): `t1` finite and > 0, the save times finite, non-decreasing
    and in `[0, t1]`, `dt0` finite and > 0. Traced, so that it also holds for arguments
    `flowlin.gradient_flow` could not check before the solve (under `jit`/`vmap`/`grad`)."""
    ok = jnp.isfinite(t1) & (t1 > 0)
    ok = ok & jnp.all(jnp.isfinite(ts)) & (ts[0] >= 0) & (ts[-1] <= t1)
    ok = ok & jnp.all(ts[1:] >= ts[:-1])
    if dt0 is not None:
        ok = ok & jnp.isfinite(dt0) & (dt0 > 0)
    return ok


def _status(
    sol_result, finite, excess0, excess_f, steps_needed, max_steps, tol_floor, valid, scale
):
    """The run's `RESULTS`: diffrax's, made specific: `diverged`, `not_converged` (reached t1
    with the excess loss above `CONVERGED_FRACTION` of its start and above what the arithmetic
    resolves), `stiff` (the step budget ran out where stability alone needs more steps than
    the budget and than `_STIFF_STEPS`), `invalid_arguments` (`valid_arguments` false)."""
    result = RESULTS.where(finite, RESULTS.promote(sol_result), RESULTS.diverged)
    converged = converged_by(excess0, excess_f, tol_floor, scale)
    result = RESULTS.where(
        (result == RESULTS.successful) & ~converged, RESULTS.not_converged, result
    )
    # The flow never raises the loss: a fixed step that blew up has no usable numbers.
    grew = rose(excess0, excess_f, tol_floor)
    result = RESULTS.where((result == RESULTS.not_converged) & grew, RESULTS.diverged, result)
    budget = jnp.inf if max_steps is None else 0.5 * max_steps  # None: no step budget
    stiff = (steps_needed > budget) & (steps_needed > _STIFF_STEPS)
    result = RESULTS.where((result == RESULTS.max_steps_reached) & stiff, RESULTS.stiff, result)
    return RESULTS.where(valid, result, RESULTS.invalid_arguments)


def _tolerances(controller, dtype):
    if isinstance(controller, dfx.PIDController):
        return jnp.asarray(controller.rtol, dtype), jnp.asarray(controller.atol, dtype)
    return None, None


def _along_times(mask, x):
    """`mask` (times,) shaped to broadcast against `x` (times, ...)."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def _size_and_norm2(y):
    leaves = jax.tree.leaves(y)
    return sum(x.size for x in leaves), sum(jnp.sum(x**2) for x in leaves)


@eqx.filter_jit
def integrate(
    method: AbstractFlowMethod,
    init,
    problem: Problem,
    t1,
    ts,
    threshold,
    *,
    saveat: SaveAt,
    solver: dfx.AbstractSolver,
    controller: dfx.AbstractStepSizeController,
    adjoint: dfx.AbstractAdjoint,
    max_steps: int,
    dt0,
    event_tol,
    return_state: bool = False,
) -> Trajectory | tuple[Trajectory, Array]:
    """Integrate `method`'s flow from `init` to `t1` and package the `Trajectory` (and, with
    `return_state`, the final state as well).

    Arguments are validated and normalized by `flowlin.gradient_flow`.
    """
    names, networks = saveat.diagnostics, saveat.networks
    integrate_error = "error_integral" in names
    y0, system = method.start(init, problem)
    dtype = ts.dtype
    # A last save time above t1 by round-off, which gradient_flow accepts (0.1 * 3 > 0.3), is
    # t1 itself: diffrax accepts none above t1. (Farther above, a traced one stays invalid.)
    ts = jnp.where((ts > t1) & (ts <= t1 * (1 + 1e-12)), t1, ts)

    def save_fn(t, state, system):
        return method.snapshot(system, state[0], state[1], names, networks)

    # BacksolveAdjoint accepts only a plain SaveAt of the state (no subs, no fn): then the
    # state itself is saved and the snapshots are taken after the solve.
    backsolve = isinstance(adjoint, dfx.BacksolveAdjoint)
    dfx_saveat = diffrax_saveat(ts, adjoint, save_fn)
    Q0 = method.initial_gram(system, init, problem).astype(dtype)
    event = None
    if threshold is not None:
        # E = Ỹ - Σ^½U1Vᵀ cancels against the product, whose size is ≤ tr(Q0)/2 at t = 0:
        # for large weights that, not ‖Ỹ‖, sets how well the event function is known.
        eps = jnp.finfo(dtype).eps
        event_tol = jnp.maximum(event_tol, 100 * eps * jnp.trace(Q0) / jnp.sqrt(2 * threshold))
        event = dfx.Event(
            _Event(method, jnp.log(threshold)),
            root_finder=optx.Newton(rtol=event_tol, atol=event_tol),
            direction=False,
        )
    state0 = (y0, jnp.zeros((), dtype) if integrate_error else None)
    field = _Field(method, integrate_error)
    terms = dfx.ODETerm(field)
    if dt0 is None:
        dt0 = initial_step(field, state0, system, t1, controller, solver, terms)
    # diffrax's checks of these arguments are compiled out (no host callbacks: the program
    # can be cached on disk); flowlin's own check, traced, gives the run its status instead.
    valid = valid_arguments(t1, ts, dt0)
    with diffrax_checks_without_callbacks():
        sol = dfx.diffeqsolve(
            terms,
            solver,
            t0=jnp.zeros((), dtype),
            t1=t1,
            dt0=dt0,
            y0=state0,
            args=system,
            saveat=dfx_saveat,
            stepsize_controller=controller,
            adjoint=adjoint,
            max_steps=max_steps,
            event=event,
            throw=False,
        )
    # A run whose arguments were invalid (traced, so not refused before) has NaN numbers.
    solution = split_solution(sol, adjoint)
    solution = jax.tree.map(lambda x: jnp.where(valid, x, jnp.nan), solution)
    save_ts, final_time, saved, (y_f, integral_f) = solution
    if backsolve:
        saved = jax.vmap(lambda state: save_fn(None, state, system))(saved)
    diag, nets = method.unpack(system, saved, names, networks)
    # Saves after an early stop are inf in `ts` (diffrax's fill); so are their diagnostics
    # and networks.
    was_saved = jnp.isfinite(save_ts)
    # (A diagnostic may carry a trailing axis: a deep run's per-layer balancedness drift.)
    diag = {key: jnp.where(_along_times(was_saved, v), v, jnp.inf) for key, v in diag.items()}
    if nets is not None:
        nets = jax.tree_util.tree_map(
            lambda x: jnp.where(was_saved[:, None, None], x, jnp.inf), nets
        )
    diag, nets = jax.tree.map(lambda x: jnp.where(valid, x, jnp.nan), (diag, nets))
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(y_f)]))
    fingerprint = init_fingerprint(Q0, problem)
    rtol, atol = _tolerances(controller, dtype)
    eps = jnp.finfo(dtype).eps
    resolution = eps if rtol is None else jnp.maximum(rtol, eps)
    floor = 0.5 * (_CONVERGED_FLOOR * resolution * jnp.sqrt(jnp.sum(problem.Y_tilde**2))) ** 2
    excess_f = 0.5 * jnp.sum(method.error(system, y_f) ** 2)
    # Stability limits an explicit solver's step; an implicit one that ran out of steps is not
    # `stiff` (whose message says to use an implicit solver), just out of steps.
    steps_needed = t1 * fastest_rate(Q0, problem) / _STABLE_STEP_TIMES_RATE
    if isinstance(solver, dfx.AbstractImplicitSolver):
        steps_needed = jnp.zeros_like(steps_needed)
    scale = 0.5 * jnp.sum(problem.Y_tilde**2)
    result = _status(
        sol.result, finite, fingerprint[-2], excess_f, steps_needed, max_steps, floor, valid,
        scale,
    )  # fmt: skip
    size, norm2_0 = _size_and_norm2(y0)
    state_norm = jnp.sqrt(jnp.maximum(norm2_0, _size_and_norm2(y_f)[1]))
    state_tolerance = None
    if rtol is not None:
        state_tolerance = rtol * state_norm + atol * jnp.sqrt(jnp.asarray(size, dtype))
    traj = make_trajectory(
        save_ts,
        diag,
        networks=nets,
        final_network=method.final_network(system, y_f),
        final_output_gram=method.output_gram(system, y_f),
        final_time=final_time,
        final_values=method.diagnostics(system, y_f, integral_f, names),
        result=result,
        num_steps=sol.stats["num_steps"],
        iterations=None,
        method=method.name,
        init_fingerprint=fingerprint,
        solver_rtol=rtol,
        solver_atol=atol,
        state_norm=state_norm,
        state_tolerance=state_tolerance,
    )
    return (traj, y_f) if return_state else traj
