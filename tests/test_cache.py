"""`flowlin.enable_compilation_cache`: JAX's persistent compilation cache for flowlin's solves.

The switch changes process-wide options (JAX's cache folder, logging), so
everything that turns it on runs in a subprocess; in this process only the paths that change
nothing are exercised.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import flowlin


ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_opt_out_changes_nothing(monkeypatch):
    import jax

    before = jax.config.jax_compilation_cache_dir
    for off in ("0", "off", "False", ""):
        monkeypatch.setenv("FLOWLIN_COMPILATION_CACHE", off)
        assert flowlin.enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before


def test_bad_min_compile_seconds_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"enable_compilation_cache.*min_compile_seconds"):
        flowlin.enable_compilation_cache(tmp_path, min_compile_seconds=-1.0)
    assert not any(tmp_path.iterdir())  # refused before anything was created or changed


SCRIPT = r"""
import json, pathlib, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import flowlin
folder = flowlin.enable_compilation_cache(sys.argv[1])
problem = flowlin.problems.whitened(jax.random.key(0), n=3, D=5, m=1)
net = flowlin.init.paper(jax.random.key(1), 5, 1, 7, 0.5)
traj = flowlin.gradient_flow(net, problem, 2.0, saveat=jnp.linspace(0, 2, 3),
                             method=flowlin.Gram())
import equinox._errors
import equinox.internal
print(json.dumps(dict(folder=str(folder), entries=sorted(p.name for p in folder.iterdir()),
                      distance=float(traj.distance_to_min_norm[-1]),
                      eqx_mode=equinox._errors.EQX_ON_ERROR,
                      error_if_restored=equinox.internal.error_if is equinox._errors.error_if)))
"""


def test_a_gram_solve_is_written_and_read_back(tmp_path):
    """The solve itself (`jit_integrate`, with diffrax's argument checks) is written to the
    folder — JAX writes no program holding a host callback — and a second process reads it
    and computes the same numbers; equinox's error mode stays the default one ("raise") and
    `equinox.internal.error_if` is equinox's own again after the solve."""
    env = dict(os.environ)
    unset = (
        "FLOWLIN_COMPILATION_CACHE",
        "EQX_ON_ERROR",
        "JAX_COMPILATION_CACHE_DIR",
        "TF_CPP_MIN_LOG_LEVEL",
    )  # (a user's settings of these would change what is tested)
    for name in unset:
        env.pop(name, None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "cache")],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "cpu_aot_loader" not in proc.stderr  # jaxlib's spurious loader errors silenced
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert runs[0]["folder"] == str(tmp_path / "cache")
    assert all(r["eqx_mode"] == "raise" and r["error_if_restored"] for r in runs)
    assert any(name.startswith("jit_integrate") for name in runs[0]["entries"])
    # The solve was read back, not recompiled: the second process added no `jit_integrate`
    # entry. (Small eager programs are cached or not by their compile time, which the machine's
    # load decides: they may differ between the runs.)
    solves = [{n for n in r["entries"] if n.startswith("jit_integrate")} for r in runs]
    assert solves[1] == solves[0] and set(runs[0]["entries"]) <= set(runs[1]["entries"])
    assert runs[1]["distance"] == runs[0]["distance"]


def test_users_own_diffrax_checks_still_raise_after_a_flowlin_solve():
    """flowlin's solves compile diffrax's argument checks without callbacks
    (`flowlin/_method/_checks.py`) only while flowlin traces them: a user's own diffrax solve
    afterwards, of the same shapes, still raises on a bad `saveat.ts` (equinox's default
    mode), and `equinox.internal.error_if` is equinox's own again."""
    import diffrax
    import equinox as eqx
    import equinox._errors
    import equinox.internal
    import jax
    import jax.numpy as jnp

    problem = flowlin.problems.whitened(jax.random.key(0), n=3, D=5, m=1)
    net = flowlin.init.paper(jax.random.key(1), 5, 1, 7, 0.5)
    ts = jnp.linspace(0.0, 2.0, 3)
    flowlin.gradient_flow(net, problem, 2.0, saveat=ts, method=flowlin.Gram())
    assert equinox.internal.error_if is equinox._errors.error_if

    @eqx.filter_jit
    def users_solve(ts):
        term = diffrax.ODETerm(lambda t, y, args: -y)
        return diffrax.diffeqsolve(
            term, diffrax.Tsit5(), t0=0.0, t1=2.0, dt0=jnp.asarray(0.1), y0=jnp.ones(2),
            saveat=diffrax.SaveAt(ts=ts),
        ).ys  # fmt: skip

    assert jnp.allclose(users_solve(ts)[-1], jnp.exp(-2.0), rtol=1e-3)
    with pytest.raises(eqx.EquinoxRuntimeError, match="saveat.ts must lie between t0 and t1"):
        users_solve(ts + 1.0).block_until_ready()


CLI_SETUP = r"""
import json, os, sys
from flowlin import _cli
_cli._enable_x64()  # what every `flowlin` command that computes runs first
import equinox._errors
import jax
print(json.dumps(dict(
    flags=os.environ.get("XLA_FLAGS", ""), x64=bool(jax.config.jax_enable_x64),
    cache=jax.config.jax_compilation_cache_dir, eqx_mode=equinox._errors.EQX_ON_ERROR,
)))
"""


def test_the_cli_process_setup(tmp_path):
    """A `flowlin` command's process: float64, the compilation cache in the folder
    `FLOWLIN_COMPILATION_CACHE` names, XLA:CPU's older fusion emitters where this jaxlib has
    the flag (`flowlin/_fast_compile.py`), and equinox's error mode left at its default."""
    from flowlin import _fast_compile

    env = dict(os.environ, FLOWLIN_COMPILATION_CACHE=str(tmp_path / "cache"))
    for name in ("XLA_FLAGS", "EQX_ON_ERROR", "JAX_COMPILATION_CACHE_DIR"):
        env.pop(name, None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", CLI_SETUP], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    setup = json.loads(proc.stdout.strip().splitlines()[-1])
    assert setup["x64"] and setup["cache"] == str(tmp_path / "cache")
    assert setup["eqx_mode"] == "raise"
    has_flag = _fast_compile.FLAG in setup["flags"].split()
    assert has_flag == _fast_compile.jaxlib_has_flag()
