"""J's heat map, or its non-zeros as a spy plot, in a .png, .svg or .pdf file, drawn with
matplotlib (the `plot` extra).

matplotlib is imported only here, and only when such a file is asked for.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jaccli.errors import UsageError
from jaccli.render.colors import (
    NAN_RGB,
    NEGATIVE_INFINITY_RGB,
    POSITIVE_INFINITY_RGB,
    ZERO_RGB,
)
from jaccli.render.labels import visible
from jaccli.result import Picture, PictureGroup

IMAGE_CELLS = 128
"""The most cells a picture file has down and across; larger J are pooled as on screen (a cell
holds the entry of largest magnitude it covers). At 128 a cell is about 4 pixels, so a band or
a diagonal one cell wide stays visible in an 800×600 picture."""
TICKS = 6
"""About this many index ticks along each axis."""
TEXT = {"parse_math": False}
"""Every text drawn: names are drawn as written, never read as mathtext (`$…$`)."""
FIGURE_INCHES = (8.0, 6.0)
DPI = 100
"""A picture file is 800×600 pixels (or points in .svg and .pdf)."""
AXES_BOX = (0.12, 0.13, 0.66, 0.77)
"""Where J is drawn, as fractions of the figure: left, bottom, width, height."""
COLORBAR_BOX = (0.83, 0.13, 0.03, 0.77)


def require_matplotlib(path_text: str) -> None:
    """Refuse a picture file up front when matplotlib is not installed, saying how to get it."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            f"--out {path_text!r} is drawn with matplotlib, which is not installed: "
            f"{sys.executable} -m pip install 'matplotlib>=3.7' (the plot extra)",
            code="missing_extra",
        )


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def draw_picture(picture: Picture, path: Path, file_format: str) -> None:
    """The picture's view: a heat map of J, or (sparsity) a spy plot of its non-zeros, with
    index ticks along both axes and the outputs' and inputs' separators."""
    if picture.view == "sparsity":
        _draw_spy(picture, path, file_format)
    else:
        _draw_heatmap(picture, path, file_format)


def _draw_spy(picture: Picture, path: Path, file_format: str) -> None:
    """The non-zeros of J in black on white (a cell is white only where every entry it covers
    is exactly 0), with the count, density and form in the title."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.colors import ListedColormap

    structure = picture.structure
    figure = pyplot.figure(figsize=FIGURE_INCHES, dpi=DPI)
    axes = figure.add_axes(AXES_BOX)
    try:
        axes.imshow(
            (picture.values != 0).astype(np.uint8),  # NaN is not 0: a non-zero
            cmap=ListedColormap(["white", "black"]),
            vmin=0,
            vmax=1,
            interpolation="nearest",
            aspect="auto",
        )
        _separate(axes, picture, color="#d62728")
        axes.set_title(
            f"Non-zeros of {visible(picture.title)}  ({structure.rows}×{structure.columns})\n"
            f"{structure.nonzeros:,} non-zeros ({structure.density:.2%}), {structure.form}",
            **TEXT,
        )
        _label_axes(axes, picture)
        figure.savefig(path, format=file_format)
    finally:
        pyplot.close(figure)


def _draw_heatmap(picture: Picture, path: Path, file_format: str) -> None:
    """The heat map with a colour bar centred on 0, labelled axes and the outputs' and inputs'
    separators; exact zeros in grey, ±Infinity and NaN in colours of their own (the terminal's),
    each named in a legend. Names are drawn as written (matplotlib's mathtext is off)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    values = picture.values
    finite = np.ma.masked_where(~np.isfinite(values) | (values == 0), values)
    colormap = matplotlib.colormaps["RdBu_r"].with_extremes(bad=_hex(ZERO_RGB))  # masked: zeros
    scale = picture.scale if picture.scale > 0 else 1.0
    figure = pyplot.figure(figsize=FIGURE_INCHES, dpi=DPI)
    axes = figure.add_axes(AXES_BOX)
    try:
        image = axes.imshow(
            finite, cmap=colormap, vmin=-scale, vmax=scale, interpolation="nearest", aspect="auto"
        )
        legend = [Patch(color=_hex(ZERO_RGB), label="exactly 0")]
        for where, rgb, label in (
            (values == np.inf, POSITIVE_INFINITY_RGB, "+Infinity"),
            (values == -np.inf, NEGATIVE_INFINITY_RGB, "−Infinity"),
            (np.isnan(values), NAN_RGB, "NaN"),
        ):
            if where.any():
                axes.imshow(
                    np.ma.masked_where(~where, np.ones_like(values)),
                    cmap=ListedColormap([_hex(rgb)]),
                    interpolation="nearest",
                    aspect="auto",
                )
                legend.append(Patch(color=_hex(rgb), label=label))
        figure.colorbar(image, cax=figure.add_axes(COLORBAR_BOX), label="∂ output / ∂ input")
        figure.legend(
            handles=legend, loc="lower right", fontsize="small", frameon=False, ncols=len(legend)
        )
        _separate(axes, picture)
        structure = picture.structure
        title = f"{visible(picture.title)}  ({structure.rows}×{structure.columns})"
        axes.set_title(title, **TEXT)
        _label_axes(axes, picture)
        figure.savefig(path, format=file_format)
    finally:
        pyplot.close(figure)


def _label_axes(axes: Any, picture: Picture) -> None:
    """Axis titles (with the pooling, if any) and ticks at round indices of each output and
    input, counted from 0 within it; where there are several, each one's first tick is its
    name."""
    pooled = picture.cell_rows * picture.cell_columns > 1
    suffix = (
        f"; a cell shows the largest |entry| of {picture.cell_rows}×{picture.cell_columns}"
        if pooled
        else ""
    )
    inputs = ", ".join(visible(g.label) for g in picture.column_groups)
    axes.set_xlabel(f"inputs: {inputs}{suffix}", **TEXT)
    outputs = ", ".join(visible(g.label) for g in picture.row_groups)
    axes.set_ylabel(f"outputs: {outputs}", **TEXT)
    axes.set_xticks(*_index_ticks(picture.column_groups, picture.cell_columns), **TEXT)
    axes.set_yticks(*_index_ticks(picture.row_groups, picture.cell_rows), **TEXT)


def _index_ticks(groups: tuple[PictureGroup, ...], per_cell: int) -> tuple[list[float], list[str]]:
    """Tick positions (in cells) and labels at round entry indices of each group."""
    step = _round_step(sum(g.size for g in groups) / TICKS)
    positions: list[float] = []
    labels: list[str] = []
    start = 0
    for group in groups:
        for index in range(0, group.size, step):
            positions.append(start + (index + 0.5) / per_cell - 0.5)
            labels.append(visible(group.label) if index == 0 and len(groups) > 1 else str(index))
        start += group.cells
    return positions, labels


def _round_step(raw: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, … at least `raw`."""
    scale = 1
    while True:
        for multiple in (1, 2, 5):
            if multiple * scale >= raw:
                return multiple * scale
        scale *= 10


def _separate(axes: Any, picture: Picture, color: str = "black") -> None:
    """Lines where one input or output ends and the next begins."""
    column_starts = np.cumsum([0] + [g.cells for g in picture.column_groups])
    row_starts = np.cumsum([0] + [g.cells for g in picture.row_groups])
    for x in column_starts[1:-1]:
        axes.axvline(x - 0.5, color=color, linewidth=1)
    for y in row_starts[1:-1]:
        axes.axhline(y - 0.5, color=color, linewidth=1)
