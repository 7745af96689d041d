"""float32 with x64 off (JAX's default), in one subprocess: on converged flows of the papers'
problems (ICML Fig. 1 and Fig. 2 settings at reduced size, both methods) `check_bounds` and a
small sweep report no false violation, every run converged, and the float32 warning is shown
exactly once. The script also runs in float64 (`python tests/test_float32.py 64`), which is
how the float32-vs-float64 verdict table of the notes was made."""

import json
import os
import subprocess
import sys
import warnings


#: ICML Fig. 1 (Gaussian data) and Fig. 2 (whitened data) at reduced size: n = 20, D = 40,
#: m = 1; the paper's N(0, h^-2α) init at α = 1/2; t1 = 25 (both converge by then).
N, D, M, ALPHA, T1 = 20, 40, 1, 0.5, 25.0
CASES = (("fig1", "gaussian", 100), ("fig2", "whitened", 50))


def _verdict(check) -> str:
    import flowlin

    if bool(check.applicable):
        return "held" if bool(check.holds) else "VIOLATED"
    return "n/a: " + flowlin.BoundCheck.REASONS[int(check.reason)]


def main(x64: bool) -> dict:
    import jax

    jax.config.update("jax_enable_x64", x64)
    import jax.numpy as jnp

    import flowlin

    dtype = jnp.float64 if x64 else jnp.float32
    out = {"runs": {}, "status": {}, "excluded": {}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, gen, h in CASES:
            problem = getattr(flowlin.problems, gen)(jax.random.key(0), N, D, M, dtype=dtype)
            net = flowlin.init.paper(jax.random.key(1), D=D, m=M, h=h, alpha=ALPHA, dtype=dtype)
            for method in (flowlin.FullWeights(), flowlin.Gram()):
                traj = flowlin.gradient_flow(net, problem, T1, method=method)
                checks = flowlin.check_bounds(traj, net, problem, alpha=ALPHA)
                run = f"{name}/{method.name}"
                out["runs"][run] = {k: _verdict(c) for k, c in checks.items()}
                out["excluded"][run] = {k: int(c.excluded) for k, c in checks.items()}
                out["status"][run] = [bool(traj.converged), str(traj.result)]
        problem = flowlin.problems.gaussian(jax.random.key(0), N, D, M, dtype=dtype)
        ds = flowlin.sweep(
            problem, widths=[50, 100], scales=[ALPHA], seeds=2, t1=T1, progress=False
        )
        summary = flowlin.summarize_bounds(ds)
        out["sweep"] = {r.bound: [r.applicable, r.held] for r in summary.bounds}
        out["sweep_failed"], out["sweep_not_converged"] = summary.failed, summary.not_converged
    messages = [str(w.message) for w in caught]
    out["float32_warnings"] = sum("x64 is off" in m for m in messages)
    return out


def test_float32_verdicts_are_true_and_warned_once():
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, __file__, "32"], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["float32_warnings"] == 1, out
    for run, verdicts in out["runs"].items():
        assert out["status"][run][0], (run, out["status"][run])  # converged
        assert "VIOLATED" not in verdicts.values(), (run, verdicts)
        # The flow's own bounds were confirmed (not just "not applicable") in float32.
        for key in ("loss_imbalance", "loss_margin", "imbalance_conserved", "limit_identity"):
            assert verdicts[key] == "held", (run, key, verdicts[key])
    assert out["sweep_failed"] == 0 and out["sweep_not_converged"] == 0, out
    for bound, (applicable, held) in out["sweep"].items():
        assert held == applicable, (bound, applicable, held)
    assert out["sweep"]["loss_imbalance"][0] == 4  # 2 widths × 2 seeds, all checked


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] == "64")))
