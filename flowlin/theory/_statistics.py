r"""An initialization's statistics, computed once, and the input handling of `flowlin.theory`.

Internal API: the names here (no leading underscore) are used by the other modules of
`flowlin.theory` and by `flowlin._bounds`; they are not part of the public face.

Scalar results take the initialization as a `flowlin.LinearNetwork` or as its width-independent
statistics `flowlin.GramInit` $(Q, K)$ (docs/theory.md §3): with $S = \Sigma^{1/2}$,
$Z_0 = [SU_1(0); V(0)]$ and $G_0 = U_2(0)Z_0^\top$,

- $Q = Z_0Z_0^\top$ gives $U_1U_1^\top = S^{-1}Q_{11}S^{-1}$, $VV^\top = Q_{22}$,
  $U_1V^\top = S^{-1}Q_{12}$, $E(0) = \tilde Y - Q_{12}$ and the nonzero spectrum of the
  imbalance $\Lambda = U_1^\top U_1 - V^\top V$ (that of $J P$, $P = D^{-1}QD^{-1}$ the Gram of
  $[U_1; V]$, $D = \mathrm{diag}(S, I_m)$, $J = \mathrm{diag}(I_r, -I_m)$);
- $K = G_0^\top G_0$ gives the invariant-set residuals $\|VU_2^\top\|_F^2 = \mathrm{tr}\,K_{22}$ and
  $\|U_1U_2^\top\|_F^2 = \mathrm{tr}(S^{-1}K_{11}S^{-1})$.

`as_gram` resolves "a network or its `GramInit`" once; `InitStatistics` then holds everything
the results of docs/theory.md §2 read from the initialization (spectrum and spreads of $\Lambda$,
$E(0)$, $U_1V^\top$, residuals, $\lambda_1(\Sigma)$, $\lambda_r(\Sigma)$, ...).

Conventions (docs/theory.md §1): eigenvalues and singular values are in decreasing order, an
index beyond the matrix's size gives 0, $[a]_+ = \max(a, 0)$.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real

from .._errors import check_number, is_concrete
from .._gram_init import GramInit, check_gram_compatible, gram_init
from .._misc import frobenius, to_unit_scale
from .._network import LinearNetwork, check_compatible
from .._problem import Problem, check_problem


#: Eigenvalues of the imbalance within this many `k·eps·‖P‖` of zero are treated as exact
#: zeros: they are the round-off images of the zero eigenvalues that a width h < r + m or
#: zero-padded units create (eigh's backward error is O(k·eps·‖P‖), Weyl's bound carries it to
#: the eigenvalues; 64 is the safety factor). Without it, c would be ±1e-17 instead of 0 and a
#: theorem would "apply" on round-off.
ZERO_EIGENVALUE_FACTOR = 64

#: A hidden width: a Python/NumPy number or a 0-d (possibly traced) integer or float array.
WidthLike = int | float | np.number | Real[ArrayLike, ""]


# -- input handling -------------------------------------------------------------------------


def as_gram(call: str, init, problem: Problem) -> GramInit:
    """The `GramInit` of `init` (a network or already a `GramInit`), checked against `problem`."""
    return gram_and_residuals(call, init, problem)[0]


def gram_and_residuals(call: str, init, problem: Problem):
    r"""`as_gram`, and for a network its invariant-set residuals $(\|VU_2^\top\|_F,
    \|U_1U_2^\top\|_F)$ (`None` for a `GramInit`: its $K$ is all there is).

    A network's statistics are formed from its weights divided by a power of two $s$ near their
    largest entry, then $Q$ times $s^2$ and $K$ times $s^4$: exact, so the same numbers wherever
    they are representable. The residuals are taken before $K$ is scaled back: they are
    quadratic in the weights and $K$ quartic (float32 weights of 1e-12 have $K$ of 1e-48, which
    is 0, and residuals of 1e-24)."""
    check_problem(call, problem)
    if isinstance(init, LinearNetwork):
        check_compatible(call, init, problem)
        return _network_statistics(init, problem)
    if isinstance(init, GramInit):
        check_gram_compatible(call, init, problem, name="init")
        return init, None
    raise TypeError(
        f"`{call}`: init must be a flowlin.LinearNetwork or a flowlin.GramInit, got "
        f"{type(init).__name__}"
    )


@eqx.filter_jit
def _network_statistics(net: LinearNetwork, problem: Problem):
    """`gram_and_residuals` of a checked network, compiled (one program per width, rather than
    one per operation and width when called eagerly)."""
    (W1, W2), unit = to_unit_scale(net.W1, net.W2)
    at_unit = gram_init(LinearNetwork(W1, W2), problem)
    v, u = residuals_of(at_unit, problem)
    s2 = (unit**2)[..., None, None]
    gram = eqx.tree_at(lambda g: (g.Q, g.K), at_unit, (s2 * at_unit.Q, s2**2 * at_unit.K))
    return gram, (unit**2 * v, unit**2 * u)


def as_network(call: str, net, problem: Problem | None, name: str = "net") -> LinearNetwork:
    """`net`, checked to be a `flowlin.LinearNetwork` (compatible with `problem` if given)."""
    if not isinstance(net, LinearNetwork):
        raise TypeError(
            f"`{call}`: {name} must be a flowlin.LinearNetwork (this result is a matrix of the "
            f"width-h weights, which a GramInit does not hold), got {type(net).__name__}"
        )
    if problem is not None:
        check_problem(call, problem)
        check_compatible(call, net, problem)
    return net


def check_wide_arguments(call: str, width, alpha, delta) -> None:
    """`width` (None: the network's), `alpha` (None: the wide-network results do not apply)
    and `delta` of the wide-network results: real scalars; a concrete `width` a whole number
    >= 1, the init's true hidden width (a Gaussian init drawn at width h with std
    $h^{-\alpha}$); `delta` in (0, 1)."""
    check_delta(call, delta)
    if alpha is not None:
        check_number(call, "alpha", alpha)
    if width is None:
        return
    check_number(call, "width", width)
    if is_concrete(width):
        w = float(np.asarray(width))
        if not (np.isfinite(w) and w >= 1 and w == round(w)):
            raise ValueError(
                f"`{call}`: width must be a whole number >= 1 (the hidden width h the init was "
                f"drawn at), got {width!r}"
            )


def check_width_fits(call: str, init, width) -> None:
    """Raise unless a concrete `width` given for a concrete two-layer network can be its true
    hidden width: at most its rows, and at least its rows that are not zero (a zero-padded
    network). A width the init was not drawn at would make the wide-network bounds read
    "violated" about a theorem whose hypothesis is false."""
    if width is None or not isinstance(init, LinearNetwork) or init.W1.ndim != 2:
        return
    if not (is_concrete(width) and is_concrete(init.W1) and is_concrete(init.W2)):
        return
    W1, W2 = np.asarray(init.W1), np.asarray(init.W2)
    rows = W1.shape[0]
    used = int(np.count_nonzero(np.any(W1 != 0, axis=1) | np.any(W2 != 0, axis=0)))
    w = float(np.asarray(width))
    if w > rows or w < used:
        raise ValueError(
            f"`{call}`: width={width!r} cannot be the true width of this network: it has "
            f"{rows} hidden units, {used} of them not zero (width must lie between the two; "
            "pass it only for a zero-padded network)"
        )


def check_delta(call: str, delta) -> None:
    """Raise unless a concrete `delta` is a scalar in (0, 1) (a traced one is not checked)."""
    check_number(call, "delta", delta)
    if is_concrete(delta):
        d = np.asarray(delta, dtype=float)
        if d.ndim != 0 or not (0 < d < 1):
            raise ValueError(f"`{call}`: delta must be in (0, 1), got {delta!r}")


def check_final_shapes(call: str, D: int, m: int, problem: Problem) -> None:
    """A final network (batched or not) with the problem's input and output sizes."""
    if (D, m) != (problem.D, problem.m):
        raise ValueError(
            f"`{call}`: final maps {D} inputs to {m} outputs but problem has D = {problem.D}, "
            f"m = {problem.m}"
        )


def check_output_gram(call: str, gram) -> None:
    """A concrete $V(\\infty)V(\\infty)^\top$ must be finite, symmetric and positive
    semidefinite (to round-off): otherwise its eigenvalues are not squared singular values."""
    if not is_concrete(gram):
        return
    g = np.asarray(gram, dtype=float)
    if not np.all(np.isfinite(g)):
        raise ValueError(f"`{call}`: final (the Gram V(∞)V(∞)ᵀ) contains non-finite values")
    scale = max(float(np.max(np.abs(g))), np.finfo(float).tiny)
    tol = 100 * float(jnp.finfo(gram.dtype).eps) * g.shape[-1] * scale
    asym = float(np.max(np.abs(g - np.swapaxes(g, -1, -2))))
    low = float(np.min(np.linalg.eigvalsh(0.5 * (g + np.swapaxes(g, -1, -2)))))
    if asym > tol or low < -tol:
        raise ValueError(
            f"`{call}`: final must be a Gram V(∞)V(∞)ᵀ, symmetric positive semidefinite; got "
            f"asymmetry {asym:.3g} and smallest eigenvalue {low:.3g} (scale {scale:.3g})"
        )


def width_of(init, width: WidthLike | None) -> WidthLike | None:
    """The width for the wide-network results: `width` if given, else the network's width
    (None for a `GramInit`, which does not know it)."""
    if width is not None:
        return width
    if isinstance(init, LinearNetwork):
        return init.width
    return None


# -- matrices of the Gram statistics ----------------------------------------------------------


def split(problem: Problem, M):
    """The blocks (M11, M12, M22) of an (r+m)×(r+m) matrix."""
    r = problem.rank
    return M[:r, :r], M[:r, r:], M[r:, r:]


def plus(a):
    """$[a]_+ = \\max(a, 0)$."""
    return jnp.maximum(a, 0)


def min_singular_value(A) -> Float[Array, ""]:
    """The smallest singular value $\\sigma_{\\min(r, m)}$ of a matrix."""
    return jnp.linalg.svd(A, compute_uv=False)[-1]


def index_split(rank: int, m: int, smallest):
    """(σ_m, σ_r) of an r×m matrix (r = `rank`) from its smallest singular value
    σ_{min(r,m)}: an index beyond min(r, m) gives 0 (docs/theory.md §1)."""
    zero = jnp.zeros_like(smallest)
    return (smallest if m <= rank else zero), (smallest if rank <= m else zero)


def imbalance_eigenvalues_of(gram: GramInit, problem: Problem) -> Float[Array, " k"]:
    """Decreasing eigenvalues of $B^\\top J B$, $BB^\\top = P$ (the Gram of $[U_1; V]$)."""
    r, m = problem.rank, problem.m
    dtype = gram.Q.dtype
    scale = jnp.concatenate([1.0 / problem.sqrt_sigma, jnp.ones(m, problem.dtype)]).astype(dtype)
    P = gram.Q * scale[:, None] * scale[None, :]
    P = 0.5 * (P + P.T)
    w, O = jnp.linalg.eigh(P)
    threshold = ZERO_EIGENVALUE_FACTOR * (r + m) * jnp.finfo(dtype).eps * w[-1]
    # Directions of P at round-off level are exact zeros (width h < r + m, padding, a balanced
    # init's rank-deficient Z): drop them before the square root. Keeping them would put their
    # sqrt(eps)-sized columns into B and couple them to the rest at first order, moving a zero
    # eigenvalue of Λ by ~sqrt(eps)·‖P‖ instead of eps·‖P‖. Dropping them perturbs Λ by at most
    # `threshold`.
    w = jnp.where(w > threshold, w, 0.0)
    B = O * jnp.sqrt(w)
    signs = jnp.concatenate([jnp.ones(r, dtype), -jnp.ones(m, dtype)])
    M = B.T @ (signs[:, None] * B)
    ev = jnp.linalg.eigvalsh(0.5 * (M + M.T))[::-1]
    return jnp.where(jnp.abs(ev) <= threshold, 0.0, ev)


def error_of(gram: GramInit, problem: Problem) -> Float[Array, "r m"]:
    """$E = \\tilde Y - Q_{12}$ (r×m)."""
    _, Q12, _ = split(problem, gram.Q)
    return problem.Y_tilde.astype(gram.Q.dtype) - Q12


def residuals_of(gram: GramInit, problem: Problem):
    """$(\\|VU_2^\\top\\|_F, \\|U_1U_2^\\top\\|_F)$ from $K$."""
    K11, _, K22 = split(problem, gram.K)
    v = jnp.sqrt(plus(jnp.trace(K22)))
    u = jnp.sqrt(plus(jnp.sum(jnp.diagonal(K11) / problem.sigma)))
    return v, u


# -- the statistics object --------------------------------------------------------------------


class InitStatistics(eqx.Module):
    r"""What the results of docs/theory.md §2 read from one initialization, computed once.

    Build it with `InitStatistics.of(init, problem, call=...)` (checks the inputs; `init` a
    `flowlin.LinearNetwork` or a `flowlin.GramInit`), or, from an already checked `GramInit`
    (e.g. inside `jax.jit`), with `InitStatistics(gram, problem)`.

    **Fields** (scalars unless said otherwise; $\Lambda$ the imbalance, conserved in time):

    - `gram`: the `flowlin.GramInit` $(Q, K)$.
    - `rank`, `m`: $r$ and $m$ of the problem (static).
    - `eigenvalues`: the $r + m$ eigenvalues of $\Lambda$ that can be nonzero, decreasing.
    - `lambda_r`, `lambda_m_neg`: $[\lambda_r(\Lambda)]_+$, $[\lambda_m(-\Lambda)]_+$.
    - `spread_plus`, `spread_minus`, `c`: $\Delta_+$, $\Delta_-$ and
      $\Delta = c = [\lambda_r(\Lambda)]_+ + [\lambda_m(-\Lambda)]_+$.
    - `error`, `error_norm`: $E(0) = \tilde Y - \Sigma^{1/2}U_1V^\top$ ($r\times m$), $\|E(0)\|_F$.
    - `product`, `product_norm`, `product_min_singular_value`: $U_1(0)V(0)^\top$ ($r\times m$),
      its Frobenius norm and its smallest singular value.
    - `residual_v`, `residual_u1`, `invariant_residual`: $\|V(0)U_2(0)^\top\|_F$,
      $\|U_1(0)U_2(0)^\top\|_F$ and their root-sum-square.
    - `distance_initial`: $\|W(0) - W^\star\|_F$.
    - `weight_scale`: $\|U_1(0)\|_F^2 + \|V(0)\|_F^2$.
    - `lambda_1_sigma`, `lambda_r_sigma`: $\lambda_1(\Sigma)$, $\lambda_r(\Sigma)$.
    - `target_sigma_m`, `target_sigma_r`: $\sigma_m(\tilde Y)$, $\sigma_r(\tilde Y)$ (an index
      beyond $\min(r, m)$ giving 0).
    """

    gram: GramInit
    rank: int = eqx.field(static=True)
    m: int = eqx.field(static=True)
    eigenvalues: Float[Array, " k"]
    lambda_r: Float[Array, ""]
    lambda_m_neg: Float[Array, ""]
    spread_plus: Float[Array, ""]
    spread_minus: Float[Array, ""]
    c: Float[Array, ""]
    error: Float[Array, "r m"]
    error_norm: Float[Array, ""]
    product: Float[Array, "r m"]
    product_norm: Float[Array, ""]
    product_min_singular_value: Float[Array, ""]
    residual_v: Float[Array, ""]
    residual_u1: Float[Array, ""]
    invariant_residual: Float[Array, ""]
    distance_initial: Float[Array, ""]
    weight_scale: Float[Array, ""]
    lambda_1_sigma: Float[Array, ""]
    lambda_r_sigma: Float[Array, ""]
    target_sigma_m: Float[Array, ""]
    target_sigma_r: Float[Array, ""]

    def __init__(self, gram: GramInit, problem: Problem, residuals=None):
        """`residuals`: the network's, from `gram_and_residuals` (else read off $K$)."""
        # Full float32 products: on GPUs the default may be TF32 (~1e-3), far coarser than the
        # float32 verdicts need (see flowlin._misc.full_precision).
        with jax.default_matmul_precision("highest"):
            self._fill(gram, problem, residuals)

    def _fill(self, gram: GramInit, problem: Problem, residuals) -> None:
        r = problem.rank
        self.gram = gram
        self.rank, self.m = r, problem.m
        ev = imbalance_eigenvalues_of(gram, problem)
        self.eigenvalues = ev
        lam_1, self.lambda_r = plus(ev[0]), plus(ev[r - 1])
        # λ1(−Λ), λm(−Λ): ev[r + m - m] = ev[r]
        neg_1, self.lambda_m_neg = plus(-ev[-1]), plus(-ev[r])
        self.spread_plus = lam_1 - self.lambda_r
        self.spread_minus = neg_1 - self.lambda_m_neg
        self.c = self.lambda_r + self.lambda_m_neg
        Q11, Q12, Q22 = split(problem, gram.Q)
        self.error = error_of(gram, problem)
        self.error_norm = frobenius(self.error)
        self.product = Q12 / problem.sqrt_sigma[:, None]  # U1 Vᵀ = S^{-1} Q12
        self.product_norm = frobenius(self.product)
        self.product_min_singular_value = min_singular_value(self.product)
        if residuals is None:
            residuals = residuals_of(gram, problem)
        self.residual_v, self.residual_u1 = residuals
        # hypot: the squares of float32 residuals of 1e-22 are 0 (a false "on the invariant set").
        self.invariant_residual = jnp.hypot(self.residual_v, self.residual_u1)
        self.distance_initial = jnp.sqrt(
            jnp.sum((self.error / problem.sqrt_sigma[:, None]) ** 2) + self.residual_v**2
        )
        self.weight_scale = jnp.sum(jnp.diagonal(Q11) / problem.sigma) + jnp.trace(Q22)
        self.lambda_1_sigma, self.lambda_r_sigma = problem.sigma[0], problem.sigma[-1]
        self.target_sigma_m, self.target_sigma_r = index_split(
            r, problem.m, min_singular_value(problem.Y_tilde)
        )

    @classmethod
    def of(cls, init: LinearNetwork | GramInit, problem: Problem, *, call: str) -> "InitStatistics":
        """Check `init` and `problem` (errors name `call`) and compute the statistics."""
        gram, residuals = gram_and_residuals(call, init, problem)
        return cls(gram, problem, residuals)
