"""The native pass over wide weights (`flowlin._native`, `flowlin/_native/gram_pass.cc`):
S = W1ᵀ[W1, W2ᵀ] against NumPy's float64 products, the gram solve it serves against the same
solve with the XLA pass (1e-10), its JVP and gradient against XLA's, `vmap`, the opt-outs,
and the fallback to XLA where it cannot be built."""

import functools
import os
import platform
import shutil
import subprocess
import sys

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_gram import gaussian_net, random_problem, rel_err, rel_fro

import flowlin
from flowlin._native import (
    native_status,
    use_native,
    weights_pass,
    weights_product,
    xla_pass,
    xla_product,
)


def _native_or_skip():
    ok, why = native_status()
    if not ok:
        # Where a compiler and the FFI headers exist (CI, this project's machines), it must
        # build: a silent fallback there would leave the kernel untested.
        headers = os.path.join(jax.ffi.include_dir(), "xla", "ffi", "api", "ffi.h")
        x86 = platform.machine() in ("x86_64", "AMD64")
        if shutil.which("c++") and os.path.exists(headers) and sys.platform == "linux" and x86:
            pytest.fail(f"the native pass should build here, but: {why}")
        pytest.skip(f"native pass unavailable: {why}")


#: (h, D, m): D not a multiple of the vector width, D above one tile, m above one tile, rows
#: leaving a partial register tile, and (the last two) many row blocks over several threads.
SHAPES = [(1, 1, 1), (37, 7, 2), (3001, 30, 1), (5000, 30, 3), (2000, 70, 4), (301, 33, 9),
          (200_003, 30, 1), (200_003, 3, 20)]  # fmt: skip


@pytest.mark.parametrize("h, D, m", SHAPES)
def test_native_pass_equals_numpy(h, D, m):
    """S = W1ᵀ[W1, W2ᵀ] by the kernel equals NumPy's float64 product to round-off, for widths
    and depths that exercise every tile shape (D not a multiple of the vector width, several
    row blocks of the output, more output columns than one tile, many row blocks), and is
    bitwise the same on every call (its blocks are summed in a fixed order)."""
    _native_or_skip()
    rng = np.random.default_rng(h + D + m)
    W1, W2 = rng.standard_normal((h, D)) * 3.0, rng.standard_normal((m, h))
    truth = W1.T @ np.concatenate([W1, W2.T], axis=1)
    native = jax.jit(weights_pass)
    got = np.asarray(native(jnp.asarray(W1), jnp.asarray(W2)))
    scale = np.abs(W1).max() * np.concatenate([np.abs(W1), np.abs(W2.T)], 1).max() * h
    assert np.max(np.abs(got - truth)) <= 1e-14 * scale
    again = np.asarray(native(jnp.asarray(W1), jnp.asarray(W2)))
    assert np.array_equal(got, again)
    assert "flowlin_gram_pass" in jax.jit(weights_pass).lower(W1, W2).as_text()


@pytest.mark.parametrize("h, D, m", SHAPES)
def test_native_product_equals_numpy(h, D, m):
    """[W1', W2'ᵀ] = [W1, W2ᵀ] R by the kernel equals NumPy's float64 product to round-off,
    for row counts that leave a partial register tile, output columns that straddle the
    W1'/W2' boundary inside a vector, and several vectors of columns."""
    _native_or_skip()
    rng = np.random.default_rng(10 * h + D + m)
    W1, W2 = rng.standard_normal((h, D)), rng.standard_normal((m, h)) * 2.0
    R = rng.standard_normal((D + m, D + m))
    Zt = np.concatenate([W1, W2.T], axis=1)
    truth = Zt @ R
    got1, got2 = jax.jit(weights_product)(*map(jnp.asarray, (W1, W2, R)))
    assert got1.shape == (h, D) and got2.shape == (m, h)
    scale = (D + m) * np.abs(Zt).max() * np.abs(R).max()
    assert np.max(np.abs(np.asarray(got1) - truth[:, :D])) <= 1e-14 * scale
    assert np.max(np.abs(np.asarray(got2) - truth[:, D:].T)) <= 1e-14 * scale
    assert "flowlin_weights_product" in jax.jit(weights_product).lower(W1, W2, R).as_text()


def test_native_product_under_vmap_jvp_and_grad(getkey):
    """The product's `vmap`, JVP and gradient equal XLA's, and its JVP a finite difference."""
    _native_or_skip()
    W1 = jax.random.normal(getkey(), (2, 3000, 12))
    W2 = jax.random.normal(getkey(), (2, 2, 3000))
    R = jax.random.normal(getkey(), (2, 14, 14))
    got = jax.jit(jax.vmap(weights_product))(W1, W2, R)
    for i in range(2):
        for a, b in zip(got, xla_product(W1[i], W2[i], R[i])):
            assert rel_fro(a[i], b) < 1e-13
    args = (W1[0], W2[0], R[0])

    def f(product):
        return lambda *a: sum(jnp.sum(jnp.sin(x)) for x in product(*a))

    for a, b in zip(
        jax.grad(f(weights_product), (0, 1, 2))(*args), jax.grad(f(xla_product), (0, 1, 2))(*args)
    ):
        assert rel_fro(a, b) < 1e-12
    tangents = tuple(jax.random.normal(getkey(), x.shape) for x in args)
    _, t_native = jax.jvp(weights_product, args, tangents)
    _, t_xla = jax.jvp(xla_product, args, tangents)
    eps = 1e-6
    plus = weights_product(*(x + eps * t for x, t in zip(args, tangents)))
    minus = weights_product(*(x - eps * t for x, t in zip(args, tangents)))
    for a, b, p, q in zip(t_native, t_xla, plus, minus):
        assert rel_fro(a, b) < 1e-13
        assert rel_fro((p - q) / (2 * eps), a) < 1e-7


def test_native_pass_under_vmap_jvp_and_grad(getkey):
    """`vmap` gives each member's pass; the JVP and the gradient through the kernel equal
    XLA's through `xla_pass` (the kernel's JVP rule is JAX's), and a finite difference."""
    _native_or_skip()
    W1 = jax.random.normal(getkey(), (3, 4000, 20))
    W2 = jax.random.normal(getkey(), (3, 2, 4000))
    batch = jax.jit(jax.vmap(weights_pass))(W1, W2)
    for i in range(3):
        assert rel_fro(batch[i], xla_pass(W1[i], W2[i])) < 1e-13

    def f(pass_):
        return lambda a, b: jnp.sum(jnp.sin(pass_(a, b) / 4000.0))

    w1, w2 = W1[0], W2[0]
    g_native = jax.grad(f(weights_pass), (0, 1))(w1, w2)
    g_xla = jax.grad(f(xla_pass), (0, 1))(w1, w2)
    for a, b in zip(g_native, g_xla):
        assert rel_fro(a, b) < 1e-12
    d1, d2 = jax.random.normal(getkey(), w1.shape), jax.random.normal(getkey(), w2.shape)
    _, t_native = jax.jvp(weights_pass, (w1, w2), (d1, d2))
    _, t_xla = jax.jvp(xla_pass, (w1, w2), (d1, d2))
    assert rel_fro(t_native, t_xla) < 1e-13
    eps = 1e-6
    fd = weights_pass(w1 + eps * d1, w2 + eps * d2) - weights_pass(w1 - eps * d1, w2 - eps * d2)
    assert rel_fro(fd / (2 * eps), t_native) < 1e-7


def test_gram_solve_is_the_same_with_the_xla_pass(getkey):
    """A gram solve from wide weights (h·D above `NATIVE_MIN_ENTRIES`, so the setup takes the
    native pass) gives every diagnostic at every save time, the rebuilt final network and the
    init's fingerprint of the same solve with the native pass turned off, to 1e-10."""
    _native_or_skip()
    from flowlin._method._pass import NATIVE_MIN_ENTRIES, use_native_pass, use_native_product

    problem = random_problem(getkey(), 12, 30, 2, 10)
    net = gaussian_net(getkey(), 30, 2, 4000, 4000**-0.5, 4000**-0.5)
    assert net.W1.size >= NATIVE_MIN_ENTRIES
    PS = problem.Phi1 * problem.sqrt_sigma
    assert use_native_pass(net.W1, net.W2, PS) and use_native_product(net.W1, net.W2, PS)

    def solve():  # use_native clears JAX's caches when it changes the setting
        tight = dict(solver=dfx.Dopri8(), rtol=1e-13, atol=1e-15)
        return flowlin.gradient_flow(net, problem, 10.0, method=flowlin.Gram(), **tight)

    def lowered():
        jitted = jax.jit(functools.partial(flowlin.gradient_flow, method=flowlin.Gram()))
        return jitted.lower(net, problem, 10.0).as_text()

    assert "flowlin_gram_pass" in lowered() and "flowlin_weights_product" in lowered()
    native = solve()
    try:
        use_native(False)  # clears the programs traced with the kernel
        assert not use_native_pass(net.W1, net.W2, PS)
        assert "flowlin_gram_pass" not in lowered() and "flowlin_weights_product" not in lowered()
        xla = solve()
    finally:
        use_native(True)
    assert bool(native.succeeded) and bool(xla.succeeded)
    resolved = xla.excess_loss >= 1e-6 * xla.excess_loss[0]
    assert int(jnp.sum(resolved)) >= 5
    for name in flowlin.DIAGNOSTICS:
        a, b = getattr(native, name), getattr(xla, name)
        if name in ("u2_drift", "imbalance_drift"):  # 0, and round-off of a conserved quantity
            assert float(jnp.max(jnp.abs(a - b))) < 1e-12, name
            continue
        if name in ("rate", "excess_loss", "product_min_singular_value"):
            a, b = a[resolved], b[resolved]
        if name == "error_integral":  # 0 at t = 0
            a, b = a[1:], b[1:]
        assert rel_err(a, b) < 1e-10, name
    for new, old in zip(jax.tree.leaves(native.final_network), jax.tree.leaves(xla.final_network)):
        assert rel_fro(new, old) < 1e-10
    assert rel_err(native.init_fingerprint, xla.init_fingerprint) < 1e-10


def test_weights_mostly_outside_the_row_space_take_the_xla_pass(getkey):
    """The route through S = W1ᵀ[W1, W2ᵀ] loses accuracy when W1 lies mostly outside the row
    space of X (its round-off grows with ‖W1‖²‖Φ1S‖²/‖W1Φ1S‖²): there the setup takes the XLA
    pass, whose Q0 and Z0W1 it then equals to round-off, and `check_bounds` accepts the run as
    started from this init (its fingerprint matches to 1e4 eps)."""
    _native_or_skip()
    from flowlin._method._pass import (
        NATIVE_MAX_AMPLIFICATION,
        _by_blocks,
        _from_pass,
        gram_and_cross,
        use_native_pass,
    )

    problem = random_problem(getkey(), 12, 30, 1, 10)
    net = gaussian_net(getkey(), 30, 1, 4000, 4000**-0.5, 4000**-0.5)
    P = problem.Phi1
    null = net.W1 - (net.W1 @ P) @ P.T
    net = flowlin.LinearNetwork(net.W1 + 1e3 * null, net.W2)
    PS = P * problem.sqrt_sigma
    assert use_native_pass(net.W1, net.W2, PS)
    assert float(_from_pass(net.W1, net.W2, PS)[2]) > NATIVE_MAX_AMPLIFICATION
    got, want = jax.jit(gram_and_cross)(net.W1, net.W2, PS), _by_blocks(net.W1, net.W2, PS)
    for a, b in zip(got, want):
        assert rel_fro(a, b) < 1e-14
    traj = flowlin.gradient_flow(net, problem, 5.0, method=flowlin.Gram())
    flowlin.check_bounds(traj, net, problem)  # raises if the fingerprints disagree
    # An ordinary wide init stays on the native route, well inside the bound.
    plain = gaussian_net(getkey(), 30, 1, 4000, 4000**-0.5, 4000**-0.5)
    assert float(_from_pass(plain.W1, plain.W2, PS)[2]) < 0.1 * NATIVE_MAX_AMPLIFICATION


def test_the_pass_does_not_depend_on_the_number_of_threads(tmp_path):
    """The pass splits its rows by the shapes alone and adds the blocks in a fixed order: the
    same bits on one CPU as on all of them (each in its own process)."""
    _native_or_skip()
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: nothing to compare")
    code = (
        "import os, sys, hashlib\n"
        "if sys.argv[1] == 'one': os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "import jax, numpy as np; jax.config.update('jax_enable_x64', True)\n"
        "from flowlin._native import weights_pass\n"
        "rng = np.random.default_rng(0)\n"
        "W1, W2 = rng.standard_normal((200_003, 30)), rng.standard_normal((2, 200_003))\n"
        "print(hashlib.sha256(np.asarray(jax.jit(weights_pass)(W1, W2)).tobytes()).hexdigest())\n"
    )
    digests = []
    for cpus in ("one", "all"):
        out = subprocess.run(
            [sys.executable, "-c", code, cpus], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        digests.append(out.stdout.strip().splitlines()[-1])
    assert digests[0] == digests[1]


def test_native_pass_inside_shard_map():
    """Inside a checked `shard_map`, each device's pass over its rows, summed, is the whole
    pass (the kernel's result varies over the mesh axis, as its arguments do)."""
    _native_or_skip()
    devices = jax.devices("cpu")
    if len(devices) < 2:
        pytest.skip("needs several CPU devices (tests/conftest.py forces 4)")
    from jax.sharding import Mesh, PartitionSpec as P

    mesh = Mesh(np.array(devices[:2]), ("x",))
    rng = np.random.default_rng(3)
    W1, W2 = (
        jnp.asarray(rng.standard_normal((8000, 12))),
        jnp.asarray(rng.standard_normal((2, 8000))),
    )
    summed = jax.jit(
        jax.shard_map(
            lambda a, b: jax.lax.psum(weights_pass(a, b), "x"),
            mesh=mesh,
            in_specs=(P("x", None), P(None, "x")),
            out_specs=P(),
        )
    )(W1, W2)
    assert rel_fro(summed, xla_pass(W1, W2)) < 1e-13


def test_use_native_refuses_non_bool():
    with pytest.raises(TypeError, match="use_native: `on` must be True or False"):
        use_native("yes")


def _status_in_subprocess(env: dict) -> str:
    code = (
        "import jax; jax.config.update('jax_enable_x64', True)\n"
        "import flowlin, jax.numpy as jnp\n"
        "from flowlin._native import native_status, weights_pass\n"
        "ok, why = native_status()\n"
        "W1 = jnp.ones((20000, 4)); W2 = jnp.ones((1, 20000))\n"
        "text = jax.jit(weights_pass).lower(W1, W2).as_text()\n"
        "print(ok, 'flowlin_gram_pass' in text, float(weights_pass(W1, W2)[0, 0]), why)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_opt_out_and_a_failed_build_fall_back_to_xla(tmp_path):
    """`FLOWLIN_NATIVE=0` turns the kernel off, and a compiler that fails leaves the XLA pass
    with the reason on record (kept for later processes); either way the pass is right
    (20000 · 1 · 1 = 20000)."""
    off = _status_in_subprocess({"FLOWLIN_NATIVE": "0"})
    assert off.startswith("False False 20000.0 turned off by FLOWLIN_NATIVE='0'"), off
    broken = _status_in_subprocess({"CXX": "false", "XDG_CACHE_HOME": str(tmp_path)})
    assert broken.startswith("False False 20000.0"), broken
    assert "failed" in broken and "earlier" not in broken, broken
    # The compiler's refusal is kept: the next process does not build again, and says why.
    again = _status_in_subprocess({"CXX": "false", "XDG_CACHE_HOME": str(tmp_path)})
    assert again.startswith("False False 20000.0"), again
    assert "failed" in again and "earlier; delete" in again, again
