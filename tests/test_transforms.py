"""jit, vmap and compile-once guarantees of the solvers (style.md: sweeps compile once)."""

import equinox as eqx
import jax
import jax.monitoring
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin


@pytest.fixture(scope="module")
def problem():
    return flowlin.problems.gaussian(jax.random.key(0), n=5, D=12, m=2)


D, M, H, T1 = 12, 2, 9, 4.0
SAVE = flowlin.SaveAt(jnp.linspace(0.0, T1, 5))


class CompileCounter:
    """Counts XLA backend compilations while active."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, name, duration, **kwargs):
        if self.active and name == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __enter__(self):
        self.count, self.active = 0, True
        return self

    def __exit__(self, *exc):
        self.active = False


COUNTER = CompileCounter()


def _flow(net, problem):
    return flowlin.gradient_flow(net, problem, T1, saveat=SAVE)


def test_jit_equals_eager(problem):
    net = flowlin.init.gaussian(jax.random.key(1), D, M, H, 0.5, 0.5)
    eager = _flow(net, problem)
    jitted = eqx.filter_jit(_flow)(net, problem)
    for name in flowlin.DIAGNOSTICS:
        np.testing.assert_allclose(getattr(jitted, name), getattr(eager, name), rtol=1e-13)
    gd = lambda n: flowlin.gradient_descent(n, problem, 0.01, 100)
    np.testing.assert_allclose(eqx.filter_jit(gd)(net).loss, gd(net).loss, rtol=1e-13)


def test_vmap_over_seeds_equals_loop(problem):
    keys = jax.random.split(jax.random.key(2), 4)
    make = lambda k: flowlin.init.paper(k, D, M, H, 0.5)
    batched = jax.vmap(lambda k: _flow(make(k), problem))(keys)
    for i, k in enumerate(keys):
        single = _flow(make(k), problem)
        # Each batch element keeps its own step sequence under vmap: agreement to rounding.
        np.testing.assert_allclose(batched.loss[i], single.loss, rtol=1e-12)
        np.testing.assert_allclose(
            batched.distance_to_min_norm[i], single.distance_to_min_norm, rtol=1e-12
        )
    gd = jax.vmap(lambda k: flowlin.gradient_descent(make(k), problem, 0.01, 50))(keys)
    single = flowlin.gradient_descent(make(keys[3]), problem, 0.01, 50)
    np.testing.assert_allclose(gd.loss[3], single.loss, rtol=1e-12)


def test_compiles_once_across_scales_and_widths(problem):
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def sweep(scales, widths, key):
        def one(scale, width):
            net = flowlin.init.gaussian(key, D, M, width, scale, scale, pad_to=16)
            return _flow(net, problem).final_values["excess_loss"]

        return jax.vmap(one)(scales, widths)

    key = jax.random.key(3)
    first = sweep(jnp.array([0.1, 0.5, 1.0]), jnp.array([3, 9, 16]), key)
    with COUNTER:
        second = sweep(jnp.array([0.2, 0.7, 1.3]), jnp.array([16, 2, 5]), key)
    assert COUNTER.count == 0  # no recompilation for new scales/widths
    assert bool(jnp.all(jnp.isfinite(first))) and bool(jnp.all(jnp.isfinite(second)))
    # Padded width 9 inside the sweep == an unpadded width-9 network solved on its own.
    single = _flow(flowlin.init.gaussian(key, D, M, 9, 0.5, 0.5), problem)
    # The max-norm step controller ignores padded units: same steps, agreement to rounding.
    np.testing.assert_allclose(first[1], single.final_values["excess_loss"], rtol=1e-11)


def test_eager_calls_do_not_recompile(problem):
    net = flowlin.init.gaussian(jax.random.key(4), D, M, H, 0.3, 0.3)
    _flow(net, problem)
    flowlin.gradient_descent(net, problem, 0.01, 30)
    other = flowlin.init.gaussian(jax.random.key(5), D, M, H, 0.9, 0.2)
    jax.block_until_ready(other)
    with COUNTER:
        jax.block_until_ready(_flow(other, problem))
        jax.block_until_ready(flowlin.gradient_descent(other, problem, 0.02, 30))
    assert COUNTER.count == 0


@pytest.mark.parametrize("make", [flowlin.problems.gaussian, flowlin.problems.whitened])
def test_problem_generators_vmap_over_keys(make):
    """`problems.gaussian`/`whitened` under vmap over keys: the same problems as one call per
    key (under a trace their rank, which shapes depend on, is n; it was a refusal naming
    Problem's rank=, an argument the generators do not take)."""
    keys = jax.random.split(jax.random.key(3), 4)
    batched = jax.vmap(lambda k: make(k, n=5, D=12, m=2))(keys)
    for i, k in enumerate(keys):
        one = make(k, n=5, D=12, m=2)
        assert one.rank == batched.rank == 5
        np.testing.assert_allclose(batched.min_norm[i], one.min_norm, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(batched.sigma[i], one.sigma, rtol=1e-10)


def test_a_gram_solve_compiles_once_for_widths_from_r_plus_m(problem, caplog):
    """The gram solve from a network runs as three programs, and only the factorization and
    the rebuilt weights read the network: a new width h >= r + m (or a GramInit) does not
    compile the solve again (it took ~1.5 s per width). The numbers are those of the single
    program that saving networks still runs, and of one program traced around the call."""
    import logging

    def solve(init):
        return flowlin.gradient_flow(init, problem, T1, saveat=SAVE, method=flowlin.Gram())

    def compiled_by(fn, *args):
        caplog.clear()
        with caplog.at_level(logging.WARNING), jax.log_compiles():
            out = jax.block_until_ready(fn(*args))
        return out, {r.getMessage().split()[1] for r in caplog.records if "Compiling " in r.message}

    solve(flowlin.init.paper(jax.random.key(6), D, M, 20, 0.5))
    net = jax.block_until_ready(flowlin.init.paper(jax.random.key(7), D, M, 40, 0.5))
    gram = jax.block_until_ready(flowlin.init.gram_init(net, problem))
    traj, compiled = compiled_by(solve, net)
    assert {"jit(_factor)", "jit(reconstruct_network)"} <= compiled
    assert "jit(integrate)" not in compiled, compiled
    from_gram, compiled = compiled_by(solve, gram)
    assert "jit(integrate)" not in compiled, compiled
    traced = eqx.filter_jit(solve)(net)
    # SaveAt(networks=True) takes the one-program path (the weights at every save need the
    # network inside the solve).
    with_nets = flowlin.SaveAt(SAVE.ts, networks=True)
    single = flowlin.gradient_flow(net, problem, T1, saveat=with_nets, method=flowlin.Gram())
    for other in (traced, single):
        for name in flowlin.DIAGNOSTICS:
            np.testing.assert_allclose(getattr(traj, name), getattr(other, name), rtol=1e-12)
        for a, b in zip(jax.tree.leaves(traj.final_network), jax.tree.leaves(other.final_network)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    # The GramInit's factor is another factorization of the same Q0 (test_gram.py compares
    # the two trajectories diagnostic by diagnostic): the same flow to the solver's tolerance.
    np.testing.assert_allclose(from_gram.loss, traced.loss, rtol=1e-7)
    assert traj.final_network.W1.shape == net.W1.shape and from_gram.final_network is None
