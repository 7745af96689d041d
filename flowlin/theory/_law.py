r"""docs/theory.md §2(h): the exact law of the implicit-bias gap $d = \|W(\infty) - W^\star\|_F$.

*Premises:* the entries of $W_1(0)$ are i.i.d. $N(0, \sigma_1^2)$, $W_2(0)$ is independent of
$W_1(0)$ (any law), and the flow converged. Then $U_2(0) = \Phi_2^\top W_1(0)^\top$ is
independent of $V(\infty)$, and conditionally on $V(\infty)$ with singular values $s_j$,
$$d^2 = \sum_j w_j\,\chi^2_{k,j},\qquad w_j = \sigma_1^2 s_j^2,\quad k = D - r,$$
with independent chi-squares. For $m = 1$, $d = \sigma_1\|V(\infty)\|\,\chi_k$.

`DistanceLaw` is that law (one per run under `vmap`): its moments, CDF and quantiles, in JAX.
`law_fit` (`_law_fit.py`) tests many runs against their laws at once (on the host, with SciPy):
a Kolmogorov–Smirnov test of the probability-integral transforms $F_i(d_i)$, which are i.i.d.
uniform under the law whatever the $V_i(\infty)$; the mean of $d^2$ is reported beside its
exact expectation $\frac1n\sum_i k\sum_j w_{ij}$. `wide_limit_law` is the $h \to \infty$ law of
$\sqrt h\,d$ for the paper's $\alpha = \frac12$ init.

For $m \ge 2$ the CDF of a weighted sum of chi-squares is Ruben's mixture
$P(d^2 \le x) = \sum_{i \ge 0} c_i\,P(\chi^2_{mk + 2i} \le x/\beta)$, $\beta = \min_j w_j$,
$c_i \ge 0$, $\sum_i c_i = 1$ (the $c_i$ are the convolution of negative binomial laws); it is
truncated after `n_terms` terms. `DistanceLaw.cdf_error` bounds the CDF's error: the neglected
mass $1 - \sum c_i$ (or its Chernoff bound, free of cancellation) plus the incomplete gamma
function's round-off. Where that bound exceeds `LAW_TOLERANCE` in float64 (very unequal $s_j$)
or `NARROW_CDF_ERROR` in float32 (also large $k$) the CDF is NaN: not computable here, never a
wrong number. For $m = 1$ the series is a single term.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammainc, gammaln
from jaxtyping import Array, ArrayLike, Bool, Float

from .._custom_types import ScalarLike
from .._deep_network import DeepLinearNetwork
from .._errors import as_float_array, check_positive, is_concrete
from .._misc import full_precision
from .._network import LinearNetwork
from .._problem import Problem, check_problem
from .._trajectory import Trajectory
from ._statistics import check_final_shapes, check_output_gram


#: The largest CDF error (`DistanceLaw.cdf_error`) accepted in float64 (else NaN).
LAW_TOLERANCE = 1e-8
#: The largest CDF error accepted in float32 (else NaN): its incomplete gamma function alone
#: is off by up to ~4ε·a at shape a (2.6e-4 at a = 1000, k = 2000 for m = 1), and its bound
#: (`GAMMAINC_ULPS`) is twice that.
NARROW_CDF_ERROR = 2e-3
#: JAX's regularized incomplete gamma P(a, x) is within ε·(c₀ + c₁·a) of exact, (c₀, c₁) =
#: `GAMMAINC_ULPS` (measured: below ε·(32 + 8a) for a from 0.05 to 1e5, in float32 and
#: float64; tests/test_law_verdicts.py).
GAMMAINC_ULPS = (32, 16)
#: Most terms of Ruben's series (each costs O(m) per law; beyond this, memory, not accuracy).
MAX_TERMS = 100_000
#: Fewest runs for which `law_fit` gives a verdict.
MIN_RUNS = 20
#: Why `law_fit` says "not applicable".
NOT_GAUSSIAN = "the law's premises fail: W1(0) is not i.i.d. Gaussian (run_law with std1=None)"


class DistanceLaw(eqx.Module):
    r"""The law of $d = \big(\sum_j w_j\chi^2_{k,j}\big)^{1/2}$, independent chi-squares.

    Built by `distance_law` (the conditional law of a run's gap given $V(\infty)$) or
    `wide_limit_law` (the law of $\sqrt h\,d$ as $h \to \infty$). Every method works under
    `jit`/`vmap` (batch axes lead `weights`).

    **Fields:** `weights` ($w_j \ge 0$, last axis $j = 1 \dots m$), `dof` ($k = D - r$),
    `n_terms` (terms of Ruben's series for $m \ge 2$).
    """

    weights: Float[Array, "*batch m"]
    dof: int = eqx.field(static=True)
    n_terms: int = eqx.field(static=True, default=512)

    def __check_init__(self):
        call = "flowlin.theory.DistanceLaw(...)"
        if isinstance(self.dof, bool) or not isinstance(self.dof, int) or self.dof < 0:
            raise ValueError(f"`{call}`: dof must be an int >= 0, got {self.dof!r}")
        n = self.n_terms
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TERMS:
            raise ValueError(f"`{call}`: n_terms must be an int in [1, {MAX_TERMS}], got {n!r}")
        w = self.weights
        if not (hasattr(w, "shape") and hasattr(w, "dtype")) or jnp.ndim(w) < 1:
            raise TypeError(
                f"`{call}`: weights must be a float array with the weights on its last axis "
                f"(shape (..., m)), got {type(w).__name__} of shape {jnp.shape(w)}"
            )
        if not jnp.issubdtype(w.dtype, jnp.floating):
            raise TypeError(f"`{call}`: weights must be real floats, got dtype {w.dtype}")
        if w.shape[-1] == 0:
            raise ValueError(f"`{call}`: weights must hold at least one weight (m >= 1) per law")
        if is_concrete(w):
            a = np.asarray(w)
            # NaN is "no law" (run_law for an init outside the premises): NaN numbers out.
            if np.any(a[~np.isnan(a)] < 0) or np.any(np.isinf(a)):
                raise ValueError(f"`{call}`: weights must be finite and >= 0, got {a!r}")

    def mean_square(self) -> Float[Array, "*batch"]:
        r"""$\mathbb E\,d^2 = k\sum_j w_j$."""
        return self.dof * jnp.sum(self.weights, axis=-1)

    def variance_square(self) -> Float[Array, "*batch"]:
        r"""$\mathrm{Var}\,d^2 = 2k\sum_j w_j^2$."""
        return 2 * self.dof * jnp.sum(self.weights**2, axis=-1)

    def rms(self) -> Float[Array, "*batch"]:
        r"""$(\mathbb E\,d^2)^{1/2}$."""
        return jnp.sqrt(self.mean_square())

    def standardize(self, d) -> Float[Array, "*batch"]:
        r"""$d / (\sum_j w_j)^{1/2}$, i.e. $d/(\sigma_1\|V(\infty)\|_F)$: $\chi_k$-distributed for
        $m = 1$."""
        d = self._batched("flowlin.theory.DistanceLaw.standardize(d)", "d", d)
        return d / jnp.sqrt(jnp.sum(self.weights, axis=-1))

    def _batched(self, call: str, name: str, x):
        """`x` as a float array that broadcasts against the laws' batch shape."""
        x = as_float_array(call, name, x, dtype=self.weights.dtype)
        try:
            jnp.broadcast_shapes(self.weights.shape[:-1], x.shape)
        except ValueError:
            raise ValueError(
                f"`{call}`: {name} has shape {x.shape}, which does not broadcast against the "
                f"laws' batch shape {self.weights.shape[:-1]}"
            ) from None
        return x

    def _mixture(self):
        """(c_i, ν_i, β, neglected mass) of Ruben's series, batch axes leading."""
        # One weight (m = 1): the series is its first term, exactly.
        n_terms = 1 if self.weights.shape[-1] == 1 else self.n_terms
        return _ruben(self.weights, self.dof, n_terms)

    def cdf(self, d) -> Float[Array, "*batch"]:
        r"""$P(\text{gap} \le d)$, within `cdf_error()` of exact; NaN where that bound exceeds
        `LAW_TOLERANCE` (float64) or `NARROW_CDF_ERROR` (float32)."""
        return _cdf(self._mixture(), self._batched("flowlin.theory.DistanceLaw.cdf(d)", "d", d))

    def cdf_error(self) -> Float[Array, "*batch"]:
        r"""A bound on $|$`cdf(d)` $-$ exact$|$ for every $d$: the series' neglected mass (for
        $m \ge 2$) plus the incomplete gamma function's round-off in the law's dtype (about
        $10^{-12}$ in float64; in float32 it grows with $k$: ~$10^{-3}$ at $k = 1000$)."""
        return self._mixture()[3]

    def cdf_and_error(self, d) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
        """`(cdf(d), cdf_error())` from one build of Ruben's series (each call to either
        builds it: the cost of a law is that build)."""
        mixture = self._mixture()
        d = self._batched("flowlin.theory.DistanceLaw.cdf_and_error(d)", "d", d)
        return _cdf(mixture, d), mixture[3]

    def mean(self) -> Float[Array, "*batch"]:
        r"""$\mathbb E\,d$ (for $m = 1$: $\sqrt{2w}\,\Gamma(\frac{k+1}2)/\Gamma(\frac k2)$)."""
        c, nu, beta, error = self._mixture()
        e_chi = jnp.exp(gammaln((nu + 1) / 2) - gammaln(nu / 2))
        out = jnp.sqrt(2 * beta) * jnp.sum(c * e_chi, axis=-1)
        out = jnp.where(jnp.isfinite(beta), out, 0.0)
        return jnp.where(error <= cdf_error_limit(c.dtype), out, jnp.nan)

    def quantile(self, p) -> Float[Array, "*batch"]:
        """The `p`-quantile of the gap (64 bisection steps on `cdf`); `p` in [0, 1]
        (NaN outside it when traced), 0 at 0, inf at 1; NaN wherever `cdf` is NaN."""
        call = "flowlin.theory.DistanceLaw.quantile(p)"
        p = self._batched(call, "p", p)
        if is_concrete(p) and not np.all((np.asarray(p) >= 0) & (np.asarray(p) <= 1)):
            raise ValueError(f"`{call}`: p must be a probability in [0, 1], got {p!r}")
        # sqrt(E d² + 40 sd(d²)) formed at unit scale: weights of 1e20 square to inf in float32.
        top = jnp.max(self.weights, axis=-1, keepdims=True)
        unit = DistanceLaw(self.weights / jnp.where(top > 0, top, 1), self.dof, self.n_terms)
        spread = jnp.sqrt(unit.mean_square() + 40 * jnp.sqrt(unit.variance_square()))
        hi0 = jnp.sqrt(top[..., 0]) * spread + jnp.finfo(p.dtype).tiny
        hi0 = jnp.broadcast_to(hi0, jnp.broadcast_shapes(hi0.shape, p.shape))
        mixture = self._mixture()  # once, not at every bisection step

        def body(_, state):
            lo, hi, unknown = state
            mid = 0.5 * (lo + hi)
            f = _cdf(mixture, mid)
            below = f < p
            return jnp.where(below, mid, lo), jnp.where(below, hi, mid), unknown | jnp.isnan(f)

        start = (jnp.zeros_like(hi0), hi0, jnp.zeros(hi0.shape, bool))
        lo, hi, unknown = jax.lax.fori_loop(0, 64, body, start)
        # NaN where the CDF is: never the number a bisection on NaN comparisons settles on.
        q = jnp.where(p == 1, jnp.inf, jnp.where(p == 0, 0.0, 0.5 * (lo + hi)))
        q = jnp.where(unknown, jnp.nan, q)
        return jnp.where((p >= 0) & (p <= 1), q, jnp.nan)


def cdf_error_limit(dtype) -> float:
    """The largest CDF error accepted in `dtype` (`DistanceLaw.cdf_error`; NaN beyond it):
    `LAW_TOLERANCE` in float64, `NARROW_CDF_ERROR` in narrower dtypes."""
    return LAW_TOLERANCE if jnp.finfo(dtype).bits >= 64 else NARROW_CDF_ERROR


def _cdf(mixture, d):
    """The CDF of the gap at `d` from Ruben's mixture `(c, ν, β, error bound)`."""
    c, nu, beta, error = mixture
    d = jnp.asarray(d, dtype=c.dtype)
    # (d / √(2β))², not d²/(2β): d² of a float32 gap above ~1e19 is inf.
    x = (jnp.maximum(d, 0)[..., None] / jnp.sqrt(2 * beta[..., None])) ** 2
    p = jnp.sum(c * gammainc(nu / 2, x), axis=-1)
    p = jnp.where(jnp.isfinite(beta), p, 1.0)  # all weights zero: the gap is exactly 0
    p = jnp.where(d < 0, 0.0, p)
    return jnp.where(error <= cdf_error_limit(c.dtype), jnp.clip(p, 0.0, 1.0), jnp.nan)


#: Points θ of the Chernoff bound on the neglected mass (`_ruben`); any θ gives a valid bound.
CHERNOFF_POINTS = 64


def _ruben(w, k: int, n_terms: int):
    r"""Ruben's mixture for $\sum_j w_j\chi^2_k$: returns (c, ν, β, a bound on the error of the
    CDF computed from it: the neglected mass $1 - \sum c_i$ plus the incomplete gamma's error).

    The mixing law is that of $I = \sum_j N_j$, independent $N_j \sim$ NB$(k/2, β/w_j)$:
    $c_0 = \prod_j (β/w_j)^{k/2}$ and $c_i = \frac1i\sum_{l<i} G_{i-l} c_l$ with
    $G_i = \frac k2\sum_j γ_j^i$, $γ_j = 1 - β/w_j$. $c_0$ underflows for large $k$ (float32:
    $0.6^{190} \approx 10^{-42}$), so the recurrence runs on $c/e^{o}$ with the log-scale $o$
    carried beside it: in float32 renormalized to a largest entry of 1 as it grows, in float64
    lifted once at the start.
    """
    w = jnp.asarray(w)
    invalid = jnp.any(~(w >= 0) | jnp.isinf(w), axis=-1)  # NaN (no law), negative or infinite
    pos = w > 0
    beta = jnp.min(jnp.where(pos, w, jnp.inf), axis=-1)
    safe_w = jnp.where(pos, w, 1.0)
    ratio = jnp.where(pos, beta[..., None] / safe_w, 1.0)  # β/w_j in (0, 1]
    gam = jnp.where(pos, 1.0 - ratio, 0.0)
    m_eff = jnp.sum(pos, axis=-1)
    log_c0 = 0.5 * k * jnp.sum(jnp.log(ratio), axis=-1)
    i = jnp.arange(1, n_terms, dtype=w.dtype)
    G = 0.5 * k * jnp.sum(gam[..., None, :] ** i[:, None], axis=-1)  # (*batch, n-1)
    G = jnp.concatenate([jnp.zeros((*G.shape[:-1], 1), G.dtype), G], axis=-1)  # index = lag

    # float64 has the range to start at c_0 itself, lifted to e^-354 if smaller (entries then
    # stay below e^354·1); float32's e^±87 does not, so it renormalizes at every step.
    wide = jnp.finfo(w.dtype).bits >= 64
    half_range = 0.5 * float(np.log(jnp.finfo(w.dtype).max))
    lift = jnp.maximum(0.0, -log_c0 - half_range) if wide else -log_c0

    def step(state, idx):
        c, log_scale = state
        lags = idx - jnp.arange(n_terms)
        g = jnp.where(lags >= 1, jnp.take(G, jnp.clip(lags, 0, n_terms - 1), axis=-1), 0.0)
        ci = jnp.sum(g * c, axis=-1) / idx
        c = c.at[..., idx].set(ci)
        if wide:
            return (c, log_scale), None
        grow = jnp.maximum(ci, 1.0)  # every entry <= 1: no overflow, nothing lost
        return (c / grow[..., None], log_scale + jnp.log(grow)), None

    c = jnp.zeros(G.shape, w.dtype).at[..., 0].set(jnp.exp(log_c0 + lift))
    if n_terms > 1:
        c, lift = jax.lax.scan(step, (c, -lift), jnp.arange(1, n_terms))[0]
        lift = -lift
    c = c * jnp.exp(-lift)[..., None]
    nu = k * m_eff[..., None] + 2 * jnp.arange(n_terms, dtype=w.dtype)
    tail = jnp.minimum(_sum_bound(c), _chernoff_bound(ratio, gam, k, n_terms))
    # JAX's P(a, x) is within ε·(c₀ + c₁a) of exact (GAMMAINC_ULPS): Σ c_i of that, and the sum.
    eps = jnp.finfo(w.dtype).eps
    c0, c1 = GAMMAINC_ULPS
    arithmetic = eps * jnp.sum(c * (c0 + c1 * nu / 2), axis=-1)
    error = tail + arithmetic + n_terms * eps
    error = jnp.where(invalid, jnp.nan, error)  # every number of an invalid law is NaN
    beta = jnp.where(jnp.isfinite(beta) & (k > 0), beta, jnp.inf)
    return c, nu, beta, error


def _sum_bound(c):
    """1 − Σc plus its round-off allowance (n² ulps: the recurrence's error, compounded)."""
    n = c.shape[-1]
    return jnp.maximum(1.0 - jnp.sum(c, axis=-1), 0.0) + n * n * jnp.finfo(c.dtype).eps


def _chernoff_bound(ratio, gam, k: int, n: int):
    r"""$P(I \ge n) \le \min_θ \mathbb E[e^{θI}]\,e^{-θn}$, $\log\mathbb E[e^{θI}] =
    \frac k2\sum_j[\log(β/w_j) - \log(1 - γ_je^θ)]$ for $0 < θ < -\log\max_jγ_j$: the
    neglected mass without the cancellation of 1 − Σc (~1e-6 in float32)."""
    top = jnp.max(gam, axis=-1, keepdims=True)
    safe_top = jnp.where(top > 0, top, 0.5)
    frac = jnp.arange(1, CHERNOFF_POINTS + 1, dtype=gam.dtype) / (CHERNOFF_POINTS + 1)
    theta = -jnp.log(safe_top) * frac  # (*batch, points)
    log_mgf = (
        0.5
        * k
        * jnp.sum(
            jnp.log(ratio)[..., None, :]
            - jnp.log1p(-gam[..., None, :] * jnp.exp(theta)[..., None]),
            axis=-1,
        )
    )
    bound = jnp.exp(jnp.min(log_mgf - theta * n, axis=-1))
    return jnp.where(top[..., 0] > 0, bound, 0.0)  # equal weights: c = (1, 0, ...) exactly


@full_precision
def distance_law(
    final: LinearNetwork | DeepLinearNetwork | Float[ArrayLike, "m m"],
    std1: ScalarLike,
    problem: Problem,
    *,
    n_terms: int = 512,
) -> DistanceLaw:
    r"""The law of a run's gap $\|W(\infty) - W^\star\|_F$ given its final
    $V(\infty) = W_2(\infty)$ (at depth: its final head $W_L\cdots W_2(\infty)$).

    **Arguments:**

    - `final`: the network where the flow ended (its $W_2$ is $V(\infty)$; for a
      `flowlin.DeepLinearNetwork` its head $W_L\cdots W_2$), or the $m\times m$ Gram
      $V(\infty)V(\infty)^\top$ (the gram method's $Q_{22}$; a deep run's
      `Trajectory.final_output_gram`, head·headᵀ).
    - `std1`: $\sigma_1$, the standard deviation of the i.i.d. Gaussian entries of $W_1(0)$
      (e.g. $h^{-1/2}$ for `init.paper(..., alpha=0.5)`).
    - `problem`: the `flowlin.Problem` ($k = D - r$).
    - `n_terms`: terms of Ruben's series for the CDF when $m \ge 2$ (default 512); where its
      truncation error is too large the CDF is NaN, never a wrong number.

    **Returns:** a `DistanceLaw` with weights $\sigma_1^2 s_j^2$ and $k = D - r$.

    **Premises:** Gaussian i.i.d. $W_1(0)$ (any independent $W_2(0)$), convergence, and the law
    is conditional on $V(\infty)$. They fail for orthogonal, balanced or projected inits (on the
    invariant set $d = 0$): the law then says nothing. At depth the premises are the same for
    $W_1(0)$ (i.i.d. Gaussian, independent of $W_2(0), \dots, W_L(0)$). docs/theory.md §2(h),
    §6(f).
    """
    call = "flowlin.theory.distance_law(...)"
    check_problem(call, problem)
    check_positive(call, "std1", std1, scalar=True)
    if isinstance(final, LinearNetwork):  # batch axes lead, as for the Gram
        check_final_shapes(call, final.W1.shape[-1], final.W2.shape[-2], problem)
        gram = final.W2 @ jnp.swapaxes(final.W2, -1, -2)
    elif isinstance(final, DeepLinearNetwork):  # the head W_L···W_2 plays V's part (§6(f))
        check_final_shapes(call, final.weights[0].shape[-1], final.weights[-1].shape[-2], problem)
        head = final.head
        gram = head @ jnp.swapaxes(head, -1, -2)
    else:
        gram = as_float_array(call, "final", final)
        if gram.shape[-2:] != (problem.m, problem.m):
            raise ValueError(
                f"`{call}`: final must be a flowlin.LinearNetwork, a DeepLinearNetwork or the "
                f"(m, m) = ({problem.m}, {problem.m}) Gram V(∞)V(∞)ᵀ, got shape "
                f"{tuple(gram.shape)}"
            )
        check_output_gram(call, gram)
    return law_of_gram(gram, std1, problem, n_terms)


def law_of_gram(gram, std1, problem: Problem, n_terms: int = 512) -> DistanceLaw:
    r"""`distance_law` of a checked $V(\infty)V(\infty)^\top$ (internal API): a non-finite
    one (a diverged run) gives NaN weights, i.e. no law."""
    s2 = jnp.clip(jnp.linalg.eigvalsh(0.5 * (gram + jnp.swapaxes(gram, -1, -2))), 0.0, None)
    finite = jnp.all(jnp.isfinite(gram), axis=(-2, -1))[..., None]
    s2 = jnp.where(finite, s2, jnp.nan)
    return DistanceLaw(jnp.asarray(std1, s2.dtype) ** 2 * s2, problem.D - problem.rank, n_terms)


def limit_network(problem: Problem) -> LinearNetwork:
    r"""The $h \to \infty$ limit of the paper's $\alpha = \frac12$ init at width $r + m$:
    $U_1U_1^\top = I_r$, $VV^\top = I_m$, $U_1V^\top = 0$, so $Q(0) = \mathrm{diag}(\Sigma, I_m)$,
    with $W_1 = [\Phi_1^\top; 0]$, $W_2 = [0, I_m]$ ($U_2 = 0$: the gap's randomness is in the
    law, not in the network)."""
    r, m, D = problem.rank, problem.m, problem.D
    W1 = jnp.concatenate([problem.Phi1.T, jnp.zeros((m, D), problem.dtype)], axis=0)
    W2 = jnp.concatenate([jnp.zeros((m, r), problem.dtype), jnp.eye(m, dtype=problem.dtype)], 1)
    return LinearNetwork(W1, W2)


@full_precision
def wide_limit_law(problem: Problem, *, t1=None) -> DistanceLaw:
    r"""The law of $\sqrt h\cdot\|W(\infty) - W^\star\|_F$ as $h \to \infty$, for the paper's init
    with $\alpha = \frac12$ (entries of $W_1, W_2$ i.i.d. $N(0, 1/h)$).

    $Q(0) \to \mathrm{diag}(\Sigma, I_m)$, so $V(\infty)$ tends to $V_\infty(\infty)$, that of the
    flow from `limit_network`; with $\sigma_1^2 h = 1$ the gap law's weights tend to the $s_j^2$ of
    $V_\infty(\infty)$. For $m = 1$: $\sqrt h\,d \to \|V_\infty(\infty)\|\,\chi_{D-r}$ in law.

    **Arguments:** `problem`; `t1`, the flow time of the limit flow (default: 40 divided by the
    ICML Theorem 1 rate of the limit init, i.e. an excess loss below $e^{-40}$ of its start).

    **Raises** `ValueError` if the limit flow did not converge by `t1`. docs/theory.md §2(h).
    """
    from .._flow import gradient_flow
    from .._method import Gram
    from ._rates import rate_imbalance

    call = "flowlin.theory.wide_limit_law(...)"
    check_problem(call, problem)
    net = limit_network(problem)
    if t1 is None:
        rate = float(rate_imbalance(net, problem))
        if not rate > 0:
            raise ValueError(f"`{call}`: the limit init has no guaranteed rate; pass t1=")
        t1 = 40.0 / rate
    check_positive(call, "t1", t1)
    traj = gradient_flow(net, problem, t1, saveat=jnp.asarray([0.0, t1]), method=Gram())
    start, end = np.asarray(traj.excess_loss)[[0, -1]]
    if not (np.isfinite(end) and end <= 1e-12 * max(start, np.finfo(float).tiny)):
        raise ValueError(
            f"`{call}`: the limit flow did not converge by t1 = {t1:g} (excess loss "
            f"{end:.3g} from {start:.3g}); pass a larger t1="
        )
    return distance_law(traj.final_network, 1.0, problem)


class RunLaw(eqx.Module):
    r"""One run's gap against its exact law (`run_law`); works under `jit`/`vmap`.

    **Fields:** `law` (the `DistanceLaw` given the run's $V(\infty)$), `gap` ($d$, the final
    distance to the min-norm solution), `standardized` ($d/(\sigma_1\|V(\infty)\|_F)$, a
    $\chi_{D-r}$ variable for $m = 1$), `quantile` ($F(d)$: uniform on (0, 1) under the law),
    `usable` (the run converged, the row-space part of its gap is negligible, the law's RMS is
    far above round-off (`ROUND_OFF_ULPS`) and, where `u2_drift` was saved, $U_2$ did not move
    (`U2_DRIFT_LIMIT`): so $d$ is the limit gap the law describes), `applies` (the init meets
    the law's premises: `std1` given).
    """

    law: DistanceLaw
    gap: Float[Array, "*batch"]
    standardized: Float[Array, "*batch"]
    quantile: Float[Array, "*batch"]
    usable: Bool[Array, "*batch"]
    applies: Bool[Array, "*batch"]


#: The row-space part of the gap, $\|\Sigma^{-1/2}E\|^2 \le 2(L - L^\star)/\lambda_r$, must be
#: below this fraction of $d^2$ for the run's gap to count as its limit gap.
ROW_SPACE_FRACTION = 1e-6
#: The law's RMS gap must exceed this many ulps of $\|W^\star\|_F$ (a gap near round-off is not
#: the law's); decided from the law, not from $d$: no run is dropped for the value it took.
ROUND_OFF_ULPS = 1e3
#: Where `u2_drift` was saved: $U_2 = W_1\Phi_2$ is constant under the flow and gradient descent;
#: a run whose $U_2$ moved more than this (relative to $\|W_1(0)\|_F$: round-off of a tiny
#: init, an optimizer such as Adam) is not the run the law describes.
U2_DRIFT_LIMIT = 1e-3


@full_precision
def run_law(trajectory: Trajectory, std1: ScalarLike | None, problem: Problem) -> RunLaw:
    r"""A run's implicit-bias gap $d$ set against its exact conditional law.

    **Arguments:** `trajectory` (from `flowlin.gradient_flow` or `gradient_descent`, with the
    `distance_to_min_norm` and `excess_loss` diagnostics saved); `std1`, the standard
    deviation of the i.i.d. Gaussian entries of $W_1(0)$; `problem`.

    **Returns:** a `RunLaw`. The law's premises are the caller's to state: pass `std1` only for
    an i.i.d. Gaussian $W_1(0)$ (`init.gaussian`, `init.paper`, `init.wishart`), and
    `std1=None` for any other init (orthogonal, balanced, projected onto the invariant set,
    where $d = 0$): the run is then marked `applies=False`, its law NaN, and `law_fit` reports
    "not applicable", never "consistent". docs/theory.md §2(h).
    """
    call = "flowlin.theory.run_law(...)"
    from .._trajectory import Trajectory

    if not isinstance(trajectory, Trajectory):
        raise TypeError(
            f"`{call}`: trajectory must be a flowlin.Trajectory (of gradient_flow or "
            f"gradient_descent), got {type(trajectory).__name__}"
        )
    check_problem(call, problem)
    if trajectory.final_output_gram is None:
        raise ValueError(f"`{call}`: trajectory has no final_output_gram (made by an old flowlin)")
    finals = trajectory.final_values
    for name in ("distance_to_min_norm", "excess_loss"):
        if name not in finals:
            raise ValueError(
                f"`{call}`: trajectory did not save {name!r}; pass SaveAt(diagnostics=...) "
                "including it"
            )
    d = finals["distance_to_min_norm"]
    if std1 is None:
        nan = jnp.full(trajectory.final_output_gram.shape[:-1], jnp.nan, d.dtype)
        law = DistanceLaw(nan, problem.D - problem.rank)
        false = jnp.zeros(d.shape, bool)
        return RunLaw(law, d, jnp.full_like(d, jnp.nan), jnp.full_like(d, jnp.nan), false, false)
    check_positive(call, "std1", std1, scalar=True)
    gram = trajectory.final_output_gram
    if gram.shape[-2:] != (problem.m, problem.m):
        raise ValueError(
            f"`{call}`: trajectory has m = {gram.shape[-1]} outputs but problem has m = {problem.m}"
        )
    from .._resolution import check_same_problem

    check_same_problem(call, trajectory, problem)
    law = law_of_gram(gram, std1, problem)  # a diverged run: no law (NaN), not an error
    row_space = 2 * finals["excess_loss"] / problem.sigma[-1]
    usable = trajectory.converged & (row_space <= ROW_SPACE_FRACTION * d**2)
    eps = jnp.finfo(d.dtype).eps
    usable &= law.rms() > ROUND_OFF_ULPS * eps * jnp.linalg.norm(problem.min_norm)
    if "u2_drift" in finals:
        usable &= finals["u2_drift"] <= U2_DRIFT_LIMIT
    return RunLaw(law, d, law.standardize(d), law.cdf(d), usable, jnp.ones(d.shape, bool))
