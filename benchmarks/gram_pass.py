"""Where a gram solve from wide weights spends its time, and ways to form its one pass.

`Gram()` from a `LinearNetwork` reads the weights once (`flowlin._method._pass.gram_and_cross`):
$Q_0 = Z_0Z_0^\\top$ and $Z_0W_1$ ($Z_0^\\top = [W_1\\Phi_1S, W_2^\\top]$, $h\\times(r+m)$).
At h = 2·10⁵, D = 30 (48 MB of float64 weights) this script times, in one process, each
program alone (min over `--repeats` calls):

- the floor: reading $W_1$ once (`jnp.sum`);
- the pass as flowlin does it on a CPU, by its native kernel (`flowlin._native`:
  $S = W_1^\\top[W_1, W_2^\\top]$, then $Q_0$ and $Z_0W_1$ from $S$), and by XLA (1024-row
  blocks; what runs where the kernel cannot be built, or with `FLOWLIN_NATIVE=0`);
- a whole solve with `reconstruct=False` saving every diagnostic or only `excess_loss` (which
  does not need $Z_0W_1$), with each pass, and the h = 10 solve it is measured against;
- other formulations of the same pass, each checked equal to flowlin's to 1e-12 first:
  block sizes, batched `einsum` over blocks, `lax.map`, plain dots, the $O(hD^2)$ route
  through $G = W_1^\\top W_1$, two halves side by side, and two independent loops (to see
  whether XLA:CPU runs them on the two cores at once: the CPU time per call says);
- references outside XLA: NumPy/OpenBLAS $W_1^\\top W_1$, and the fewest flops of any
  formulation here (at D = 30, r = 10): $G = W_1^\\top W_1$ by OpenBLAS's `dsyrk`, with
  $W_2W_1$ and $W_2W_2^\\top$ (one BLAS thread unless `OPENBLAS_NUM_THREADS` says otherwise).

    python benchmarks/gram_pass.py            # ~1 minute
    python benchmarks/gram_pass.py --quick    # h = 2·10⁴
    python benchmarks/gram_pass.py --malloc-mmap-threshold 1073741824   # large outputs reuse
                                                                        # freed memory

Outputs of 32 MiB and more (the rebuilt W₁ at h = 2·10⁵ is 48 MB) are fresh `mmap`s under
glibc's defaults: every call pays the page faults of writing them. `--malloc-mmap-threshold`
shows what that costs, as `MALLOC_MMAP_THRESHOLD_` would set before Python starts.
"""

import os
import pathlib
import sys
from functools import partial


sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from benchmarks import _harness as H  # noqa: E402


def _set_mmap_threshold(size: int) -> None:
    """glibc's `mallopt(M_MMAP_THRESHOLD)` and `mallopt(M_TRIM_THRESHOLD)` (Linux only)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    if not (libc.mallopt(M_MMAP_THRESHOLD, size) and libc.mallopt(M_TRIM_THRESHOLD, size)):
        raise SystemExit(f"--malloc-mmap-threshold: glibc refused {size} bytes")


def _blocked(W1, W2, PS, rows):
    """flowlin's XLA pass itself, traced with another block size."""
    import flowlin._method._pass as pass_

    saved, pass_.BLOCK_ROWS = pass_.BLOCK_ROWS, rows
    native, pass_.use_native_pass = pass_.use_native_pass, lambda *args: False
    try:
        return pass_.gram_and_cross(W1, W2, PS)
    finally:
        pass_.BLOCK_ROWS, pass_.use_native_pass = saved, native


def _compiled(fn, *args, native: bool):
    """`fn(*args)` compiled ahead of time with the native pass on or off: the pass is chosen
    while tracing, and a compiled program keeps it (so both can be timed in one process)."""
    import jax

    from flowlin._native import use_native

    use_native(native)  # clears JAX's caches when it changes the setting
    try:
        compiled = jax.jit(fn).lower(*args).compile()
    finally:
        use_native(True)
    return partial(compiled, *args)


def _assemble(AA, AW, A2, W2, W1):
    """(Q0, Z0W1) from A = W1ΦS's products (AA = AᵀA, AW = AᵀW1, A2 = W2A)."""
    import jax.numpy as jnp

    Q = jnp.block([[AA, A2.T], [A2, W2 @ W2.T]])
    return Q, jnp.concatenate([AW, W2 @ W1], axis=0)


def _batched(W1, W2, PS, rows):
    """A = W1ΦS once, then per-block products batched by `einsum` and summed."""
    import jax.numpy as jnp

    A = W1 @ PS
    Ab, Wb = A.reshape(-1, rows, A.shape[1]), W1.reshape(-1, rows, W1.shape[1])
    AA = jnp.einsum("kbi,kbj->kij", Ab, Ab).sum(0)
    AW = jnp.einsum("kbi,kbj->kij", Ab, Wb).sum(0)
    return _assemble(AA, AW, W2 @ A, W2, W1)


def _plain(W1, W2, PS, rows):
    A = W1 @ PS
    return _assemble(A.T @ A, A.T @ W1, W2 @ A, W2, W1)


def _mapped(W1, W2, PS, rows):
    """`lax.map` over blocks."""
    import jax

    from flowlin._method._pass import first_factor

    def block(args):
        w1, w2 = args
        zt = first_factor(w1, w2, PS)
        return zt.T @ zt, zt.T @ w1

    W2b = W2.reshape(W2.shape[0], -1, rows).transpose(1, 0, 2)
    q, b = jax.lax.map(block, (W1.reshape(-1, rows, W1.shape[1]), W2b))
    return q.sum(0), b.sum(0)


def _through_G(W1, W2, PS, rows):
    """G = W1ᵀW1 (O(hD²)), then Q0 and Z0W1 from G and W2W1."""
    import jax.numpy as jnp

    G, c = W1.T @ W1, W2 @ W1
    cP = c @ PS
    Q = jnp.block([[PS.T @ G @ PS, cP.T], [cP, W2 @ W2.T]])
    return Q, jnp.concatenate([PS.T @ G, c], axis=0)


def _halves(W1, W2, PS, rows):
    """Two halves of the rows, vmapped (a way to hand XLA two independent loops)."""
    import jax

    h, D = W1.shape
    W2h = W2.reshape(W2.shape[0], 2, -1).transpose(1, 0, 2)
    q, b = jax.vmap(lambda w1, w2: _blocked(w1, w2, PS, rows))(W1.reshape(2, -1, D), W2h)
    return q.sum(0), b.sum(0)


def _loops(W1, W2, PS, rows):
    """Two independent `fori_loop`s over the two halves of the blocks, summed at the end: no
    data flows between them, so a runtime that runs independent work at once could use both
    cores (no copy of the rows: each loop slices the whole W1)."""
    import jax
    import jax.numpy as jnp

    from flowlin._method._pass import first_factor

    h, D = W1.shape
    k, count = PS.shape[1] + W2.shape[0], h // rows
    assert count * rows == h, "the widths timed here are whole numbers of blocks"

    def add_block(i, acc):
        w1 = jax.lax.dynamic_slice_in_dim(W1, i * rows, rows, 0)
        w2 = jax.lax.dynamic_slice_in_dim(W2, i * rows, rows, 1)
        zt = first_factor(w1, w2, PS)
        return acc[0] + zt.T @ zt, acc[1] + zt.T @ w1

    zeros = (jnp.zeros((k, k), W1.dtype), jnp.zeros((k, D), W1.dtype))
    a = jax.lax.fori_loop(0, count // 2, add_block, zeros)
    b = jax.lax.fori_loop(count // 2, count, add_block, zeros)
    return a[0] + b[0], a[1] + b[1]


def gram_pass(
    quick: bool = False, *, repeats: int = 30, mmap_threshold: int | None = None, echo=print
) -> dict:
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np
    from scipy.linalg import blas as scipy_blas

    import flowlin
    from flowlin._method._pass import BLOCK_ROWS, gram_and_cross
    from flowlin._native import native_status

    n, D, m, t1 = 10, 30, 1, 20.0
    h = 20_000 if quick else 200_000
    problem = flowlin.problems.gaussian(jax.random.key(0), n=n, D=D, m=m)
    PS = problem.Phi1 * problem.sqrt_sigma
    load_before = H.load_average()
    small = flowlin.init.paper(jax.random.key(1), D, m, 10, 0.5)
    net = flowlin.init.paper(jax.random.key(1), D, m, h, 0.5)
    W1, W2 = net.W1, net.W2

    def solve(saveat, which, native=True, reconstruct=False):
        method = flowlin.Gram(reconstruct=reconstruct)
        fn = partial(flowlin.gradient_flow, method=method, saveat=saveat)
        return _compiled(fn, which, problem, t1, native=native)

    every, loss_only = flowlin.SaveAt(), flowlin.SaveAt(diagnostics=("excess_loss",))
    native_ok, native_why = native_status()
    echo(f"native pass: {native_ok} ({native_why})")
    calls = {
        "read W1 once (jnp.sum)": partial(jax.jit(jnp.sum), W1),
        "flowlin's pass, native kernel (S = W1ᵀ[W1, W2ᵀ])": _compiled(
            gram_and_cross, W1, W2, PS, native=True
        ),
        f"flowlin's pass, XLA ({BLOCK_ROWS}-row blocks)": _compiled(
            gram_and_cross, W1, W2, PS, native=False
        ),
        "solve, every diagnostic": solve(every, net),
        "solve, every diagnostic, XLA pass": solve(every, net, native=False),
        "solve, excess_loss only": solve(loss_only, net),
        "solve, excess_loss only, XLA pass": solve(loss_only, net, native=False),
        "solve eagerly, excess_loss only": partial(
            flowlin.gradient_flow,
            net,
            problem,
            t1,
            saveat=loss_only,
            method=flowlin.Gram(reconstruct=False),
        ),  # fmt: skip
        "solve, every diagnostic, final network rebuilt (every default)": solve(
            every, net, reconstruct=True
        ),
        "every default, XLA pass": solve(every, net, native=False, reconstruct=True),
        "solve at h = 10, every diagnostic": solve(every, small),
        "solve at h = 10, excess_loss only": solve(loss_only, small),
    }
    alternatives = {
        "blocked, 5000 rows": (_blocked, 5000),
        "blocked, 20000 rows": (_blocked, 20000),
        "A = W1ΦS, batched einsum, 1000 rows": (_batched, 1000),
        "A = W1ΦS, batched einsum, 20000 rows": (_batched, 20000),
        "lax.map over 1000-row blocks": (_mapped, 1000),
        "plain dots, no blocks": (_plain, None),
        "through G = W1ᵀW1 (O(hD²))": (_through_G, None),
        "two halves, vmapped": (_halves, 1000),
        "two independent loops, 1000-row blocks": (_loops, 1000),
    }
    reference = _compiled(gram_and_cross, W1, W2, PS, native=False)()
    for got, want in zip(calls["flowlin's pass, native kernel (S = W1ᵀ[W1, W2ᵀ])"](), reference):
        err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
        assert err < 1e-12, f"the native pass differs from the XLA pass by {err:.1e}"
    for name, (fn, rows) in alternatives.items():
        call = partial(jax.jit(partial(fn, rows=rows)), W1, W2, PS)
        for got, want in zip(call(), reference):
            err = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
            assert err < 1e-12, f"{name}: differs from flowlin's pass by {err:.1e}"
        calls[name] = call
    # XLA's best rate for these thin products: G = W1ᵀW1 (h·D² multiply-adds) as one dot.
    calls["XLA's dot W1ᵀW1 alone (reference)"] = partial(jax.jit(lambda w: w.T @ w), W1)
    W1_np = np.asarray(W1)
    calls["NumPy/OpenBLAS W1ᵀW1 (reference)"] = lambda: W1_np.T @ W1_np
    # Every entry of Q0 and Z0W1 is a linear image of G = W1ᵀW1, W2W1 and W2W2ᵀ; G by BLAS's
    # symmetric rank-k update (h·D(D+1)/2 multiply-adds: fewer than A = W1ΦS and its
    # products, 2·h·D·r, when D + 1 < 4r, as here).
    W1_f, W2_np = np.asarray(W1).T, np.asarray(W2)  # W1ᵀ as a Fortran-order (D, h) array
    calls["OpenBLAS dsyrk G, W2W1, W2W2ᵀ (fewest flops)"] = lambda: (
        scipy_blas.dsyrk(1.0, W1_f),
        W2_np @ W1_np,
        W2_np @ W2_np.T,
    )
    for call in calls.values():
        jax.block_until_ready(call())
    best = dict.fromkeys(calls, float("inf"))
    cpu = {}  # CPU time per call (both cores): above the wall time when both are used
    for name, call in calls.items():  # each alone: its weights stay in cache between calls
        cpu_start = time.process_time()
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(call())
            best[name] = min(best[name], time.perf_counter() - start)
        cpu[name] = (time.process_time() - cpu_start) / repeats
    rows = [dict(program=name, ms=1e3 * t, cpu_ms=1e3 * cpu[name]) for name, t in best.items()]
    echo(f"gram from weights at h = {h}, D = {D}, m = {m} (r = {problem.rank}), float64")
    columns = [("program", "program", "s"), ("ms", "ms", ".2f"), ("cpu_ms", "CPU ms/call", ".2f")]
    H.print_table(rows, columns, echo=echo)
    settings = dict(n=n, D=D, m=m, h=h, t1=t1, repeats=repeats, reconstruct=False,
                    malloc_mmap_threshold=mmap_threshold, native=native_ok,
                    native_status=native_why)  # fmt: skip
    return H.record("gram_pass", settings, rows, load_before=load_before,
                    load_after=H.load_average())  # fmt: skip


if __name__ == "__main__":
    p = H.parser(__doc__)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        metavar="BYTES",
        help="set glibc's mmap threshold (and trim threshold) to BYTES before anything is "
        "allocated, as MALLOC_MMAP_THRESHOLD_ would: outputs below it reuse freed heap memory "
        "instead of fresh pages (default: glibc's own, at most 32 MiB)",
    )
    args = p.parse_args()
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads OpenBLAS
    if args.malloc_mmap_threshold is not None:
        _set_mmap_threshold(args.malloc_mmap_threshold)
    H.enable_x64()
    result = gram_pass(args.quick, repeats=args.repeats, mmap_threshold=args.malloc_mmap_threshold)
    H.finish(result, args.out, "gram_pass")
