"""zarr arrays opened to read, for `--value NAME=@x.zarr` (loaders.py) and `--points
NAME=@p.zarr` (inputs.py); zarr is imported when one is opened."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from jaccli.blocks import require
from jaccli.errors import UsageError

if TYPE_CHECKING:
    import zarr


def open_array(path_text: str, key: str, option: str) -> zarr.Array:
    """The zarr array at `path_text` (or `key` in the group there), opened to read."""
    zarr = require("zarr", f"{option}{path_text}")
    where = f"{option}{path_text}" + (f"#{key}" if key else "")
    if not os.path.isdir(path_text):
        why = "does not exist" if not os.path.lexists(path_text) else "is not a directory"
        raise UsageError(f"{where}: {why}; a .zarr store is a directory", code="bad_value")
    require_own_files(where, path_text)
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
    _require_chunk_sizes(where, os.path.join(path_text, node.store_path.path), node)
    return node


METADATA = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
METADATA_LIMIT = 16 * 1024**2
"""The largest metadata file read: JSON that describes arrays, not data."""
CHUNK_SLACK = 1 << 16
"""Bytes a compressed chunk may take beyond its values (a codec's headers, an incompressible
chunk stored with a little overhead)."""


def require_own_files(where: str, store: str) -> None:
    """UsageError unless every file in the store is a regular file of its own: zarr follows a
    link to another file (and reads it as numbers), to /dev/zero (and reads until memory runs
    out) or to a FIFO (and waits for ever), and reads a metadata file whole."""
    for root, folders, files in os.walk(store):
        for name in folders + files:
            entry = os.path.join(root, name)
            shown = os.path.relpath(entry, store)
            if os.path.islink(entry):
                raise UsageError(
                    f"{where}: {shown} is a link; a store's files must be its own", code="bad_value"
                )
            if name in files and not os.path.isfile(entry):
                raise UsageError(f"{where}: {shown} is not a regular file", code="bad_value")
            if name in METADATA and os.path.getsize(entry) > METADATA_LIMIT:
                raise UsageError(
                    f"{where}: {shown} holds {os.path.getsize(entry)} bytes of metadata; refused",
                    code="bad_value",
                )


def _require_chunk_sizes(where: str, folder: str, node: zarr.Array) -> None:
    """UsageError unless every chunk file of the array is no larger than a chunk (or shard)
    can be: zarr reads a chunk file whole, however large it is."""
    chunk = node.shards or node.chunks
    largest = 2 * int(np.prod(chunk, dtype=np.int64)) * node.dtype.itemsize + CHUNK_SLACK
    for root, _, files in os.walk(folder):
        for name in files:
            entry = os.path.join(root, name)
            if name not in METADATA and os.path.getsize(entry) > largest:
                raise UsageError(
                    f"{where}: {os.path.relpath(entry, folder)} holds "
                    f"{os.path.getsize(entry)} bytes, more than a chunk of this array can",
                    code="bad_value",
                )
