"""Shapes, values, dtypes and cotangents parsed from command-line strings into plain Python values.

No torch here: `jaccli --help` and `jaccli presets` import this module and must stay fast.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jaccli.errors import UsageError

Shape = tuple[int, ...]

SCALAR_WORD = "scalar"
MAX_NDIM = 64
"""Dimensions a shape may have, as in torch."""
MAX_DIMENSION_DIGITS = 12
DEFAULT_VALUE_LIMIT = 256 * 1024**2
"""Bytes of a --value file or JSON text read at most, unless --max-value-size raises it."""
DTYPES = ("float32", "float64")
_DIMENSION_SEPARATOR = re.compile(r"[x×]", re.IGNORECASE)
PICTURE_VIEWS = ("heatmap", "sparsity")
"""The --view values that draw J (or H) rather than list its numbers."""
SLICE_VIEWS = ("rows", "cols", "full")
"""The --view values that rebuild a result slice by slice (full: not at all)."""
TEXT_FORMATS = ("markdown", "latex")
"""The --format values: the result as text to paste."""


@dataclass(frozen=True)
class ArrayData:
    """A rectangular array of numbers given by the user: float64, or int64 when every number
    given was an integer (a file keeps its own dtype: float32, float64 or an integer type)."""

    shape: Shape
    values: Any
    """numpy.ndarray in `shape` (numpy is imported only when values are given)."""
    from_file: bool = False

    @property
    def is_integer(self) -> bool:
        return self.values.dtype.kind in "iu"


def require_in_range(what: str, data: ArrayData, dtype: str) -> None:
    """Refuse finite numbers that a float32 run would turn into ±Infinity (1e308)."""
    import numpy as np

    if dtype != "float32" or data.values.dtype.kind != "f" or data.values.dtype.itemsize <= 4:
        return
    largest = float(np.finfo(np.float32).max)
    with np.errstate(over="ignore"):
        beyond = np.isinf(data.values.astype(np.float32)) & np.isfinite(data.values)
    if beyond.any():
        example = float(data.values[beyond].flat[0])
        raise UsageError(
            f"{what}: {example:.6g} is past float32's range (±{largest:.4g}) and would become "
            "Infinity; add --dtype float64",
            code="bad_value",
        )


def rounds_in_float32(data: ArrayData, dtype: str) -> bool:
    """Whether a float32 run rounds these float64 numbers."""
    import numpy as np

    if dtype != "float32" or data.values.dtype != np.float64:
        return False
    rounded = data.values.astype(np.float32).astype(np.float64)
    return not np.array_equal(rounded, data.values, equal_nan=True)


Direction = Literal["ones", "randn"] | ArrayData | dict[str, ArrayData]
"""A vector a product is taken with: the cotangent v of vᵀ·J (in the outputs' shapes), the
tangent of J·v or the vector of H·v (in the inputs' shapes)."""
Cotangent = Direction


def format_shape(shape: Shape) -> str:
    """The command-line spelling of a shape: `2x3`, `4`, or `scalar` for `()`."""
    return "x".join(str(d) for d in shape) if shape else SCALAR_WORD


def indexed(name: str, index: Sequence[int]) -> str:
    """`y[1,0]` for index (1, 0); plain `y` for the empty index of a scalar."""
    return f"{name}[{','.join(str(int(i)) for i in index)}]" if len(index) else name


def parse_shape(text: str) -> Shape:
    """A shape from `2x3`, `4`, `2x3x5` or `scalar`; every dimension at least 1."""
    stripped = text.strip()
    if stripped.lower() in (SCALAR_WORD, "()"):
        return ()
    if not stripped:
        raise UsageError(f"empty shape; expected dimensions like 2x3, 4 or {SCALAR_WORD}")
    dimensions = []
    for part in _DIMENSION_SEPARATOR.split(stripped):
        part = part.strip()
        if not part:
            raise UsageError(
                f"bad shape {text!r}: a dimension is missing; expected dimensions separated by "
                f"'x', like 2x3, 4 or {SCALAR_WORD}"
            )
        if not (part.isascii() and part.isdigit()):
            raise UsageError(
                f"bad shape {text!r}: {_shorten(part)!r} is not a positive integer; "
                f"expected dimensions like 2x3, 4 or {SCALAR_WORD}"
            )
        if len(part) > MAX_DIMENSION_DIGITS:
            raise UsageError(
                f"bad shape {_shorten(text)!r}: a dimension has {len(part)} digits "
                f"(at most {MAX_DIMENSION_DIGITS})"
            )
        dimension = int(part)
        if dimension < 1:
            raise UsageError(f"bad shape {text!r}: every dimension must be at least 1")
        dimensions.append(dimension)
    if len(dimensions) > MAX_NDIM:
        raise UsageError(
            f"bad shape {_shorten(text)!r}: {len(dimensions)} dimensions (at most {MAX_NDIM})"
        )
    return tuple(dimensions)


def is_input_name(name: str) -> bool:
    """An input's name is a Python identifier (not a keyword), on the command line as in
    --expr and in a function's signature."""
    return name.isidentifier() and not keyword.iskeyword(name)


def split_named(text: str, option: str) -> tuple[str | None, str]:
    """`name=rest` into (`name`, `rest`); text with no `name=` prefix into (None, text)."""
    name, sep, rest = text.partition("=")
    if not sep:
        return None, text
    name = name.strip()
    if not is_input_name(name):
        raise UsageError(
            f"bad {option} {_shorten(text)!r}: {_shorten(name)!r} is not an input name "
            f"(expected NAME=... or a value alone)"
        )
    return name, rest


def parse_shape_option(text: str) -> tuple[str | None, Shape]:
    """One `--shape` value: `2x3` (the only input) or `a=2x3` (a named input)."""
    name, shape_text = split_named(text, "--shape")
    return name, parse_shape(shape_text)


def parse_batch_axis_option(text: str) -> tuple[str | None, int]:
    """One `--batch-axis`: `x=0` (a named input) or `0` (the only input); negative counts from
    the end."""
    name, axis_text = split_named(text, "--batch-axis")
    try:
        axis = int(axis_text.strip())
    except ValueError:
        raise UsageError(
            f"bad --batch-axis {_shorten(text)!r}: {_shorten(axis_text)!r} is not an axis "
            "(expected NAME=AXIS, like x=0)"
        ) from None
    if abs(axis) > MAX_NDIM:
        raise UsageError(
            f"bad --batch-axis {_shorten(text)!r}: tensors have at most {MAX_NDIM} axes"
        )
    return name, axis


def parse_value_option(
    text: str, size_limit: int = DEFAULT_VALUE_LIMIT
) -> tuple[str | None, ArrayData]:
    """One `--value`: JSON (`x=[[1,2],[3,4]]`), or a file (`x=@a.npy`, `x=@w.safetensors#key`,
    `x=@-` for JSON on stdin); unnamed for the only input."""
    name, value_text = split_named(text, "--value")
    if value_text.startswith("@"):
        from jaccli.loaders import load_array

        return name, load_array(value_text[1:], size_limit)
    return name, parse_json_array(value_text, what="--value", size_limit=size_limit)


def parse_dtype(name: str) -> str:
    """A floating dtype name: float32 or float64."""
    normalized = name.strip().lower()
    if normalized not in DTYPES:
        raise UsageError(f"unknown dtype {_shorten(name)!r} (choose {' or '.join(DTYPES)})")
    return normalized


_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
_BYTES = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")


def parse_bytes(text: str) -> int:
    """A memory size: `4GiB`, `512MiB`, `2G`, `1500000` (bytes)."""
    match = _BYTES.fullmatch(text)
    unit = match and _BYTE_UNITS.get(match.group(2).lower())
    if not match or unit is None or len(match.group(1)) > 20:
        raise UsageError(
            f"bad memory size {_shorten(text)!r}; expected a size like 4GiB, 512MiB or 2G"
        )
    return int(float(match.group(1)) * unit)


def format_bytes(count: float) -> str:
    """Bytes for people: `512 B`, `3.0 KiB`, `1.5 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def parse_direction(
    text: str, option: str, parts: str, size_limit: int = DEFAULT_VALUE_LIMIT
) -> Direction:
    """The vector of a product, given to `option`: `ones`, `randn`, a JSON array of its one
    part's shape, a JSON object with an array for each of its `parts` (outputs for a
    cotangent, inputs for a tangent) by name (`{"y0": [...], "y1": [...]}`), or `@file` /
    `@-` read as `--value` reads them (a .json file or stdin may hold such an object)."""
    stripped = text.strip()
    if stripped in ("ones", "randn"):
        return stripped  # type: ignore[return-value]
    if stripped.startswith("@"):
        return _direction_from_file(stripped[1:], option, parts, size_limit)
    return _direction_from_json(stripped, option, parts, "ones, randn or ", size_limit)


def _direction_from_json(
    text: str, option: str, parts: str, alternatives: str, size_limit: int
) -> Direction:
    """A JSON array, or a JSON object with an array for each of the `parts` by name."""
    if text.lstrip().startswith("{"):
        document = _load_json(text, option, alternatives, size_limit)
        if not isinstance(document, dict) or not document:
            raise UsageError(f"{option}: an object needs an array for each {parts}")
        return {str(name): _array_of(part, f"{option} {name}") for name, part in document.items()}
    return parse_json_array(text, what=option, alternatives=alternatives, size_limit=size_limit)


def _direction_from_file(reference: str, option: str, parts: str, size_limit: int) -> Direction:
    """The vector in a file (or on stdin, `-`), read with --value's loaders and limits; errors
    name `option`."""
    from jaccli.loaders import load_array, read_json_text

    try:
        if reference == "-" or reference.endswith(".json"):
            text = read_json_text(reference, size_limit)
            return _direction_from_json(text, f"{option} @{reference}", parts, "", size_limit)
        return load_array(reference, size_limit)
    except UsageError as error:
        if not error.message.startswith("--value @"):
            raise
        message = f"{option} @{error.message.removeprefix('--value @')}"
        raise UsageError(message, code=error.code) from None


def parse_cotangent(text: str, size_limit: int = DEFAULT_VALUE_LIMIT) -> Direction:
    """The cotangent v of a VJP, in the outputs' shapes (see `parse_direction`)."""
    return parse_direction(text, "--cotangent", "output", size_limit)


def parse_json_array(
    text: str, *, what: str, alternatives: str = "", size_limit: int = DEFAULT_VALUE_LIMIT
) -> ArrayData:
    """A JSON number or rectangular nested list of numbers, checked before any tensor exists."""
    return _array_of(_load_json(text, what, alternatives, size_limit), what)


def _load_json(text: str, what: str, alternatives: str, size_limit: int) -> object:
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
            f"{what} {_shorten(text)!r} is not {alternatives}a JSON array of numbers ({reason})"
        ) from None


INT64_LIMIT = 2**63


def _array_of(document: object, what: str) -> ArrayData:
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


def first_line(error: BaseException) -> str:
    """An exception's message folded to its first line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _nested_shape(document: object, what: str) -> Shape:
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
    node: object, shape: Shape, what: str, out: list[float | int], path: tuple[int, ...]
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
        return _shorten(json.dumps(node))
    except (ValueError, RecursionError):
        return type(node).__name__


def brief(text: str, limit: int) -> str:
    """`text` in at most about `limit` characters, cut between words (never inside a file's
    path) and keeping a trailing `(at file.py:12)` whole."""
    head, at, location = text.rpartition(" (at ")
    if not at or not location.endswith(")"):
        head, location = text, ""
    else:
        location = f" (at {location}"
    room = max(limit - len(location), 20)
    if len(head) > room:
        cut = head[: room - 2].rpartition(" ")[0] or head[: room - 2]
        head = cut.rstrip(" ,;:") + " …"
    return head + location


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
