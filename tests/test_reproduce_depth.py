"""`flowlin reproduce depth` (issue 20, docs/deep.md): the quick target runs from the command
line, its fitted slopes equal an independent NumPy fit of the numbers it stored, and its
report's verdict lines say what the data say. Not part of `reproduce all`."""

import json
import math
import re

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

from flowlin._cli import app
from flowlin.reproduce import EXTRA_RUNNERS, RUNNERS
from flowlin.reproduce.depth import (
    head_verdict,
    law_verdict,
    relative_verdict,
    slope_difference,
    slope_verdict,
)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("depth")
    args = ["reproduce", "depth", "--out", str(out), "--quick", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    numbers = json.loads((out / "numbers.json").read_text())["depth"]
    return out, numbers, (out / "report.md").read_text(), result.output


def test_depth_is_not_part_of_all():
    assert "depth" in EXTRA_RUNNERS and "depth" not in RUNNERS
    result = CliRunner().invoke(app, ["reproduce", "nope", "--quick"])
    assert result.exit_code != 0 and "depth" in result.output


def _polyfit(x, y):
    """Slope and its 95% CI from NumPy's least squares, independently of flowlin."""
    from scipy import stats

    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    ok = np.isfinite(y)
    x, y = x[ok], y[ok]
    (slope, icpt), cov = np.polyfit(x, y, 1, cov="unscaled")
    resid = y - (slope * x + icpt)
    se = math.sqrt(np.sum(resid**2) / (len(x) - 2) * cov[0, 0])
    t = stats.t.ppf(0.975, len(x) - 2)
    return slope, slope - t * se, slope + t * se


@pytest.mark.slow
def test_slopes_equal_numpy_fits_of_the_stored_numbers(quick):
    out, numbers, _, _ = quick
    with xr.open_dataset(out / "depth" / "depth.nc") as ds:
        assert sorted(int(L) for L in ds.depth.values) == [2, 3, 4]
        for L in ds.depth.values:
            one = ds.sel(depth=L)
            ok = one.converged.values.astype(bool)
            widths = np.broadcast_to(one.width.values[:, None], ok.shape)
            for var, key in (("final_distance_to_min_norm", "distance"),
                             ("final_head_norm", "head_norm")):  # fmt: skip
                y = np.where(ok, one[var].values, np.nan)
                slope, lo, hi = _polyfit(widths.ravel(), y.ravel())
                got = numbers["by_depth"][str(int(L))][key]
                np.testing.assert_allclose(got["slope"], slope, rtol=1e-10)
                np.testing.assert_allclose(got["ci"], [lo, hi], rtol=1e-10)
                assert got["runs"] == int(ok.sum())
            # The law's mean of d² against its exact expectation, from the stored per-run law.
            law = numbers["by_depth"][str(int(L))]["law"]
            usable = one.law_usable.values.astype(bool)
            d = one.final_distance_to_min_norm.values[usable]
            np.testing.assert_allclose(law["mean_square"], np.mean(d**2), rtol=1e-10)
            np.testing.assert_allclose(
                law["expected_mean_square"], np.mean(one.law_mean_square.values[usable]),
                rtol=1e-10,
            )  # fmt: skip


@pytest.mark.slow
def test_report_verdicts_reflect_the_data(quick):
    _, numbers, report, output = quick
    for L, n in numbers["by_depth"].items():
        slope, (lo, hi) = n["distance"]["slope"], n["distance"]["ci"]
        word = "consistent" if lo <= -0.5 <= hi else "not supported"
        line = re.search(rf"h\^\(-1/2\) law at L = {L}: \*\*(.+?)\*\*(.*)", report)
        assert line and line.group(1) == word, (L, line and line.group(0))
        assert f"{slope:.3f}" in line.group(2) and f"[{lo:.3f}, {hi:.3f}]" in line.group(2)
        hlo, hhi = n["head_norm"]["ci"]
        word = "flat" if hlo <= 0 <= hhi else ("grows" if hlo > 0 else "shrinks")
        assert re.search(rf"‖W_L···W_2\(∞\)‖ vs h at L = {L}: \*\*{word}\*\*", report), L
        law = re.search(rf"exact law of the gap at L = {L}: \*\*(.+?)\*\*", report)
        assert law and law.group(1) == n["law"]["status"]
        if L != "2":  # against the control L = 2
            diff, lo, hi = n["slope_minus_depth_2"]
            assert lo < diff < hi
            word = (
                "no depth effect resolved"
                if lo <= 0 <= hi
                else ("shallower than at L = 2" if lo > 0 else "steeper than at L = 2")
            )
            assert f"slope at L = {L} minus L = 2: **{word}** — {diff:+.3f}" in report, L
    # Every decay init's row, and the bounds' line as the numbers say.
    for name in numbers["decay_time_to_level"]:
        assert f"| {name} |" in report
    held = "every applicable bound held" if numbers["bounds_held"] else "violated"
    assert f"bounds: **{held}" in report
    assert "reproduce depth:" in output


@pytest.mark.slow
def test_files_and_decay(quick):
    out, numbers, report, _ = quick
    for png in ("depth.png", "depth_decay.png"):
        assert (out / "depth" / png).read_bytes()[:8] == PNG_MAGIC
    with xr.open_dataset(out / "depth" / "depth_decay.nc") as dec:
        assert dec.sizes["init"] == 4
        # The balanced init with a deficiency margin, and W1Φ2 = 0 by construction (its rows
        # span the product's, inside X's row space): it converges to W* itself.
        margin = [k for k in dec.init.values if "deficiency margin" in str(k)][0]
        assert float(dec.distance_to_min_norm.sel(init=margin)[-1]) < 1e-2
        gauss = [k for k in dec.init.values if str(k).startswith("Gaussian")][0]
        assert float(dec.distance_to_min_norm.sel(init=gauss)[-1]) > 0.1
    bounds = numbers["decay_bounds"][margin]
    assert bounds["deficiency_margin_loss"] == "held"
    assert all(numbers["decay_converged"].values())
    assert numbers["bounds_held"] and "Loss decay at L = 3" in report


def test_verdict_lines_follow_the_fit():
    assert "**consistent**" in slope_verdict(3, (-0.48, -0.55, -0.41, 12))
    steep = slope_verdict(3, (-0.7, -0.8, -0.6, 12))
    assert "**not supported**" in steep and "steeper" in steep
    assert "shallower" in slope_verdict(4, (-0.2, -0.3, -0.1, 12))
    assert "**undetermined**" in slope_verdict(2, (math.nan, math.nan, math.nan, 2))
    # The difference of two slopes: its CI from the two t intervals' standard errors.
    diff = slope_difference((-0.3, -0.4, -0.2, 12), (-0.5, -0.55, -0.45, 12))
    assert diff[0] == pytest.approx(0.2) and diff[1] > 0
    assert "**shallower than at L = 2**" in relative_verdict(3, diff)
    same = slope_difference((-0.48, -0.6, -0.36, 12), (-0.5, -0.55, -0.45, 12))
    assert "**no depth effect resolved**" in relative_verdict(3, same)
    assert "**flat**" in head_verdict(2, (0.01, -0.02, 0.04, 12))
    assert "**grows**" in head_verdict(2, (0.3, 0.2, 0.4, 12))
    assert "**shrinks**" in head_verdict(2, (-0.3, -0.4, -0.2, 12))
    assert "**not recorded**" in law_verdict(2, None)


def test_a_failed_decay_flow_is_not_checked_and_not_held():
    """A failed L = 3 flow's bounds were "n/a" (read as "the theorem's hypotheses fail") and
    counted toward "every applicable bound held". They are now "not checked", and the verdict
    is not "held"."""
    import jax

    import flowlin
    from flowlin.reproduce._depth_decay import bound_state, decay_inits, decay_numbers

    problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=8, m=1)
    nets = decay_inits(problem, 6, jax.random.key(1))
    margin = "balanced, product W*/2 (deficiency margin)"
    net = nets[margin]
    ts = np.linspace(0.0, 20.0, 11)
    states = {}
    for name, max_steps in (("ok", None), ("failed", 3)):
        kw = {} if max_steps is None else dict(max_steps=max_steps)
        traj = flowlin.gradient_flow(net, problem, 20.0, saveat=ts, **kw)
        assert bool(traj.succeeded) == (max_steps is None)
        states[name] = {
            b: bound_state(c) for b, c in flowlin.check_bounds(traj, net, problem).items()
        }
    assert states["ok"]["deficiency_margin_loss"] == "held"
    assert set(states["failed"].values()) == {"not checked: run did not succeed"}
    dec = xr.Dataset(
        {
            "excess_loss": (("init", "time"), np.ones((2, ts.size))),
            "distance_to_min_norm": (("init", "time"), np.ones((2, ts.size))),
            "converged": ("init", [True, False]),
        },
        coords={"init": ["ok", "failed"], "time": ts},
    )
    assert decay_numbers(dec, {"ok": states["ok"]})["held"]
    assert not decay_numbers(dec, states)["held"]
    # Round-off leaving nothing to check is neither a violation nor a failed run.
    floor = {"ok": {"x": "held", "y": "not checked: below the resolution floor of the dtype"}}
    assert decay_numbers(dec, floor)["held"]
    assert not decay_numbers(dec, {"ok": {"x": "violated"}})["held"]
