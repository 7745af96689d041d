"""Input validation with messages that name the call and the argument.

Errors follow lineax's style: ``"`Problem(X=...)`: X must be 2-D, got shape (3,)"``.
Checks on *values* (finiteness, rank) only run on concrete arrays: under `jit`/`vmap`
the inputs are tracers and the check is skipped (shape checks always run).
"""

import inspect
import os
import weakref

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when `x` holds actual values (not a tracer inside `jit`/`vmap`/`grad`)."""
    return not isinstance(x, jax.core.Tracer)


class _Elided:
    def __repr__(self):
        return "..."


_SIGNATURES: "weakref.WeakKeyDictionary[type, inspect.Signature]" = weakref.WeakKeyDictionary()


def _init_signature(cls) -> inspect.Signature:
    """`cls.__init__`'s signature without `self`, its annotations, or long defaults (for
    messages); kept while the class lives."""
    if cls in _SIGNATURES:
        return _SIGNATURES[cls]
    params = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        p = p.replace(annotation=inspect.Parameter.empty)
        if p.default is not inspect.Parameter.empty and len(repr(p.default)) > 24:
            p = p.replace(default=_Elided())
        params.append(p)
    _SIGNATURES[cls] = signature = inspect.Signature(params)
    return signature


class NamedArguments(type(eqx.Module)):
    """The metaclass of flowlin's public modules (`Problem`, `LinearNetwork`, `Gram`, ...):
    a call with an argument the class does not take, or without one it needs, is refused by
    name here, in flowlin, and not from inside equinox's metaclass, whose frames would
    otherwise end the traceback: "`flowlin.Gram(...)`: got an unexpected keyword argument
    'refine'; it takes (reconstruct=None)"."""

    def __call__(cls, *args, **kwargs):
        signature = _init_signature(cls)
        params = signature.parameters
        varkw = any(p.kind is p.VAR_KEYWORD for p in params.values())
        unknown = [] if varkw else [k for k in kwargs if k not in params]
        try:
            if unknown:  # named first: `bind` would first report a missing argument
                raise TypeError(f"got an unexpected keyword argument {unknown[0]!r}")
            signature.bind(*args, **kwargs)
        except TypeError as e:
            takes = f"it takes {signature}" if params else "it takes no arguments"
            ours = cls.__module__.split(".")[0] == "flowlin"  # else a user's subclass
            name = f"flowlin.{cls.__name__}" if ours else cls.__qualname__
            raise TypeError(f"`{name}(...)`: {e}; {takes}") from None
        return super().__call__(*args, **kwargs)


#: The float dtypes flowlin computes in. Half precision (float16, bfloat16) cannot resolve the
#: SVD of the data or the solver's default tolerances, and LAPACK has no kernels for it.
FLOAT_DTYPES = (np.dtype("float32"), np.dtype("float64"))


def as_float_array(call: str, name: str, x, *, dtype=None) -> jax.Array:
    """Convert `x` to a floating JAX array, with a clear error for non-numeric input.

    Integer arrays become the default float; complex, boolean and half-precision arrays are
    refused (a complex part would be dropped silently; a mask is not data).
    """
    if isinstance(x, jax.core.Tracer):
        arr = x
    else:
        try:
            arr = jnp.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"`{call}`: {name} must be an array of numbers, got {type(x)}") from e
    check_real_dtype(call, name, arr.dtype)
    if dtype is not None:
        arr = arr.astype(dtype)
    elif not jnp.issubdtype(arr.dtype, jnp.floating):
        arr = arr.astype(jnp.result_type(float))
    return arr


def check_real_dtype(call: str, name: str, dtype) -> None:
    """Refuse complex, boolean and half-precision arrays (integers are accepted: made float)."""
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"`{call}`: {name} must be real, got dtype {dtype.name} (flowlin would drop the "
            f"imaginary part); pass {name}.real if that is what you mean"
        )
    if dtype == np.dtype(bool):
        raise TypeError(f"`{call}`: {name} must be an array of numbers, got dtype bool")
    if jnp.issubdtype(dtype, jnp.floating) and dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"`{call}`: {name} has dtype {dtype.name}; flowlin computes in float32 or float64 "
            f"(no SVD or ODE solve in half precision): pass {name}.astype('float32') or "
            f"'float64'"
        )


def float_dtype(call: str, dtype):
    """The dtype argument of an initializer or generator: JAX's default float when `None`,
    else float32 or float64."""
    if dtype is None:
        return jnp.result_type(float)
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"`{call}`: dtype must be a NumPy/JAX float dtype, got {dtype!r}") from e
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"`{call}`: dtype must be float32 or float64, got {dt.name}")
    return jnp.dtype(dt)


def check_key(call: str, name: str, key) -> None:
    """A `jax.random` key: a typed key array, or a legacy uint32[2] from `jax.random.PRNGKey`."""
    if isinstance(key, jax.core.Tracer):
        return
    typed = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32
    if (typed and key.ndim == 0) or (raw and key.shape == (2,)):
        return
    if typed or (raw and key.shape[-1:] == (2,)):
        raise ValueError(
            f"`{call}`: {name} must be a single jax.random key, got a batch of keys of shape "
            f"{key.shape if typed else key.shape[:-1]}; use jax.vmap over the batch"
        )
    raise TypeError(
        f"`{call}`: {name} must be a jax.random key (jax.random.key(seed)), got "
        f"{type(key).__name__} {key!r}"[:300]
    )


def check_bool(call: str, name: str, x) -> bool:
    """A Python (or NumPy) bool, not a truthy string or number."""
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(
            f"`{call}`: {name} must be a bool (True or False), got {type(x).__name__} {x!r}"
        )
    return bool(x)


def check_number(call: str, name: str, x, *, scalar: bool = True) -> None:
    """A real number (or, with `scalar=False`, an array of them): not a string, bool or complex
    value, and a scalar where one is expected (shapes are checked on tracers too)."""
    if isinstance(x, (str, bytes, bool, np.bool_)) or x is None:
        raise TypeError(f"`{call}`: {name} must be a real number, got {type(x).__name__} {x!r}")
    try:
        dtype = np.asarray(x).dtype if isinstance(x, (list, tuple)) else jnp.result_type(x)
    except (TypeError, ValueError) as e:
        raise TypeError(f"`{call}`: {name} must be a real number, got {type(x).__name__}") from e
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
        raise TypeError(f"`{call}`: {name} must be a real number, got dtype {dtype}")
    if scalar and jnp.ndim(x) != 0:
        raise ValueError(
            f"`{call}`: {name} must be a scalar, got an array of shape {tuple(jnp.shape(x))}"
        )


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


def check_positive(
    call: str, name: str, x, *, allow_zero: bool = False, scalar: bool = False
) -> None:
    """Raise if `x` is not a real number (`check_number`), or, when concrete, is not (strictly)
    positive or not finite."""
    check_number(call, name, x, scalar=scalar)
    if is_concrete(x):
        a = np.asarray(x, dtype=float)
        ok = np.all(a >= 0) if allow_zero else np.all(a > 0)
        if not (ok and np.all(np.isfinite(a))):
            rel = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"`{call}`: {name} must be finite and {rel}, got {x!r}")


def check_not_negative(call: str, name: str, x) -> None:
    """Real numbers, none negative when concrete: a norm, an integral, a singular value or a
    time read off a trajectory, where `inf` (saves after `stop_at_loss`) and NaN (a failed
    run) pass through as such."""
    check_number(call, name, x, scalar=False)
    if is_concrete(x) and np.any(np.asarray(x, dtype=float) < 0):
        raise ValueError(f"`{call}`: {name} must be >= 0, got {x!r}")


def check_tolerances(call: str, rtol, atol) -> None:
    """The step-size controller's `rtol`/`atol` (each may be `None`: the dtype's default):
    finite, >= 0 and not both zero. A negative or NaN tolerance makes diffrax's error ratio
    meaningless (`rtol=-1` acts as `rtol=1`) instead of failing."""
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if tol is not None:
            check_positive(call, name, tol, allow_zero=True, scalar=True)
    both = rtol is not None and atol is not None and is_concrete(rtol) and is_concrete(atol)
    if both and float(rtol) == 0 and float(atol) == 0:
        raise ValueError(f"`{call}`: rtol and atol cannot both be 0 (no step would be accepted)")


def check_count(call: str, name: str, x, *, minimum: int = 0) -> None:
    """An integer count that may be traced (e.g. a number of steps): a Python/NumPy int or a
    0-d integer array; on concrete values, `>= minimum`. A float is refused, not truncated."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"`{call}`: {name} must be an integer, got {x!r}")
    try:
        dtype = jnp.result_type(x)
    except TypeError as e:
        raise TypeError(f"`{call}`: {name} must be an integer, got {type(x).__name__}") from e
    if jnp.ndim(x) != 0 or not jnp.issubdtype(dtype, jnp.integer):
        raise ValueError(
            f"`{call}`: {name} must be a non-negative integer, got {x!r}"
            if minimum == 0
            else f"`{call}`: {name} must be an integer >= {minimum}, got {x!r}"
        )
    if is_concrete(x) and int(x) < minimum:
        rel = "a non-negative integer" if minimum == 0 else f"an integer >= {minimum}"
        raise ValueError(f"`{call}`: {name} must be {rel}, got {x!r}")


def check_int(call: str, name: str, x, *, minimum: int) -> int:
    """Validate a static Python integer (a shape), returning it as `int`."""
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"`{call}`: {name} must be a Python int, got {type(x).__name__} {x!r}")
    if x < minimum:
        raise ValueError(f"`{call}`: {name} must be >= {minimum}, got {x}")
    return int(x)


def _memory_limit() -> tuple[int, str] | None:
    """(bytes, what) of the memory new arrays go to: the default device's own limit where it
    reports one (GPUs), else the host's physical memory; `None` where neither is known."""
    device = jax.config.jax_default_device or jax.devices()[0]
    if isinstance(device, str):  # a platform name
        device = jax.devices(device)[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # a backend without memory statistics
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"]), f"{device.platform.upper()} {device.id}'s memory"
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's memory"
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(call: str, what: str, elements: int, dtype) -> None:
    """Refuse arrays that cannot fit in the memory they would be made in: the allocation would
    fail inside XLA, on a CPU by aborting the whole Python process."""
    nbytes = int(elements) * jnp.dtype(dtype).itemsize
    limit = _memory_limit()
    if limit is not None and nbytes > limit[0]:
        raise ValueError(
            f"`{call}`: {what} would take {nbytes / 2**30:.3g} GiB, more than the "
            f"{limit[0] / 2**30:.3g} GiB of {limit[1]}"
        )
