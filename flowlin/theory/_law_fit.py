"""Testing many runs' gaps against their exact laws (docs/theory.md §2(h)): `law_fit`, and
`fit_values`, the same test from per-run values (shared with `flowlin.summarize_bounds`)."""

import math
from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._errors import as_float_array, check_number
from .._misc import full_precision
from ._law import MIN_RUNS, NOT_GAUSSIAN, DistanceLaw, RunLaw


class LawFit(eqx.Module):
    """Many runs' gaps tested against their exact laws (`law_fit`).

    **Fields:** `n` (runs tested), `excluded` (runs left out: not `usable`, see
    `flowlin.theory.RunLaw` — not converged, gap not yet at its limit — or law not
    computable), `ks_statistic`, `ks_pvalue` (Kolmogorov–Smirnov of the $F_i(d_i)$ against
    U(0, 1)), `mean_square` (observed mean of $d^2$), `expected_mean_square` (its exact
    expectation), `ci_low`, `ci_high` (its normal-approximation `level` interval: reported,
    not tested), `z`, `level`, `status` (the KS test's: `"consistent"`, `"rejected"`; `"not
    checked"`; `"not applicable"` where the law's premises fail) and `reason`.
    """

    n: int
    excluded: int
    ks_statistic: float
    ks_pvalue: float
    mean_square: float
    expected_mean_square: float
    ci_low: float
    ci_high: float
    z: float
    level: float
    status: Literal["consistent", "rejected", "not checked", "not applicable"]
    reason: str


@full_precision
def law_fit(
    distances, laws: DistanceLaw | None = None, *, level: float = 0.99, usable=None
) -> LawFit:
    r"""Test runs' gaps $d_i$ against their laws (one `DistanceLaw` with a leading run axis),
    or a batch of `RunLaw`s (`run_law` under `vmap`) passed alone.

    The verdict is "rejected" when the KS test rejects at `1 - level` (the mean of $d^2$ is
    reported, not tested), "consistent" otherwise, "not checked" (with the reason) with fewer
    than `MIN_RUNS` usable runs, "not applicable" for `RunLaw`s of inits outside the law's
    premises. `usable` (bool per run) excludes runs whose gap is not the limit gap
    (`RunLaw.usable`: not converged, round-off, U₂ moved). docs/theory.md §2(h).
    """
    call = "flowlin.theory.law_fit(...)"
    if isinstance(distances, RunLaw):
        if laws is not None or usable is not None:
            raise TypeError(
                f"`{call}`: a batch of RunLaws carries its own laws and usable flags; pass it "
                "alone (not with laws= or usable=)"
            )
        runs = distances
        if not bool(np.any(np.asarray(runs.applies))):
            nan = math.nan
            return LawFit(0, int(np.size(runs.gap)), nan, nan, nan, nan, nan, nan, nan, level,
                          "not applicable", NOT_GAUSSIAN)  # fmt: skip
        usable = np.asarray(runs.usable) & np.asarray(runs.applies)
        distances, laws = runs.gap, runs.law
    elif laws is None:
        raise TypeError("`flowlin.theory.law_fit(...)`: pass laws= with the distances")
    if not isinstance(laws, DistanceLaw):
        raise TypeError(
            f"`{call}`: laws must be a flowlin.theory.DistanceLaw (one per run, run axis first; "
            f"e.g. distance_law under jax.vmap), got {type(laws).__name__}"
        )
    d = np.asarray(as_float_array(call, "distances", distances), dtype=float).reshape(-1)
    if np.any(d < 0):
        raise ValueError(f"`{call}`: distances must be >= 0 (norms), got min {float(d.min())!r}")
    runs = laws.weights.shape[:-1]
    if d.size != math.prod(runs):
        raise ValueError(
            f"`{call}`: {d.size} distances for laws of batch shape {runs} "
            f"({math.prod(runs)} runs): one law per run"
        )
    # Each u_i is within its law's cdf_error of exact (NaN beyond cdf_error_limit).
    u, errors = laws.cdf_and_error(jnp.asarray(d, laws.weights.dtype).reshape(runs))
    errors = np.asarray(errors, dtype=float).reshape(-1)
    u_error = float(np.max(errors[np.isfinite(np.asarray(u, dtype=float).reshape(-1))], initial=0))
    # The moments of d² in float64 on the host: float32 weights of 1e-20 square to 0 (every
    # law would look like a point mass).
    w = np.asarray(laws.weights, np.float64)
    mean_square, variance_square = laws.dof * w.sum(-1), 2 * laws.dof * (w**2).sum(-1)
    return fit_values(
        d, u, mean_square, variance_square, usable=usable, level=level, u_error=u_error
    )


def fit_values(
    d, u, mean_square, variance_square, *, usable=None, level=0.99, u_error=0.0
) -> LawFit:
    """`law_fit` from per-run values (internal API, shared with `flowlin.summarize_bounds`):
    gaps `d`, their CDF values `u` (each within `u_error` of exact), and the conditional mean
    and variance of $d^2$."""
    from scipy import stats

    call = "flowlin.theory.law_fit(...)"
    check_number(call, "level", level)
    if not 0 < level < 1:
        raise ValueError(f"`{call}`: level must be in (0, 1), got {level!r}")
    d, u, mu, var = (
        np.asarray(a, dtype=float).reshape(-1) for a in (d, u, mean_square, variance_square)
    )
    ok = np.isfinite(d) & np.isfinite(u) & np.isfinite(mu) & np.isfinite(var)
    if usable is not None:
        flags = np.asarray(usable)
        if flags.dtype != bool:
            raise TypeError(f"`{call}`: usable must be booleans (one per run), got {flags.dtype}")
        if flags.size != d.size:
            raise ValueError(f"`{call}`: usable has {flags.size} entries for {d.size} runs")
        ok &= flags.reshape(-1)
    n = int(ok.sum())
    mean_sq = float(np.mean(d[ok] ** 2)) if n else math.nan
    expected = float(np.mean(mu[ok])) if n else math.nan
    sd = float(np.sqrt(np.sum(var[ok]))) / n if n else math.nan
    zq = float(stats.norm.ppf(0.5 + level / 2))
    ci = (expected - zq * sd, expected + zq * sd)
    z = (mean_sq - expected) / sd if n and sd > 0 else math.nan
    if n < MIN_RUNS:
        ks, p, status = math.nan, math.nan, "not checked"
        reason = f"{n} usable run(s); a law is tested on at least {MIN_RUNS}"
    elif not np.any(var[ok] > 0):
        ks, p, status = math.nan, math.nan, "not checked"
        reason = "every law is a point mass (d = 0 exactly: no weight or no null space); no test"
    else:
        res = stats.kstest(u[ok], "uniform")
        ks, p = float(res.statistic), float(res.pvalue)
        # The verdict is the KS test's, exact at its level (the u_i are exactly uniform under
        # the law). The mean of d² and its interval are reported, not tested: their normal
        # approximation rejected exact draws 2-5x too often for 20 runs with unequal weights.
        # Each u_i is off by at most u_error, so the exact statistic is within u_error of ks:
        # a verdict that u_error could flip is not given.
        p_low, p_high = (float(stats.kstwo.sf(ks + e, n)) for e in (u_error, -u_error))
        if u_error <= 0:
            status = "rejected" if p < 1 - level else "consistent"
        elif p_high < 1 - level:  # rejected even at the most favourable statistic
            status = "rejected"
        else:
            status = "consistent" if p_low >= 1 - level else "not checked"
        reason = (
            f"KS p = {p:.3g}; mean of d² {mean_sq:.4g} vs exact {expected:.4g} "
            f"({level:.0%} normal-approximation interval [{ci[0]:.4g}, {ci[1]:.4g}], not "
            f"tested), n = {n}"
        )
        if status == "not checked":
            reason = (
                f"the KS statistic {ks:.4g} is within the CDF values' accuracy ({u_error:.2g}) "
                f"of the level's critical value (p from {p_low:.3g} to {p_high:.3g}); {reason}"
            )
    return LawFit(
        n, int(d.size - n), ks, p, mean_sq, expected, ci[0], ci[1], z, level, status, reason
    )
