"""Sweep throughput: the performance.md grid by scipy, NumPy GD, flowlin full and gram.

48 configurations (n = 10, D = 40, m = 2; widths 10, 30, 100, 300; α = 0.25, 0.5, 0.75 of the
paper init N(0, h^-2α); 4 seeds; t1 = 20; float64; rtol 1e-6, atol 1e-9) solved by

  (a) a `scipy.integrate.solve_ivp` (RK45) loop over the configurations, unpadded weights;
  (b) plain gradient descent in NumPy, η = 1e-3, iteration k ↔ flow time t = ηk;
  (c) `flowlin.sweep(method="full")`;  (d) `flowlin.sweep(method="gram")`.

Reports configs/s, the ratio to (a), compile time (flowlin: first call minus the timed second
call) and the largest disagreement between the approaches over 21 save times.

    python benchmarks/sweep_throughput.py [--quick]      # same as `flowlin bench throughput`
"""

import os


# One BLAS thread for the scipy/NumPy baselines: on a shared machine OpenBLAS's worker threads
# spin against other jobs and inflate both wall and CPU time (a scipy loop measured 25.9 s at
# load 7 and 1.45 s at load 1.5). Set before NumPy loads OpenBLAS; recorded in the JSON.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import _common  # noqa: E402

from flowlin._bench import GD_LR, throughput  # noqa: E402


if __name__ == "__main__":
    p = _common.parser(__doc__)
    p.add_argument("--lr", type=float, default=GD_LR, help="gradient-descent step")
    args = p.parse_args()
    _common.enable_x64()
    _common.finish(throughput(args.quick, lr=args.lr), args.out, "sweep_throughput")
