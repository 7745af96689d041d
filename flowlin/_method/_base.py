"""The interface every way of integrating the two-layer gradient flow implements."""

import abc
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._errors import NamedArguments
from .._gram_init import GramInit
from .._network import LinearNetwork
from .._problem import Problem


def initial_gram(init, problem: Problem) -> Float[Array, "k k"]:
    r"""$Q_0 = Z_0Z_0^\top$, $Z_0 = [\Sigma^{1/2}U_1(0); V(0)]$, of a network or `GramInit`
    (internal API). Cost $O(hD(r+m))$ once for a network."""
    if isinstance(init, GramInit):
        return init.Q
    Z = jnp.concatenate([problem.sqrt_sigma[:, None] * problem.row_part(init.W1), init.W2])
    return Z @ Z.T


class AbstractFlowMethod(eqx.Module, metaclass=NamedArguments):
    r"""How `flowlin.gradient_flow` integrates the flow, as diffrax's `solver=` says how
    `diffeqsolve` steps.

    A method turns an initialization into an ODE state $y$ and a *system* (the arrays its
    vector field and diagnostics need, computed once), and knows how to read every
    diagnostic of `flowlin.Trajectory` off a state. The solve itself (diffrax, events, save
    times, status, packaging) is one routine shared by every method. The methods:

    - `flowlin.FullWeights()`: integrates the weights $(W_1, W_2)$; cost $O(nDh)$ per step.
    - `flowlin.Gram()`: integrates the width-independent reduced state of docs/theory.md §3;
      cost $O((r+m)^3)$ per step whatever the width.

    Both give the same trajectory to solver tolerance. Options of a method are its fields.
    """

    #: Short label stored with results (`Trajectory.method`, sweep attributes).
    name: eqx.AbstractClassVar[str]

    @abc.abstractmethod
    def check(self, call: str, init: Any, problem: Problem, networks: bool) -> jnp.dtype:
        """Refuse an initialization this method cannot integrate (naming `call` and the
        argument), and return the dtype of the solve. `networks`: whether the weights at every
        save time were asked for (`SaveAt(networks=True)`)."""

    @abc.abstractmethod
    def start(self, init: Any, problem: Problem) -> tuple[PyTree[Array], eqx.Module]:
        """`(y0, system)`: the initial ODE state and what the vector field needs."""

    @abc.abstractmethod
    def vector_field(
        self, system: eqx.Module, y: PyTree[Array]
    ) -> tuple[PyTree[Array], Float[Array, "r m"]]:
        r"""`(dy/dt, E)`: the time derivative of the state, and the error
        $E = W_x^\top R = \tilde Y - \Sigma^{1/2}U_1V^\top$ at `y` (for $\int\|E\|$)."""

    @abc.abstractmethod
    def error(self, system: eqx.Module, y: PyTree[Array]) -> Float[Array, "r m"]:
        r"""$E$ at `y` alone (the `stop_at_loss` event: $L - L^\star = \tfrac12\|E\|_F^2$)."""

    @abc.abstractmethod
    def diagnostics(
        self,
        system: eqx.Module,
        y: PyTree[Array],
        error_integral: Float[Array, ""] | None,
        names: tuple[str, ...],
    ) -> dict[str, Float[Array, ""]]:
        """The requested diagnostics (see `flowlin.Trajectory`) at the state `y`."""

    @abc.abstractmethod
    def snapshot(
        self,
        system: eqx.Module,
        y: PyTree[Array],
        error_integral: Float[Array, ""] | None,
        names: tuple[str, ...],
        networks: bool,
    ) -> PyTree[Array]:
        """What is kept at each save time (inside diffrax's save): the diagnostics, or the
        state itself when it is smaller than the weights; unpacked by `unpack`."""

    @abc.abstractmethod
    def unpack(
        self, system: eqx.Module, saved: PyTree[Array], names: tuple[str, ...], networks: bool
    ) -> tuple[dict[str, Float[Array, " times"]], LinearNetwork | None]:
        """The diagnostics (and networks, if asked for) at every save time, from the batch of
        `snapshot`s."""

    @abc.abstractmethod
    def final_network(self, system: eqx.Module, y: PyTree[Array]) -> LinearNetwork | None:
        """The network at state `y` (or `None` where the method cannot or was told not to
        rebuild it)."""

    def initial_gram(self, system: eqx.Module, init: Any, problem: Problem) -> Float[Array, "k k"]:
        r"""$Q_0 = Z_0Z_0^\top$ of the initialization (its fingerprint and the stiffness
        estimate). Default: from the weights or `GramInit`; a method whose system already
        holds it overrides this to skip a second pass over the weights."""
        return initial_gram(init, problem)

    @abc.abstractmethod
    def output_gram(self, system: eqx.Module, y: PyTree[Array]) -> Float[Array, "m m"]:
        r"""$V V^\top = W_2W_2^\top$ at state `y` (the law of the implicit-bias gap,
        docs/theory.md §2(h), is set by its eigenvalues at the end of the run)."""
