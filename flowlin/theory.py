"""Every result of theory.md §2 as a function of the initialization (ICML 2021 and its v2).

Scalar results accept the initialization as a `flowlin.LinearNetwork` or as its
width-independent statistics `flowlin.GramInit`; every `rate_*` is the decay exponent $\\rho$ of
the excess loss, $L(t) - L^\\star \\le e^{-\\rho t}(L(0) - L^\\star)$; distances are Frobenius norms
of $W - W^\\star$ unless the name says otherwise. `quantities` gathers all scalars of an init
in a dict with fixed keys (`QUANTITY_KEYS`); `flowlin.check_bounds` checks them along a
trajectory.
"""

from ._theory import (
    QUANTITY_KEYS as QUANTITY_KEYS,
    Lemma1Quantities as Lemma1Quantities,
    WideNetworkBound as WideNetworkBound,
    distance_bound as distance_bound,
    excess_loss as excess_loss,
    full_imbalance as full_imbalance,
    h0 as h0,
    imbalance as imbalance,
    imbalance_eigenvalues as imbalance_eigenvalues,
    imbalance_spreads as imbalance_spreads,
    instantaneous_rate as instantaneous_rate,
    instantaneous_rate_bound as instantaneous_rate_bound,
    invariant_set_residual as invariant_set_residual,
    lemma1_quantities as lemma1_quantities,
    lemma7_bound as lemma7_bound,
    limit_identity as limit_identity,
    loss_envelope as loss_envelope,
    quantities as quantities,
    rate_asymptotic as rate_asymptotic,
    rate_imbalance as rate_imbalance,
    rate_margin as rate_margin,
    wide_network_bound as wide_network_bound,
)
