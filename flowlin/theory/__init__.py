"""Every result of docs/theory.md §2 as a function of the initialization (ICML 2021 and its v2).

Scalar results accept the initialization as a `flowlin.LinearNetwork` or as its
width-independent statistics `flowlin.GramInit`; every `rate_*` is the decay exponent $\\rho$ of
the excess loss, $L(t) - L^\\star \\le e^{-\\rho t}(L(0) - L^\\star)$; distances are Frobenius norms
of $W - W^\\star$ unless the name says otherwise. `quantities` gathers all scalars of an init
in a dict with fixed keys (`QUANTITY_KEYS`); `flowlin.check_bounds` checks them along a
trajectory.

One module per section of docs/theory.md §2: `_imbalance` (a), `_rates` (b)–(d), `_distance`
(e)–(f), `_wide` (g), `_law` and `_law_fit` (h), `_quantities` (everything at once); `_deep`
the deep linear network's results (§6: balancedness, limit identity, invariant set,
deficiency-margin envelope); `_statistics` holds the input handling and `InitStatistics`, an
initialization's statistics computed once (internal API).
"""

from ._deep import (
    balancedness as balancedness,
    deep_invariant_set_residual as deep_invariant_set_residual,
    deep_limit_identity as deep_limit_identity,
    deep_loss_bound as deep_loss_bound,
    deep_rate as deep_rate,
    deficiency_margin as deficiency_margin,
)
from ._distance import (
    distance_bound as distance_bound,
    invariant_set_residual as invariant_set_residual,
    limit_identity as limit_identity,
)
from ._imbalance import (
    full_imbalance as full_imbalance,
    imbalance as imbalance,
    imbalance_eigenvalues as imbalance_eigenvalues,
    imbalance_spreads as imbalance_spreads,
)
from ._law import (
    DistanceLaw as DistanceLaw,
    RunLaw as RunLaw,
    distance_law as distance_law,
    run_law as run_law,
    wide_limit_law as wide_limit_law,
)
from ._law_fit import LawFit as LawFit, law_fit as law_fit
from ._quantities import QUANTITY_KEYS as QUANTITY_KEYS, quantities as quantities
from ._rates import (
    excess_loss as excess_loss,
    instantaneous_rate as instantaneous_rate,
    instantaneous_rate_bound as instantaneous_rate_bound,
    lemma7_bound as lemma7_bound,
    loss_envelope as loss_envelope,
    rate_asymptotic as rate_asymptotic,
    rate_imbalance as rate_imbalance,
    rate_margin as rate_margin,
)
from ._wide import (
    Lemma1Quantities as Lemma1Quantities,
    WideNetworkBound as WideNetworkBound,
    h0 as h0,
    lemma1_quantities as lemma1_quantities,
    wide_network_bound as wide_network_bound,
)
