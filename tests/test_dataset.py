"""`flowlin._dataset`: the one schema of stored results (names generated from typed fields),
its round trips, and the readers that the summary and the reports share."""

import dataclasses

import jax
import numpy as np
import pytest
import xarray as xr

import flowlin
from flowlin import _dataset as schema


D, M, WIDTHS = 12, 2, (4, 9)


@pytest.fixture(scope="module")
def runs():
    problem = flowlin.problems.gaussian(jax.random.key(0), n=5, D=D, m=M)
    nets = [flowlin.init.paper(jax.random.key(i), D, M, h, 0.5) for i, h in enumerate(WIDTHS)]
    trajs = [flowlin.gradient_flow(n, problem, 4.0, saveat=[0.0, 2.0, 4.0]) for n in nets]
    return problem, nets, trajs


def test_names_come_from_typed_fields(runs):
    problem, nets, trajs = runs
    assert schema.BOUND_FIELDS == tuple(f.name for f in dataclasses.fields(flowlin.BoundCheck))
    q = flowlin.theory.quantities(nets[0], problem)
    checks = flowlin.check_bounds(trajs[0], nets[0], problem)
    rec = schema.record(trajs[0], q, checks)
    expected = (
        {schema.time_var(k) for k in flowlin.DIAGNOSTICS}
        | {schema.final_var(k) for k in trajs[0].final_values}
        | {schema.FINAL_TIME, schema.NUM_STEPS, schema.STATUS, schema.SUCCEEDED, schema.CONVERGED}
        | {schema.theory_var(k) for k in flowlin.theory.QUANTITY_KEYS}
        | {schema.bound_var(b, f) for b in flowlin.CHECK_KEYS for f in schema.BOUND_FIELDS}
    )
    assert set(rec) == expected
    with pytest.raises(ValueError, match="field must be one of"):
        schema.bound_var("loss_margin", "slack")


def test_trajectory_dataset_is_read_by_the_summary(runs):
    problem, nets, trajs = runs
    ds = schema.trajectory_dataset(["a", "b"], trajs, nets, problem)
    assert dict(ds.sizes) == {"case": 2, "time": 3}
    assert schema.bound_names(ds) == sorted(flowlin.CHECK_KEYS)
    np.testing.assert_array_equal(ds["loss"].sel(case="b"), trajs[1].loss)
    np.testing.assert_array_equal(ds["width"], WIDTHS)
    held, failed = schema.all_bounds_held(ds)
    assert held and failed == []
    summary = flowlin.summarize_bounds(ds)
    assert {r.bound for r in summary.bounds} == set(flowlin.CHECK_KEYS)
    # A violated applicable bound is reported by name.
    name = next(r.bound for r in summary.bounds if r.applicable)
    applicable = ds[schema.bound_var(name, "applicable")].values
    broken = ds.copy()
    broken[schema.bound_var(name, "holds")] = ("case", ~applicable)
    assert schema.all_bounds_held(broken) == (False, [name])


def test_shard_round_trip_and_netcdf_safe(runs, tmp_path):
    problem, nets, trajs = runs
    records = [schema.record(t) for t in trajs]
    arrays = schema.stack_records(records)
    rows = np.array([7, 3])
    shard = schema.shard_dataset(5, rows, arrays)
    path = tmp_path / "shard.nc"
    shard.to_netcdf(path, engine="netcdf4")
    with xr.open_dataset(path, engine="netcdf4") as back:
        got_rows, got = schema.shard_arrays(back.load())
    np.testing.assert_array_equal(got_rows, rows)
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype, k
    safe = schema.netcdf_safe(shard.assign_attrs(a=None, b=[1, 2], c=True, d="x"))
    assert safe.attrs == {"chunk": 5, "a": "null", "b": "[1, 2]", "c": 1, "d": "x"}
    assert safe[schema.SUCCEEDED].dtype == bool
    assert schema.netcdf_safe(shard, bools_as_int8=True)[schema.SUCCEEDED].dtype == np.int8
