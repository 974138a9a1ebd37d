"""A sparse J or H for people without densifying it: each row's non-zeros as
`y[i]: x[j] value` lines (its JSON documents are in document.py).

scipy is imported only where a sparse result is drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from jaccli.errors import UsageError
from jaccli.render.checks import check_renderable
from jaccli.render.labels import index_label
from jaccli.render.numbers import format_cells
from jaccli.render.tables import (
    FULL_CELL_LIMIT,
    Layout,
    determinant_renderables,
    evaluation_renderables,
    function_reference_line,
    how_computed,
    window,
)
from jaccli.result import Evaluation, Picture, SparseHessianResult, SparseJacobianResult

if TYPE_CHECKING:
    from scipy.sparse import csr_array

ENTRY_GAP = "  "
"""Between two entries of a row."""

Groups = Sequence[tuple[str, tuple[int, ...]]]
"""(name, shape) of each output or input whose elements run along the rows or columns."""


def _groups(evaluation: Evaluation, *, rows_by_input: bool = False) -> tuple[Groups, Groups]:
    """The row groups (the outputs, or the `wrt` inputs for H) and the column groups."""
    shapes = {value.name: tuple(value.values.shape) for value in evaluation.inputs}
    columns = [(name, shapes[name]) for name in evaluation.wrt]
    if rows_by_input:
        return columns, columns
    return [(name, tuple(y.shape)) for name, y in evaluation.outputs.items()], columns


def _labeller(groups: Groups) -> Any:
    """index ↦ `x[2,0]`: the element of the joint index within its group."""
    sizes = [int(np.prod(shape, dtype=np.int64)) for _, shape in groups]
    starts = np.concatenate([[0], np.cumsum(sizes)])

    def label(index: int) -> str:
        group = int(np.searchsorted(starts, index, side="right")) - 1
        name, shape = groups[group]
        return index_label(name, shape, index - int(starts[group]))

    return label


def nonzero_rows(
    matrix: csr_array, row_groups: Groups, column_groups: Groups, layout: Layout
) -> RenderableType:
    """Each row's non-zeros as `y[i]: x[j] value  x[k] value …`: the first and last rows when
    there are more than `layout.max_rows`, and as many entries as fit the width, then
    `… N more` (every row and entry with --full, up to FULL_CELL_LIMIT numbers)."""
    rows = matrix.shape[0]
    shown_rows = window(rows, None if layout.full else layout.max_rows)
    if layout.full and matrix.nnz > FULL_CELL_LIMIT:
        raise UsageError(
            f"--full would print {matrix.nnz:,} non-zeros (at most {FULL_CELL_LIMIT:,}); use "
            "--json or --out j.npz for the whole result"
        )
    row_label, column_label = _labeller(row_groups), _labeller(column_groups)
    labels = {r: f"{row_label(r)}:" for r in shown_rows if r is not None}
    room = max(layout.width - max(map(len, labels.values()), default=0) - 1, 16)
    most = None if layout.full else max(1, room // 8)  # entries a row that could fit at all
    spans = {}
    for r in labels:
        start, stop = int(matrix.indptr[r]), int(matrix.indptr[r + 1])
        spans[r] = (start, stop if most is None else min(stop, start + most), stop - start)
    read = [matrix.data[start:stop] for start, stop, _ in spans.values()]
    cells = iter(format_cells(np.concatenate(read or [np.zeros(0)]), layout.precision).tolist())
    table = Table.grid(padding=(0, 1))
    table.add_column(justify="right", style="dim", no_wrap=True)
    table.add_column(no_wrap=not layout.full)
    cut = False
    for r in shown_rows:
        if r is None:
            table.add_row("⋮", "")
            continue
        start, stop, total = spans[r]
        pieces = [
            f"{column_label(int(matrix.indices[k]))} {next(cells)}" for k in range(start, stop)
        ]
        line, shown = Text(), 0
        for piece in pieces:
            left = total - shown - 1
            needed = len(ENTRY_GAP if shown else "") + len(piece)
            needed += len(f"{ENTRY_GAP}… {left} more") if left else 0
            if not layout.full and len(line) + needed > room:
                break
            line.append(ENTRY_GAP if shown else "")
            line.append(piece, style="dim" if matrix.data[start + shown] == 0 else "")
            shown += 1
        if shown < total:
            line.append(f"{ENTRY_GAP if shown else ''}… {total - shown} more", style="italic dim")
            cut = True
        if total == 0:
            line.append("no non-zeros", style="dim")
        table.add_row(Text(labels[r]), line)
    if len(labels) == rows and not cut:
        return table
    note = f"shown: {len(labels)} of {rows} rows" + ("; entries past the width cut" if cut else "")
    return Group(table, Text(f"{note} (--full: all)", style="italic dim"))


def _heading(what: str, matrix: csr_array, colours: int, passes: str) -> Text:
    rows, columns = matrix.shape
    density = matrix.nnz / max(rows * columns, 1)
    return Text.assemble(
        "\n",
        (what, "bold underline"),
        "  ",
        (f"{rows}×{columns}", "cyan"),
        (f"  {matrix.nnz:,} non-zeros ({density:.3%}), {colours} {passes}", "dim"),
    )


def sparse_jacobian_renderable(
    result: SparseJacobianResult, layout: Layout, picture: Picture | None = None
) -> Group:
    """The evaluation, then each row's non-zeros of J (or the picture asked for), det J when
    asked, the strategy, and the check against the function itself when one was made."""
    evaluation = result.evaluation
    parts = evaluation_renderables(evaluation, layout)
    if picture is not None:
        from jaccli.render.picture import picture_renderable

        parts.append(picture_renderable(picture, layout))
    else:
        rows, columns = _groups(evaluation)
        title = f"Sparse Jacobian ∂{_names(rows)}/∂{_names(columns)}"
        passes = "JVPs" if result.mode == "fwd" else "VJPs"
        parts.append(_heading(title, result.matrix, result.colours, passes))
        parts.append(nonzero_rows(result.matrix, rows, columns, layout))
    if result.determinant is not None:
        parts += determinant_renderables(result, layout)
    parts.append(how_computed("strategy", result.strategy, result.strategy_reason))
    parts += function_reference_line(result.guard)
    if result.check is not None:
        parts.append(check_renderable(result.check))
    return Group(*parts)


def sparse_hessian_renderable(
    result: SparseHessianResult, layout: Layout, picture: Picture | None = None
) -> Group:
    """The evaluation, then each row's non-zeros of H (or the picture asked for), the
    symmetry error, the strategy, and the check against the function itself."""
    evaluation = result.evaluation
    parts = evaluation_renderables(evaluation, layout)
    if picture is not None:
        from jaccli.render.picture import picture_renderable

        parts.append(picture_renderable(picture, layout))
    else:
        rows, columns = _groups(evaluation, rows_by_input=True)
        title = f"Sparse Hessian ∂²{_names(_groups(evaluation)[0])}/∂{_names(columns)}²"
        parts.append(_heading(title, result.matrix, result.colours, "Hessian-vector products"))
        parts.append(nonzero_rows(result.matrix, rows, columns, layout))
    parts.append(Text(f"max |H[i, j] − H[j, i]| = {result.symmetry_error:.3g}", style="dim"))
    parts.append(how_computed("strategy", result.strategy, result.strategy_reason))
    parts += function_reference_line(result.guard)
    if result.check is not None:
        parts.append(check_renderable(result.check))
    return Group(*parts)


def _names(groups: Groups) -> str:
    names = [name for name, _ in groups]
    return names[0] if len(names) == 1 else f"({', '.join(names)})"
