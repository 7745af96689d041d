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


def use_native_pass(W1, W2, PS) -> bool:
    r"""Whether `gram_and_cross` goes through $S = W_1^\top[W_1, W_2^\top]$ by the native
    kernel: float64, $hD \ge$ `NATIVE_MIN_ENTRIES`, the kernel available, and its
    $hD(D/2 + m)$ multiply-adds at most twice the $hD r + hk(k + D)$ of the XLA pass (the
    kernel runs at about twice XLA's rate)."""
    (h, D), r, m = W1.shape, PS.shape[1], W2.shape[0]
    k = r + m
    return (
        W1.dtype == jnp.float64
        and h * D >= NATIVE_MIN_ENTRIES
        and D * (D / 2 + m) <= 2 * (D * r + k * (k + D))
        and native_available()
    )


def use_native_product(W1, W2, PS) -> bool:
    r"""Whether `NetworkFrame.moved` rebuilds the weights as one product
    $[W_1', W_2'^\top] = [W_1, W_2^\top]R$ by the native kernel: as `use_native_pass`, with
    its $h(D+m)^2$ multiply-adds at most twice the $h(2Dr + 2mD + m^2)$ of the XLA rebuild."""
    (h, D), r, m = W1.shape, PS.shape[1], W2.shape[0]
    return (
        W1.dtype == jnp.float64
        and h * D >= NATIVE_MIN_ENTRIES
        and (D + m) ** 2 <= 2 * (2 * D * r + 2 * m * D + m * m)
        and native_available()
    )


def _gram_and_cross_from_pass(W1, W2, PS):
    r"""$Q_0$ and $Z_0W_1$ from $S = W_1^\top[W_1, W_2^\top] = [G, P]$: with
    $A = (W_1\Phi_1S)^\top W_1 = (\Phi_1S)^\top G$, $Q_0 = [[A\Phi_1S, (\Phi_1S)^\top P],
    [\cdot, W_2W_2^\top]]$ and $Z_0W_1 = [A; P^\top]$."""
    D = W1.shape[1]
    S = weights_pass(W1, W2)
    G, P = S[:, :D], S[:, D:]
    A = PS.T @ G
    AA = A @ PS
    AP = PS.T @ P
    Q0 = jnp.block([[0.5 * (AA + AA.T), AP], [AP.T, W2 @ W2.T]])
    return Q0, jnp.concatenate([A, P.T], axis=0)


def gram_and_cross(W1, W2, PS) -> tuple[Float[Array, "k k"], Float[Array, "k D"]]:
    r"""$Q_0 = Z_0Z_0^\top$ and $B = Z_0W_1$ in one pass over the weights: block by block of
    rows, so that $W_1$ is read from memory once (for a wide network the pass is bound by
    that read, not by the $O(hD(r+m))$ flops). Wide float64 weights on a CPU take the native
    pass instead, where `use_native_pass` says so."""
    if use_native_pass(W1, W2, PS):
        return _gram_and_cross_from_pass(W1, W2, PS)
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
