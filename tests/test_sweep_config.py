"""`flowlin sweep CONFIG.toml` (`flowlin.reproduce.config`): a run against the full solver, the
strings mapped to objects in one place, bad configurations rejected with the field named."""

import pathlib

import jax
import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import flowlin
from flowlin._cli import app
from flowlin.reproduce.config import (
    ConfigError,
    build_executor,
    load_config,
    sweep_arguments,
    validate_config,
)
from flowlin.reproduce.paper import FIG1_AVERAGED_LOSS_STOP


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

CONFIG = """
title = "test sweep"

[problem]
kind = "gaussian"
n = 5
D = 12
m = 1
seed = 3

[init]
kind = "paper"
widths = [5, 8]  # one bucket (padded to 8): one compile
scales = [0.5]
seeds = 2

[dynamics]
kind = "flow"
method = "gram"
t1 = 20.0
saves = 41

[report]
stop_at_loss = 1e-6
"""


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _raw():
    import tomllib

    return tomllib.loads(CONFIG)


def test_sweep_config_runs_and_matches_the_full_solver(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(CONFIG)
    out = tmp_path / "out"
    result = _invoke("sweep", path, "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    with xr.open_dataset(out / "sweep.nc") as ds:
        assert dict(ds.sizes)["width"] == 2 and dict(ds.sizes)["seed"] == 2
        got = float(ds.final_distance_to_min_norm.sel(width=8, seed=1, scale=0.5))
        loss = ds.excess_loss.sel(width=8, seed=1, scale=0.5).values
        stop = float(ds.stop_time.sel(width=8, seed=1, scale=0.5))
    # Independent truth: the full solver (diffrax on the weights) from the same init.
    problem = flowlin.problems.gaussian(jax.random.key(3), n=5, D=12, m=1)
    net = flowlin.init.paper(jax.random.fold_in(jax.random.key(0), 1), 12, 1, 8, 0.5)
    full = flowlin.gradient_flow(net, problem, 20.0, stop_at_loss=1e-6)
    ref = flowlin.gradient_flow(net, problem, 20.0, saveat=np.linspace(0, 20, 41))
    np.testing.assert_allclose(got, ref.final_values["distance_to_min_norm"], rtol=1e-6)
    np.testing.assert_allclose(loss, ref.excess_loss, rtol=1e-5, atol=1e-14)
    # The interpolated crossing time vs the solver's root find (log-linear between saves 0.5
    # apart: exact for a pure exponential, ~1e-2 for this nearly exponential decay).
    np.testing.assert_allclose(stop, float(full.final_time), rtol=2e-2)
    for name in ("loss.png", "distance.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    assert "test sweep" in report and "| bound |" in report


def test_strings_become_objects():
    # The file's strings map to flowlin objects here and nowhere else.
    raw = _raw()
    cfg = validate_config(raw)
    problem = flowlin.problems.gaussian(jax.random.key(3), n=5, D=12, m=1)
    _, kw = sweep_arguments(cfg, problem)
    assert isinstance(kw["method"], flowlin.Gram)
    assert isinstance(kw["executor"], flowlin.LocalExecutor)
    raw["dynamics"]["method"] = "full"
    raw["executor"] = {"kind": "local", "batch_size": 2}
    _, kw = sweep_arguments(validate_config(raw), problem)
    assert isinstance(kw["method"], flowlin.FullWeights)
    assert kw["executor"].batch_size == 2
    raw["executor"] = {"kind": "ray", "address": "auto", "num_cpus": 2}
    ray = build_executor(validate_config(raw))
    assert isinstance(ray, flowlin.RayExecutor)
    assert ray.address == "auto" and ray.num_cpus == 2


@pytest.mark.parametrize("kind", ["gaussian", "factorization"])
def test_noise_defaults_to_the_problem_functions_own(kind):
    # A file that does not set `noise` gets the data `flowlin.problems` draws by default.
    import inspect

    from flowlin.reproduce.config import build_problem

    raw = _raw()
    del raw["problem"]["seed"]
    if kind == "factorization":
        raw["problem"] = {"kind": "factorization", "n": 5, "m": 2}
        default = flowlin.problems.factorization(jax.random.key(0), n=5, m=2)
        named = inspect.signature(flowlin.problems.factorization).parameters["y_std"].default
    else:
        default = flowlin.problems.gaussian(jax.random.key(0), n=5, D=12, m=1)
        named = inspect.signature(flowlin.problems.gaussian).parameters["noise"].default
    cfg = validate_config(raw)
    assert cfg["problem"]["noise"] == named
    problem = build_problem(cfg)
    np.testing.assert_array_equal(problem.X, default.X)
    np.testing.assert_array_equal(problem.Y, default.Y)


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c["init"].pop("widths"), "[init].widths is required"),
        (lambda c: c["init"].update(widths=[0, 5]), "[init].widths"),
        (lambda c: c["init"].update(widths="5"), "[init].widths must be a list"),
        (lambda c: c["dynamics"].update(t2=1.0), "[dynamics].t2 is not a known key"),
        (lambda c: c["problem"].update(kind="mnist"), "[problem].kind must be one of"),
        (lambda c: c["problem"].update(D=4), "[problem].D must exceed n"),
        (lambda c: c["dynamics"].update(kind="descent"), "[dynamics].lr is required"),
        (lambda c: c["init"].update(scales=[[0.1, 0.2]]), "[init].scales"),
        (lambda c: c["init"].update(sampling="wishart", seeds=0), "[init].seeds"),
        (lambda c: c.update(solver={}), "unknown section 'solver'"),
        (lambda c: c["report"].update(stop_at_loss=-1.0), "[report].stop_at_loss"),
        (lambda c: c["dynamics"].update(method="euler"), "[dynamics].method must be one of"),
        (lambda c: c.update(executor={"kind": "mpi"}), "[executor].kind must be one of"),
        (
            lambda c: c.update(executor={"kind": "ray", "batch_size": 2}),
            "[executor].batch_size is an option of kind = 'local'",
        ),
        (lambda c: c.update(executor={"batch_size": 0}), "[executor].batch_size must be >= 1"),
        # Rejected by the executor's own checks, turned into a ConfigError naming the field.
        (
            lambda c: c.update(executor={"kind": "ray", "num_gpus": 1.5}),
            "[executor].num_gpus must be a fraction of one GPU or a whole number",
        ),
        (
            lambda c: c.update(executor={"kind": "ray", "address": ""}),
            "[executor].address must be a Ray cluster address",
        ),
    ],
)
def test_bad_config_names_the_field(edit, field):
    raw = _raw()
    edit(raw)
    with pytest.raises(ConfigError) as err:
        validate_config(raw, "bad.toml")
    assert field in str(err.value) and "bad.toml" in str(err.value)


def test_bad_config_rejected_by_the_cli(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(CONFIG.replace("t1 = 20.0", "t1 = -8.0"))
    result = _invoke("sweep", path, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "[dynamics].t1 must be > 0" in result.output
    assert not (tmp_path / "out").exists()  # rejected before any compute or output
    for executor in ('kind = "ray"\nnum_gpus = 1.5', 'kind = "ray"\naddress = ""'):
        path.write_text(CONFIG + f"\n[executor]\n{executor}\n")
        result = _invoke("sweep", path, "--out", tmp_path / "out")
        assert result.exit_code == 2 and "[executor]." in result.output, result.output
        assert not (tmp_path / "out").exists()
    path.write_text("[problem\nkind = 1")
    result = _invoke("sweep", path, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "not valid TOML" in result.output


def test_example_config_is_valid():
    cfg = load_config(pathlib.Path(__file__).resolve().parents[1] / "examples" / "fig1.toml")
    # The example stops where the paper does: averaged loss (1/n)‖R‖² < 1e-8, i.e. excess
    # loss n·1e-8/2 (L* = 0: X has full row rank, r = n < D).
    assert cfg["report"]["stop_at_loss"] == cfg["problem"]["n"] * FIG1_AVERAGED_LOSS_STOP / 2
