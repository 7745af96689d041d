"""`flowlin reproduce`: the reported numbers against the papers' (`flowlin.reproduce.paper`) and
against theory, every bound held, every file written."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import flowlin
from flowlin._cli import app
from flowlin._dataset import SUCCEEDED, bound_names, bound_var
from flowlin.reproduce import QUICK
from flowlin.reproduce.paper import PAPER_C, PAPER_DISTANCE, PAPER_SLOPE


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: c is a random quantity of the init (one draw per case): the helper that wrote flowlin.theory
#: measured 6.27/40.3/20.9 on other draws; ±15% covers the draw-to-draw spread at h = 500.
C_RTOL = 0.15


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    result = _invoke("reproduce", "all", "--out", out, "--quick", "--no-progress")
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "numbers.json").read_text())


@pytest.mark.slow
def test_fig2_imbalance_c_matches_paper(quick_run):
    _, numbers = quick_run
    fig2 = numbers["fig2"]
    np.testing.assert_allclose(fig2["c"], list(PAPER_C.values()), rtol=C_RTOL)
    # The balanced init has zero imbalance by construction (ICML Fig. 2's fourth curve).
    assert abs(fig2["c_balanced"]) < 1e-8
    # Gradient descent (η = 5e-4 on the averaged loss) is the Euler scheme of the flow: the
    # log-losses agree to O(η·rate·t) ≈ 1e-3 over the run, not exactly (nor by chance).
    assert 1e-6 < fig2["gd_vs_flow_max_log"] < 1e-2
    assert fig2["bounds_held"]


@pytest.mark.slow
def test_fig1_distance_and_slope(quick_run):
    _, numbers = quick_run
    fig1 = numbers["fig1"]
    assert fig1["all_converged"]
    widths = fig1["widths"]
    dist = dict(zip(widths, fig1["distance_mean"]))
    # The paper's plot: ≈ 0.8 at h = 500 and ≈ 0.2 at h = 10^4 (read off a figure).
    np.testing.assert_allclose(dist[500], PAPER_DISTANCE[500], rtol=0.15)
    np.testing.assert_allclose(dist[10_000], PAPER_DISTANCE[10_000], rtol=0.25)
    # ICML Theorem 2 at α = 1/2: slope −1/2 (3 widths × 3 seeds here, then up to 10^6).
    assert abs(fig1["slope"] - PAPER_SLOPE) < 0.06
    assert abs(fig1["slope_to_1e6"] - PAPER_SLOPE) < 0.04
    # E[h‖W(∞) − W*‖²] = (D − r)E‖V(∞)‖² exactly; V(∞) → the flow's from the limit init.
    # 3 seeds × (D − r) = 300 χ² degrees of freedom: ~5% sampling error.
    np.testing.assert_allclose(
        fig1["sqrt_h_rms_distance_widest"], fig1["limit_sqrt_h_distance"], rtol=0.12
    )
    # At t_f the distance is dominated by ‖Φ2Φ2ᵀ(Θ(0) − Θ̂)‖ (the part the flow cannot move):
    # same order, within a factor of 1.5 (ICML Fig. 1's two curves nearly coincide).
    ratio = np.asarray(fig1["distance_mean"]) / np.asarray(fig1["initial_null_distance_mean"])
    assert np.all((ratio > 0.67) & (ratio < 1.5))
    assert fig1["bounds_held"]


def _v2_spreads_numpy(h: int, seed: int = 0):
    r"""$(\Delta_+, \Delta_-, \Delta)$ of the v2 init at width h, independently of
    flowlin.theory: NumPy's eigenvalues of the $h\times h$ imbalance
    $\Lambda = W_1PW_1^\top - W_2^\top W_2$ ($P$ = projection onto X's row space)."""
    k_data, k_init = jax.random.split(jax.random.key(seed + 20))
    problem = flowlin.problems.factorization(k_data, n=QUICK.v2_n, m=QUICK.v2_m)
    D, m, r = problem.D, problem.m, problem.rank
    scale = (m * h) ** -0.25
    net = flowlin.init.gaussian(jax.random.fold_in(k_init, h), D, m, h, scale, scale)
    X, W1, W2 = (np.asarray(a) for a in (problem.X, net.W1, net.W2))
    P = np.linalg.pinv(X) @ X
    ev = np.linalg.eigvalsh(W1 @ P @ W1.T - W2.T @ W2)[::-1]  # decreasing
    pos = lambda x: max(float(x), 0.0)  # noqa: E731
    lam_r, neg_m = pos(ev[r - 1]), pos(-ev[h - m])  # [λr(Λ)]+, [λm(−Λ)]+
    return pos(ev[0]) - lam_r, pos(-ev[-1]) - neg_m, lam_r + neg_m


@pytest.mark.slow
def test_v2_spreads_and_rates(quick_run):
    _, numbers = quick_run
    v2 = numbers["v2"]
    for h, (dp, dm, d), cm, ra in zip(
        v2["widths"], v2["spreads"], v2["c_margin"], v2["rate_asymptotic"]
    ):
        assert dp >= 0 and dm >= 0 and d > 0
        # The spreads reported against NumPy's eigenvalues of the h × h imbalance of the same
        # init (flowlin computes them from an (r+m) × (r+m) Gram): round-off apart.
        np.testing.assert_allclose([dp, dm, d], _v2_spreads_numpy(h), rtol=1e-9, atol=1e-12)
        # v2 Theorem 3: c(0) ≥ 2Δ (the ICML Theorem 1 rate is contained).
        assert cm >= 2 * d * (1 - 1e-12)
        # The asymptotic rate adds the margin σ_min(Ỹ) > 0: strictly above λr(Σ)c(0) = c(0).
        assert ra > cm
    assert v2["bounds_held"]


@pytest.mark.slow
def test_every_bound_held_and_files_written(quick_run):
    out, numbers = quick_run
    for target, names in {
        "fig1": ["fig1.nc", "fig1_wishart.nc"],
        "fig2": ["fig2.nc"],
        "v2": ["v2.nc"],
    }.items():
        for name in names:
            with xr.open_dataset(out / target / name) as ds:
                assert bool(ds[SUCCEEDED].all()), (target, name)
                bounds = bound_names(ds)
                assert len(bounds) == len(flowlin.CHECK_KEYS)
                for b in bounds:
                    applicable = ds[bound_var(b, "applicable")].values.astype(bool)
                    holds = ds[bound_var(b, "holds")].values.astype(bool)
                    assert np.all(holds[applicable]), (target, name, b)
    for png in ["fig1/fig1.png", "fig1/fig1_wide.png", "fig2/fig2.png", "v2/v2.png"]:
        assert (out / png).read_bytes()[:8] == PNG_MAGIC, png
    report = (out / "report.md").read_text()
    # The papers' printed c beside ours (presentation: the values come from paper.py).
    for c in PAPER_C.values():
        assert str(c) in report
    for c in numbers["fig2"]["c"]:
        assert f"{c:.3f}" in report
    assert f"{numbers['fig1']['slope']:.4f}" in report
    assert "Every applicable bound held in every run" in report


def test_reproduce_rejects_unknown_target(tmp_path):
    result = _invoke("reproduce", "fig3", "--out", tmp_path, "--quick")
    assert result.exit_code != 0
    assert "fig3" in result.output
    with pytest.raises(ValueError, match="target"):
        from flowlin.reproduce import reproduce

        reproduce("fig3", tmp_path)


def test_import_flowlin_does_not_import_the_applications():
    # flowlin.reproduce (and matplotlib) stand above the library: `import flowlin` loads
    # neither; `import flowlin.reproduce` loads the subpackage, still without matplotlib.
    code = (
        "import sys, flowlin; a = ('matplotlib' in sys.modules, 'flowlin.reproduce' in "
        "sys.modules); import flowlin.reproduce; print(a, 'matplotlib' in sys.modules, "
        "callable(flowlin.reproduce.reproduce))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["(False,", "False)", "False", "True"]


def test_demo_writes_a_figure(tmp_path):
    result = _invoke("demo", "--out", tmp_path, "--width", 20)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo.png").read_bytes()[:8] == PNG_MAGIC
    assert "gradient descent, lr=0.05" in result.output
