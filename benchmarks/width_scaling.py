"""Width scaling: time per gradient-flow trajectory against the hidden width h.

One problem (n = 10, D = 40, m = 2, Gaussian data, NTK init std = h^-1/2, t1 = 20, Tsit5,
rtol 1e-6, atol 1e-9, float64):

- `full`:    `gradient_flow(net, method="full")`, the weight-space solver, h = 10 … 10⁵;
- `gram`:    `gradient_flow(net, method="gram")` from the materialised network (includes the
             one-off O(h·D·(r+m)) Gram/QR of the weights and the rebuilt final network),
             h = 10 … 10⁶;
- `wishart`: `gradient_flow(init.wishart(key, problem, h, ...), method="gram")`, statistics
             sampled without weights, h = 10 … 10⁹ — one compiled function for every h.

Run time is the minimum over repeats (at least 3, and until 3 s is spent) of a compiled call;
compile time is the first call minus that. The last column is the largest relative difference
between the full and gram distances to the min-norm solution over the saved times.

    python benchmarks/width_scaling.py            # ~5 minutes on 2 cores
    python benchmarks/width_scaling.py --quick    # h <= 10^3 (= `flowlin bench width --quick`)
"""

import _common

from flowlin._bench import width_scaling


if __name__ == "__main__":
    p = _common.parser(__doc__)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-full", type=float, default=1e5)
    p.add_argument("--max-gram", type=float, default=1e6)
    p.add_argument("--max-wishart", type=float, default=1e9)
    args = p.parse_args()
    _common.enable_x64()
    record = width_scaling(
        args.quick,
        repeats=args.repeats,
        max_full=args.max_full,
        max_gram=args.max_gram,
        max_wishart=args.max_wishart,
    )
    _common.finish(record, args.out, "width_scaling")
