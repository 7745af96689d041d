"""`flowlin.init.reduce_width`: an exactly equivalent network of width ≤ r + m (theory.md §3)."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest
from helpers_gram import gaussian_net, random_problem, rel_fro

import flowlin


#: Asked of the reduction (issue 5): the reduced network's product after training.
REDUCTION_AGREEMENT = 1e-9
#: Same Q0, K up to round-off of a QR and two products of O(1) matrices.
ROUND_OFF = 1e-12
SHAPE = (6, 12, 2, 4)  # n, D, m, r: r + m = 6, D + m = 14
WIDE = 200


@pytest.fixture
def setup(getkey):
    n, D, m, r = SHAPE
    problem = random_problem(getkey(), n, D, m, r)
    net = gaussian_net(getkey(), D, m, WIDE, 0.2, 0.2)
    return problem, net


def test_widths_and_statistics(setup):
    """Width min(h, r+m) (or min(h, D+m)); the same product, Q0 and K — so the gram solver
    cannot tell the networks apart."""
    problem, net = setup
    n, D, m, r = SHAPE
    small = flowlin.init.reduce_width(net, problem)
    kept = flowlin.init.reduce_width(net, problem, keep_null_space=True)
    assert small.width == r + m and kept.width == D + m
    g = flowlin.init.gram_init(net, problem)
    for other in (small, kept):
        assert rel_fro(other.product, net.product) < ROUND_OFF
        go = flowlin.init.gram_init(other, problem)
        assert rel_fro(go.Q, g.Q) < ROUND_OFF and rel_fro(go.K, g.K) < ROUND_OFF
    # Only keep_null_space keeps every weight-space quantity: ‖W1‖ and the full imbalance
    # W1W1ᵀ - W2ᵀW2 (its nonzero spectrum; W1ᵀW1 and W2W2ᵀ are rotation invariants).
    assert rel_fro(kept.W1.T @ kept.W1, net.W1.T @ net.W1) < ROUND_OFF
    assert rel_fro(kept.W2 @ kept.W2.T, net.W2 @ net.W2.T) < ROUND_OFF
    full_imbalance = jnp.linalg.eigvalsh(net.W1 @ net.W1.T - net.W2.T @ net.W2)
    kept_imbalance = jnp.linalg.eigvalsh(kept.W1 @ kept.W1.T - kept.W2.T @ kept.W2)
    nonzero = jnp.abs(full_imbalance) > 1e-10
    assert int(nonzero.sum()) == D + m
    assert rel_fro(jnp.sort(kept_imbalance)[None], jnp.sort(full_imbalance[nonzero])[None]) < 1e-12
    # The default drops the null-space input weights of units that never move (documented).
    assert float(jnp.sum(small.W1**2)) < float(jnp.sum(net.W1**2)) * 0.9


def test_rank_deficient_and_narrow(getkey):
    """Z0 of rank 1 in width 30: still exact (some kept units carry zero U1, V). A network
    no wider than r + m is returned as is."""
    n, D, m, r = SHAPE
    problem = random_problem(getkey(), n, D, m, r)
    a, b = jax.random.normal(getkey(), (30,)), jax.random.normal(getkey(), (D,))
    c = jax.random.normal(getkey(), (m,))
    net = flowlin.LinearNetwork(jnp.outer(a, b), jnp.outer(c, a))  # every unit along a
    small = flowlin.init.reduce_width(net, problem)
    assert small.width == r + m
    assert rel_fro(small.product, net.product) < ROUND_OFF
    g, gs = flowlin.init.gram_init(net, problem), flowlin.init.gram_init(small, problem)
    assert rel_fro(gs.Q, g.Q) < ROUND_OFF and rel_fro(gs.K, g.K) < ROUND_OFF
    narrow = gaussian_net(getkey(), D, m, r + m, 1.0, 1.0)
    assert flowlin.init.reduce_width(narrow, problem) is narrow


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
def test_gradient_descent_reproduces_the_product(setup, optimizer):
    """GD is equivariant under orthogonal changes of hidden basis (so is momentum): the
    reduced network's iterates have the original's product at every iteration."""
    problem, net = setup
    lr, steps = 0.02, 400
    opt = None if optimizer == "sgd" else optax.sgd(lr, momentum=0.9)
    saves = flowlin.SaveAt(
        ts=jnp.linspace(0.0, lr * steps, 5), networks=True, diagnostics=("excess_loss",)
    )

    def train(net):
        return flowlin.gradient_descent(net, problem, lr, steps, optimizer=opt, saveat=saves)

    original = train(net)
    worst = 0.0
    for reduced in (
        flowlin.init.reduce_width(net, problem),
        flowlin.init.reduce_width(net, problem, keep_null_space=True),
    ):
        other = train(reduced)
        ours = other.networks.W2 @ other.networks.W1
        worst = max(worst, rel_fro(ours, original.networks.W2 @ original.networks.W1))
    print(f"GD ({optimizer}): worst relative product error {worst:.2e}")
    assert worst < REDUCTION_AGREEMENT
    # It trained: the excess loss fell by orders of magnitude.
    assert float(original.excess_loss[-1]) < 1e-3 * float(original.excess_loss[0])


def test_gradient_flow_reproduces_the_product_and_the_weights(setup):
    """Full (weight-space) gradient flow from the original and the reduced network: same
    product; W2W2ᵀ equal; W1ᵀW1 differs by the dropped null-space part, constant in time;
    and with keep_null_space every weight Gram is equal."""
    problem, net = setup
    tight = dict(solver=dfx.Dopri8(), rtol=1e-12, atol=1e-14)
    saves = flowlin.SaveAt(
        ts=jnp.array([0.0, 3.0, 10.0]), networks=True, diagnostics=("excess_loss",)
    )
    original = flowlin.gradient_flow(net, problem, 10.0, saveat=saves, **tight)
    small = flowlin.init.reduce_width(net, problem)
    kept = flowlin.init.reduce_width(net, problem, keep_null_space=True)

    @eqx.filter_jit
    def flows(small, kept):
        return tuple(
            flowlin.gradient_flow(x, problem, 10.0, saveat=saves, **tight) for x in (small, kept)
        )

    small_t, kept_t = flows(small, kept)
    W1, W2 = original.networks.W1, original.networks.W2
    errors = {}
    for name, traj in (("reduced", small_t), ("keep_null_space", kept_t)):
        V1, V2 = traj.networks.W1, traj.networks.W2
        errors[name] = rel_fro(V2 @ V1, W2 @ W1)
        assert errors[name] < REDUCTION_AGREEMENT
        assert rel_fro(V2 @ jnp.swapaxes(V2, 1, 2), W2 @ jnp.swapaxes(W2, 1, 2)) < 1e-9
    print(f"gradient flow: relative product errors {errors}")
    gram = lambda A: jnp.swapaxes(A, 1, 2) @ A  # noqa: E731  (W1ᵀW1 per save)
    dropped = gram(W1) - gram(small_t.networks.W1)
    assert rel_fro(dropped, jnp.broadcast_to(dropped[0], dropped.shape)) < 1e-9
    assert float(jnp.linalg.norm(dropped[0])) > 0.1  # there was something to drop
    assert rel_fro(gram(kept_t.networks.W1), gram(W1)) < 1e-9
    assert float(original.excess_loss[-1]) < 1e-3 * float(original.excess_loss[0])


def test_bad_inputs(setup):
    problem, net = setup
    # (Under the test suite's type checker the annotation catches it first; both messages
    # name the call and the argument.)
    with pytest.raises(TypeError, match=r"reduce_width[\s\S]*keep_null_space"):
        flowlin.init.reduce_width(net, problem, keep_null_space=1)
    other = random_problem(jax.random.key(0), 6, 13, 2, 4)
    with pytest.raises(ValueError, match=r"reduce_width.*12 input features.*D = 13"):
        flowlin.init.reduce_width(net, other)
