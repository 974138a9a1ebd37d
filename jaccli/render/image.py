"""J's heat map as a .png, .svg or .pdf file, drawn with matplotlib (the `plot` extra).

matplotlib is imported only here, and only when such a file is asked for.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from jaccli.errors import UsageError
from jaccli.result import Picture

IMAGE_CELLS = 512
"""The most cells a picture file has down and across; larger J are pooled as on screen."""
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


def draw_picture(picture: Picture, path: Path, file_format: str) -> None:
    """The heat map with a colour bar centred on 0, labelled axes and the outputs' and inputs'
    separators; exact zeros in grey, NaN in yellow."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot
    from matplotlib.colors import ListedColormap

    values = np.ma.masked_where(picture.values == 0, picture.values)
    colormap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#6b6b6b")  # masked: zeros
    scale = picture.scale if picture.scale > 0 else 1.0
    figure = pyplot.figure(figsize=FIGURE_INCHES, dpi=DPI)
    axes = figure.add_axes(AXES_BOX)
    try:
        image = axes.imshow(
            values, cmap=colormap, vmin=-scale, vmax=scale, interpolation="nearest", aspect="auto"
        )
        nan = np.isnan(picture.values)
        if nan.any():
            axes.imshow(
                np.ma.masked_where(~nan, np.ones_like(picture.values)),
                cmap=ListedColormap(["#e6ab02"]),
                interpolation="nearest",
                aspect="auto",
            )
        figure.colorbar(
            image, cax=figure.add_axes(COLORBAR_BOX), label="∂ output / ∂ input (grey: exactly 0)"
        )
        _separate(axes, picture)
        axes.set_title(f"{picture.title}  ({picture.structure.rows}×{picture.structure.columns})")
        pooled = picture.cell_rows * picture.cell_columns > 1
        suffix = f", {picture.cell_rows}×{picture.cell_columns} entries a cell" if pooled else ""
        axes.set_xlabel(f"inputs: {', '.join(g.label for g in picture.column_groups)}{suffix}")
        axes.set_ylabel(f"outputs: {', '.join(g.label for g in picture.row_groups)}")
        figure.savefig(path, format=file_format)
    finally:
        pyplot.close(figure)


def _separate(axes: Any, picture: Picture) -> None:
    """Lines where one input or output ends and the next begins, and ticks at their starts."""
    column_starts = np.cumsum([0] + [g.cells for g in picture.column_groups])
    row_starts = np.cumsum([0] + [g.cells for g in picture.row_groups])
    for x in column_starts[1:-1]:
        axes.axvline(x - 0.5, color="black", linewidth=1)
    for y in row_starts[1:-1]:
        axes.axhline(y - 0.5, color="black", linewidth=1)
    axes.set_xticks(column_starts[:-1] - 0.5, [g.label for g in picture.column_groups], ha="left")
    axes.set_yticks(row_starts[:-1] - 0.5, [g.label for g in picture.row_groups], va="top")
