"""`flowlin.sweep`: bulk solves equal single solves, resume bit-for-bit, multi-device, one
compile per shape, clear errors before any compute."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import flowlin
from flowlin._results import status_code
from flowlin.reproduce.paper import PAPER_DISTANCE, PAPER_SLOPE


D, M = 12, 2
T1 = 8.0
# One set of options for most tests, so that they share compiled programs.
COMMON = dict(
    method=flowlin.FullWeights(), theory=False, bounds=False, t1=T1, progress=False, chunk_size=8
)


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


@pytest.fixture(scope="module")
def problem():
    return flowlin.problems.gaussian(jax.random.key(0), n=5, D=D, m=M)


def _single(problem, width, alpha, seed, key=0, **kw):
    net = flowlin.init.paper(jax.random.fold_in(jax.random.key(key), seed), D, M, width, alpha)
    return flowlin.gradient_flow(net, problem, T1, saveat=jnp.linspace(0.0, T1, 21), **kw)


def test_sweep_equals_individual_solves(problem):
    ds = flowlin.sweep(problem, widths=[3, 7], scales=[0.3, 0.5], seeds=[0, 4], **COMMON)
    assert dict(ds.sizes) == {"width": 2, "scale": 2, "seed": 2, "time": 21}
    assert bool(ds.succeeded.all())
    for w in (3, 7):
        for a in (0.3, 0.5):
            for s in (0, 4):
                single = _single(problem, w, a, s)
                got = ds.sel(width=w, scale=a, seed=s)
                for name in ("loss", "excess_loss", "distance_to_min_norm", "rate"):
                    np.testing.assert_allclose(got[name], getattr(single, name), rtol=1e-10)
                for name, value in single.final_values.items():
                    # atol: drifts are round-off noise (~1e-10), equal only to ~1e-16.
                    np.testing.assert_allclose(got[f"final_{name}"], value, rtol=1e-10, atol=1e-14)
                assert int(got.num_steps) == int(single.num_steps)
    np.testing.assert_allclose(ds.time, np.linspace(0.0, T1, 21))
    assert ds.attrs["dtype"] == "float64" and "jax_version" in ds.attrs


def test_compiles_once_per_shape(problem):
    # widths 3, 5 share a bucket (padded to 5); 20 is its own: two shapes, two compiles.
    ds = flowlin.sweep(
        problem, widths=[3, 5, 20], scales=[0.4, 0.6], seeds=5, **{**COMMON, "chunk_size": 4}
    )
    assert ds.attrs["n_chunks"] > 2
    assert ds.attrs["compiled_shapes"] == 2
    # The same shapes again, new values: nothing recompiles.
    again = flowlin.sweep(
        problem, widths=[4, 5, 20], scales=[0.35, 0.55], seeds=5, **{**COMMON, "chunk_size": 4}
    )
    assert again.attrs["compiled_shapes"] == 0


def test_multi_device_equals_single_device(problem):
    assert len(jax.devices()) == 4, "conftest forces 4 host devices"
    kw = dict(widths=[3, 6], scales=[0.4], seeds=6, **COMMON)
    one = flowlin.sweep(problem, executor=flowlin.LocalExecutor(jax.devices()[:1]), **kw)
    four = flowlin.sweep(problem, **kw)
    assert json.loads(four.attrs["devices"]) == [str(d) for d in jax.devices()]
    for name in one.data_vars:
        np.testing.assert_array_equal(one[name].values, four[name].values)


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


NO_COMPUTE = NoCompute()


@pytest.mark.parametrize("suffix", ["nc", "zarr"])
def test_resume_after_kill_is_bit_for_bit(problem, tmp_path, suffix):
    kw = dict(widths=[3, 6], scales=[0.3, 0.5], seeds=4, **{**COMMON, "chunk_size": 4})
    reference = flowlin.sweep(problem, **kw)
    store = tmp_path / f"sweep.{suffix}"
    killed = FailingExecutor(flowlin.LocalExecutor(), at_chunk=3)
    with pytest.raises(RuntimeError, match="injected failure at chunk 3"):
        flowlin.sweep(problem, store=store, executor=killed, **kw)
    # `store="sweep.nc"` / `"sweep.zarr"` is the merged result; the shards live beside it.
    shards = tmp_path / f"sweep.{suffix}.parts" / "shards"
    written = sorted(p.name for p in shards.iterdir())
    assert 1 <= len(written) <= 3 and all(not n.startswith(".") for n in written)
    assert not store.exists()  # no result before the sweep has finished
    # A half-written shard (temporary name) from the killed run is never read back.
    (shards / f".tmp-deadbeef.{suffix}").write_text("garbage")
    resumed = flowlin.sweep(problem, store=store, **kw)
    assert resumed.attrs["chunks_resumed_from_store"] == len(written)
    assert resumed.attrs["n_chunks"] == reference.attrs["n_chunks"]
    for name in reference.data_vars:
        np.testing.assert_array_equal(resumed[name].values, reference[name].values)
    assert not (shards / f".tmp-deadbeef.{suffix}").exists()
    # The merged result on disk is the same dataset, and it is the file (store) named.
    on_disk = flowlin.open_sweep(store)
    opened = xr.open_zarr(store, consolidated=False) if suffix == "zarr" else xr.open_dataset(store)
    with opened:
        for name in reference.data_vars:
            np.testing.assert_array_equal(on_disk[name].values, reference[name].values)
            np.testing.assert_array_equal(opened[name].values, reference[name].values)
    # Everything resumed: nothing computed, and the devices are still recorded.
    again = flowlin.sweep(problem, store=store, **kw)
    assert again.attrs["chunks_resumed_from_store"] == reference.attrs["n_chunks"]
    assert again.attrs["devices"] == reference.attrs["devices"] != "[]"
    # A different sweep cannot reuse the store.
    with pytest.raises(ValueError, match="holds a different sweep"):
        flowlin.sweep(problem, store=store, **{**kw, "seeds": 5})


def test_store_refuses_other_chunking(problem, tmp_path):
    # 8 configurations, chunk_size 5: on 1 device chunks of 5 + 3, on 2 devices chunks of 6 + 2
    # (a multiple of the device count). Same grid, same number of chunks, other rows per chunk:
    # resuming one from the other's shards would leave row 5 uncomputed, so the store refuses.
    kw = dict(widths=[3, 6], scales=[0.3], seeds=4, **{**COMMON, "chunk_size": 5})
    store = tmp_path / "sweep"
    one, two = (flowlin.LocalExecutor(jax.devices()[:k]) for k in (1, 2))
    killed = FailingExecutor(one, at_chunk=0)  # fails before anything is compiled
    with pytest.raises(RuntimeError, match="injected failure at chunk 0"):
        flowlin.sweep(problem, store=store, executor=killed, **kw)
    with pytest.raises(RuntimeError, match="injected failure at chunk 0"):  # same chunks: fine
        flowlin.sweep(problem, store=store, executor=killed, **kw)
    with pytest.raises(ValueError, match="holds a different sweep.*chunking"):
        flowlin.sweep(problem, store=store, executor=two, **kw)


def test_store_refuses_other_rank_data_shapes_and_method_options(problem, tmp_path):
    """What the fingerprint must tell apart (each was once adopted as the same sweep): the same
    X and Y at another rank, the same bytes in other shapes, and Gram() against
    Gram(reconstruct=False), which checks fewer bounds. A killed first sweep leaves the store's
    header; each other sweep is refused before computing, naming what differs if it can."""
    one = flowlin.LocalExecutor(jax.devices()[:1])
    kw = dict(widths=[3], scales=[0.3], seeds=2, executor=one, **{**COMMON, "chunk_size": 1})
    killed = FailingExecutor(one, at_chunk=0)

    def start(store, p, **extra):
        with pytest.raises(RuntimeError, match="injected failure at chunk 0"):
            flowlin.sweep(p, store=store, **{**kw, "executor": killed, **extra})

    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    s = np.linalg.svd(X, compute_uv=False)
    lower = flowlin.Problem(X, Y, rank_rtol=1.5 * s[-1] / s[0])
    assert (lower.rank, problem.rank) == (problem.rank - 1, problem.rank)
    start(tmp_path / "rank", problem)
    with pytest.raises(ValueError, match=r"different sweep.*shapes or the rank"):
        flowlin.sweep(lower, store=tmp_path / "rank", **kw)

    n, D, m = 2, X.size // 2, Y.size // 2  # the same bytes, as a 2-sample problem
    reshaped = flowlin.Problem(X.reshape(n, D), Y.reshape(n, m))
    start(tmp_path / "shape", problem)
    with pytest.raises(ValueError, match=r"different sweep.*shapes or the rank"):
        flowlin.sweep(reshaped, store=tmp_path / "shape", **kw)

    gram = dict(method=flowlin.Gram(), bounds=True)
    start(tmp_path / "method", problem, **gram)
    with pytest.raises(ValueError, match=r"different sweep.*method: 'Gram\(\)' in the store, "
                       r"'Gram\(reconstruct=False\)' now"):  # fmt: skip
        flowlin.sweep(problem, store=tmp_path / "method",
                      **{**kw, **gram, "method": flowlin.Gram(reconstruct=False)})  # fmt: skip


def test_failed_runs_are_recorded_not_raised(problem):
    ds = flowlin.sweep(problem, widths=[4], scales=[0.5], seeds=3, **{**COMMON, "max_steps": 3})
    assert not bool(ds.succeeded.any())
    assert set(np.unique(ds.status.values)) == {int(status_code(flowlin.RESULTS.max_steps_reached))}
    codes = json.loads(ds.attrs["status_codes"])
    assert codes[str(int(ds.status.values.flat[0]))] == "max_steps_reached"


def test_explicit_configs_and_descent(problem):
    configs = [dict(width=3, scale=0.5, seed=1), dict(width=8, scale=0.3, seed=2)]
    ds = flowlin.sweep(
        problem,
        configs=configs,
        dynamics="descent",
        lr=0.01,
        steps=400,
        **{k: v for k, v in COMMON.items() if k != "t1"},
    )
    assert ds.sizes["config"] == 2
    for i, c in enumerate(configs):
        net = flowlin.init.paper(
            jax.random.fold_in(jax.random.key(0), c["seed"]), D, M, c["width"], c["scale"]
        )
        gd = flowlin.gradient_descent(net, problem, 0.01, 400, saveat=ds.time.values)
        np.testing.assert_allclose(ds.loss[i], gd.loss, rtol=1e-12)
        assert int(ds.width[i]) == c["width"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(widths=[0, 3], scales=[0.5]), "every entry of widths must be >= 1"),
        (dict(widths=[3], scales=[0.5, -0.1]), r"every scale \(alpha"),
        (dict(widths=[3], scales=[0.0], init="gaussian"), r"every scale \(std\)"),
        (dict(widths=[3], scales=[0.5], seeds=[-1]), "every entry of seeds must be >= 0"),
        (dict(widths=[3.5], scales=[0.5]), "widths must be a non-empty list of integers"),
        (dict(widths=[3], scales=[0.5], t1=-1.0), "t1 must be finite and > 0"),
        (dict(widths=[3], scales=[0.5], chunk_size=0), "chunk_size must be a positive int"),
        (dict(widths=[3], scales=[0.5], dynamics="descent"), "needs lr=... and steps=..."),
        (
            dict(widths=[3], scales=[0.5], sampling="wishart", method=flowlin.FullWeights()),
            "sampling='wishart'",
        ),
        (
            dict(
                widths=[3], scales=[0.5], sampling="wishart", method=flowlin.Gram(reconstruct=True)
            ),
            r"sampling='wishart' has no weights to rebuild",
        ),
        (
            dict(widths=[3], scales=[0.5], dynamics="descent", lr=0.1),
            "needs lr=... and steps=...",
        ),
        (dict(configs=[dict(width=3, seed=0)]), r"configs\[0\] lacks field\(s\) \['scale'\]"),
        (dict(widths=[3]), "give widths=... and scales=..."),
    ],
)
def test_bad_configurations_rejected_before_compute(problem, kwargs, match):
    with pytest.raises(ValueError, match=match):
        flowlin.sweep(problem, **{"progress": False, "executor": NO_COMPUTE, **kwargs})


# Outside the `Literal`/class an argument is typed with: a TypeError (under the test suite's
# jaxtyping/beartype hook, its own TypeError naming the argument comes first; flowlin's own
# messages for these are checked without the hook in tests/test_messages.py).
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(init="xavier"), "init"),
        (dict(method="euler"), "method"),
        (dict(method="gram"), "method"),
        (dict(executor="dask"), "executor"),
    ],
)
def test_wrongly_typed_choices_rejected_before_compute(problem, kwargs, match):
    kwargs = {"widths": [3], "scales": [0.5], "progress": False, "executor": NO_COMPUTE, **kwargs}
    with pytest.raises(TypeError, match=match):
        flowlin.sweep(problem, **kwargs)


def test_mismatched_problems_rejected(problem):
    other = flowlin.problems.gaussian(jax.random.key(1), n=5, D=D + 1, m=M)
    with pytest.raises(ValueError, match=r"problems\[1\] has X \(5, 13\)"):
        flowlin.sweep([problem, other], widths=[3], scales=[0.5])


@pytest.mark.slow
def test_icml_fig1_grid_slope_and_bounds():
    """ICML Fig. 1 (theory.md §5): n = 100, D = 400, m = 1, α = 1/2, h = 500…10⁴, 5 seeds,
    gram method. Distance vs h has slope −1/2 (ICML Thm 2); every applicable bound holds in
    every run. Theorem 2 itself needs h > h0 (≈ 2.8e5 for this data, b² ≈ 478 and
    λ1/λr³ ≈ 150): at the figure's widths it must report "not applicable", and at
    h = 10⁶, 10⁷ (Wishart-sampled Gram statistics, exact in distribution) it must hold."""
    problem = flowlin.problems.gaussian(jax.random.key(0), n=100, D=400, m=1)
    widths = [500, 1000, 2000, 5000, 10000]
    common = dict(scales=[0.5], init="paper", method=flowlin.Gram(), t1=25.0, progress=False)
    ds = flowlin.sweep(problem, widths, seeds=5, saveat=np.linspace(0.0, 25.0, 11), **common)
    assert bool(ds.succeeded.all())
    # Converged: the final excess loss is negligible next to L(0) − L* (distance = W(∞)'s).
    assert float((ds.final_excess_loss / ds.excess_loss.isel(time=0)).max()) < 1e-10
    d = ds.final_distance_to_min_norm.sel(scale=0.5)
    # The papers' numbers, read off their plot: ≈ 0.8 at h = 500 and ≈ 0.2 at h = 10⁴.
    assert abs(float(d.sel(width=500).mean()) - PAPER_DISTANCE[500]) < 0.15
    assert abs(float(d.sel(width=10000).mean()) - PAPER_DISTANCE[10_000]) < 0.05
    summary = flowlin.summarize_bounds(ds)
    (slope,) = summary.slopes
    assert abs(slope.slope - PAPER_SLOPE) < 0.05, slope
    assert slope.n == 25 and slope.ci_low < slope.slope < slope.ci_high
    applicable_any = 0
    for row in summary.bounds:
        applicable = ds[f"bound_{row.bound}_applicable"].values.astype(bool)
        holds = ds[f"bound_{row.bound}_holds"].values.astype(bool)
        assert np.all(holds[applicable]), row.bound
        applicable_any += int(applicable.any())
    assert applicable_any >= 6  # the rate, envelope and distance bounds apply here
    h0 = float(flowlin.theory.h0(problem, delta=0.05))
    assert 1e5 < h0 < 1e6
    assert not ds.bound_distance_wide_network_applicable.values.any()

    wide = flowlin.sweep(
        problem, [10**6, 10**7], seeds=5, sampling="wishart", saveat=[0.0, 25.0], **common
    )
    assert bool(wide.succeeded.all())
    assert wide.bound_distance_wide_network_applicable.values.all()
    assert wide.bound_distance_wide_network_holds.values.all()
    # Still h^{-1/2}: the mean distance drops by √10 from 10⁶ to 10⁷ (within seed noise).
    dw = wide.final_distance_to_min_norm.sel(scale=0.5).mean("seed")
    ratio = float(dw.sel(width=10**6) / dw.sel(width=10**7))
    assert abs(ratio / np.sqrt(10) - 1) < 0.1


def test_local_executor_checks_devices():
    # (a wrongly typed executor: tests/test_messages.py and the table above)
    with pytest.raises(ValueError, match="devices is empty"):
        flowlin.LocalExecutor(devices=[])


def test_executors_by_name():
    """api.md: executors are objects or the names "local" and "ray" (their defaults)."""
    from flowlin._sweep._sweep import as_executor

    assert as_executor("c", "local") == flowlin.LocalExecutor()
    assert as_executor("c", "ray") == flowlin.RayExecutor()
    problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=9, m=1)
    kw = dict(widths=[3], scales=[0.5], seeds=2, **COMMON)
    by_name = flowlin.sweep(problem, executor="local", **kw)
    by_object = flowlin.sweep(problem, executor=flowlin.LocalExecutor(), **kw)
    xr.testing.assert_identical(by_name.drop_attrs(), by_object.drop_attrs())
    with pytest.raises(TypeError, match=r'executor must be one of "local", "ray"'):
        as_executor("flowlin.sweep(...)", "dask")
