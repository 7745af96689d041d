"""Property tests: no bound of theory.md §2 is ever violated on random instances.

Each shape group draws `INSTANCES_PER_GROUP` random problems (data and targets) and Gaussian
initializations with random layer scales, solves all of them with one jitted and vmapped
gradient flow (compiled once per group: compilation, not solving, is most of the ~15 s a group
takes on 2 CPU cores), and checks every bound with `flowlin.check_bounds` at every saved time.
The groups cover whitened and non-whitened X, r < n (L* > 0), m = 1 and m > 1, r = m, h < r,
h < m, h < r + m, h >= r + m, and a wide N(0, 1/h) initialization above ICML Lemma 1's h0 (so
the Lemma 1 and Theorem 2 checks apply). 6 groups x 40 = 240 instances.

The random data are drawn with NumPy outside `jit`: under `vmap`, every `jax.random.normal`
call site costs seconds of float64 compile time on CPU, which would dominate the test.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin


INSTANCES_PER_GROUP = 40
#: Saved times per run (plus the end of the run, which check_bounds appends).
NUM_SAVES = 41
#: Each run lasts `DECAYS / rate_imbalance` (the time ICML Theorem 1 needs to divide the excess
#: loss by e^DECAYS), clipped to [T_MIN, T_MAX]: long enough to reach the late-time regime, short
#: enough that no instance sits on a plateau for thousands of steps (a vmapped solve runs in
#: lockstep with its slowest member).
DECAYS, T_MIN, T_MAX = 25.0, 0.5, 40.0
#: Layer scales are log-uniform in this range (balanced, unbalanced both ways, small inits).
SCALE_RANGE = (0.05, 1.0)
#: ICML Lemma 1 / Theorem 2 for the wide group: alpha = 1/2 (variance 1/h), delta = 0.05.
ALPHA, DELTA = 0.5, 0.05

# (name, n, D, m, h, r, kind): kind is the distribution of X and the init (see `_draw`).
GROUPS = [
    ("whitened_wide", 4, 10, 2, 12, 4, "whitened"),  # h >= r + m
    ("gaussian_narrow", 5, 9, 3, 4, 5, "gaussian"),  # m > 1, h < r, h < r + m
    ("spread_rank_deficient", 6, 11, 1, 3, 4, "spread"),  # r < n (L* > 0), h < r
    ("gaussian_many_outputs", 3, 7, 4, 2, 3, "gaussian"),  # m > r, h < m
    ("spread_square", 5, 9, 2, 3, 2, "spread"),  # r = m < n, r <= h < r + m
    ("paper_wide", 4, 6, 1, 400, 4, "paper"),  # whitened, N(0, 1/h), h > h0 (ICML Lemma 1)
]


def _draw(rng, n, D, m, h, r, kind, count):
    """`count` random (X, Y, W1, W2) as stacked NumPy arrays."""
    if kind in ("whitened", "paper"):  # flowlin.problems.whitened: all singular values 1
        A, _, Bt = np.linalg.svd(rng.normal(size=(count, n, D)), full_matrices=False)
        X = A @ Bt
    elif kind == "gaussian":  # flowlin.problems.gaussian: entries N(0, 1/D)
        X = rng.normal(size=(count, n, D)) / np.sqrt(D)
    else:  # "spread": rank r <= n, singular values log-uniform in [0.3, 3]
        A = np.linalg.qr(rng.normal(size=(count, n, r)))[0]
        B = np.linalg.qr(rng.normal(size=(count, D, r)))[0]
        s = np.exp(rng.uniform(np.log(0.3), np.log(3.0), size=(count, 1, r)))
        X = (A * s) @ np.swapaxes(B, 1, 2)
    Y = rng.normal(size=(count, n, m))
    if kind == "paper":  # flowlin.init.paper: entries N(0, h^{-2 alpha})
        std1 = std2 = np.full((count, 1, 1), h**-ALPHA)
    else:
        std1, std2 = np.exp(rng.uniform(*np.log(SCALE_RANGE), size=(2, count, 1, 1)))
    W1 = std1 * rng.normal(size=(count, h, D))
    W2 = std2 * rng.normal(size=(count, m, h))
    return X, Y, W1, W2


@eqx.filter_jit
def _run_group(X, Y, W1, W2, r, alpha):
    @eqx.filter_vmap
    def one(X, Y, W1, W2):
        problem = flowlin.Problem(X, Y, rank=r)  # rank given: X is traced inside vmap
        net = flowlin.LinearNetwork(W1, W2)
        t1 = jnp.clip(DECAYS / flowlin.theory.rate_imbalance(net, problem), T_MIN, T_MAX)
        ts = t1 * jnp.linspace(0.0, 1.0, NUM_SAVES)
        traj = flowlin.gradient_flow(net, problem, t1, saveat=ts)
        checks = flowlin.check_bounds(traj, net, problem, alpha=alpha, delta=DELTA)
        prop1 = flowlin.theory.instantaneous_rate_bound(
            net, problem, product_min_singular_value=traj.product_min_singular_value
        )
        return traj, checks, prop1

    return one(X, Y, W1, W2)


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS, ids=[g[0] for g in GROUPS])
def test_no_bound_violated(group):
    name, n, D, m, h, r, kind = group
    rng = np.random.default_rng(20210514 + GROUPS.index(group))
    X, Y, W1, W2 = _draw(rng, n, D, m, h, r, kind, INSTANCES_PER_GROUP)
    assert np.all(np.linalg.matrix_rank(X) == r), name
    alpha = ALPHA if kind == "paper" else None
    traj, checks, prop1 = _run_group(X, Y, W1, W2, r, alpha)

    assert bool(jnp.all(traj.succeeded)), f"{name}: solves failed: {traj.result}"
    # v2 Proposition 1 read directly at every saved time (independently of check_bounds'
    # bookkeeping): measured rate >= bound, up to the integrator's drift of the conserved
    # imbalance (the bound uses Λ(0); default solver rtol 1e-8 keeps the drift ~1e-10).
    finite = jnp.isfinite(traj.rate)
    assert bool(jnp.all(jnp.where(finite, traj.rate >= prop1 * (1 - 1e-6) - 1e-8, True))), name

    report = {}
    for key, check in checks.items():
        violated = check.applicable & ~check.holds
        assert not bool(jnp.any(violated)), (
            f"{name}: bound {key!r} violated in {int(jnp.sum(violated))} of "
            f"{INSTANCES_PER_GROUP} instances; worst slack {float(jnp.nanmin(check.worst_slack))}"
        )
        assert not bool(jnp.any(check.holds & ~check.applicable)), key
        if bool(jnp.any(check.applicable)):
            report[key] = (int(jnp.sum(check.applicable)), float(jnp.nanmin(check.worst_slack)))
    print(f"\n{name}: bound -> (instances where applicable, worst slack)\n{report}")

    # What must have been exercised in every instance of every group:
    for key in (
        "imbalance_conserved",
        "loss_margin_local",
        "distance_a_posteriori",
        "limit_identity",
    ):
        assert bool(jnp.all(checks[key].applicable)), f"{name}: {key} not always applicable"
    if h >= r + m:  # then c > 0 almost surely
        assert bool(jnp.all(checks["loss_imbalance"].applicable)), name
    if h >= min(r, m):  # then σ_min(U1(0)V(0)ᵀ) > 0 almost surely: Prop 1's bound is > 0
        assert bool(jnp.all(checks["rate_instantaneous"].applicable)), name
    wide = ("distance_wide_network", "lemma1_imbalance", "lemma1_residual", "lemma1_product")
    for key in wide:
        assert bool(jnp.all(checks[key].applicable)) == (kind == "paper"), (name, key)
