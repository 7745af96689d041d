"""The one solve routine every flow method runs through: diffeqsolve, the `stop_at_loss`
event, save times, status and the `Trajectory` (internal API)."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from .._problem import Problem
from .._results import RESULTS
from .._saveat import SaveAt, diffrax_saveat, split_solution
from .._trajectory import Trajectory, make_trajectory
from ._base import AbstractFlowMethod


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

    def __call__(self, t, state, system):
        dy, E = self.method.vector_field(system, state[0])
        if not self.integrate_error:
            return dy, None
        return dy, jnp.sqrt(jnp.sum(E**2))


class _Event(eqx.Module):
    """Event function: log(L - L*) - log(threshold), crossing zero downward at the stop."""

    method: AbstractFlowMethod
    log_threshold: Float[Array, ""]

    def __call__(self, t, y, args, **kwargs):
        # diffrax passes these by keyword: `y` is the state (y, integral), `args` the system.
        excess = 0.5 * jnp.sum(self.method.error(args, y[0]) ** 2)
        tiny = jnp.finfo(excess.dtype).tiny
        return jnp.log(jnp.maximum(excess, tiny)) - self.log_threshold


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
) -> Trajectory:
    """Integrate `method`'s flow from `init` to `t1` and package the `Trajectory`.

    Arguments are validated and normalized by `flowlin.gradient_flow`.
    """
    names, networks = saveat.diagnostics, saveat.networks
    integrate_error = "error_integral" in names
    y0, system = method.start(init, problem)
    dtype = ts.dtype

    def save_fn(t, state, system):
        return method.snapshot(system, state[0], state[1], names, networks)

    # BacksolveAdjoint accepts only a plain SaveAt of the state (no subs, no fn): then the
    # state itself is saved and the snapshots are taken after the solve.
    backsolve = isinstance(adjoint, dfx.BacksolveAdjoint)
    dfx_saveat = diffrax_saveat(ts, adjoint, save_fn)
    event = None
    if threshold is not None:
        event = dfx.Event(
            _Event(method, jnp.log(threshold)),
            root_finder=optx.Newton(rtol=event_tol, atol=event_tol),
            direction=False,
        )
    state0 = (y0, jnp.zeros((), dtype) if integrate_error else None)
    sol = dfx.diffeqsolve(
        dfx.ODETerm(_Field(method, integrate_error)),
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
    save_ts, final_time, saved, (y_f, integral_f) = split_solution(sol, adjoint)
    if backsolve:
        saved = jax.vmap(lambda state: save_fn(None, state, system))(saved)
    diag, nets = method.unpack(system, saved, names, networks)
    # Saves after an early stop are inf in `ts` (diffrax's fill); so are their diagnostics
    # and networks.
    was_saved = jnp.isfinite(save_ts)
    diag = {key: jnp.where(was_saved, v, jnp.inf) for key, v in diag.items()}
    if nets is not None:
        nets = jax.tree_util.tree_map(
            lambda x: jnp.where(was_saved[:, None, None], x, jnp.inf), nets
        )
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(y_f)]))
    result = RESULTS.where(finite, RESULTS.promote(sol.result), RESULTS.diverged)
    return make_trajectory(
        save_ts,
        diag,
        networks=nets,
        final_network=method.final_network(system, y_f),
        final_time=final_time,
        final_values=method.diagnostics(system, y_f, integral_f, names),
        result=result,
        num_steps=sol.stats["num_steps"],
        iterations=None,
        method=method.name,
    )
