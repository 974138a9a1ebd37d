"""Arrays of numbers the user gives, as plain data, and JSON text read into one.

Checked before any tensor exists; no numpy or torch at import time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jaccli.errors import UsageError
from jaccli.messages import first_line, format_bytes, shorten

DEFAULT_VALUE_LIMIT = 256 * 1024**2
"""Bytes of a --value file or JSON text read at most, unless --max-value-size raises it."""
MAX_NDIM = 64
"""Dimensions a shape may have, as in torch."""
INT64_LIMIT = 2**63


@dataclass(frozen=True)
class ArrayData:
    """A rectangular array of numbers given by the user: float64, or int64 when every number
    given was an integer (a file keeps its own dtype: float32, float64 or an integer type)."""

    shape: tuple[int, ...]
    values: Any
    """numpy.ndarray in `shape` (numpy is imported only when values are given)."""
    from_file: bool = False

    @property
    def is_integer(self) -> bool:
        return self.values.dtype.kind in "iu"


def parse_json_array(
    text: str, *, what: str, alternatives: str = "", size_limit: int = DEFAULT_VALUE_LIMIT
) -> ArrayData:
    """A JSON number or rectangular nested list of numbers, checked before any tensor exists."""
    return array_of(load_json(text, what, alternatives, size_limit), what)


def load_json(text: str, what: str, alternatives: str, size_limit: int) -> object:
    """JSON text as a document, refused (naming `what`) when over `size_limit` characters or
    not JSON."""
    if len(text) > size_limit:
        raise UsageError(
            f"{what}: JSON of {len(text)} characters is over the limit of "
            f"{format_bytes(size_limit)}; raise it with --max-value-size"
        )
    try:
        return json.loads(text)
    except RecursionError:  # lists nested thousands deep: past what the parser recurses into
        raise UsageError(
            f"{what}: lists nested too deep (an array has at most {MAX_NDIM} dimensions)"
        ) from None
    except (json.JSONDecodeError, ValueError) as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else first_line(error)
        raise UsageError(
            f"{what} {shorten(text)!r} is not {alternatives}a JSON array of numbers ({reason})"
        ) from None


def array_of(document: object, what: str) -> ArrayData:
    """A JSON number or nested list as an array: int64 when every number is an integer that
    fits, float64 otherwise."""
    shape = _nested_shape(document, what)
    values: list[float | int] = []
    _flatten_checked(document, shape, what, values, path=())
    import numpy as np

    integers = all(type(v) is int and -INT64_LIMIT <= v < INT64_LIMIT for v in values)
    if integers:
        array = np.array(values, dtype=np.int64)
    else:
        array = np.array([_as_float(v, what) for v in values], dtype=np.float64)
    return ArrayData(shape=shape, values=array.reshape(shape))


def _as_float(value: float | int, what: str) -> float:
    try:
        return float(value)
    except OverflowError:
        raise UsageError(
            f"{what}: an integer of {len(str(abs(value)))} digits is past the range of float64"
        ) from None


def _nested_shape(document: object, what: str) -> tuple[int, ...]:
    shape: list[int] = []
    node = document
    while isinstance(node, list):
        if not node:
            raise UsageError(f"{what}: empty list; every dimension must be at least 1")
        if len(shape) == MAX_NDIM:
            raise UsageError(f"{what}: nested more than {MAX_NDIM} lists deep")
        shape.append(len(node))
        node = node[0]
    return tuple(shape)


def _flatten_checked(
    node: object, shape: tuple[int, ...], what: str, out: list[float | int], path: tuple[int, ...]
) -> None:
    where = "".join(f"[{i}]" for i in path) or "the value"
    if not shape:
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            raise UsageError(f"{what}: {where} is {_describe_json(node)}, not a number")
        out.append(node)
        return
    if not isinstance(node, list) or len(node) != shape[0]:
        found = f"{len(node)} entries" if isinstance(node, list) else "a single value"
        raise UsageError(
            f"{what}: ragged array: {where} has {found} where {shape[0]} were expected"
        )
    for index, child in enumerate(node):
        _flatten_checked(child, shape[1:], what, out, (*path, index))


def _describe_json(node: object) -> str:
    try:
        return shorten(json.dumps(node))
    except (ValueError, RecursionError):
        return type(node).__name__
