"""Type aliases used across flowlin (one place, as in diffrax)."""

from typing import TypeAlias

import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray


#: Something that can be turned into a floating-point JAX array.
RealLike: TypeAlias = ArrayLike | float
#: A scalar real (Python float or 0-d array).
ScalarLike: TypeAlias = float | int | np.floating | Float[ArrayLike, ""]
#: A JAX PRNG key (new-style typed or legacy uint32[2]).
KeyLike: TypeAlias = PRNGKeyArray | Int[Array, "2"]

__all__ = ["Array", "ArrayLike", "Float", "Int", "KeyLike", "RealLike", "ScalarLike"]
