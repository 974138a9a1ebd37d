"""Inputs from zarr: `--value NAME=@x.zarr` read whole (within --max-value-size), and
`--points NAME=@p.zarr` (or a .npy file, mapped) read a block of points at a time."""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from jaccli.blocks.arrays import open_array
from jaccli.errors import UsageError
from jaccli.spec import Shape, format_shape

if TYPE_CHECKING:
    pass

POINTS_SUFFIXES = (".zarr", ".npy")
"""The files of points a block can be read from without reading the rest."""
DIGEST_BYTES = 16 * 1024**2
"""Bytes of points read at once while they are hashed."""


@dataclass(frozen=True)
class PointsSource:
    """`--points NAME=@FILE` read a block at a time: a .zarr array, or a .npy file mapped."""

    name: str
    path: str
    count: int
    point_shape: Shape
    digest: str
    """sha256 of the points' bytes, read once when the run starts."""


def points_source(name: str, path_text: str) -> PointsSource:
    """`--points NAME=@FILE` to read a block at a time: a .zarr array (`FILE#key` in a group)
    or a .npy file; its points hashed once (NOTE [what a store belongs to] in store.py)."""
    path, key, array, shape = _opened(name, path_text)
    digest = hashlib.sha256(f"{array.dtype}{shape}".encode())
    step = max(1, DIGEST_BYTES // max(1, math.prod(shape[1:]) * array.dtype.itemsize))
    for start in range(0, shape[0], step):
        digest.update(np.ascontiguousarray(array[start : start + step]).tobytes())
    absolute = os.path.abspath(path) + (f"#{key}" if key else "")
    return PointsSource(name, absolute, shape[0], shape[1:], digest.hexdigest())


def peek_points(name: str, path_text: str) -> tuple[int, np.ndarray]:
    """How many points `--points NAME=@FILE` holds, and the first, read from the file's
    metadata and first point only (for --plan: nothing else is read)."""
    _, _, array, shape = _opened(name, path_text)
    first = np.asarray(array[0:1])
    if first.dtype not in (np.float32, np.float64):
        first = first.astype(np.float64)
    return shape[0], first[0]


def _opened(name: str, path_text: str) -> tuple[str, str, Any, tuple[int, ...]]:
    """The points' file opened (not read): its path, the key in a group, the array, its shape."""
    path, _, key = path_text.partition("#")
    suffix = os.path.splitext(path.rstrip("/"))[1]
    if suffix not in POINTS_SUFFIXES:
        raise UsageError(
            f"--points {name}=@{path_text}: results stored block by block read points from a "
            f".zarr or .npy file, a block at a time; convert it to one of those",
            code="bad_value",
        )
    array = _open_points(path, key, name)
    shape = tuple(int(d) for d in array.shape)
    if len(shape) == 0 or shape[0] == 0 or 0 in shape:
        raise UsageError(
            f"--points {name}=@{path_text}: the points run along the leading axis; got shape "
            f"{format_shape(shape)}",
            code="bad_value",
        )
    return path, key, array, shape


def _open_points(path: str, key: str, name: str) -> Any:
    if path.rstrip("/").endswith(".zarr"):
        return open_array(path, key, f"--points {name}=@")
    if os.path.exists(path) and not os.path.isfile(path):  # np.load of a FIFO waits for ever
        raise UsageError(
            f"--points {name}=@{path}: is not a regular file (a pipe, socket, device or "
            "directory); refused",
            code="bad_value",
        )
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"--points {name}=@{path}: cannot read it as a .npy file ({error})", code="bad_value"
        ) from None
    if array.dtype.kind not in "fiu":
        raise UsageError(
            f"--points {name}=@{path}: holds {array.dtype} numbers; expected floats or integers",
            code="bad_value",
        )
    return array


def read_points(source: PointsSource, start: int, stop: int) -> np.ndarray:
    """Points start:stop of `source`, as float64 or float32 (integers as float64), in an array
    of their own: a .npy file's points are a read-only map of it, which torch.from_numpy
    warned of on the user's stderr."""
    path, _, key = source.path.partition("#")
    block = np.asarray(_open_points(path, key, source.name)[start:stop])
    if block.dtype not in (np.float32, np.float64):
        return block.astype(np.float64)
    return np.require(block, requirements="W")
