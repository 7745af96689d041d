"""`flowlin sweep CONFIG.toml`: a user-defined sweep from a TOML file (docs/sweep-config.md).

The one place where the file's strings become flowlin objects: `[dynamics] method` through
`flowlin._method.method_from_name`, the `[executor]` table through `build_executor`
(`flowlin.LocalExecutor` / `flowlin.RayExecutor`). `validate_config` builds the executor too,
so that every bad configuration is rejected before any output or compute.
"""

import dataclasses
import functools
import pathlib
from typing import Any, get_args

import numpy as np
import xarray as xr

from .. import _dataset as schema, problems
from .._method import METHOD_NAMES, Gram, method_from_name
from .._summary import summarize_bounds
from .._sweep import sweep
from .._sweep._validate import DynamicsName, InitName, SamplingName
from ._config_figures import config_figures
from ._report import (
    bounds_markdown,
    crossing_time,
    draw_or_skip,
    key_values,
    plottable,
    save_netcdf,
    set_aside,
    skipped_markdown,
    sweep_executor,
    sweep_resumably,
    write_text,
)


try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A sweep configuration that cannot be run; the message names the file and the field."""


_NUMBER = (int, float)

#: The schema: section -> key -> (accepted types, default; `...` = required). Documented in
#: docs/sweep-config.md; keep the two in step.
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], Any]]] = {
    "": {"title": ((str,), "flowlin sweep")},
    "problem": {
        "kind": ((str,), ...),
        "n": ((int,), ...),
        "D": ((int,), None),
        "m": ((int,), 1),
        "noise": (_NUMBER, None),  # the library's default for the kind: _check_problem
        "seed": ((int,), 0),
    },
    "init": {
        "kind": ((str,), "paper"),
        "widths": ((list,), ...),
        "scales": ((list,), ...),
        "seeds": ((int, list), 1),
        "sampling": ((str,), "weights"),
        "key": ((int,), 0),
    },
    "dynamics": {
        "kind": ((str,), "flow"),
        "method": ((str,), "gram"),
        "t1": (_NUMBER, None),
        "lr": (_NUMBER, None),
        "steps": ((int,), None),
        "averaged": ((bool,), None),  # descent only; False when not given
        "saves": ((int,), 101),
        "rtol": (_NUMBER, None),
        "atol": (_NUMBER, None),
    },
    "executor": {
        "kind": ((str,), "local"),
        "batch_size": ((int,), None),
        "address": ((str,), None),
        "num_cpus": (_NUMBER, None),
        "num_gpus": (_NUMBER, None),
        "max_retries": ((int,), None),
    },
    "report": {"stop_at_loss": (_NUMBER, None)},
}
#: The string choices; the sweep's own `Literal` types and the method names are the source.
CHOICES = {
    ("problem", "kind"): ("gaussian", "whitened", "factorization"),
    ("init", "kind"): get_args(InitName),
    ("init", "sampling"): get_args(SamplingName),
    ("dynamics", "kind"): get_args(DynamicsName),
    ("dynamics", "method"): tuple(METHOD_NAMES),
    ("executor", "kind"): ("local", "ray"),
}
#: The TOML name of the gram method (the one method that takes Wishart-sampled statistics).
GRAM_NAME = next(name for name, cls in METHOD_NAMES.items() if issubclass(cls, Gram))
#: `[executor]` keys that only one kind of executor takes.
EXECUTOR_KEYS = {
    "local": ("batch_size",),
    "ray": ("address", "num_cpus", "num_gpus", "max_retries"),
}


@dataclasses.dataclass
class SweepConfig:
    """A validated configuration: `values[section][key]` with defaults filled in."""

    path: pathlib.Path
    values: dict

    def __getitem__(self, section: str) -> dict:
        return self.values[section]


def _field(section: str, key: str) -> str:
    return f"[{section}].{key}" if section else key


def _type_names(types) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        bool: "true/false",
    }
    return " or ".join(dict.fromkeys(names[t] for t in types))


def load_config(path) -> SweepConfig:
    """Read and validate a sweep configuration; `ConfigError` names the offending field."""
    path = pathlib.Path(path)
    where = f"`{path}`"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a folder, not a TOML file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (TOML files are UTF-8; {e})") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot be read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    return validate_config(raw, path)


def _check_sections(raw: dict, where: str) -> None:
    for name, value in raw.items():
        if name not in SCHEMA or (name and isinstance(value, dict) != (name in SCHEMA)):
            if not isinstance(value, dict) and name in SCHEMA[""]:
                continue
            raise ConfigError(
                f"{where}: unknown {'section' if isinstance(value, dict) else 'key'} "
                f"{name!r}; sections are {[s for s in SCHEMA if s]}, top-level keys "
                f"{list(SCHEMA[''])}"
            )


def _typed_values(raw: dict, fail) -> dict:
    """Every section's keys: types, choices, required keys, no unknown keys; defaults filled."""
    values: dict = {}
    for section, keys in SCHEMA.items():
        given = raw if section == "" else raw.get(section, {})
        if section and not isinstance(given, dict):
            fail("", section, "must be a table ([section])")
        if section:
            unknown = sorted(set(given) - set(keys))
            if unknown:
                fail(section, unknown[0], f"is not a known key; known: {sorted(keys)}")
        out = {}
        for key, (types, default) in keys.items():
            if key not in given:
                if default is ...:
                    fail(section, key, "is required")
                out[key] = default
                continue
            v = given[key]
            if isinstance(v, bool) and bool not in types:
                fail(section, key, f"must be {_type_names(types)}, got {v!r}")
            if not isinstance(v, types):
                fail(section, key, f"must be {_type_names(types)}, got {v!r}")
            if not _all_finite(v):
                fail(section, key, f"must be finite (no inf or nan), got {v!r}")
            choices = CHOICES.get((section, key))
            if choices and v not in choices:
                fail(section, key, f"must be one of {list(choices)}, got {v!r}")
            out[key] = v
        values[section] = out
    return values


def _all_finite(v) -> bool:
    """No inf or nan in a number or (nested) list of numbers; TOML spells them `inf`, `nan`."""
    if isinstance(v, list):
        return all(_all_finite(x) for x in v)
    return not isinstance(v, float) or bool(np.isfinite(v))


def _check_unique(section: str, key: str, values, fail) -> None:
    """A repeated width, scale or seed would be run and counted twice in every summary."""

    def same(v):  # 1 and 1.0, [1, 2] and [1.0, 2.0] are the same scale
        if isinstance(v, list):
            return tuple(same(x) for x in v)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else repr(v)

    seen = [same(v) for v in values]
    repeated = next((v for v, k in zip(values, seen) if seen.count(k) > 1), None)
    if repeated is not None:
        fail(section, key, f"has repeated entries ({repeated!r}); each must appear once")


#: `noise` when the file does not set it: each kind's own default in `flowlin.problems`
#: (`y_std` for `factorization`).
_DEFAULT_NOISE = {"gaussian": 0.01, "whitened": 0.01, "factorization": 0.1}


def _check_problem(p: dict, fail) -> None:
    if p["noise"] is None and p["kind"] in _DEFAULT_NOISE:
        p["noise"] = _DEFAULT_NOISE[p["kind"]]
    for key in ("n", "m"):
        if p[key] < 1:
            fail("problem", key, f"must be >= 1, got {p[key]}")
    if p["kind"] == "factorization":
        if p["D"] is not None:
            fail("problem", "D", "is not used by kind = 'factorization' (X = I_n, D = n)")
    else:
        if p["D"] is None:
            fail("problem", "D", f"is required for kind = {p['kind']!r}")
        if p["D"] <= p["n"]:
            fail("problem", "D", f"must exceed n (under-determined), got D={p['D']}, n={p['n']}")
    if p["noise"] < 0:
        fail("problem", "noise", f"must be >= 0, got {p['noise']}")
    if p["kind"] == "factorization" and p["noise"] == 0:
        fail("problem", "noise", "must be > 0 for kind = 'factorization' (the std of Y's entries)")


def _check_init(i: dict, d: dict, fail) -> None:
    widths = i["widths"]
    if not widths or not all(
        isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths
    ):
        fail("init", "widths", f"must be a non-empty list of integers >= 1, got {widths!r}")
    scales = i["scales"]
    ok_scalar = all(isinstance(s, _NUMBER) and not isinstance(s, bool) and s > 0 for s in scales)
    ok_pairs = all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, _NUMBER) and x > 0 for x in s)
        for s in scales
    )
    if not scales or not (ok_scalar or (ok_pairs and i["kind"] == "gaussian")):
        fail(
            "init",
            "scales",
            "must be a non-empty list of numbers > 0 (alpha for kind = 'paper', std for "
            f"'gaussian') or, for kind = 'gaussian', of [std1, std2] pairs; got {scales!r}",
        )
    _check_unique("init", "widths", widths, fail)
    _check_unique("init", "scales", scales, fail)
    seeds = i["seeds"]
    if isinstance(seeds, bool) or (
        isinstance(seeds, list) and any(isinstance(s, bool) for s in seeds)
    ):
        fail("init", "seeds", f"must be a count or a list of integers, not booleans: {seeds!r}")
    if isinstance(seeds, list):
        _check_unique("init", "seeds", seeds, fail)
    if isinstance(seeds, int) and seeds < 1:
        fail("init", "seeds", f"must be >= 1 or a list of seeds, got {seeds}")
    if isinstance(seeds, list) and (
        not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds)
    ):
        fail("init", "seeds", f"must be a non-empty list of integers >= 0, got {seeds!r}")
    gram = issubclass(METHOD_NAMES[d["method"]], Gram)
    if i["sampling"] == "wishart" and (d["kind"] != "flow" or not gram):
        fail(
            "init",
            "sampling",
            f"= 'wishart' needs [dynamics] kind = 'flow', method = {GRAM_NAME!r}",
        )


#: The `[dynamics]` keys that only one kind reads: a key of the other kind would be dropped.
DYNAMICS_KEYS = {"flow": ("t1", "rtol", "atol"), "descent": ("lr", "steps", "averaged")}

#: Save times per run: beyond this a sweep's arrays (saves × runs × diagnostics) outgrow memory
#: long before anyone could look at them.
MAX_SAVES = 100_000


def _check_dynamics(d: dict, fail) -> None:
    if d["kind"] == "flow":
        if d["t1"] is None:
            fail("dynamics", "t1", "is required for kind = 'flow'")
        if not d["t1"] > 0:
            fail("dynamics", "t1", f"must be > 0, got {d['t1']}")
    else:
        for key in ("lr", "steps"):
            if d[key] is None:
                fail("dynamics", key, "is required for kind = 'descent'")
        if not d["lr"] > 0:
            fail("dynamics", "lr", f"must be > 0, got {d['lr']}")
        if d["steps"] < 1:
            fail("dynamics", "steps", f"must be >= 1, got {d['steps']}")
    for kind, keys in DYNAMICS_KEYS.items():  # after the kind's own required keys
        for key in keys:
            if kind != d["kind"] and d[key] is not None:
                fail("dynamics", key, f"is an option of kind = {kind!r}, not {d['kind']!r}")
    if d["saves"] < 2:
        fail("dynamics", "saves", f"must be >= 2, got {d['saves']}")
    if d["saves"] > MAX_SAVES:
        fail("dynamics", "saves", f"must be <= {MAX_SAVES} (save times per run), got {d['saves']}")
    for key in ("rtol", "atol"):
        if d[key] is not None and d[key] < 0:
            fail("dynamics", key, f"must be >= 0, got {d[key]}")
    if d["rtol"] == 0 and d["atol"] == 0:
        fail("dynamics", "rtol", "and atol cannot both be 0")


def _check_executor(e: dict, fail) -> None:
    for kind, keys in EXECUTOR_KEYS.items():
        for key in keys:
            if kind != e["kind"] and e[key] is not None:
                fail("executor", key, f"is an option of kind = {kind!r}, not {e['kind']!r}")
    for key, minimum in (("batch_size", 1), ("num_cpus", 0), ("num_gpus", 0), ("max_retries", 0)):
        if e[key] is not None and not e[key] >= minimum:
            fail("executor", key, f"must be >= {minimum}, got {e[key]}")


def _check_executor_builds(cfg: SweepConfig, fail) -> None:
    """Build the executor, so that what its own checks reject (e.g. `num_gpus = 1.5`, an
    empty `address`) is a `ConfigError` naming the `[executor]` field, not an error mid-run."""
    try:
        build_executor(cfg)
    except (TypeError, ValueError) as err:
        # The executors' messages read "`flowlin.XExecutor(...)`: <field> must be ...".
        msg = str(err).split("`: ", 1)[-1]
        e = cfg["executor"]
        given = [k for keys in EXECUTOR_KEYS.values() for k in keys if e[k] is not None]
        key = next((k for k in given if msg.startswith(f"{k} ")), None)
        if key is None:
            fail("executor", "kind", f"= {e['kind']!r}: {msg}")
        else:
            fail("executor", key, msg[len(key) + 1 :])


def validate_config(raw: dict, path="<config>") -> SweepConfig:
    """Validate a parsed TOML mapping against `SCHEMA` (types, choices, ranges, required keys,
    no unknown keys) and fill in defaults."""
    where = f"`{path}`"

    def fail(section, key, msg):
        raise ConfigError(f"{where}: {_field(section, key)} {msg}")

    _check_sections(raw, where)
    values = _typed_values(raw, fail)
    _check_problem(values["problem"], fail)
    _check_init(values["init"], values["dynamics"], fail)
    _check_dynamics(values["dynamics"], fail)
    _check_executor(values["executor"], fail)
    stop = values["report"]["stop_at_loss"]
    if stop is not None and not stop > 0:
        fail("report", "stop_at_loss", f"must be > 0, got {stop}")
    cfg = SweepConfig(pathlib.Path(str(path)), values)
    _check_executor_builds(cfg, fail)
    return cfg


# --------------------------------------------------------------------------------------------
# Strings → objects
# --------------------------------------------------------------------------------------------
def build_problem(cfg: SweepConfig):
    """The `[problem]` table as a `flowlin.Problem`."""
    import jax

    p = cfg["problem"]
    key = jax.random.key(p["seed"])
    if p["kind"] == "factorization":
        return problems.factorization(key, n=p["n"], m=p["m"], y_std=p["noise"])
    make = problems.gaussian if p["kind"] == "gaussian" else problems.whitened
    return make(key, n=p["n"], D=p["D"], m=p["m"], noise=p["noise"])


def build_executor(cfg: SweepConfig):
    """The `[executor]` table as a `flowlin.LocalExecutor` (the reproduction's devices: all
    local accelerators, or one CPU device) or a `flowlin.RayExecutor`."""
    from .. import RayExecutor

    e = cfg["executor"]
    if e["kind"] == "local":
        return sweep_executor(batch_size=e["batch_size"])
    options = {k: e[k] for k in EXECUTOR_KEYS["ray"] if e[k] is not None}
    return RayExecutor(**options)


def sweep_arguments(cfg: SweepConfig, problem) -> tuple[np.ndarray, dict]:
    """The save times and the keyword arguments of the configuration's `flowlin.sweep`."""
    i, d = cfg["init"], cfg["dynamics"]
    flow = d["kind"] == "flow"
    horizon = d["t1"] if flow else d["lr"] * d["steps"] * (2 / problem.n if d["averaged"] else 1)
    ts = np.linspace(0.0, horizon, d["saves"])
    kw = dict(
        init=i["kind"],
        sampling=i["sampling"],
        method=method_from_name(d["method"]),
        dynamics=d["kind"],
        saveat=ts,
        key=i["key"],
        bounds=flow,  # the bounds are theorems about gradient flow
        executor=build_executor(cfg),
    )
    if flow:
        kw.update(t1=d["t1"], rtol=d["rtol"], atol=d["atol"])
    else:
        kw.update(lr=d["lr"], steps=d["steps"], averaged=bool(d["averaged"]))
    return ts, kw


# --------------------------------------------------------------------------------------------
# Running and reporting
# --------------------------------------------------------------------------------------------
def config_markdown(cfg: SweepConfig, ds: xr.Dataset, files: list) -> str:
    """`report.md`: the configuration, the bound verdict, stopping times, the files."""
    lines = [
        f"# {cfg['']['title']}\n",
        f"Configuration `{cfg.path}`: {key_values(cfg, 'problem', 'init', 'dynamics')}.\n",
    ]
    if cfg["dynamics"]["kind"] == "flow":
        lines.append("## Bound checks\n\n" + bounds_markdown(ds))
    else:
        lines.append(
            "Gradient descent: the bounds are theorems about gradient flow; not "
            "checked.\n\n" + summarize_bounds(ds).to_markdown()
        )
    if "stop_time" in ds:
        st = ds.stop_time.mean(schema.SEED)
        lines.append(
            f"\nMean flow time to excess loss {cfg['report']['stop_at_loss']:g} (interpolated "
            f"between saves; NaN: not reached by t1):\n\n```\n{st.to_series().to_string()}\n```\n"
        )
    lines += ["\nFiles: " + ", ".join(f"`{p.name}`" for p in files) + "\n"]
    lines += [f"![{p.name}]({p.name})" for p in files if p.suffix == ".png"]
    return "\n".join(lines) + "\n"


#: Under `out`: the sweep's store (the same command resumes) and the files written at the end
#: from it. When the sweep changed, both are moved to `out/previous-<UTC time>/`, never deleted.
CONFIG_STORE, CONFIG_OUTPUTS = "store", ("report.md", "sweep.nc", "loss.png", "distance.png")


def run_config(cfg: SweepConfig, out, *, progress: bool = True) -> xr.Dataset:
    """Run a validated configuration with `flowlin.sweep` (chunks kept in `out/store/`: run
    again, it computes only what is missing); write `sweep.nc`, PNGs and `report.md` under `out`
    (atomically; degenerate runs left out of the figures, listed). Returns the dataset."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outputs = [out / name for name in CONFIG_OUTPUTS]
    if not (out / CONFIG_STORE).exists():  # files no store vouches for: not this sweep's
        set_aside(outputs, f"{out} has results but no store ({CONFIG_STORE}/) they came from")
    problem = build_problem(cfg)
    i = cfg["init"]
    ts, kw = sweep_arguments(cfg, problem)
    scales = [tuple(s) if isinstance(s, list) else s for s in i["scales"]]
    run = functools.partial(sweep, problem, i["widths"], scales, i["seeds"], **kw)
    command = f"flowlin sweep {cfg.path} --out {out}"
    run = functools.partial(run, progress=progress)
    ds = sweep_resumably(run, out / CONFIG_STORE, command, outputs)
    stop = cfg["report"]["stop_at_loss"]
    if stop is not None:
        ds["stop_time"] = xr.apply_ufunc(
            lambda e: crossing_time(ts, e, stop),
            ds.excess_loss,
            input_core_dims=[[schema.TIME]],
            vectorize=True,
        )
    files: list = []
    save_netcdf(ds, out / "sweep.nc", files)
    shown, skipped = plottable(ds, ("excess_loss", schema.final_var("distance_to_min_norm")))
    draw = functools.partial(config_figures, shown, ts, cfg[""]["title"], out, files)
    draw_or_skip(draw, "the figures", skipped)
    write_text(out / "report.md", config_markdown(cfg, ds, files) + skipped_markdown(skipped))
    return ds
