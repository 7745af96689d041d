"""diffrax's argument checks, compiled without host callbacks inside flowlin's solves
(internal API).

`diffrax.diffeqsolve` checks its traced arguments (`saveat.ts` increasing and inside
`[t0, t1]`, the sign of `dt0`; a step-size controller's `ts`) with `equinox.internal.error_if`.
In equinox's default error mode each check compiles to a host callback, and JAX never writes
a program that holds a callback to its persistent compilation cache: no flowlin solve could be
cached, and every process compiled every solve again.

flowlin validates those arguments itself, with named errors, before any solve
(`flowlin.gradient_flow`, `flowlin.sweep`), so inside its own solves the checks can only
repeat what is already known. `diffrax_checks_without_callbacks` makes them compile to a
select in equinox's `"nan"` mode instead (were one ever to fail, the solve's outputs would be
NaN, not an exception), while flowlin traces its solve, and only then:

- equinox's process-wide error mode (`EQX_ON_ERROR`) is left alone, so a user's own equinox
  and diffrax code keeps its errors;
- the checks traced in the window ask for `on_error="nan"` per call, a different key of
  equinox's trace cache than a default-mode check, so no traced check leaks out of the window.

Programs are traced once per shape, so the window costs nothing at run time. Should a later
diffrax stop calling `equinox.internal.error_if`, the checks simply stay callbacks (the
solves are right, only not cacheable); `tests/test_cache.py` would say so.
"""

import contextlib
import threading

import equinox as eqx
import equinox.internal as eqxi


_lock = threading.RLock()
_depth = 0
_default_error_if = eqxi.error_if


def _error_if_as_nan(x, pred, msg, *, on_error="default"):
    return eqx.error_if(x, pred, msg, on_error="nan" if on_error == "default" else on_error)


@contextlib.contextmanager
def diffrax_checks_without_callbacks():
    """While this is open (flowlin traces a solve in it), `equinox.internal.error_if`, which
    diffrax's argument checks call, compiles its checks in the `"nan"` mode (module
    docstring). Re-entrant; other threads wait while one traces inside it."""
    global _depth
    with _lock:
        _depth += 1
        if _depth == 1:
            eqxi.error_if = _error_if_as_nan
        try:
            yield
        finally:
            _depth -= 1
            if _depth == 0:
                eqxi.error_if = _default_error_if
