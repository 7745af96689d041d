"""Small internal helpers."""

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
