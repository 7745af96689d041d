"""Status codes of a solve (diffrax's, plus the ones gradient descent can end with)."""

import diffrax as dfx
import jax.numpy as jnp
from jaxtyping import Array, Int


class RESULTS(dfx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """Why a `gradient_flow` / `gradient_descent` run ended.

    Extends `diffrax.RESULTS` (`successful`: reached `t1` or ran all steps;
    `event_occurred`: the excess loss fell below `stop_at_loss`; `max_steps_reached`, ...).
    A run that did not succeed is reported, never raised, so one bad configuration cannot crash
    a sweep; `Trajectory.succeeded` says whether the numbers are usable.
    """

    diverged = "The iterates became non-finite (NaN or inf): the step size is too large."


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
)


def status_names() -> dict[int, str]:
    """Integer status code → name (`"successful"`, `"event_occurred"`, ...), for stored results."""
    return dict(enumerate(STATUS_NAMES))


def status_code(result: RESULTS) -> Int[Array, "*batch"]:
    """The integer code (see `status_names`) of a status, batched or not, traceable."""
    matches = [result == getattr(RESULTS, name) for name in STATUS_NAMES]
    codes = jnp.arange(len(STATUS_NAMES), dtype=jnp.int32)
    return jnp.select(matches, list(codes), default=jnp.int32(-1))
