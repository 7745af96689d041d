"""XLA:CPU compile time: most of a first call, of a sweep over several shapes and of each new
process, is XLA compiling flowlin's programs, not running them.

A flowlin solve compiles to a few hundred small fused kernels (diffrax's stages, the
diagnostics at every save time, the bound checks). XLA:CPU's older LLVM emitters generate
their code in 60–70% of the time its newer fusion emitters (the default from jaxlib 0.6) take,
and the programs give the same numbers (bit for bit in the benchmark) and run as fast
(benchmarks/README.md, "Compile time"). `enable_fast_cpu_compiles` selects the older
emitters with the XLA flag `--xla_cpu_use_fusion_emitters=false`.

XLA reads its flags once, when JAX creates its CPU backend (the first computation of the
process), and aborts the process on a flag it does not know: so the flag is only added for
the jaxlib versions known to have it (`KNOWN_JAXLIB`), and only before the backend exists.
The `flowlin` command line turns it on for itself; library code only when called.
"""

import importlib.metadata
import os
import sys
import warnings


#: The XLA flag, and its name (a user's own XLA_FLAGS that mention it win).
FLAG_NAME = "--xla_cpu_use_fusion_emitters"
FLAG = f"{FLAG_NAME}=false"
#: jaxlib versions (major, minor) whose XLA has the flag: checked in the wheels of 0.6.0,
#: 0.7.0, 0.8.0, 0.9.2 and 0.10.2 (absent from 0.4.38 and 0.5.0). Outside this range nothing
#: is changed, since an unknown flag aborts the process.
KNOWN_JAXLIB = ((0, 6), (0, 10))


def _jaxlib_version() -> tuple[int, int] | None:
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def jaxlib_has_flag() -> bool:
    """Whether the installed jaxlib is one of the versions known to have the flag."""
    version = _jaxlib_version()
    return version is not None and KNOWN_JAXLIB[0] <= version <= KNOWN_JAXLIB[1]


def _backend_started() -> bool:
    """Whether JAX has created a backend in this process (then XLA has read its flags)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge  # noqa: PLC0415 - no public "is initialized" query

        return bool(xla_bridge._backends)
    except (ImportError, AttributeError):  # pragma: no cover - a JAX without that internal
        return True


def enable_fast_cpu_compiles() -> bool:
    r"""Make XLA:CPU compile flowlin's programs faster, for this process.

    Adds `--xla_cpu_use_fusion_emitters=false` to the environment variable `XLA_FLAGS`:
    XLA:CPU then generates code for fused kernels with its older LLVM emitters. XLA's own
    compilation of a sweep chunk then takes 60–70% of the time of the newer default emitters;
    a first call, Python's tracing included, is 10–40% shorter. The programs give the same
    numbers (bit for bit in benchmarks/README.md, "Compile time") and run as fast. On a CPU,
    compilation is most of a first call, and all of the cost of each new shape in a sweep.
    It has no effect on GPUs.

    Call it before the first JAX computation: XLA reads its flags once, when JAX starts its
    backend. The `flowlin` command line calls it for itself. Child processes (a Ray worker, a
    notebook kernel started from this process) inherit `XLA_FLAGS`.

    Nothing is changed, and `False` is returned, when:

    - `XLA_FLAGS` already mentions the flag (yours wins);
    - the installed jaxlib is outside the versions known to have the flag (0.6–0.10): XLA
      aborts the process on a flag it does not know;
    - JAX's backend already exists (a warning says so: restart the kernel and call this
      first, or set `XLA_FLAGS` before starting Python).

    **Returns:** whether the flag was added.

    **Example:**

    ```python
    import flowlin
    flowlin.enable_fast_cpu_compiles()   # before the first JAX computation
    ```
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG_NAME in flags:
        return False
    if not jaxlib_has_flag():
        return False
    if _backend_started():
        warnings.warn(
            "flowlin.enable_fast_cpu_compiles() has no effect: JAX has already started its "
            "backend, and XLA reads its flags only then. Call it before the first JAX "
            f"computation (restart the kernel), or set XLA_FLAGS={FLAG} before starting "
            "Python.",
            stacklevel=2,
        )
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True
