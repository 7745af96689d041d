"""flowlin: exact training dynamics of overparametrized linear networks, in JAX.

Implements Min, Tarmoun, Vidal & Mallada, "On the Explicit Role of Initialization on the
Convergence and Implicit Bias of Overparametrized Linear Networks" (ICML 2021) and its extended
version: the factorized network and its initializations, the exact gradient flow (diffrax) and
gradient descent (optax), and every bound of the papers as a function.

The public names below are imported on first use (PEP 562 module `__getattr__`): `import
flowlin` costs a few milliseconds and does not import JAX, so the command line (`flowlin
--help`, `--version`) answers at once; `flowlin.gradient_flow` or `from flowlin import
gradient_flow` imports what that name needs. The `TYPE_CHECKING` block is the same list as
ordinary imports, for type checkers and editors.
"""

import importlib
import importlib.metadata
import os
from typing import TYPE_CHECKING


def _size_cpu_thread_pool() -> None:
    """Give XLA's CPU thread pool room for jaxlib's LAPACK kernels, unless told otherwise.

    jaxlib (seen: 0.9.2, 0.10.2) runs an eigh/svd/qr kernel by queueing pieces of it on the
    same intra-op thread pool that executes the devices' programs, then blocking until they
    finish. The pool has max(cores, devices) threads, so with as many programs in flight as
    threads (e.g. 4 forced host devices on 2 cores, a sharded sweep) every thread waits and
    the process hangs forever. A larger pool leaves threads free for the queued pieces. The
    pool is sized once, when JAX creates its CPU client, from `PJRT_NPROC`: set it yourself
    (any value) to opt out; it has no effect if JAX's CPU backend already exists.
    """
    if "PJRT_NPROC" not in os.environ and "NPROC" not in os.environ:
        os.environ["PJRT_NPROC"] = str(max(16, (os.cpu_count() or 1) + 8))


_size_cpu_thread_pool()

#: Public name → the module that defines it (imported on first access).
_LAZY: dict[str, str] = {
    "CHECK_KEYS": "._bounds",
    "DEEP_CHECK_KEYS": "._deep_bounds",
    "BoundCheck": "._bound_check",
    "check_bounds": "._bounds",
    "enable_compilation_cache": "._cache",
    "enable_fast_cpu_compiles": "._fast_compile",
    "gradient_descent": "._descent",
    "DEFAULT_MAX_STEPS": "._flow",
    "DEFAULT_TOLERANCES": "._flow",
    "gradient_flow": "._flow",
    "GramInit": "._gram_init",
    "AbstractFlowMethod": "._method",
    "FullWeights": "._method",
    "Gram": "._method",
    "LinearNetwork": "._network",
    "native_status": "._native",
    "use_native": "._native",
    "DeepLinearNetwork": "._deep_network",
    "Problem": "._problem",
    "RESULTS": "._results",
    "DIAGNOSTICS": "._saveat",
    "SaveAt": "._saveat",
    "BoundsSummary": "._summary",
    "summarize_bounds": "._summary",
    "AbstractExecutor": "._sweep",
    "LocalExecutor": "._sweep",
    "RayExecutor": "._sweep",
    "open_sweep": "._sweep",
    "sweep": "._sweep",
    "Trajectory": "._trajectory",
}
#: Public submodules (imported on first access as attributes too).
_SUBMODULES = ("exact", "init", "problems", "theory")

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from . import exact as exact, init as init, problems as problems, theory as theory
    from ._bound_check import BoundCheck as BoundCheck
    from ._bounds import CHECK_KEYS as CHECK_KEYS, check_bounds as check_bounds
    from ._cache import enable_compilation_cache as enable_compilation_cache
    from ._deep_bounds import DEEP_CHECK_KEYS as DEEP_CHECK_KEYS
    from ._deep_network import DeepLinearNetwork as DeepLinearNetwork
    from ._descent import gradient_descent as gradient_descent
    from ._fast_compile import enable_fast_cpu_compiles as enable_fast_cpu_compiles
    from ._flow import (
        DEFAULT_MAX_STEPS as DEFAULT_MAX_STEPS,
        DEFAULT_TOLERANCES as DEFAULT_TOLERANCES,
        gradient_flow as gradient_flow,
    )
    from ._gram_init import GramInit as GramInit
    from ._method import (
        AbstractFlowMethod as AbstractFlowMethod,
        FullWeights as FullWeights,
        Gram as Gram,
    )
    from ._native import native_status as native_status, use_native as use_native
    from ._network import LinearNetwork as LinearNetwork
    from ._problem import Problem as Problem
    from ._results import RESULTS as RESULTS
    from ._saveat import DIAGNOSTICS as DIAGNOSTICS, SaveAt as SaveAt
    from ._summary import BoundsSummary as BoundsSummary, summarize_bounds as summarize_bounds
    from ._sweep import (
        AbstractExecutor as AbstractExecutor,
        LocalExecutor as LocalExecutor,
        RayExecutor as RayExecutor,
        open_sweep as open_sweep,
        sweep as sweep,
    )
    from ._trajectory import Trajectory as Trajectory


try:
    __version__ = importlib.metadata.version("flowlin")
except importlib.metadata.PackageNotFoundError:  # running from a source checkout
    __version__ = "0.1.0"
