"""Rich renderables for the per-slice views and the checks of a result."""

from __future__ import annotations

import math

import numpy as np
from rich import box
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from jaccli.render.labels import entry_label, slice_label
from jaccli.render.numbers import format_cells
from jaccli.result import Check, Comparison, SliceRow, View

INLINE_LIMIT = 8
"""Entries per line, and lines, shown of an array inside a table cell."""


def inline_array(array: np.ndarray, precision: int, vector_as_column: bool = False) -> Text:
    """A small array as aligned text for one table cell: a matrix one row per line, a vector
    on one line (or as a column); past INLINE_LIMIT entries or lines, an ellipsis."""
    array = np.asarray(array)
    if array.ndim <= 1:
        matrix = array.reshape(-1, 1) if vector_as_column else array.reshape(1, -1)
    else:
        matrix = array.reshape(-1, array.shape[-1])
    cells = format_cells(matrix[:INLINE_LIMIT, :INLINE_LIMIT], precision)
    width = max((len(c) for c in cells.flat), default=1)
    lines = []
    for row in cells:
        line = " ".join(c.rjust(width) for c in row)
        lines.append(line + (" …" if matrix.shape[1] > INLINE_LIMIT else ""))
    if matrix.shape[0] > INLINE_LIMIT:
        lines.append("⋮".rjust(width))
    return Text("\n".join(lines))


def _verdict(agrees: bool | None, difference: float | None = None) -> Text:
    if agrees is None:
        return Text("–", style="yellow")
    detail = "" if difference is None else f"\n{difference:.1e}"
    return Text(f"✓{detail}", style="green") if agrees else Text(f"✗{detail}", style="bold red")


def view_renderable(
    view: View, y_ndim: int, x_ndim: int, precision: int, width: int
) -> RenderableType:
    """One table row per slice: x_i, y_i, J_i, and (for a VJP) v_i and v_i·J_i, next to the
    matching slice of the full result, with ✓ or ✗ and the largest difference. When that table
    is wider than `width`, one small table per slice instead."""
    i = "j" if view.name == "cols" else "i"
    x_i = slice_label(view.wrt, view.input_axis, x_ndim, i)
    y_i = slice_label(view.output, view.output_axis, y_ndim, i)
    headers = [i, x_i, y_i, f"J_{i}"]
    if view.product == "vjp":
        v_i = slice_label("v", view.output_axis, y_ndim, i)
        headers += [v_i, f"{v_i}·J_{i}", f"{view.wrt}.grad{x_i[len(view.wrt) :]}"]
    elif view.product == "jvp":
        v_i = slice_label("v", view.input_axis, x_ndim, i)
        headers += [v_i, f"J_{i}·{v_i}", slice_label("(J·v)", view.output_axis, y_ndim, i)]
    else:
        headers += [f"block {i} of J"]
    headers.append("agrees")

    def cells(row: SliceRow) -> list[RenderableType]:
        arrays = [row.input_slice, row.output_slice, row.jacobian]
        if row.vector is not None:
            arrays += [row.vector, row.product]
        arrays.append(row.full_slice)
        return [
            Text(str(row.index)),
            *(inline_array(a, precision, vector_as_column=view.name == "cols") for a in arrays),
            _verdict(row.agrees, row.max_difference),
        ]

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, show_lines=True, pad_edge=False)
    for position, header in enumerate(headers):
        table.add_column(
            Text(header), justify="right", no_wrap=True, style="dim" if position == 0 else ""
        )
    for row in view.slices:
        table.add_row(*cells(row))
    body: RenderableType = table
    if _natural_width(table) > width:
        stacked = []
        for row in view.slices:
            one = Table(
                box=box.SIMPLE, show_header=False, show_edge=False, title=Text(f"{i} = {row.index}")
            )
            one.add_column(style="dim", no_wrap=True)
            one.add_column(justify="right", no_wrap=True)
            for header, cell in zip(headers[1:], cells(row)[1:], strict=True):
                one.add_row(Text(header), cell)
            stacked.append(one)
        body = Columns(stacked, padding=(0, 3))
    title = Text.assemble(
        (
            "\n" + ("Rows" if view.name == "rows" else "Columns") + f" of {view.wrt}",
            "bold underline",
        ),
        (f"  {y_i} depends only on {x_i};  J_{i} = ∂{y_i}/∂{x_i}", "dim"),
    )
    note = Text(
        f"✓ when |difference| ≤ {view.atol:g}·max(1, |full|) + {view.rtol:g}·|full|",
        style="dim",
    )
    return Group(title, body, note)


def _natural_width(renderable: RenderableType) -> int:
    console = Console(width=1_000_000)
    return Measurement.get(console, console.options, renderable).maximum


def _number(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2e}"


def tolerance_text(comparison: Comparison) -> str:
    return f"rtol {comparison.rtol:g}, atol {comparison.atol:g}"


def _comparison_lines(comparison: Comparison) -> list[Text]:
    """One comparison as short lines, each within 60 columns for usual names: the verdict and
    what was compared, its largest errors and where, then the reference and the tolerances."""
    lines = [Text.assemble(_verdict(comparison.passed), " ", (comparison.name, "bold"))]
    if comparison.skipped:
        lines.append(Text(f"  skipped: {comparison.skipped}", style="yellow"))
        return lines
    largest = comparison.largest_error_entry
    where = f" at {entry_label(largest)}" if largest else ""
    lines.append(Text(f"  max abs err {_number(comparison.max_abs_error)}{where}"))
    lines.append(Text(f"  max rel err {_number(comparison.max_rel_error)}"))
    lines.append(Text(f"  reference: {comparison.reference}", style="dim"))
    tolerances = tolerance_text(comparison)
    if comparison.step is not None:
        tolerances += f", step h = {comparison.step:g}·max(1, |x|)"
    lines.append(Text(f"  {tolerances}", style="dim"))
    return lines


def check_renderable(check: Check, *, worst_entries: bool = False) -> RenderableType:
    """The comparisons made, each with its verdict, largest errors and where, its reference and
    tolerances; with `worst_entries`, the entries that came closest to failing as well."""
    verdict = (
        Text("passed", style="bold green") if check.passed else Text("FAILED", style="bold red")
    )
    parts: list[RenderableType] = [Text.assemble(("\nCheck", "bold underline"), "  ", verdict)]
    for comparison in check.comparisons:
        parts += _comparison_lines(comparison)
    if worst_entries:
        for comparison in check.comparisons:
            if comparison.worst_entries:
                parts += [Text(""), _worst_entries_table(comparison)]
    return Group(*parts)


def _worst_entries_table(comparison: Comparison) -> Table:
    """The entries of one comparison that came closest to failing, or failed by the most."""
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        title=Text(f"Worst entries: {comparison.name}", style="bold"),
        title_justify="left",
        collapse_padding=True,
    )
    table.add_column("entry", no_wrap=True)
    for header in ("value", "reference", "abs err", "rel err"):
        table.add_column(header, justify="right", no_wrap=True)
    for entry in comparison.worst_entries:
        table.add_row(
            Text(entry_label(entry)),
            f"{entry.value + 0.0:.8g}",  # -0.0 + 0.0 is 0.0: a zero entry is never "-0"
            f"{entry.reference + 0.0:.8g}",
            _number(entry.abs_error),
            _number(entry.rel_error),
        )
    return table


def check_failure_line(check: Check) -> str:
    """One line naming the first failed comparison and its worst entry, for stderr."""
    for comparison in check.comparisons:
        if comparison.passed is False:
            worst = comparison.worst_entries[0]
            where = entry_label(worst)
            return (
                f"check failed: {comparison.name}: {where} "
                f"is {worst.value + 0.0:.6g} where {comparison.reference} gives "
                f"{worst.reference + 0.0:.6g} "
                f"({tolerance_text(comparison)})"
            )
    return "check passed"
