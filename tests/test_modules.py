"""The Module conventions: abstract-or-final, invariants in `__check_init__`, method objects,
status codes read through public API only."""

import importlib
import inspect
import pkgutil

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowlin
from flowlin._method import METHOD_NAMES, method_from_name
from flowlin._results import STATUS_NAMES, status_code, status_names


def _flowlin_modules():
    """Every `eqx.Module` class defined in the installed `flowlin` core (not the
    applications, which import matplotlib)."""
    found = {}
    for info in pkgutil.walk_packages(flowlin.__path__, "flowlin."):
        if info.name.startswith(("flowlin.reproduce", "flowlin._cli", "flowlin.__main__")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional dependency (ray) that is not installed
            continue
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, eqx.Module) and cls.__module__.startswith("flowlin"):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def test_every_module_is_abstract_or_final():
    """equinox's rule: a Module that is subclassed is abstract (`Abstract*`, with abstract
    methods), and a concrete Module is never subclassed."""
    modules = _flowlin_modules()
    assert "flowlin._method._gram.Gram" in modules  # the walk does find the methods
    for name, cls in modules.items():
        parents = [b for b in cls.__mro__[1:] if b in modules.values()]
        for parent in parents:
            assert parent.__name__.startswith("Abstract"), f"{name} subclasses concrete {parent}"
            assert inspect.isabstract(parent), f"{parent} is named Abstract* but has no abstract"


def test_methods_by_name_and_their_labels():
    assert isinstance(method_from_name("gram"), flowlin.Gram)
    assert isinstance(method_from_name("full"), flowlin.FullWeights)
    for name, cls in METHOD_NAMES.items():
        assert cls.name == name  # the label stored with results is the TOML/CLI spelling
    with pytest.raises(ValueError, match=r"unknown flow method 'euler'"):
        method_from_name("euler")
    with pytest.raises(TypeError):  # abstract: not instantiable
        flowlin.AbstractFlowMethod()


def test_status_codes_cover_every_result():
    """flowlin's own numbering names every item of RESULTS, one code each, and the code of an
    item read back through `==` is its position (batched too, under jit)."""
    assert len(STATUS_NAMES) == len(flowlin.RESULTS) == len(set(STATUS_NAMES))
    items = [getattr(flowlin.RESULTS, name) for name in STATUS_NAMES]
    for code, item in enumerate(items):
        assert int(status_code(item)) == code
        assert status_names()[code] == STATUS_NAMES[code]
    pick = lambda p: flowlin.RESULTS.where(p, flowlin.RESULTS.diverged, flowlin.RESULTS.successful)
    batch = jax.vmap(pick)(jnp.array([True, False, True]))
    codes = jax.jit(status_code)(batch)
    expected = [STATUS_NAMES.index(n) for n in ("diverged", "successful", "diverged")]
    np.testing.assert_array_equal(codes, expected)


def test_network_invariants_in_check_init():
    call = r"LinearNetwork\(W1=\.\.\., W2=\.\.\.\)"
    with pytest.raises(ValueError, match=call + r".*hidden widths disagree"):
        flowlin.LinearNetwork(np.ones((3, 4)), np.ones((2, 5)))
    W1 = np.ones((3, 4))
    W1[0, 0] = np.nan
    with pytest.raises(ValueError, match=call + r".*W1 contains 1 non-finite"):
        flowlin.LinearNetwork(W1, np.ones((2, 3)))
    # Built inside jit/vmap the checks see tracers: shapes are still checked, values are not.
    net = jax.vmap(flowlin.LinearNetwork)(jnp.ones((5, 3, 4)), jnp.ones((5, 2, 3)))
    assert net.W1.shape == (5, 3, 4)


def test_gram_init_invariants_in_check_init():
    call = r"flowlin\.GramInit\(Q=\.\.\., K=\.\.\.\)`"
    eye = np.eye(4)
    with pytest.raises(ValueError, match=call + r": Q must be a square matrix, got shape \(4, 3\)"):
        flowlin.GramInit(Q=eye[:, :3], K=eye)
    with pytest.raises(ValueError, match=call + r": Q and K must have one shape"):
        flowlin.GramInit(Q=eye, K=eye[:3, :3])
    with pytest.raises(ValueError, match=call + r": K must be symmetric"):
        flowlin.GramInit(Q=eye, K=eye + np.triu(np.ones((4, 4)), 1))
    with pytest.raises(ValueError, match=call + r": Q contains 1 non-finite"):
        flowlin.GramInit(Q=eye + np.diag([np.inf, 0, 0, 0]), K=eye)
    # A Gram matrix from weights is symmetric to round-off, in float32 too.
    Z = jax.random.normal(jax.random.key(0), (7, 300), dtype=jnp.float32)
    flowlin.GramInit(Q=Z @ Z.T, K=(Z @ Z.T) * 0.5)


def test_saveat_invariants_in_check_init():
    with pytest.raises(ValueError, match=r"SaveAt\(diagnostics=\.\.\.\)`: unknown.*'losss'"):
        flowlin.SaveAt(diagnostics=("losss",))
    with pytest.raises(ValueError, match=r"SaveAt\(ts=\.\.\.\)`: ts must be a non-empty 1-D"):
        flowlin.SaveAt(ts=[])
    assert flowlin.SaveAt(diagnostics="loss").diagnostics == ("loss",)
