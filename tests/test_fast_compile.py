"""`flowlin.enable_fast_cpu_compiles`: XLA:CPU's older fusion emitters, for shorter compiles.

XLA reads its flags when JAX starts its backend, so the switch is exercised in subprocesses;
in this process (whose backend exists) only the paths that change nothing run. Speed is
measured in benchmarks/compile_time.py, never here.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import flowlin
from flowlin import _fast_compile


ROOT = pathlib.Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, os, pathlib, sys
import flowlin
added = flowlin.enable_fast_cpu_compiles() if sys.argv[1] == "on" else None
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
problem = flowlin.problems.gaussian(jax.random.key(0), n=4, D=9, m=2)
net = flowlin.init.paper(jax.random.key(1), 9, 2, 12, 0.3)
ts = jnp.linspace(0, 3, 4)
gram = flowlin.gradient_flow(net, problem, 3.0, saveat=ts, method=flowlin.Gram())
checks = flowlin.check_bounds(gram, net, problem)
def probe(x):  # one fused elementwise kernel, the only program XLA dumps
    return jnp.sin(x) * 2.0 + jnp.cos(x)
jax.jit(probe)(ts).block_until_ready()
dump = pathlib.Path(sys.argv[2])
print(json.dumps(dict(
    added=added, flags=os.environ.get("XLA_FLAGS", ""),
    gram=[float(x) for x in gram.distance_to_min_norm] + [float(x) for x in gram.excess_loss],
    held={k: bool(c.holds) for k, c in checks.items() if c.applicable},
    mlir=sum(1 for p in dump.iterdir() if p.name.endswith("post-optimization.mlir")),
    kernels=sum(1 for p in dump.iterdir() if p.name.endswith(".ir-with-opt.ll")),
)))
"""


def _run(mode: str, dump: pathlib.Path) -> dict:
    env = dict(os.environ)
    # Each run chooses its own emitters; the dump (of the probe only: dumping every program
    # is slow) shows which emitters generated its kernel.
    env["XLA_FLAGS"] = f"--xla_dump_to={dump} --xla_dump_hlo_module_re=.*probe.*"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # compiled here, not read from a user's cache
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(dump)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(
    not _fast_compile.jaxlib_has_flag(), reason="jaxlib outside the versions known to have the flag"
)
def test_the_older_emitters_compile_the_same_numbers(tmp_path):
    """With the switch on, XLA generates fused kernels through its LLVM emitters (no fusion
    goes through the MLIR emitters, whose files the dump shows otherwise), and a gram solve
    and its bound checks give the same numbers as with the default emitters, to 1e-13
    relative. (benchmarks/compile_time.py --emitters compares every entry point, the full
    solve and sweeps included: bit-identical.)"""
    default = _run("off", tmp_path / "default")
    fast = _run("on", tmp_path / "fast")
    assert fast["added"] is True and _fast_compile.FLAG in fast["flags"].split()
    assert default["mlir"] > 0 and fast["mlir"] == 0  # the flag reached XLA
    assert fast["kernels"] > 0
    assert fast["gram"] == pytest.approx(default["gram"], rel=1e-13, abs=1e-300)
    assert fast["held"] == default["held"] and fast["held"]


def test_a_flag_of_yours_wins(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    assert flowlin.enable_fast_cpu_compiles() is False
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_fusion_emitters=true"


def test_an_unknown_jaxlib_changes_nothing(monkeypatch):
    """XLA aborts the process on a flag it does not know: outside the known versions (or
    without jaxlib's metadata) nothing is added."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    for version in [(0, 5), (0, 11), None]:
        monkeypatch.setattr(_fast_compile, "_jaxlib_version", lambda v=version: v)
        assert flowlin.enable_fast_cpu_compiles() is False
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"


def test_too_late_warns_and_changes_nothing(monkeypatch):
    import jax.numpy as jnp

    jnp.zeros(1).block_until_ready()  # this process's backend exists
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
    monkeypatch.setattr(_fast_compile, "_jaxlib_version", lambda: (0, 9))
    with pytest.warns(UserWarning, match=r"enable_fast_cpu_compiles\(\) has no effect.*backend"):
        assert flowlin.enable_fast_cpu_compiles() is False
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
