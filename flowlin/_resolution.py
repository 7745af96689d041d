"""What a dtype and a solve can resolve, for `flowlin.check_bounds` (internal API): the
default tolerances derived from the dtype and the solver's tolerances, the once-per-process
float32 warning, the check that a trajectory started where `check_bounds` is told, and
`Observed`: what every check reads, with the noise levels below which nothing is resolved."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._errors import check_positive, is_concrete
from ._misc import frobenius
from ._problem import Problem
from ._trajectory import Trajectory, init_fingerprint
from .theory._statistics import InitStatistics


#: Floor of the default relative tolerance of `check_bounds` (the float64 default: 100× the
#: default float64 solver rtol 1e-8, room for the global error a 1e-8 local tolerance
#: accumulates over a run). The default is never stricter than this.
RTOL_FLOOR = 1e-6
#: The default tolerance is this many times the solver's rtol (global vs local error) ...
SOLVER_FACTOR = 100.0
#: ... and at least this many times the dtype's epsilon (round-off of the O(k) sums and the
#: cancellation in E = Ỹ - Σ^½U1Vᵀ; float32: ~1.2e-3).
EPS_FACTOR = 1e4
#: The imbalance Λ = U1ᵀU1 - VᵀV is quadratic in the state y, so a state error δy moves it by
#: ≲ 2‖y‖‖δy‖; the integrator's error per step is ≲ `Trajectory.state_tolerance`. The drift
#: allowed is this many times 2‖y‖·state_tolerance (global vs local error; measured: float64
#: runs from inits of entries 1e-8 to 0.1 drift by 1/300 to 1/500 of 2‖y‖·state_tolerance).
DRIFT_FACTOR = 10.0
#: A recorded init fingerprint matches when every entry agrees to this many epsilons of the
#: trajectory's dtype, relative to its scale (different summation orders, padded units).
_FINGERPRINT_EPS = 1e4

#: Late-time tightness uses the last time at which the observed error is this many times above
#: the noise level `atol·‖E(0)‖` (a ratio of two noise-level numbers says nothing).
RESOLVED_FACTOR = 100.0

_warned = False

FLOAT32_WARNING = (
    "flowlin.check_bounds: JAX is running in float32 (x64 is off). float32 resolves about 7 "
    "digits (eps ≈ 1.2e-7) and flowlin's float32 solves use rtol 1e-5: the checks then use "
    "tolerances of ~1e-3 of each quantity's scale. A bound is confirmed only down to that "
    "floor: times where the bound itself is below it are excluded (BoundCheck.excluded counts "
    "them), and a bound whose every time is below it is reported not checked (applicable "
    "false, BoundCheck.reason 4). Late-time rates, tightness near convergence and the conservation "
    "of the imbalance to better than ~1e-3 cannot be resolved. For 1e-6-level checks turn "
    "x64 on before creating any array: jax.config.update('jax_enable_x64', True)."
)


def warn_if_float32(dtype) -> None:
    """Warn once per process when the checks run in a dtype below float64 with x64 off."""
    global _warned
    if _warned or jnp.dtype(dtype) == jnp.dtype("float64") or jax.config.jax_enable_x64:
        return
    _warned = True
    warnings.warn(FLOAT32_WARNING, stacklevel=4)


def default_tolerance(trajectory: Trajectory, dtype):
    """`check_bounds`'s default rtol and atol: max(`RTOL_FLOOR`, `SOLVER_FACTOR`·solver rtol,
    `EPS_FACTOR`·eps of `dtype`) (float64 defaults: 1e-6; float32: ~1.2e-3)."""
    return jnp.maximum(jnp.asarray(RTOL_FLOOR, dtype), resolvable_tolerance(trajectory, dtype))


def resolvable_tolerance(trajectory: Trajectory, dtype):
    """The least tolerance at which a run's numbers say anything: max(`SOLVER_FACTOR`·solver
    rtol, `EPS_FACTOR`·eps of `dtype`), i.e. `default_tolerance` without its policy floor."""
    eps = jnp.asarray(EPS_FACTOR * float(jnp.finfo(dtype).eps), dtype)
    if trajectory.solver_rtol is None:
        return eps
    return jnp.maximum(eps, SOLVER_FACTOR * trajectory.solver_rtol.astype(dtype))


def check_tolerances(call: str, trajectory: Trajectory, rtol, atol):
    """`check_bounds`'s `rtol`, `atol`: checked if given, else `default_tolerance` of the
    solve's dtype; warns once in float32 (`warn_if_float32`). A given value below what the run
    resolves (`resolvable_tolerance`) is raised to it, with a warning: a tighter one would read
    the solver's error and round-off as violations."""
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None:
            check_positive(call, name, value, allow_zero=True, scalar=True)
    dtype = trajectory.ts.dtype  # the solve's precision
    warn_if_float32(dtype)
    default = default_tolerance(trajectory, dtype)
    floor = resolvable_tolerance(trajectory, dtype)
    out = []
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is None:
            out.append(default)
            continue
        if is_concrete(value) and is_concrete(floor):
            least = float(np.max(np.asarray(floor)))
            if float(value) < least:
                warnings.warn(
                    f"`{call}`: {name}={float(value):g} is below what this run can resolve "
                    f"({least:.2g}: {SOLVER_FACTOR:g}× the solver's rtol, or {EPS_FACTOR:g}× "
                    f"the {jnp.dtype(dtype).name} epsilon); checking with {least:.2g}, so that "
                    "the solver's error and round-off are not read as violations",
                    stacklevel=4,
                )
        out.append(jnp.maximum(jnp.asarray(value, dtype), floor))
    return tuple(out)


def check_origin(call: str, trajectory: Trajectory, gram, problem: Problem):
    """Refuse an `init`/`problem` the trajectory did not start from (its recorded
    `init_fingerprint`) with a `ValueError`. When traced (under `vmap`/`jit`, e.g. in a
    sweep) nothing can be raised: returns the mismatch as a boolean array, which makes every
    bound not applicable with `reason` 5; else `None`."""
    recorded = trajectory.init_fingerprint
    if recorded is None:
        return None
    dtype = recorded.dtype
    claimed = init_fingerprint(gram.Q.astype(dtype), problem).astype(dtype)
    if claimed.shape != recorded.shape:
        raise ValueError(
            f"`{call}`: init and problem have k = r + m = {gram.Q.shape[0]}, but trajectory "
            "started from a problem of another rank or output size; pass the init and problem "
            "the trajectory was computed from"
        )
    k = gram.Q.shape[0]
    k2, r = k**2, problem.rank
    eps = float(jnp.finfo(dtype).eps)
    tol = _FINGERPRINT_EPS * eps
    # E(0) = Ỹ - (Q0)12 and the residual behind L* cancel: each is known to ~eps·S, S the size
    # of what cancels, so ½‖·‖² to ~‖·‖·eps·S + (eps·S)², not relative to itself (an init
    # whose product is W* has E(0) = 0: two round-offs of zero differ entirely).
    cancelled = jnp.stack(
        [
            frobenius(problem.Y_tilde) + frobenius(gram.Q[:r, r:]),  # for ½‖E(0)‖²
            frobenius(problem.Y),  # for L*
        ]
    ).astype(dtype)

    def mismatch(a, b):
        q_scale = jnp.maximum(jnp.max(jnp.abs(a[:k2])), jnp.max(jnp.abs(b[:k2])))
        q_bad = jnp.any(jnp.abs(a[:k2] - b[:k2]) > tol * q_scale)
        half_square = jnp.maximum(jnp.abs(a[k2:]), jnp.abs(b[k2:]))
        cancellation = jnp.sqrt(2 * half_square) * cancelled + eps * cancelled**2
        s_scale = jnp.abs(a[k2:]) + jnp.abs(b[k2:]) + jnp.abs(a[k2 + 1]) + cancellation
        s_bad = jnp.any(jnp.abs(a[k2:] - b[k2:]) > tol * s_scale)
        return q_bad, s_bad

    message = (
        f"`{call}`: trajectory did not start from this init and problem: its recorded start "
        "(Q0 = Z0Z0ᵀ, E(0), L*) differs from theirs ({what}). Pass the init (same seed and "
        "scale) and the problem (same data) that gradient_flow was called with"
    )
    q_bad, s_bad = mismatch(recorded, claimed)
    if is_concrete(q_bad) and is_concrete(s_bad):
        if bool(np.asarray(q_bad)) or bool(np.asarray(s_bad)):
            what = "the init's statistics Q0" if bool(q_bad) else "the data's Ỹ or L*"
            given = {jnp.dtype(gram.Q.dtype).name, jnp.dtype(problem.X.dtype).name}
            if given != {jnp.dtype(dtype).name}:  # the same data in another dtype differ too
                what += (
                    f"; the trajectory ran in {jnp.dtype(dtype).name} and the init/problem "
                    f"given are {'/'.join(sorted(given))}: pass them in the dtype it ran in"
                )
            raise ValueError(message.format(what=what))
        return None
    return q_bad | s_bad


def check_same_kind(call: str, trajectory: Trajectory, init) -> None:
    """Refuse an init of the other kind (two-layer or deep) than the network the trajectory
    was computed from (when it recorded one)."""
    from ._deep_network import DeepLinearNetwork

    final = trajectory.final_network
    if final is not None and isinstance(init, DeepLinearNetwork) != isinstance(
        final, DeepLinearNetwork
    ):
        raise ValueError(
            f"`{call}`: init is a {type(init).__name__} but trajectory was computed from a "
            f"{type(final).__name__}; pass the init gradient_flow was called with"
        )


def check_same_problem(call: str, trajectory: Trajectory, problem: Problem) -> None:
    """Refuse a `problem` the trajectory was not computed on, from what its recorded start
    (`init_fingerprint`) says without the init: its size, (r + m)² + 2 entries, and its last
    entry L* (compared as in `check_origin`; only when concrete)."""
    final = trajectory.final_network
    if final is not None and final.in_features != problem.D:
        raise ValueError(
            f"`{call}`: trajectory was computed on inputs of dimension D = {final.in_features} "
            f"(its final network's), but problem has D = {problem.D}; pass the problem it was "
            "computed on"
        )
    recorded = trajectory.init_fingerprint
    if recorded is None:
        return
    r, m = problem.rank, problem.m
    if recorded.shape[-1] != (r + m) ** 2 + 2:
        raise ValueError(
            f"`{call}`: trajectory was computed on a problem of another rank or output size "
            f"(its start records {recorded.shape[-1]} numbers; this problem, r = {r} and m = "
            f"{m}, gives {(r + m) ** 2 + 2}); pass the problem it was computed on"
        )
    if not is_concrete(recorded):
        return
    dtype = recorded.dtype
    eps = float(jnp.finfo(dtype).eps)
    a = np.asarray(recorded[..., -1], np.float64)
    b = float(problem.loss_star)
    y = float(frobenius(problem.Y))
    scale = np.abs(a) + abs(b) + np.sqrt(2 * np.maximum(np.abs(a), abs(b))) * y + eps * y**2
    if np.any(np.abs(a - b) > _FINGERPRINT_EPS * eps * scale):
        raise ValueError(
            f"`{call}`: trajectory was not computed on this problem: its recorded least loss "
            f"L* differs from the problem's ({float(np.max(a)):.6g} vs {b:.6g}); pass the "
            "problem it was computed on"
        )


def series(traj: Trajectory, name: str):
    """A saved diagnostic with its value at the end of the run appended (None if not saved)."""
    saved = getattr(traj, name)
    if saved is None:
        return None
    final = traj.final_values.get(name)
    if final is None:
        return jnp.concatenate([saved, jnp.full((1,), jnp.inf, saved.dtype)])
    return jnp.concatenate([saved, final[None]])


def _solver_error_of_E(trajectory: Trajectory, problem: Problem, stats, degree: int):
    r"""How far the solver's error can move $E = \tilde Y - \Sigma^{1/2}U_1V^\top$: DRIFT_FACTOR
    (global vs local error, as for the imbalance) times a bound on one step's.

    flowlin's default controller (a max norm) keeps each state entry's error per step within
    rtol·|entry| + atol (a controller with an RMS norm allows up to √(entries) times more). Two
    layers: the state is the input block $A$ ($W_1$, or the gram method's $\Sigma^{1/2}U_1$) and
    the output block $V$, so $\|\delta(AV^\top)\| \le \|\delta A\|\,b + a\,\|\delta V\| \le
    2\,\mathrm{rtol}\,ab + \mathrm{atol}\sqrt{n}\,(a + b)$ ($n$ the state's entries) with $a, b$
    the blocks' largest norms: $b$ from $VV^\top$ at both ends, $a^2 \le \|y\|^2 - b^2$ at
    each end (the state's norm, `state_norm`, is the larger of the two ends'). A small $V$
    beside a large $W_1$ (an unbalanced init) then gets the small error it has, not
    $\|y\|^2$·rtol. The weights' $E$ carries $\Sigma^{1/2}$: a factor $\lambda_1(\Sigma)^{1/2}$.
    Deep networks (`degree` > 2 layers, no statistics): a product of `degree` factors moves by
    $\le$ degree·$\|y\|^{\text{degree}-1}$·`state_tolerance`, times $\lambda_1(\Sigma)^{1/2}$."""
    y, tau = trajectory.state_norm, trajectory.state_tolerance
    if stats is None or degree != 2:  # the weights themselves: E carries Σ^½ (as below)
        return DRIFT_FACTOR * degree * y ** (degree - 1) * tau * problem.sqrt_sigma[0]
    rtol = trajectory.solver_rtol
    r = problem.rank
    b2 = jnp.trace(stats.gram.Q[..., r:, r:], axis1=-2, axis2=-1)  # ‖V(0)‖²
    if trajectory.final_output_gram is not None:
        b2_end = jnp.trace(trajectory.final_output_gram, axis1=-2, axis2=-1)
        b2, b2_low = jnp.maximum(b2, b2_end), jnp.minimum(b2, b2_end)
    else:
        b2, b2_low = jnp.maximum(b2, y**2), jnp.zeros_like(b2)
    a, b = jnp.sqrt(jnp.maximum(y**2 - b2_low, 0.0)), jnp.sqrt(b2)
    scale = 1.0 if trajectory.method == "gram" else problem.sqrt_sigma[0]
    if rtol is None:  # an older trajectory: the whole state's tolerance
        return DRIFT_FACTOR * 2 * y * tau * scale
    # atol·√(entries) of the whole state, from state_tolerance = rtol‖y‖ + atol·√(entries):
    # it bounds both √n_A·atol and √n_V·atol
    atol_size = jnp.maximum(tau - rtol * y, 0.0)
    step = 2 * rtol * a * b + atol_size * (a + b)
    return DRIFT_FACTOR * step * scale


class Observed(eqx.Module):
    """What every check reads: the trajectory's times `ts` and errors `err` = ‖E(t)‖ (None if
    `excess_loss` was not saved) with the end of the run appended, which of them can be checked
    (`finite_t`, `err_ok`) or are above the noise (`resolved`), whether the solve succeeded
    (`ok`), the tolerances with their noise levels for errors (`e_noise`) and distances
    (`d_noise`), and, for a two-layer init, its statistics (`stats`; None at depth).

    The noise levels are atol times the scale of what is compared, ‖E(0)‖ + ‖Ỹ‖ for errors and
    ‖W(0) − W*‖ + ‖W*‖ for distances; errors also get what the solver's own error can move E
    by (`_solver_error_of_E`). For weights far larger than their product (units whose
    contributions cancel) that is what dominates: a fixed fraction of ‖E(0)‖ would read
    solver error as a violated envelope. Two-layer and deep checks both read this, so the
    resolution rules cannot differ between them."""

    ok: Bool[Array, ""]
    ts: Float[Array, " times"]
    finite_t: Bool[Array, " times"]
    err: Float[Array, " times"] | None
    err_ok: Bool[Array, " times"] | None
    resolved: Bool[Array, " times"] | None
    e_noise: Float[Array, ""]
    d_noise: Float[Array, ""]
    rtol: Float[Array, ""]
    atol: Float[Array, ""]
    stats: InitStatistics | None

    def __init__(
        self, trajectory: Trajectory, problem: Problem, rtol, atol, *, dtype, error0, distance0,
        stats: InitStatistics | None = None, degree: int = 2,
    ):  # fmt: skip
        """`error0` = ‖E(0)‖ and `distance0` = ‖W(0) − W*‖ of the init; `dtype` its dtype;
        `degree` the number of weight matrices in the end-to-end map (the depth)."""
        self.stats, self.rtol, self.atol = stats, rtol, atol
        self.ok = trajectory.succeeded
        self.e_noise = atol * (error0 + frobenius(problem.Y_tilde))
        self.d_noise = atol * (distance0 + frobenius(problem.min_norm))
        if trajectory.state_tolerance is not None:  # (None: gradient descent, exact steps)
            moved = _solver_error_of_E(trajectory, problem, stats, degree)
            self.e_noise = self.e_noise + moved.astype(self.e_noise.dtype)
        self.ts = jnp.concatenate([trajectory.ts, trajectory.final_time[None]]).astype(dtype)
        self.finite_t = jnp.isfinite(self.ts)
        excess = series(trajectory, "excess_loss")
        if excess is None:
            self.err = self.err_ok = self.resolved = None
        else:
            self.err = jnp.sqrt(2 * jnp.maximum(excess, 0))
            self.err_ok = self.finite_t & jnp.isfinite(self.err)
            self.resolved = self.err_ok & (self.err > RESOLVED_FACTOR * self.e_noise)

    @classmethod
    def of_statistics(
        cls, trajectory: Trajectory, stats: InitStatistics, problem: Problem, rtol, atol
    ):
        """For a two-layer init, from its `InitStatistics`."""
        return cls(
            trajectory, problem, rtol, atol, dtype=stats.gram.Q.dtype, error0=stats.error_norm,
            distance0=stats.distance_initial, stats=stats,
        )  # fmt: skip

    @property
    def dtype(self):
        return self.ts.dtype


#: Checks that are theorems about the gradient flow (docs/theory.md §2, §6(h)): on a
#: gradient-descent trajectory they are not applicable, `BoundCheck.reason` 6. (A step of size
#: η changes Λ by O(η²), and the envelopes and distance bounds are not claimed for descent.)
FLOW_ONLY = frozenset(
    {
        "imbalance_conserved", "loss_imbalance", "loss_margin", "loss_margin_local",
        "rate_instantaneous", "distance_deterministic", "distance_a_posteriori",
        "distance_wide_network", "balancedness_conserved", "invariant_set",
        "deficiency_margin_loss",
    }
)  # fmt: skip
#: `BoundCheck.reason` of a flow-only check on a descent run.
DESCENT_REASON = 6


def for_descent(trajectory: Trajectory, checks: dict, rtol) -> dict:
    """`checks` with the flow-only ones not applicable on a gradient-descent trajectory, and
    `limit_identity` only where $U_2 = W_1\\Phi_2$ provably stayed put: `u2_drift` saved and at
    most `rtol` (plain descent and momentum keep it; Adam and other per-entry scalings move
    it, and the identity is not claimed for them)."""
    if trajectory.method != "descent":
        return checks
    drift = series(trajectory, "u2_drift")  # inf: a save after stop_at_loss, or no final value
    kept = jnp.asarray(False) if drift is None else jnp.all(jnp.isinf(drift) | (drift <= rtol))
    out = {}
    for key, c in checks.items():
        flow_only = ~kept if key == "limit_identity" else jnp.asarray(key in FLOW_ONLY)
        out[key] = withdraw(c, flow_only, DESCENT_REASON)
    return out


def withdraw(c, where, reason: int):
    """The `BoundCheck` `c`, made not applicable with `reason` where `where` holds."""
    nan = jnp.asarray(jnp.nan, c.worst_slack.dtype)
    return type(c)(
        c.holds & ~where,
        c.applicable & ~where,
        jnp.where(where, nan, c.worst_slack),
        jnp.where(where, nan, c.tightness),
        c.excluded,
        jnp.where(where, reason, c.reason).astype(jnp.int32),
    )
