"""Sweeps over depth (issue 20, docs/deep.md): a depth sweep's rows are individual
`gradient_flow` runs from `init.deep_gaussian`, its store resumes bit for bit, bad inputs are
refused by name before any compute, and sweeps without depths are what they were.

Cheap: one problem (n = 5, D = 10, m = 2), depths 2 and 3 at width 3 (two compiled shapes,
shared by every test through one module fixture)."""

import hashlib
import json

import jax
import numpy as np
import pytest

import flowlin
from flowlin._dataset import bound_names
from flowlin._sweep._grid import Grid
from flowlin._sweep._plan import fingerprint, plan_chunks


D, M, H = 10, 2, 3
T1 = 6.0
SAVES = np.linspace(0.0, T1, 7)
GRID = dict(widths=[H], scales=[0.5], seeds=[0, 1, 2], depths=(2, 3))
#: One set of options, so that the tests share the two compiled chunk programs.
COMMON = dict(t1=T1, saveat=SAVES, chunk_size=2, progress=False)


class FailingExecutor(flowlin.AbstractExecutor):
    """Runs chunks on `inner`, but raises when it reaches chunk `at_chunk` (a killed sweep)."""

    inner: flowlin.LocalExecutor
    at_chunk: int
    batch_size = None

    def resolve(self, call, settings):
        return FailingExecutor(self.inner.resolve(call, settings), self.at_chunk)

    def known_devices(self):
        return self.inner.known_devices()

    def devices_per_chunk(self):
        return self.inner.devices_per_chunk()

    def run(self, task, chunks, store, **kwargs):
        for chunk in chunks:
            if chunk.index == self.at_chunk:
                raise RuntimeError(f"injected failure at chunk {self.at_chunk}")
            yield from self.inner.run(task, [chunk], store, **kwargs)


class NoCompute(flowlin.AbstractExecutor):
    """An executor that must never be reached: the sweep validates before computing."""

    batch_size = None

    def resolve(self, call, settings):
        return self

    def known_devices(self):
        return ()

    def devices_per_chunk(self):
        return 1

    def run(self, task, chunks, store, **kwargs):
        raise AssertionError("computed before validating")


ONE_DEVICE = flowlin.LocalExecutor(jax.devices()[:1])


@pytest.fixture(scope="module")
def problem():
    return flowlin.problems.gaussian(jax.random.key(0), n=5, D=D, m=M)


@pytest.fixture(scope="module")
def deep(problem):
    return flowlin.sweep(problem, **GRID, **COMMON, executor=ONE_DEVICE)


def _single(problem, depth, seed, key=0):
    net = flowlin.init.deep_gaussian(
        jax.random.fold_in(jax.random.key(key), seed), D, M, (H,) * (depth - 1), alpha=0.5
    )
    return net, flowlin.gradient_flow(net, problem, T1, saveat=SAVES)


def test_depth_axis_and_rows_equal_single_solves(problem, deep):
    assert dict(deep.sizes) == {
        "depth": 2,
        "width": 1,
        "scale": 1,
        "seed": 3,
        "time": 7,
        "layer": 2,
    }
    assert list(deep.depth.values) == [2, 3] and list(deep.layer.values) == [1, 2]
    assert deep.attrs["method"] == "full" and deep.attrs["compiled_shapes"] == 2
    assert bool(deep.succeeded.all())
    for depth, seed in ((2, 1), (3, 2)):
        net, single = _single(problem, depth, seed)
        got = deep.sel(depth=depth, width=H, scale=0.5, seed=seed)
        for name in ("loss", "excess_loss", "distance_to_min_norm", "imbalance_drift"):
            np.testing.assert_allclose(got[name], getattr(single, name), rtol=1e-10, atol=1e-14)
        # The drifts are round-off (~1e-9 after the first step, with ‖C_l‖ ~ 1): two
        # orders of the same sums agree to ~1e-14 absolute, not relatively.
        np.testing.assert_allclose(
            got.balancedness_drift[:, : depth - 1], single.balancedness_drift, rtol=1e-10,
            atol=1e-13,
        )  # fmt: skip
        # A run with fewer hidden layers than the deepest: its missing layers are NaN.
        assert np.all(np.isnan(got.balancedness_drift[:, depth - 1 :]))
        assert int(got.num_steps) == int(single.num_steps)
        # ‖W_L···W_2(∞)‖_F, independently: the head of the final network.
        head = np.linalg.norm(np.asarray(single.final_network.head))
        np.testing.assert_allclose(got.final_head_norm, head, rtol=1e-10)
        # The gap's law reads the final head (σ1 = h^-1/2): its mean square is
        # σ1²(D − r)‖head‖² exactly (m = 1 or not: E χ²_k = k per direction).
        k = D - problem.rank
        np.testing.assert_allclose(got.law_mean_square, k * head**2 / H, rtol=1e-10)
        # Bounds: check_bounds' entries for this deep init, as a user calls it.
        for name, check in flowlin.check_bounds(single, net, problem).items():
            assert bool(got[f"bound_{name}_applicable"]) == bool(check.applicable)
            assert bool(got[f"bound_{name}_holds"]) == bool(check.holds & check.applicable)


def test_two_layer_theory_recorded_at_depth_two_only(problem, deep):
    theory = [v for v in deep.data_vars if v.startswith("theory_")]
    assert theory, "the depth-2 rows record the two-layer theory"
    # At depth 2: flowlin.theory.quantities of the same weights as a two-layer network.
    net = flowlin.init.paper(jax.random.fold_in(jax.random.key(0), 1), D, M, H, 0.5)
    q = flowlin.theory.quantities(net, problem, width=H, alpha=0.5, delta=0.05)
    for key, value in q.items():
        got = deep[f"theory_{key}"].sel(depth=2, width=H, scale=0.5, seed=1)
        np.testing.assert_allclose(got, np.asarray(value, float), rtol=1e-10, err_msg=key)
    # Deeper they do not apply: NaN, never a number that could be read as a verdict.
    for v in theory:
        assert np.all(np.isnan(deep[v].sel(depth=3).values)), v
    assert "depth > 2" in deep.attrs["theory_at_depth"]
    # Bounds: check_bounds' deep entries at every depth (a DeepLinearNetwork init, also at
    # L = 2), none of the two-layer-only ones.
    assert bound_names(deep) == sorted(flowlin.DEEP_CHECK_KEYS)


def test_resume_after_kill_is_bit_for_bit(problem, deep, tmp_path):
    store = tmp_path / "deep.nc"
    killed = FailingExecutor(ONE_DEVICE, at_chunk=2)
    with pytest.raises(RuntimeError, match="injected failure at chunk 2"):
        flowlin.sweep(problem, **GRID, **COMMON, executor=killed, store=store)
    resumed = flowlin.sweep(problem, **GRID, **COMMON, executor=ONE_DEVICE, store=store)
    assert resumed.attrs["chunks_resumed_from_store"] == 2
    for name in deep.data_vars:
        np.testing.assert_array_equal(resumed[name].values, deep[name].values, err_msg=name)
    on_disk = flowlin.open_sweep(store)
    for name in deep.data_vars:
        np.testing.assert_array_equal(on_disk[name].values, deep[name].values, err_msg=name)
    manifest = json.loads((tmp_path / "deep.nc.parts" / "manifest.json").read_text())
    assert "depth" in json.dumps(manifest)
    # Another set of depths is another sweep: the store refuses it.
    with pytest.raises(ValueError, match="holds a different sweep"):
        flowlin.sweep(
            problem, **{**GRID, "depths": (2, 4)}, **COMMON, executor=ONE_DEVICE, store=store
        )


def test_buckets_are_exact_shapes(problem):
    grid = Grid.build("t", [problem], [3, 5, 6], [0.5], 2, None, "paper", depths=[4, 2])
    chunks = plan_chunks(grid, 64, 1, pad_widths=True, gram=False)
    shapes = [(c.depth, c.pad_to) for c in chunks]
    # One chunk per (depth, width), unpadded (5 and 6 would share a two-layer bucket).
    assert shapes == [(2, 3), (2, 5), (2, 6), (4, 3), (4, 5), (4, 6)]
    for c in chunks:
        rows = c.rows[: c.valid]
        assert set(grid.depth[rows]) == {c.depth} and set(grid.width[rows]) == {c.pad_to}


def _old_fingerprint(grid, chunks, settings) -> str:
    """The store fingerprint of a two-layer sweep, with nothing of depths in it (an independent
    copy): every array with its dtype and shape, the problems' ranks after their data."""
    h = hashlib.sha256()

    def add(a):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())

    for p in grid.problems:
        add(np.asarray(p.X))
        add(np.asarray(p.Y))
    add(np.asarray([p.rank for p in grid.problems], np.int64))
    for a in (grid.problem, grid.width, grid.scale_index, grid.seed, grid.scales):
        add(a)
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    for c in chunks:
        h.update(np.asarray([c.index, c.pad_to, c.valid], np.int64).tobytes())
        h.update(np.ascontiguousarray(c.rows, np.int64).tobytes())
    return h.hexdigest()


def test_sweeps_without_depth_unchanged(problem):
    grid = Grid.build("t", [problem], [3, 5, 20], [0.3, 0.5], 3, None, "paper")
    assert grid.depth is None and grid.shape == (1, 3, 2, 3)
    for gram in (True, False):
        chunks = plan_chunks(grid, 4, 1, pad_widths=True, gram=gram)
        assert all(c.depth is None for c in chunks)
        settings = {"anything": [1, 2.5, "x"]}
        assert fingerprint(grid, chunks, settings) == _old_fingerprint(grid, chunks, settings)
    # The same dims and coordinates as ever: no depth, no layer.
    dims, coords = grid.coords(np.linspace(0.0, 1.0, 3))
    assert dims == ("problem", "width", "scale", "seed")
    assert set(coords) == {"problem", "width", "scale", "seed", "time"}
    listed = Grid.build("t", [problem], None, None, 1, [dict(width=3, scale=0.5, seed=0)], "paper")
    assert listed.depth is None and "depth" not in listed.coords(np.zeros(1))[1]
    assert listed.fingerprint_arrays()[-1] is listed.scales  # nothing appended


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(depths=[1, 2]), ValueError, r"every entry of depths must be >= 2"),
        (dict(depths=[3, 3]), ValueError, r"depths has repeated entries \(3 appears 2 times\)"),
        # (wrongly typed: the suite's type hook or flowlin's own check, both naming depths)
        (dict(depths=[2.5]), (TypeError, ValueError), "depths"),
        (dict(depths=[]), ValueError, "depths must be a non-empty list of integers"),
        (dict(depths="23"), TypeError, "depths"),
        (dict(depths=[3], method=flowlin.Gram()), ValueError, r"method=flowlin.Gram\(\) cannot"),
        (dict(depths=[3], sampling="wishart"), ValueError, "sampling='wishart' cannot run"),
        (dict(depths=[3], init="gaussian"), ValueError, "init='gaussian' cannot run"),
        (
            dict(configs=[dict(width=3, scale=0.5, seed=0, depth=3)], depths=[3], widths=None),
            ValueError,
            "give depths=... with widths/scales/seeds, or a 'depth' in each of",
        ),
        (
            dict(
                configs=[
                    dict(width=3, scale=0.5, seed=0, depth=3),
                    dict(width=3, scale=0.5, seed=1),
                ],
                widths=None,
            ),
            ValueError,
            r"configs\[1\] lacks field 'depth'",
        ),
        (
            dict(configs=[dict(width=3, scale=0.5, seed=0, depth=1)], widths=None),
            ValueError,
            r"configs\[...\]\['depth'\] must be >= 2",
        ),
    ],
)
def test_bad_depth_inputs_refused_by_name(problem, kwargs, error, match):
    kwargs = {"widths": [3], "scales": [0.5], "progress": False, "executor": NoCompute(), **kwargs}
    if kwargs.get("configs") is not None:
        kwargs.pop("scales")
        kwargs.pop("widths")
    with pytest.raises(error, match=match):
        flowlin.sweep(problem, **kwargs)


def test_configs_with_depths(problem, deep):
    # Two configurations of one shape: one chunk of 2, the fixture's compiled program.
    configs = [dict(width=H, scale=0.5, seed=2, depth=3), dict(width=H, scale=0.5, seed=0, depth=3)]
    ds = flowlin.sweep(problem, configs=configs, **COMMON, executor=ONE_DEVICE)
    assert list(ds.depth.values) == [3, 3] and ds.sizes["config"] == 2
    assert ds.attrs["compiled_shapes"] == 0
    for i, c in enumerate(configs):
        ref = deep.sel(depth=c["depth"], width=H, scale=0.5, seed=c["seed"])
        np.testing.assert_array_equal(ds.distance_to_min_norm[i], ref.distance_to_min_norm)
        np.testing.assert_array_equal(ds.balancedness_drift[i], ref.balancedness_drift)


def test_descent_over_depth(problem):
    # Gradient descent (optax) over depths: a row equals gradient_descent from the same init.
    ds = flowlin.sweep(
        problem, widths=[H], scales=[0.5], seeds=[1], depths=(3,), dynamics="descent", lr=0.05,
        steps=40, theory=False, bounds=False, progress=False, executor=ONE_DEVICE,
    )  # fmt: skip
    net = flowlin.init.deep_gaussian(jax.random.fold_in(jax.random.key(0), 1), D, M, (H, H))
    gd = flowlin.gradient_descent(net, problem, 0.05, 40, saveat=ds.time.values)
    got = ds.sel(depth=3, width=H, scale=0.5, seed=1)
    np.testing.assert_allclose(got.loss, gd.loss, rtol=1e-12)
    np.testing.assert_allclose(got.distance_to_min_norm, gd.distance_to_min_norm, rtol=1e-12)


def test_summarize_bounds_never_pools_depths(problem, deep):
    """Slopes and laws of different depths are not one population: a multi-depth result is
    refused by name, and one depth at a time is summarized like any sweep."""
    with pytest.raises(ValueError, match=r"several depths \[2, 3\].*ds.sel\(depth=3\)"):
        flowlin.summarize_bounds(deep)
    one = flowlin.summarize_bounds(deep.sel(depth=3))
    assert one.runs == deep.sel(depth=3)["succeeded"].size
