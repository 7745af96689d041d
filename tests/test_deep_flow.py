"""The depth-L full-weights flow (`gradient_flow` / `gradient_descent` on a
`flowlin.DeepLinearNetwork`, docs/theory.md §6) against independent truths: scipy's DOP853 on
the flattened weights, the two-layer solver at L = 2, the conserved balancedness, the limit
identity, finite differences.

Small sizes (D = 10, n = 5, rank r = 3 < n, m = 2, widths <= 8): the whole file is cheap.
"""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import flowlin
from flowlin import init
from flowlin._method._deep import deep_fingerprint


# Tsit5 at rtol 1e-12: the integration error sits ~2 orders below the 1e-8 asked for (Dopri8
# would take fewer steps but compiles twice as long, which dominates at these sizes).
TIGHT = dict(solver=dfx.Tsit5(), rtol=1e-12, atol=1e-14)
N, D, M, RANK = 5, 10, 2, 3


@pytest.fixture(scope="module")
def problem():
    """Non-whitened X of rank 3 < n = 5 (so L* > 0), m = 2 outputs."""
    k1, k2, k3 = jax.random.split(jax.random.key(7), 3)
    X = jax.random.normal(k1, (N, RANK)) @ jax.random.normal(k2, (RANK, D))
    X = 0.25 * X * jnp.linspace(0.5, 2.0, D)  # distinct singular values, λ ≈ 7.5, 4.2, 0.6
    Y = jax.random.normal(k3, (N, M))
    return flowlin.Problem(X, Y)


def _net(key, widths, std=0.6):
    dims = (D, *widths, M)
    keys = jax.random.split(key, len(dims) - 1)
    return flowlin.DeepLinearNetwork(
        [std * jax.random.normal(k, (dims[i + 1], dims[i])) for i, k in enumerate(keys)]
    )


def _scipy_weights(net, problem, ts):
    """The weights at `ts` by scipy's DOP853 on the flattened weights, with the issue's
    formula Ẇ_l = (W_L···W_(l+1))ᵀ Rᵀ X (W_(l-1)···W_1)ᵀ, R = Y - X W_1ᵀ···W_Lᵀ (numpy, with
    X itself)."""
    X, Y = np.asarray(problem.X), np.asarray(problem.Y)
    shapes = [w.shape for w in net.weights]
    sizes = [int(np.prod(s)) for s in shapes]

    def unflat(y):
        out, i = [], 0
        for s, n in zip(shapes, sizes):
            out.append(y[i : i + n].reshape(s))
            i += n
        return out

    def chain(mats, size):
        out = np.eye(size)
        for W in mats:
            out = W @ out
        return out

    def rhs(t, y):
        ws = unflat(y)
        R = Y - X @ chain(ws, D).T
        dws = []
        for l in range(len(ws)):
            after = chain(ws[l + 1 :], ws[l].shape[0])  # W_L···W_(l+1)
            before = chain(ws[:l], D)  # W_(l-1)···W_1
            dws.append((after.T @ R.T @ X @ before.T).ravel())
        return np.concatenate(dws)

    y0 = np.concatenate([np.asarray(w).ravel() for w in net.weights])
    sol = solve_ivp(rhs, (0.0, float(ts[-1])), y0, method="DOP853", t_eval=np.asarray(ts),
                    rtol=1e-12, atol=1e-14)  # fmt: skip
    assert sol.success
    return [unflat(sol.y[:, i]) for i in range(len(ts))]


#: Save times of the L = 3 and L = 4 runs: a pair 2·DT apart around T_RATE for the rate.
T_RATE, DT = 1.5, 1e-3
TIMES = jnp.array([0.0, T_RATE - DT, T_RATE, T_RATE + DT, 4.0])


def _run(problem, widths):
    net = _net(jax.random.key(len(widths)), widths)
    # Only what the tests below read (fewer diagnostics compile faster; every diagnostic is
    # exercised by `long_run` and the L = 2 comparison).
    names = ("loss", "excess_loss", "rate", "distance_to_min_norm")
    saveat = flowlin.SaveAt(TIMES, diagnostics=names, networks=True)
    return net, flowlin.gradient_flow(net, problem, TIMES[-1], saveat=saveat, **TIGHT)


@pytest.fixture(scope="module")
def depth3(problem):
    """L = 3, widths (6, 7), saved at TIMES with the weights (shared by several tests)."""
    return _run(problem, (6, 7))


@pytest.mark.parametrize("depth", [3, 4])
def test_agrees_with_scipy_dop853(problem, depth3, depth):
    net, traj = depth3 if depth == 3 else _run(problem, (6, 4, 7))
    widths = net.widths
    assert traj.result == flowlin.RESULTS.successful
    ts = TIMES
    reference = _scipy_weights(net, problem, ts)
    err = max(
        float(np.max(np.abs(np.asarray(traj.networks.weights[l][i]) - reference[i][l])))
        for i in range(len(ts))
        for l in range(len(widths) + 1)
    )
    assert err <= 1e-8, err
    moved = np.max(np.abs(reference[-1][1] - np.asarray(net.weights[1])))
    assert moved > 1e-2  # positive control: the weights did move
    # The excess loss fell a lot over the run (the comparison covers real dynamics).
    assert traj.excess_loss[-1] < 0.2 * traj.excess_loss[0]


def test_depth_two_equals_two_layer_solver(problem):
    deep = _net(jax.random.key(2), (7,), std=0.3)
    two = deep.as_two_layer()
    saveat = flowlin.SaveAt(jnp.linspace(0.0, 4.0, 7))
    a = flowlin.gradient_flow(deep, problem, 4.0, saveat=saveat, **TIGHT)
    b = flowlin.gradient_flow(two, problem, 4.0, saveat=saveat, **TIGHT)
    for name in flowlin.DIAGNOSTICS:
        x, y = getattr(a, name), getattr(b, name)
        if name == "imbalance_drift":  # both are round-off (~1e-13): compare sizes only
            assert np.max(x) <= 1e-10 and np.max(y) <= 1e-10
        elif name == "rate":  # a ratio of ‖E‖²: relative, while L - L* is resolved
            assert np.all(b.excess_loss > 1e-6)  # (it is, over this run)
            assert np.max(np.abs(x - y) / y) <= 1e-10
        else:
            assert np.max(np.abs(x - y)) <= 1e-10, name
    assert np.max(np.abs(a.final_network.weights[0] - b.final_network.W1)) <= 1e-10
    assert np.max(np.abs(a.final_network.weights[1] - b.final_network.W2)) <= 1e-10
    assert np.max(np.abs(a.final_output_gram - b.final_output_gram)) <= 1e-10
    assert np.allclose(a.init_fingerprint, b.init_fingerprint, rtol=1e-14, atol=1e-14)
    assert np.allclose(a.init_fingerprint, deep_fingerprint(deep, problem), rtol=1e-14, atol=1e-14)
    assert a.balancedness_drift.shape == (7, 1) and b.balancedness_drift is None
    assert a.excess_loss[-1] < 0.1 * a.excess_loss[0]  # it moved


@pytest.fixture(scope="module")
def long_run(problem):
    """L = 3 over 100 time units at the default tolerances, weights saved at 11 times."""
    net = _net(jax.random.key(3), (6, 7))
    saveat = flowlin.SaveAt(jnp.linspace(0.0, 100.0, 11), networks=True)
    return net, flowlin.gradient_flow(net, problem, 100.0, saveat=saveat)


def _balancedness(ws):
    C = [ws[1].T @ ws[1] - ws[0] @ ws[0].T, ws[2].T @ ws[2] - ws[1] @ ws[1].T]
    return C


def test_balancedness_conserved_over_100_time_units(long_run, problem):
    net, traj = long_run
    assert traj.converged
    drift = np.asarray(traj.balancedness_drift)
    assert drift.shape == (11, 2)
    assert np.max(drift) <= 1e-8, np.max(drift)
    # The diagnostic is what it says: recompute ‖C_l(t) - C_l(0)‖_F from the saved weights
    # (l = 1 on the row space: W1Φ2 is constant up to round-off).
    P = problem.Phi1 @ problem.Phi1.T
    ws0 = [net.weights[0] @ P, *net.weights[1:]]
    C0 = _balancedness(ws0)
    for i in (5, 10):
        ws = [traj.networks.weights[0][i] @ P, *(w[i] for w in traj.networks.weights[1:])]
        direct = [float(jnp.linalg.norm(c - c0)) for c, c0 in zip(_balancedness(ws), C0)]
        assert np.allclose(drift[i], direct, rtol=0, atol=1e-12)
    # Negative control: gradient descent with a large step does not conserve it, and the
    # diagnostic sees that (drift O(η) in total). (Five saves: the program of the descent test.)
    gd = flowlin.gradient_descent(net, problem, 0.01, 400, saveat=TIMES)
    assert np.max(gd.balancedness_drift) > 1e-4
    assert traj.imbalance_drift[-1] <= 1e-8


def test_limit_identity_and_invariant_set(long_run, problem):
    net, traj = long_run
    final = traj.final_network
    Phi2 = problem.phi2()
    offset = final.head @ net.weights[0] @ Phi2 @ Phi2.T  # W_L···W_2(∞) W_1(0) Φ2Φ2ᵀ
    identity = jnp.linalg.norm(final.product - problem.min_norm - offset)
    assert identity <= 1e-8, identity
    assert jnp.linalg.norm(offset) > 1e-2  # the offset is not trivially zero
    assert traj.distance_to_min_norm[-1] > 1e-2
    # Projected onto the invariant set (W1Φ2 = 0): converges to W* itself.
    projected = init.project_to_invariant_set(net, problem)
    saveat = flowlin.SaveAt(jnp.linspace(0.0, 100.0, 11), networks=True)  # long_run's program
    run = flowlin.gradient_flow(projected, problem, 100.0, saveat=saveat)
    assert run.converged
    assert run.distance_to_min_norm[-1] <= 1e-8, run.distance_to_min_norm[-1]
    assert run.u2_drift[-1] <= 1e-12


def test_rate_and_fields(problem, depth3):
    """The measured rate is -d/dt log(L - L*) (central differences of the saved excess loss);
    the output gram is head·headᵀ; loss and distance are the end-to-end map's."""
    net, traj = depth3
    e = np.asarray(traj.excess_loss)
    fd = -(np.log(e[3]) - np.log(e[1])) / (2 * DT)  # O(DT²) ≈ 1e-6 relative
    assert abs(traj.rate[2] - fd) <= 1e-5 * abs(fd), (traj.rate[2], fd)
    head = traj.final_network.head
    assert np.allclose(traj.final_output_gram, head @ head.T, rtol=0, atol=1e-14)
    assert traj.loss[0] == pytest.approx(float(problem.loss(net.product)), rel=1e-12)
    W = traj.networks.weights[2][2] @ traj.networks.weights[1][2] @ traj.networks.weights[0][2]
    assert traj.distance_to_min_norm[2] == pytest.approx(
        float(jnp.linalg.norm(W - problem.min_norm)), rel=1e-12
    )
    assert isinstance(traj.networks, flowlin.DeepLinearNetwork)
    assert traj.networks.weights[1].shape == (len(TIMES), 7, 6)


def test_event_time_gradient_matches_finite_differences(problem):
    """jax.grad through the depth-L flow with respect to the initial weights, of the time the
    excess loss reaches `stop_at_loss` (the event, located by a root find), along a random
    direction, against central differences. The same program, run to a t1 before the event,
    reports not_converged."""
    net = _net(jax.random.key(6), (4, 5), std=0.3)
    direction = _net(jax.random.key(9), (4, 5), std=1.0).weights
    saveat = flowlin.SaveAt(jnp.array([0.0]), diagnostics=("excess_loss",))

    def event_time(ws, t1):
        traj = flowlin.gradient_flow(flowlin.DeepLinearNetwork(ws), problem, t1,
                                     saveat=saveat, stop_at_loss=1e-3, **TIGHT)  # fmt: skip
        return traj.event_time, (traj.final_values["excess_loss"], traj.result)

    value_and_grad = jax.jit(jax.value_and_grad(event_time, has_aux=True))  # one program
    ws, t1 = net.weights, jnp.asarray(50.0)
    (t_event, (excess, result)), grad = value_and_grad(ws, t1)
    assert result == flowlin.RESULTS.event_occurred and 0.5 < t_event < 50.0
    assert excess == pytest.approx(1e-3, rel=1e-6)
    along = sum(jnp.sum(g * d) for g, d in zip(grad, direction))
    eps = 1e-5
    (plus, _), _ = value_and_grad(tuple(w + eps * d for w, d in zip(ws, direction)), t1)
    (minus, _), _ = value_and_grad(tuple(w - eps * d for w, d in zip(ws, direction)), t1)
    fd = (plus - minus) / (2 * eps)
    assert abs(along - fd) <= 1e-6 * max(1.0, abs(fd)), (along, fd)
    assert abs(fd) > 1e-2  # the derivative is not trivially zero
    (_, (_, result)), _ = value_and_grad(ws, jnp.asarray(0.5))
    assert result == flowlin.RESULTS.not_converged


def test_descent_tracks_the_flow(problem, depth3):
    """Plain gradient descent is Euler's method: its error against the flow is O(η)."""
    net, flow = depth3
    errors = []
    for lr in (1e-3, 1e-4):
        steps = int(round(float(TIMES[-1]) / lr))
        gd = flowlin.gradient_descent(net, problem, lr, steps, saveat=TIMES)
        assert isinstance(gd.final_network, flowlin.DeepLinearNetwork)
        assert gd.balancedness_drift.shape == (len(TIMES), 2)
        errors.append(float(np.max(np.abs(gd.excess_loss - flow.excess_loss))))
        prod = np.max(np.abs(gd.final_network.product - flow.final_network.product))
        assert prod <= 50 * lr
    assert 5 < errors[0] / errors[1] < 20, errors  # first order
    assert errors[1] <= 1e-4
    assert np.allclose(gd.init_fingerprint, flow.init_fingerprint, rtol=1e-14, atol=1e-14)
