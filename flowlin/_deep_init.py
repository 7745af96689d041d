"""Initializations of the deep linear network `flowlin.DeepLinearNetwork` (docs/theory.md §6)."""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import KeyLike, ScalarLike
from ._deep_network import DeepLinearNetwork
from ._errors import (
    as_float_array,
    check_finite,
    check_fits_in_memory,
    check_int,
    check_key,
    check_ndim,
    check_positive,
    float_dtype,
    is_concrete,
)
from ._init import check_std_fits, float64_std, gaussian
from ._misc import full_precision


#: The Gaussian init's per-layer variance rules (`deep_gaussian(scaling=...)`).
SCALINGS = ("paper", "fan_in")


def _check_layers_fit(call: str, shapes, dtype) -> None:
    sizes = [int(np.prod(s, dtype=object)) for s in shapes]
    what = f"widths = {tuple(s[0] for s in shapes[:-1])}: the weights (layers {list(shapes)})"
    check_fits_in_memory(call, what, sum(sizes), dtype)


def _check_widths(call: str, widths) -> tuple[int, ...]:
    """The hidden widths $(h_1, \\dots, h_{L-1})$: a non-empty sequence of Python ints >= 1."""
    if isinstance(widths, (int, np.integer)) and not isinstance(widths, bool):
        raise TypeError(
            f"`{call}`: widths must be a tuple of the L - 1 hidden widths (h1, ..., h_(L-1)), "
            f"got the int {widths!r}; for one hidden layer pass ({widths},)"
        )
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(
            f"`{call}`: widths must be a tuple of the L - 1 hidden widths, got "
            f"{type(widths).__name__}"
        )
    if len(widths) == 0:
        raise ValueError(
            f"`{call}`: widths is empty (depth L = 1); a deep linear network needs L >= 2 "
            "layers, i.e. at least one hidden width"
        )
    return tuple(check_int(call, f"widths[{i}]", h, minimum=1) for i, h in enumerate(widths))


def _layer_shapes(D: int, m: int, widths: tuple[int, ...]) -> list[tuple[int, int]]:
    dims = (D, *widths, m)
    return [(dims[i + 1], dims[i]) for i in range(len(dims) - 1)]


def _paper_width(widths: tuple[int, ...], i: int) -> float:
    """The width $h$ of layer `i + 1`'s $N(0, h^{-2\\alpha})$: the geometric mean of the hidden
    widths it connects (the first and last layers touch one)."""
    touching = [widths[j] for j in (i - 1, i) if 0 <= j < len(widths)]
    return float(np.prod(touching)) ** (1.0 / len(touching))


@full_precision
def deep_gaussian(
    key: KeyLike,
    D: int,
    m: int,
    widths: Sequence[int],
    *,
    alpha: ScalarLike = 0.5,
    scaling: str = "paper",
    scale: ScalarLike = 1.0,
    dtype=None,
) -> DeepLinearNetwork:
    r"""I.i.d. Gaussian layers: every entry of $W_l$ ($h_l\times h_{l-1}$, $h_0 = D$,
    $h_L = m$) drawn from $N(0, \sigma_l^2)$.

    - `scaling="paper"`: $\sigma_l = \text{scale}\cdot\bar h_l^{-\alpha}$, the papers'
      $N(0, h^{-2\alpha})$ of every layer (docs/theory.md §2(g)), with $\bar h_l$ the hidden
      width the layer touches: $h_1$ for $W_1$, $h_{L-1}$ for $W_L$, and the geometric mean
      $\sqrt{h_{l-1}h_l}$ for a middle layer (so all widths equal $h$ give $h^{-2\alpha}$
      everywhere, and reversing the network, $W_l \to W_{L+1-l}^\top$, keeps the law). At
      $L = 2$ this is `flowlin.init.paper` (times `scale`): the same weights for the same key.
    - `scaling="fan_in"`: $\sigma_l = \text{scale}/\sqrt{h_{l-1}}$ (LeCun; `alpha` unused),
      which keeps $\mathbb E\|W_l x\|^2 = \text{scale}^2\|x\|^2$ through every layer.

    **Arguments:**

    - `key`: a `jax.random` key. At $L = 2$ the draw is `flowlin.init.gaussian`'s (hidden unit
      $i$ from `fold_in(key, i)`); at $L \ge 3$ layer $l$ is drawn from `fold_in(key, l)`.
    - `D`, `m`: input and output dimensions.
    - `widths`: the hidden widths $(h_1, \dots, h_{L-1})$, a non-empty tuple of ints (depth
      $L$ = `len(widths) + 1`).
    - `alpha`: the exponent of the paper scaling ($\ge 0$, may be traced).
    - `scaling`: `"paper"` or `"fan_in"`.
    - `scale`: a factor on every layer's std ($\ge 0$, may be traced).
    - `dtype`: defaults to JAX's default float.

    **Returns:** a `flowlin.DeepLinearNetwork`.

    **Example:**

    ```python
    import jax, flowlin
    jax.config.update("jax_enable_x64", True)
    net = flowlin.init.deep_gaussian(jax.random.key(0), D=40, m=2, widths=(50, 60))
    net.depth, net.widths   # (3, (50, 60))
    two = flowlin.init.deep_gaussian(jax.random.key(0), D=40, m=2, widths=(50,))
    ref = flowlin.init.paper(jax.random.key(0), D=40, m=2, h=50, alpha=0.5)
    assert (two.weights[0] == ref.W1).all() and (two.weights[1] == ref.W2).all()
    ```
    """
    call = "flowlin.init.deep_gaussian(...)"
    check_key(call, "key", key)
    D = check_int(call, "D", D, minimum=1)
    m = check_int(call, "m", m, minimum=1)
    widths = _check_widths(call, widths)
    check_positive(call, "alpha", alpha, allow_zero=True, scalar=True)
    check_positive(call, "scale", scale, allow_zero=True, scalar=True)
    if not isinstance(scaling, str) or scaling not in SCALINGS:
        raise ValueError(f"`{call}`: scaling must be one of {SCALINGS}, got {scaling!r}")
    dtype = float_dtype(call, dtype)
    shapes = _layer_shapes(D, m, widths)
    _check_layers_fit(call, shapes, dtype)
    if is_concrete(scale) and is_concrete(alpha):  # checked in float64, before any cast
        for i, shape in enumerate(shapes):
            if scaling == "paper":
                what, std = f"scale and alpha (layer {i + 1})", (_paper_width(widths, i), alpha)
            else:
                what, std = "scale", (shape[1], 0.5)
            check_std_fits(call, what, float64_std(scale, *std), dtype, asked=scale)
    scale = jnp.asarray(scale, dtype)
    if scaling == "paper":
        a = jnp.asarray(alpha, dtype)
        stds = [
            scale * jnp.asarray(_paper_width(widths, i), dtype) ** (-a) for i in range(len(shapes))
        ]
    else:
        stds = [scale / jnp.sqrt(jnp.asarray(shape[1], dtype)) for shape in shapes]
    if len(shapes) == 2:  # the two-layer draw, so that L = 2 gives init.paper's weights
        net = gaussian(key, D, m, widths[0], stds[0], stds[1], dtype=dtype)
        return DeepLinearNetwork([net.W1, net.W2])
    normals = _layer_normals(key, tuple(shapes), dtype)
    return DeepLinearNetwork([std * z for std, z in zip(stds, normals)])


@functools.partial(jax.jit, static_argnums=(1, 2))
def _layer_normals(key, shapes: tuple[tuple[int, int], ...], dtype):
    """Standard normals of every layer, layer l from `fold_in(key, l)` (one compiled program
    per shape, not one small one per operation)."""
    return [
        jax.random.normal(jax.random.fold_in(key, i + 1), s, dtype) for i, s in enumerate(shapes)
    ]


def _haar_frame(key, rows: int, cols: int, dtype) -> Float[Array, "rows cols"]:
    """A Haar-random matrix with orthonormal columns (`rows >= cols`): the QR of a Gaussian with
    the signs of R's diagonal moved into Q (Mezzadri 2007)."""
    Q, R = jnp.linalg.qr(jax.random.normal(key, (rows, cols), dtype))
    signs = jnp.where(jnp.diagonal(R) < 0, -1.0, 1.0).astype(dtype)
    return Q * signs


@full_precision
def deep_orthogonal(
    key: KeyLike,
    D: int,
    m: int,
    widths: Sequence[int],
    *,
    scale: ScalarLike = 1.0,
    dtype=None,
) -> DeepLinearNetwork:
    r"""Scaled (semi-)orthogonal layers: $W_l = \text{scale}\cdot O_l$ with $O_l$
    ($h_l\times h_{l-1}$) Haar-random with orthonormal rows ($h_l \le h_{l-1}$) or columns
    ($h_l \ge h_{l-1}$), so every singular value of every layer is `scale` (the orthogonal
    initialization of deep linear networks studied by Hu, Xiao & Pennington, ICLR 2020;
    docs/theory.md §6).

    **Arguments:** `key` (layer $l$ from `fold_in(key, l)`), `D`, `m`, `widths` as in
    `deep_gaussian`; `scale` ($\ge 0$, may be traced); `dtype`.

    **Returns:** a `flowlin.DeepLinearNetwork`.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    net = flowlin.init.deep_orthogonal(jax.random.key(0), D=8, m=2, widths=(6, 6), scale=0.5)
    W2 = net.weights[1]
    assert jnp.allclose(W2 @ W2.T, 0.25 * jnp.eye(6))
    ```
    """
    call = "flowlin.init.deep_orthogonal(...)"
    check_key(call, "key", key)
    D = check_int(call, "D", D, minimum=1)
    m = check_int(call, "m", m, minimum=1)
    widths = _check_widths(call, widths)
    check_positive(call, "scale", scale, allow_zero=True, scalar=True)
    dtype = float_dtype(call, dtype)
    _check_layers_fit(call, _layer_shapes(D, m, widths), dtype)
    scale = jnp.asarray(scale, dtype)
    frames = _orthogonal_layers(key, tuple(_layer_shapes(D, m, widths)), dtype)
    return DeepLinearNetwork([scale * O for O in frames])


@functools.partial(jax.jit, static_argnums=(1, 2))
def _orthogonal_layers(key, shapes: tuple[tuple[int, int], ...], dtype):
    """Haar (semi-)orthogonal layers of the given shapes, layer l from `fold_in(key, l)`."""
    out = []
    for i, (rows, cols) in enumerate(shapes):
        k = jax.random.fold_in(key, i + 1)
        wide = rows < cols
        O = _haar_frame(k, cols, rows, dtype).T if wide else _haar_frame(k, rows, cols, dtype)
        out.append(O)
    return out


def _product_rank(call: str, product, widths) -> int:
    """The rank k the balanced factorization uses: the numerical rank of a concrete product
    (NumPy's `matrix_rank` rule), min(m, D) for a traced one."""
    m, D = product.shape
    if is_concrete(product):
        s = np.linalg.svd(np.asarray(product), compute_uv=False)
        tol = max(m, D) * np.finfo(s.dtype).eps * (s[0] if s.size else 0.0)
        k = int(np.sum(s > tol))
        why = f"product has rank {k}"
    else:
        k = min(m, D)
        why = f"product is traced (its rank cannot be read), so k = min(m, D) = {k} is used"
    if min(widths) < k:
        raise ValueError(
            f"`{call}`: widths={widths} has a hidden width below {k}: {why}, and an exactly "
            "balanced factorization W_L···W_1 = product needs every hidden width h_l >= "
            "rank(product)"
        )
    return k


@full_precision
def deep_balanced(
    key: KeyLike, product: Float[ArrayLike, "m D"], widths: Sequence[int]
) -> DeepLinearNetwork:
    r"""An exactly balanced deep network with a given end-to-end map:
    $W_{l+1}^\top W_{l+1} = W_lW_l^\top$ for every hidden layer and $W_L\cdots W_1$ =
    `product` (Arora, Cohen, Golowich & Hu, ICLR 2019, "balanced initialization";
    docs/theory.md §6).

    With the SVD `product` $= U\,\mathrm{diag}(s)\,V^\top$ of rank $k$:
    $W_l = O_l\,\mathrm{diag}(s)^{1/L}\,O_{l-1}^\top$, where $O_0 = V$ ($D\times k$),
    $O_L = U$ ($m\times k$) and $O_l$ ($h_l\times k$, $l = 1, \dots, L-1$) are Haar-random
    orthonormal frames. Then both sides of every balance equal $O_l\,\mathrm{diag}(s)^{2/L}
    O_l^\top$, and the product telescopes to $U\mathrm{diag}(s)V^\top$.

    **Arguments:**

    - `key`: a `jax.random` key (frame $l$ from `fold_in(key, l)`).
    - `product`: the end-to-end map $W$ ($m\times D$), e.g. `0.1 * problem.min_norm`. May be
      traced (then $k = \min(m, D)$).
    - `widths`: the hidden widths, each at least $k$ = rank(`product`).

    **Returns:** a `flowlin.DeepLinearNetwork` of `product`'s dtype.

    **Example:**

    ```python
    import jax, jax.numpy as jnp, flowlin
    jax.config.update("jax_enable_x64", True)
    product = jax.random.normal(jax.random.key(1), (2, 8))
    net = flowlin.init.deep_balanced(jax.random.key(0), product, widths=(5, 4))
    W1, W2, W3 = net.weights
    assert jnp.allclose(net.product, product)
    assert jnp.allclose(W2.T @ W2, W1 @ W1.T) and jnp.allclose(W3.T @ W3, W2 @ W2.T)
    ```
    """
    call = "flowlin.init.deep_balanced(...)"
    check_key(call, "key", key)
    product = as_float_array(call, "product", product)
    check_ndim(call, "product", product, 2, "m outputs x D inputs, the end-to-end map")
    if 0 in product.shape:
        raise ValueError(f"`{call}`: product is empty, shape {product.shape}")
    check_finite(call, "product", product)
    widths = _check_widths(call, widths)
    k = _product_rank(call, product, widths)
    (m, D), dtype = product.shape, product.dtype
    _check_layers_fit(call, _layer_shapes(D, m, widths), dtype)
    if k == 0:
        return DeepLinearNetwork([jnp.zeros(s, dtype) for s in _layer_shapes(D, m, widths)])
    return DeepLinearNetwork(_balanced_layers(key, product, widths, k))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _balanced_layers(key, product, widths: tuple[int, ...], k: int):
    r"""$W_l = O_l\,\mathrm{diag}(s)^{1/L}O_{l-1}^\top$ (see `deep_balanced`), compiled once
    per shape."""
    L, dtype = len(widths) + 1, product.dtype
    U, s, Vt = jnp.linalg.svd(product, full_matrices=False)
    root = s[:k] ** (1.0 / L)
    frames = [Vt[:k].T]  # O_0 = V
    frames += [
        _haar_frame(jax.random.fold_in(key, l), h, k, dtype) for l, h in enumerate(widths, 1)
    ]
    frames.append(U[:, :k])  # O_L = U
    return [(frames[l] * root) @ frames[l - 1].T for l in range(1, L + 1)]
