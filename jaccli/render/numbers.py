"""Numbers as text: aligned cells for tables, and JSON-safe values for documents."""

from __future__ import annotations

import numpy as np

_NON_FINITE_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def json_values(array: np.ndarray) -> object:
    """Nested lists in the array's shape; each number with the fewest digits that read back to
    the same value in the array's dtype, and NaN/±Infinity as strings (valid JSON).

    A float32 0.1 is written `0.1`, not `0.10000000149011612`; -0.0 is written 0; integers stay
    integers.
    """
    array = np.asarray(array)
    if array.dtype.kind in "iub":
        return array.tolist()
    texts = array.astype(str)
    as_objects = np.empty(texts.shape, dtype=object)
    for index, text in np.ndenumerate(texts):
        as_objects[index] = _NON_FINITE_JSON.get(text) or float(text) + 0.0  # -0.0 + 0.0 is 0.0
    return as_objects.tolist()


def format_cells(array: np.ndarray, precision: int) -> np.ndarray:
    """Each number as text with `precision` decimals, in one notation for the whole array.

    Fixed-point unless the largest magnitude is at least 1e6 or, with no visible digit, below
    10^-precision; then scientific. Values that round to zero print as plain `0.000…`, not `-0`.
    """
    values = np.asarray(array, dtype=np.float64)
    finite = np.abs(values[np.isfinite(values)])
    largest = float(finite.max()) if finite.size else 0.0
    scientific = largest >= 1e6 or (0 < largest < 0.5 * 10.0**-precision)
    spec = f".{precision}e" if scientific else f".{precision}f"
    zero_text = format(0.0, spec)
    cells = np.empty(values.shape, dtype=object)
    for index, value in np.ndenumerate(values):
        if np.isnan(value):
            cells[index] = "nan"
        elif np.isinf(value):
            cells[index] = "inf" if value > 0 else "-inf"
        else:
            text = format(value, spec)
            cells[index] = zero_text if text.lstrip("-") == zero_text else text
    return cells
