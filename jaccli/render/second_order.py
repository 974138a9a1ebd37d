"""Rich renderables for second derivatives: Hessians as labelled matrices, and H·v."""

from __future__ import annotations

import numpy as np
from rich.console import Group, RenderableType
from rich.text import Text

from jaccli.render.labels import index_label
from jaccli.render.layout import Layout
from jaccli.render.picture import picture_renderable
from jaccli.render.tables import (
    Grid,
    evaluation_renderables,
    function_reference_line,
    grid_table,
    how_computed,
    product_renderables,
    view_and_check,
    with_note,
)
from jaccli.result import HessianResult, HvpResult, Picture
from jaccli.spec import format_shape

HESSIANS_PER_OUTPUT = 3
"""Output elements whose Hessian is shown without --full."""


def hessian_matrix(
    h: np.ndarray, y_label: str, a: str, a_shape: tuple[int, ...], b: str, layout: Layout
) -> RenderableType:
    """∂²y/∂a∂b of one output element as a matrix: rows a[i], columns b[j]."""
    b_shape = h.shape[len(a_shape) :]
    rows, columns = int(np.prod(a_shape, dtype=np.int64)), int(np.prod(b_shape, dtype=np.int64))
    grid = Grid(
        h.reshape(rows, columns),
        lambda row: index_label(a, a_shape, row),
        lambda column: index_label(b, b_shape, column),
    )
    title = Text(f"∂²{y_label}/{_pair(a, b)}  {rows}×{columns}")
    return with_note(*grid_table(grid, title, layout))


def hessian_renderable(
    result: HessianResult, layout: Layout, picture: Picture | None = None
) -> Group:
    """The evaluation, then H of each output element for each pair of inputs as a matrix (or
    the picture of H asked for), its symmetry error, the strategy, and the check when one was
    made."""
    parts = evaluation_renderables(result.evaluation, layout)
    if picture is not None:
        parts.append(picture_renderable(picture, layout))
        parts += _tail(result, layout)
        return Group(*parts)
    parts += _matrices(result, layout)
    parts += _tail(result, layout)
    return Group(*parts)


def _matrices(result: HessianResult, layout: Layout) -> list[RenderableType]:
    """H of each output element for each pair of inputs, as a matrix with rows a and columns b."""
    parts: list[RenderableType] = []
    for y, by_a in result.hessians.items():
        y_shape = result.evaluation.outputs[y].shape
        count = int(np.prod(y_shape, dtype=np.int64))
        shown = count if layout.full else min(count, HESSIANS_PER_OUTPUT)
        for a, by_b in by_a.items():
            for b, h in by_b.items():
                a_shape = h.shape[len(y_shape) : len(y_shape) + _ndim_of(result, a)]
                parts.append(
                    Text.assemble(
                        "\n",
                        (f"Hessian ∂²{y}/{_pair(a, b)}", "bold underline"),
                        "  ",
                        (format_shape(h.shape), "cyan"),
                        (
                            f" = {y} {format_shape(y_shape)} + {a} {format_shape(a_shape)} + "
                            f"{b} {format_shape(h.shape[len(y_shape) + len(a_shape) :])}",
                            "dim",
                        ),
                    )
                )
                per_element = h.reshape(count, *h.shape[len(y_shape) :])
                for i in range(shown):
                    label = index_label(y, y_shape, i)
                    parts.append(hessian_matrix(per_element[i], label, a, a_shape, b, layout))
                if shown < count:
                    parts.append(
                        Text(
                            f"showing {shown} of {count} output elements; --full shows all",
                            style="italic dim",
                        )
                    )
    return parts


def _tail(result: HessianResult, layout: Layout) -> list[RenderableType]:
    """The symmetry error, the check when one was made, and the strategy."""
    return [
        Text(f"\nsymmetry: max|H − Hᵀ| = {result.symmetry_error:.3g}", style="dim"),
        *view_and_check(result, layout),
        how_computed("strategy", result.strategy, result.strategy_reason),
        *function_reference_line(result.guard),
    ]


def _pair(a: str, b: str) -> str:
    """`∂x²`, or `∂a∂b` for two inputs."""
    return f"∂{a}²" if a == b else f"∂{a}∂{b}"


def _ndim_of(result: HessianResult, name: str) -> int:
    (value,) = (v for v in result.evaluation.inputs if v.name == name)
    return value.values.ndim


def hvp_renderable(result: HvpResult, layout: Layout) -> Group:
    """The evaluation, the vector v of each input, then H·v for each input, the method, and
    the check when one was made."""
    parts = evaluation_renderables(result.evaluation, layout)
    (y,) = result.evaluation.outputs
    products = {f"HVP H·v wrt {wrt}": (wrt, hvp) for wrt, hvp in result.hvps.items()}
    note = f"  the change of ∂{y}/∂{next(iter(result.hvps))} along v"
    if len(result.hvps) > 1:
        note = "  (H·v)_a = Σ_b ∂²y/∂a∂b·v_b"
    parts += product_renderables("Vector", result.vectors, products, note, layout)
    parts += view_and_check(result, layout)
    parts.append(how_computed("method", result.method, result.method_reason))
    parts += function_reference_line(result.guard)
    return Group(*parts)
