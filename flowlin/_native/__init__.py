r"""flowlin's native kernels: two products over a wide network's weights, on the CPU.

A gram solve from a `LinearNetwork` reads the weights once, for $Q_0 = Z_0Z_0^\top$ and
$Z_0W_1$ (`flowlin/_method/_pass.py`), and with every default writes the rebuilt final weights
(`flowlin/_method/_gram.py`). The first follows from

$$S = W_1^\top[W_1,\ W_2^\top]\quad(D\times(D+m))\qquad\text{and}\qquad W_2W_2^\top,$$

the second is one product $[W_1', W_2'^\top] = [W_1, W_2^\top]R$. At h = 2·10⁵, D = 30 these
are most of the call: XLA:CPU forms such thin products at ~40 Gflop/s on both cores, while
register tiles of the rows (`gram_pass.cc`) run at about that on one core, and split the rows
over XLA's intra-op threads (the pass: 2.8 ms against XLA's 15 ms; benchmarks/README.md).

The kernels are C++ against the installed jaxlib's XLA FFI headers, compiled on first use with
the system's C++ compiler (`$CXX`, else c++), for this machine (`-march=native`), into
`$XDG_CACHE_HOME/flowlin/native/<machine>/` (default `~/.cache/flowlin/...`; ~3 s, once per
machine, jaxlib and compiler), then registered with `jax.ffi`. Everything else in flowlin is
JAX. They are built only on Linux on x86-64 (AVX2 with FMA, or AVX-512), serve only float64
programs that run on a CPU (`jax.lax.platform_dependent`: a GPU runs XLA's products in the same
program), and have JVP rules in JAX (so `jvp`, `grad` and `jacfwd` work through them) and a
sequential `vmap`. Where they cannot be built (no compiler, no FFI headers, a build error) or
are turned off (`FLOWLIN_NATIVE=0`, or `use_native(False)`), the same products run in XLA;
`native_status()` says which and why. Programs that contain them cannot be serialized with
`jax.export` (a custom call without a compatibility guarantee): turn them off for that.
"""

import ctypes
import hashlib
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading

import jax
import jax.numpy as jnp

from .._cache import OFF_VALUES, machine_cache_dir


#: The environment variable that turns the native pass off (`0`, `off`, `false`, `no`, or
#: empty: as `FLOWLIN_COMPILATION_CACHE`).
ENV_VAR = "FLOWLIN_NATIVE"
_SOURCE = pathlib.Path(__file__).with_name("gram_pass.cc")
#: FFI target name → the handler's symbol in the library.
_TARGETS = {
    "flowlin_gram_pass": "FlowlinGramPass",
    "flowlin_weights_product": "FlowlinWeightsProduct",
}
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")

_lock = threading.Lock()
_state: dict = {"tried": False, "ok": False, "why": "not tried yet"}
_enabled = {"on": True}


def use_native(on: bool = True) -> None:
    """Turn the native pass on (the default) or off for this process. With it off, the gram
    method's pass over the weights runs in XLA (as with `FLOWLIN_NATIVE=0`, which wins over
    this).

    The pass is chosen when a program is traced, so a change of setting clears JAX's caches
    of traced and compiled programs (`jax.clear_caches()`): the next call of each traces and
    compiles again, with the new setting. A program compiled ahead of time
    (`jax.jit(f).lower(...).compile()`) keeps the pass it was compiled with."""
    if not isinstance(on, bool):
        raise TypeError(f"use_native: `on` must be True or False, got {on!r}")
    if on != _enabled["on"]:
        _enabled["on"] = on
        jax.clear_caches()


def _compiler() -> list[str] | None:
    """The C++ compiler's command: `$CXX` (which may carry arguments, e.g. `ccache g++`), else
    the first of c++, g++, clang++ on the PATH."""
    env = shlex.split(os.environ.get("CXX", ""))
    if env:
        return [shutil.which(env[0]) or env[0], *env[1:]]
    for name in ("c++", "g++", "clang++"):
        if shutil.which(name):
            return [shutil.which(name)]
    return None


def _build() -> tuple[pathlib.Path | None, str]:
    """The compiled library (built now if this machine, jaxlib and compiler have none yet), or
    `None` and why not."""
    cxx = _compiler()
    if cxx is None:
        return None, "no C++ compiler found ($CXX, c++, g++ or clang++)"
    include = pathlib.Path(jax.ffi.include_dir())
    if not (include / "xla" / "ffi" / "api" / "ffi.h").exists():
        return None, f"jaxlib has no XLA FFI headers under {include}"
    try:
        version = subprocess.run(
            [*cxx, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{' '.join(cxx)} --version failed: {e}"
    source = _SOURCE.read_bytes()
    import jaxlib

    key = hashlib.sha256(
        source
        + (include / "xla/ffi/api/c_api.h").read_bytes()
        + f"{jaxlib.__version__}|{version}|{_FLAGS}".encode()
    ).hexdigest()[:16]
    folder = machine_cache_dir("native")
    library = folder / f"gram_pass-{key}.so"
    failed = library.with_suffix(".failed")  # the compiler's refusal, kept: not retried
    if library.exists():
        return library, "built earlier"
    if failed.exists():
        return None, f"{failed.read_text().strip()} (earlier; delete {failed} to try again)"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            out = pathlib.Path(tmp) / library.name
            run = subprocess.run(
                [*cxx, *_FLAGS, f"-I{include}", str(_SOURCE), "-o", str(out)],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if run.returncode != 0:
                tail = run.stderr.strip().splitlines()[-3:]
                why = f"{' '.join(cxx)} failed: " + " | ".join(tail)
                failed.write_text(why + "\n")  # every later process would fail the same way
                return None, why
            os.replace(out, library)  # atomic: a concurrent build writes the same file
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"could not build in {folder}: {e}"
    return library, "built now"


def _load() -> None:
    """Build, load and register the kernel, once per process."""
    with _lock:
        if _state["tried"]:
            return
        _state["tried"] = True
        if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
            where = f"{sys.platform} on {platform.machine()}"
            _state["why"] = f"built only on Linux on x86-64 (this is {where})"
            return
        try:
            library, why = _build()
        except Exception as e:  # noqa: BLE001 - an older jax (no jax.ffi), a broken toolchain
            library, why = None, f"could not build: {type(e).__name__}: {e}"
        if library is None:
            _state["why"] = why
            return
        try:
            lib = ctypes.CDLL(str(library))
            if not lib.flowlin_gram_pass_simd():
                _state["why"] = "this CPU has neither AVX-512 nor AVX2 with FMA"
                return
            for target, symbol in _TARGETS.items():
                handler = jax.ffi.pycapsule(getattr(lib, symbol))
                jax.ffi.register_ffi_target(target, handler, platform="cpu")
        except Exception as e:  # noqa: BLE001 - any failure means: use XLA
            _state["why"] = f"could not load {library}: {type(e).__name__}: {e}"
            return
        _state.update(ok=True, why=f"{why}: {library}")


def native_status() -> tuple[bool, str]:
    """Whether the gram method's pass over wide weights runs in flowlin's native CPU kernel,
    and why or why not.

    **Returns:** `(used, why)`, e.g. `(True, "built earlier: ~/.cache/flowlin/native/...")`,
    `(False, "turned off by FLOWLIN_NATIVE='0'")` or `(False, "c++ failed: ...")`.

    The first call in a process builds the kernel if this machine has none yet (a few
    seconds, once per machine, jaxlib version and compiler) and registers it with JAX. Where
    it is not used, the same pass runs in XLA, with the same numbers to round-off.
    """
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip().lower() in OFF_VALUES:
        return False, f"turned off by {ENV_VAR}={env!r}"
    if not _enabled["on"]:
        return False, "turned off by use_native(False)"
    _load()
    return _state["ok"], _state["why"]


def native_available() -> bool:
    """Whether traced code may call the native pass on the CPU."""
    return native_status()[0]


def _varying_like(out, *args):
    """`out` marked as varying over the `shard_map` mesh axes its arguments vary over (an FFI
    call's result is not, and a checked `shard_map` then refuses `platform_dependent`'s
    branches as of different types)."""
    if not (hasattr(jax, "typeof") and hasattr(jax.lax, "pcast")):  # a jax before both
        return out
    axes = frozenset().union(*(getattr(jax.typeof(a), "vma", frozenset()) for a in args))
    axes = tuple(sorted(axes - getattr(jax.typeof(out), "vma", frozenset())))
    if not axes:
        return out
    return jax.lax.pcast(out, axes, to="varying")


def _ffi_pass(W1, W2):
    D, m = W1.shape[1], W2.shape[0]
    out = jax.ShapeDtypeStruct((D, D + m), W1.dtype)
    S = jax.ffi.ffi_call("flowlin_gram_pass", out, vmap_method="sequential")(W1, W2)
    return _varying_like(S, W1, W2)


@jax.custom_jvp
def _native_pass(W1, W2):
    return _ffi_pass(W1, W2)


@_native_pass.defjvp
def _native_pass_jvp(primals, tangents):
    W1, W2 = primals
    dW1, dW2 = tangents
    Zt = jnp.concatenate([W1, W2.T], axis=1)
    dZt = jnp.concatenate([dW1, dW2.T], axis=1)
    return _native_pass(W1, W2), dW1.T @ Zt + W1.T @ dZt


def xla_pass(W1, W2):
    r"""$S = W_1^\top[W_1, W_2^\top]$ by XLA (the reference for the native pass)."""
    return W1.T @ jnp.concatenate([W1, W2.T], axis=1)


def _native_ok(*arrays) -> bool:
    return all(a.dtype == jnp.float64 for a in arrays) and native_available()


def weights_pass(W1, W2):
    r"""$S = W_1^\top[W_1,\ W_2^\top]$ ($D\times(D+m)$): by the native kernel where the
    program runs on a CPU and the kernel is available (float64), else by XLA (`xla_pass`)."""
    if not _native_ok(W1, W2):
        return xla_pass(W1, W2)
    return jax.lax.platform_dependent(W1, W2, cpu=_native_pass, default=xla_pass)


def _ffi_product(W1, W2, R):
    outs = (jax.ShapeDtypeStruct(W1.shape, W1.dtype), jax.ShapeDtypeStruct(W2.shape, W2.dtype))
    call = jax.ffi.ffi_call("flowlin_weights_product", outs, vmap_method="sequential")
    return tuple(_varying_like(x, W1, W2, R) for x in call(W1, W2, R))


@jax.custom_jvp
def _native_product(W1, W2, R):
    return _ffi_product(W1, W2, R)


@_native_product.defjvp
def _native_product_jvp(primals, tangents):
    (W1, W2, R), (dW1, dW2, dR) = primals, tangents
    a, b = xla_product(dW1, dW2, R)
    c, d = xla_product(W1, W2, dR)
    return _native_product(W1, W2, R), (a + c, b + d)


def xla_product(W1, W2, R):
    r"""$[W_1', W_2'^\top] = [W_1, W_2^\top]R$ by XLA: $(W_1', W_2')$, the shapes of
    $(W_1, W_2)$ (the reference for the native product)."""
    D = W1.shape[1]
    out = W1 @ R[:D] + W2.T @ R[D:]
    return out[:, :D], out[:, D:].T


def weights_product(W1, W2, R):
    r"""$(W_1', W_2')$ with $[W_1', W_2'^\top] = [W_1, W_2^\top]R$, $R$ of size
    $(D+m)\times(D+m)$: by the native kernel where the program runs on a CPU and the kernel is
    available (float64), else by XLA (`xla_product`)."""
    if not _native_ok(W1, W2, R):
        return xla_product(W1, W2, R)
    return jax.lax.platform_dependent(W1, W2, R, cpu=_native_product, default=xla_product)
