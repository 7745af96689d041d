"""float32 matrix products at full precision wherever flowlin computes (`_misc.full_precision`).

On NVIDIA GPUs JAX's default float32 matmul is TF32 (~1e-3 relative error): flowlin's flows,
theory and verdicts would be off by that much. Every float32 product flowlin makes must carry
`precision=HIGHEST`, which a CPU can check: a spy on `dot_general`'s `bind` sees every product,
eager or traced, with its precision. The truth asserted is the precision each product is built
with; its numbers on a GPU are what `benchmarks/gpu_sweep.py` measures.
"""

import inspect
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin
import flowlin.exact
import flowlin.init
import flowlin.problems
import flowlin.theory


F32 = jnp.float32
HIGHEST = jax.lax.Precision.HIGHEST
N, D, M, H = 4, 8, 2, 12


def _is_highest(precision) -> bool:
    parts = precision if isinstance(precision, tuple) else (precision,)
    return precision is not None and all(p == HIGHEST for p in parts)


@pytest.fixture
def products(monkeypatch):
    """Every float32 `dot_general` bound while the test runs: (full precision?, flowlin site)."""
    jax.clear_caches()  # trace again: a cached program binds nothing
    seen = []
    bind = jax.lax.dot_general_p.bind

    def spy(*args, **params):
        if any(getattr(a, "dtype", None) == F32 for a in args):
            frames = [f for f in traceback.extract_stack() if "/flowlin/" in f.filename]
            site = "user code"
            if frames:
                site = f"{frames[-1].filename.rsplit('/flowlin/', 1)[-1]}:{frames[-1].lineno}"
            seen.append((_is_highest(params.get("precision")), site))
        return bind(*args, **params)

    monkeypatch.setattr(jax.lax.dot_general_p, "bind", spy)
    return seen


def _calls():
    """(name, call) pairs over every area of the public API, in float32 and at tiny sizes;
    each makes at least one matrix product."""
    key = jax.random.key
    problem = flowlin.problems.gaussian(key(0), N, D, M, dtype=F32)
    net = flowlin.init.paper(key(1), D=D, m=M, h=H, alpha=0.5, dtype=F32)
    deep = flowlin.init.deep_gaussian(key(2), D, M, (6, 6), alpha=0.5, dtype=F32)
    gram = flowlin.init.gram_init(net, problem)
    ts = jnp.linspace(0.0, 2.0, 5, dtype=F32)
    traj = {}

    def flow(kind):
        if kind not in traj:
            init = {"deep": deep, "gram": net, "full": net}[kind]
            method = flowlin.Gram() if kind == "gram" else flowlin.FullWeights()
            traj[kind] = flowlin.gradient_flow(init, problem, 5.0, method=method)
        return traj[kind]

    def final():
        return flow("full").final_network

    T = flowlin.theory
    return [
        ("problems.gaussian", lambda: flowlin.problems.gaussian(key(0), N, D, M, dtype=F32)),
        ("problems.whitened", lambda: flowlin.problems.whitened(key(0), N, D, M, dtype=F32)),
        ("problems.factorization", lambda: flowlin.problems.factorization(key(0), dtype=F32)),
        ("Problem", lambda: flowlin.Problem(problem.X, problem.Y)),
        ("Problem.loss", lambda: problem.loss(net.product)),
        ("LinearNetwork.product", lambda: net.product),
        ("DeepLinearNetwork.head", lambda: deep.head),
        ("init.balanced_like", lambda: flowlin.init.balanced_like(net, problem)),
        (
            "init.project_to_invariant_set",
            lambda: flowlin.init.project_to_invariant_set(net, problem),
        ),
        ("init.lambda_balanced", lambda: flowlin.init.lambda_balanced(key(3), problem, 3, 0.5)),
        ("init.reduce_width", lambda: flowlin.init.reduce_width(net, problem)),
        ("init.gram_init", lambda: flowlin.init.gram_init(net, problem)),
        ("init.wishart", lambda: flowlin.init.wishart(key(4), problem, H, 0.3, 0.3)),
        (
            "init.deep_balanced",
            lambda: flowlin.init.deep_balanced(key(5), 0.5 * problem.min_norm, (6, 6)),
        ),
        ("gradient_flow full", lambda: flow("full")),
        ("gradient_flow gram", lambda: flow("gram")),
        ("gradient_flow deep", lambda: flow("deep")),
        ("gradient_descent", lambda: flowlin.gradient_descent(net, problem, 0.1, 10)),
        ("check_bounds", lambda: flowlin.check_bounds(flow("full"), net, problem, alpha=0.5)),
        ("check_bounds deep", lambda: flowlin.check_bounds(flow("deep"), deep, problem)),
        ("theory.quantities", lambda: T.quantities(gram, problem, alpha=0.5)),
        ("theory.full_imbalance", lambda: T.full_imbalance(net)),
        ("theory.imbalance", lambda: T.imbalance(net, problem)),
        ("theory.rate_margin", lambda: T.rate_margin(net, problem)),
        ("theory.loss_envelope", lambda: T.loss_envelope(ts, net, problem)),
        (
            "theory.limit_identity",
            lambda: T.limit_identity(flow("full").final_network, net, problem),
        ),
        ("theory.distance_bound", lambda: T.distance_bound(net, problem)),
        (
            "theory.distance_law",
            lambda: T.distance_law(flow("full").final_network, H**-0.5, problem),
        ),
        ("theory.balancedness", lambda: T.balancedness(deep)),
        ("theory.deep_rate", lambda: T.deep_rate(deep, problem)),
        ("exact.lambda_balanced_gram", lambda: _lambda_balanced_gram(problem)),
        (
            "sweep",
            lambda: flowlin.sweep(
                problem, widths=[H], scales=[0.5], seeds=2, t1=5.0, saveat=ts, progress=False
            ),
        ),
    ]


def _lambda_balanced_gram(problem):
    net = flowlin.init.lambda_balanced(jax.random.key(6), problem, 3, 0.5)
    Z0 = jnp.concatenate([problem.row_part(net.W1), net.W2])  # [U1; V]
    return flowlin.exact.lambda_balanced_gram(1.0, Z0, problem.Y_tilde, 0.5)


def test_every_float32_product_is_full_precision(products):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 resolution warnings: not what is tested
        calls = _calls()
        made, low = {}, {}
        for name, call in calls:
            start = len(products)
            jax.block_until_ready(call())
            mine = products[start:]
            made[name] = len(mine)
            low[name] = sorted({site for ok, site in mine if not ok})
    # Caches were cleared when the spy went in: a product not seen here ran a program traced
    # earlier in this test with the same precision (JAX keys its caches on it), so seen too.
    assert sum(made.values()) > 100 and made["sweep"] > 0, made
    assert not any(low.values()), {n: s for n, s in low.items() if s}


def test_gradients_through_backsolve_are_full_precision(products):
    # BacksolveAdjoint traces the vector field again for the backward solve, when jax.grad
    # asks for it, after gradient_flow has returned: the field carries the setting itself.
    import diffrax as dfx

    problem = flowlin.problems.gaussian(jax.random.key(0), N, D, M, dtype=F32)
    net = flowlin.init.paper(jax.random.key(1), D, M, H, 0.5, dtype=F32)

    def final_loss(scale, method):
        scaled = flowlin.LinearNetwork(scale * net.W1, scale * net.W2)
        traj = flowlin.gradient_flow(
            scaled, problem, 1.0, method=method, adjoint=dfx.BacksolveAdjoint(),
            saveat=jnp.asarray([0.0, 1.0], F32),
        )  # fmt: skip
        return traj.final_values["excess_loss"]

    for method in (flowlin.FullWeights(), flowlin.Gram()):
        start = len(products)
        jax.block_until_ready(jax.grad(final_loss)(jnp.asarray(1.0, F32), method))
        mine = products[start:]
        # diffrax's own products (a step times a vector, no contraction) are not flowlin's
        low = sorted({site for ok, site in mine if not ok and site != "user code"})
        assert len(mine) > 0 and not low, (method, low)


def test_the_setting_is_scoped_to_flowlins_calls(products):
    problem = flowlin.problems.gaussian(jax.random.key(0), N, D, M, dtype=F32)
    x = jnp.ones((3, 3), F32)
    _ = x @ x  # the user's own product: JAX's default precision
    assert products[-1] == (False, "user code")
    flowlin.theory.rate_margin(
        flowlin.init.paper(jax.random.key(1), D, M, H, 0.5, dtype=F32), problem
    )
    assert products[-1][0]
    y = jnp.ones((4, 4), F32)  # a new shape: JAX traces the product again (no cached program)
    _ = y @ y  # the user's own product after a flowlin call: still JAX's default
    assert products[-1] == (False, "user code")


def test_every_public_function_that_computes_is_marked():
    # A new public function must be wrapped too (or listed here with why it needs no wrapping).
    exempt = {
        "enable_compilation_cache": "configuration only",
        "enable_fast_cpu_compiles": "configuration only",
        "native_status": "configuration only",
        "use_native": "configuration only",
        "open_sweep": "reads a file",
        "summarize_bounds": "NumPy/SciPy on the host",
    }
    namespaces = [flowlin, flowlin.theory, flowlin.init, flowlin.problems, flowlin.exact]
    missing = []
    for space in namespaces:
        names = flowlin._LAZY if space is flowlin else dir(space)
        for name in names:
            obj = getattr(space, name)
            if name.startswith("_") or not inspect.isfunction(obj):
                continue
            if name in exempt:
                continue
            if not getattr(obj, "full_precision", False):
                missing.append(f"{space.__name__}.{name}")
    assert not missing
    for cls, attrs in [
        (flowlin.Problem, ["__init__", "row_part", "null_part", "phi2", "loss", "error"]),
        (flowlin.LinearNetwork, ["__call__"]),
        (flowlin.DeepLinearNetwork, ["__call__"]),
    ]:
        for attr in attrs:
            assert getattr(inspect.getattr_static(cls, attr), "full_precision", False), attr
    for cls, prop in [
        (flowlin.LinearNetwork, "product"),
        (flowlin.DeepLinearNetwork, "product"),
        (flowlin.DeepLinearNetwork, "head"),
    ]:
        assert getattr(inspect.getattr_static(cls, prop).fget, "full_precision", False), prop


def test_float64_is_unchanged_by_the_setting(products):
    # The wrapper only sets a precision: float64 numbers are bit-for-bit those of the bare code.
    # full_imbalance's two h×D products are its own (no inner wrapped call): the bare function
    # runs them at JAX's default precision, the wrapped one at HIGHEST. (`products` clears
    # JAX's caches, so both are traced and seen by the spy below.)
    net = flowlin.init.paper(jax.random.key(1), D=D, m=M, h=H, alpha=0.5)
    f64 = [jnp.asarray(w, jnp.float64) for w in (net.W1, net.W2)]
    precisions = []
    bind = jax.lax.dot_general_p.bind

    def spy(*args, **params):
        precisions.append(_is_highest(params.get("precision")))
        return bind(*args, **params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jax.lax.dot_general_p, "bind", spy)
        net64 = flowlin.LinearNetwork(*f64)
        bare = flowlin.theory.full_imbalance.__wrapped__(net64)
        wrapped = flowlin.theory.full_imbalance(net64)
    assert False in precisions and True in precisions  # both precisions did run
    np.testing.assert_array_equal(wrapped, bare)
