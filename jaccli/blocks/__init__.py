"""J and many points in blocks: planned to fit the memory budget, stored in a zarr array block
by block, computed in this process or as tasks on Dask (NOTE [blocks, tasks and the store] in
jaccli/blocks/run.py).

zarr and Dask are optional extras, imported only where a block is stored or a cluster is used
(`require`): `import jaccli` and `jaccli --help` import neither.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from jaccli.errors import MissingDependencyError

EXTRAS = {
    "zarr": ("zarr", "jaccli[zarr]", 3),
    "dask": ("dask", "jaccli[dask]", None),
    "distributed": ("dask's distributed scheduler", "jaccli[dask]", None),
}
"""A module: what it is called for people, the extra that installs it, its lowest major version."""


def require(module: str, needed_by: str) -> ModuleType:
    """The optional module, imported now; MissingDependencyError (exit 2) naming the pip line
    when it is missing or too old."""
    what, extra, major = EXTRAS[module]
    try:
        imported = importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{needed_by} needs {what}, which is not installed: pip install '{extra}'"
        ) from None
    version = getattr(imported, "__version__", "")
    if major is not None and version.split(".")[0].isdigit() and int(version.split(".")[0]) < major:
        raise MissingDependencyError(
            f"{needed_by} needs {what} {major} or later (found {version}): "
            f"pip install --upgrade '{extra}'"
        )
    return imported
