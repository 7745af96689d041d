"""Compile time of the first call of each flowlin entry point, each in a fresh process.

gradient_flow (full, gram), gradient_descent, check_bounds and sweep on a small problem
(n = 10, D = 40, m = 2, h = 100, float64, CPU): first call, second call, their difference
(the compile time), and the time to import flowlin. A fresh `python` process per entry point
so that no in-process cache hides the compilation. Target: first gradient_flow < 5 s on CPU.

    python benchmarks/compile_time.py [--quick]   # same as `flowlin bench compile`
"""

import _common

from flowlin._bench import compile_times


if __name__ == "__main__":
    args = _common.parser(__doc__).parse_args()
    _common.enable_x64()
    _common.finish(compile_times(args.quick), args.out, "compile_time")
