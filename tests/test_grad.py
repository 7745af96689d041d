"""Differentiating through the dynamics: `jax.grad`/`jax.jacfwd` of trajectory quantities
(distance to the min-norm solution, loss and measured rate at t1, time to reach a loss) with
respect to the initialization scales, the initial weights, the data X and Y and the horizon t1,
for both methods, checked against central finite differences; gram vs full; every adjoint; the
h^{-1/2} law for the scale derivative; vmap of grad compiling once."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin


# Small sizes: 20 instances × 5 inputs × 2 methods take ~2 min of CPU, most of it compiling the
# two vmapped reverse-mode Jacobians.
N, D, M, H = 3, 7, 2, 4
NUM_INSTANCES = 20
# Tight solver tolerances: the finite differences divide the solver error by the FD step.
SOLVER_TOL = dict(rtol=1e-12, atol=1e-12)
# Central differences: truncation O(step²) and round-off O(eps/step) balance at eps^{1/3}
# (≈ 6e-6 in float64), relative to the size of the perturbed input. The solver's error
# (~1e-12) then enters the quotient as ~1e-12/6e-6 ≈ 2e-7, well inside the asserted 1e-5.
FD_STEP = float(np.finfo(np.float64).eps) ** (1 / 3)
FD_RTOL = 1e-5
# The two methods integrate different ODEs (weights vs the reduced state) to 1e-12: their
# gradients agree to ~1e-9; asserted at 1e-7.
METHOD_RTOL = 1e-7
# The event solve runs to the stop; T_MAX only bounds it.
T_MAX = 1e3
# Inputs differentiated, each along a random unit direction.
INPUTS = ("scales", "weights", "X", "Y", "t1")
# Outputs: three quantities at t1, and the time the excess loss reaches its threshold.
OUTPUTS = ("distance_to_min_norm", "loss", "rate", "event_time")
DIAGNOSTICS = ("distance_to_min_norm", "loss", "rate")


def _unit(key, shape):
    v = jax.random.normal(key, shape)
    return v / jnp.linalg.norm(v)


def _instance(key):
    """One random instance: the differentiated inputs, the fixed data, and the directions."""
    k = jax.random.split(key, 11)
    X = jax.random.normal(k[0], (N, D))
    Y = jax.random.normal(k[1], (N, M))
    G1 = jax.random.normal(k[2], (H, D))
    G2 = jax.random.normal(k[3], (M, H))
    scales = jax.random.uniform(k[4], (2,), minval=0.5, maxval=1.5)
    t1 = jax.random.uniform(k[5], (), minval=0.2, maxval=0.6)
    # Stop once the excess loss has fallen by 100 (threshold fixed: not differentiated).
    problem = flowlin.Problem(X, Y)
    net = flowlin.LinearNetwork(scales[0] * G1, scales[1] * G2)
    threshold = 1e-2 * 0.5 * jnp.sum(problem.error(net.product) ** 2)
    params = dict(scales=scales, weights=jnp.zeros(()), X=X, Y=Y, t1=t1)
    fixed = dict(
        G1=G1, G2=G2, dW1=_unit(k[6], (H, D)), dW2=_unit(k[7], (M, H)), threshold=threshold
    )
    directions = dict(
        scales=_unit(k[8], (2,)),
        weights=jnp.ones(()),
        X=_unit(k[9], (N, D)),
        Y=_unit(k[10], (N, M)),
        t1=jnp.ones(()),
    )
    # FD step per input: FD_STEP times the size of what is perturbed.
    W_norm = jnp.sqrt(jnp.sum(net.W1**2) + jnp.sum(net.W2**2))
    steps = dict(
        scales=jnp.linalg.norm(scales),
        weights=W_norm,
        X=jnp.linalg.norm(X),
        Y=jnp.linalg.norm(Y),
        t1=t1,
    )
    steps = {name: FD_STEP * v for name, v in steps.items()}
    return params, fixed, directions, steps


#: The two flow methods, by the names the tests are parametrized with.
METHODS = {"full": flowlin.FullWeights(), "gram": flowlin.Gram()}


def _outputs(params, fixed, method, adjoint=None):
    """(distance, loss, rate) at t1 and the time to reach the threshold, as one vector."""
    problem = flowlin.Problem(params["X"], params["Y"], rank=N)
    s, e = params["scales"], params["weights"]
    net = flowlin.LinearNetwork(
        s[0] * fixed["G1"] + e * fixed["dW1"], s[1] * fixed["G2"] + e * fixed["dW2"]
    )
    saveat = flowlin.SaveAt(ts=jnp.zeros(1), diagnostics=DIAGNOSTICS)
    common = dict(method=METHODS[method], saveat=saveat, adjoint=adjoint, **SOLVER_TOL)
    traj = flowlin.gradient_flow(net, problem, params["t1"], **common)
    stop = flowlin.gradient_flow(net, problem, T_MAX, stop_at_loss=fixed["threshold"], **common)
    at_t1 = [traj.final_values[name] for name in DIAGNOSTICS]
    return jnp.stack([*at_t1, stop.event_time])


@eqx.filter_jit
def _forward(params, fixed, method):
    return jax.vmap(lambda p, f: _outputs(p, f, method))(params, fixed)


@eqx.filter_jit
def _jacobian(params, fixed, method):
    return jax.vmap(jax.jacrev(lambda p, f: _outputs(p, f, method)))(params, fixed)


def _stack(trees):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


#: One xdist worker runs this module, so the module-scoped fixtures are computed once.
@pytest.fixture(scope="module")
def instances():
    key = jax.random.key(20260901)
    return _stack([_instance(k) for k in jax.random.split(key, NUM_INSTANCES)])


@pytest.fixture(scope="module")
def jacobians(instances):
    params, fixed, _, _ = instances
    return {method: _jacobian(params, fixed, method) for method in ("full", "gram")}


def _directional(jac, directions):
    """{input: (instances, outputs)} derivative of every output along each input's direction."""
    out = {}
    for name in INPUTS:
        J, v = jac[name], directions[name]  # J: (inst, outputs, *shape), v: (inst, *shape)
        axes = tuple(range(2, J.ndim))
        out[name] = jnp.sum(J * jnp.expand_dims(v, 1), axis=axes)
    return out


def _finite_differences(instances, method):
    """Central differences of every output along each input's direction, one vmapped batch."""
    params, fixed, directions, steps = instances
    batch_p, batch_f = [], []
    for name in INPUTS:
        for sign in (1.0, -1.0):
            p = dict(params)
            shape = (-1,) + (1,) * (directions[name].ndim - 1)
            p[name] = params[name] + sign * steps[name].reshape(shape) * directions[name]
            batch_p.append(p)
            batch_f.append(fixed)
    cat = lambda *xs: jnp.concatenate(xs)  # noqa: E731
    values = _forward(
        jax.tree_util.tree_map(cat, *batch_p), jax.tree_util.tree_map(cat, *batch_f), method
    )
    values = values.reshape(len(INPUTS), 2, NUM_INSTANCES, len(OUTPUTS))
    return {
        name: (values[i, 0] - values[i, 1]) / (2 * steps[name][:, None])
        for i, name in enumerate(INPUTS)
    }


@pytest.mark.parametrize("method", ["full", "gram"])
def test_gradients_match_finite_differences(instances, jacobians, method):
    params, fixed, directions, _ = instances
    base = _forward(params, fixed, method)
    assert np.all(np.isfinite(base)) and np.all(base[:, 3] < T_MAX)  # every event occurred
    grads = _directional(jacobians[method], directions)
    fds = _finite_differences(instances, method)
    worst = {}
    for name in INPUTS:
        g, fd = np.asarray(grads[name]), np.asarray(fds[name])
        for j, out in enumerate(OUTPUTS):
            if name == "t1" and out == "event_time":
                # The stop does not depend on the horizon: both derivatives are exactly 0.
                assert np.all(g[:, j] == 0) and np.all(fd[:, j] == 0)
                continue
            rel = np.abs(g[:, j] - fd[:, j]) / np.abs(fd[:, j])
            worst[(name, out)] = float(rel.max())
    print(f"{method}: worst gradient vs FD relative error per (input, output): {worst}")
    bad = {k: v for k, v in worst.items() if v > FD_RTOL}
    assert not bad, f"{method}: gradient vs FD relative error above {FD_RTOL}: {bad}"


def test_gram_and_full_gradients_agree(instances, jacobians):
    # Every Jacobian entry, relative to the largest entry of that output's derivative with
    # respect to that input, floored at 1e-3 times the output's value: a derivative can vanish
    # by accident (a distance at its minimum in time has d/dt1 ≈ 0; one instance here has
    # 5e-5), and there only the absolute error, ~1e-11, is meaningful.
    params, fixed, _, _ = instances
    values = np.abs(np.asarray(_forward(params, fixed, "full")))  # (instances, outputs)
    worst = {}
    for name in INPUTS:
        a, b = np.asarray(jacobians["full"][name]), np.asarray(jacobians["gram"][name])
        a, b = a.reshape(*a.shape[:2], -1), b.reshape(*b.shape[:2], -1)
        scale = np.maximum(np.max(np.abs(a), axis=2), 1e-3 * values)
        if name == "t1":  # the event time does not depend on t1: exactly 0 in both
            assert np.all(a[:, 3] == 0) and np.all(b[:, 3] == 0)
        worst[name] = float(np.max(np.abs(a - b) / scale[:, :, None]))
    print(f"gram vs full: worst relative difference per input: {worst}")
    assert max(worst.values()) <= METHOD_RTOL, worst


def _instance_zero(instances):
    params, fixed, directions, _ = instances
    first = lambda tree: jax.tree_util.tree_map(lambda x: x[0], tree)  # noqa: E731
    return first(params), first(fixed)


@pytest.mark.slow  # two more compiles (~20 s each)
@pytest.mark.parametrize(
    "method, adjoint", [("full", dfx.DirectAdjoint()), ("gram", dfx.ForwardMode())]
)
def test_forward_mode_matches_reverse_mode(instances, jacobians, method, adjoint):
    # jax.jacfwd needs an adjoint with forward mode; it must give the default's reverse-mode
    # Jacobian (same discretization, so to round-off) for every output, the event time included.
    params, fixed = _instance_zero(instances)

    def of_scales(s):
        return _outputs(dict(params, scales=s), fixed, method, adjoint)

    forward = jax.jit(jax.jacfwd(of_scales))(params["scales"])
    reverse = jacobians[method]["scales"][0]
    np.testing.assert_allclose(forward, reverse, rtol=1e-8, atol=0)


# BacksolveAdjoint re-integrates the flow backwards, where it is exponentially unstable (rates up
# to λ1(Σ)·‖W‖² ≈ 1e3 here): it is checked only on a horizon short enough that the amplification
# e^{1e3·t1} ≈ 2e4 keeps the backward solve's 1e-12 local errors below 1e-7.
BACKSOLVE_T1 = 0.01
BACKSOLVE_RTOL = 1e-5


@pytest.mark.slow  # two more compiles (~20 s each)
@pytest.mark.parametrize("method", ["full", "gram"])
def test_backsolve_adjoint_on_a_short_horizon(instances, method):
    params, fixed = _instance_zero(instances)
    problem = flowlin.Problem(params["X"], params["Y"])
    ts = jnp.array([0.0, BACKSOLVE_T1 / 2])
    saveat = flowlin.SaveAt(ts=ts, diagnostics=("distance_to_min_norm", "loss"))

    def quantity(s):
        # Saved diagnostics and final values: both of the backsolve path's outputs.
        net = flowlin.LinearNetwork(s[0] * fixed["G1"], s[1] * fixed["G2"])
        traj = flowlin.gradient_flow(
            net,
            problem,
            BACKSOLVE_T1,
            saveat=saveat,
            method=METHODS[method],
            adjoint=dfx.BacksolveAdjoint(),
            **SOLVER_TOL,
        )
        return traj.final_values["distance_to_min_norm"] + traj.loss[1]

    s = params["scales"]
    grad = jax.jit(jax.grad(quantity))(s)
    step = FD_STEP * jnp.linalg.norm(s)
    shifts = step * jnp.eye(2)
    values = jax.jit(jax.vmap(quantity))(jnp.concatenate([s + shifts, s - shifts]))
    fd = (values[:2] - values[2:]) / (2 * step)
    np.testing.assert_allclose(grad, fd, rtol=BACKSOLVE_RTOL)


def test_bad_adjoint_inputs():
    problem = flowlin.Problem(jnp.eye(2, 3), jnp.ones((2, 1)))
    net = flowlin.LinearNetwork(jnp.ones((2, 3)), jnp.ones((1, 2)))
    # (Under the test suite's beartype hook the annotation rejects it first; both name it.)
    with pytest.raises(TypeError, match="adjoint"):
        flowlin.gradient_flow(net, problem, 1.0, adjoint="direct")
    with pytest.raises(ValueError, match="BacksolveAdjoint"):
        flowlin.gradient_flow(net, problem, 1.0, stop_at_loss=1e-3, adjoint=dfx.BacksolveAdjoint())


# -- the h^{-1/2} law for the derivative of the distance with respect to the init scale ---------
#
# Init W1 = s·h^{-1/2}G1, W2 = s·h^{-1/2}G2 (paper init, α = 1/2, times a scale s). At
# convergence the distance is ‖V(∞)U2(0)ᵀ‖_F (theory.md §2(e)), and U2(0)ᵀ = s·h^{-1/2}G1Φ2
# (h×(D−r)) is standard normal times s·h^{-1/2}, independent of V(0) and of U1(0). So
# E[d² | V(∞)] = s²‖V(∞)‖_F²(D−r)/h, and everything hinges on where V ends:
#
# - large s (lazy: the weights move by O(‖W*‖/s) ≪ s): V(∞) = V(0) + ΔV with ‖ΔV‖ = O(‖W*‖/s),
#   so d = ‖V(0)U2(0)ᵀ‖(1 + O(‖W*‖/s²)) ∝ s²h^{-1/2}, with E d² = s⁴m(D−r)/h. Prediction:
#   d'(s) = 2d/s = 2‖V(0)U2(0)ᵀ‖/s per draw, to relative O(‖W*‖/s²) (the §2(f) exponent
#   λ1^{1/2}‖E(0)‖/(λr c), c ≈ 2s², → 0: the bound's prefactor ∝ s²h^{-1/2} is the distance).
# - small s (rich: the flow leaves the origin balanced, Λ = O(s²)): U1(∞)V(∞)ᵀ = Σ^{-1/2}Ỹ with
#   U1ᵀU1 = VᵀV, so ‖V(∞)‖_F² = ‖W*‖_* (nuclear norm) whatever s: d ∝ s·h^{-1/2},
#   E d² = s²(D−r)‖W*‖_*/h. Prediction: d'(s) = d/s, to relative O(s²/‖W*‖_*).
#
# In both regimes d'(s) ∝ h^{-1/2}, positive: a smaller init is closer to the min-norm solution.

WIDE_SIZES = dict(n=6, D=30, m=1)
WIDE_SEEDS = 32
SMALL_SCALE, LARGE_SCALE = 0.03, 10.0
# Flow time to converge: the small init first escapes the saddle at 0 (t ~ log(1/s²)/‖Ỹ‖);
# the large one converges at rate ~ 4s².
SMALL_T1, LARGE_T1 = 150.0, 1.0
# The neglected relative terms, O(s²/‖W*‖_*) and O(‖W*‖/s²), are ≈ 1.7e-3 and 5e-3 here
# (‖W*‖ ≈ 0.53), with random sign per draw; slopes and the per-draw lazy derivative are
# asserted within 4 times that.
CORRECTION_FACTOR = 4
# Means over seeds of χ²_{D−r}/(D−r)-distributed quantities: relative std
# sqrt(2/(D−r))/sqrt(seeds) ≈ 0.05; asserted at 4 std.
MEAN_RTOL = 0.2

_trace_count = {"n": 0}


def _final_distance(s, unit, problem, t1):
    # Scale s multiplies W1 and W2: Q0 = Z0Z0ᵀ ∝ s², K = G0ᵀG0 ∝ s⁴ (G0 = U2 Z0ᵀ).
    init = flowlin.GramInit(Q=s**2 * unit.Q, K=s**4 * unit.K)
    saveat = flowlin.SaveAt(ts=jnp.zeros(1), diagnostics=("distance_to_min_norm", "excess_loss"))
    traj = flowlin.gradient_flow(
        init, problem, t1, saveat=saveat, method=flowlin.Gram(), rtol=1e-10, atol=1e-12
    )
    return traj.final_values["distance_to_min_norm"], traj.final_values["excess_loss"]


@eqx.filter_jit
def _scale_gradients(keys, scales, t1s, h, problem):
    """Per (key, scale, t1): distance, its derivative in s, ‖V(0)U2(0)ᵀ‖ and the final excess."""
    _trace_count["n"] += 1  # Python side effect: runs once per trace
    r = problem.rank

    def one(key, s, t1):
        unit = flowlin.init.wishart(key, problem, h, h**-0.5, h**-0.5)
        (d, excess), g = jax.value_and_grad(_final_distance, has_aux=True)(s, unit, problem, t1)
        null0 = s**2 * jnp.sqrt(jnp.trace(unit.K[r:, r:]))  # ‖V(0)U2(0)ᵀ‖_F at scale s
        return d, g, null0, excess

    return jax.vmap(one)(keys, scales, t1s)


def test_scale_gradient_follows_the_wide_network_law():
    problem = flowlin.problems.whitened(jax.random.key(7), **WIDE_SIZES)
    r, m, D = problem.rank, problem.m, problem.D
    nuclear = float(jnp.sum(jnp.linalg.svd(problem.min_norm, compute_uv=False)))
    keys = jax.random.split(jax.random.key(8), WIDE_SEEDS)
    # One batch holds both regimes: a vmap of grad over a batch of scales.
    keys = jnp.concatenate([keys, keys])
    scales = jnp.repeat(jnp.array([SMALL_SCALE, LARGE_SCALE]), WIDE_SEEDS)
    t1s = jnp.repeat(jnp.array([SMALL_T1, LARGE_T1]), WIDE_SEEDS)
    _trace_count["n"] = 0
    for h in (1e4, 1e6):
        d, g, null0, excess = (
            np.asarray(x) for x in _scale_gradients(keys, scales, t1s, jnp.asarray(h), problem)
        )
        assert np.all(excess < 1e-16)  # converged: d is the distance at t = ∞
        assert np.all(g > 0)  # sign: a larger init lands farther from W*
        slope = np.asarray(scales) * g / d  # d log d / d log s
        small, large = slice(0, WIDE_SEEDS), slice(WIDE_SEEDS, None)
        rich_tol = CORRECTION_FACTOR * SMALL_SCALE**2 / nuclear
        lazy_tol = CORRECTION_FACTOR * nuclear / LARGE_SCALE**2
        np.testing.assert_allclose(slope[small], 1.0, atol=rich_tol)
        np.testing.assert_allclose(slope[large], 2.0, atol=2 * lazy_tol)
        # Magnitude, large s: per draw, d'(s) = 2‖V(0)U2(0)ᵀ‖/s; on average 2s·sqrt(m(D−r)/h).
        np.testing.assert_allclose(g[large], 2 * null0[large] / LARGE_SCALE, rtol=lazy_tol)
        lazy = np.mean(g[large] ** 2) / (4 * LARGE_SCALE**2 * m * (D - r) / h)
        # Magnitude, small s: on average d'(s)² = (D−r)‖W*‖_*/h.
        rich = np.mean(g[small] ** 2) / ((D - r) * nuclear / h)
        np.testing.assert_allclose([lazy, rich], 1.0, rtol=MEAN_RTOL)
    # Both widths and both scales went through one compiled function.
    assert _trace_count["n"] == 1


# Small widths: every diagnostic saved (the imbalance drift among them) and reverse-mode
# differentiated, at h ∈ {1, 2, r, 2(r+m) − 1}, below the width 2(r+m) from which the drift
# is taken through a (then tall) QR. JAX has no derivative for the QR of a wide matrix.
WIDTH_TOL = dict(rtol=1e-10, atol=1e-10)  # FD quotient error ~1e-10/6e-6 ≈ 2e-5
WIDTH_FD_RTOL = 1e-4
# The drift (its t = 0 save is exactly 0: the norm's derivative there once gave NaN) and two
# outputs; fewer diagnostics, less to compile.
WIDTH_DIAGNOSTICS = ("imbalance_drift", "loss", "distance_to_min_norm")


@pytest.mark.parametrize("method", [flowlin.FullWeights(), flowlin.Gram()], ids=["full", "gram"])
def test_gradients_at_small_widths(method):
    rng = np.random.default_rng(5)
    problem = flowlin.Problem(rng.normal(size=(N, D)), rng.normal(size=(N, M)))
    r = problem.rank
    for h in (1, 2, r, 2 * (r + M) - 1):
        G1, G2 = jnp.asarray(rng.normal(size=(h, D))), jnp.asarray(rng.normal(size=(M, h)))

        def f(scale, G1=G1, G2=G2):
            net = flowlin.LinearNetwork(scale * G1, scale * G2)
            saveat = flowlin.SaveAt(ts=[0.0, 0.3], diagnostics=WIDTH_DIAGNOSTICS)
            traj = flowlin.gradient_flow(
                net, problem, 0.3, method=method, saveat=saveat, **WIDTH_TOL
            )
            final = traj.final_values
            return final["loss"] + final["distance_to_min_norm"] + traj.imbalance_drift[-1]

        # One compilation per width: the finite differences reuse the value-and-gradient.
        value_and_grad = jax.jit(jax.value_and_grad(f))
        x = jnp.asarray(0.7)
        grad = value_and_grad(x)[1]
        plus, minus = value_and_grad(x * (1 + FD_STEP))[0], value_and_grad(x * (1 - FD_STEP))[0]
        fd = (plus - minus) / (2 * x * FD_STEP)
        assert np.isfinite(grad), h
        np.testing.assert_allclose(grad, fd, rtol=WIDTH_FD_RTOL, err_msg=f"h={h}")
