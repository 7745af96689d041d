"""flowlin: exact training dynamics of overparametrized linear networks, in JAX.

Implements Min, Tarmoun, Vidal & Mallada, "On the Explicit Role of Initialization on the
Convergence and Implicit Bias of Overparametrized Linear Networks" (ICML 2021) and its extended
version: the factorized network and its initializations, the exact gradient flow (diffrax) and
gradient descent (optax), and every bound of the papers as a function.
"""

import importlib.metadata

from . import exact as exact, init as init, problems as problems, theory as theory
from ._bounds import (
    CHECK_KEYS as CHECK_KEYS,
    BoundCheck as BoundCheck,
    check_bounds as check_bounds,
)
from ._descent import gradient_descent as gradient_descent
from ._flow import (
    DEFAULT_MAX_STEPS as DEFAULT_MAX_STEPS,
    DEFAULT_TOLERANCES as DEFAULT_TOLERANCES,
    gradient_flow as gradient_flow,
)
from ._gram_init import GramInit as GramInit
from ._network import LinearNetwork as LinearNetwork
from ._problem import Problem as Problem
from ._reproduce import reproduce as reproduce
from ._results import RESULTS as RESULTS
from ._saveat import DIAGNOSTICS as DIAGNOSTICS, SaveAt as SaveAt
from ._store import open_sweep as open_sweep
from ._summary import BoundsSummary as BoundsSummary, summarize_bounds as summarize_bounds
from ._sweep import sweep as sweep
from ._trajectory import Trajectory as Trajectory


try:
    __version__ = importlib.metadata.version("flowlin")
except importlib.metadata.PackageNotFoundError:  # running from a source checkout
    __version__ = "0.1.0"
