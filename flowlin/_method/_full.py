"""The full-weights method: integrate $(W_1, W_2)$ themselves."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._deep_network import DeepLinearNetwork, chain, check_deep_compatible
from .._diagnostics import Reference, weight_diagnostics
from .._gram_init import GramInit
from .._network import LinearNetwork, check_compatible
from .._problem import Problem
from . import _deep as deep
from ._base import AbstractFlowMethod


class _FullSystem(eqx.Module):
    """The data (X, Y and its SVD quantities) and the initial weights the drifts compare to."""

    problem: Problem
    ref: Reference


class FullWeights(AbstractFlowMethod):
    r"""Integrate the weights: $\dot W_1 = W_2^\top R^\top X$, $\dot W_2 = R^\top X W_1^\top$,
    $R = Y - XW_1^\top W_2^\top$ (docs/theory.md §1).

    Cost $O(nDh)$ per step. Every diagnostic is computed from the weights (see
    `flowlin.Trajectory`); at each save time only the diagnostics are kept (not the $h\times D$
    weights), unless `SaveAt(networks=True)`. Takes a `flowlin.LinearNetwork`, or a
    `flowlin.DeepLinearNetwork` of any depth $L$: then it integrates
    $\dot W_l = (W_L\cdots W_{l+1})^\top R^\top X(W_{l-1}\cdots W_1)^\top$
    (docs/theory.md §6) by one forward and one backward pass of the data's $r$ informative
    rows, cost $O(r\sum_l h_lh_{l-1})$ per step, and also reports each hidden layer's
    balancedness drift (`Trajectory.balancedness_drift`).

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    traj = flowlin.gradient_flow(net, problem, 20.0, method=flowlin.FullWeights())
    ```
    """

    name: ClassVar[str] = "full"

    def check(self, call, init, problem, networks):
        if isinstance(init, GramInit):
            raise ValueError(
                f"`{call}`: net is a flowlin.GramInit (the statistics Q, K of an "
                "initialization, without its weights), which only method=flowlin.Gram() can "
                "integrate; got method=flowlin.FullWeights(). Pass the LinearNetwork, or "
                "method=flowlin.Gram()."
            )
        if isinstance(init, DeepLinearNetwork):
            check_deep_compatible(call, init, problem)
        else:
            check_compatible(call, init, problem)
        return jnp.result_type(init.dtype, problem.dtype)

    def start(self, init: LinearNetwork | DeepLinearNetwork, problem: Problem):
        if isinstance(init, DeepLinearNetwork):
            return deep.start(init, problem)
        return (init.W1, init.W2), _FullSystem(problem, Reference(problem, init.W1, init.W2))

    def initial_gram(self, system, init, problem):
        if isinstance(init, DeepLinearNetwork):
            return deep.two_layer_view_gram(init.weights[0], init.head, problem)
        return deep.two_layer_view_gram(init.W1, init.W2, problem)

    def vector_field(self, system, y):
        if isinstance(system, deep.DeepSystem):
            return deep.vector_field(system, y)
        W1, W2 = y
        p = system.problem
        R = p.Y - (p.X @ W1.T) @ W2.T  # n×m
        RX = R.T @ p.X  # m×D; -∂L/∂W = Rᵀ X
        return (W2.T @ RX, RX @ W1.T), p.Wx.T @ R

    def error(self, system, y) -> Float[Array, "r m"]:
        if isinstance(system, deep.DeepSystem):
            return deep.error(system, y)
        W1, W2 = y
        return system.problem.error(W2 @ W1)

    def diagnostics(self, system, y, error_integral, names):
        if isinstance(system, deep.DeepSystem):
            return deep.diagnostics_and_drift(system, y, error_integral, names)[0]
        W1, W2 = y
        return weight_diagnostics(system.problem, W1, W2, system.ref, names, error_integral)

    def snapshot(self, system, y, error_integral, names, networks):
        if isinstance(system, deep.DeepSystem):
            return deep.snapshot(system, y, error_integral, names, networks)
        # Scalars per save time, not h×D weights (unless the weights were asked for).
        return self.diagnostics(system, y, error_integral, names), (y if networks else None)

    def unpack(self, system, saved, names, networks):
        if isinstance(system, deep.DeepSystem):
            return deep.unpack(system, saved, networks)
        diag, states = saved
        nets = None
        if networks:
            nets = jax.vmap(LinearNetwork)(*states)
        return diag, nets

    def final_network(self, system, y):
        if isinstance(system, deep.DeepSystem):
            return DeepLinearNetwork(y)
        return LinearNetwork(y[0], y[1])

    def output_gram(self, system, y):
        head = chain(y[1:])  # W2 at two layers, W_L···W_2 at depth
        return head @ head.T


FullWeights.__init__.__doc__ = """**Arguments:** none."""
