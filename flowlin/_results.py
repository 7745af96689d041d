"""Status codes of a solve (diffrax's, plus the ones gradient descent can end with)."""

import diffrax as dfx


class RESULTS(dfx.RESULTS):  # pyright: ignore[reportGeneralTypeIssues]
    """Why a `gradient_flow` / `gradient_descent` run ended.

    Extends `diffrax.RESULTS` (`successful`: reached `t1` or ran all steps;
    `event_occurred`: the excess loss fell below `stop_at_loss`; `max_steps_reached`, ...).
    A run that did not succeed is reported, never raised, so one bad configuration cannot crash
    a sweep; `Trajectory.succeeded` says whether the numbers are usable.
    """

    diverged = "The iterates became non-finite (NaN or inf): the step size is too large."


def status_names() -> dict[int, str]:
    """Integer status code → name (`"successful"`, `"event_occurred"`, ...), for stored results."""
    return {int(item._value): name for name, item in RESULTS._name_to_item.items()}
