"""Inputs from zarr: `--value NAME=@x.zarr` read whole (within --max-value-size), and
`--points NAME=@p.zarr` (or a .npy file, mapped) read a block of points at a time."""

from __future__ import annotations

import hashlib
import math
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from jaccli.blocks import require
from jaccli.blocks.job import PointsSource
from jaccli.errors import UsageError
from jaccli.spec import ArrayData, format_shape

if TYPE_CHECKING:
    import zarr

POINTS_SUFFIXES = (".zarr", ".npy")
"""The files of points a block can be read from without reading the rest."""
DIGEST_BYTES = 16 * 1024**2
"""Bytes of points read at once while they are hashed."""


def _open_array(path_text: str, key: str, option: str) -> zarr.Array:
    """The zarr array at `path_text` (or `key` in the group there), opened to read."""
    zarr = require("zarr", f"{option}{path_text}")
    where = f"{option}{path_text}" + (f"#{key}" if key else "")
    if not os.path.isdir(path_text):
        why = "does not exist" if not os.path.lexists(path_text) else "is not a directory"
        raise UsageError(f"{where}: {why}; a .zarr store is a directory", code="bad_value")
    try:
        node = zarr.open(store=path_text, mode="r")
        if isinstance(node, zarr.Group):
            arrays = sorted(name for name, _ in node.arrays())
            if not key and len(arrays) != 1:
                listed = ", ".join(arrays) or "none"
                raise UsageError(
                    f"{where}: a group of {len(arrays)} arrays; name one as "
                    f"{option}{path_text}#NAME (arrays: {listed})",
                    code="bad_value",
                )
            node = node[key or arrays[0]]
        elif key:
            raise UsageError(f"{where}: #{key} selects an array in a group only", code="bad_value")
    except UsageError:
        raise
    except Exception as error:  # zarr's own errors for a damaged or foreign store
        raise UsageError(
            f"{where}: cannot read it as a zarr array ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'})",
            code="bad_value",
        ) from None
    if not isinstance(node, zarr.Array):
        raise UsageError(f"{where}: #{key} is a group, not an array", code="bad_value")
    kind = node.dtype.kind if isinstance(node.dtype, np.dtype) else "?"
    if kind not in "fiu":
        raise UsageError(
            f"{where}: holds {node.dtype} numbers; expected floats or integers", code="bad_value"
        )
    return node


def load_zarr_value(path_text: str, key: str, size_limit: int) -> ArrayData:
    """`--value NAME=@x.zarr` (or `x.zarr#name` in a group): the whole array, refused before
    it is read when it holds more than `size_limit` bytes."""
    from jaccli.loaders import as_array_data, check_count

    array = _open_array(path_text, key, "--value @")
    where = path_text + (f"#{key}" if key else "")
    check_count(where, tuple(array.shape), array.dtype.itemsize, size_limit)
    return as_array_data(array[...], where)


def points_source(name: str, path_text: str) -> PointsSource:
    """`--points NAME=@FILE` to read a block at a time: a .zarr array (`FILE#key` in a group)
    or a .npy file; its points hashed once (NOTE [what a store belongs to] in store.py)."""
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
    digest = hashlib.sha256(f"{array.dtype}{shape}".encode())
    step = max(1, DIGEST_BYTES // max(1, math.prod(shape[1:]) * array.dtype.itemsize))
    for start in range(0, shape[0], step):
        digest.update(np.ascontiguousarray(array[start : start + step]).tobytes())
    absolute = os.path.abspath(path) + (f"#{key}" if key else "")
    return PointsSource(name, absolute, shape[0], shape[1:], digest.hexdigest())


def _open_points(path: str, key: str, name: str) -> Any:
    if path.rstrip("/").endswith(".zarr"):
        return _open_array(path, key, f"--points {name}=@")
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
    """Points start:stop of `source`, as float64 or float32 (integers as float64)."""
    path, _, key = source.path.partition("#")
    block = np.asarray(_open_points(path, key, source.name)[start:stop])
    if block.dtype not in (np.float32, np.float64):
        block = block.astype(np.float64)
    return block
