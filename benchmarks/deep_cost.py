"""Deep networks: cost per solver step against the hidden width h and the depth L (issue 20).

One problem (n = 10, D = 40, m = 2, Gaussian data, r = 10), every hidden layer of width h,
init `flowlin.init.deep_gaussian(alpha=0.5)`, `gradient_flow(net, problem, t1=5)` with the
default `flowlin.FullWeights()` (Tsit5, rtol 1e-6, atol 1e-9, float64), saving the excess loss
at 6 times. For each width, side by side in one process:

- the **baseline**: the two-layer `flowlin.LinearNetwork` at the same width (today's
  `FullWeights()` step, `init.paper`: the same weights as depth 2);
- depth L = 2 … 5 as a `flowlin.DeepLinearNetwork` (the deep method, `_method/_deep.py`).

Per row: compile time, run time (min over repeats of the compiled call), solver steps, time
per step, and its ratio to the baseline's time per step at that width. The deep step costs
O(r·Σ_l h_l·h_(l-1)) (a forward pass of the data's r informative rows and a backward pass of
E, no h×h product of weights), so at fixed r it grows like (L − 2)·h² once h ≫ D.

    python benchmarks/deep_cost.py            # widths 10 … 2000, L = 2 … 5 (~3 minutes)
    python benchmarks/deep_cost.py --quick    # widths 10, 100; L = 2, 3 (seconds)
"""

import pathlib
import sys
from functools import partial


# Benchmark the checkout this script lives in, not whichever flowlin is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


WIDTHS = (10, 100, 300, 1000, 2000)
DEPTHS = (2, 3, 4, 5)
QUICK_WIDTHS, QUICK_DEPTHS = (10, 100), (2, 3)
N, D, M, T1 = 10, 40, 2, 5.0


def solve(problem, t1):
    """The compiled solve every row times (one compile per network shape)."""
    import diffrax as dfx
    import jax
    import jax.numpy as jnp

    import flowlin

    saveat = flowlin.SaveAt(jnp.linspace(0.0, t1, 6), diagnostics=("excess_loss",))

    @jax.jit
    def run(net):
        return flowlin.gradient_flow(
            net, problem, t1, saveat=saveat, solver=dfx.Tsit5(), rtol=H.RTOL, atol=H.ATOL
        )

    return run


def deep_cost(quick: bool = False, *, repeats: int = 3, echo=print) -> dict:
    """Time per solver step against (h, L), with the two-layer step as the baseline."""
    import jax

    import flowlin

    widths, depths = (QUICK_WIDTHS, QUICK_DEPTHS) if quick else (WIDTHS, DEPTHS)
    problem = flowlin.problems.gaussian(jax.random.key(0), n=N, D=D, m=M)
    run = solve(problem, T1)
    key = jax.random.key(1)
    load_before = H.load_average()
    rows = []
    echo(f"problem n={N} D={D} m={M} (r={problem.rank}), t1={T1}, Tsit5 rtol 1e-6 atol 1e-9")
    for h in widths:
        nets = {"two-layer": flowlin.init.paper(key, D, M, h, 0.5)}
        nets.update(
            {L: flowlin.init.deep_gaussian(key, D, M, (h,) * (L - 1), alpha=0.5) for L in depths}
        )
        base = None
        for label, net in nets.items():
            compile_s, run_s, traj = H.timed_repeats(partial(run, net), repeats)
            steps = int(traj.num_steps)
            per_step = run_s / max(steps, 1)
            base = per_step if label == "two-layer" else base
            row = dict(
                h=h,
                depth=2 if label == "two-layer" else label,
                network="LinearNetwork" if label == "two-layer" else "DeepLinearNetwork",
                compile_s=compile_s,
                run_ms=1e3 * run_s,
                steps=steps,
                us_per_step=1e6 * per_step,
                ratio=per_step / base,
                excess_loss=float(traj.excess_loss[-1]),
            )
            rows.append(row)
            echo(
                f"  h={h:>5} {row['network']:>17} L={row['depth']}: {row['run_ms']:.2f} ms, "
                f"{steps} steps, {row['us_per_step']:.1f} µs/step, ×{row['ratio']:.2f}"
            )
        nets = None  # free the width-h weights before the next width
    echo("")
    H.print_table(
        rows,
        [
            ("h", "h", "d"),
            ("depth", "L", "d"),
            ("network", "network", ""),
            ("compile_s", "compile (s)", ".2f"),
            ("run_ms", "run (ms)", ".2f"),
            ("steps", "steps", "d"),
            ("us_per_step", "µs/step", ".1f"),
            ("ratio", "× two-layer step", ".2f"),
        ],
        echo=echo,
    )
    settings = dict(
        n=N, D=D, m=M, t1=T1, widths=list(widths), depths=list(depths), solver="Tsit5",
        rtol=H.RTOL, atol=H.ATOL, init="deep_gaussian alpha=0.5 (init.paper for the baseline)",
        baseline="two-layer flowlin.LinearNetwork, FullWeights(), same width, same process",
        repeats=repeats, quick=quick,
    )  # fmt: skip
    return H.record(
        "deep_cost", settings, rows, load_before=load_before, load_after=H.load_average()
    )


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    H.enable_x64()
    H.finish(deep_cost(args.quick, repeats=args.repeats), args.out, "deep_cost")
