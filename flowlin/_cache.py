"""JAX's persistent compilation cache: compiled programs kept on disk across processes.

Every new Python process (a script, a notebook kernel, each `flowlin` command) otherwise
compiles flowlin's solvers again: seconds per entry point on a CPU, most of a first call. With
the cache on, XLA's compiled executables are written to a folder and the next process with the
same program, JAX version and machine loads them instead (tracing still runs, compilation
does not).

Two things stood in the way:

- JAX never writes a program that contains a host callback, and diffrax's `diffeqsolve`
  checks its traced arguments (`saveat.ts` inside `[t0, t1]`, the sign of `dt0`) with
  `equinox.internal.error_if`, which compiles to one in equinox's default error mode. flowlin
  checks those arguments itself (by name before the solve, or inside it when they are traced)
  and compiles those three checks of diffrax's out of its own solves
  (`flowlin/_method/_checks.py`); equinox's process-wide error mode is not touched.
- jaxlib 0.9–0.10 logs ~30 lines of `cpu_aot_loader` errors for every entry it loads on a
  CPU (it mistakes LLVM tuning flags for missing CPU features; jax-ml/jax#38445), although
  the entry loads and runs. Those messages are silenced; to keep a cache written on one
  machine from ever being loaded on another with other CPU features (where the warning would
  be real), the default folder is per CPU model and feature set.

The `flowlin` command line turns the cache on for itself (opt out with
`FLOWLIN_COMPILATION_CACHE=0`). Library code never changes global configuration on import: a
script or notebook opts in with one call, `flowlin.enable_compilation_cache()`.
"""

import hashlib
import os
import pathlib


#: The environment variable that chooses the cache folder, or turns the cache off with one of
#: `OFF_VALUES` (read by `enable_compilation_cache` when it is given no `path`).
ENV_VAR = "FLOWLIN_COMPILATION_CACHE"
OFF_VALUES = frozenset({"0", "off", "false", "no", ""})
#: Programs whose compilation took less than this are not written. flowlin's solvers take
#: 0.5–10 s to compile on a CPU; below ~0.1 s, reading an entry back costs about as much as
#: compiling it, and such entries would fill the folder with the many tiny programs JAX compiles
#: for eager operations.
MIN_COMPILE_SECONDS = 0.1


def _machine_tag() -> str:
    """A short hash of the CPU model and feature flags (Linux `/proc/cpuinfo`; else the
    platform's processor string): compiled CPU code is only valid where those match."""
    import platform

    text = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        text += "".join(sorted(set(lines)))
    except OSError:
        pass
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def machine_cache_dir(kind: str) -> pathlib.Path:
    """`$XDG_CACHE_HOME/flowlin/<kind>/<machine>` (default `~/.cache/flowlin/...`),
    `<machine>` a hash of the CPU model and features: for what is only valid on this machine
    (compiled programs, `kind="jax"`; flowlin's native kernels, `kind="native"`)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "flowlin" / kind / _machine_tag()


def default_cache_dir() -> pathlib.Path:
    """`$XDG_CACHE_HOME/flowlin/jax/<machine>` (default `~/.cache/flowlin/jax/<machine>`),
    `<machine>` a hash of the CPU model and features."""
    return machine_cache_dir("jax")


def _quiet_cpu_loader() -> None:
    """Silence jaxlib's C++ errors below FATAL (the spurious `cpu_aot_loader` messages)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # if jaxlib is not loaded yet
    import jax

    # Sets jaxlib's C++ log threshold now (and JAX's own Python loggers to CRITICAL).
    jax.config.update("jax_logging_level", "CRITICAL")


def enable_compilation_cache(
    path: str | os.PathLike | None = None, *, min_compile_seconds: float = MIN_COMPILE_SECONDS
) -> pathlib.Path | None:
    r"""Turn on JAX's persistent compilation cache, so later processes skip compiling flowlin.

    For this process: sets JAX's `jax_compilation_cache_dir` to `path`, and silences jaxlib's
    C++ error log and JAX's Python loggers below CRITICAL, because jaxlib 0.9–0.10 logs
    spurious errors for every entry it loads on a CPU (module docstring). Equinox's error mode
    is left as it is: flowlin's solves compile without host callbacks in any mode, so they
    are cached. (Not cached: a user's own diffrax solves, whose argument checks are callbacks
    in equinox's default mode, and gradients taken with `diffrax.BacksolveAdjoint`, whose
    backward solve diffrax traces outside flowlin's solve.)

    Without `path`: the folder named by the environment variable `FLOWLIN_COMPILATION_CACHE`
    if set (the values `0`, `off`, `false`, `no` or empty turn the cache off: nothing is
    changed and `None` is returned), else JAX's own `JAX_COMPILATION_CACHE_DIR` if set, else
    `~/.cache/flowlin/jax/<machine>` (under `$XDG_CACHE_HOME` if set; `<machine>` a hash of
    the CPU model and features). Entries are keyed by the program, the JAX/jaxlib version and
    the device, so a stale entry is never used; the folder can be deleted at any time.

    Call it once, before the first compilation (JAX opens the cache folder when it first
    compiles, and keeps that folder for the rest of the process). The `flowlin` command line
    calls it for you.

    **Arguments:**

    - `path`: the cache folder (created if missing).
    - `min_compile_seconds`: only programs that took at least this long to compile are
      written (default 0.1 s; JAX's own default is 1 s).

    **Returns:** the cache folder, or `None` when `FLOWLIN_COMPILATION_CACHE` turned it off.

    **Example:**

    ```python
    import flowlin
    flowlin.enable_compilation_cache()   # before the first flowlin call
    ```
    """
    call = "flowlin.enable_compilation_cache(...)"
    if path is None:
        env = os.environ.get(ENV_VAR)
        if env is not None and env.strip().lower() in OFF_VALUES:
            return None
        path = env or os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir()
    if isinstance(min_compile_seconds, bool) or not isinstance(min_compile_seconds, (int, float)):
        raise TypeError(
            f"`{call}`: min_compile_seconds must be a number of seconds, got "
            f"{type(min_compile_seconds).__name__} {min_compile_seconds!r}"
        )
    if not min_compile_seconds >= 0:
        raise ValueError(f"`{call}`: min_compile_seconds must be >= 0, got {min_compile_seconds!r}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"`{call}`: path must be a folder (str or os.PathLike), got {type(path).__name__}"
        )
    folder = pathlib.Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file of that name, no permission, a read-only disk
        raise ValueError(
            f"`{call}`: path={str(path)!r} cannot be the cache folder ({e.strerror or e})"
        ) from None
    _quiet_cpu_loader()
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
