"""Input validation with messages that name the call and the argument.

Errors follow lineax's style: ``"`Problem(X=...)`: X must be 2-D, got shape (3,)"``.
Checks on *values* (finiteness, rank) only run on concrete arrays: under `jit`/`vmap`
the inputs are tracers and the check is skipped (shape checks always run).
"""

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds actual values (not a tracer inside `jit`/`vmap`/`grad`)."""
    return not isinstance(x, jax.core.Tracer)


def as_float_array(call: str, name: str, x, *, dtype=None) -> jax.Array:
    """Convert `x` to a floating JAX array, with a clear error for non-numeric input."""
    if isinstance(x, jax.core.Tracer):
        arr = x
    else:
        try:
            arr = jnp.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"`{call}`: {name} must be an array of numbers, got {type(x)}") from e
    if dtype is not None:
        arr = arr.astype(dtype)
    elif not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


def check_ndim(call: str, name: str, x, ndim: int, what: str) -> None:
    if jnp.ndim(x) != ndim:
        raise ValueError(
            f"`{call}`: {name} must be {ndim}-D ({what}), got shape {tuple(jnp.shape(x))}"
        )


def check_finite(call: str, name: str, x) -> None:
    """Raise if a concrete array holds NaN or inf (skipped for tracers)."""
    if is_concrete(x):
        a = np.asarray(x)
        if not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"`{call}`: {name} contains {bad} non-finite value(s) (NaN or inf)")


def check_positive(call: str, name: str, x, *, allow_zero: bool = False) -> None:
    """Raise if a concrete scalar/array is not (strictly) positive or is not finite."""
    if is_concrete(x):
        a = np.asarray(x, dtype=float)
        ok = np.all(a >= 0) if allow_zero else np.all(a > 0)
        if not (ok and np.all(np.isfinite(a))):
            rel = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"`{call}`: {name} must be finite and {rel}, got {x!r}")


def check_int(call: str, name: str, x, *, minimum: int) -> int:
    """Validate a static Python integer (a shape), returning it as `int`."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"`{call}`: {name} must be a Python int, got {type(x).__name__} {x!r}")
    if x < minimum:
        raise ValueError(f"`{call}`: {name} must be >= {minimum}, got {x}")
    return int(x)
