"""A sparsity pattern given by the user (`--sparsity FILE`): a `scipy.sparse.save_npz` file
(.npz) or a Matrix Market file (.mtx).

Every file is hostile until checked: it is read as --value files are (a regular file, within
the size limit), an .npz loads without pickle and each of its arrays is checked (integer
indices within the shape, a non-decreasing index pointer) before scipy sees it, and a Matrix
Market header's counts are checked against the file's size before scipy reads the entries.
Every entry the file stores counts, whatever its value: a pattern may hold more than J's
non-zeros, never fewer, and the correctness guard checks J against it.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from jaccli.engine.guard import require_within_budget
from jaccli.engine.sparse import dependencies as deps
from jaccli.engine.sparse.pattern import SparsityPattern
from jaccli.errors import UsageError
from jaccli.loaders import read_regular_file
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import first_line, format_bytes
from jaccli.spec import DEFAULT_VALUE_LIMIT

OPTION = "--sparsity"
SUFFIXES = (".npz", ".mtx")
BYTES_PER_ENTRY = 16
"""An entry's row and column while the pattern is built."""
NPZ_FORMATS = ("csr", "csc", "coo")


def read_pattern(
    path: str,
    shape: tuple[int, int],
    size_limit: int = DEFAULT_VALUE_LIMIT,
    budget: int | None = None,
) -> SparsityPattern:
    """The pattern a file gives, as a `shape` (outputs × wrt inputs) boolean matrix;
    UsageError (exit 2) naming the file for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise _error(path, f"unknown kind of file (use {' or '.join(SUFFIXES)})")
    data = read_regular_file(path, size_limit, option=f"{OPTION} ")
    if suffix == ".npz":
        rows, columns, stored = _npz_entries(path, data, size_limit, budget)
    else:
        rows, columns, stored = _mtx_entries(path, data)
    if stored != tuple(shape):
        raise _error(
            path,
            f"is a {stored[0]}×{stored[1]} pattern; J here is {shape[0]}×{shape[1]} (outputs "
            "flattened × the --wrt inputs flattened)",
        )
    return _as_pattern(path, rows, columns, shape, budget)


def _error(path: str, text: str) -> UsageError:
    return UsageError(f"{OPTION} {path}: {text}", code="bad_sparsity_file")


def _as_pattern(
    path: str,
    rows: np.ndarray,
    columns: np.ndarray,
    shape: tuple[int, int],
    budget: int | None,
) -> SparsityPattern:
    require_within_budget(
        f"the sparsity pattern of {path} ({len(rows)} entries)",
        len(rows) * BYTES_PER_ENTRY,
        budget,
        "give a sparser pattern",
    )
    matrix = deps.from_pairs(rows.astype(np.int64), columns.astype(np.int64), shape)
    return SparsityPattern(matrix, exact=False, value_dependent=False)


# Reading .npz files (what scipy.sparse.save_npz writes).


def _npz_entries(
    path: str, data: bytes, size_limit: int = DEFAULT_VALUE_LIMIT, budget: int | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(rows, columns, shape) of the entries an .npz stores, every array checked."""
    arrays = _npz_arrays(path, data, size_limit, budget)
    kind = arrays.get("format")
    if kind is None or kind.dtype.kind not in "SU" or kind.shape != ():
        raise _error(path, "is not a scipy.sparse .npz file (no 'format' entry)")
    kind_text = str(kind.item().decode() if isinstance(kind.item(), bytes) else kind.item())
    if kind_text not in NPZ_FORMATS:
        raise _error(
            path,
            f"stores a {kind_text!r} matrix; save a csr, csc or coo one (scipy.sparse.save_npz)",
        )
    stored_shape = _integers(path, arrays, "shape", 1)
    if stored_shape.shape != (2,) or (stored_shape < 0).any():
        raise _error(path, "has no valid 'shape' entry (two non-negative integers)")
    shape = (int(stored_shape[0]), int(stored_shape[1]))
    if kind_text == "coo":
        rows = _integers(path, arrays, "row", 1)
        columns = _integers(path, arrays, "col", 1)
        if rows.shape != columns.shape:
            raise _error(path, "has 'row' and 'col' of different lengths")
    else:
        outer = shape[0] if kind_text == "csr" else shape[1]
        indptr = _integers(path, arrays, "indptr", 1)
        indices = _integers(path, arrays, "indices", 1)
        if (
            len(indptr) != outer + 1
            or indptr[0] != 0
            or indptr[-1] != len(indices)
            or (np.diff(indptr) < 0).any()
        ):
            raise _error(path, "has an invalid 'indptr' (it must rise from 0 to the entry count)")
        expanded = np.repeat(np.arange(outer, dtype=np.int64), np.diff(indptr))
        rows, columns = (expanded, indices) if kind_text == "csr" else (indices, expanded)
    _require_within(path, rows, shape[0], "row")
    _require_within(path, columns, shape[1], "column")
    return rows, columns, shape


def _npz_arrays(
    path: str, data: bytes, size_limit: int = DEFAULT_VALUE_LIMIT, budget: int | None = None
) -> Mapping[str, np.ndarray]:
    """The arrays of an .npz file, each loaded without pickle, their expanded size within the
    size limit of a --value file and the memory budget (a zip bomb is refused before it is
    expanded; a dense pattern, whose indices compress hundreds of times, is not a bomb)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        expanded = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise _error(path, f"is not an .npz file ({first_line(error)})") from None
    if expanded > 4 * len(data) + 2**20 and expanded > size_limit:
        raise _error(
            path,
            f"expands to {format_bytes(expanded)} from {format_bytes(len(data))}, over the "
            f"limit of {format_bytes(size_limit)} (--max-value-size)",
        )
    require_within_budget(
        f"the arrays of {path} ({format_bytes(expanded)} once expanded)",
        expanded,
        budget,
        "give a sparser pattern",
    )
    for info in archive.infolist():
        _require_header_within(path, archive, info)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except Exception as error:  # a hostile archive may fail anywhere in numpy's reader
        raise_if_out_of_memory(error)
        raise _error(path, f"cannot be read as an .npz file ({first_line(error)})") from None
    for name, array in arrays.items():
        if not isinstance(array, np.ndarray):  # a member without .npy's header: its bytes
            raise _error(path, f"has an entry {name!r} that is not a .npy array")
    return arrays


def _require_header_within(path: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """UsageError unless the .npy member's header declares no more bytes than the member
    holds: numpy allocates what the header says before it reads, so a header that lies about
    its shape would be a memory refusal (exit 3) for what is a bad file."""
    from numpy.lib import format as npy

    try:
        with archive.open(info) as member:
            if member.read(len(npy.MAGIC_PREFIX)) != npy.MAGIC_PREFIX:
                return  # not an array: numpy gives its bytes, which no entry accepts
            member.seek(0)
            version = npy.read_magic(member)
            read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            shape, _, dtype = read(member)
            header_bytes = member.tell()
    except Exception as error:  # a hostile header may fail anywhere in numpy's reader
        raise _error(path, f"cannot be read as an .npz file ({first_line(error)})") from None
    declared = dtype.itemsize * int(np.prod(shape, dtype=object))
    if declared > info.file_size - header_bytes:
        raise _error(
            path,
            f"{info.filename} declares {declared} bytes of data and holds "
            f"{max(0, info.file_size - header_bytes)}",
        )


def _integers(path: str, arrays: Mapping[str, np.ndarray], name: str, ndim: int) -> np.ndarray:
    array = arrays.get(name)
    if array is None or array.dtype.kind not in "iu" or array.ndim != ndim:
        raise _error(path, f"has no valid {name!r} entry (a 1-D array of integers)")
    return array.astype(np.int64)


def _require_within(path: str, positions: np.ndarray, size: int, what: str) -> None:
    if len(positions) and (positions.min() < 0 or positions.max() >= size):
        raise _error(path, f"has a {what} index outside 0…{size - 1}")


# Reading Matrix Market files.

MTX_HEADER = re.compile(
    r"%%MatrixMarket\s+matrix\s+(coordinate|array)\s+(real|integer|complex|pattern)\s+"
    r"(general|symmetric|skew-symmetric|hermitian)\s*",
    re.IGNORECASE,
)


def _mtx_entries(path: str, data: bytes) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """(rows, columns, shape) of the entries a Matrix Market file stores (its non-zeros for a
    dense `array` file), its header's counts checked against its size before scipy reads it."""
    text = data.decode("ascii", errors="replace")
    lines = iter(text.splitlines())
    header = next(lines, "")
    match = MTX_HEADER.fullmatch(header.strip())
    if match is None:
        raise _error(path, "is not a Matrix Market file (no '%%MatrixMarket matrix …' header)")
    layout = match.group(1).lower()
    size_line = next((line for line in lines if line.strip() and not line.startswith("%")), "")
    counts = size_line.split()
    expected = 3 if layout == "coordinate" else 2
    if len(counts) != expected or not all(c.isdigit() for c in counts):
        raise _error(path, f"has no valid size line ({expected} non-negative integers)")
    shape = (int(counts[0]), int(counts[1]))
    entries = int(counts[2]) if layout == "coordinate" else shape[0] * shape[1]
    if entries > len(data) // 2:  # each entry takes two characters at least
        raise _error(path, f"claims {entries} entries, more than its {len(data)} bytes can hold")
    import scipy.io

    try:
        matrix = scipy.io.mmread(io.BytesIO(data))
    except Exception as error:  # a malformed file fails in scipy's parser, in any way
        raise_if_out_of_memory(error)
        raise _error(path, f"cannot be read as Matrix Market ({first_line(error)})") from None
    if isinstance(matrix, np.ndarray):
        rows, columns = np.nonzero(matrix)
    else:
        coordinates = sp.coo_array(matrix)
        rows, columns = coordinates.row, coordinates.col
    return np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64), shape
