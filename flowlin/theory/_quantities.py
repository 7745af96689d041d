"""Every scalar theory quantity of an initialization at once: `QUANTITY_KEYS` and `quantities`.

The public names are re-exported by `flowlin.theory`. Internal API: `key_table` renders a key
table into a docstring (also used by `flowlin._bounds`).
"""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array

from .._custom_types import ScalarLike
from .._gram_init import GramInit
from .._misc import full_precision
from .._network import LinearNetwork
from .._problem import Problem
from ._distance import distance_bound_of
from ._rates import (
    instantaneous_rate_of,
    lemma7_bound_of,
    prop1_bound_of,
    rate_asymptotic_of,
    rate_imbalance_of,
    rate_margin_of,
)
from ._statistics import (
    InitStatistics,
    WidthLike,
    check_wide_arguments,
    check_width_fits,
    gram_and_residuals,
    width_of,
)
from ._wide import WideNetworkBound, h0_of, wide_network_bound_of


#: The keys of `quantities`, in order, with what each holds (also the sweep's variable names).
QUANTITY_KEYS: dict[str, str] = {
    "c": "Δ = c = [λr(Λ)]₊ + [λm(−Λ)]₊ (ICML Thm 1)",
    "spread_plus": "Δ₊ = [λ1(Λ)]₊ − [λr(Λ)]₊ (v2)",
    "spread_minus": "Δ₋ = [λ1(−Λ)]₊ − [λm(−Λ)]₊ (v2)",
    "lambda_r": "[λr(Λ)]₊",
    "lambda_m_neg": "[λm(−Λ)]₊",
    "c_margin": "c(0) of v2 Thm 3 (dimensionless; rate_margin / λr(Σ))",
    "c_asymptotic": "c(∞) of v2 Cor 6 (dimensionless)",
    "rate_imbalance": "2 λr(Σ) c (ICML Thm 1)",
    "rate_margin": "λr(Σ) c(0) (v2 Thm 3)",
    "rate_asymptotic": "λr(Σ) c(∞) (v2 Cor 6)",
    "rate_initial": "exact instantaneous rate ρ(0) (v2 Lemma 7); NaN if E(0) = 0",
    "rate_bound_lemma7": "v2 Lemma 7 bound at t = 0",
    "rate_bound_prop1": "v2 Prop 1 bound at t = 0",
    "theorem1_applies": "c > 0: ICML Thm 1 and the deterministic distance bound say something",
    "excess_loss": "L(0) − L* = ½‖E(0)‖²",
    "error_norm": "‖E(0)‖_F",
    "product_norm": "‖U1(0)V(0)ᵀ‖_F",
    "product_min_singular_value": "σ_min(U1(0)V(0)ᵀ)",
    "residual_v": "‖V(0)U2(0)ᵀ‖_F (ICML Prop 1)",
    "residual_u1": "‖U1(0)U2(0)ᵀ‖_F (ICML Prop 1)",
    "invariant_residual": "‖[V(0)U2(0)ᵀ; U1(0)U2(0)ᵀ]‖_F",
    "distance_initial": "‖W(0) − W*‖_F",
    "distance_bound": "deterministic bound on ‖W(∞) − W*‖_F (§2(f)); inf if c = 0",
    "width": "h used by the wide-network bounds (NaN if unknown)",
    "h0": "h0 of ICML Lemma 1 at this delta",
    "width_threshold": "h0^{1/(4α−1)} (ICML Thm 2); NaN if alpha not given or not in (1/4, 1/2]",
    "lemma1_applies": "1/4 < α ≤ 1/2 and h > h0",
    "theorem2_applies": "1/4 < α ≤ 1/2 and h > h0^{1/(4α−1)}",
    "lemma1_imbalance_bound": "h^{1−2α} (lower bound on c); NaN unless lemma1_applies",
    "lemma1_residual_bound": "2√(m+r) b / h^{2α−1/2}; NaN unless lemma1_applies",
    "lemma1_product_bound": "2√m b / h^{2α−1/2}; NaN unless lemma1_applies",
    "wide_network_bound": "ICML Thm 2 bound on ‖W(∞) − W*‖₂; NaN unless theorem2_applies",
}


@full_precision
def quantities(
    init: LinearNetwork | GramInit,
    problem: Problem,
    *,
    width: WidthLike | None = None,
    alpha: ScalarLike | None = None,
    delta: ScalarLike = 0.05,
) -> dict[str, Array]:
    r"""Every scalar theory quantity of an initialization, as a dict with a fixed key set.

    The keys and their meaning are `flowlin.theory.QUANTITY_KEYS` (the same keys whatever the
    inputs; NaN where a quantity is not defined or a theorem does not apply, with the
    `*_applies` flags saying which). All values are 0-d arrays (bool for the flags), so the
    function works under `jax.jit` and `jax.vmap` (e.g. over a batch of inits and widths).

    **Arguments:**

    - `init`: a `flowlin.LinearNetwork` or a `flowlin.GramInit`.
    - `problem`: the `flowlin.Problem`.
    - `width`: the true width $h$ for the wide-network bounds (may be traced). Default: the
      network's width; pass it for zero-padded networks and for a `GramInit` (without it the
      width-dependent keys are NaN). For a concrete network, a width above its rows or below
      its nonzero rows is refused: it cannot be the width the network was drawn at.
    - `alpha`: the init's scaling exponent (`flowlin.init.paper`), for ICML Lemma 1 /
      Theorem 2; `None` (or outside $(1/4, 1/2]$) makes those keys NaN and their flags False.
    - `delta`: the failure probability of Lemma 1 / Theorem 2.

    **Returns:** `dict[str, Array]` with the keys below (`QUANTITY_KEYS`).

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=1)
    net = flowlin.init.paper(jax.random.key(1), D=40, m=1, h=100, alpha=0.5)
    q = flowlin.theory.quantities(net, problem, alpha=0.5)
    q["c"], q["rate_imbalance"], q["distance_bound"], q["theorem2_applies"]
    ```

    docs/theory.md §2(a)–(g).
    """
    call = "flowlin.theory.quantities(...)"
    gram, residuals = gram_and_residuals(call, init, problem)
    check_wide_arguments(call, width, alpha, delta)
    check_width_fits(call, init, width)
    dtype = gram.Q.dtype
    # Numbers become arrays so that the compiled function is reused across their values.
    h = width_of(init, width)
    h = None if h is None else jnp.asarray(h, dtype)
    alpha = None if alpha is None else jnp.asarray(alpha, dtype)
    return _quantities(gram, residuals, problem, h, alpha, jnp.asarray(delta, dtype))


@eqx.filter_jit
def _quantities(gram, residuals, problem, h, alpha, delta):
    stats = InitStatistics(gram, problem, residuals)
    dtype = gram.Q.dtype
    if h is None or alpha is None:
        wide = _no_wide_network_bound(problem, delta, dtype)
    else:
        wide = wide_network_bound_of(h, alpha, delta, problem)
    out = {**_init_quantities(stats, problem), **_wide_quantities(h, wide, dtype)}
    assert tuple(out) == tuple(QUANTITY_KEYS)
    return out


def _no_wide_network_bound(problem, delta, dtype) -> WideNetworkBound:
    """The `WideNetworkBound` when the width or alpha is unknown: nothing applies."""
    nan = jnp.asarray(jnp.nan, dtype)
    false = jnp.asarray(False)
    return WideNetworkBound(
        h0=h0_of(problem, delta),
        width_threshold=nan,
        lemma1_applies=false,
        theorem2_applies=false,
        imbalance=nan,
        invariant_residual=nan,
        product_norm=nan,
        distance=nan,
        confidence=1 - delta,
    )


def _init_quantities(stats: InitStatistics, problem: Problem) -> dict[str, Array]:
    """The keys of `QUANTITY_KEYS` up to `distance_bound`: what the init alone says."""
    lr = stats.lambda_r_sigma
    rate_m = rate_margin_of(stats, stats.error_norm)
    rate_a = rate_asymptotic_of(stats)
    out = {
        "c": stats.c,
        "spread_plus": stats.spread_plus,
        "spread_minus": stats.spread_minus,
        "lambda_r": stats.lambda_r,
        "lambda_m_neg": stats.lambda_m_neg,
        "c_margin": rate_m / lr,
        "c_asymptotic": rate_a / lr,
        "rate_imbalance": rate_imbalance_of(stats),
        "rate_margin": rate_m,
        "rate_asymptotic": rate_a,
        "rate_initial": instantaneous_rate_of(stats.gram, problem),
        "rate_bound_lemma7": lemma7_bound_of(stats.gram, problem),
        "rate_bound_prop1": prop1_bound_of(stats, stats.product_min_singular_value),
        "theorem1_applies": stats.c > 0,
        "excess_loss": 0.5 * stats.error_norm**2,
        "error_norm": stats.error_norm,
        "product_norm": stats.product_norm,
        "product_min_singular_value": stats.product_min_singular_value,
        "residual_v": stats.residual_v,
        "residual_u1": stats.residual_u1,
        "invariant_residual": stats.invariant_residual,
        "distance_initial": stats.distance_initial,
        "distance_bound": distance_bound_of(stats, None),
    }
    return {k: jnp.asarray(v) for k, v in out.items()}


def _wide_quantities(h, wide: WideNetworkBound, dtype) -> dict[str, Array]:
    """The keys of `QUANTITY_KEYS` from `width` on: ICML Lemma 1 and Theorem 2."""
    out = {
        "width": jnp.asarray(jnp.nan, dtype) if h is None else h,
        "h0": wide.h0,
        "width_threshold": wide.width_threshold,
        "lemma1_applies": wide.lemma1_applies,
        "theorem2_applies": wide.theorem2_applies,
        "lemma1_imbalance_bound": wide.imbalance,
        "lemma1_residual_bound": wide.invariant_residual,
        "lemma1_product_bound": wide.product_norm,
        "wide_network_bound": wide.distance,
    }
    return {k: jnp.asarray(v) for k, v in out.items()}


def key_table(keys: dict[str, str]) -> str:
    """A docstring's Markdown list of `keys` (name: meaning), indented for a function body."""
    return "\n".join(f"    - `{k}`: {v}" for k, v in keys.items())


# One source of truth for the key lists: the constant, rendered into the docstring.
quantities.__doc__ = (
    (quantities.__doc__ or "") + "\n    **Keys:**\n\n" + key_table(QUANTITY_KEYS) + "\n"
)
