"""`flowlin.enable_compilation_cache`: JAX's persistent compilation cache for flowlin's solves.

The switch changes process-wide options (JAX's cache folder, equinox's error mode, logging), so
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
print(json.dumps(dict(folder=str(folder), entries=sorted(p.name for p in folder.iterdir()),
                      distance=float(traj.distance_to_min_norm[-1]))))
"""


def test_a_gram_solve_is_written_and_read_back(tmp_path):
    """The solve itself (`jit_integrate`, with diffrax's argument checks) is written to the
    folder — JAX writes no program holding a host callback — and a second process reads it
    and computes the same numbers."""
    env = dict(os.environ)
    env.pop("FLOWLIN_COMPILATION_CACHE", None)
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
    assert any(name.startswith("jit_integrate") for name in runs[0]["entries"])
    # The solve was read back, not recompiled: the second process added no `jit_integrate`
    # entry. (Small eager programs are cached or not by their compile time, which the machine's
    # load decides: they may differ between the runs.)
    solves = [{n for n in r["entries"] if n.startswith("jit_integrate")} for r in runs]
    assert solves[1] == solves[0] and set(runs[0]["entries"]) <= set(runs[1]["entries"])
    assert runs[1]["distance"] == runs[0]["distance"]
