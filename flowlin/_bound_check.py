"""`BoundCheck`: one bound's verdict along a trajectory (docs/theory.md, "Checking the results
along a trajectory"), computed by `flowlin.check_bounds`."""

from typing import ClassVar

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._errors import is_concrete


class BoundCheck(eqx.Module):
    r"""Whether one bound held along a trajectory, and by how much.

    **Fields** (0-d arrays; with leading batch axes under `jax.vmap`):

    - `holds`: `applicable` and the bound held at every checked time, within the tolerances
      of `check_bounds` (equivalently `applicable & (worst_slack >= 0)`).
    - `applicable`: the bound says something here and could be checked: its hypotheses hold
      (e.g. $c > 0$, $h > h_0$), the diagnostics it needs were saved, the solve succeeded and
      at least one time could be checked. A bound that is not applicable never `holds`, so
      `holds.mean()` over a sweep counts only real confirmations.
    - `worst_slack`: the minimum over checked times of $\log(\text{tolerant bound}/\text{observed})$
      for upper bounds, $\log(\text{observed}/\text{tolerant bound})$ for lower bounds (the
      tolerant bound includes `rtol`/`atol`). $\ge 0$ iff the bound held; a loss envelope with
      slack 3 held with $e^3 \approx 20\times$ room at its tightest time (loss envelopes skip
      $t = 0$, where they are equalities). NaN if not applicable.
    - `excluded`: times left out because the bound there is below the resolution floor
      (`atol` × the run's scale) and so is the observed value: round-off, neither held nor
      failed (late in float32 runs). Above the floor, a value still counts as a violation.
    - `reason`: why the bound was or was not checked, an index into `BoundCheck.REASONS`
      (0 checked; 4: every time below the resolution floor, could not be checked).
    - `tightness`: how close the bound came, at the **last** checked time (late time),
      1 = exact, at most 1 when the bound holds with room to spare (a bound that held only
      within the tolerance, as late in float32 runs, can read above 1): observed/bound for
      upper bounds, bound/observed for
      lower bounds; for the loss envelopes the log-scale ratio
      $\log(\text{bound}(t)/(L(0) - L^\star))/\log((L(t) - L^\star)/(L(0) - L^\star))$, the
      fraction of the observed decay the theorem guarantees (for `loss_margin_local`: the
      guaranteed over the observed decay exponent on the last interval). NaN if not applicable,
      or (loss and rate checks, even held) if no checked time has the error 100× its noise.
    """

    holds: Bool[Array, "*batch"]
    applicable: Bool[Array, "*batch"]
    worst_slack: Float[Array, "*batch"]
    tightness: Float[Array, "*batch"]
    excluded: Int[Array, "*batch"]
    reason: Int[Array, "*batch"]

    #: What each `reason` code means.
    REASONS: ClassVar[tuple[str, ...]] = (
        "checked",
        "hypotheses do not hold",
        "inputs not given (diagnostic not saved, no saved time to check, alpha not passed, "
        "no network)",
        "run did not succeed",
        "below the resolution floor of the dtype at every time",
        "the trajectory did not start from this init and problem (traced check)",
        "a theorem about the gradient flow, not claimed for this gradient-descent run "
        "(limit_identity: claimed where u2_drift was saved and stayed within rtol)",
    )

    def verdict(self) -> str:
        """In words, for one concrete check: "held" or "violated" (the only verdicts);
        "not applicable: hypotheses do not hold"; or "not checked: <why>" (a run that did not
        succeed, a saved time below the resolution floor, ...)."""
        leaves = (self.holds, self.applicable, self.reason)
        if not all(is_concrete(x) for x in leaves) or any(np.ndim(x) for x in leaves):
            raise ValueError(
                "`flowlin.BoundCheck.verdict()`: one concrete check only, got a batched or "
                "traced one; read `holds`/`applicable`/`reason` (e.g. summarize a sweep with "
                "flowlin.summarize_bounds)"
            )
        if bool(self.applicable):
            if bool(self.holds):
                return "held"
            # `holds` is false on a NaN slack too: that is not a violation anyone saw. A slack of
            # -inf is one (a bound that fails outright, e.g. Lemma 1's at a too-narrow width).
            return "not checked: NaN slack" if np.isnan(float(self.worst_slack)) else "violated"
        reason = int(self.reason)
        if reason == -1:  # how a sweep over depths stores a bound one depth does not record
            return "not checked: not recorded at this depth"
        if not 0 <= reason < len(self.REASONS):
            return f"not checked: unknown reason code {reason}"
        kind = "not applicable" if reason == 1 else "not checked"
        return f"{kind}: {self.REASONS[reason]}"

    def __repr__(self) -> str:
        try:
            words = self.verdict()
        except ValueError:  # batched or traced: the fields' shapes, as every Module prints
            return super().__repr__()
        numbers = ", ".join(
            f"{name}={float(getattr(self, name)):.3g}"
            for name in ("worst_slack", "tightness")
            if np.isfinite(float(getattr(self, name)))
        )
        excluded = int(self.excluded)
        times = "1 time" if excluded == 1 else f"{excluded} times"
        numbers += f", {times} below the resolution floor" if excluded else ""
        return f"BoundCheck({words}{', ' if numbers else ''}{numbers.lstrip(', ')})"
