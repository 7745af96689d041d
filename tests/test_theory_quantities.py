"""`flowlin.theory.quantities` (fixed keys, jit/vmap, one compilation for a sweep) and the
input checks every theory function shares (errors name the call and the argument)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_theory import numpy_net, numpy_problem

import flowlin
from flowlin import theory


def test_errors_name_the_argument(getkey):
    problem = numpy_problem(19, 4, 6, 1)
    net = numpy_net(107, 6, 1, 5, 0.5, 0.5)
    with pytest.raises(ValueError, match=r"wide_network_bound.*alpha must be in \(1/4, 1/2\]"):
        theory.wide_network_bound(100, 0.1, 0.05, problem)
    with pytest.raises(ValueError, match="delta must be in"):
        theory.wide_network_bound(100, 0.5, 1.5, problem)
    with pytest.raises(ValueError, match="delta must be in"):
        theory.quantities(net, problem, delta=0.0)
    with pytest.raises(ValueError, match=r"h must be a whole number >= 1 \(a width\)"):
        theory.wide_network_bound(0, 0.5, 0.05, problem)
    # Wrong types: flowlin's own message, or (tests run with beartype) the annotation check.
    with pytest.raises(TypeError, match="init"):
        theory.rate_imbalance(np.zeros((3, 3)), problem)
    with pytest.raises(TypeError, match="problem"):
        theory.rate_imbalance(net, None)
    with pytest.raises(ValueError, match=r"init.Q and init.K must be \(r\+m\)x\(r\+m\)"):
        theory.rate_imbalance(flowlin.GramInit(Q=jnp.eye(3), K=jnp.eye(3)), problem)
    with pytest.raises(TypeError, match="net"):
        theory.imbalance(flowlin.init.gram_init(net, problem), problem)
    with pytest.raises((ValueError, TypeError), match="theorem"):
        theory.loss_envelope(1.0, net, problem, theorem="lemma")
    other = numpy_net(108, 7, 1, 5, 0.5, 0.5)
    with pytest.raises(ValueError, match="input features"):
        theory.rate_margin(other, problem)


def test_quantities_fixed_keys_jit_vmap(getkey):
    problem = numpy_problem(20, 4, 6, 1)
    keys = set(theory.QUANTITY_KEYS)
    net = numpy_net(5, 6, 1, 400, 400**-0.5, 400**-0.5)  # as flowlin.init.paper(..., alpha=0.5)
    gram = flowlin.init.gram_init(net, problem)
    variants = [
        theory.quantities(net, problem),
        theory.quantities(net, problem, alpha=0.5),
        theory.quantities(gram, problem),
        theory.quantities(gram, problem, width=400, alpha=0.5),
        theory.quantities(net, problem, alpha=0.1),  # outside Theorem 2's range: NaN, no raise
    ]
    for q in variants:
        assert set(q) == keys
        assert all(v.shape == () for v in q.values())
    full, gram_q = variants[1], variants[3]
    for k in keys:  # a network and its GramInit give the same numbers
        np.testing.assert_allclose(full[k], gram_q[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert np.isnan(variants[0]["wide_network_bound"]) and not variants[0]["lemma1_applies"]
    assert np.isnan(variants[2]["width"])
    assert bool(full["theorem2_applies"]) and np.isfinite(full["wide_network_bound"])
    assert np.isnan(variants[4]["width_threshold"]) and not variants[4]["theorem2_applies"]
    # consistent with the individual functions
    np.testing.assert_allclose(full["rate_imbalance"], theory.rate_imbalance(net, problem))
    np.testing.assert_allclose(full["distance_bound"], theory.distance_bound(net, problem))
    np.testing.assert_allclose(
        full["rate_bound_prop1"], theory.instantaneous_rate_bound(net, problem)
    )
    np.testing.assert_allclose(
        full["distance_initial"],
        np.linalg.norm(np.asarray(net.product - problem.min_norm)),
        rtol=1e-10,
    )

    # One compilation for a sweep over widths (zero-padded), alphas and seeds.
    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def sweep(keys, widths, alphas):
        def one(key, h, alpha):
            net = flowlin.init.paper(key, 6, 1, h, alpha, pad_to=64)
            return theory.quantities(net, problem, width=h, alpha=alpha)

        return jax.vmap(one)(keys, widths, alphas)

    widths = jnp.array([8, 16, 32, 64])
    alphas = jnp.array([0.5, 0.4, 0.3, 0.5])
    out = sweep(jax.random.split(getkey(), 4), widths, alphas)
    out2 = sweep(jax.random.split(getkey(), 4), widths + 0, alphas * 1.0)
    assert set(out) == keys and all(v.shape == (4,) for v in out.values())
    assert set(out2) == keys


def test_width_of_a_zero_padded_network():
    """The true width of a zero-padded network gives the unpadded network's quantities; a width
    outside [its nonzero rows, its rows] is not a width it was drawn at, and is refused (its
    wide-network bounds would otherwise read "violated" about a false hypothesis)."""
    problem = numpy_problem(21, 4, 6, 1)
    padded = flowlin.init.paper(jax.random.key(3), 6, 1, 8, 0.5, pad_to=20)
    assert int(np.count_nonzero(np.any(np.asarray(padded.W1) != 0, axis=1))) == 8
    plain = flowlin.LinearNetwork(padded.W1[:8], padded.W2[:, :8])
    got = theory.quantities(padded, problem, width=8, alpha=0.5)
    want = theory.quantities(plain, problem, alpha=0.5)
    for k in theory.QUANTITY_KEYS:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-14, err_msg=k)
    traj = flowlin.gradient_descent(padded, problem, 0.01, 1)
    for width in (7, 21, 10**6):
        with pytest.raises(ValueError, match=rf"width={width} cannot be the true width"):
            theory.quantities(padded, problem, width=width, alpha=0.5)
        with pytest.raises(ValueError, match=rf"width={width} cannot be the true width"):
            flowlin.check_bounds(traj, padded, problem, width=width, alpha=0.5)
