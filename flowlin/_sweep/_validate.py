"""Every check of `flowlin.sweep`'s arguments, in one place, each naming the call and the
argument (the lineax style of `flowlin._errors`). Runs before anything is computed.

Internal API: the `Literal` types of the string choices (`InitName`, `SamplingName`,
`DynamicsName`, `StoreFormat`) are shared with the TOML runner (`flowlin.reproduce.config`).

Cross-constraints between settings (Wishart sampling needs the gram method and the flow,
gradient descent needs `lr` and `steps`) are invariants of `SweepSettings` and are checked in
its `__check_init__`; executor options in the executors' own `__check_init__`, and the
executor by `_sweep.as_executor` (above this module: executors import the grid).
"""

import os
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np

from .._errors import (
    check_bool,
    check_count,
    check_int,
    check_key,
    check_number,
    check_positive,
    check_tolerances,
    is_concrete,
)
from .._method import AbstractFlowMethod
from .._problem import Problem


InitName = Literal["paper", "gaussian"]
SamplingName = Literal["weights", "wishart"]
DynamicsName = Literal["flow", "descent"]
StoreFormat = Literal["netcdf", "zarr"]


def check_choice(call: str, name: str, value, choices) -> None:
    """A string choice (a `Literal`-typed argument): a TypeError outside it, as a static type
    checker would report."""
    options = get_args(choices)
    if value not in options:
        raise TypeError(f"`{call}`: {name} must be one of {options}, got {value!r}")


def check_arguments(
    call: str, *, init, sampling, dynamics, method, store_format, depths=None, flags=None,
    descent_only=None, solver=None, store=None, **numbers
):  # fmt: skip
    """Every argument of `flowlin.sweep` that needs no other (the problems, the grid's values
    and the executor are checked where they are read). `flags`: the bool arguments by name;
    `descent_only`: `lr`, `steps`, `averaged` as given."""
    _check_choices(call, init, sampling, dynamics, method, store_format)
    for name, value in (flags or {}).items():
        check_bool(call, name, value)
    flow_only = {k: numbers.get(k) for k in ("rtol", "atol")}
    _check_applicable(call, dynamics, descent_only or {}, solver, flow_only)
    if store is not None and not isinstance(store, (str, os.PathLike)):
        raise TypeError(
            f"`{call}`: store must be a path (str or os.PathLike) or None, got "
            f"{type(store).__name__} {store!r}"
        )
    grid = {k: numbers.pop(k) for k in ("widths", "scales", "configs")}
    _check_numbers(call, dynamics=dynamics, **numbers)
    check_grid_arguments(call, **grid)
    deep = depths is not None or configs_have_depth(grid["configs"])
    if deep:
        check_deep_arguments(call, method=method, sampling=sampling, init=init)
    if depths is not None and grid["configs"] is not None:
        raise ValueError(
            f"`{call}`: give depths=... with widths/scales/seeds, or a 'depth' in each of "
            "configs, not both"
        )


def _check_applicable(call: str, dynamics, descent_only: dict, solver, flow_only=None) -> None:
    """An option the chosen dynamics does not read would be dropped without a word.
    `flow_only`: the solver's `rtol`, `atol` as given."""
    if dynamics == "flow":
        # (`averaged` is a bool, checked before: given when True)
        given = [k for k, v in descent_only.items() if (v if k == "averaged" else v is not None)]
        if given:
            raise ValueError(
                f"`{call}`: {given[0]} is an option of dynamics='descent'; with "
                "dynamics='flow' it would be ignored (pass dynamics='descent', or drop it)"
            )
    else:
        given = [k for k, v in {"solver": solver, **(flow_only or {})}.items() if v is not None]
        if given:
            raise ValueError(
                f"`{call}`: {given[0]} is an option of dynamics='flow' (the ODE solver's); "
                "gradient descent takes steps of size lr and would ignore it"
            )


def check_deep_arguments(call: str, *, method, sampling, init) -> None:
    """What a sweep over depths needs: the weights themselves (docs/theory.md §6: the
    two-layer width reduction behind `flowlin.Gram()` and Wishart sampling does not apply to
    the h×h middle layers)."""
    from .._method import Gram  # (the method classes; _validate only checks their type above)

    if isinstance(method, Gram):
        raise ValueError(
            f"`{call}`: method=flowlin.Gram() cannot run a sweep over depths: the width "
            "reduction it integrates holds for two layers only (docs/theory.md §6); use "
            "method=flowlin.FullWeights() (the default when depths are given)"
        )
    if sampling != "weights":
        raise ValueError(
            f"`{call}`: sampling={sampling!r} cannot run a sweep over depths: Wishart "
            "statistics describe two-layer networks only; use sampling='weights'"
        )
    if init != "paper":
        raise ValueError(
            f"`{call}`: init={init!r} cannot run a sweep over depths yet: depths use "
            "init='paper' (every layer's entries N(0, h^-2α), flowlin.init.deep_gaussian)"
        )


def depth_array(call: str, name: str, depths) -> np.ndarray:
    """The depths of a sweep: integers L >= 2, each once."""
    if isinstance(depths, (bool, str, bytes)) or (
        not isinstance(depths, (int, np.integer, Sequence, np.ndarray))
    ):
        raise TypeError(f"`{call}`: {name} must be a list of integers >= 2, got {depths!r}")
    arr = np.asarray(depths)
    arr = arr[None] if arr.ndim == 0 else arr
    if arr.size and np.issubdtype(arr.dtype, np.integer) and np.any(arr < 2):
        raise ValueError(
            f"`{call}`: every entry of {name} must be >= 2 (a deep linear network has L >= 2 "
            f"layers; L = 2 is the two-layer network), got {np.asarray(depths).tolist()!r}"
        )
    out = int_array(call, name, arr, 2)
    check_unique(call, name, out)
    return out


def _check_choices(call: str, init, sampling, dynamics, method, store_format) -> None:
    check_choice(call, "init", init, InitName)
    check_choice(call, "sampling", sampling, SamplingName)
    check_choice(call, "dynamics", dynamics, DynamicsName)
    if store_format is not None:
        check_choice(call, "store_format", store_format, StoreFormat)
    if not isinstance(method, AbstractFlowMethod):
        raise TypeError(
            f"`{call}`: method must be one of flowlin.Gram() or flowlin.FullWeights() (a "
            f"flowlin.AbstractFlowMethod), got {method!r}"
        )


def _check_numbers(
    call: str, *, dynamics, t1, lr, steps, stop_at_loss, chunk_size, delta, **solve
) -> None:
    """The numbers of one run (through the checks `gradient_flow` and `gradient_descent` use)
    and of the sweep itself. `solve`: `rtol`, `atol`, `max_steps`, `key` where given."""
    if dynamics == "descent":
        # (lr and steps being given at all is an invariant of SweepSettings)
        if lr is not None:
            check_positive(call, "lr", lr, scalar=True)
        if steps is not None:
            check_count(call, "steps", steps)
    else:
        check_positive(call, "t1", t1, scalar=True)
    if stop_at_loss is not None:
        check_positive(call, "stop_at_loss", stop_at_loss, scalar=True)
    check_tolerances(call, solve.get("rtol"), solve.get("atol"))
    if solve.get("max_steps") is not None:
        check_int(call, "max_steps", solve["max_steps"], minimum=1)
    key = solve.get("key")
    if key is not None and not (isinstance(key, (int, np.integer)) and not isinstance(key, bool)):
        check_key(call, "key", key)
    elif key is not None:
        check_int_key(call, int(key))
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or chunk_size < 1
    ):
        raise ValueError(f"`{call}`: chunk_size must be a positive int, got {chunk_size!r}")
    check_number(call, "delta", delta)
    if not (0 < delta < 1):
        raise ValueError(f"`{call}`: delta must be in (0, 1), got {delta!r}")


#: The largest int `key`: JAX keys take 64-bit seeds (`flowlin.reproduce` passes its seed,
#: up to 2**62, plus a few).
MAX_INT_KEY = 2**63 - 1


def check_int_key(call: str, key: int) -> None:
    """An int `key` that names one JAX key: in [0, 2**63 - 1], and below 2**32 without x64 (JAX
    then keeps a seed's low 32 bits only: key 2**32 + 5 would run as key 5)."""
    if not 0 <= key <= MAX_INT_KEY:
        raise ValueError(
            f"`{call}`: key must be in [0, 2**63 - 1] (or a jax.random key), got {key}"
        )
    if key >= 2**32 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"`{call}`: key {key} needs float64 on (without it JAX keys keep only a seed's low 32 "
            "bits, so this sweep would repeat a smaller key's): call "
            "jax.config.update('jax_enable_x64', True) first, or use key < 2**32"
        )


# --------------------------------------------------------------------------------------------
# The grid's arguments
# --------------------------------------------------------------------------------------------
def refuse_traced(call: str, **arguments) -> None:
    """A `TypeError` naming the first argument that holds a JAX tracer: `sweep` plans, compiles
    and stores its chunks on the host, so it cannot run inside `jax.jit`/`vmap`/`grad`."""
    for name, value in arguments.items():
        if any(not is_concrete(leaf) for leaf in jax.tree.leaves(value)):
            raise TypeError(
                f"`{call}`: {name} is traced: sweep is a host-side driver (it plans, compiles "
                "and stores chunks itself) and cannot run inside jax.jit/vmap/grad; call it "
                "outside them (for a transformed run use flowlin.gradient_flow)"
            )


def as_problems(call: str, problems) -> list[Problem]:
    if isinstance(problems, Problem):
        problems = [problems]
    problems = list(problems) if isinstance(problems, Sequence) else None
    if problems == []:
        raise ValueError(f"`{call}`: problems is an empty list; pass at least one Problem")
    if not problems or not all(isinstance(p, Problem) for p in problems):
        raise TypeError(f"`{call}`: problems must be a flowlin.Problem or a list of them")
    first = problems[0]
    for i, p in enumerate(problems[1:], 1):
        if (p.X.shape, p.Y.shape, p.rank) != (first.X.shape, first.Y.shape, first.rank):
            raise ValueError(
                f"`{call}`: problems[{i}] has X {p.X.shape}, Y {p.Y.shape}, rank {p.rank} but "
                f"problems[0] has X {first.X.shape}, Y {first.Y.shape}, rank {first.rank}; the "
                "problems of one sweep must share shapes and rank"
            )
        if p.dtype != first.dtype:
            raise ValueError(
                f"`{call}`: problems[{i}] is {jnp.dtype(p.dtype).name} but problems[0] is "
                f"{jnp.dtype(first.dtype).name}; the problems of one sweep share one dtype (the "
                "sweep's), so convert them first (e.g. build every problem with the same dtype=)"
            )
    return problems


def scale_pairs(call: str, init: str, scales) -> np.ndarray:
    """The scales as (std1, std2) rows (for `init="paper"`: (alpha, alpha))."""
    if isinstance(scales, (str, bytes)) or np.ndim(scales) == 0:
        raise TypeError(
            f"`{call}`: scales must be a list (one entry per scale of the grid), got "
            f"{type(scales).__name__} {scales!r}; e.g. scales=[0.5]"
        )
    try:
        arr = np.asarray(scales, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(
            f"`{call}`: scales must be a list of numbers or of (std1, std2) pairs, got {scales!r}"
        ) from None
    if arr.ndim == 1:
        arr = np.stack([arr, arr], axis=1)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"`{call}`: scales must be a non-empty list of numbers or of (std1, std2) pairs, got "
            f"shape {np.shape(scales)}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        what = "alpha (init='paper': entries N(0, h^-2α))" if init == "paper" else "std"
        raise ValueError(f"`{call}`: every scale ({what}) must be finite and > 0, got {scales!r}")
    if init == "paper" and not np.all(arr[:, 0] == arr[:, 1]):
        raise ValueError(f"`{call}`: init='paper' takes one exponent alpha per scale, not pairs")
    return arr


def check_unique(call: str, name: str, values) -> None:
    """Refuse repeated entries of a grid axis: a repeated width or seed would be run and counted
    twice in every summary and slope, and label two rows of the dataset alike."""
    arr = np.asarray(values)
    rows = arr.reshape(len(arr), -1)
    _, index, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
    if np.any(counts > 1):
        first = np.asarray(arr[index[counts > 1][0]]).tolist()
        raise ValueError(
            f"`{call}`: {name} has repeated entries ({first!r} appears "
            f"{int(counts[counts > 1][0])} times); each must appear once"
        )


#: Widths, seeds and indices travel to the device as int32: larger ones would wrap around
#: (seed 2**32 would run as seed 0), so they are refused.
INT32_LIMIT = 2**31


def int_array(call: str, name: str, values, minimum: int) -> np.ndarray:
    listed = values if isinstance(values, (list, tuple)) else [values]
    if any(isinstance(v, (bool, np.bool_)) for v in listed):
        raise ValueError(f"`{call}`: {name} must be integers, not booleans, got {values!r}")
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged nesting
        arr = None
    if arr is None or arr.ndim > 1:
        raise ValueError(f"`{call}`: {name} must be a flat list of integers, got {values!r}")
    if arr.ndim == 0:
        arr = arr[None]
    if arr.dtype == bool:
        raise ValueError(f"`{call}`: {name} must be integers, not booleans, got {values!r}")
    if arr.size and np.issubdtype(arr.dtype, np.number) and np.any(np.abs(arr) >= INT32_LIMIT):
        raise ValueError(
            f"`{call}`: every entry of {name} must be below 2**31 (they are 32-bit integers "
            f"on the device), got {values!r}"
        )
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        if arr.size and np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(
                f"`{call}`: {name} must be a non-empty list of integers, got {values!r}"
            )
    if np.any(arr < minimum):
        raise ValueError(f"`{call}`: every entry of {name} must be >= {minimum}, got {values!r}")
    return arr.astype(np.int64)


def seed_array(call: str, seeds) -> np.ndarray:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds > INT32_LIMIT:
            raise ValueError(
                f"`{call}`: seeds={seeds} is more seeds than 32-bit seeds (2**31) can number"
            )
        arr = np.arange(seeds)
    else:
        arr = int_array(call, "seeds", seeds, 0)
    if len(arr) == 0:
        raise ValueError(f"`{call}`: seeds must be >= 1 (or a non-empty list)")
    return arr


def check_grid_arguments(call: str, widths, scales, configs) -> None:
    """Either a grid (`widths` and `scales`) or `configs`, never both."""
    if configs is not None:
        if widths is not None or scales is not None:
            raise ValueError(f"`{call}`: give either configs=... or widths/scales/seeds, not both")
    elif widths is None or scales is None:
        raise ValueError(f"`{call}`: give widths=... and scales=... (or configs=...)")


def configs_have_depth(configs) -> bool:
    """Whether `configs` asks for deep networks (before `check_configs` has checked it)."""
    if isinstance(configs, (Mapping, str, bytes)) or not isinstance(configs, Sequence):
        return False
    return any(isinstance(c, Mapping) and "depth" in c for c in configs)


#: The keys of one of `sweep(configs=...)`'s mappings.
CONFIG_KEYS = ("width", "scale", "seed", "problem", "depth")


def check_configs(call: str, configs: Sequence[Mapping], n_problems: int) -> list[Mapping]:
    if isinstance(configs, (Mapping, str, bytes)) or not isinstance(configs, Sequence):
        raise TypeError(
            f"`{call}`: configs must be a list of mappings (one per run, with keys width, scale, "
            f"seed), got {type(configs).__name__}"
        )
    configs = list(configs)
    if not configs:
        raise ValueError(f"`{call}`: configs is empty")
    for i, c in enumerate(configs):
        if not isinstance(c, Mapping):
            raise TypeError(
                f"`{call}`: configs[{i}] must be a mapping with keys width, scale, seed, got "
                f"{type(c).__name__} {c!r}"
            )
        unknown = sorted(set(c) - set(CONFIG_KEYS), key=str)
        if unknown:
            raise ValueError(
                f"`{call}`: configs[{i}] has unknown key {unknown[0]!r}; the keys are "
                f"{list(CONFIG_KEYS)}"
            )
        missing = {"width", "scale", "seed"} - set(c)
        if missing:
            raise ValueError(f"`{call}`: configs[{i}] lacks field(s) {sorted(missing)}")
    problem = [c.get("problem", 0) for c in configs]
    if np.any(int_array(call, "configs[...]['problem']", problem, 0) >= n_problems):
        raise ValueError(
            f"`{call}`: configs[...]['problem'] must index the {n_problems} problem(s) given"
        )
    deep = ["depth" in c for c in configs]
    if any(deep) and not all(deep):
        i = deep.index(False)
        raise ValueError(
            f"`{call}`: configs[{i}] lacks field 'depth' but other configs give one; give a "
            "depth in every config or in none"
        )
    seen: dict = {}
    for i, c in enumerate(configs):
        scale = np.asarray(c["scale"], dtype=float).reshape(-1)
        label = (c.get("problem", 0), c["width"], *np.broadcast_to(scale, 2).tolist(), c["seed"])
        label += (c.get("depth"),)
        if label in seen:
            raise ValueError(
                f"`{call}`: configs[{i}] repeats configs[{seen[label]}] (same problem, "
                f"{'depth, ' * any(deep)}width, scale and seed); each configuration must "
                "appear once"
            )
        seen[label] = i
    return configs
