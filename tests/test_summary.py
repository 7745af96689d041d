"""`flowlin.summarize_bounds` and its slope fit."""

import numpy as np

from flowlin._summary import fit_loglog_slope


def test_loglog_slope_fit():
    rng = np.random.default_rng(0)
    widths = np.repeat([100, 300, 1000, 3000, 10000], 8)
    d = 3.0 * widths**-0.5 * np.exp(0.05 * rng.standard_normal(widths.size))
    slope, lo, hi, n = fit_loglog_slope(widths, d)
    ref = np.polyfit(np.log(widths), np.log(d), 1)[0]
    np.testing.assert_allclose(slope, ref, rtol=1e-12)
    assert lo < -0.5 < hi and hi - lo < 0.05 and n == 40
