"""The width-independent gram solver (`gradient_flow(..., method=flowlin.Gram())`, theory.md §3)
against the full weight-space solver and the weight-space diagnostics."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_gram import gaussian_net, random_problem, rel_err, rel_fro

import flowlin
from flowlin._diagnostics import Reference, weight_diagnostics
from flowlin._method._gram import GramSystem, from_gram, from_network


#: Agreement asked of the two solvers (issue 5): loss, distance, final product.
SOLVER_AGREEMENT = 1e-7
#: Tight enough that each solver's own global error (~1e-10) is far below SOLVER_AGREEMENT.
TIGHT = dict(solver=dfx.Dopri8(), rtol=1e-11, atol=1e-13, max_steps=20_000)
#: Identities evaluated at the same state: only round-off separates them (float64, k ≤ 10).
IDENTITY_RTOL = 1e-10

ALL_BUT_INTEGRAL = tuple(d for d in flowlin.DIAGNOSTICS if d != "error_integral")


# -- the reconstruction formulas, at arbitrary states ------------------------------------------


@pytest.mark.parametrize("h", [2, 40])  # h < r + m (no QR), h > r + m (QR of Z0ᵀ)
def test_diagnostics_are_the_weight_space_ones(h, getkey):
    """For *any* state Ψ (not only the flow's), the diagnostics computed from the reduced
    state equal the weight-space ones of the network with Z = ΨZ0 and the same U2 —
    through both the network (QR) and the GramInit (eigh) factorizations."""
    n, D, m, r = 6, 11, 2, 3
    problem = random_problem(getkey(), n, D, m, r)
    net0 = gaussian_net(getkey(), D, m, h, 0.7, 0.9)
    k = r + m
    Psi = jnp.eye(k) + 0.3 * jax.random.normal(getkey(), (k, k))

    @eqx.filter_jit
    def both(problem, net0, Psi):
        S = problem.sqrt_sigma[:, None]
        U1_0 = problem.row_part(net0.W1)
        Z = Psi @ jnp.concatenate([S * U1_0, net0.W2], 0)
        W1 = net0.W1 + ((Z[:r] / S) - U1_0).T @ problem.Phi1.T
        truth = weight_diagnostics(
            problem, W1, Z[r:], Reference(problem, net0.W1, net0.W2), ALL_BUT_INTEGRAL
        )
        L, J, _, _ = from_network(net0, problem)
        Lg, Jg = from_gram(flowlin.init.gram_init(net0, problem))
        ours = []
        for L_, J_ in ((L, J), (Lg, Jg)):
            system = GramSystem(problem.sigma, problem.Y_tilde, problem.loss_star, L_, J_)
            ours.append(system.diagnostics(Psi @ L_, None, ALL_BUT_INTEGRAL))
        return truth, ours

    truth, ours = both(problem, net0, Psi)
    assert float(truth["imbalance_drift"]) > 1e-3  # a real change of Λ is being measured
    for diag in ours:
        for name in ALL_BUT_INTEGRAL:
            if name == "u2_drift":  # the weight-space value is round-off (U2 is untouched)
                assert float(diag[name]) == 0.0 and float(truth[name]) < 1e-14
                continue
            assert rel_err(diag[name], truth[name]) < IDENTITY_RTOL, name


def _dot_precisions(jaxpr) -> list:
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(eqn.params["precision"])
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    out.extend(_dot_precisions(inner))
    return out


def test_float32_products_are_full_precision():
    """In float32 every product of the reduced flow (setup, vector field, error, diagnostics,
    rebuilt weights) is traced at HIGHEST precision, so a GPU never runs it in TF32 (whose
    ~1e-3 noise made float32 sweeps slow and 2% off). Checked on the traced program: no
    compilation, no GPU needed."""
    X, Y = (
        jax.random.normal(jax.random.key(0), (4, 9)),
        jax.random.normal(jax.random.key(1), (4, 1)),
    )
    problem = flowlin.Problem(X.astype(jnp.float32), Y.astype(jnp.float32))
    net = flowlin.init.paper(jax.random.key(2), 9, 1, 12, 0.5)
    net = flowlin.LinearNetwork(net.W1.astype(jnp.float32), net.W2.astype(jnp.float32))
    assert problem.dtype == jnp.float32 and net.dtype == jnp.float32
    method = flowlin.Gram()

    def pieces(net):
        y0, run = method.start(net, problem)
        dy, E = method.vector_field(run, y0)
        diag = method.diagnostics(run, y0, None, ALL_BUT_INTEGRAL)
        return dy, E, method.error(run, y0), diag, method.final_network(run, y0)

    precisions = _dot_precisions(jax.make_jaxpr(pieces)(net).jaxpr)
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    assert len(precisions) > 10 and all(p == highest for p in precisions)


# -- gram vs full on random instances -------------------------------------------------------

# Shape groups: (n, D, m, r, widths, pad_to). Widths in a group share one array width by exact
# zero-padding (theory.md §3), so each group compiles each solver once. h < r + m included.
GROUPS = {
    "small-width": (6, 10, 2, 4, [1, 2, 3, 4, 5, 6, 7, 8, 10], 10),
    "wide": (8, 16, 3, 6, [3, 9, 20, 50, 120, 250, 500], 500),
}
GROUP_SEEDS = {"small-width": 0, "wide": 1}
#: E is known to ~rtol·‖Ỹ‖ absolute: below ‖E‖ = 1e-3‖E(0)‖ its relative error exceeds ~1e-8.
RESOLVED_EXCESS = 1e-6
#: σ_min(U1Vᵀ) is O(0.1–1) here, or exactly 0 (h < min(r, m)), which each solver returns as
#: ~1e-16 round-off; its absolute accuracy is that of U1Vᵀ (~1e-11), far below this floor.
SMIN_FLOOR = 1e-8
SEEDS_PER_WIDTH = 4  # 9·4 + 7·4 = 64 instances (≥ 50 asked)
GROUP_SAVES = flowlin.SaveAt(
    ts=jnp.linspace(0.0, 8.0, 5),
    diagnostics=(
        "loss",
        "excess_loss",
        "distance_to_min_norm",
        "rate",
        "product_min_singular_value",
        "error_integral",
    ),
)


@pytest.mark.slow  # two Dopri8 compiles per group; ~20 s on 2 shared cores
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_gram_matches_full(group):
    n, D, m, r, widths, pad = GROUPS[group]

    @eqx.filter_jit
    def both(key, h):
        kp, kn, ks = jax.random.split(key, 3)
        problem = random_problem(kp, n, D, m, r)
        # Scales around the NTK one, std ∈ [0.5, 2]/√h per layer, drawn per instance.
        std = jax.random.uniform(ks, (2,), minval=0.5, maxval=2.0) / jnp.sqrt(h)
        net = flowlin.init.gaussian(kn, D, m, h, std[0], std[1], pad_to=pad)
        full, gram = (
            flowlin.gradient_flow(net, problem, 8.0, saveat=GROUP_SAVES, method=mt, **TIGHT)
            for mt in (flowlin.FullWeights(), flowlin.Gram())
        )
        return full, gram

    worst = dict(loss=0.0, distance=0.0, product=0.0, excess=0.0, rate=0.0, smin=0.0, integ=0.0)
    count = 0
    base = jax.random.key(GROUP_SEEDS[group])
    for h in widths:
        for seed in range(SEEDS_PER_WIDTH):
            full, gram = both(jax.random.fold_in(base, 100 * h + seed), jnp.asarray(h))
            assert bool(full.succeeded) and bool(gram.succeeded)
            worst["loss"] = max(worst["loss"], rel_err(gram.loss, full.loss))
            worst["distance"] = max(
                worst["distance"], rel_err(gram.distance_to_min_norm, full.distance_to_min_norm)
            )
            worst["product"] = max(
                worst["product"],
                rel_fro(gram.final_network.product, full.final_network.product),
            )
            # The other diagnostics. Excess loss and rate are functions of E, known to each
            # solver to ~rtol·‖Ỹ‖ absolute: compare them while ‖E‖ ≥ 1e-3‖E(0)‖.
            resolved = full.excess_loss >= RESOLVED_EXCESS * full.excess_loss[0]
            for name, a, b in (
                ("excess", gram.excess_loss, full.excess_loss),
                ("rate", gram.rate, full.rate),
            ):
                err = jnp.where(resolved, jnp.abs(a - b) / jnp.abs(b), 0.0)
                worst[name] = max(worst[name], float(jnp.max(err)))
            # σ_min(U1Vᵀ) is exactly 0 when h < min(r, m); both solvers then give round-off.
            a, b = gram.product_min_singular_value, full.product_min_singular_value
            worst["smin"] = max(worst["smin"], float(jnp.max(jnp.abs(a - b) / (b + SMIN_FLOOR))))
            worst["integ"] = max(
                worst["integ"], rel_err(gram.error_integral[1:], full.error_integral[1:])
            )
            count += 1
    print(f"{group}: {count} instances, worst relative errors {worst}")
    for name in ("loss", "distance", "product", "excess", "rate", "smin", "integ"):
        assert worst[name] < SOLVER_AGREEMENT, (name, worst)


#: The problem size of the remaining tests: one size, so that they share compiled solvers.
SHAPE = (5, 9, 2, 3)  # n, D, m, r


# -- singular Q0 over long times (the reason the state is Z_r and not Ψ) ----------------------


@pytest.mark.slow  # ~20 s on 2 shared cores
def test_singular_init_long_time(getkey):
    """Width 1 < r + m: the flow stalls at a non-global stationary point (E(∞) ≠ 0). A Ψ
    state would blow up on the null space of Q0; the reduced state must stay put and agree
    with the full solver, from the network and from its GramInit."""
    n, D, m, r = SHAPE
    problem = random_problem(getkey(), n, D, m, r)
    net = gaussian_net(getkey(), D, m, 1, 0.8, 0.8)
    full = flowlin.gradient_flow(net, problem, 200.0, method=flowlin.FullWeights())
    gram = flowlin.gradient_flow(net, problem, 200.0, method=flowlin.Gram())
    from_stats = flowlin.gradient_flow(
        flowlin.init.gram_init(net, problem), problem, 200.0, method=flowlin.Gram()
    )
    # Default tolerances (rtol 1e-8): the two solvers agree to ~1e-7 of the value.
    for traj in (gram, from_stats):
        assert bool(traj.succeeded)
        assert int(traj.num_steps) < 2 * int(full.num_steps) + 50
        assert rel_err(traj.loss, full.loss) < 1e-6
        assert rel_err(traj.distance_to_min_norm, full.distance_to_min_norm) < 1e-6
    assert float(full.excess_loss[-1]) > 1e-3  # it did stall away from L*


# -- early stop, status, what is saved ------------------------------------------------------

#: Both solvers at rtol 1e-10 (Tsit5): each is ~1e-9 accurate, so they agree to ~1e-8.
MEDIUM = dict(rtol=1e-10, atol=1e-12)


@pytest.mark.slow  # ~20 s on 2 shared cores
def test_stop_at_loss_and_saved_networks(getkey):
    """The excess-loss event stops both solvers at the same time; saves after it are inf;
    the networks saved along the way (rebuilt from the reduced state) are the full solver's."""
    n, D, m, r = SHAPE
    problem = random_problem(getkey(), n, D, m, r)
    net = gaussian_net(getkey(), D, m, 20, 0.1, 0.1)
    excess0 = 0.5 * float(jnp.sum(problem.error(net.product) ** 2))
    threshold = 1e-9 * excess0
    saves = flowlin.SaveAt(
        ts=jnp.linspace(0.0, 30.0, 31),
        networks=True,
        diagnostics=("excess_loss", "distance_to_min_norm", "u2_drift"),
    )
    full, gram = (
        flowlin.gradient_flow(
            net, problem, 30.0, saveat=saves, method=mt, stop_at_loss=threshold, **MEDIUM
        )
        for mt in (flowlin.FullWeights(), flowlin.Gram())
    )
    for traj in (full, gram):
        assert traj.result == flowlin.RESULTS.event_occurred
        assert bool(traj.reached_threshold) and bool(traj.succeeded)
    assert rel_err(gram.final_time, full.final_time) < 1e-8
    assert rel_err(gram.final_values["excess_loss"], jnp.asarray(threshold)) < 1e-8
    after = saves.ts > full.final_time
    assert 0 < int(after.sum()) < 30  # the stop happened inside the saved window
    np.testing.assert_array_equal(np.isinf(gram.ts), np.asarray(after))
    for x in (gram.excess_loss, gram.distance_to_min_norm, gram.networks.W1, gram.networks.W2):
        assert bool(jnp.all(jnp.isinf(x[after])))
    before = ~after
    assert rel_err(gram.distance_to_min_norm[before], full.distance_to_min_norm[before]) < 1e-8
    assert rel_fro(gram.networks.W1[before], full.networks.W1[before]) < 1e-8
    assert rel_fro(gram.networks.W2[before], full.networks.W2[before]) < 1e-8
    assert rel_fro(gram.final_network.W1, full.final_network.W1) < 1e-8
    # U2 is not integrated by the gram method: its drift is exactly 0 there.
    assert bool(jnp.all(gram.u2_drift[before] == 0.0))
    assert gram.loss is None and gram.rate is None  # only what was asked is computed


def test_step_budget_is_reported_not_raised(getkey):
    problem = random_problem(getkey(), *SHAPE)
    init = flowlin.init.gram_init(gaussian_net(getkey(), SHAPE[1], SHAPE[2], 1, 0.8, 0.8), problem)
    traj = flowlin.gradient_flow(init, problem, 50.0, method=flowlin.Gram(), max_steps=4)
    assert traj.result == flowlin.RESULTS.max_steps_reached
    assert not bool(traj.succeeded)
    assert traj.final_network is None


def test_gram_init_gives_the_network_trajectory(getkey):
    """Starting from `gram_init(net)` (eigh factorization of Q0, K) or from `net` (QR of Z0ᵀ)
    gives the same trajectory; only the network start can rebuild weights."""
    problem = random_problem(getkey(), *SHAPE)
    net = gaussian_net(getkey(), SHAPE[1], SHAPE[2], 30, 0.05, 0.05)
    a = flowlin.gradient_flow(net, problem, 10.0, method=flowlin.Gram())
    b = flowlin.gradient_flow(
        flowlin.init.gram_init(net, problem), problem, 10.0, method=flowlin.Gram()
    )
    # Same ODE from two factorizations of the same Q0, at the default rtol 1e-8: they agree to
    # ~1e-8 of the scale, which is relative for every diagnostic but those of a vanishing E.
    resolved = a.excess_loss > RESOLVED_EXCESS * a.excess_loss[0]
    assert 10 < int(resolved.sum()) < 101
    for name in flowlin.DIAGNOSTICS:
        x, y = getattr(a, name), getattr(b, name)
        if name == "imbalance_drift":  # the integrator's error, not a trajectory to match
            assert float(jnp.max(x)) < 1e-8 and float(jnp.max(y)) < 1e-8
        elif name == "u2_drift":
            assert bool(jnp.all(x == 0)) and bool(jnp.all(y == 0))
        elif name in ("excess_loss", "rate"):
            assert rel_err(x[resolved], y[resolved]) < 1e-6, name
        else:
            assert rel_err(x[1:], y[1:]) < 1e-6, name
    assert a.final_network is not None and b.final_network is None
    assert a.final_network.width == net.width


# -- transformations ------------------------------------------------------------------------


def test_jit_equals_eager(getkey):
    problem = random_problem(getkey(), *SHAPE)
    net = gaussian_net(getkey(), SHAPE[1], SHAPE[2], 30, 0.4, 0.6)
    eager = flowlin.gradient_flow(net, problem, 10.0, method=flowlin.Gram())
    jitted = eqx.filter_jit(
        lambda net, problem: flowlin.gradient_flow(net, problem, 10.0, method=flowlin.Gram())
    )(net, problem)
    for name in flowlin.DIAGNOSTICS:
        np.testing.assert_allclose(
            getattr(jitted, name), getattr(eager, name), rtol=1e-12, atol=1e-15
        )
    np.testing.assert_allclose(jitted.final_network.W1, eager.final_network.W1, rtol=1e-12)


#: Batched and unbatched kernels round differently, and an adaptive step may be accepted in
#: one and rejected in the other: the runs then differ at the solver's tolerance (1e-12).
VMAP_RTOL = 1e-10


@pytest.mark.slow  # ~20 s on 2 shared cores
def test_vmap_over_widths_and_scales_compiles_once_and_equals_loop(getkey):
    """A sweep over (seed, width, scale) from Wishart statistics is one jit+vmap, traced once
    however the values change, and equals the same runs one by one."""
    problem = random_problem(getkey(), *SHAPE)
    saves = flowlin.SaveAt(
        ts=jnp.linspace(0.0, 10.0, 6), diagnostics=("loss", "distance_to_min_norm")
    )

    def one(key, h, scale):
        init = flowlin.init.wishart(key, problem, h, scale / jnp.sqrt(h), scale / jnp.sqrt(h))
        return flowlin.gradient_flow(
            init, problem, 10.0, saveat=saves, method=flowlin.Gram(), rtol=1e-12, atol=1e-14
        )

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def sweep(keys, hs, scales):
        return jax.vmap(one)(keys, hs, scales)

    hs = jnp.array([1, 4, 10, 1_000, 10**6, 10**9], dtype=float)
    scales = jnp.array([0.3, 1.0, 2.0, 0.5, 1.0, 1.5])
    keys = jax.random.split(getkey(), 6)
    batch = sweep(keys, hs, scales)
    sweep(jax.random.split(getkey(), 6), 2 * hs, 0.5 * scales)  # new values: no retrace
    assert bool(jnp.all(batch.succeeded))
    for i in range(6):
        single = one(keys[i], hs[i], scales[i])
        for name in saves.diagnostics:
            np.testing.assert_allclose(
                getattr(batch, name)[i], getattr(single, name), rtol=VMAP_RTOL
            )


# -- bad inputs -----------------------------------------------------------------------------


def test_bad_inputs_name_the_argument(getkey):
    problem = random_problem(getkey(), *SHAPE)  # r + m = 5
    net = gaussian_net(getkey(), SHAPE[1], SHAPE[2], 7, 0.5, 0.5)
    init = flowlin.init.gram_init(net, problem)
    with pytest.raises(
        ValueError, match=r"gradient_flow.*GramInit.*method=flowlin\.Gram\(\).*FullWeights\(\)"
    ):
        flowlin.gradient_flow(init, problem, 1.0)

    # eqx.tree_at swaps fields without the (shape-checked) constructor: a user's GramInit
    # built outside the type checker can hold anything.
    def with_(name, value):
        return eqx.tree_at(lambda g: getattr(g, name), init, value)

    with pytest.raises(ValueError, match=r"net\.Q .*shape \(r\+m, r\+m\) = \(5, 5\).*\(4, 4\)"):
        flowlin.gradient_flow(with_("Q", init.Q[:4, :4]), problem, 1.0, method=flowlin.Gram())
    with pytest.raises(ValueError, match=r"net\.K .*\(5, 5\).*\(5, 3\)"):
        flowlin.gradient_flow(with_("K", init.K[:, :3]), problem, 1.0, method=flowlin.Gram())
    with pytest.raises(ValueError, match=r"net\.Q is batched"):
        flowlin.gradient_flow(with_("Q", init.Q[None]), problem, 1.0, method=flowlin.Gram())
    with pytest.raises(ValueError, match=r"net\.K contains 1 non-finite"):
        flowlin.gradient_flow(
            with_("K", init.K.at[0, 0].set(jnp.nan)), problem, 1.0, method=flowlin.Gram()
        )
    with pytest.raises(TypeError, match=r"net\.Q .*floating-point array"):
        flowlin.gradient_flow(with_("Q", np.eye(5, dtype=int)), problem, 1.0, method=flowlin.Gram())
    with pytest.raises(ValueError, match=r"reconstruct=True needs the initial weights"):
        flowlin.gradient_flow(init, problem, 1.0, method=flowlin.Gram(reconstruct=True))
    with pytest.raises(ValueError, match=r"SaveAt\(networks=True\) needs the initial weights"):
        flowlin.gradient_flow(
            init, problem, 1.0, method=flowlin.Gram(), saveat=flowlin.SaveAt(networks=True)
        )
    # (beartype's annotation check under the test hook, flowlin's own message without it)
    with pytest.raises(TypeError, match=r"reconstruct must be a bool|parameter 'reconstruct'"):
        flowlin.Gram(reconstruct="yes")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'reconstruct'"):
        flowlin.gradient_flow(net, problem, 1.0, reconstruct=False)  # an option of Gram now
    # (beartype's annotation check under the test hook, flowlin's own message without it)
    with pytest.raises(TypeError, match=r"method must be a flow method object|parameter 'method'"):
        flowlin.gradient_flow(net, problem, 1.0, method="gram")


def test_gram_init_of_small_scale_data_keeps_its_row_space_part():
    """X of scale a = 1e-8 and weights of 1 are the unit-scale problem with weights ×√a and
    time ×a (the product flow is invariant; distances scale by 1/a). From a `GramInit` the
    gram method dropped every Σ^½U1 direction of Q0 (~1e-16 against V's ~1) as round-off:
    final distance 28975 against 28704 by the full solver, and `init.wishart` draws off by up
    to 50% from the unit-scale draws of the same key, all `successful`."""
    rng = np.random.default_rng(1)
    a, t1 = 1e-8, 1e11
    Xn, Y = rng.standard_normal((4, 10)), rng.standard_normal((4, 1))
    small, unit = flowlin.Problem(a * Xn, Y), flowlin.Problem(Xn, Y)
    net = flowlin.init.gaussian(jax.random.key(3), 10, 1, 12, 1.0, 1.0)
    full = flowlin.gradient_flow(net, small, t1, method=flowlin.FullWeights())
    from_gram = flowlin.gradient_flow(
        flowlin.init.gram_init(net, small), small, t1, method=flowlin.Gram()
    )
    d_full = float(full.final_values["distance_to_min_norm"])
    np.testing.assert_allclose(
        float(from_gram.final_values["distance_to_min_norm"]), d_full, rtol=1e-6
    )
    for seed in range(2):  # the same key's draws on both scales
        key = jax.random.key(10 + seed)
        gram = flowlin.Gram()
        runs = [
            flowlin.gradient_flow(flowlin.init.wishart(key, p, 12, s, s), p, t, method=gram)
            for p, s, t in ((small, 1.0, t1), (unit, np.sqrt(a), a * t1))
        ]
        assert all(bool(r.converged) for r in runs)
        d_small, d_unit = (float(r.final_values["distance_to_min_norm"]) for r in runs)
        np.testing.assert_allclose(d_small, d_unit / a, rtol=1e-6)
