"""J as one matrix (rows = outputs, columns = inputs): its non-zero structure and its picture.

NOTE [pictures of J]: `--view heatmap` and `--view sparsity` draw the matrix every entry of J
belongs to, outputs flattened down the rows and inputs across the columns, in `wrt` order
(for a Hessian, rows over each input of the gradient and columns over each input). Past the
frame it is pooled: each cell keeps the entry of largest magnitude it covers, sign and all,
so a single large entry is never averaged away and a cell is zero only where every entry is.
Each output and input is pooled on its own, so their separators fall between cells.

J is read a tile at a time (BAND_ENTRIES entries at most) and never copied whole: J is
already as large as --max-memory lets it be, and a picture must not double it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import scipy.sparse as sp

from jaccli.result import (
    BlockDiagonal,
    HessianResult,
    JacobianResult,
    Picture,
    PictureGroup,
    SparseHessianResult,
    SparseJacobianResult,
    Structure,
)

RANK_LIMIT = 2048
"""The numerical rank is computed (by SVD) up to this many rows or columns."""
BAND_ENTRIES = 1 << 21
"""Entries of J read at a time: the picture and the structure read J in tiles, so they hold a
few MiB beside it whatever its size."""
RANK_ENTRIES = 1 << 22
"""The numerical rank (an SVD of a float64 copy) is computed up to this many entries of J."""


@dataclass(frozen=True)
class Joint:
    """Every J of a result as the blocks of one matrix: `blocks[r][c]` is a 2-D view of the
    rows of row group r and the columns of column group c (no copy of J is made)."""

    blocks: list[list[np.ndarray]]
    row_groups: list[tuple[str, int]]
    column_groups: list[tuple[str, int]]
    title: str

    @property
    def shape(self) -> tuple[int, int]:
        return sum(n for _, n in self.row_groups), sum(n for _, n in self.column_groups)

    def tiles(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """(first row, first column, a view of the entries there): tiles of at most
        BAND_ENTRIES entries covering the matrix, no copy made."""
        top = 0
        for row_blocks, (_, height) in zip(self.blocks, self.row_groups, strict=True):
            left = 0
            for block, (_, width) in zip(row_blocks, self.column_groups, strict=True):
                tile_width = min(width, BAND_ENTRIES) or 1
                tile_height = max(BAND_ENTRIES // tile_width, 1)
                for row in range(0, height, tile_height):
                    for column in range(0, width, tile_width):
                        tile = block[row : row + tile_height, column : column + tile_width]
                        yield top + row, left + column, tile
                left += width
            top += height

    def dense(self) -> np.ndarray:
        """The whole matrix as one float64 array (for small J only)."""
        return np.block(self.blocks).astype(np.float64)


def joint_matrix(result: JacobianResult | HessianResult) -> Joint:
    """Every J of the result as one matrix: rows over the outputs, columns over the inputs in
    `wrt` order (for a Hessian, rows over each output and input of the gradient)."""
    outputs = result.evaluation.outputs
    if isinstance(result, HessianResult):
        sizes = {value.name: value.values.size for value in result.evaluation.inputs}
        blocks, row_groups = [], []
        for y_name, by_a in result.hessians.items():
            y_size = outputs[y_name].size
            for a_name, by_b in by_a.items():
                blocks.append([h.reshape(y_size * sizes[a_name], -1) for h in by_b.values()])
                label = a_name if len(outputs) == 1 and y_size == 1 else f"{y_name}·{a_name}"
                row_groups.append((label, y_size * sizes[a_name]))
        column_groups = [(b, sizes[b]) for b in result.evaluation.wrt]
        title = f"∂²{_names(result.hessians)}/∂{_names(result.evaluation.wrt)}²"
        return Joint(blocks, row_groups, column_groups, title)
    if result.per_sample is not None:
        raise ValueError("a per-sample result holds only J's diagonal blocks")
    blocks, row_groups = [], []
    column_groups: list[tuple[str, int]] = []
    for y_name, by_wrt in result.jacobians.items():
        y_size = outputs[y_name].size
        blocks.append([j.reshape(y_size, -1) for j in by_wrt.values()])
        row_groups.append((y_name, y_size))
        column_groups = [(x, b.shape[1]) for x, b in zip(by_wrt, blocks[-1], strict=True)]
    title = f"∂{_names(result.jacobians)}/∂{_names(dict(column_groups))}"
    return Joint(blocks, row_groups, column_groups, title)


NAMES_IN_TITLE = 3
"""Past this many outputs or inputs, the title names the first and the last."""


def _names(names: Sequence[str] | dict[str, object]) -> str:
    """`y`, `(y0, y1)` for several, or `(out0 … out39)` for many."""
    names = list(names)
    if len(names) > NAMES_IN_TITLE:
        return f"({names[0]} … {names[-1]})"
    return names[0] if len(names) == 1 else f"({', '.join(names)})"


def pool_max_magnitude(matrix: np.ndarray, cell_rows: int, cell_columns: int) -> np.ndarray:
    """The matrix in cells of `cell_rows` × `cell_columns` entries (fewer at the far edges),
    each holding the entry of largest magnitude it covers; NaN wherever a cell covers one.

    Read in tiles of whole cells of about BAND_ENTRIES entries, so the temporaries stay small.
    """
    rows, columns = matrix.shape
    down, across = -(-rows // cell_rows), -(-columns // cell_columns)
    pooled = np.zeros((down, across), dtype=np.float64)
    cells_in_tile = max(BAND_ENTRIES // (cell_rows * cell_columns), 1)
    tile_across = min(across, cells_in_tile)
    tile_down = max(cells_in_tile // tile_across, 1)
    for top in range(0, down, tile_down):
        for left in range(0, across, tile_across):
            tile = matrix[
                top * cell_rows : (top + tile_down) * cell_rows,
                left * cell_columns : (left + tile_across) * cell_columns,
            ]
            height, width = -(-tile.shape[0] // cell_rows), -(-tile.shape[1] // cell_columns)
            padded = np.zeros((height * cell_rows, width * cell_columns), dtype=tile.dtype)
            padded[: tile.shape[0], : tile.shape[1]] = tile
            cells = padded.reshape(height, cell_rows, width, cell_columns).transpose(0, 2, 1, 3)
            cells = cells.reshape(height, width, -1)
            magnitude = np.abs(cells)
            magnitude[np.isnan(cells)] = np.inf
            chosen = np.take_along_axis(cells, magnitude.argmax(axis=2)[..., None], axis=2)
            pooled[top : top + height, left : left + width] = chosen[..., 0]
    return pooled


@dataclass(frozen=True)
class RowProfile:
    """Each row's non-zeros: how many, the first and last column holding one (the number of
    columns and -1 for a zero row); and the largest finite |entry| of the whole matrix."""

    counts: np.ndarray
    first: np.ndarray
    last: np.ndarray
    largest: float
    finite: bool


def row_profile(joint: Joint) -> RowProfile:
    """The non-zero profile of every row, read a tile at a time."""
    rows, columns = joint.shape
    counts = np.zeros(rows, dtype=np.int64)
    first = np.full(rows, columns, dtype=np.int64)
    last = np.full(rows, -1, dtype=np.int64)
    largest, finite = 0.0, True
    for top, left, tile in joint.tiles():
        nonzero = tile != 0  # NaN counts as non-zero
        span = slice(top, top + tile.shape[0])
        has = nonzero.any(axis=1)
        counts[span] += nonzero.sum(axis=1)
        first[span] = np.minimum(first[span], np.where(has, left + nonzero.argmax(axis=1), columns))
        right = left + tile.shape[1] - 1 - nonzero[:, ::-1].argmax(axis=1)
        last[span] = np.maximum(last[span], np.where(has, right, -1))
        is_finite = np.isfinite(tile)
        if not is_finite.all():
            finite = False
            tile = np.where(is_finite, tile, 0)
        if tile.size:
            largest = max(largest, float(np.abs(tile).max()))
    return RowProfile(counts, first, last, largest, finite)


def _blocks(
    profile: RowProfile, columns: int, samples: int | None, hint: str | None
) -> BlockDiagonal | None:
    """The diagonal blocks J's non-zeros fall into: along the samples' axis when every sample
    boundary is a cut, else the finest partition; None when there is a single block."""
    rows = profile.counts.shape[0]
    if rows < 2 or columns < 2 or not profile.counts.any():
        return None
    last_before = np.maximum.accumulate(profile.last)  # last_before[r-1]: over rows < r
    first_after = np.minimum.accumulate(profile.first[::-1])[::-1]  # over rows ≥ r

    def cut_allows(row: int, column: int) -> bool:
        return last_before[row - 1] < column <= first_after[row]

    if samples is not None and samples >= 2 and rows % samples == 0 and columns % samples == 0:
        per_row, per_column = rows // samples, columns // samples
        if all(cut_allows(k * per_row, k * per_column) for k in range(1, samples)):
            return BlockDiagonal((per_row,) * samples, (per_column,) * samples, 0, hint)
    cuts = [(0, 0)]
    for row in range(1, rows):
        low, high = int(last_before[row - 1]) + 1, int(first_after[row])
        if low <= high and high > 0 and low < columns:
            proportional = round(row * columns / rows)
            column = min(max(proportional, max(low, cuts[-1][1] + 1)), high)
            if column > cuts[-1][1] and column < columns:
                cuts.append((row, column))
    if len(cuts) < 2:
        return None
    cuts.append((rows, columns))
    row_sizes = tuple(b[0] - a[0] for a, b in pairwise(cuts))
    column_sizes = tuple(b[1] - a[1] for a, b in pairwise(cuts))
    return BlockDiagonal(row_sizes, column_sizes, None)


def structure_of(
    matrix: np.ndarray, eps: float, *, samples: int | None = None, hint: str | None = None
) -> Structure:
    """Non-zeros, bandwidths, diagonal, triangular and block-diagonal form, and the numerical
    rank (singular values above max(m, n)·eps·σ_max) of J as a matrix.

    `samples` is the length of the leading axis J's input and output share, if any: blocks
    along it are reported as such, with `hint`.
    """
    rows, columns = matrix.shape
    joint = Joint([[matrix]], [("y", rows)], [("x", columns)], "J")
    return _structure(joint, row_profile(joint), eps, samples, hint)


@dataclass(frozen=True)
class SparseJoint:
    """A sparse J as `_structure` reads it: its shape, and (for the rank of a small one) the
    whole matrix as a float64 array."""

    matrix: sp.csr_array

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.matrix.shape
        return int(rows), int(columns)

    def dense(self) -> np.ndarray:
        return self.matrix.toarray().astype(np.float64)


def _structure(
    joint: Joint | SparseJoint,
    profile: RowProfile,
    eps: float,
    samples: int | None,
    hint: str | None,
) -> Structure:
    """`structure_of` for the joint matrix, from its row profile; the matrix is read whole
    (`joint.dense()`) only for the rank, which is computed for small matrices only."""
    rows, columns = joint.shape
    count = int(profile.counts.sum())
    has = profile.counts > 0
    index = np.arange(rows)[has]
    lower = int((index - profile.first[has]).max(initial=0)) if count else None
    upper = int((profile.last[has] - index).max(initial=0)) if count else None
    square = rows == columns
    diagonal = square and count > 0 and lower == 0 and upper == 0
    triangular = None
    if square and count and not diagonal and rows > 1:
        triangular = "lower" if upper == 0 else "upper" if lower == 0 else None
    rank, tolerance, skipped = None, None, None
    if min(rows, columns) > RANK_LIMIT or rows * columns > RANK_ENTRIES:
        skipped = (
            f"J is {rows}×{columns}; the rank is computed up to {RANK_LIMIT} rows or columns "
            f"and {RANK_ENTRIES:,} entries"
        )
    elif not profile.finite:
        skipped = "J has entries that are not finite"
    elif count == 0:
        rank, tolerance = 0, 0.0
    else:
        singular = np.linalg.svd(joint.dense(), compute_uv=False)
        tolerance = float(singular[0] * max(rows, columns) * eps)
        rank = int((singular > tolerance).sum())
    blocks = None if diagonal else _blocks(profile, columns, samples, hint)
    return Structure(
        rows, columns, count, lower, upper, diagonal, triangular, blocks, rank, tolerance, skipped
    )


def _shared_samples(result: JacobianResult | HessianResult) -> int | None:
    """The leading axis's length when J has one input and one output that share it."""
    if isinstance(result, HessianResult):
        (x,) = result.evaluation.wrt if len(result.evaluation.wrt) == 1 else (None,)
        shapes = [v.values.shape for v in result.evaluation.inputs if v.name == x]
        single = len(result.hessians) == 1 and all(
            y.size == 1 for y in result.evaluation.outputs.values()
        )
        return shapes[0][0] if single and shapes and len(shapes[0]) >= 1 else None
    if len(result.jacobians) != 1:
        return None
    ((y_name, by_wrt),) = result.jacobians.items()
    if len(by_wrt) != 1:
        return None
    y_shape = result.evaluation.outputs[y_name].shape
    ((_, jacobian),) = by_wrt.items()
    x_shape = jacobian.shape[len(y_shape) :]
    if y_shape and x_shape and y_shape[0] == x_shape[0]:
        return int(y_shape[0])
    return None


def _cells(groups: Sequence[tuple[str, int]], limit: int) -> tuple[int, list[PictureGroup]]:
    """The fewest entries per cell that fit every group's cells within `limit` (when each group
    can have a cell), and the groups."""

    def cells(size: int) -> int:
        return sum(-(-n // size) for _, n in groups)

    low, high = 1, max(max((n for _, n in groups), default=1), 1)
    while low < high:  # the smallest cell size whose cells fit
        middle = (low + high) // 2
        low, high = (low, middle) if cells(middle) <= limit else (middle + 1, high)
    return low, [PictureGroup(label, n, -(-n // low)) for label, n in groups]


def picture_of(
    result: JacobianResult | HessianResult,
    view: str,
    max_rows: int,
    max_columns: int,
    *,
    batched_hint: str | None = None,
) -> Picture:
    """J of the result pooled into at most `max_rows` × `max_columns` cells, with its
    structure, to be drawn as `view`; `batched_hint` is the option that would compute only its
    blocks, if any."""
    joint = joint_matrix(result)
    eps = float(np.finfo(np.dtype(result.evaluation.dtype)).eps)
    samples = _shared_samples(result)
    hint = None
    if batched_hint is not None and samples is not None:
        hint = f"{batched_hint} computes only the {samples} blocks"
    profile = row_profile(joint)
    structure = _structure(joint, profile, eps, samples, hint)
    cell_rows, rows = _cells(joint.row_groups, max_rows)
    cell_columns, columns = _cells(joint.column_groups, max_columns)
    values = np.concatenate(
        [
            np.concatenate([pool_max_magnitude(b, cell_rows, cell_columns) for b in blocks], 1)
            for blocks in joint.blocks
        ],
        axis=0,
    )
    return Picture(
        view=view,
        title=joint.title,
        values=values,
        cell_rows=cell_rows,
        cell_columns=cell_columns,
        row_groups=tuple(rows),
        column_groups=tuple(columns),
        scale=profile.largest,
        structure=structure,
    )


def sparse_picture_of(
    result: SparseJacobianResult | SparseHessianResult,
    view: str,
    max_rows: int,
    max_columns: int,
) -> Picture:
    """The picture and structure of a sparse J (or H) read off its stored entries, never
    densified (NOTE [pictures of J]): a cell keeps the entry of largest magnitude it covers."""
    matrix = sp.csr_array(result.matrix)
    rows, columns = matrix.shape
    entry_rows = np.repeat(np.arange(rows, dtype=np.int64), np.diff(matrix.indptr))
    kept = matrix.data != 0  # NaN is not 0: a non-zero
    values, entry_rows = matrix.data[kept].astype(np.float64), entry_rows[kept]
    entry_columns = matrix.indices[kept].astype(np.int64)
    profile = _sparse_profile(rows, columns, entry_rows, entry_columns, values)
    eps = float(np.finfo(np.dtype(result.evaluation.dtype)).eps)
    structure = _structure(SparseJoint(matrix), profile, eps, None, None)
    row_groups, column_groups, title = _sparse_groups(result)
    cell_rows, row_cells = _cells(row_groups, max_rows)
    cell_columns, column_cells = _cells(column_groups, max_columns)
    down = _cell_of(entry_rows, row_groups, cell_rows)
    across = _cell_of(entry_columns, column_groups, cell_columns)
    width = sum(g.cells for g in column_cells)
    pooled = np.zeros((sum(g.cells for g in row_cells), width), dtype=np.float64)
    magnitude = np.where(np.isnan(values), np.inf, np.abs(values))
    cell = down * width + across
    # by cell, then the largest magnitude first, then the first entry (as the dense pooling)
    order = np.lexsort((np.arange(cell.size), -magnitude, cell))
    first = np.flatnonzero(np.diff(cell[order], prepend=-1) != 0)
    pooled.flat[cell[order][first]] = values[order][first]
    return Picture(
        view=view,
        title=title,
        values=pooled,
        cell_rows=cell_rows,
        cell_columns=cell_columns,
        row_groups=tuple(row_cells),
        column_groups=tuple(column_cells),
        scale=profile.largest,
        structure=structure,
    )


def _sparse_profile(
    rows: int, columns: int, entry_rows: np.ndarray, entry_columns: np.ndarray, values: np.ndarray
) -> RowProfile:
    """The row profile of the entries (row by row, columns ascending within a row)."""
    counts = np.bincount(entry_rows, minlength=rows).astype(np.int64)
    first = np.full(rows, columns, dtype=np.int64)
    last = np.full(rows, -1, dtype=np.int64)
    if entry_rows.size:
        starts = np.flatnonzero(np.diff(entry_rows, prepend=-1) != 0)
        ends = np.append(starts[1:], entry_rows.size) - 1
        first[entry_rows[starts]] = entry_columns[starts]
        last[entry_rows[ends]] = entry_columns[ends]
    finite = np.isfinite(values)
    largest = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    return RowProfile(counts, first, last, largest, bool(finite.all()))


def _sparse_groups(
    result: SparseJacobianResult | SparseHessianResult,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], str]:
    """The row groups (outputs, or for H the inputs), the column groups (inputs) and the title."""
    evaluation = result.evaluation
    sizes = {value.name: value.values.size for value in evaluation.inputs}
    column_groups = [(name, sizes[name]) for name in evaluation.wrt]
    if isinstance(result, SparseHessianResult):
        title = f"∂²{_names(evaluation.outputs)}/∂{_names(evaluation.wrt)}²"
        return column_groups, column_groups, title
    row_groups = [(name, output.size) for name, output in evaluation.outputs.items()]
    return row_groups, column_groups, f"∂{_names(evaluation.outputs)}/∂{_names(evaluation.wrt)}"


def _cell_of(index: np.ndarray, groups: Sequence[tuple[str, int]], per_cell: int) -> np.ndarray:
    """The cell (across all groups, each pooled on its own) of each row or column index."""
    sizes = np.array([n for _, n in groups], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    cell_starts = np.concatenate([[0], np.cumsum(-(-sizes // per_cell))[:-1]])
    group = np.searchsorted(starts, index, side="right") - 1
    return cell_starts[group] + (index - starts[group]) // per_cell
