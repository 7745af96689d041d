"""GPU sweep: the throughput grid at 10⁴–10⁶ configurations on one device (gram method).

The grid of `sweep_throughput.py` (n = 10, D = 40, m = 2, widths 10–300, 3 scales, t1 = 20)
with as many seeds as make up each size, solved by `flowlin.sweep(method="gram")` in float32
(rtol 1e-5, atol 1e-7) and float64 (rtol 1e-6, atol 1e-9); configs/s (second call when time
allows, so compile is excluded) and peak device memory (`jax.devices()[0].memory_stats()`).
A size is skipped when the previous size's throughput predicts it would overrun the time cap.

    python benchmarks/gpu_sweep.py --sizes 10000,100000,1000000 --time-cap 400
    python benchmarks/gpu_sweep.py --quick        # CPU smoke test: 96 and 192 configurations

Prints a self-contained table; writes JSON to $OUT if that variable is set, else to
benchmarks/results/.
"""

import os


# Several processes may share the GPU; do not grab 75% of its memory up front.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import _common  # noqa: E402

from flowlin._bench import gpu_sweep  # noqa: E402


if __name__ == "__main__":
    p = _common.parser(__doc__)
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated")
    p.add_argument("--time-cap", type=float, default=300.0, help="seconds per dtype")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--chunk-size", type=int, default=16384)
    args = p.parse_args()
    if args.quick:
        args.sizes, args.chunk_size = "96,192", 96
    _common.enable_x64()
    record = gpu_sweep(
        [int(s) for s in args.sizes.split(",")],
        time_cap=args.time_cap,
        dtypes=args.dtypes.split(","),
        chunk_size=args.chunk_size,
    )
    _common.finish(record, args.out, "gpu_sweep")
