r"""The checks of `flowlin.check_bounds` for a deep initialization (docs/theory.md §6).

`flowlin.check_bounds(trajectory, init, problem)` with a `flowlin.DeepLinearNetwork` `init`
hands over here. `deep_checks` computes, per key of `DEEP_CHECK_KEYS`, the ingredients of a
`BoundCheck` (a `Verdict`, or `None` where an input is missing); `flowlin._bounds` turns them
into `BoundCheck`s with the same rules (tolerances, resolution floor, reasons) as the
two-layer checks. Theory is used through the declared internal API of `flowlin.theory._deep`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._deep_network import DeepLinearNetwork, check_deep_compatible
from ._method._deep import two_layer_view_gram
from ._misc import frobenius
from ._problem import Problem
from ._resolution import DRIFT_FACTOR, Observed, check_origin, series
from ._trajectory import Trajectory
from .theory._deep import (
    deep_limit_identity_of,
    deep_rate_of,
    invariant_residuals_of,
    is_balanced_of,
    margin_of,
)


#: The keys of `check_bounds` for a deep init, with the result each checks.
DEEP_CHECK_KEYS: dict[str, str] = {
    "balancedness_conserved": "C_l(t) = C_l(0), C_l = W_(l+1)ᵀW_(l+1) − W_lW_lᵀ: "
    "balancedness_drift(t) <= what the integrator allows (docs/theory.md §6(b))",
    "limit_identity": "‖W(t_f) − (W* + W_L···W_2(t_f)W1(0)Φ2Φ2ᵀ)‖_F <= ‖Σ^(−½)E(t_f)‖_F "
    "(§6(c), exact at every time)",
    "invariant_set": "‖W(t) − W*‖_F <= ‖E(t)‖_F/λr(Σ)^½ when W2W1Φ2 = Φ1ᵀW1ᵀW1Φ2 = 0 at "
    "t = 0 (§6(c))",
    "deficiency_margin_loss": "L(t) − L* <= exp(−2λr(Σ)c^(2(L−1)/L) t)(L(0) − L*) for a "
    "balanced init with deficiency margin c > 0 (§6(e))",
}

#: The init is on the invariant set when its residual $\|[W_2N; \Phi_1^\top W_1^\top N]\|_F$,
#: $N = W_1(0)\Phi_2$, is at most this many epsilons of $\|W_1\|_F(\|W_1\|_F + \|W_2\|_F)$:
#: what projecting $W_1$ onto the row space of $X$ leaves (an $O(D)$ sum of eps-relative
#: errors per entry); the result is about exactly zero residuals, so nothing coarser counts.
INVARIANT_FACTOR = 1e4


class Verdict(NamedTuple):
    """What `flowlin._bounds` turns into a `BoundCheck`: whether the run `ok` (succeeded),
    the `hypotheses`, per-time log-`slack` and `checked` mask, the late `tightness`, and the
    times `below` the resolution floor."""

    ok: Bool[Array, ""]
    hypotheses: Bool[Array, ""]
    slack: Float[Array, " times"]
    checked: Bool[Array, " times"]
    tightness: Float[Array, ""]
    below: Bool[Array, " times"] | None = None


class _Q0(NamedTuple):
    """The `Q` that `flowlin._resolution.check_origin` reads: a deep run's recorded start is
    the two-layer fingerprint of $W_1$ and the head (`two_layer_view_gram`)."""

    Q: Float[Array, "k k"]


def check_deep_init(call: str, trajectory: Trajectory, init, problem: Problem, width, alpha):
    """Refuse what `check_bounds` cannot check at depth (the kinds of network agree: see
    `check_same_kind`); return the traced mismatch of the init fingerprint (or `None`), as
    `flowlin._resolution.check_origin` does."""
    if width is not None or alpha is not None:
        raise ValueError(f"`{call}`: width= and alpha= are for two-layer inits (ICML Lemma 1)")
    if trajectory.ts.ndim != 1:
        raise ValueError(f"`{call}`: trajectory is batched; use jax.vmap over the batch")
    check_deep_compatible(call, init, problem)
    final = trajectory.final_network
    if final is not None and final.widths != init.widths:
        raise ValueError(
            f"`{call}`: trajectory's network has widths {final.widths} but init has "
            f"{init.widths}; pass the init gradient_flow was called with"
        )
    Q0 = two_layer_view_gram(init.weights[0], init.head, problem)
    return check_origin(call, trajectory, _Q0(Q0), problem)


def _log_ratio(a, b):
    """log(a/b) for a, b >= 0; log(x/0) = +inf (as in `flowlin._bounds`)."""
    return jnp.where(b == 0, jnp.inf, jnp.log(a) - jnp.log(b))


def _last(values, mask):
    """The value at the last time where `mask` holds (NaN if none)."""
    idx = jnp.max(jnp.where(mask, jnp.arange(mask.shape[0]), -1))
    return jnp.where(idx >= 0, values[jnp.maximum(idx, 0)], jnp.nan)


def _observed(trajectory: Trajectory, init: DeepLinearNetwork, problem: Problem, rtol, atol):
    r"""What every deep check reads (`flowlin._resolution.Observed`, as at two layers), with
    the noise levels of the end-to-end product $W(0) = W_L\cdots W_1(0)$."""
    W0 = init.product
    return Observed(
        trajectory, problem, rtol, atol, dtype=init.dtype, error0=frobenius(problem.error(W0)),
        distance0=frobenius(W0 - problem.min_norm), degree=init.depth,
    )  # fmt: skip


def deep_checks(
    trajectory: Trajectory, init: DeepLinearNetwork, problem: Problem, rtol, atol
) -> dict[str, Verdict | None]:
    """Every check of `DEEP_CHECK_KEYS` on one trajectory (`None`: inputs not given)."""
    with jax.default_matmul_precision("highest"):
        obs = _observed(trajectory, init, problem, rtol, atol)
        return {
            "balancedness_conserved": _conservation(trajectory, init, obs, atol),
            "limit_identity": _limit_identity(trajectory, init, problem, obs, rtol),
            "invariant_set": _invariant_set(trajectory, init, problem, obs, rtol),
            "deficiency_margin_loss": _margin_envelope(init, problem, obs, rtol),
        }


def _layer_drift(trajectory: Trajectory):
    """`balancedness_drift` (times × layers) with its value at the end appended."""
    saved = getattr(trajectory, "balancedness_drift", None)
    if saved is None:
        return None
    final = trajectory.final_values.get("balancedness_drift")
    if final is None:
        final = jnp.full(saved.shape[-1:], jnp.inf, saved.dtype)
    return jnp.concatenate([saved, final[None]])


def _conservation(trajectory, init: DeepLinearNetwork, obs: Observed, atol):
    r"""§6(b): $\|C_l(t) - C_l(0)\|_F \le \text{atol}(\|W_{l+1}(0)\|_F^2 + \|W_l(0)\|_F^2)
    + 20\|y\|\tau$ for every layer ($C_l$ is quadratic in the state $y$: an error $\delta y$
    moves it by at most $2\|y\|\|\delta y\|$; 10 for global against local error)."""
    drift = _layer_drift(trajectory)
    if drift is None:
        return None
    ws = init.weights
    scales = jnp.stack([jnp.sum(ws[i + 1] ** 2) + jnp.sum(ws[i] ** 2) for i in range(len(ws) - 1)])
    tol = atol * scales
    if trajectory.state_tolerance is not None:
        allowed = 2 * DRIFT_FACTOR * trajectory.state_norm * trajectory.state_tolerance
        tol = tol + allowed.astype(tol.dtype)
    worst = jnp.min(_log_ratio(tol, drift), axis=-1)  # the tightest layer at each time
    checked = obs.finite_t & jnp.all(jnp.isfinite(drift), axis=-1)
    tight = _last(jnp.max(drift / tol, axis=-1), checked)
    # A layer pair whose C_l is of order tiny/eps or less (float32 weights of ~1e-16) is formed
    # in subnormal numbers, if not flushed to 0: its drift says nothing, whatever its sign. Such
    # times are excluded (slack set to 0 so that `_result` leaves them out), never a verdict.
    finfo = jnp.finfo(tol.dtype)
    unresolved = jnp.any(scales < finfo.tiny / finfo.eps)
    worst = jnp.where(unresolved, jnp.zeros_like(worst), worst)
    below = jnp.broadcast_to(unresolved, worst.shape)
    return Verdict(obs.ok, jnp.asarray(True), worst, checked, tight, below)


def _limit_identity(trajectory, init, problem: Problem, obs: Observed, rtol):
    """§6(c) at the end of the run: the difference is exactly
    $-E^\\top\\Sigma^{-1/2}\\Phi_1^\\top$."""
    final = trajectory.final_network
    if final is None:
        return None
    predicted = deep_limit_identity_of(final, init, problem)
    W = final.product
    observed = frobenius(W - predicted)
    bound = frobenius(problem.error(W) / problem.sqrt_sigma[:, None])
    tolerant = (1 + rtol) * bound + obs.d_noise
    tight = jnp.where(bound > 0, observed / bound, jnp.nan)
    one = jnp.ones((1,), bool)
    return Verdict(obs.ok, jnp.asarray(True), _log_ratio(tolerant, observed)[None], one, tight)


def _invariant_set(trajectory, init, problem: Problem, obs: Observed, rtol):
    """§6(c): from an init on the invariant set, $W(t)\\Phi_2 = 0$ at every time, so the whole
    distance to $W^\\star$ is the row-space part
    $\\|\\Sigma^{-1/2}E\\| \\le \\|E\\|/\\lambda_r^{1/2}$."""
    distance = series(trajectory, "distance_to_min_norm")
    if distance is None or obs.err is None:
        return None
    a, b, n1, n2 = invariant_residuals_of(init, problem, unit_scale=True)  # scale-free test
    eps = jnp.finfo(init.dtype).eps
    on_set = jnp.sqrt(a**2 + b**2) <= INVARIANT_FACTOR * eps * n1 * (n1 + n2)
    bound = obs.err / jnp.sqrt(problem.sigma[-1])
    tolerant = (1 + rtol) * bound + obs.d_noise
    checked = obs.err_ok & jnp.isfinite(distance)
    tight = _last(distance / bound, checked & obs.resolved)
    below = bound < obs.d_noise
    return Verdict(obs.ok, on_set, _log_ratio(tolerant, distance), checked, tight, below)


def _margin_envelope(init: DeepLinearNetwork, problem: Problem, obs: Observed, rtol):
    """§6(e): the balanced-init envelope on $\\|E(t)\\| \\le e^{-\\rho t/2}\\|E(0)\\|$, checked
    as the two-layer envelopes are (t = 0 skipped: an equality there)."""
    if obs.err is None:
        return None
    c, e0 = margin_of(init, problem)
    rate = deep_rate_of(c, init.depth, problem.sigma[-1])
    hypotheses = is_balanced_of(init.weights) & (c > 0) & (e0 > 0)
    ts = obs.ts
    bound_err = jnp.exp(-0.5 * rate * ts) * e0
    tolerant = (1 + rtol) * bound_err + obs.e_noise
    slack = 2 * _log_ratio(tolerant, obs.err)  # in loss units
    log_obs = 2 * (jnp.log(obs.err) - jnp.log(e0))
    tight = _last(jnp.where(log_obs < 0, -rate * ts / log_obs, jnp.nan), obs.resolved & (ts > 0))
    checked, below = obs.err_ok & (ts > 0), bound_err < obs.e_noise
    return Verdict(obs.ok, hypotheses, slack, checked, tight, below)
