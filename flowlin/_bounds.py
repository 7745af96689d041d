"""Checking every bound of docs/theory.md §2 along a computed trajectory.

`check_bounds` validates its inputs and hands them to three jitted functions: `_check`, given
the trajectory without its weights (one program for every width), builds what every check
reads once (`_resolution.Observed`: the init's `InitStatistics`, the trajectory's times and
errors, the noise levels) and runs one small function per bound family; `_check_limit_identity`,
the one check that reads the weights (compiled per width); and `_merge`, which puts them in
`CHECK_KEYS` order and withdraws them for a mismatched init or a gradient-descent run.
Theory is used through the declared internal API of `flowlin.theory` (`InitStatistics` and the
`*_of` formulas).
"""

import dataclasses

import equinox as eqx
import jax.numpy as jnp

from ._bound_check import BoundCheck as BoundCheck
from ._custom_types import ScalarLike
from ._deep_bounds import DEEP_CHECK_KEYS, check_deep_init, deep_checks
from ._deep_network import DeepLinearNetwork
from ._gram_init import GramInit
from ._misc import frobenius, full_precision
from ._network import LinearNetwork
from ._problem import Problem
from ._resolution import (
    DRIFT_FACTOR,
    Observed,
    check_origin,
    check_same_kind,
    check_tolerances,
    for_descent,
    series,
    withdraw,
)
from ._trajectory import Trajectory
from .theory._distance import distance_bound_of, limit_identity_of
from .theory._quantities import key_table
from .theory._rates import prop1_bound_of, rate_imbalance_of, rate_margin_of
from .theory._statistics import (
    InitStatistics,
    WidthLike,
    check_wide_arguments,
    check_width_fits,
    gram_and_residuals,
    width_of,
)
from .theory._wide import WideNetworkBound, lemma1_quantities_of, wide_network_bound_of


# Default tolerances: `flowlin._resolution.default_tolerance` (1e-6 for flowlin's float64
# solves, ~1e-3 in float32). `atol` is relative to the run's scale (‖E(0)‖_F + ‖Ỹ‖_F for
# errors, ‖W(0) - W*‖_F + ‖W*‖_F for distances, ‖U1(0)‖² + ‖V(0)‖² for the imbalance): with
# flowlin's float64 solver tolerances the computed ‖E(t)‖ stops decaying at ~1e-8 of that scale
# (the solver's absolute error on Σ^½U1Vᵀ = Ỹ - E): below it the excess loss is noise.
#: v2 Proposition 1's bound moves by at most 8 λr(Σ)‖δΛ‖₂ when the imbalance moves by δΛ
#: (each of Δ₊, Δ₋, Δ moves by ≤ 2‖δΛ‖₂; the bound's partial derivatives in them are ≤ 1, 1, 2):
#: the slack the integrator's imbalance drift needs.
_PROP1_LIPSCHITZ = 8.0

#: The keys of `check_bounds`, with the result each checks.
CHECK_KEYS: dict[str, str] = {
    "imbalance_conserved": "Λ(t) = Λ(0): imbalance_drift(t) <= atol (docs/theory.md §2(a))",
    "loss_imbalance": "L(t) − L* <= exp(−2λr(Σ)c t)(L(0) − L*) (ICML Thm 1)",
    "loss_margin": "L(t) − L* <= exp(−λr(Σ)c(0) t)(L(0) − L*) (v2 Thm 3)",
    "loss_margin_local": "L(t_{k+1}) − L* <= exp(−λr(Σ)c(t_k)(t_{k+1} − t_k))(L(t_k) − L*) "
    "between consecutive saved times (v2 Thm 3 local form, Cor 4–5)",
    "rate_instantaneous": "ρ(t) >= v2 Prop 1 bound at σ_min(U1(t)V(t)ᵀ)",
    "distance_deterministic": "‖W(t) − W*‖_F <= sqrt(B² + ‖E(t)‖²/λr(Σ)), B the deterministic "
    "bound of §2(f)",
    "distance_a_posteriori": "‖W(t) − W*‖_F <= sqrt(B(t)² + ‖E(t)‖²/λr(Σ)), "
    "B(t) = ‖G0‖ exp(λ1(Σ)^½ ∫₀ᵗ‖E‖) (§2(f))",
    "distance_wide_network": "‖W(t) − W*‖ <= sqrt(B² + ‖E(t)‖²/λr(Σ)), B of ICML Thm 2 "
    "(probability >= 1 − delta)",
    "limit_identity": "‖W(t_f) − (W* + V(t_f)U2(0)ᵀΦ2ᵀ)‖_F <= ‖E(t_f)‖_F/λr(Σ)^½ "
    "(ICML Prop 1 at finite time)",
    "lemma1_imbalance": "c > h^{1−2α} (ICML Lemma 1, probability >= 1 − delta)",
    "lemma1_residual": "‖[VU2ᵀ; U1U2ᵀ]‖_F <= 2√(m+r) b/h^{2α−½} (ICML Lemma 1)",
    "lemma1_product": "‖U1Vᵀ‖_F <= 2√m b/h^{2α−½} (ICML Lemma 1)",
}


def _last(values, mask):
    """values[last index where mask], NaN if none."""
    idx = jnp.arange(values.shape[-1])
    last = jnp.max(jnp.where(mask, idx, -1))
    return jnp.where(last >= 0, values[jnp.maximum(last, 0)], jnp.nan)


def _result(ok, hypotheses, slack, checked, tightness, below=None) -> BoundCheck:
    """Combine per-time log-slacks (>= 0 where the bound held) into a `BoundCheck`: `ok`
    whether the run succeeded, `hypotheses` whether the bound says something, `below` the
    times where the bound is under the resolution floor (excluded where they passed)."""
    # As arrays: a Python `True` would make `~hypotheses` the integer -2 (truthy), reason 1.
    ok, hypotheses = jnp.asarray(ok, bool), jnp.asarray(hypotheses, bool)
    excluded = jnp.zeros_like(checked) if below is None else checked & below & (slack >= 0)
    any_time = jnp.any(checked)  # a time to check at all (else: reason 2)
    checked = checked & ~excluded
    any_checked = jnp.any(checked)
    applicable = ok & hypotheses & any_checked
    worst = jnp.min(jnp.where(checked, slack, jnp.inf))
    nan = jnp.asarray(jnp.nan, slack.dtype)
    unchecked = jnp.where(any_time, 4, 2)
    reason = jnp.where(~hypotheses, 1, jnp.where(~ok, 3, jnp.where(~any_checked, unchecked, 0)))
    return BoundCheck(
        holds=applicable & (worst >= 0),
        applicable=applicable,
        worst_slack=jnp.where(applicable, worst, nan),
        tightness=jnp.where(applicable, tightness, nan),
        excluded=jnp.where(ok, jnp.sum(excluded), 0).astype(jnp.int32),  # none if not checked
        reason=reason.astype(jnp.int32),
    )


def _not_applicable(dtype) -> BoundCheck:
    """A bound whose inputs were not given (`reason` 2)."""
    nan = jnp.asarray(jnp.nan, dtype)
    false = jnp.asarray(False)
    zero, two = jnp.asarray(0, jnp.int32), jnp.asarray(2, jnp.int32)
    return BoundCheck(false, false, nan, nan, zero, two)


def _log_ratio(a, b):
    """log(a/b) for a, b >= 0, with log(x/0) = +inf and log(0/0) = +inf (a vacuous check)."""
    with_b = jnp.log(a) - jnp.log(b)
    return jnp.where(b == 0, jnp.inf, with_b)


@full_precision
def check_bounds(
    trajectory: Trajectory,
    init: LinearNetwork | GramInit | DeepLinearNetwork,
    problem: Problem,
    *,
    width: WidthLike | None = None,
    alpha: ScalarLike | None = None,
    delta: ScalarLike = 0.05,
    rtol: ScalarLike | None = None,
    atol: ScalarLike | None = None,
) -> dict[str, BoundCheck]:
    r"""Check every bound of docs/theory.md §2 at every saved time of a gradient-flow trajectory.

    Returns one `flowlin.BoundCheck` per key of `flowlin.CHECK_KEYS` — always the same keys,
    so a sweep can stack them; a bound whose hypotheses fail or whose diagnostics were not saved
    is reported `applicable=False` (and then never `holds`). The saved times are checked together
    with the end of the run (`final_time`, `final_values`); saved entries equal to `inf` (times
    after an early stop) are ignored.

    **Tolerances** (for the solver's error and round-off). By default both `rtol` and `atol`
    are derived from the arithmetic: max(1e-6, 100 × the solver's rtol, 1e4 × the dtype's
    epsilon), i.e. 1e-6 for flowlin's float64 solves (rtol 1e-8) and ~1.2e-3 in float32
    (rtol 1e-5, eps 1.2e-7). Times where a bound is below the resulting absolute floor and the
    observed value is too are excluded and counted (`BoundCheck.excluded`); in float32 with
    x64 off, a warning (once per process) says what float32 cannot resolve. A given `rtol` or
    `atol` below what the run resolves (100 × the solver's rtol, 1e4 × epsilon) is raised to
    it, with a warning. The tolerances:

    - losses are compared through $\|E\| = \sqrt{2(L - L^\star)}$: observed
      $\|E(t)\| \le (1 + \text{rtol})\,\text{bound} + \text{atol}(\|E(0)\|_F + \|\tilde Y\|_F)$
      (the computed $\|E\|$ is only as accurate as the solver's absolute error on
      $\Sigma^{1/2}U_1V^\top = \tilde Y - E$, ~1e-8 of that scale by default);
    - distances: observed $\le (1 + \text{rtol})\,\text{bound}
      + \text{atol}(\|W(0) - W^\star\|_F + \|W^\star\|_F)$;
    - the Proposition 1 rate: $\rho(t) \ge (1 - \text{rtol})\,\text{bound} - 8\lambda_r(\Sigma)
      \,\text{atol}(\|U_1(0)\|_F^2 + \|V(0)\|_F^2)$ (the bound uses the conserved $\Lambda(0)$; the
      computed $\Lambda(t)$ drifts by the integrator's error, see `imbalance_conserved`);
    - `imbalance_conserved`: `imbalance_drift` $\le$ atol $+ 20\|y\|\tau\mu/(\|U_1(0)\|_F^2
      + \|V(0)\|_F^2)$, what the integrator's error allows ($\Lambda$ is quadratic in the
      state $y$; $\|y\|$, $\tau$: `Trajectory.state_norm`, `state_tolerance`; $\mu = 1$, or
      $\max(1, 1/\lambda_r(\Sigma))$ for the gram state): honest also for tiny inits;
    - ICML Lemma 1 (a statement about the random init): no tolerance.

    Distances at a finite time $t$ are bounded through
    $\|W(t) - W^\star\|_F^2 = \|\Sigma^{-1/2}E(t)\|_F^2 + \|V(t)U_2(0)^\top\|_F^2$ and
    $\|V(t)U_2^\top\|_F \le \|[V(t)U_2^\top; U_1(t)U_2^\top]\|_F$, which every distance bound of
    §2(f)–(g) controls at every $t$ (its proof bounds the growth of that matrix); so each is
    checked as $\sqrt{B^2 + \|E(t)\|^2/\lambda_r(\Sigma)}$. ICML Theorem 2 bounds the spectral
    norm of $\Theta(\infty) - \hat\Theta$; it is checked on the Frobenius `distance_to_min_norm`,
    which is larger (conservative; equal for $m = 1$) — and its proof's chain bounds the
    Frobenius norm too.

    **Arguments:**

    - `trajectory`: a `flowlin.Trajectory` of `flowlin.gradient_flow` (any method) started at
      `init` on `problem`: its recorded start (`Trajectory.init_fingerprint`) must match them,
      or a `ValueError` says so (another seed, scale or data draw). Bounds use the
      diagnostics `excess_loss`, `rate`, `product_min_singular_value`,
      `distance_to_min_norm`, `error_integral`, `imbalance_drift` (whichever were saved) and
      `final_network` (for `limit_identity`). For a batch, `jax.vmap` this function.
      Gradient descent trajectories can be checked too: the theorems about the flow are then
      not applicable (`reason` 6), and `limit_identity` is checked only where `u2_drift`
      was saved and stayed within `rtol` (so not for Adam).
    - `init`: the initialization, a `flowlin.LinearNetwork` or `flowlin.GramInit`
      (`limit_identity` needs the network); or a `flowlin.DeepLinearNetwork`, checked for the
      keys of `flowlin.DEEP_CHECK_KEYS` instead (docs/theory.md §6(g), same rules).
    - `problem`: the `flowlin.Problem`.
    - `width`, `alpha`, `delta`: for ICML Lemma 1 / Theorem 2 (as in
      `flowlin.theory.quantities`): `alpha=None` makes those checks not applicable; `width`
      defaults to the network's width (pass the true width for a zero-padded network or a
      `GramInit`; a width outside [nonzero rows, rows] of a network is refused).
    - `rtol`, `atol`: the tolerances above (default `None`: derived as said there).

    **Returns:** `dict[str, BoundCheck]` with the keys below (`flowlin.CHECK_KEYS`).

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    traj = flowlin.gradient_flow(net, problem, t1=50.0)
    checks = flowlin.check_bounds(traj, net, problem)
    {k: bool(c.holds) for k, c in checks.items() if c.applicable}
    # a batch: jax.vmap(lambda t, n: flowlin.check_bounds(t, n, problem))(trajs, nets)
    ```
    """
    call = "flowlin.check_bounds(...)"
    if not isinstance(trajectory, Trajectory):
        raise TypeError(
            f"`{call}`: trajectory must be a flowlin.Trajectory, got {type(trajectory).__name__}"
        )
    check_same_kind(call, trajectory, init)
    if isinstance(init, DeepLinearNetwork):  # the checks of DEEP_CHECK_KEYS (_deep_bounds.py)
        mismatch = check_deep_init(call, trajectory, init, problem, width, alpha)
        tols = (jnp.asarray(x, init.dtype) for x in check_tolerances(call, trajectory, rtol, atol))
        return _check_deep(trajectory, init, problem, *tols, mismatch=mismatch)
    gram, residuals = gram_and_residuals(call, init, problem)
    if trajectory.ts.ndim != 1:
        raise ValueError(
            f"`{call}`: trajectory is batched (ts.shape={trajectory.ts.shape}); use jax.vmap "
            "over the batch, e.g. jax.vmap(lambda t, n: flowlin.check_bounds(t, n, problem))"
        )
    rtol, atol = check_tolerances(call, trajectory, rtol, atol)
    check_wide_arguments(call, width, alpha, delta)
    check_width_fits(call, init, width)
    mismatch = check_origin(call, trajectory, gram, problem)
    dtype = gram.Q.dtype
    # Numbers become arrays so that the compiled check is reused across their values.
    h = width_of(init, width)
    h = None if h is None else jnp.asarray(h, dtype)
    alpha = None if alpha is None else jnp.asarray(alpha, dtype)
    delta, rtol, atol = (jnp.asarray(x, dtype) for x in (delta, rtol, atol))
    # Only `limit_identity` reads the weights: every other check is one compiled program for
    # all widths (the trajectory passed to it carries no weights), and a new width compiles
    # only the small `_check_limit_identity`.
    core = dataclasses.replace(trajectory, networks=None, final_network=None)
    out, limit_args = _check(core, gram, residuals, problem, h, alpha, delta, rtol, atol)
    out.update(_check_limit_identity(trajectory.final_network, init, problem, *limit_args))
    return _merge(core, out, rtol, mismatch)


@eqx.filter_jit
def _check(trajectory, gram, residuals, problem, h, alpha, delta, rtol, atol):
    """Every family of checks on one trajectory but `limit_identity`; and what that one needs
    of the rest (`_check_limit_identity`'s arguments after the network and problem)."""
    stats = InitStatistics(gram, problem, residuals)
    obs = Observed.of_statistics(trajectory, stats, problem, rtol, atol)
    wide = None if h is None or alpha is None else wide_network_bound_of(h, alpha, delta, problem)
    out = {
        **_check_conservation(trajectory, obs),
        **_check_envelopes(obs),
        **_check_rate(trajectory, obs),
        **_check_distances(trajectory, obs, wide),
        **_check_lemma1(obs, wide),
    }
    return out, (obs.ok, stats.lambda_r_sigma, obs.rtol, obs.d_noise)


@eqx.filter_jit
def _merge(trajectory, out, rtol, mismatch):
    """The checks in `CHECK_KEYS` order, withdrawn where the init or problem is not the
    trajectory's (`mismatch`, traced: see `check_origin`) and for gradient descent."""
    if mismatch is not None:
        out = {k: withdraw(c, mismatch, 5) for k, c in out.items()}
    return for_descent(trajectory, {k: out[k] for k in CHECK_KEYS}, rtol)


@eqx.filter_jit
def _check_deep(trajectory, init, problem, rtol, atol, *, mismatch=None):
    out = deep_checks(trajectory, init, problem, rtol, atol)
    out = {k: _not_applicable(rtol.dtype) if v is None else _result(*v) for k, v in out.items()}
    if mismatch is not None:
        out = {k: withdraw(c, mismatch, 5) for k, c in out.items()}
    return for_descent(trajectory, {k: out[k] for k in DEEP_CHECK_KEYS}, rtol)


def _check_conservation(trajectory: Trajectory, obs: Observed) -> dict[str, BoundCheck]:
    """(a) conservation of Λ: `imbalance_drift` <= atol + the drift the integrator's error
    allows (see `check_bounds`)."""
    drift = series(trajectory, "imbalance_drift")
    if drift is None:
        return {"imbalance_conserved": _not_applicable(obs.dtype)}
    tol = obs.atol
    if trajectory.state_tolerance is not None:
        stats = obs.stats
        mu = 1.0 if trajectory.method != "gram" else jnp.maximum(1.0, 1 / stats.lambda_r_sigma)
        allowed = 2 * DRIFT_FACTOR * trajectory.state_norm * trajectory.state_tolerance * mu
        tol = tol + (allowed / stats.weight_scale).astype(obs.dtype)
    checked = obs.finite_t & jnp.isfinite(drift)
    return {
        "imbalance_conserved": _result(
            obs.ok, True, _log_ratio(tol, drift), checked, _last(drift / tol, checked)
        )
    }


def _check_envelopes(obs: Observed) -> dict[str, BoundCheck]:
    """(b), (d) the loss envelopes from t = 0 (ICML Theorem 1, v2 Theorem 3) and v2 Theorem 3's
    local form between consecutive checked times."""
    stats, err, ts = obs.stats, obs.err, obs.ts
    if err is None:
        keys = ("loss_imbalance", "loss_margin", "loss_margin_local")
        return {key: _not_applicable(obs.dtype) for key in keys}
    e0, rtol = stats.error_norm, obs.rtol

    # ‖E(t)‖ <= (1 + rtol)·e^{-ρt/2}‖E(0)‖ + atol‖E(0)‖.
    def envelope(rate):
        bound_err = jnp.exp(-0.5 * rate * ts) * e0
        tolerant = (1 + rtol) * bound_err + obs.e_noise
        slack = 2 * _log_ratio(tolerant, err)  # in loss units: log(bound/observed) of L - L*
        log_obs = 2 * (jnp.log(err) - jnp.log(e0))
        tight = _last(
            jnp.where(log_obs < 0, -rate * ts / log_obs, jnp.nan), obs.resolved & (ts > 0)
        )
        # t = 0 is excluded: there the envelope equals the observed value by construction.
        checked, below = obs.err_ok & (ts > 0), bound_err < obs.e_noise
        return _result(obs.ok, (rate > 0) & (e0 > 0), slack, checked, tight, below)

    # The local form: from each checked time to the next.
    dt = ts[1:] - ts[:-1]
    rate_k = rate_margin_of(stats, err[:-1])
    bound_err = jnp.exp(-0.5 * rate_k * jnp.where(jnp.isfinite(dt), dt, 0.0)) * err[:-1]
    tolerant = (1 + rtol) * bound_err + 2 * obs.e_noise  # both endpoints carry the noise
    slack = 2 * _log_ratio(tolerant, err[1:])
    checked = obs.err_ok[:-1] & obs.err_ok[1:] & (dt > 0)
    observed_rate = -2 * (jnp.log(err[1:]) - jnp.log(err[:-1])) / dt
    tight = _last(rate_k / observed_rate, checked & obs.resolved[1:] & (observed_rate > 0))
    local = _result(obs.ok, e0 > 0, slack, checked, tight, bound_err < 2 * obs.e_noise)
    return {
        "loss_imbalance": envelope(rate_imbalance_of(stats)),
        "loss_margin": envelope(rate_margin_of(stats, e0)),
        "loss_margin_local": local,
    }


def _check_rate(trajectory: Trajectory, obs: Observed) -> dict[str, BoundCheck]:
    """(c) v2 Proposition 1 at every saved time."""
    rate = series(trajectory, "rate")
    sigma = series(trajectory, "product_min_singular_value")
    if rate is None or sigma is None:
        return {"rate_instantaneous": _not_applicable(obs.dtype)}
    stats = obs.stats
    bound = prop1_bound_of(stats, sigma)
    drift_slack = _PROP1_LIPSCHITZ * stats.lambda_r_sigma * obs.atol * stats.weight_scale
    tolerant = (1 - obs.rtol) * bound - drift_slack
    slack = jnp.where(tolerant > 0, _log_ratio(rate, tolerant), jnp.inf)
    checked = obs.finite_t & jnp.isfinite(rate) & jnp.isfinite(bound)
    # The rate is a ratio of two quantities quadratic in E: where ‖E‖² underflows (to zero or
    # a subnormal, without full precision) the saved rate is 0/0, not a measurement.
    below = tolerant <= 0
    if obs.err is not None:
        finfo = jnp.finfo(obs.dtype)
        unresolved = ~(obs.err**2 > finfo.tiny / finfo.eps)
        slack, below = jnp.where(unresolved, jnp.inf, slack), below | unresolved
    # Applicable where the bound says more than its own tolerance (a bound that is zero in
    # exact arithmetic, e.g. h < min(r, m), is round-off, not a claim).
    tight = _last(bound / rate, checked if obs.resolved is None else checked & obs.resolved)
    return {"rate_instantaneous": _result(obs.ok, True, slack, checked, tight, below)}


def _check_distances(
    trajectory: Trajectory, obs: Observed, wide: WideNetworkBound | None
) -> dict[str, BoundCheck]:
    """(f), (g) distances: ‖W(t) - W*‖ <= sqrt(B(t)² + ‖E(t)‖²/λr), B deterministic (§2(f)),
    a-posteriori (§2(f)) or ICML Theorem 2's."""
    distance = series(trajectory, "distance_to_min_norm")
    stats = obs.stats

    def distance_check(B, applicable):
        if distance is None or obs.err is None:
            return _not_applicable(obs.dtype)
        bound = jnp.sqrt(B**2 + obs.err**2 / stats.lambda_r_sigma)
        tolerant = (1 + obs.rtol) * bound + obs.d_noise
        checked = obs.err_ok & jnp.isfinite(distance)
        slack = _log_ratio(tolerant, distance)
        tight = _last(distance / bound, checked)
        return _result(obs.ok, applicable, slack, checked, tight, bound < obs.d_noise)

    out = {"distance_deterministic": distance_check(distance_bound_of(stats, None), stats.c > 0)}
    integral = series(trajectory, "error_integral")
    if integral is None:
        out["distance_a_posteriori"] = _not_applicable(obs.dtype)
    else:
        B = distance_bound_of(stats, jnp.where(obs.finite_t, integral, jnp.inf))
        out["distance_a_posteriori"] = distance_check(B, jnp.asarray(True))
    if wide is None:
        out["distance_wide_network"] = _not_applicable(obs.dtype)
    else:
        B = jnp.where(wide.theorem2_applies, wide.distance, 0.0)
        out["distance_wide_network"] = distance_check(B, wide.theorem2_applies)
    return out


@eqx.filter_jit
def _check_limit_identity(
    final: LinearNetwork | None, init, problem: Problem, ok, lambda_r_sigma, rtol, d_noise
) -> dict[str, BoundCheck]:
    """(e) ICML Proposition 1 at the end of the run (needs the init's network: compiled for
    each width, and small)."""
    if final is None or not isinstance(init, LinearNetwork):
        return {"limit_identity": _not_applicable(rtol.dtype)}
    predicted = limit_identity_of(final, init, problem)
    observed = frobenius(final.product - predicted)
    bound = frobenius(problem.error(final.product)) / jnp.sqrt(lambda_r_sigma)
    tolerant = (1 + rtol) * bound + d_noise
    return {
        "limit_identity": _result(
            ok,
            True,
            _log_ratio(tolerant, observed)[None],
            jnp.ones((1,), bool),
            jnp.where(bound > 0, observed / bound, jnp.nan),
        )
    }


def _check_lemma1(obs: Observed, wide: WideNetworkBound | None) -> dict[str, BoundCheck]:
    """(g) ICML Lemma 1, about the init itself (no tolerance); like every check, not checked
    (reason 3) on a run that did not succeed, as a sweep stores it."""
    keys = ("lemma1_imbalance", "lemma1_residual", "lemma1_product")
    if wide is None:
        return {key: _not_applicable(obs.dtype) for key in keys}
    q = lemma1_quantities_of(obs.stats)
    one = jnp.ones((1,), bool)
    applies = wide.lemma1_applies
    # strict inequality c > h^{1-2α}: equality counts as a failure
    slack_c = jnp.where(
        q.imbalance > wide.imbalance, _log_ratio(q.imbalance, wide.imbalance), -jnp.inf
    )
    return {
        "lemma1_imbalance": _result(
            obs.ok, applies, slack_c[None], one, wide.imbalance / q.imbalance
        ),
        "lemma1_residual": _result(
            obs.ok,
            applies,
            _log_ratio(wide.invariant_residual, q.invariant_residual)[None],
            one,
            q.invariant_residual / wide.invariant_residual,
        ),
        "lemma1_product": _result(
            obs.ok,
            applies,
            _log_ratio(wide.product_norm, q.product_norm)[None],
            one,
            q.product_norm / wide.product_norm,
        ),
    }


# One source of truth for the key list: the constant, rendered into the docstring.
check_bounds.__doc__ = (
    (check_bounds.__doc__ or "") + "\n    **Keys:**\n\n" + key_table(CHECK_KEYS) + "\n"
)
