"""J's heat map as a .png, .svg or .pdf file, drawn with matplotlib (the `plot` extra).

matplotlib is imported only here, and only when such a file is asked for.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from jaccli.errors import UsageError
from jaccli.render.labels import visible
from jaccli.render.picture import (
    NAN_RGB,
    NEGATIVE_INFINITY_RGB,
    POSITIVE_INFINITY_RGB,
    ZERO_RGB,
)
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
            "pip install 'jaccli[plot]'",
            code="missing_extra",
        )


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def draw_picture(picture: Picture, path: Path, file_format: str) -> None:
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
    text = {"parse_math": False}
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
        _separate(axes, picture, text)
        structure = picture.structure
        title = f"{visible(picture.title)}  ({structure.rows}×{structure.columns})"
        axes.set_title(title, **text)
        pooled = picture.cell_rows * picture.cell_columns > 1
        suffix = f", {picture.cell_rows}×{picture.cell_columns} entries a cell" if pooled else ""
        inputs = ", ".join(visible(g.label) for g in picture.column_groups)
        axes.set_xlabel(f"inputs: {inputs}{suffix}", **text)
        outputs = ", ".join(visible(g.label) for g in picture.row_groups)
        axes.set_ylabel(f"outputs: {outputs}", **text)
        figure.savefig(path, format=file_format)
    finally:
        pyplot.close(figure)


def _separate(axes: Any, picture: Picture, text: dict[str, Any]) -> None:
    """Lines where one input or output ends and the next begins, and ticks at their starts."""
    column_starts = np.cumsum([0] + [g.cells for g in picture.column_groups])
    row_starts = np.cumsum([0] + [g.cells for g in picture.row_groups])
    for x in column_starts[1:-1]:
        axes.axvline(x - 0.5, color="black", linewidth=1)
    for y in row_starts[1:-1]:
        axes.axhline(y - 0.5, color="black", linewidth=1)
    columns = [visible(g.label) for g in picture.column_groups]
    axes.set_xticks(column_starts[:-1] - 0.5, columns, ha="left", **text)
    axes.set_yticks(
        row_starts[:-1] - 0.5, [visible(g.label) for g in picture.row_groups], va="top", **text
    )
