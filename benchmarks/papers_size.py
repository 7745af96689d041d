"""The papers' size: `flowlin.sweep` (theory and bounds on) against a bare diffrax solve.

ICML Fig. 1's problem, `gaussian(key(0), n=100, D=400, m=1)` (r = 100, k = r + m = 101),
Wishart-sampled initializations (entries N(0, 1/h), widths 10³ and 10⁴), t1 = 25, Tsit5, rtol
1e-8, atol 1e-10, max-norm step control, 21 save times:

- **sweep**: `flowlin.sweep(method=Gram(), sampling="wishart", theory=True, bounds=True)`, the
  whole pipeline (sampling, solve, diagnostics, every theory quantity and bound check, the
  dataset), second call (compile excluded);
- **bare**: the same reduced system $\\dot Z = A(ZZ^\\top)Z$ written directly as a diffrax
  `ODETerm`, same solver, controller and save times, from the same kind of initial factor,
  saving only the state, one compiled solve per configuration.

Reported per configuration and per solver step, side by side in one process: after both
compile, `repeats` interleaved rounds (sweep, bare, sweep, ...), the best round of each. Target: the
sweep costs at most 2.5× the bare solve.

    python benchmarks/papers_size.py [--quick]
"""

import pathlib
import sys


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


TARGET_RATIO = 2.5
T1, RTOL, ATOL, SAVES = 25.0, 1e-8, 1e-10, 21


def bare_solver(problem):
    """A jitted bare diffrax solve of the reduced system from an initial factor L."""
    import diffrax as dfx
    import jax
    import jax.numpy as jnp
    import optimistix as optx

    sigma, Y, r = problem.sigma, problem.Y_tilde, problem.rank

    def field(t, Z, args):
        E = Y - Z[:r] @ Z[r:].T
        return jnp.concatenate([sigma[:, None] * (E @ Z[r:]), E.T @ Z[:r]], axis=0)

    @jax.jit
    def solve(L):
        sol = dfx.diffeqsolve(
            dfx.ODETerm(field), dfx.Tsit5(), 0.0, T1, None, L,
            saveat=dfx.SaveAt(ts=jnp.linspace(0.0, T1, SAVES)),
            stepsize_controller=dfx.PIDController(rtol=RTOL, atol=ATOL, norm=optx.max_norm),
            max_steps=100_000, throw=False,
        )  # fmt: skip
        return sol.ys, sol.stats["num_steps"]

    return solve


def papers_size(quick: bool = False, *, repeats: int = 5, echo=print) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import flowlin

    widths, seeds = ([1000], 2) if quick else ([1000, 10_000], 3)
    problem = flowlin.problems.gaussian(jax.random.key(0), n=100, D=400, m=1)
    load_before = H.load_average()

    def run_sweep():
        return flowlin.sweep(
            problem, widths=widths, scales=[0.5], seeds=seeds, sampling="wishart",
            method=flowlin.Gram(), t1=T1, saveat=jnp.linspace(0.0, T1, SAVES), rtol=RTOL,
            atol=ATOL, theory=True, bounds=True, progress=False,
        )  # fmt: skip

    with H.Stopwatch() as first:
        ds = run_sweep()
    n_configs = len(widths) * seeds
    sweep_steps = int(np.sum(ds["num_steps"].values))

    solve = bare_solver(problem)
    inits = [
        flowlin.init.wishart(jax.random.key(100 + i), problem, h, h**-0.5, h**-0.5)
        for h in widths
        for i in range(seeds)
    ]
    # The initial factor L with LLᵀ = Q0 (what `Gram` integrates from a GramInit).
    factors = []
    for g in inits:
        q, P = jnp.linalg.eigh(g.Q)
        factors.append(P * jnp.sqrt(jnp.maximum(q, 0.0)))
    jax.block_until_ready(solve(factors[0]))  # compile

    def run_bare():
        return [solve(L) for L in factors]

    # Interleaved rounds (sweep, bare, sweep, ...): a change of load touches both alike.
    sweep_best = bare_best = float("inf")
    for _ in range(repeats):
        sweep_best = min(sweep_best, H.timed(run_sweep)[0].wall)
        sw, out = H.timed(run_bare)
        bare_best = min(bare_best, sw.wall)
    bare_steps = int(sum(int(o[1]) for o in out))
    rows = [
        dict(approach="bare diffrax (reduced system)", total_s=bare_best,
             per_config_ms=1e3 * bare_best / n_configs, steps=bare_steps / n_configs,
             per_step_us=1e6 * bare_best / bare_steps),
        dict(approach="flowlin.sweep (theory + bounds)", total_s=sweep_best,
             per_config_ms=1e3 * sweep_best / n_configs, steps=sweep_steps / n_configs,
             per_step_us=1e6 * sweep_best / sweep_steps, first_call_s=first.wall),
    ]  # fmt: skip
    per_step_ratio = rows[1]["per_step_us"] / rows[0]["per_step_us"]
    ratio = rows[1]["per_config_ms"] / rows[0]["per_config_ms"]
    for row in rows:
        row["vs_bare_per_config"] = row["per_config_ms"] / rows[0]["per_config_ms"]
        row["vs_bare_per_step"] = row["per_step_us"] / rows[0]["per_step_us"]
    echo(f"papers' size, widths {widths}, {seeds} seeds, Wishart sampling, t1={T1}")
    H.print_table(
        rows,
        [
            ("approach", "approach", ""),
            ("total_s", "total (s)", ".3f"),
            ("per_config_ms", "per config (ms)", ".1f"),
            ("steps", "steps / config", ".0f"),
            ("per_step_us", "µs / step", ".0f"),
            ("vs_bare_per_config", "vs bare (config)", ".2f"),
            ("vs_bare_per_step", "vs bare (step)", ".2f"),
        ],
        echo=echo,
    )
    settings = dict(
        problem="gaussian n=100 D=400 m=1", widths=widths, seeds=seeds, t1=T1, rtol=RTOL,
        atol=ATOL, saves=SAVES, repeats=repeats, target_ratio=TARGET_RATIO, quick=quick,
    )  # fmt: skip
    return H.record(
        "papers_size", settings, rows, ratio=ratio, per_step_ratio=per_step_ratio,
        load_before=load_before, load_after=H.load_average(),
    )  # fmt: skip


if __name__ == "__main__":
    args = H.parser(__doc__).parse_args()
    H.enable_x64()
    H.finish(papers_size(args.quick), args.out, "papers_size")
