r"""The gram method's one pass over a network's weights (`from_network`, docs/theory.md §3):
$Q_0 = Z_0Z_0^\top$ and $Z_0W_1$, with $Z_0^\top = [W_1\Phi_1S, W_2^\top]$ ($h\times(r+m)$),
by blocks of rows in XLA, or from $S = W_1^\top[W_1, W_2^\top]$ by flowlin's native kernel
(`flowlin._native`) for wide float64 weights on a CPU; and when the rebuilt final weights take
the native product too."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._native import native_available, weights_pass


#: Rows of $W_1$ per block of `from_network`'s one pass over the weights: small enough that a
#: block (rows × D floats) and its products stay in cache while both are formed from it.
BLOCK_ROWS = 1024


def first_factor(W1, W2, PS) -> Float[Array, "h k"]:
    r"""$Z_0^\top = [W_1\Phi_1S, W_2^\top]$ ($h\times k$)."""
    return jnp.concatenate([W1 @ PS, W2.T], axis=1)


#: The native pass (`flowlin._native`) is used from this many weight entries ($hD$) on:
#: below it the weights fit in cache and XLA's pass costs microseconds.
NATIVE_MIN_ENTRIES = 1 << 16


def _native_pays(W1, native_work, xla_work) -> bool:
    r"""float64, $hD \ge$ `NATIVE_MIN_ENTRIES`, the kernel's multiply-adds per row at most
    twice XLA's (the kernel runs at about twice XLA's rate per core), and the kernel
    available (asked last: it may build it)."""
    return (
        W1.dtype == jnp.float64
        and W1.size >= NATIVE_MIN_ENTRIES
        and native_work <= 2 * xla_work
        and native_available()
    )


def use_native_pass(W1, W2, PS) -> bool:
    r"""Whether `gram_and_cross` goes through $S = W_1^\top[W_1, W_2^\top]$ by the native
    kernel: its $hD(D/2 + m)$ multiply-adds against the $hD r + hk(k + D)$ of the XLA pass
    (`_native_pays`)."""
    D, r, m = W1.shape[1], PS.shape[1], W2.shape[0]
    k = r + m
    return _native_pays(W1, D * (D / 2 + m), D * r + k * (k + D))


def use_native_product(W1, W2, PS) -> bool:
    r"""Whether `NetworkFrame.moved` rebuilds the weights as one product
    $[W_1', W_2'^\top] = [W_1, W_2^\top]R$ by the native kernel: its $h(D+m)^2$ multiply-adds
    against the $h(2Dr + 2mD + m^2)$ of the XLA rebuild (`_native_pays`)."""
    D, r, m = W1.shape[1], PS.shape[1], W2.shape[0]
    return _native_pays(W1, (D + m) ** 2, 2 * D * r + 2 * m * D + m * m)


#: The route through $S$ forms $(\Phi_1S)^\top G\,\Phi_1S$, whose round-off is that of the
#: XLA pass's $(W_1\Phi_1S)^\top(W_1\Phi_1S)$ times about
#: $a = \|W_1\|_F^2\|\Phi_1S\|_2^2 / \|W_1\Phi_1S\|_F^2 \ge 1$, large when the weights lie
#: mostly outside the row space of $X$. Above this $a$ (round-off ~1e-13 relative) the XLA
#: pass runs instead.
NATIVE_MAX_AMPLIFICATION = 1e3


def _from_pass(W1, W2, PS):
    r"""$Q_0$, $Z_0W_1$ and the amplification $a$ from $S = W_1^\top[W_1, W_2^\top] = [G, P]$:
    with $A = (W_1\Phi_1S)^\top W_1 = (\Phi_1S)^\top G$,
    $Q_0 = [[A\Phi_1S, (\Phi_1S)^\top P], [\cdot, W_2W_2^\top]]$ and $Z_0W_1 = [A; P^\top]$."""
    D = W1.shape[1]
    S = weights_pass(W1, W2)
    G, P = S[:, :D], S[:, D:]
    A = PS.T @ G
    AA = A @ PS
    AP = PS.T @ P
    Q0 = jnp.block([[0.5 * (AA + AA.T), AP], [AP.T, W2 @ W2.T]])
    # Φ1S has orthogonal columns: its spectral norm is its largest column norm.
    amplification = jnp.trace(G) * jnp.max(jnp.sum(PS * PS, axis=0)) / jnp.trace(AA)
    return Q0, jnp.concatenate([A, P.T], axis=0), amplification


def _native_route(W1, W2, PS):
    """The route through $S$ where its round-off is within `NATIVE_MAX_AMPLIFICATION` of the
    XLA pass's (NaN, e.g. zero weights, takes the XLA pass); else the XLA pass. Under `vmap`
    the choice is per member, and both are computed."""
    Q0, B, amplification = _from_pass(W1, W2, PS)
    return jax.lax.cond(
        amplification <= NATIVE_MAX_AMPLIFICATION,
        lambda: (Q0, B),
        lambda: _by_blocks(W1, W2, PS),
    )


def gram_and_cross(W1, W2, PS) -> tuple[Float[Array, "k k"], Float[Array, "k D"]]:
    r"""$Q_0 = Z_0Z_0^\top$ and $B = Z_0W_1$ in one pass over the weights: block by block of
    rows, so that $W_1$ is read from memory once (for a wide network the pass is bound by
    that read, not by the $O(hD(r+m))$ flops). Where `use_native_pass` says so, a program
    that runs on a CPU takes the native pass instead (`_native_route`); elsewhere (a GPU) the
    same program keeps the blocked pass."""
    if use_native_pass(W1, W2, PS):
        return jax.lax.platform_dependent(W1, W2, PS, cpu=_native_route, default=_by_blocks)
    return _by_blocks(W1, W2, PS)


def _by_blocks(W1, W2, PS):
    """The XLA pass: `first_factor` block by block of `BLOCK_ROWS` rows."""
    h, D = W1.shape
    k = PS.shape[1] + W2.shape[0]

    def block(w1, w2):
        zt = first_factor(w1, w2, PS)
        return zt.T @ zt, zt.T @ w1

    if h <= 2 * BLOCK_ROWS:
        return block(W1, W2)
    count = h // BLOCK_ROWS

    def add_block(i, acc):
        w1 = jax.lax.dynamic_slice_in_dim(W1, i * BLOCK_ROWS, BLOCK_ROWS, 0)
        w2 = jax.lax.dynamic_slice_in_dim(W2, i * BLOCK_ROWS, BLOCK_ROWS, 1)
        q, b = block(w1, w2)
        return acc[0] + q, acc[1] + b

    zeros = (jnp.zeros((k, k), W1.dtype), jnp.zeros((k, D), W1.dtype))
    Q0, B = jax.lax.fori_loop(0, count, add_block, zeros)
    rest = count * BLOCK_ROWS
    if rest < h:
        q, b = block(W1[rest:], W2[:, rest:])
        Q0, B = Q0 + q, B + b
    return Q0, B
