"""Rich renderables for results: inputs, output, Jacobians and VJPs as labelled grids.

Renderers lay out numbers the engine computed; they never compute. Every user-supplied string
enters as `Text`, never as markup, so `[bold]` prints as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from rich import box
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from jaccli.errors import UsageError
from jaccli.functions.model import Function
from jaccli.render.checks import check_renderable, view_renderable
from jaccli.render.labels import index_label, slice_label
from jaccli.render.layout import Layout, window
from jaccli.render.numbers import format_cells
from jaccli.render.picture import picture_renderable
from jaccli.result import (
    Evaluation,
    Guard,
    JacobianResult,
    JvpResult,
    Picture,
    SparseJacobianResult,
    VjpResult,
)
from jaccli.spec import format_shape

PER_ELEMENT_LIMIT = 12
"""Up to this many output elements, J is shown as one grid per element ∂y[i] / ∂x."""
FULL_CELL_LIMIT = 40_000
"""--full prints at most this many numbers in one table (Rich takes about 2 s for them)."""


@dataclass(frozen=True)
class Grid:
    """A 2-D view of numbers with labels for its rows and columns."""

    values: np.ndarray  # 2-D
    row_label: Callable[[int], str]
    column_label: Callable[[int], str]


def _grid_of(array: np.ndarray, layout: Layout) -> Grid:
    """An array in its own shape: rows over the leading axes, columns over the last axis.

    A vector too long for one line stands as a column, one labelled row per entry.
    """
    if array.ndim == 0:
        return Grid(array.reshape(1, 1), lambda _: "", lambda _: "")
    if array.ndim == 1:
        as_row = Grid(array.reshape(1, -1), lambda _: "", str)
        _, column_limit = _fits(as_row, layout)
        if column_limit is None or array.shape[0] <= column_limit:
            return as_row
        return Grid(array.reshape(-1, 1), str, lambda _: "")
    leading = array.shape[:-1]

    def row_label(row: int) -> str:
        return ",".join(str(int(i)) for i in np.unravel_index(row, leading))

    return Grid(array.reshape(-1, array.shape[-1]), row_label, str)


def _fits(grid: Grid, layout: Layout) -> tuple[int | None, int | None]:
    """Row and column limits that keep the grid within the layout (None: no limit)."""
    if layout.full:
        cells = grid.values.size
        if cells > FULL_CELL_LIMIT:
            raise UsageError(
                f"--full would print {cells:,} numbers in one table (at most "
                f"{FULL_CELL_LIMIT:,}); use --json for the whole result"
            )
        return None, None
    sample = format_cells(grid.values[: layout.max_rows, :64], layout.precision)
    cell_width = max((len(str(c)) for c in sample.flat), default=1)
    label_width = max((len(grid.row_label(r)) for r in range(min(len(grid.values), 4))), default=0)
    label_width = max(label_width, len(grid.column_label(grid.values.shape[1] - 1)))
    columns = max(2, (layout.width - label_width - 4) // (max(cell_width, label_width) + 3))
    return layout.max_rows, columns


def grid_table(grid: Grid, title: Text, layout: Layout) -> tuple[Group, Text | None]:
    """The grid as a table under its title, and a line saying what was left out when it had to
    be cut. The title is a line of its own, never wrapped to the width of a narrow table."""
    row_limit, column_limit = _fits(grid, layout)
    rows = window(grid.values.shape[0], row_limit)
    columns = window(grid.values.shape[1], column_limit)
    shown = grid.values[
        np.ix_([r for r in rows if r is not None], [c for c in columns if c is not None])
    ]
    cells = iter(format_cells(shown, layout.precision).tolist())
    exact_zero = iter((shown == 0).tolist())

    labelled = any(c is not None and grid.column_label(c) for c in columns)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, show_header=labelled)
    table.add_column("", style="dim", justify="right")
    for c in columns:
        table.add_column("…" if c is None else Text(grid.column_label(c)), justify="right")
    for r in rows:
        if r is None:
            table.add_row("⋮", *("⋮" if c is not None else "" for c in columns))
            continue
        row_cells, row_zero = iter(next(cells)), iter(next(exact_zero))
        rendered: list[Text | str] = []
        for c in columns:
            if c is None:
                rendered.append("…")
            else:
                text, zero = next(row_cells), next(row_zero)
                rendered.append(Text(text, style="dim" if zero else ""))
        table.add_row(Text(grid.row_label(r)), *rendered)
    titled = Group(title, table)
    if len(rows) == grid.values.shape[0] and len(columns) == grid.values.shape[1]:
        return titled, None
    shown_rows = sum(r is not None for r in rows)
    shown_columns = sum(c is not None for c in columns)
    note = Text(
        f"shown: {shown_rows} of {grid.values.shape[0]} rows, {shown_columns} of "
        f"{grid.values.shape[1]} columns (--full: all)",
        style="italic dim",
    )
    return titled, note


def with_note(table: RenderableType, note: Text | None) -> RenderableType:
    return table if note is None else Group(table, note)


def array_table(array: np.ndarray, title: Text, layout: Layout) -> RenderableType:
    """The array as a grid in its own shape, rows and columns labelled by index."""
    return with_note(*grid_table(_grid_of(np.asarray(array), layout), title, layout))


def _titled(name: str, shape: Sequence[int], note: str = "") -> Text:
    title = Text.assemble((name, "bold"), "  ", (format_shape(tuple(shape)), "cyan"))
    if note:
        title.append(f"  {note}", style="dim")
    return title


def how_computed(label: str, method: str, reason: str) -> Text:
    """`strategy rev` (or `method …`) and, indented on the next line, why: two short lines
    rather than one that a 60- or 80-column terminal would break mid-phrase."""
    return Text(f"\n{label} {method}\n  {reason}", style="dim")


def function_reference_line(guard: Guard | None) -> list[RenderableType]:
    """Under the strategy: the result against the function's own central differences, when it
    was checked (the user's functions), in two short lines as `how_computed` draws them."""
    reference = guard.function_reference if guard is not None else None
    if reference is None:
        return []
    if reference.skipped is not None:
        return [
            Text(f"not checked against the function itself\n  {reference.skipped}", style="dim")
        ]
    near = "" if reference.off_point is None else f" near x (±{reference.off_point:.2g})"
    return [
        Text(
            f"checked against the function's own differences{near}\n"
            f"  {reference.quantity} {reference.value:.7g} vs {reference.difference:.7g} "
            f"± {reference.estimated_error:.2g}",
            style="dim",
        )
    ]


def _section(title: str) -> Text:
    return Text.assemble("\n", (title, "bold underline"))


def evaluation_renderables(evaluation: Evaluation, layout: Layout) -> list[RenderableType]:
    """The function and its formula, then each input and the output with their values."""
    name, formula, dtype = evaluation.function_name, evaluation.formula, evaluation.dtype
    if len(name) + len(formula) + len(dtype) + 6 <= layout.width:
        header = Text.assemble((name, "bold magenta"), "   ", formula, "   ", (dtype, "dim"))
    else:  # the formula gets a line of its own rather than be broken by a narrow terminal
        header = Text.assemble((name, "bold magenta"), "   ", (dtype, "dim"), "\n", formula)
    parts: list[RenderableType] = [header]
    if evaluation.jacobian_formula:
        formula = evaluation.jacobian_formula.replace("\n", "\n   ")
        parts.append(Text(f"J: {formula}", style="dim"))
    parts.append(_section("Inputs"))
    for value in evaluation.inputs:
        if not value.differentiable:
            note = "constant, not differentiated"
        elif not value.differentiated:
            note = "held fixed" + (
                f" ({value.values.dtype})" if value.values.dtype.kind in "iu" else ""
            )
        else:
            note = ""
        parts.append(
            array_table(value.values, _titled(value.name, value.values.shape, note), layout)
        )
    parts.append(_section("Output" if len(evaluation.outputs) == 1 else "Outputs"))
    for name, output in evaluation.outputs.items():
        parts.append(array_table(output, _titled(name, output.shape), layout))
    return parts


def jacobian_table(
    jacobian: np.ndarray, y_name: str, y_shape: Sequence[int], x_name: str, layout: Layout
) -> RenderableType:
    """J wrt one input: one grid per output element in x's shape when x has two or more
    dimensions and y few elements (the grids show J's block structure), else J as a matrix
    with rows `y[i,…]` and columns `x[j,…]` (a vector→vector J is that matrix at every size)."""
    y_shape = tuple(y_shape)
    x_shape = jacobian.shape[len(y_shape) :]
    n_out = int(np.prod(y_shape, dtype=np.int64))
    per_element = jacobian.reshape(n_out, *x_shape)
    if n_out <= PER_ELEMENT_LIMIT and len(x_shape) >= 2:
        tables = [
            grid_table(
                _grid_of(per_element[i], layout),
                Text(f"∂{index_label(y_name, y_shape, i)} / ∂{x_name}"),
                layout,
            )
            for i in range(n_out)
        ]
        if all(note is None for _, note in tables):
            return Columns([table for table, _ in tables], padding=(0, 3))
    matrix = Grid(
        jacobian.reshape(n_out, -1),
        lambda row: index_label(y_name, y_shape, row),
        lambda column: index_label(x_name, x_shape, column),
    )
    title = Text(f"∂{y_name} / ∂{x_name} as a {n_out}×{matrix.values.shape[1]} matrix")
    return with_note(*grid_table(matrix, title, layout))


def view_and_check(
    result: JacobianResult | VjpResult | JvpResult, layout: Layout
) -> list[RenderableType]:
    parts: list[RenderableType] = []
    if result.view is not None:
        y_ndim = result.evaluation.outputs[result.view.output].ndim
        x_ndim = result.view.slices[0].input_slice.ndim + 1
        parts.append(view_renderable(result.view, y_ndim, x_ndim, layout.precision, layout.width))
    if result.check is not None:
        parts.append(check_renderable(result.check))
    return parts


def jacobian_renderable(
    result: JacobianResult, layout: Layout, picture: Picture | None = None
) -> Group:
    """The evaluation, then J of each output for each input differentiated (or its per-slice
    view, or the picture asked for), the strategy used, and the check when one was made."""
    parts = evaluation_renderables(result.evaluation, layout)
    if picture is not None:
        parts.append(picture_renderable(picture, layout))
    elif result.per_sample is not None:
        parts += per_sample_renderables(result, layout)
    else:
        parts += dense_renderables(result, layout)
    parts += view_and_check(result, layout)
    if result.determinant is not None:
        parts += determinant_renderables(result, layout)
    parts.append(how_computed("strategy", result.strategy, result.strategy_reason))
    parts += function_reference_line(result.guard)
    return Group(*parts)


DETERMINANT_ROWS = 12
"""Per-sample determinants shown without --full."""


def determinant_renderables(
    result: JacobianResult | SparseJacobianResult, layout: Layout
) -> list[RenderableType]:
    """det J, its sign, log|det J| and the trace: one column of them, or a row per sample."""
    det = result.determinant
    assert det is not None
    (y_name,) = result.evaluation.outputs
    x_names = ", ".join(det.wrt)
    of = f"∂{y_name}/∂{x_names}" if len(det.wrt) == 1 else f"∂{y_name}/∂({x_names}) joint"
    quantities = {
        "det J": det.det,
        "sign": det.sign,
        "log|det J|": det.logabsdet,
        "trace J": det.trace,
    }
    if det.singular.any():  # NOTE [a singular J]: only then is the condition number news
        quantities["cond J"] = det.condition
    cells = {name: format_cells(values, layout.precision) for name, values in quantities.items()}
    cells["sign"] = np.vectorize(
        lambda s: "nan" if np.isnan(s) else {1: "+1", -1: "-1"}.get(s, "0"), otypes=[object]
    )(det.sign)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False)
    if det.sign.ndim == 0:
        title = f"Determinant of {of}  {det.size}×{det.size}"
        table.add_column("")
        table.add_column("", justify="right")
        table.show_header = False
        for name, texts in cells.items():
            table.add_row(Text(name, style="bold"), Text(str(texts)))
        footer = [Text("trace J = Σᵢ ∂yᵢ/∂xᵢ, the divergence", style="dim")]
        if det.singular:
            footer.append(Text("J is singular to working precision", style="bold"))
        return [_section(title), table, *footer]
    count = det.sign.shape[0]
    title = f"Determinants of the {count} diagonal blocks of {of}  each {det.size}×{det.size}"
    table.add_column("sample", justify="right", style="dim")
    for name in cells:
        table.add_column(name, justify="right")
    for row in window(count, None if layout.full else DETERMINANT_ROWS):
        if row is None:
            table.add_row("…", *("…" for _ in cells))
        else:
            table.add_row(str(row), *(Text(str(texts[row])) for texts in cells.values()))
    return [_section(title), table]


def dense_renderables(result: JacobianResult, layout: Layout) -> list[RenderableType]:
    """J of each output for each input, headed by its shape, except inputs shown as a view."""
    parts: list[RenderableType] = []
    for y_name, by_wrt in result.jacobians.items():
        y_shape = result.evaluation.outputs[y_name].shape
        for name, jacobian in by_wrt.items():
            if result.view is not None and result.view.wrt == name:
                continue
            x_shape = jacobian.shape[len(y_shape) :]
            parts.append(
                Text.assemble(
                    "\n",
                    (f"Jacobian ∂{y_name}/∂{name}", "bold underline"),
                    "  ",
                    (format_shape(jacobian.shape), "cyan"),
                    (
                        f" = {y_name} {format_shape(y_shape)} + {name} {format_shape(x_shape)}",
                        "dim",
                    ),
                )
            )
            parts.append(jacobian_table(jacobian, y_name, y_shape, name, layout))
    return parts


def check_command_renderable(result: JacobianResult, layout: Layout) -> Group:
    """The evaluation, then the check with its worst entries (J itself is not shown)."""
    assert result.check is not None
    parts = evaluation_renderables(result.evaluation, layout)
    parts.append(check_renderable(result.check, worst_entries=True))
    return Group(*parts)


def per_sample_renderables(result: JacobianResult, layout: Layout) -> list[RenderableType]:
    """Each input's diagonal blocks, one grid per sample, cut past PER_ELEMENT_LIMIT blocks."""
    assert result.per_sample is not None
    ((y_name, by_wrt),) = result.jacobians.items()
    y_ndim = result.evaluation.outputs[y_name].ndim
    parts: list[RenderableType] = []
    for wrt, blocks in by_wrt.items():
        input_axis, output_axis = result.per_sample[wrt]
        x_ndim = blocks.ndim - y_ndim + 1
        parts.append(
            Text.assemble(
                "\n",
                (f"Per-sample Jacobian ∂{y_name}/∂{wrt}", "bold underline"),
                "  ",
                (format_shape(blocks.shape), "cyan"),
                (
                    f" = {blocks.shape[0]} blocks along axis {input_axis} of {wrt}; "
                    "J is zero off them",
                    "dim",
                ),
            )
        )
        limit = PER_ELEMENT_LIMIT if blocks[0].size <= 24 else 3  # a dozen small, or 3 big
        shown = range(blocks.shape[0] if layout.full else min(blocks.shape[0], limit))
        tables = []
        for i in shown:
            y_i = slice_label(y_name, output_axis, y_ndim, i)
            x_i = slice_label(wrt, input_axis, x_ndim, i)
            tables.append(array_table(blocks[i], Text(f"∂{y_i} / ∂{x_i}"), layout))
        parts.append(Columns(tables, padding=(0, 3)))
        if len(shown) < blocks.shape[0]:
            parts.append(
                Text(
                    f"showing {len(shown)} of {blocks.shape[0]} blocks; --full shows every block",
                    style="italic dim",
                )
            )
    return parts


def cotangent_name(output: str, outputs: Sequence[str]) -> str:
    """`v` for the single output's cotangent, `v_y0` for output y0 of several."""
    return "v" if len(outputs) == 1 else f"v_{output}"


def vjp_renderable(result: VjpResult, layout: Layout) -> Group:
    """The evaluation, the cotangent v, then vᵀ·J for each input differentiated (or its
    per-slice view), and the check when one was made."""
    evaluation = result.evaluation
    parts = evaluation_renderables(evaluation, layout)
    parts.append(_section("Cotangent"))
    for output, v in result.cotangents.items():
        title = _titled(
            cotangent_name(output, list(result.cotangents)), v.shape, f"in {output}'s shape"
        )
        parts.append(array_table(v, title, layout))
    backward = "y.backward(v)" if len(result.cotangents) == 1 else "backward(outputs, v)"
    for name, vjp in result.vjps.items():
        if result.view is not None and result.view.wrt == name:
            continue
        parts.append(
            Text.assemble(
                "\n",
                (f"VJP vᵀ·J wrt {name}", "bold underline"),
                (f"  = {name}.grad after {backward}", "dim"),
            )
        )
        parts.append(array_table(vjp, _titled(name, vjp.shape), layout))
    parts += view_and_check(result, layout)
    parts += function_reference_line(result.guard)
    return Group(*parts)


def product_renderables(
    section: str,
    vectors: dict[str, np.ndarray],
    products: dict[str, tuple[str, np.ndarray]],
    note: str,
    layout: Layout,
) -> list[RenderableType]:
    """The vector of a product for each input (`v`, or `v_a`, `v_b`), then each product under
    its heading, titled by its name: `products[heading] = (name, values)`."""
    parts: list[RenderableType] = [_section(section)]
    for wrt, v in vectors.items():
        name = "v" if len(vectors) == 1 else f"v_{wrt}"
        parts.append(array_table(v, _titled(name, v.shape, f"in {wrt}'s shape"), layout))
    for heading, (name, values) in products.items():
        parts.append(Text.assemble("\n", (heading, "bold underline"), (note, "dim")))
        parts.append(array_table(values, _titled(name, values.shape), layout))
    return parts


def jvp_renderable(result: JvpResult, layout: Layout) -> Group:
    """The evaluation, the tangent v of each input, then J·v for each output, the method used,
    and the check when one was made."""
    parts = evaluation_renderables(result.evaluation, layout)
    terms = " + ".join(f"J_{wrt}·v_{wrt}" for wrt in result.tangents)
    note = "  the change along v" if len(result.tangents) == 1 else f"  = {terms}"
    products = {f"JVP J·v of {out}": (out, jvp) for out, jvp in result.jvps.items()}
    parts += product_renderables("Tangent", result.tangents, products, note, layout)
    parts += view_and_check(result, layout)
    parts.append(how_computed("method", result.method, result.method_reason))
    parts += function_reference_line(result.guard)
    return Group(*parts)


def _inputs_text(function: Function) -> Text:
    """The differentiated inputs with their default shapes: `a 2x3, b 3x2`."""
    text = Text()
    for spec in function.inputs:
        if spec.differentiable:
            text.append(", " if text else "")
            text.append(spec.name, style="bold")
            text.append(f" {format_shape(spec.default_shape)}", style="cyan")
    return text


def _formula_text(function: Function) -> Text:
    """The formula, then its constants and the shapes they take: `constants: A d×d, b d
    (d = x's last dimension)`."""
    constants = [spec for spec in function.inputs if not spec.differentiable]
    text = Text(function.formula)
    if function.jacobian_formula:
        text.append(f"\n{function.jacobian_formula}", style="dim")
    if not constants:
        return text
    text.append("\nconstants: ", style="dim")
    symbols = []
    for position, spec in enumerate(constants):
        text.append(", " if position else "", style="dim")
        text.append(spec.name, style="bold dim")
        if spec.derived_shape is not None:
            text.append(f" {spec.derived_shape.shape}", style="dim")
            symbols.append(spec.derived_shape.symbols)
        elif spec.shape_like is not None:
            text.append(f" like {spec.shape_like}", style="dim")
        else:
            text.append(f" {format_shape(spec.default_shape)}", style="dim")
    if symbols:
        text.append(f" ({', '.join(dict.fromkeys(symbols))})", style="dim")
    return text


PRESETS_TABLE_WIDTH = 80
"""Below this width the presets are listed one under another instead of in a table."""


def presets_renderable(functions: Iterable[tuple[Function, bool]], width: int) -> RenderableType:
    """The presets as a table, or on a narrow terminal one after another: the name, inputs
    and `det ✓`, then the formula, J and the constants indented under it."""
    if width >= PRESETS_TABLE_WIDTH:
        return presets_table(functions)
    parts: list[RenderableType] = [Text("Presets (--fn NAME)")]
    for function, square in functions:
        parts.append(
            Text.assemble(
                "\n",
                (function.name, "bold magenta"),
                "  ",
                _inputs_text(function),
                ("  det ✓" if square else "", "dim"),
            )
        )
        formula = _formula_text(function)
        indented = Text("  ")
        for line in formula.split("\n"):
            indented.append_text(line)
            indented.append("\n  ")
        indented.rstrip()
        parts.append(indented)
    return Group(*parts)


def presets_table(functions: Iterable[tuple[Function, bool]]) -> Table:
    """Every preset: name, formula with its constants, the inputs with their default shapes,
    and whether J is square (so `jaccli det` applies)."""
    table = Table(
        box=box.SIMPLE_HEAD,
        title=Text("Presets (--fn NAME)"),
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    table.add_column("name", style="bold magenta", no_wrap=True)
    table.add_column("formula", ratio=1)
    table.add_column("inputs", no_wrap=True)
    table.add_column("det", no_wrap=True, justify="center")
    for function, square in functions:
        table.add_row(
            Text(function.name),
            _formula_text(function),
            _inputs_text(function),
            Text("✓" if square else ""),
        )
    return table
