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

import _common

from flowlin._bench import GD_LR, throughput


if __name__ == "__main__":
    p = _common.parser(__doc__)
    p.add_argument("--lr", type=float, default=GD_LR, help="gradient-descent step")
    args = p.parse_args()
    _common.enable_x64()
    _common.finish(throughput(args.quick, lr=args.lr), args.out, "sweep_throughput")
