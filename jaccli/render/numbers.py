"""Numbers as text: aligned cells for tables, and JSON-safe values for documents."""

from __future__ import annotations

import math

import numpy as np


def json_values(array: np.ndarray) -> object:
    """Nested lists in the array's shape; each number with the fewest digits that read back to
    the same value in the array's dtype, and NaN/±Infinity as strings (valid JSON).

    A float32 0.1 is written `0.1`, not `0.10000000149011612`; -0.0 is written 0; integers stay
    integers. Vectorized: a float32 array goes through its shortest text once, in numpy.
    """
    array = np.asarray(array)
    if array.dtype.kind in "iub":
        return array.tolist()
    if 0 < array.size <= SMALL_ARRAY and array.dtype in (np.float32, np.float64):
        return _small_json_values(array)
    if array.dtype == np.float64:
        values = np.asarray(array + 0.0)  # -0.0 + 0.0 is 0.0
    else:  # the shortest digits of the narrower dtype, read back as float64
        values = np.asarray(array.astype(str).astype(np.float64) + 0.0)
    finite = np.isfinite(values)
    if finite.all():
        return values.tolist()
    objects = values.astype(object)
    objects[np.isnan(values)] = "NaN"
    objects[values == np.inf] = "Infinity"
    objects[values == -np.inf] = "-Infinity"
    return objects.tolist()


SMALL_ARRAY = 64
"""Up to this many numbers, json_values goes number by number in Python: numpy's fixed cost
of a pass (astype(str) most of all) is most of the time for the few numbers of one point's
arrays, written ten thousand times by --points --jsonl."""
_SPELT = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _small_json_values(array: np.ndarray) -> object:
    """json_values of a small float32 or float64 array, the same numbers: each float32's
    shortest digits (numpy's str of the scalar, as astype(str) writes it) read as float64,
    -0.0 as 0, NaN and ±Infinity as strings."""
    texts = (str(v) for v in array.flat) if array.dtype == np.float32 else None
    numbers = [float(t) for t in texts] if texts is not None else array.ravel().tolist()
    flat: list[object] = [
        number + 0.0 if math.isfinite(number) else _SPELT[repr(number)] for number in numbers
    ]
    return _nested(flat, array.shape)


def _nested(flat: list[object], shape: tuple[int, ...]) -> object:
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return flat
    step = len(flat) // shape[0]
    return [_nested(flat[k * step : (k + 1) * step], shape[1:]) for k in range(shape[0])]


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
