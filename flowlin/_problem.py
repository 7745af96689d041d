"""Under-determined least squares: the data of docs/theory.md §1 and what is derived from it."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._errors import (
    NamedArguments,
    as_float_array,
    check_bool,
    check_finite,
    check_ndim,
    check_number,
    is_concrete,
)
from ._misc import full_precision


class Problem(eqx.Module, metaclass=NamedArguments):
    r"""A least-squares problem $\min_W \tfrac12\|Y - X W^\top\|_F^2$ with its SVD quantities.

    The thin SVD $X = W_x \Sigma^{1/2} \Phi_1^\top$ (docs/theory.md §1) is computed once:

    - `sigma` $= (\lambda_1 \ge \dots \ge \lambda_r > 0)$, the nonzero eigenvalues of $XX^\top$;
    - `Wx` ($n\times r$) and `Phi1` ($D\times r$), orthonormal columns;
    - `Y_tilde` $= W_x^\top Y$ ($r\times m$), the targets in the column space of $X$;
    - `min_norm` $= W^\star = \hat\Theta^\top$ with $\hat\Theta = X^\top(XX^\top)^\dagger Y
      = \Phi_1\Sigma^{-1/2}\tilde Y$ ($m\times D$);
    - `loss_star` $= L^\star = \tfrac12\|(I - W_xW_x^\top)Y\|_F^2$, the least attainable loss
      (zero when $r = n$).

    $\Phi_2$ (the orthonormal complement of $\Phi_1$, $D\times(D-r)$) is never stored: every
    quantity flowlin needs from it is a norm, which the projector $I - \Phi_1\Phi_1^\top$ gives
    without forming a $D\times D$ matrix (`null_part`). `phi2()` builds it when asked.

    **Arguments:**

    - `X`: inputs, one sample per row, shape `(n, D)`.
    - `Y`: targets, shape `(n, m)`.
    - `rank`: the rank $r$ of `X`. Computed from the singular values when `None` (relative
      threshold `rank_rtol`); must be given when `X` is traced (inside `jit`/`vmap`), since
      array shapes depend on it.
    - `rank_rtol`: singular values below `rank_rtol * s_max` count as zero. Default
      `max(n, D) * eps(dtype)`, NumPy's `matrix_rank` rule.
    - `allow_full_column_rank`: when $r = D$ (over-determined or square, e.g. matrix
      factorization with $X = I$) the least-squares solution is unique and there is no
      min-norm question; this is refused unless set to `True` (for studying convergence rates
      only). Then `min_norm` is the unique solution and everything about $U_2$ is empty.

    **Differentiation.** Everything above is a differentiable function of X and Y (build the
    `Problem` inside the differentiated function, with `rank=`). The derivative with respect
    to X goes through JAX's SVD derivative and is correct only when the nonzero singular
    values of X are distinct: with a repeated one (e.g. whitened data) it is silently wrong.
    See `docs/gradients.md`.

    **Example:**

    ```python
    import jax, flowlin
    jax.config.update("jax_enable_x64", True)
    problem = flowlin.problems.whitened(jax.random.key(0), n=10, D=40, m=2)
    problem.rank, problem.min_norm.shape   # (10, (2, 40))
    ```
    """

    X: Float[Array, "n D"]
    Y: Float[Array, "n m"]
    sigma: Float[Array, " r"]
    Wx: Float[Array, "n r"]
    Phi1: Float[Array, "D r"]
    Y_tilde: Float[Array, "r m"]
    min_norm: Float[Array, "m D"]
    loss_star: Float[Array, ""]
    rank: int = eqx.field(static=True)

    @full_precision
    def __init__(
        self,
        X: ArrayLike,  # (n, D); validated below with messages naming the argument
        Y: ArrayLike,  # (n, m)
        *,
        rank: int | None = None,
        rank_rtol: float | None = None,
        allow_full_column_rank: bool = False,
    ):
        call = "Problem(X=..., Y=...)"
        check_bool(call, "allow_full_column_rank", allow_full_column_rank)
        _check_rank_arguments(call, rank, rank_rtol)
        X = as_float_array(call, "X", X)
        Y = as_float_array(call, "Y", Y)
        dtype = jnp.result_type(X.dtype, Y.dtype)
        X, Y = X.astype(dtype), Y.astype(dtype)
        check_ndim(call, "X", X, 2, "n samples x D features")
        check_ndim(
            call, "Y", Y, 2, "n samples x m outputs; reshape a vector of targets with Y[:, None]"
        )
        n, D = X.shape
        if Y.shape[0] != n:
            raise ValueError(
                f"`{call}`: X and Y must have the same number of rows (samples), got "
                f"X.shape={X.shape} and Y.shape={Y.shape}"
            )
        if n == 0 or D == 0 or Y.shape[1] == 0:
            raise ValueError(f"`{call}`: empty data, got X.shape={X.shape} and Y.shape={Y.shape}")
        check_finite(call, "X", X)
        check_finite(call, "Y", Y)

        Wx_full, s, Vh = jnp.linalg.svd(X, full_matrices=False)
        if rank_rtol is None:
            rank_rtol = max(n, D) * float(jnp.finfo(dtype).eps)
        if is_concrete(s):
            s_np = np.asarray(s)
            numerical_rank = int(np.sum(s_np > rank_rtol * s_np[0])) if s_np[0] > 0 else 0
            if numerical_rank == 0:
                raise ValueError(f"`{call}`: X is zero (rank 0): there is nothing to fit")
            if rank is None:
                rank = numerical_rank
            elif rank != numerical_rank:
                raise ValueError(
                    f"`{call}`: rank={rank} was given but X has numerical rank "
                    f"{numerical_rank} (singular values {s_np[: min(len(s_np), 8)]}...)"
                )
        elif rank is None:
            raise ValueError(
                f"`{call}`: X is traced (inside jit/vmap), so its rank cannot be read off its "
                "values; pass rank=... (array shapes depend on it)"
            )
        rank = int(rank)
        if rank > min(n, D):
            raise ValueError(f"`{call}`: rank={rank} exceeds min(n, D) = {min(n, D)}")
        if rank >= D and not allow_full_column_rank:
            raise ValueError(
                f"`{call}`: X has full column rank r = D = {D} (shape {X.shape}), so the "
                "problem is not under-determined: the least-squares solution is unique, every "
                "initialization converges to it, and there is no min-norm solution or implicit "
                "bias to study (docs/theory.md §1 needs D > r). Use more features than the rank "
                "of X, or pass allow_full_column_rank=True to study convergence rates only."
            )

        Wx = Wx_full[:, :rank]
        sqrt_sigma = s[:rank]
        Phi1 = Vh[:rank].T
        Y_tilde = Wx.T @ Y
        self.X = X
        self.Y = Y
        self.sigma = sqrt_sigma**2
        self.Wx = Wx
        self.Phi1 = Phi1
        self.Y_tilde = Y_tilde
        # W* = Θ̂ᵀ = Ỹᵀ Σ^{-1/2} Φ1ᵀ (docs/theory.md §1; paper's Θ̂ = Φ1 Σ^{-1/2} Ỹ is D×m).
        self.min_norm = (Y_tilde / sqrt_sigma[:, None]).T @ Phi1.T
        self.loss_star = 0.5 * jnp.sum((Y - Wx @ Y_tilde) ** 2)
        self.rank = rank
        _check_representable(call, self)

    # -- sizes -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of samples."""
        return self.X.shape[-2]

    @property
    def D(self) -> int:
        """Input dimension."""
        return self.X.shape[-1]

    @property
    def m(self) -> int:
        """Output dimension."""
        return self.Y.shape[-1]

    @property
    def r(self) -> int:
        """Rank of X (alias of `rank`)."""
        return self.rank

    @property
    def dtype(self):
        return self.X.dtype

    @property
    def sqrt_sigma(self) -> Float[Array, " r"]:
        r"""$\Sigma^{1/2}$ as a vector: the nonzero singular values of X."""
        return jnp.sqrt(self.sigma)

    # -- the two components of an input-weight matrix ---------------------------------------
    @full_precision
    def row_part(self, W1: Float[ArrayLike, "h D"]) -> Float[Array, "r h"]:
        r"""$U_1 = \Phi_1^\top W_1^\top$: each hidden unit's input weights in the row space of X."""
        W1 = self._weights("row_part", "W1", W1, "h")
        return self.Phi1.T @ W1.T

    @full_precision
    def null_part(self, W1: Float[ArrayLike, "h D"]) -> Float[Array, "h D"]:
        r"""$W_1(I - \Phi_1\Phi_1^\top) = U_2^\top\Phi_2^\top$: the part of W1 that X never sees.

        Returned in input coordinates (h×D); its norms and products with other such matrices
        equal those of $U_2$ since $\Phi_2$ has orthonormal columns.
        """
        W1 = self._weights("null_part", "W1", W1, "h")
        return W1 - (W1 @ self.Phi1) @ self.Phi1.T

    @full_precision
    def phi2(self) -> Float[Array, "D null"]:
        r"""An orthonormal basis $\Phi_2$ ($D\times(D-r)$) of null(X); built on demand."""
        # A complete QR of Φ1 gives an orthonormal basis of R^D whose first r columns span
        # range(Φ1); the remaining D - r span its orthogonal complement, the null space of X.
        q, _ = jnp.linalg.qr(self.Phi1, mode="complete")
        return q[:, self.rank :]

    @full_precision
    def loss(self, product: Float[ArrayLike, "m D"]) -> Float[Array, ""]:
        r"""$L = \tfrac12\|Y - XW^\top\|_F^2$ for an end-to-end map $W$ ($m\times D$)."""
        product = self._weights("loss", "product", product, "m")
        return 0.5 * jnp.sum((self.Y - self.X @ product.T) ** 2)

    @full_precision
    def error(self, product: Float[ArrayLike, "m D"]) -> Float[Array, "r m"]:
        r"""The error $E = \tilde Y - \Sigma^{1/2}\Phi_1^\top W^\top$ ($r\times m$).

        $L - L^\star = \tfrac12\|E\|_F^2$ (docs/theory.md §1).
        """
        product = self._weights("error", "product", product, "m")
        return self.Y_tilde - self.sqrt_sigma[:, None] * (self.Phi1.T @ product.T)

    def _weights(self, method: str, name: str, x, rows: str):
        """A (rows × D) matrix argument of a method: a float array of 2 dimensions whose second
        is D (the end-to-end map's m must be the problem's too)."""
        call = f"flowlin.Problem.{method}(...)"
        x = as_float_array(call, name, x)
        if x.ndim != 2 or x.shape[1] != self.D or (rows == "m" and x.shape[0] != self.m):
            want = f"({self.m}, {self.D})" if rows == "m" else f"(h, {self.D})"
            raise ValueError(
                f"`{call}`: {name} must be a matrix of shape {want} for this problem "
                f"(m = {self.m}, D = {self.D}), got shape {tuple(x.shape)}"
            )
        return x


def _check_representable(call: str, problem: "Problem") -> None:
    """A concrete problem whose squared singular values, min-norm solution or L* overflow or
    underflow the dtype is refused: every result computed from it would be inf, NaN or 0."""
    parts = (problem.sigma, problem.min_norm, problem.loss_star, problem.Y_tilde)
    if not all(is_concrete(x) for x in parts):
        return
    sigma = np.asarray(problem.sigma)
    finite = all(np.all(np.isfinite(np.asarray(x))) for x in parts)
    if not finite or np.any(sigma <= 0):
        raise ValueError(
            f"`{call}`: X and Y are out of range for {problem.dtype}: the squared singular "
            f"values of X ({sigma.min():.3g} to {sigma.max():.3g}), the min-norm solution or L* "
            "overflow or underflow it; rescale X and Y (the dynamics are scale-covariant)"
        )


#: `rank_rtol` is relative to the largest singular value: below 0 every singular value (noise
#: included) counts as nonzero; at 1 or above none does.
def _check_rank_arguments(call: str, rank, rank_rtol) -> None:
    """`rank`: `None` or an int >= 1; `rank_rtol`: `None` or a number in [0, 1)."""
    if rank is not None and (
        isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1
    ):
        raise ValueError(f"`{call}`: rank must be a positive int, got {rank!r}")
    if rank_rtol is not None:
        check_number(call, "rank_rtol", rank_rtol)
        if is_concrete(rank_rtol) and not 0 <= float(rank_rtol) < 1:
            raise ValueError(
                f"`{call}`: rank_rtol must be in [0, 1) (singular values below rank_rtol * "
                f"s_max count as zero), got {rank_rtol!r}"
            )


def check_same_precision(call: str, problem: "Problem", dtype) -> None:
    """Refuse a solve in a wider dtype than `problem`'s: its SVD (rank, Φ1, Wx, W*) was computed
    in the problem's precision, and casting the results up would not make them more exact."""
    if jnp.dtype(dtype).itemsize > jnp.dtype(problem.dtype).itemsize:
        raise ValueError(
            f"`{call}`: problem is {jnp.dtype(problem.dtype).name} but the network is "
            f"{jnp.dtype(dtype).name}: the problem's SVD (rank, Φ1, W*) was computed in "
            f"{jnp.dtype(problem.dtype).name}, and a {jnp.dtype(dtype).name} solve would "
            "inherit its error. Build the Problem from arrays of the network's dtype, or cast "
            "the network to the problem's"
        )


def check_problem(call: str, problem) -> None:
    """Raise unless `problem` is a `flowlin.Problem` (naming `call`)."""
    if not isinstance(problem, Problem):
        raise TypeError(
            f"`{call}`: problem must be a flowlin.Problem, got {type(problem).__name__}"
        )
    if jnp.ndim(problem.X) != 2:  # a batch of problems (built under vmap), passed whole
        raise ValueError(
            f"`{call}`: problem is a batch of problems (X has shape {tuple(problem.X.shape)}); "
            "use jax.vmap over the batch, one Problem per call"
        )
