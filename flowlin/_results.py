"""Status codes of a solve (diffrax's, plus the ones gradient descent can end with)."""

import diffrax as dfx
import jax.numpy as jnp
from jaxtyping import Array, Int


class RESULTS(dfx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """Why a `gradient_flow` / `gradient_descent` run ended.

    Extends `diffrax.RESULTS` (`successful`: reached `t1` or ran all steps;
    `event_occurred`: the excess loss fell below `stop_at_loss`; `max_steps_reached`, ...).
    A run that did not succeed is reported, never raised, so one bad configuration cannot crash
    a sweep; `Trajectory.succeeded` says whether the numbers are usable and
    `Trajectory.converged` whether the run also converged. flowlin's own statuses:

    - `successful`: reached `t1` and converged (excess loss at most `CONVERGED_FRACTION` = 1e-3
      of its initial value);
    - `not_converged`: reached `t1` without converging (usable numbers; integrate longer);
    - `stiff`: the step budget ran out because an explicit solver's stable step is far below
      what `t1` needs (large weights); the message says what to do;
    - `diverged`: the iterates became non-finite, or the run (gradient descent, or a
      fixed-step solve) ended with its excess loss above where it started;
    - `invalid_arguments`: `t1`, the save times or `dt0` were invalid and traced (under
      `jit`/`vmap`/`grad`), so they could only be checked inside the solve (concrete ones are
      refused by name before it).
    """

    diverged = (
        "The iterates became non-finite (NaN or inf), or the excess loss ended above where it "
        "started (which the flow never does): the step size is too large (gradient descent, "
        "or a fixed-step solver)."
    )
    not_converged = (
        "Reached t1 without converging: the excess loss L - L* at t1 is above "
        "CONVERGED_FRACTION (1e-3) of its value at t = 0 (e.g. still on the plateau of a small "
        "initialization). The numbers are valid; integrate longer to see convergence."
    )
    stiff = (
        "The step budget ran out because the flow is stiff: an explicit solver's step is "
        "limited by stability to about 3/rate, rate = λ1(Σ)·σ1(V)² + σ1(Σ^½U1)² (large for "
        "large weights), so reaching t1 needs more than max_steps steps. Use stop_at_loss, a "
        "shorter t1, an implicit solver (solver=diffrax.Kvaerno5()), or more max_steps."
    )
    invalid_arguments = (
        "t1, the save times or dt0 were invalid: t1 must be finite and > 0, the save times "
        "finite, non-decreasing and in [0, t1], dt0 finite and > 0. flowlin refuses these by "
        "name before solving when they are concrete; traced (under jit, vmap or grad) they are "
        "checked in the solve, and its numbers are NaN."
    )


#: The integer code of each status in stored results (its position here). flowlin's own
#: numbering, so stored codes do not depend on how equinox numbers enumeration items; a test
#: checks that it names every item of `RESULTS` (`len(RESULTS)`).
STATUS_NAMES: tuple[str, ...] = (
    "successful",
    "max_steps_reached",
    "singular",
    "breakdown",
    "stagnation",
    "conlim",
    "nonfinite_input",
    "nonlinear_max_steps_reached",
    "nonlinear_divergence",
    "nonfinite",
    "dt_min_reached",
    "event_occurred",
    "max_steps_rejected",
    "internal_error",
    "diverged",
    "not_converged",
    "stiff",
    "invalid_arguments",
)

#: A run that reached `t1` converged when its excess loss fell to at most this fraction of its
#: value at t = 0 (three decades); otherwise its status is `RESULTS.not_converged`.
CONVERGED_FRACTION = 1e-3
#: Statuses whose numbers are usable (the run reached `t1`, or stopped at `stop_at_loss`).
SUCCEEDED_STATUSES: tuple[str, ...] = ("successful", "event_occurred", "not_converged")
#: Statuses of a run that converged (`successful` means: reached `t1` and converged).
CONVERGED_STATUSES: tuple[str, ...] = ("successful", "event_occurred")


def status_names() -> dict[int, str]:
    """Integer status code → name (`"successful"`, `"event_occurred"`, ...), for stored results."""
    return dict(enumerate(STATUS_NAMES))


def status_code(result: RESULTS) -> Int[Array, "*batch"]:
    """The integer code (see `status_names`) of a status, batched or not, traceable."""
    matches = [result == getattr(RESULTS, name) for name in STATUS_NAMES]
    codes = jnp.arange(len(STATUS_NAMES), dtype=jnp.int32)
    return jnp.select(matches, list(codes), default=jnp.int32(-1))


def rose(excess0, excess_f, floor):
    """Whether a run's excess loss ended above its start beyond round-off and `floor` (what
    the arithmetic resolves): the flow never raises it, so the steps blew up (`diverged`)."""
    return excess_f > excess0 * (1 + 1e3 * jnp.finfo(excess_f.dtype).eps) + floor


def converged_by(excess0, excess_f, floor, scale):
    """Whether a run that reached its end converged: its excess loss at most
    `CONVERGED_FRACTION` of its (finite) start, or at most `floor`, what the arithmetic
    resolves; that floor counts only up to `CONVERGED_FRACTION` of `scale` = ½‖Ỹ‖², the zero
    network's excess (a loose rtol's floor of ½(100·rtol·‖Ỹ‖)² would pass any run)."""
    floor = jnp.minimum(floor, CONVERGED_FRACTION * scale)
    return jnp.isfinite(excess0) & (
        (excess_f <= CONVERGED_FRACTION * excess0) | (excess_f <= floor)
    )
