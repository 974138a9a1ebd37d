"""J drawn in the terminal (NOTE [pictures of J]): a heat map, or its pattern of non-zeros.

Colour: two rows a character, the upper cell in the half block's foreground and the lower in its
background, on a diverging scale centred on 0, exact zeros in a grey of their own. Without
colour (NO_COLOR, a pipe) one row a line, shaded `·░▒▓█` by magnitude. The sparsity pattern is
the same in both: half blocks for non-zeros, `·` where both cells are zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from rich.color import Color
from rich.console import Group, RenderableType
from rich.style import Style
from rich.text import Text

from jaccli.errors import UsageError
from jaccli.render.layout import Layout
from jaccli.render.numbers import format_cells
from jaccli.result import HessianResult, JacobianResult, Picture, PictureGroup, Structure

LABEL_LIMIT = 10
"""Row labels longer than this are shortened with `…`."""
PICTURE_LINES = 24
"""The most lines a picture's frame takes."""
ZERO_RGB = (107, 107, 107)
NEUTRAL_RGB = (247, 247, 247)
POSITIVE_RGB = (178, 24, 43)
NEGATIVE_RGB = (33, 102, 172)
NAN_RGB = (230, 171, 2)
POSITIVE_INFINITY_RGB = (231, 41, 138)
NEGATIVE_INFINITY_RGB = (27, 158, 119)
"""±Infinity in colours of their own: not the grey of an exact 0, nor the ends of the scale."""
INFINITY_SHADE = "∞"
"""±Infinity without colour (no sign, like the shades)."""
ZOOM = 3
"""The most characters across (and half-lines down) a cell of a small J takes."""
SHADES = "░▒▓█"
"""By magnitude, in quarters of the largest |J|; `·` is an exact zero."""


def frame(result: JacobianResult | HessianResult, view: str, layout: Layout) -> tuple[int, int]:
    """The most cells a picture of the result may have down and across to fit the layout."""
    evaluation = result.evaluation
    label_width = max(len(name) for name in [*evaluation.outputs, *evaluation.wrt])
    if isinstance(result, HessianResult) and len(evaluation.outputs) > 1:
        label_width += 4
    inputs = len(evaluation.wrt)
    columns = layout.width - min(label_width, LABEL_LIMIT) - 2 - (inputs - 1)
    if columns < inputs:
        raise UsageError(
            f"--view {view}: {inputs} inputs, each with a separator, do not fit "
            f"{layout.width} columns; pick some with --wrt, or draw J with --out j.png"
        )
    return PICTURE_LINES * _rows_a_line(view, layout.color), max(columns, 8)


def _short(label: str, width: int) -> str:
    return label if len(label) <= width else label[: max(width - 1, 1)] + "…"


def _rgb(value: float, scale: float) -> tuple[int, int, int]:
    """The diverging colour of a value: blue below 0, red above, near white close to 0."""
    if np.isnan(value):
        return NAN_RGB
    if value == 0:
        return ZERO_RGB
    if np.isinf(value):
        return POSITIVE_INFINITY_RGB if value > 0 else NEGATIVE_INFINITY_RGB
    t = min(abs(value) / scale, 1.0) if scale > 0 else 1.0
    end = POSITIVE_RGB if value > 0 else NEGATIVE_RGB
    red, green, blue = (
        round(n + (e - n) * (0.15 + 0.85 * t)) for n, e in zip(NEUTRAL_RGB, end, strict=True)
    )
    return red, green, blue


def _color(value: float, scale: float) -> Color:
    return Color.from_rgb(*_rgb(value, scale))


def _shade(value: float, scale: float) -> str:
    if np.isnan(value):
        return "?"
    if value == 0:
        return "·"
    if np.isinf(value):
        return INFINITY_SHADE
    quarter = min(int(abs(value) / scale * 4), 3) if scale > 0 else 3
    return SHADES[quarter]


def _column_header(picture: Picture, margin: int) -> Text:
    """The inputs' names over their first cell, when there is room."""
    text = Text(" " * margin)
    for position, group in enumerate(picture.column_groups):
        last = position == len(picture.column_groups) - 1
        room = group.cells + (0 if last else 1)
        label = _short(group.label, room if last else max(room - 1, 1))
        text.append(label.ljust(room), style="bold")
    return text


def _separator(picture: Picture, margin: int) -> Text:
    line = "┼".join("─" * group.cells for group in picture.column_groups)
    return Text(" " * (margin - 1) + "─" + line, style="dim")


def _row_lines(group: PictureGroup, start: int, rows_a_line: int) -> list[tuple[int, int | None]]:
    """The pooled rows of one output a line shows: (upper, lower), lower None when alone."""
    stop = start + group.cells
    return [
        (row, row + 1 if rows_a_line == 2 and row + 1 < stop else None)
        for row in range(start, stop, rows_a_line)
    ]


def _cell_text(
    picture: Picture, kind: str, color: bool, upper: int, lower: int | None, column: int
) -> Text:
    values, scale = picture.values, picture.scale
    if kind == "sparsity":  # NaN counts as non-zero
        top = bool(values[upper, column] != 0)
        bottom = lower is not None and bool(values[lower, column] != 0)
        return Text("█" if top and bottom else "▀" if top else "▄" if bottom else "·")
    if not color:
        return Text(_shade(float(values[upper, column]), scale))
    top_color = _color(float(values[upper, column]), scale)
    if lower is None:
        return Text("▀", style=Style(color=top_color))
    return Text(
        "▀", style=Style(color=top_color, bgcolor=_color(float(values[lower, column]), scale))
    )


def _frame_lines(picture: Picture, kind: str, color: bool, margin: int) -> list[Text]:
    """The inputs' names, then a line per row of characters, outputs separated by rules."""
    rows_a_line = _rows_a_line(kind, color)
    lines = [_column_header(picture, margin)]
    start = 0
    for index, group in enumerate(picture.row_groups):
        if index:
            lines.append(_separator(picture, margin))
        for position, (upper, lower) in enumerate(_row_lines(group, start, rows_a_line)):
            label = _short(group.label, margin - 1) if position == 0 else ""
            line = Text.assemble((label.rjust(margin - 1), "bold"), " ")
            column = 0
            for group_index, column_group in enumerate(picture.column_groups):
                if group_index:
                    line.append("│", style="dim")
                for _ in range(column_group.cells):
                    line.append_text(_cell_text(picture, kind, color, upper, lower, column))
                    column += 1
            lines.append(line)
        start += group.cells
    return lines


def _legend(picture: Picture, color: bool, precision: int) -> Text:
    """The colour scale with the value at each end, or the shades with what they stand for;
    then the colours or signs of exact 0, ±Infinity and NaN. Without a finite non-zero entry
    there is no scale to show, and the legend says so."""
    low, high = format_cells(np.array([-picture.scale, picture.scale]), precision)
    values = picture.values
    specials = [
        (bool((values == np.inf).any()), POSITIVE_INFINITY_RGB, "+Infinity"),
        (bool((values == -np.inf).any()), NEGATIVE_INFINITY_RGB, "-Infinity"),
        (bool(np.isnan(values).any()), NAN_RGB, "NaN"),
    ]
    scaled = picture.scale > 0
    if not color:
        infinite = specials[0][0] or specials[1][0]
        marks = ", · exactly 0" + (f", {INFINITY_SHADE} ±Infinity" if infinite else "")
        marks += ", ? NaN" if specials[2][0] else ""
        if not scaled:
            return Text(f"|J| has no finite non-zero entry{marks}")
        return Text(f"|J| in quarters of {high}: {' '.join(SHADES)}{marks} (no sign)")
    if scaled:
        legend = Text(f"{low} ")
        for t in np.linspace(-1.0, 1.0, 11):
            value = t * picture.scale if t != 0 else picture.scale * 1e-9
            legend.append("█", style=Style(color=_color(value, picture.scale)))
        legend.append(f" {high}   ")
    else:
        legend = Text("no finite non-zero entry   ")
    legend.append("█", style=Style(color=Color.from_rgb(*ZERO_RGB)))
    legend.append(" exactly 0")
    for present, rgb, label in specials:
        if present:
            legend.append("  ")
            legend.append("█", style=Style(color=Color.from_rgb(*rgb)))
            legend.append(f" {label}")
    return legend


def _pooling(picture: Picture) -> Text:
    if picture.cell_rows == picture.cell_columns == 1:
        return Text("one entry a cell", style="dim")
    return Text(
        f"a cell: up to {picture.cell_rows}×{picture.cell_columns} entries, shown by the "
        "largest |J|",
        style="dim",
    )


def _zoomed(picture: Picture, kind: str, layout: Layout, margin: int) -> Picture:
    """A small picture drawn up to ZOOM characters a cell across and half-lines down, within
    the frame, so a 2×6 J is not a single line."""
    rows_a_line = _rows_a_line(kind, layout.color)
    room_across = layout.width - margin - len(picture.column_groups)
    across = room_across // max(picture.values.shape[1], 1)
    down = PICTURE_LINES * rows_a_line // max(picture.values.shape[0], 1)
    zoom = max(1, min(ZOOM, across, down))
    # a character is about twice as tall as wide: half as many lines down as characters across
    zoom_down = zoom - zoom % 2 if rows_a_line == 2 else max(zoom // 2, 1)
    if zoom == 1:
        return picture
    return replace(
        picture,
        values=np.repeat(np.repeat(picture.values, zoom_down, axis=0), zoom, axis=1),
        row_groups=tuple(replace(g, cells=g.cells * zoom_down) for g in picture.row_groups),
        column_groups=tuple(replace(g, cells=g.cells * zoom) for g in picture.column_groups),
    )


def _title(picture: Picture, kind: str) -> Text:
    structure = picture.structure
    what = "Heat map" if kind == "heatmap" else "Non-zeros"
    return Text.assemble(
        "\n",
        (f"{what} of {picture.title}", "bold underline"),
        "  ",
        (f"{structure.rows}×{structure.columns}", "cyan"),
        (
            f"  {_what(picture.row_groups, 'outputs')}, {_what(picture.column_groups, 'inputs')}",
            "dim",
        ),
    )


NAMES_SHOWN = 3
"""Past this many outputs or inputs, a title counts them instead of naming them."""


def _what(groups: Sequence[PictureGroup], kind: str) -> str:
    """`rows y` or `columns a, b`, or `20 outputs` past NAMES_SHOWN of them."""
    if len(groups) > NAMES_SHOWN:
        return f"{len(groups)} {kind}"
    where = "rows" if kind == "outputs" else "columns"
    return f"{where} {', '.join(group.label for group in groups)}"


def structure_lines(structure: Structure) -> list[Text]:
    """Non-zeros and density, bandwidth, the form J takes and its numerical rank."""
    total = structure.rows * structure.columns
    lines = [("non-zeros", f"{structure.nonzeros:,} of {total:,} ({100 * structure.density:.1f}%)")]
    if structure.lower_bandwidth is not None:
        lines.append(
            (
                "bandwidth",
                f"{structure.lower_bandwidth} below the diagonal, "
                f"{structure.upper_bandwidth} above",
            )
        )
    lines.append(("form", _form(structure)))
    if structure.rank is not None:
        full = min(structure.rows, structure.columns)
        rank = f"{structure.rank} of {full}" + (" (full)" if structure.rank == full else "")
        if structure.rank_tolerance:
            rank += f", singular values above {structure.rank_tolerance:.2g}"
        lines.append(("rank", rank))
    else:
        lines.append(("rank", f"not computed: {structure.rank_skipped}"))
    texts = [Text.assemble((f"{name:<10}", "bold"), value) for name, value in lines]
    if structure.blocks is not None and structure.blocks.hint is not None:
        texts.append(Text(f"hint: {structure.blocks.hint}", style="dim"))
    return texts


BLOCK_SIZES_SHOWN = 4
"""Unequal blocks are listed by size up to this many."""


def _form(structure: Structure) -> str:
    """The form J takes, in words, with its blocks or diagonals."""
    form, blocks = structure.form, structure.blocks
    if form == "banded":
        return f"banded, {structure.diagonals} diagonals wide"
    if form == "other":
        return "no block or band form"
    if blocks is None:
        return form.replace("-", " ")
    sizes = list(zip(blocks.row_sizes, blocks.column_sizes, strict=True))
    if len(set(sizes)) == 1:
        what = f"{blocks.count} blocks {sizes[0][0]}×{sizes[0][1]}"
    else:
        listed = ", ".join(f"{r}×{c}" for r, c in sizes[:BLOCK_SIZES_SHOWN])
        what = f"{blocks.count} blocks {listed}" + (
            ", …" if blocks.count > BLOCK_SIZES_SHOWN else ""
        )
    along = "" if blocks.axis is None else f", along axis {blocks.axis}"
    return f"block-diagonal: {what}{along}"


def _rows_a_line(kind: str, color: bool) -> int:
    """Two rows of cells a character (half blocks) for sparsity and a coloured heat map; one
    for shades."""
    return 2 if kind == "sparsity" or color else 1


def picture_renderable(picture: Picture, layout: Layout) -> RenderableType:
    """The frame with its labels and separators, then the legend (heat map) or the structure
    (sparsity), and how many entries a cell covers."""
    kind, color, precision = picture.view, layout.color, layout.precision
    margin = min(max(len(group.label) for group in picture.row_groups), LABEL_LIMIT) + 1
    picture = _zoomed(picture, kind, layout, margin)
    parts: list[RenderableType] = [
        _title(picture, kind),
        *_frame_lines(picture, kind, color, margin),
    ]
    if kind == "heatmap":
        parts.append(_legend(picture, color, precision))
    else:
        parts += structure_lines(picture.structure)
    parts.append(_pooling(picture))
    return Group(*parts)
