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
ts = jnp.linspace(0, 2, 3)
traj = flowlin.gradient_flow(net, problem, 2.0, saveat=ts, method=flowlin.Gram())
full = flowlin.gradient_flow(net, problem, 2.0, saveat=ts)
stop = flowlin.gradient_flow(net, problem, 2.0, saveat=ts, method=flowlin.Gram(),
                             stop_at_loss=1e-3)
import equinox._errors
print(json.dumps(dict(folder=str(folder), entries=sorted(p.name for p in folder.iterdir()),
                      distance=[float(t.distance_to_min_norm[-1]) for t in (traj, full, stop)],
                      eqx_mode=equinox._errors.EQX_ON_ERROR)))
"""


def test_the_solves_are_written_and_read_back(tmp_path):
    """Every solve (`jit_integrate`: a gram solve, a full solve, a solve with the
    `stop_at_loss` event; each with diffrax's argument checks) is written to the folder — JAX
    writes no program holding a host callback — and a second process reads them back and
    computes the same numbers; equinox's error mode stays the default one ("raise")."""
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
    assert all(r["eqx_mode"] == "raise" for r in runs)
    solves = [{n for n in r["entries"] if n.startswith("jit_integrate")} for r in runs]
    assert len(solves[0]) == 3
    # The solves were read back, not recompiled: the second process added no `jit_integrate`
    # entry. (Small eager programs are cached or not by their compile time, which the machine's
    # load decides: they may differ between the runs.)
    assert solves[1] == solves[0] and set(runs[0]["entries"]) <= set(runs[1]["entries"])
    assert runs[1]["distance"] == runs[0]["distance"]


def _users_solve():
    """A user's own diffrax solve, with its own argument checks."""
    import diffrax
    import equinox as eqx
    import jax.numpy as jnp

    @eqx.filter_jit
    def solve(ts):
        term = diffrax.ODETerm(lambda t, y, args: -y)
        return diffrax.diffeqsolve(
            term, diffrax.Tsit5(), t0=0.0, t1=2.0, dt0=jnp.asarray(0.1), y0=jnp.ones(2),
            saveat=diffrax.SaveAt(ts=ts),
        ).ys  # fmt: skip

    return solve


def test_users_own_diffrax_checks_still_raise():
    """flowlin compiles out diffrax's argument checks only in the context that traces its own
    solve (`flowlin/_method/_checks.py`): a user's diffrax solve of the same shapes, after a
    flowlin solve, or in another thread while flowlin's window is open, still raises on a bad
    `saveat.ts` (equinox's default mode)."""
    import threading

    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from flowlin._method._checks import diffrax_checks_without_callbacks

    problem = flowlin.problems.whitened(jax.random.key(0), n=3, D=5, m=1)
    net = flowlin.init.paper(jax.random.key(1), 5, 1, 7, 0.5)
    ts = jnp.linspace(0.0, 2.0, 3)
    flowlin.gradient_flow(net, problem, 2.0, saveat=ts, method=flowlin.Gram())
    solve = _users_solve()
    assert jnp.allclose(solve(ts)[-1], jnp.exp(-2.0), rtol=1e-3)
    match = "saveat.ts must lie between t0 and t1"
    with pytest.raises(eqx.EquinoxRuntimeError, match=match):
        solve(ts + 1.0).block_until_ready()

    errors = []

    def in_another_thread():
        try:
            _users_solve()(ts[:2] + 5.0).block_until_ready()  # a shape not traced before
        except eqx.EquinoxRuntimeError as e:
            errors.append(str(e))

    with diffrax_checks_without_callbacks():  # as while flowlin traces a solve
        thread = threading.Thread(target=in_another_thread)
        thread.start()
        thread.join()
    assert len(errors) == 1 and match in errors[0]


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
