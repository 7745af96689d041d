"""Gradient descent (or any optax optimizer) on the same loss, mapped to flow time."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import ArrayLike, Float, Int

from ._custom_types import ScalarLike
from ._deep_network import DeepLinearNetwork, check_deep_compatible
from ._errors import check_bool, check_count, check_positive, is_concrete
from ._flow import resolve_save_times
from ._method import FullWeights
from ._misc import full_precision, tree_cast
from ._network import LinearNetwork, check_compatible
from ._problem import Problem, check_problem, check_same_precision
from ._results import RESULTS, converged_by, rose
from ._saveat import SaveAt
from ._trajectory import Trajectory, init_fingerprint, make_trajectory


#: The weights' diagnostics, final network and output gram are the full-weights flow's (any
#: depth): the iterates are the same kind of state.
_WEIGHTS = FullWeights()


def _loss_and_error(params, problem: Problem, scale):
    """Scaled loss and, as auxiliary output, E = Wxᵀ R (so L - L* = ½‖E‖²). `params` are the
    layers, W1 first (two or more)."""
    out = problem.X
    for W in params:
        out = out @ W.T
    R = problem.Y - out
    return scale * 0.5 * jnp.sum(R**2), problem.Wx.T @ R


@eqx.filter_jit
def _solve_descent(net, problem, lr, steps, ks, threshold, *, saveat, optimizer, averaged):
    names = saveat.diagnostics
    dtype = net.dtype
    n = problem.n
    # Loss the optimizer sees: ½‖R‖² (plain) or the paper's averaged (1/n)‖R‖² = (2/n)·½‖R‖².
    scale = jnp.asarray(2.0 / n if averaged else 1.0, dtype)
    tau = lr * scale  # flow time per iteration: t = 2ηk/n (averaged) or ηk
    opt = optax.sgd(lr) if optimizer is None else optimizer
    params0, system = _WEIGHTS.start(net, problem)
    grad_fn = jax.value_and_grad(_loss_and_error, has_aux=True)
    thr = jnp.asarray(-jnp.inf if threshold is None else threshold, dtype)

    def evaluate(params):
        (_, E), grads = grad_fn(params, problem, scale)
        return grads, 0.5 * jnp.sum(E**2)

    def running(state, target):
        _, _, k, _, excess, _ = state
        return (k < target) & (excess > thr) & jnp.isfinite(excess)

    def advance(state, target):
        def body(state):
            params, opt_state, k, grads, excess, integral = state
            # Left Riemann sum of ∫‖E‖dt: ‖E_k‖ = sqrt(2 (L_k - L*)) held over one step τ.
            integral = integral + tau * jnp.sqrt(2 * excess)
            updates, opt_state = opt.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            grads, excess = evaluate(params)
            return params, opt_state, k + 1, grads, excess, integral

        return jax.lax.while_loop(lambda s: running(s, target), body, state)

    grads0, excess0 = evaluate(params0)
    zero = jnp.zeros((), dtype)
    state0 = (params0, opt.init(params0), jnp.zeros((), jnp.int32), grads0, excess0, zero)

    def save(state, k_target):
        state = advance(state, k_target)
        params, _, k, _, _, integral = state
        reached = k == k_target
        d = _WEIGHTS.snapshot(system, params, integral, names, False)[0]
        d = {key: jnp.where(reached, v, jnp.inf) for key, v in d.items()}
        t = jnp.where(reached, k_target.astype(dtype) * tau, jnp.inf)
        nets = None
        if saveat.networks:  # after an early stop: inf, as the flow's saves (and `d`) are
            nets = jax.tree.map(lambda W: jnp.where(reached, W, jnp.inf), params)
        return state, (t, d, nets)

    state, (ts, diag, states) = jax.lax.scan(save, state0, ks)
    state = advance(state, steps)
    params, _, k_final, _, excess, integral = state
    final_values = _WEIGHTS.diagnostics(system, params, integral, names)
    finite = jnp.isfinite(excess)
    for W in params:
        finite = finite & jnp.all(jnp.isfinite(W))
    result = RESULTS.where(
        ~finite,
        RESULTS.diverged,
        RESULTS.where(k_final < steps, RESULTS.event_occurred, RESULTS.successful),
    )
    # As for the flow: all steps done but the excess loss still above CONVERGED_FRACTION of
    # its start (and above what the arithmetic resolves) is `not_converged`.
    fingerprint = init_fingerprint(_WEIGHTS.initial_gram(system, net, problem), problem)
    floor = 0.5 * (100 * jnp.finfo(dtype).eps * jnp.sqrt(jnp.sum(problem.Y_tilde**2))) ** 2
    converged = converged_by(fingerprint[-2], excess, floor, 0.5 * jnp.sum(problem.Y_tilde**2))
    result = RESULTS.where(
        (result == RESULTS.successful) & ~converged, RESULTS.not_converged, result
    )
    # Ended above its start: the steps blew up before the iterates became non-finite.
    grew = rose(fingerprint[-2], excess, floor)
    result = RESULTS.where((result == RESULTS.not_converged) & grew, RESULTS.diverged, result)
    # Traced arguments `gradient_descent` could not check (under jit/vmap): a negative step
    # count or a non-positive lr is that run's `invalid_arguments`, with NaN numbers.
    valid = (steps >= 0) & jnp.isfinite(tau) & (tau > 0)
    result = RESULTS.where(valid, result, RESULTS.invalid_arguments)
    nan_unless_valid = lambda x: jnp.where(valid, x, jnp.nan)  # noqa: E731
    ts, diag, states, final_values = jax.tree.map(
        nan_unless_valid, (ts, diag, states, final_values)
    )
    params = jax.tree.map(nan_unless_valid, params)
    networks = None
    if saveat.networks:
        networks = jax.tree.unflatten(jax.tree.structure(net), list(states))
    return make_trajectory(
        ts,
        diag,
        networks=networks,
        final_network=_WEIGHTS.final_network(system, params),
        final_output_gram=_WEIGHTS.output_gram(system, params),
        init_fingerprint=fingerprint,
        final_time=nan_unless_valid(k_final.astype(dtype) * tau),
        final_values=final_values,
        result=result,
        num_steps=k_final,
        iterations=ks,
        method="descent",
    )


@full_precision
def gradient_descent(
    net: LinearNetwork | DeepLinearNetwork,
    problem: Problem,
    lr: ScalarLike,
    steps: int | Int[ArrayLike, ""],
    *,
    optimizer: optax.GradientTransformation | None = None,
    averaged: bool = False,
    saveat: SaveAt | Float[ArrayLike, " times"] | Sequence[float] | None = None,
    stop_at_loss: ScalarLike | None = None,
) -> Trajectory:
    r"""Train with gradient descent (or any optax optimizer) and return a flow-time `Trajectory`.

    Plain gradient descent with step $\eta$ on $L = \tfrac12\|Y - XW_1^\top W_2^\top\|_F^2$ is
    the explicit Euler scheme of the gradient flow, so iteration $k$ corresponds to flow time
    $t = \eta k$. With `averaged=True` the optimizer sees the papers' averaged loss
    $\tfrac1n\|Y - XW_1^\top W_2^\top\|_F^2 = \tfrac2n L$, and $t = 2\eta k/n$ (docs/theory.md §5).
    As $\eta\to0$ the trajectory converges to the flow's, with error $O(\eta)$.
    $U_2$ never moves under gradient descent either ($X\Phi_2 = 0$).

    A `flowlin.DeepLinearNetwork` of any depth trains the same way (the optimizer's parameters
    are its layers, W1 first), with the diagnostics of the deep flow, including the per-layer
    `Trajectory.balancedness_drift` (docs/theory.md §6); plain gradient descent conserves the
    balancedness only up to $O(\eta^2)$ per step.

    **Arguments:**

    - `net`, `problem`: as in `flowlin.gradient_flow`.
    - `lr`: the step size $\eta$ (may be traced; also sets the time mapping when a custom
      `optimizer` is given).
    - `steps`: maximum number of iterations (may be traced).
    - `optimizer`: an optax `GradientTransformation`; default `optax.sgd(lr)`, built inside the
      compiled function so that sweeping `lr` does not recompile. Its update must need only
      the gradients (not the line searches of `optax.lbfgs`, `optax.polyak_sgd`: refused).
      The flow's theorems are not claimed for descent: `flowlin.check_bounds` reports them
      not applicable (docs/theory.md §2).
    - `averaged`: use the papers' averaged loss (see above).
    - `saveat`: a `flowlin.SaveAt` or an array of flow times; each is mapped to the nearest
      iteration $k = \mathrm{round}(t/\tau)$ in `[0, steps]` ($\tau$ the time per step).
      Default: 101 times from 0 to the time of the last step.
    - `stop_at_loss`: stop at the first iteration whose excess loss $L - L^\star$ is at or
      below this; later saves are `inf`.

    **Returns:** a `flowlin.Trajectory` with `method="descent"`, `iterations` the saved
    iteration indices and `num_steps` the iterations taken; divergence (non-finite iterates,
    or an excess loss that ended above its start) is reported as `RESULTS.diverged`.
    """
    call = "flowlin.gradient_descent(...)"
    check_problem(call, problem)
    if isinstance(net, DeepLinearNetwork):
        check_deep_compatible(call, net, problem)
    else:
        check_compatible(call, net, problem)
    check_positive(call, "lr", lr, scalar=True)
    check_bool(call, "averaged", averaged)
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"`{call}`: optimizer must be an optax GradientTransformation (e.g. "
            f"optax.sgd(lr), optax.adam(1e-3)), got {type(optimizer).__name__}"
        )
    check_count(call, "steps", steps)
    if is_concrete(steps) and int(steps) > np.iinfo(np.int32).max:  # a 32-bit loop counter
        raise ValueError(f"`{call}`: steps must be < 2**31, got {int(steps)}")
    if stop_at_loss is not None:
        check_positive(call, "stop_at_loss", stop_at_loss, scalar=True)
    dtype = jnp.result_type(net.dtype, problem.dtype)
    check_same_precision(call, problem, dtype)
    lr_given = lr
    net, problem = tree_cast(net, dtype), tree_cast(problem, dtype)
    lr = jnp.asarray(lr, dtype)
    steps = jnp.asarray(steps, jnp.int32)
    tau = lr * (2.0 / problem.n if averaged else 1.0)
    if is_concrete(tau) and not float(tau) > 0:  # the weights would never move
        raise ValueError(
            f"`{call}`: lr = {float(np.asarray(lr_given)):.3g} is 0 in {jnp.dtype(dtype).name} "
            "(its step in flow time underflows); use a larger lr or float64"
        )
    if optimizer is not None:
        _check_plain_update(call, optimizer, _WEIGHTS.start(net, problem)[0])
    saveat, ts = resolve_save_times(call, saveat, steps.astype(dtype) * tau, dtype)
    ks = jnp.clip(jnp.round(ts / tau), 0, steps).astype(jnp.int32)
    threshold = None if stop_at_loss is None else jnp.asarray(stop_at_loss, dtype)
    return _solve_descent(
        net,
        problem,
        lr,
        steps,
        ks,
        threshold,
        saveat=saveat,
        optimizer=optimizer,
        averaged=bool(averaged),
    )


def _check_plain_update(call: str, optimizer, params) -> None:
    """Refuse an optimizer whose update needs more than `update(grads, state, params)` (the
    line searches of optax.lbfgs, optax.polyak_sgd: the loss value and function), before
    compiling: optax would fail inside its own code."""
    try:
        jax.eval_shape(lambda p: optimizer.update(p, optimizer.init(p), p), params)
    except TypeError as e:
        if "missing" not in str(e) and "required" not in str(e):
            raise
        raise TypeError(
            f"`{call}`: optimizer needs more than the gradient in its update ({e}); flowlin "
            "calls update(grads, state, params), so line-search optimizers such as "
            "optax.lbfgs() or optax.polyak_sgd() are not supported"
        ) from None
