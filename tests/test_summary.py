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


def test_slope_leaves_out_runs_that_did_not_converge():
    """The slope is of log ‖W(∞) − W*‖: a run stopped at t1 before converging is not at W(∞)
    and stays out (it entered the fit, read at t1)."""
    import jax

    import flowlin

    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=12, m=1)
    # t1 = 4: most runs at h = 64 and 1024 converge in time, none at h = 4 (fixed keys).
    ds = flowlin.sweep(problem, [4, 64, 1024], [0.5], 4, method=flowlin.Gram(), t1=4.0,
                       progress=False)  # fmt: skip
    converged = ds.converged.values.astype(bool)
    assert 3 <= converged.sum() < converged.size  # some of each
    (row,) = flowlin.summarize_bounds(ds).slopes
    d = ds.final_distance_to_min_norm.values
    h = np.broadcast_to(ds.width.values.reshape((-1,) + (1,) * (d.ndim - 1)), d.shape)
    ref = np.polyfit(np.log(h[converged]), np.log(d[converged]), 1)[0]
    assert row.n == converged.sum()
    np.testing.assert_allclose(row.slope, ref, rtol=1e-10)
    # None converged: no slope, and the one-line verdict says why (it said "one width").
    from flowlin.reproduce.verdict import sweep_verdict

    none = ds.assign(converged=ds.converged * 0)
    assert flowlin.summarize_bounds(none).slopes == []
    widths = none.sizes["width"]
    assert widths >= 2
    said = f"no distance-vs-width slope (fewer than 3 converged runs over its {widths} widths)"
    assert said in sweep_verdict(none)
    assert "(one width)" in sweep_verdict(ds.isel(width=[0]).assign(converged=ds.converged[:1] * 0))
