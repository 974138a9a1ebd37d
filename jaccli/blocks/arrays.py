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
