"""The deep linear network f(x) = W_L ··· W_1 x (docs/theory.md §6)."""

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._errors import NamedArguments, as_float_array, check_finite
from ._misc import full_precision
from ._network import LinearNetwork
from ._problem import check_problem


_CALL = "DeepLinearNetwork(weights=...)"


def chain(mats: Sequence[Array], dtype=None, size: int | None = None) -> Array:
    r"""The product $M_k\cdots M_1$ of `mats = (M_1, ..., M_k)` (first factor applied first);
    the identity of `size` (and `dtype`) for an empty sequence."""
    if not mats:
        return jnp.eye(size, dtype=dtype)
    out = mats[0]
    for M in mats[1:]:
        out = M @ out
    return out


class DeepLinearNetwork(eqx.Module, metaclass=NamedArguments):
    r"""A deep linear network $f(x) = W_L\cdots W_2W_1x$ of depth $L \ge 2$.

    **Arguments:**

    - `weights`: the layers, **first layer first**: $W_1$ of shape `(h_1, D)`, $W_l$ of shape
      `(h_l, h_{l-1})`, and $W_L$ of shape `(m, h_{L-1})`. Any depth $L \ge 2$; at $L = 2$ it is
      the network of `flowlin.LinearNetwork` (`as_two_layer` converts).

    The gradient flow conserves each hidden layer's *balancedness*
    $W_{l+1}^\top W_{l+1} - W_lW_l^\top$ ($l = 1, \dots, L-1$), and never moves $W_1\Phi_2$, the
    part of the first layer that sees the null space of the data (docs/theory.md §6).

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    net = flowlin.DeepLinearNetwork([
        jax.random.normal(k1, (50, 40)),  # W1: h1 x D
        jax.random.normal(k2, (60, 50)),  # W2: h2 x h1
        jax.random.normal(k3, (2, 60)),   # W3: m x h2
    ])
    net.depth, net.widths, net.product.shape, net(jnp.ones(40)).shape
    # 3, (50, 60), (2, 40), (2,)
    ```
    """

    weights: tuple[Float[Array, "..."], ...]

    def __init__(self, weights: Sequence[ArrayLike]):
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
            raise TypeError(
                f"`{_CALL}`: weights must be a list or tuple of the layers' matrices, W1 first, "
                f"got {type(weights).__name__}"
            )
        mats = tuple(as_float_array(_CALL, f"weights[{i}]", w) for i, w in enumerate(weights))
        if not mats:
            raise ValueError(f"`{_CALL}`: weights is empty; depth L must be >= 2")
        dtype = jnp.result_type(*(w.dtype for w in mats))
        self.weights = tuple(w.astype(dtype) for w in mats)

    def __check_init__(self):
        ws = self.weights
        if len(ws) < 2:
            raise ValueError(
                f"`{_CALL}`: depth L = {len(ws)}; a deep linear network needs L >= 2 layers"
            )
        for i, w in enumerate(ws):
            if w.ndim < 2:
                raise ValueError(
                    f"`{_CALL}`: weights[{i}] must be a matrix (layer {i + 1}: outputs x inputs), "
                    f"got shape {w.shape}"
                )
            if 0 in w.shape[-2:]:
                raise ValueError(f"`{_CALL}`: weights[{i}] is empty, shape {w.shape}")
        batch = ws[0].shape[:-2]
        for i, w in enumerate(ws):
            if w.shape[:-2] != batch:
                raise ValueError(
                    f"`{_CALL}`: weights[{i}] has batch shape {w.shape[:-2]} but weights[0] has "
                    f"{batch}"
                )
        for i in range(1, len(ws)):
            if ws[i].shape[-1] != ws[i - 1].shape[-2]:
                raise ValueError(
                    f"`{_CALL}`: mismatched layer shapes: weights[{i}] has {ws[i].shape[-1]} "
                    f"columns but weights[{i - 1}] has {ws[i - 1].shape[-2]} rows (layer l maps "
                    f"h_(l-1) -> h_l, so weights[{i}].shape[-1] must equal "
                    f"weights[{i - 1}].shape[-2])"
                )
        for i, w in enumerate(ws):
            check_finite(_CALL, f"weights[{i}]", w)

    @full_precision
    def __call__(self, x: Float[Array, " D"]) -> Float[Array, " m"]:
        """The network applied to one input `x` (use `jax.vmap` for a batch)."""
        D = self.weights[0].shape[-1]
        if jnp.shape(x) != (D,):
            raise ValueError(
                f"`DeepLinearNetwork(x)`: x must be one input of shape (D,) = ({D},) (use "
                f"jax.vmap for a batch), got shape {jnp.shape(x)}"
            )
        for w in self.weights:
            x = w @ x
        return x

    @property
    def depth(self) -> int:
        """The number of layers L."""
        return len(self.weights)

    @property
    def widths(self) -> tuple[int, ...]:
        """The hidden widths $(h_1, \\dots, h_{L-1})$."""
        return tuple(w.shape[-2] for w in self.weights[:-1])

    @property
    @full_precision
    def product(self) -> Float[Array, "m D"]:
        r"""The end-to-end map $W = W_L\cdots W_1$."""
        return chain(self.weights)

    @property
    @full_precision
    def head(self) -> Float[Array, "m h1"]:
        r"""$W_L\cdots W_2$: everything after the first layer (the $V$ of the two-layer case;
        its singular values set the law of the implicit-bias gap, docs/theory.md §6)."""
        return chain(self.weights[1:])

    @property
    def in_features(self) -> int:
        return self.weights[0].shape[-1]

    @property
    def out_features(self) -> int:
        return self.weights[-1].shape[-2]

    @property
    def dtype(self):
        return self.weights[0].dtype

    def as_two_layer(self) -> LinearNetwork:
        """The same network as a `flowlin.LinearNetwork` (depth 2 only)."""
        if self.depth != 2:
            raise ValueError(
                f"`DeepLinearNetwork.as_two_layer()`: the network has depth {self.depth}; only "
                "a depth-2 network is a flowlin.LinearNetwork"
            )
        return LinearNetwork(*self.weights)

    @classmethod
    def from_two_layer(cls, net: LinearNetwork) -> "DeepLinearNetwork":
        """The depth-2 `DeepLinearNetwork` with the layers of a `flowlin.LinearNetwork`."""
        if not isinstance(net, LinearNetwork):
            raise TypeError(
                "`DeepLinearNetwork.from_two_layer(net)`: net must be a flowlin.LinearNetwork, "
                f"got {type(net).__name__}"
            )
        return cls([net.W1, net.W2])


def check_deep_compatible(call: str, net: DeepLinearNetwork, problem) -> None:
    """Raise a clear error unless `net` is an unbatched `DeepLinearNetwork` and `problem` a
    `Problem` that agree on D and m."""
    check_problem(call, problem)
    if not isinstance(net, DeepLinearNetwork):
        raise TypeError(
            f"`{call}`: net must be a flowlin.DeepLinearNetwork, got {type(net).__name__}"
        )
    if net.weights[0].ndim != 2:
        raise ValueError(
            f"`{call}`: net is batched (weights[0].shape={net.weights[0].shape}); use jax.vmap "
            "over the batch"
        )
    if net.in_features != problem.D:
        raise ValueError(
            f"`{call}`: net.weights[0] has {net.in_features} input features but problem.X has "
            f"D = {problem.D} columns"
        )
    if net.out_features != problem.m:
        raise ValueError(
            f"`{call}`: net.weights[-1] has {net.out_features} outputs but problem.Y has "
            f"m = {problem.m} columns"
        )
