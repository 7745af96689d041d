"""diffrax's argument checks, compiled without host callbacks inside flowlin's solves
(internal API).

`diffrax.diffeqsolve` checks its traced arguments with `equinox.internal.error_if`: `saveat.ts`
increasing and inside `[t0, t1]`, and the sign of `dt0`. In equinox's default error mode each
check compiles to a host callback, and JAX never writes a program that holds a callback to its
persistent compilation cache: no flowlin solve could be cached, and every process compiled
every solve again.

flowlin covers exactly those three checks itself: with named errors before the solve when the
arguments are concrete, and inside the compiled solve when they are traced
(`integrate.valid_arguments`: such a run, and only that run of a `vmap` batch, ends with the
status `RESULTS.invalid_arguments` and NaN numbers, never with garbage). So while flowlin
traces its solve (`diffrax_checks_without_callbacks()`), those three checks of diffrax's are
compiled out (equinox's `"off"` mode, per call). Everything else is left alone:

- Only these three checks, recognised by their messages: any other check (a `StepTo`
  controller's, an event's) keeps equinox's mode and its error.
- Only in the thread (the `contextvars` context) that traces flowlin's solve: `error_if` is
  replaced once, the first time a solve is traced, by a dispatcher that does exactly what the
  function it replaced does everywhere else. A user's own diffrax code, in this thread or
  another, keeps its errors.
- Only when equinox's process-wide mode is its default `"raise"`: a user who chose `"off"`,
  `"nan"` or `"breakpoint"` (`EQX_ON_ERROR`) keeps that choice.
- The per-call `on_error="off"` is a different key of equinox's trace cache from a
  default-mode check, so no check traced in the window is reused outside it.

Programs are traced once per shape, so this costs nothing at run time. Gradients through
`diffrax.BacksolveAdjoint` trace their backward solve after the window has closed: those
programs keep the callbacks (they are right, only not cacheable). Should a later diffrax
word its checks differently, or stop calling `equinox.internal.error_if`, the checks simply
stay callbacks; `tests/test_cache.py` would say so.
"""

import contextlib
import contextvars

import equinox.internal as eqxi


#: The messages (their start) of the diffrax checks that flowlin covers itself.
COVERED_CHECKS = (
    "saveat.ts must be increasing or decreasing.",
    "saveat.ts must lie between t0 and t1.",
    "Must have (t1 - t0) * dt0 >= 0",
)

_in_flowlin_solve = contextvars.ContextVar("flowlin_solve_trace", default=False)


class _Dispatcher:
    """`equinox.internal.error_if`, but a covered check inside flowlin's solve trace gets
    `on_error="off"`; everything else goes to the function it replaced, unchanged."""

    def __init__(self, previous):
        self.previous = previous

    def __call__(self, x, pred, msg, *args, **kwargs):
        if (
            _in_flowlin_solve.get()
            and not args
            and kwargs.get("on_error", "default") == "default"
            and isinstance(msg, str)
            and msg.startswith(COVERED_CHECKS)
            and _equinox_mode() == "raise"
        ):
            kwargs["on_error"] = "off"
        return self.previous(x, pred, msg, *args, **kwargs)


def _equinox_mode() -> str:
    from equinox import _errors  # the process-wide mode has no public getter

    return getattr(_errors, "EQX_ON_ERROR", "raise")


def _install() -> None:
    if not isinstance(eqxi.error_if, _Dispatcher):
        eqxi.error_if = _Dispatcher(eqxi.error_if)


@contextlib.contextmanager
def diffrax_checks_without_callbacks():
    """Within the block (flowlin traces a solve in it), diffrax's three argument checks that
    flowlin covers compile without callbacks, in this context only (module docstring)."""
    _install()
    token = _in_flowlin_solve.set(True)
    try:
        yield
    finally:
        _in_flowlin_solve.reset(token)
