"""Small internal helpers."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp


def tree_cast(tree, dtype):
    """Cast every floating array leaf of a pytree to `dtype` (no-op when already there)."""

    def cast(x):
        if eqx.is_array(x) and jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
            return x.astype(dtype)
        return x

    return jax.tree_util.tree_map(cast, tree)


def full_precision(fn):
    """Run (and trace) `fn` with every float32 matrix product at full float32 precision.

    On NVIDIA GPUs (Ampere and later) JAX's default float32 matmul runs in TF32, a 10-bit
    mantissa: relative errors ~1e-3 where float32 itself gives ~1e-7. In flowlin that would
    make the flow's right-hand side noisy (the step-size controller then rejects step after
    step: an H200 float32 sweep was 19× slower than float64 and 2% off), the problem's
    min-norm solution and every theory quantity off by ~1e-3, and a bound's verdict wrong near
    the float32 resolution floor. So every public function of flowlin that computes runs under
    `jax.default_matmul_precision("highest")`: its eager products and the programs it traces
    (`jax.jit`, `vmap`, a sweep's chunks) use full float32 products. The setting is scoped to
    the call: the user's own code keeps JAX's default outside it (a callable handed to flowlin,
    such as an optax optimizer, runs inside it). No effect in float64 or on CPUs, whose
    float32 products are full precision anyway. `tests/test_precision.py` checks that every
    float32 product flowlin makes is marked so.
    """

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision("highest"):
            return fn(*args, **kwargs)

    wrapped.full_precision = True  # type: ignore[attr-defined]
    return wrapped


def _power_of_two_unit(big):
    """The power of two at or above `big` (1 where `big` is 0 or not finite): dividing and
    multiplying by it is exact, so work done at unit scale gives the same numbers wherever
    they are representable. Held constant under differentiation (what it scales is
    homogeneous: the result does not depend on it)."""
    big = jax.lax.stop_gradient(big)
    ok = (big > 0) & jnp.isfinite(big)
    _, exponent = jnp.frexp(jnp.where(ok, big, jnp.ones_like(big)))
    return jnp.where(ok, jnp.ldexp(jnp.ones_like(big), exponent), jnp.ones_like(big))


def frobenius(A, axis=None):
    """The Frobenius norm of `A` over `axis` (every axis by default), with `A` brought to unit
    scale before squaring: a float32 entry of 1e-22 squares to 0 and one of 1e20 to inf,
    while the norm itself is representable. Zero for a zero `A`; inf/NaN entries give
    inf/NaN."""
    unit = _power_of_two_unit(jnp.max(jnp.abs(A), axis=axis, keepdims=True))
    norm = unit * jnp.sqrt(jnp.sum((A / unit) ** 2, axis=axis, keepdims=True))
    return jnp.squeeze(norm, axis=axis)


def to_unit_scale(*layers):
    """`layers` divided by one power of two near their largest entry (over the last two axes),
    and that power: products and squares of the scaled layers neither underflow nor overflow
    (float32 weights of 1e-11 have products of 1e-22, and squares of those are 0)."""
    big = jnp.max(jnp.stack([jnp.max(jnp.abs(w), axis=(-2, -1)) for w in layers]), axis=0)
    unit = _power_of_two_unit(big)
    return tuple(w / unit[..., None, None] for w in layers), unit
