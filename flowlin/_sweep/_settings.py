"""The frozen settings of a sweep: one Module that is both what a store fingerprints and what
the compiled chunk program sees (static fields fix the program; array fields are traced, so a
new `t1`, save times, key or threshold never recompiles)."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._flow import resolve_save_times, resolve_tolerances
from .._method import AbstractFlowMethod, Gram
from .._saveat import DIAGNOSTICS, SaveAt
from ._validate import DynamicsName, InitName, SamplingName


#: Save times per run when none are given: enough to check the bounds along the path.
DEFAULT_SWEEP_SAVES = 21
_CALL = "flowlin.sweep(...)"


class SweepSettings(eqx.Module):
    """Everything but the grid that fixes a sweep's results (see `flowlin.sweep`).

    Invariants (`__check_init__`): Wishart sampling gives Gram statistics, so it needs
    `method=flowlin.Gram()` (not rebuilding weights) and the flow; gradient descent needs `lr`
    and `steps`.
    """

    init: InitName = eqx.field(static=True)
    sampling: SamplingName = eqx.field(static=True)
    method: AbstractFlowMethod = eqx.field(static=True)
    dynamics: DynamicsName = eqx.field(static=True)
    averaged: bool = eqx.field(static=True)
    diagnostics: tuple[str, ...] = eqx.field(static=True)
    solver: dfx.AbstractSolver = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    theory: bool = eqx.field(static=True)
    bounds: bool = eqx.field(static=True)
    delta: float = eqx.field(static=True)
    key: PRNGKeyArray
    ts: Float[Array, " times"]
    t1: Float[Array, ""]
    lr: Float[Array, ""] | None
    steps: Int[Array, ""] | None
    stop_at_loss: Float[Array, ""] | None

    def __check_init__(self):
        if self.sampling == "wishart" and (
            not isinstance(self.method, Gram) or self.dynamics != "flow"
        ):
            raise ValueError(
                f"`{_CALL}`: sampling='wishart' gives the Gram statistics, not weights: it "
                "needs method=flowlin.Gram() and dynamics='flow'"
            )
        if self.sampling == "wishart" and self.method.reconstruct:
            raise ValueError(
                f"`{_CALL}`: sampling='wishart' has no weights to rebuild: "
                "method=flowlin.Gram(reconstruct=True) needs sampling='weights'"
            )
        if self.dynamics == "descent" and (self.lr is None or self.steps is None):
            raise ValueError(f"`{_CALL}`: dynamics='descent' needs lr=... and steps=...")

    @property
    def method_for_run(self) -> AbstractFlowMethod:
        """The method each run uses: with weights sampled and no bound checks nothing reads
        the final network, so the gram method skips rebuilding it (an O(h·D·(r+m)) product)."""
        if isinstance(self.method, Gram) and self.sampling == "weights" and not self.bounds:
            return Gram(reconstruct=False)
        return self.method

    def to_json(self) -> dict:
        """The settings as plain values: the store's fingerprint and the result's attrs."""
        return dict(
            init=self.init,
            sampling=self.sampling,
            method=self.method.name,
            dynamics=self.dynamics,
            t1=_shortest(self.t1),
            lr=None if self.lr is None else _shortest(self.lr),
            steps=None if self.steps is None else int(self.steps),
            averaged=self.averaged,
            saveat=[_shortest(t) for t in np.asarray(self.ts)],
            diagnostics=list(self.diagnostics),
            stop_at_loss=None if self.stop_at_loss is None else _shortest(self.stop_at_loss),
            solver=type(self.solver).__name__,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            theory=self.theory,
            bounds=self.bounds,
            delta=self.delta,
            key=str(np.asarray(jax.random.key_data(self.key)).tolist()),
            dtype=str(np.dtype(self.ts.dtype)),
        )


def make_settings(
    *,
    dtype,
    n_samples: int,
    init,
    sampling,
    method,
    dynamics,
    t1,
    lr,
    steps,
    averaged,
    saveat,
    stop_at_loss,
    solver,
    rtol,
    atol,
    max_steps,
    theory,
    bounds,
    delta,
    key,
) -> SweepSettings:
    """`SweepSettings` from `flowlin.sweep`'s (already checked) arguments: the solver's default
    tolerances for `dtype`, the default save times over the run's horizon (flow time; for
    descent `steps · lr`, times `2/n` when `averaged`), and every diagnostic when bounds are
    checked (`check_bounds` reads them all)."""
    rtol, atol = resolve_tolerances(dtype, rtol, atol)
    if dynamics == "descent" and lr is not None and steps is not None:
        horizon = float(steps) * float(lr) * (2.0 / n_samples if averaged else 1.0)
    else:  # (descent without lr or steps is refused by SweepSettings.__check_init__)
        horizon = float(t1)
    if not isinstance(saveat, SaveAt):
        saveat = SaveAt(saveat)
    if saveat.ts is None:
        default = np.linspace(0.0, horizon, DEFAULT_SWEEP_SAVES)
        saveat = SaveAt(default, diagnostics=saveat.diagnostics)
    _, ts = resolve_save_times(_CALL, saveat, horizon, dtype)
    return SweepSettings(
        init=init,
        sampling=sampling,
        method=method,
        dynamics=dynamics,
        averaged=bool(averaged),
        diagnostics=tuple(DIAGNOSTICS) if bounds else tuple(saveat.diagnostics),
        solver=dfx.Tsit5() if solver is None else solver,
        rtol=float(rtol),
        atol=float(atol),
        max_steps=int(max_steps),
        theory=bool(theory),
        bounds=bool(bounds),
        delta=float(delta),
        key=jax.random.key(int(key)) if isinstance(key, (int, np.integer)) else key,
        ts=ts,
        t1=jnp.asarray(t1, dtype),
        lr=None if lr is None else jnp.asarray(lr, dtype),
        steps=None if steps is None else jnp.asarray(steps, jnp.int32),
        stop_at_loss=None if stop_at_loss is None else jnp.asarray(stop_at_loss, dtype),
    )


def _shortest(x) -> float:
    """A stored setting as the shortest decimal that its dtype reads back (0.1, not the
    0.10000000149 of float32's nearest value), so that attrs and fingerprints show what was
    asked for."""
    return float(str(np.asarray(x)[()]))
