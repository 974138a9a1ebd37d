"""How close two computations of the same numbers must be, by dtype and by kind of reference."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """Entries agree when |value − reference| ≤ atol·max(1, max|reference|) + rtol·|reference|."""

    rtol: float
    atol: float

    def scaled_atol(self, reference: np.ndarray) -> float:
        finite = np.abs(reference[np.isfinite(reference)])
        return self.atol * max(1.0, float(finite.max()) if finite.size else 1.0)

    def excess(self, value: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """How far each entry is past the tolerance (≤ 0 where it agrees; NaN counts as +inf)."""
        error = np.abs(value - reference)
        excess = error - (self.scaled_atol(reference) + self.rtol * np.abs(reference))
        both_equal = (value == reference) | (np.isnan(value) & np.isnan(reference))
        return np.where(both_equal, -np.inf, np.nan_to_num(excess, nan=np.inf))


# Two AD computations of the same quantity differ by rounding alone.
AD_TOLERANCE = {
    "float32": Tolerance(rtol=1e-5, atol=1e-6),
    "float64": Tolerance(rtol=1e-10, atol=1e-12),
}
# Central differences in float64 carry truncation error ~h² (and rounding ~eps·|f|/h, allowed
# entry by entry on top of this): torch.autograd.gradcheck's tolerances.
FD_TOLERANCE = {
    "float32": Tolerance(rtol=1e-3, atol=1e-5),
    "float64": Tolerance(rtol=1e-3, atol=1e-5),
}
