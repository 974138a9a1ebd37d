"""Shapes, values, dtypes and cotangents parsed from command-line strings into plain Python values.

No torch here: `jaccli --help` and `jaccli presets` import this module and must stay fast.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from jaccli.arrays import (
    DEFAULT_VALUE_LIMIT,
    MAX_NDIM,
    ArrayData,
    array_of,
    load_json,
    parse_json_array,
)
from jaccli.errors import UsageError
from jaccli.messages import shorten

Shape = tuple[int, ...]

SCALAR_WORD = "scalar"
MAX_DIMENSION_DIGITS = 12
DTYPES = ("float32", "float64")
_DIMENSION_SEPARATOR = re.compile(r"[x×]", re.IGNORECASE)
PICTURE_VIEWS = ("heatmap", "sparsity")
"""The --view values that draw J (or H) rather than list its numbers."""
SLICE_VIEWS = ("rows", "cols", "full")
"""The --view values that rebuild a result slice by slice (full: not at all)."""
TEXT_FORMATS = ("markdown", "latex")
"""The --format values: the result as text to paste."""
STREAM = "-"
"""The source of `--points NAME=@-`: JSON Lines on stdin."""


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
                f"bad shape {text!r}: {shorten(part)!r} is not a positive integer; "
                f"expected dimensions like 2x3, 4 or {SCALAR_WORD}"
            )
        if len(part) > MAX_DIMENSION_DIGITS:
            raise UsageError(
                f"bad shape {shorten(text)!r}: a dimension has {len(part)} digits "
                f"(at most {MAX_DIMENSION_DIGITS})"
            )
        dimension = int(part)
        if dimension < 1:
            raise UsageError(f"bad shape {text!r}: every dimension must be at least 1")
        dimensions.append(dimension)
    if len(dimensions) > MAX_NDIM:
        raise UsageError(
            f"bad shape {shorten(text)!r}: {len(dimensions)} dimensions (at most {MAX_NDIM})"
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
            f"bad {option} {shorten(text)!r}: {shorten(name)!r} is not an input name "
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
            f"bad --batch-axis {shorten(text)!r}: {shorten(axis_text)!r} is not an axis "
            "(expected NAME=AXIS, like x=0)"
        ) from None
    if abs(axis) > MAX_NDIM:
        raise UsageError(
            f"bad --batch-axis {shorten(text)!r}: tensors have at most {MAX_NDIM} axes"
        )
    return name, axis


def parse_points_option(text: str) -> tuple[str, str]:
    """One `--points NAME=SOURCE`: the input's name and `@file` or `@-`."""
    name, source = split_named(text, "--points")
    if name is None or not source.startswith("@") or len(source) < 2:
        raise UsageError(
            f"bad --points {text[:60]!r}: expected NAME=@FILE (.npy, .pt, .safetensors, .json, "
            ".jsonl) or NAME=@- (JSON Lines on stdin)"
        )
    return name, source[1:]


def parse_value_option(
    text: str, size_limit: int = DEFAULT_VALUE_LIMIT
) -> tuple[str | None, ArrayData]:
    """One `--value`: JSON (`x=[[1,2],[3,4]]`), or a file (`x=@a.npy`, `x=@w.safetensors#key`,
    `x=@-` for JSON on stdin); unnamed for the only input."""
    name, value_text = split_named(text, "--value")
    return name, read_value(value_text, size_limit)


def read_value(text: str, size_limit: int = DEFAULT_VALUE_LIMIT) -> ArrayData:
    """The values of one `--value` after its `NAME=`: JSON, or `@file` (`@-`: JSON on stdin)."""
    if text.startswith("@"):
        from jaccli.loaders import load_array  # numpy: only a value from a file needs it

        return load_array(text[1:], size_limit)
    return parse_json_array(text, what="--value", size_limit=size_limit)


def parse_dtype(name: str) -> str:
    """A floating dtype name: float32 or float64."""
    normalized = name.strip().lower()
    if normalized not in DTYPES:
        raise UsageError(f"unknown dtype {shorten(name)!r} (choose {' or '.join(DTYPES)})")
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
            f"bad memory size {shorten(text)!r}; expected a size like 4GiB, 512MiB or 2G"
        )
    return int(float(match.group(1)) * unit)


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
        document = load_json(text, option, alternatives, size_limit)
        if not isinstance(document, dict) or not document:
            raise UsageError(f"{option}: an object needs an array for each {parts}")
        return {str(name): array_of(part, f"{option} {name}") for name, part in document.items()}
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


MAX_LOCAL_WORKERS = 256
_LOCAL_CLUSTER = re.compile(r"local(?::(\d{1,4}))?")
_SCHEDULER = re.compile(r"(tcp|tls)://([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})")
"""A host name or IPv4 address, or an IPv6 address in brackets, and a port: nothing that
Dask's parser would fail on, nor control characters that would reach the terminal."""
MAX_PORT = 65535


@dataclass(frozen=True)
class ClusterSpec:
    """`--cluster local[:N]` (a LocalCluster of N processes; None: one a core) or
    `--cluster tcp://HOST:PORT` (a scheduler)."""

    address: str | None = None
    workers: int | None = None


def parse_cluster(text: str) -> ClusterSpec:
    """The cluster `--cluster TEXT` names; UsageError for anything else."""
    local = _LOCAL_CLUSTER.fullmatch(text)
    if local is not None:
        count = None if local.group(1) is None else int(local.group(1))
        if count is not None and not 1 <= count <= MAX_LOCAL_WORKERS:
            raise UsageError(
                f"--cluster {text}: the number of workers must be 1 to {MAX_LOCAL_WORKERS}"
            )
        return ClusterSpec(None, count)
    scheduler = _SCHEDULER.fullmatch(text)
    if scheduler is not None:
        if not 1 <= int(scheduler.group(3)) <= MAX_PORT:
            raise UsageError(f"--cluster {text}: the port must be 1 to {MAX_PORT}")
        return ClusterSpec(text, None)
    raise UsageError(
        f"bad --cluster {text[:60]!r}: expected local, local:N (N worker processes) or "
        "tcp://HOST:PORT (a running Dask scheduler)"
    )
