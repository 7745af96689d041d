"""Paper reproduction cost: ICML Fig. 1 by flowlin against the papers' gradient descent.

ICML Fig. 1: n = 100, D = 400, m = 1, init N(0, 1/h), widths 500 … 10⁴, 5 seeds; the papers
run gradient descent with η = 5e-3 on the averaged loss until it is ≤ 1e-8.

- flowlin: `flowlin.sweep(method="gram")` on that grid with `stop_at_loss` at the same
  threshold, `theory=True, bounds=True` — the computation `flowlin reproduce fig1` performs,
  timed directly (without plotting). First call (with compile) and second call.
- the papers' procedure: NumPy gradient descent. Run to the end for h <= --gd-full-max-width
  and the first --gd-full-seeds seeds; for the other runs the time is extrapolated as
  (iterations to stop, ⌈t_stop·n/(2η)⌉ from the flow's stopping time) × (seconds per iteration
  measured over --gd-probe-iterations at that width). The fully-run cases check the predicted
  iteration counts and the final distances.

    python benchmarks/fig1_cost.py [--quick]      # same as `flowlin bench fig1`
"""

import os


# One BLAS thread for the NumPy baseline: on a shared 2-core machine OpenBLAS's threads spin
# against the other jobs (measured 1.8 ms per iteration at h = 500, 30× the single-threaded
# cost). Set before NumPy loads OpenBLAS; recorded in the JSON's machine record.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import _common  # noqa: E402

from flowlin._bench import fig1  # noqa: E402


if __name__ == "__main__":
    p = _common.parser(__doc__)
    p.add_argument("--gd-full-max-width", type=int, default=1000)
    p.add_argument("--gd-full-seeds", type=int, default=2)
    p.add_argument("--gd-probe-iterations", type=int, default=200)
    args = p.parse_args()
    _common.enable_x64()
    record = fig1(
        args.quick,
        gd_full_max_width=args.gd_full_max_width,
        gd_full_seeds=args.gd_full_seeds,
        gd_probe_iterations=args.gd_probe_iterations,
    )
    _common.finish(record, args.out, "fig1_cost")
