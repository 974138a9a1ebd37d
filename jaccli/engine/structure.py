"""J as one matrix (rows = outputs, columns = inputs): its non-zero structure and its picture.

NOTE [pictures of J]: `--view heatmap` and `--view sparsity` draw the matrix every entry of J
belongs to, outputs flattened down the rows and inputs across the columns, in `wrt` order
(for a Hessian, rows over each input of the gradient and columns over each input). Past the
frame it is pooled: each cell keeps the entry of largest magnitude it covers, sign and all,
so a single large entry is never averaged away and a cell is zero only where every entry is.
Each output and input is pooled on its own, so their separators fall between cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from jaccli.result import (
    BlockDiagonal,
    HessianResult,
    JacobianResult,
    Picture,
    PictureGroup,
    Structure,
)

PICTURE_VIEWS = ("heatmap", "sparsity")
"""The views that draw J (or H) rather than list its numbers."""
RANK_LIMIT = 2048
"""The numerical rank is computed (by SVD) up to this many rows or columns."""


def joint_matrix(
    result: JacobianResult | HessianResult,
) -> tuple[np.ndarray, list[tuple[str, int]], list[tuple[str, int]], str]:
    """Every J of the result as one matrix, with its row and column groups and its name."""
    outputs = result.evaluation.outputs
    if isinstance(result, HessianResult):
        sizes = {value.name: value.values.size for value in result.evaluation.inputs}
        rows, row_groups = [], []
        for y_name, by_a in result.hessians.items():
            y_size = outputs[y_name].size
            for a_name, by_b in by_a.items():
                rows.append(
                    np.concatenate(
                        [h.reshape(y_size * sizes[a_name], -1) for h in by_b.values()], axis=1
                    )
                )
                label = a_name if len(outputs) == 1 and y_size == 1 else f"{y_name}·{a_name}"
                row_groups.append((label, rows[-1].shape[0]))
        column_groups = [(b, sizes[b]) for b in result.evaluation.wrt]
        title = f"∂²{_names(result.hessians)}/∂{_names(result.evaluation.wrt)}²"
        return np.concatenate(rows, axis=0), row_groups, column_groups, title
    if result.per_sample is not None:
        raise ValueError("a per-sample result holds only J's diagonal blocks")
    rows, row_groups, column_groups = [], [], []
    for y_name, by_wrt in result.jacobians.items():
        y_size = outputs[y_name].size
        blocks = [j.reshape(y_size, -1) for j in by_wrt.values()]
        rows.append(np.concatenate(blocks, axis=1))
        row_groups.append((y_name, y_size))
        column_groups = [(x, block.shape[1]) for x, block in zip(by_wrt, blocks, strict=True)]
    return (
        np.concatenate(rows, axis=0),
        row_groups,
        column_groups,
        f"∂{_names(result.jacobians)}/∂{_names(dict(column_groups))}",
    )


def _names(names: Sequence[str] | dict[str, object]) -> str:
    """`y`, or `(y0, y1)` for several."""
    names = list(names)
    return names[0] if len(names) == 1 else f"({', '.join(names)})"


def pool_max_magnitude(matrix: np.ndarray, cell_rows: int, cell_columns: int) -> np.ndarray:
    """The matrix in cells of `cell_rows` × `cell_columns` entries (fewer at the far edges),
    each holding the entry of largest magnitude it covers; NaN wherever a cell covers one."""
    rows, columns = matrix.shape
    out_rows, out_columns = -(-rows // cell_rows), -(-columns // cell_columns)
    padded = np.zeros((out_rows * cell_rows, out_columns * cell_columns), dtype=np.float64)
    padded[:rows, :columns] = matrix
    cells = padded.reshape(out_rows, cell_rows, out_columns, cell_columns).transpose(0, 2, 1, 3)
    cells = cells.reshape(out_rows, out_columns, -1)
    magnitude = np.where(np.isnan(cells), np.inf, np.abs(cells))
    chosen = np.take_along_axis(cells, magnitude.argmax(axis=2)[..., None], axis=2)
    return chosen[..., 0]


def pool_any(mask: np.ndarray, cell_rows: int, cell_columns: int) -> np.ndarray:
    """Whether each cell of `cell_rows` × `cell_columns` entries covers a True entry."""
    rows, columns = mask.shape
    out_rows, out_columns = -(-rows // cell_rows), -(-columns // cell_columns)
    padded = np.zeros((out_rows * cell_rows, out_columns * cell_columns), dtype=bool)
    padded[:rows, :columns] = mask
    return padded.reshape(out_rows, cell_rows, out_columns, cell_columns).any(axis=(1, 3))


def _blocks(nonzero: np.ndarray, samples: int | None, hint: str | None) -> BlockDiagonal | None:
    """The diagonal blocks J's non-zeros fall into: along the samples' axis when every sample
    boundary is a cut, else the finest partition; None when there is a single block."""
    rows, columns = nonzero.shape
    if rows < 2 or columns < 2 or not nonzero.any():
        return None
    has = nonzero.any(axis=1)
    first = np.where(has, nonzero.argmax(axis=1), columns)
    last = np.where(has, columns - 1 - nonzero[:, ::-1].argmax(axis=1), -1)
    last_before = np.maximum.accumulate(last)  # last_before[r-1]: over rows < r
    first_after = np.minimum.accumulate(first[::-1])[::-1]  # first_after[r]: over rows ≥ r

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
    matrix: np.ndarray,
    eps: float,
    *,
    samples: int | None = None,
    hint: str | None = None,
) -> Structure:
    """Non-zeros, bandwidths, diagonal, triangular and block-diagonal form, and the numerical
    rank (singular values above max(m, n)·eps·σ_max) of J as a matrix.

    `samples` is the length of the leading axis J's input and output share, if any: blocks
    along it are reported as such, with `hint`.
    """
    rows, columns = matrix.shape
    nonzero = matrix != 0  # NaN counts as non-zero
    count = int(nonzero.sum())
    i, j = np.nonzero(nonzero)
    lower = int((i - j).max(initial=0)) if count else None
    upper = int((j - i).max(initial=0)) if count else None
    square = rows == columns
    diagonal = square and count > 0 and lower == 0 and upper == 0
    triangular = None
    if square and count and not diagonal and rows > 1:
        triangular = "lower" if upper == 0 else "upper" if lower == 0 else None
    rank, tolerance, skipped = None, None, None
    if min(rows, columns) > RANK_LIMIT:
        skipped = f"J is {rows}×{columns}; the rank is computed up to {RANK_LIMIT} rows or columns"
    elif not np.isfinite(matrix).all():
        skipped = "J has entries that are not finite"
    elif count == 0:
        rank, tolerance = 0, 0.0
    else:
        singular = np.linalg.svd(matrix.astype(np.float64), compute_uv=False)
        tolerance = float(singular[0] * max(rows, columns) * eps)
        rank = int((singular > tolerance).sum())
    blocks = None if diagonal else _blocks(nonzero, samples, hint)
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
    """The fewest entries per cell that fit every group's cells within `limit`, and the groups."""
    cell = max(1, -(-sum(size for _, size in groups) // max(limit, 1)))
    while sum(-(-size // cell) for _, size in groups) > limit and cell < max(s for _, s in groups):
        cell += 1
    return cell, [PictureGroup(label, size, -(-size // cell)) for label, size in groups]


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
    matrix, row_groups, column_groups, title = joint_matrix(result)
    eps = float(np.finfo(np.dtype(result.evaluation.dtype)).eps)
    samples = _shared_samples(result)
    hint = None
    if batched_hint is not None and samples is not None:
        hint = f"{batched_hint} computes only the {samples} blocks"
    structure = structure_of(matrix, eps, samples=samples, hint=hint)
    cell_rows, rows = _cells(row_groups, max_rows)
    cell_columns, columns = _cells(column_groups, max_columns)
    pooled_rows, nonzero_rows = [], []
    row_start = 0
    for group in rows:
        band = matrix[row_start : row_start + group.size]
        row_start += group.size
        values, masks, column_start = [], [], 0
        for column in columns:
            block = band[:, column_start : column_start + column.size]
            column_start += column.size
            values.append(pool_max_magnitude(block, cell_rows, cell_columns))
            masks.append(pool_any(block != 0, cell_rows, cell_columns))
        pooled_rows.append(np.concatenate(values, axis=1))
        nonzero_rows.append(np.concatenate(masks, axis=1))
    finite = np.abs(matrix[np.isfinite(matrix)])
    return Picture(
        view=view,
        title=title,
        values=np.concatenate(pooled_rows, axis=0),
        nonzero=np.concatenate(nonzero_rows, axis=0),
        cell_rows=cell_rows,
        cell_columns=cell_columns,
        row_groups=tuple(rows),
        column_groups=tuple(columns),
        scale=float(finite.max()) if finite.size else 0.0,
        structure=structure,
    )
