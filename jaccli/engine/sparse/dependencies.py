"""Dependency matrices: for each element of a tensor (a row), the input elements it depends on
(its columns), as a boolean `scipy.sparse.csr_array`, and the few row operations the rules of
pattern detection are made of.

Rows are a tensor's elements in its logical (row-major) order, or a storage's elements in
memory order; the columns are the `wrt` inputs' elements, flattened and concatenated. `None`
stands for a matrix without any entry (a constant), so constants cost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

Dependencies = sp.csr_array
"""Rows: elements; columns: input elements; an entry: the row may depend on the column."""


def no_dependencies(rows: int, columns: int) -> Dependencies:
    """A matrix of `rows` rows without any entry."""
    return sp.csr_array((rows, columns), dtype=bool)


def from_pairs(rows: np.ndarray, columns: np.ndarray, shape: tuple[int, int]) -> Dependencies:
    """The matrix with an entry at each (rows[k], columns[k]), duplicates merged."""
    data = np.ones(len(rows), dtype=bool)
    index = index_dtype(shape, len(rows))
    matrix = sp.csr_array((data, (rows.astype(index), columns.astype(index))), shape=shape)
    matrix.sum_duplicates()
    return matrix


def index_dtype(shape: tuple[int, int], entries: int) -> type[np.signedinteger]:
    """int32 where every index and the entry count fit, as scipy's own results have them:
    half the memory of int64."""
    return np.int32 if max(*shape, entries) < 2**31 else np.int64


def index_map(shape: Sequence[int], strides: Sequence[int], offset: int) -> np.ndarray:
    """For each element of a strided view, in logical order, its position in the storage."""
    positions = np.array(offset, dtype=np.int64)
    for size, stride in zip(shape, strides, strict=True):
        positions = positions[..., None] + np.arange(size, dtype=np.int64) * stride
    return positions.reshape(-1)


def take_rows(matrix: Dependencies, rows: np.ndarray) -> Dependencies:
    """The matrix of `matrix`'s rows at `rows` (repeats allowed), in that order.

    A run of consecutive rows (a slice, a view at an offset) shares `matrix`'s arrays.
    """
    count = len(rows)
    if count and rows[0] + count - 1 == rows[-1] and _consecutive(rows):
        first, last = int(rows[0]), int(rows[-1]) + 1
        start, stop = matrix.indptr[first], matrix.indptr[last]
        return sp.csr_array(
            (
                matrix.data[start:stop],
                matrix.indices[start:stop],
                matrix.indptr[first : last + 1] - start,
            ),
            shape=(count, matrix.shape[1]),
        )
    indptr = matrix.indptr
    starts = indptr[rows].astype(np.int64)
    lengths = indptr[rows + 1] - starts
    total = int(lengths.sum())
    index = index_dtype(matrix.shape, total)
    new_indptr = np.zeros(count + 1, dtype=index)
    np.cumsum(lengths, out=new_indptr[1:])
    positions = np.repeat(starts - new_indptr[:-1], lengths) + np.arange(total, dtype=np.int64)
    return sp.csr_array(
        (matrix.data[positions], matrix.indices[positions].astype(index, copy=False), new_indptr),
        shape=(count, matrix.shape[1]),
    )


def _consecutive(rows: np.ndarray) -> bool:
    return bool(np.all(np.diff(rows) == 1)) if len(rows) > 1 else True


def union(matrices: Sequence[Dependencies | None]) -> Dependencies | None:
    """Entry-wise or of matrices of one shape; None when none has an entry."""
    present = [m for m in matrices if m is not None and m.nnz]
    if not present:
        return None
    total = present[0]
    for matrix in present[1:]:
        total = total + matrix
    return total


def group_union(matrix: Dependencies, groups: np.ndarray, count: int) -> Dependencies:
    """Row g of the result: the union of the rows k of `matrix` with groups[k] == g."""
    gather = from_pairs(groups, np.arange(len(groups), dtype=np.int64), (count, len(groups)))
    return canonical(gather @ matrix)


def combine(pairs: tuple[np.ndarray, np.ndarray], rows: int, matrix: Dependencies) -> Dependencies:
    """Row r of the result: the union of `matrix`'s rows c over the pairs (r, c)."""
    width = matrix.shape[1]
    lengths = np.diff(matrix.indptr)
    if width and matrix.nnz and bool(np.isin(lengths, (0, width)).all()):
        # rows that depend on everything or nothing (a dense layer's): a result row depends on
        # everything where one of its pairs does, without the product's r·c·width work
        hit = np.zeros(rows, dtype=bool)
        hit[pairs[0][lengths[pairs[1]] > 0]] = True
        return repeated_rows(hit, width)
    selector = from_pairs(pairs[0], pairs[1], (rows, matrix.shape[0]))
    return canonical(selector @ matrix)


def repeated_rows(full: np.ndarray, width: int) -> Dependencies:
    """A row with every column where `full`, an empty row elsewhere."""
    count = int(full.sum())
    index = index_dtype((len(full), width), count * width)
    indptr = np.zeros(len(full) + 1, dtype=index)
    np.cumsum(full.astype(index) * width, out=indptr[1:])
    indices = np.tile(np.arange(width, dtype=index), count)
    shape = (len(full), width)
    return sp.csr_array((np.ones(len(indices), dtype=bool), indices, indptr), shape=shape)


def replace_rows(matrix: Dependencies, rows: np.ndarray, new: Dependencies | None) -> Dependencies:
    """`matrix` with its rows at `rows` replaced by the rows of `new` (None: emptied)."""
    count = matrix.shape[0]
    choice = np.arange(count, dtype=np.int64)
    if new is None:
        new = no_dependencies(1, matrix.shape[1])
        choice[rows] = count
    else:
        choice[rows] = count + np.arange(len(rows), dtype=np.int64)
    stacked = sp.vstack([matrix, new], format="csr")
    return take_rows(stacked, choice)


def canonical(matrix: Dependencies) -> Dependencies:
    """`matrix` with sorted column indices and no duplicates (a product leaves them unsorted)."""
    if not matrix.has_canonical_format:
        matrix.sum_duplicates()
    return matrix


def entries_bound(selector_rows: np.ndarray, matrix: Dependencies) -> int:
    """How many entries a union of `matrix`'s rows at `selector_rows` can have at most."""
    lengths = np.diff(matrix.indptr)
    return int(lengths[selector_rows].sum())


def keep_rows(matrix: Dependencies, kept: np.ndarray) -> Dependencies:
    """`matrix` with the rows where `kept` is False emptied."""
    lengths = np.diff(matrix.indptr)
    entries = np.repeat(kept, lengths)
    indptr = np.zeros_like(matrix.indptr)
    np.cumsum(lengths * kept, out=indptr[1:])
    return sp.csr_array((matrix.data[entries], matrix.indices[entries], indptr), shape=matrix.shape)


def stack(matrices: Sequence[Dependencies]) -> Dependencies:
    """The rows of each matrix in turn."""
    return sp.vstack(matrices, format="csr") if len(matrices) > 1 else matrices[0]


def repeated_row(columns: np.ndarray, count: int, width: int) -> Dependencies:
    """`count` rows, each with entries at `columns` (sorted, unique)."""
    index = index_dtype((count, width), count * len(columns))
    indptr = np.arange(count + 1, dtype=index) * len(columns)
    indices = np.tile(columns.astype(index), count)
    return sp.csr_array((np.ones(len(indices), dtype=bool), indices, indptr), shape=(count, width))
