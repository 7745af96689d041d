"""The factorized network f(x) = W2 W1 x."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._errors import NamedArguments, as_float_array, check_finite, check_ndim
from ._misc import full_precision
from ._problem import check_problem


class LinearNetwork(eqx.Module, metaclass=NamedArguments):
    r"""A two-layer linear network $f(x) = W_2 W_1 x$.

    The paper writes $U = W_1^\top$ ($D\times h$), $V = W_2$ ($m\times h$) and
    $\Theta = UV^\top = W^\top$; flowlin keeps the layer orientation of a neural network.

    **Arguments:**

    - `W1`: first layer, shape `(h, D)` (hidden width `h`, inputs `D`).
    - `W2`: second layer, shape `(m, h)`.

    Hidden units whose input and output weights are both zero never move under gradient flow
    or descent, so a network zero-padded to a larger width (`flowlin.init.pad_width`) trains
    exactly like the original.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    net = flowlin.init.paper(jax.random.key(0), D=40, m=2, h=100, alpha=0.5)
    net.width, net.product.shape, net(jnp.ones(40)).shape   # 100, (2, 40), (2,)
    ```
    """

    W1: Float[Array, "h D"]
    W2: Float[Array, "m h"]

    def __init__(self, W1: ArrayLike, W2: ArrayLike):  # (h, D), (m, h): validated below
        call = "LinearNetwork(W1=..., W2=...)"
        W1 = as_float_array(call, "W1", W1)
        W2 = as_float_array(call, "W2", W2)
        check_ndim(call, "W1", W1, 2, "width h x inputs D")
        check_ndim(call, "W2", W2, 2, "outputs m x width h")
        dtype = jnp.result_type(W1.dtype, W2.dtype)
        self.W1 = W1.astype(dtype)
        self.W2 = W2.astype(dtype)

    def __check_init__(self):
        call = "LinearNetwork(W1=..., W2=...)"
        W1, W2 = self.W1, self.W2
        if W1.shape[0] != W2.shape[1]:
            raise ValueError(
                f"`{call}`: the hidden widths disagree: W1 has {W1.shape[0]} rows but W2 has "
                f"{W2.shape[1]} columns (W1: (h, D), W2: (m, h))"
            )
        if W1.shape[0] == 0:
            raise ValueError(f"`{call}`: width must be >= 1, got W1.shape={W1.shape}")
        if W1.shape[1] == 0 or W2.shape[0] == 0:
            raise ValueError(f"`{call}`: empty layer, got W1.shape={W1.shape}, W2.shape={W2.shape}")
        check_finite(call, "W1", W1)
        check_finite(call, "W2", W2)

    @full_precision
    def __call__(self, x: Float[Array, " D"]) -> Float[Array, " m"]:
        """The network applied to one input `x` (use `jax.vmap` for a batch)."""
        D = self.W1.shape[-1]
        if jnp.shape(x) != (D,):
            raise ValueError(
                f"`LinearNetwork(x)`: x must be one input of shape (D,) = ({D},) (use jax.vmap "
                f"for a batch), got shape {jnp.shape(x)}"
            )
        return self.W2 @ (self.W1 @ x)

    @property
    @full_precision
    def product(self) -> Float[Array, "m D"]:
        r"""The end-to-end map $W = W_2 W_1$ (the paper's $\Theta^\top$)."""
        return self.W2 @ self.W1

    @property
    def width(self) -> int:
        """Hidden width h (the array width; padded units included)."""
        return self.W1.shape[-2]

    @property
    def in_features(self) -> int:
        return self.W1.shape[-1]

    @property
    def out_features(self) -> int:
        return self.W2.shape[-2]

    @property
    def dtype(self):
        return self.W1.dtype


def check_compatible(call: str, net: LinearNetwork, problem) -> None:
    """Raise a clear error unless `net` is a `LinearNetwork` and `problem` a `Problem` that
    agree on D and m."""
    check_problem(call, problem)
    if not isinstance(net, LinearNetwork):
        raise TypeError(f"`{call}`: net must be a flowlin.LinearNetwork, got {type(net).__name__}")
    if net.W1.ndim != 2:
        raise ValueError(
            f"`{call}`: net is batched (W1.shape={net.W1.shape}); use jax.vmap over the batch"
        )
    if net.in_features != problem.D:
        raise ValueError(
            f"`{call}`: net.W1 has {net.in_features} input features but problem.X has "
            f"D = {problem.D} columns"
        )
    if net.out_features != problem.m:
        raise ValueError(
            f"`{call}`: net.W2 has {net.out_features} outputs but problem.Y has m = {problem.m} "
            "columns"
        )


def zeros_like_padding(net: LinearNetwork, width: int) -> LinearNetwork:
    """`net` with zero hidden units appended up to `width` (an exactly equivalent network)."""
    extra = width - net.width
    W1 = jnp.concatenate([net.W1, jnp.zeros((extra, net.in_features), net.dtype)], 0)
    W2 = jnp.concatenate([net.W2, jnp.zeros((net.out_features, extra), net.dtype)], 1)
    return LinearNetwork(W1, W2)
