"""Test configuration: float64 everywhere (turned on once, here), and runtime shape checks of
every jaxtyping annotation in flowlin with beartype."""

import os


# Several CPU devices for the multi-device tests; must be set before JAX initialises.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# The CLI turns on JAX's persistent compilation cache for its process (flowlin/_cache.py); CLI
# tests run in this process or its children, and compile what they test: keep it off.
os.environ.setdefault("FLOWLIN_COMPILATION_CACHE", "0")

from jaxtyping import install_import_hook  # noqa: E402


with install_import_hook("flowlin", "beartype.beartype"):
    import flowlin  # noqa: E402, F401

# XLA:CPU's faster-compiling emitters (same numbers: tests/test_fast_compile.py) for this
# process and, through XLA_FLAGS, for the notebook kernels and CLI processes it starts.
flowlin.enable_fast_cpu_compiles()

import jax  # noqa: E402
import pytest  # noqa: E402


jax.config.update("jax_enable_x64", True)


#: The slowest test modules (minutes each on 2 cores), longest first. Under `--dist loadfile`
#: (pyproject.toml) a worker takes whole modules in collection order; these go first, so that
#: no long module starts last and runs alone at the end.
SLOWEST_MODULES = (
    "test_theory_law.py",
    "test_notebooks.py",
    "test_sweep.py",
    "test_grad.py",
    "test_reproduce.py",
    "test_reproduce_depth.py",
    "test_theory_random.py",
)


def pytest_collection_modifyitems(config, items):
    first = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: rest in order


@pytest.fixture
def getkey():
    """A fresh key per call, deterministic per test."""
    state = {"i": 0}
    base = jax.random.key(1234)

    def _getkey():
        state["i"] += 1
        return jax.random.fold_in(base, state["i"])

    return _getkey


@pytest.fixture(scope="module", autouse=True)
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module.

    An xdist worker runs ~270 modules' tests in one process; every compiled XLA:CPU program
    keeps its own memory mappings, and a worker that had compiled a few thousand of them was
    seen to die near the end of the suite ("node down: Not properly terminated"; the kernel's
    limit is vm.max_map_count = 65530 mappings per process). Modules do not share compiled
    programs on purpose, so releasing them costs little.
    """
    yield
    jax.clear_caches()
    import gc

    gc.collect()
