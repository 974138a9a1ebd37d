"""The result as text to paste: `--format markdown` (GitHub tables) or `--format latex`.

Each array of the result is the matrix `--out x.csv` writes (rows over the output's axes,
columns over the input's), cut like the tables past 20 rows or 12 columns unless --full.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaccli.errors import UsageError
from jaccli.render.files import OutArray, result_arrays
from jaccli.render.labels import index_label, visible
from jaccli.render.layout import window
from jaccli.render.numbers import format_cells
from jaccli.render.tables import FULL_CELL_LIMIT
from jaccli.result import HessianResult, HvpResult, JacobianResult, JvpResult, Result, VjpResult

ROWS_SHOWN = 20
COLUMNS_SHOWN = 12
BMATRIX_COLUMNS = 10
"""amsmath's bmatrix holds this many columns unless MaxMatrixCols is raised."""


def _matrix(out: OutArray) -> tuple[np.ndarray, Callable[[int], str], Callable[[int], str]]:
    """The array as a matrix, with the labels of its rows and columns."""
    row_shape = out.array.shape[: out.row_ndim]
    column_shape = out.array.shape[out.row_ndim :]
    matrix = out.array.reshape(int(np.prod(row_shape, dtype=np.int64)), -1)
    return (
        matrix,
        lambda i: index_label(out.row_name, row_shape, i),
        lambda j: index_label(out.column_name, column_shape, j),
    )


def _cut(
    out: OutArray, precision: int, full: bool
) -> tuple[list[list[str | None]], list[str | None], list[str | None]]:
    """The cells shown (None in a gap), with the labels of the rows and columns shown; the
    numbers shown are formatted together, in one notation."""
    matrix, row_label, column_label = _matrix(out)
    if full and matrix.size > FULL_CELL_LIMIT:
        raise UsageError(
            f"--full would print {matrix.size:,} numbers of {out.key} (at most "
            f"{FULL_CELL_LIMIT:,}); use --out for the whole result"
        )
    rows = window(matrix.shape[0], None if full else ROWS_SHOWN)
    columns = window(matrix.shape[1], None if full else COLUMNS_SHOWN)
    shown = np.ix_([r for r in rows if r is not None], [c for c in columns if c is not None])
    texts = iter(format_cells(matrix[shown], precision).tolist())
    cells: list[list[str | None]] = []
    for r in rows:
        row = iter(next(texts)) if r is not None else None
        cells.append([None if row is None or c is None else next(row) for c in columns])
    row_names = [None if r is None else row_label(r) for r in rows]
    column_names = [None if c is None else column_label(c) for c in columns]
    return cells, row_names, column_names


def _heading(result: Result, out: OutArray) -> tuple[str, str]:
    """A plain-text heading for the array, and its symbol in LaTeX."""
    if isinstance(result, JacobianResult) and out.key.startswith("det."):
        quantity = out.key.removeprefix("det.")
        symbols = {
            "sign": r"\operatorname{sign}\det J",
            "logabsdet": r"\log\lvert\det J\rvert",
            "det": r"\det J",
            "trace": r"\operatorname{tr} J",
        }
        return f"det J: {quantity}", symbols[quantity]
    if isinstance(result, JacobianResult):
        y, x = out.row_name, out.column_name
        return f"Jacobian ∂{y}/∂{x}", rf"\frac{{\partial {_tex(y)}}}{{\partial {_tex(x)}}}"
    if isinstance(result, HessianResult):
        y_a, b = out.row_name, out.column_name
        y, a = y_a.split("/")
        symbol = rf"\frac{{\partial^2 {_tex(y)}}}{{\partial {_tex(a)}\,\partial {_tex(b)}}}"
        pair = f"∂{a}²" if a == b else f"∂{a}∂{b}"
        return f"Hessian ∂²{y}/{pair}", symbol
    if isinstance(result, VjpResult):
        x = out.key
        return f"VJP vᵀ·J wrt {x}", rf"v^\top \frac{{\partial y}}{{\partial {_tex(x)}}}"
    if isinstance(result, JvpResult):
        return f"JVP J·v of {out.key}", rf"J\,v \;({_tex(out.key)})"
    assert isinstance(result, HvpResult)
    return f"HVP H·v wrt {out.key}", rf"(H v)_{{{_tex(out.key)}}}"


MARKDOWN_SPECIAL = frozenset("\\`*_[](){}<>&|~$!:#")
"""Characters Markdown (GitHub's too: tables, math, autolinks, raw HTML) may give a meaning."""


def _md(text: str) -> str:
    """Text that Markdown shows as written, in a table cell or a line: its special characters
    escaped with a backslash, control and invisible ones spelt out."""
    return "".join(f"\\{c}" if c in MARKDOWN_SPECIAL else c for c in visible(text))


def markdown(result: Result, precision: int, full: bool) -> str:
    """The function, then each array of the result as a GitHub table."""
    evaluation = result.evaluation
    lines = [
        f"**{_md(evaluation.function_name)}** `{visible(evaluation.formula).replace('`', '')}` "
        f"({evaluation.dtype})",
    ]
    arrays = result_arrays(result)
    determinant = [out for out in arrays if out.key.startswith("det.")]
    for out in arrays:
        if out in determinant:
            continue
        heading, _ = _heading(result, out)
        cells, row_names, column_names = _cut(out, precision, full)
        shape = "×".join(str(n) for n in out.array.shape) or "scalar"
        lines += ["", f"### {_md(heading)} ({shape})", ""]
        header = ["", *("…" if c is None else _md(c) for c in column_names)]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|" + "---:|" * len(column_names))
        for name, row in zip(row_names, cells, strict=True):
            label = "⋮" if name is None else _md(name)
            texts = ("⋮" if name is None else "…" if c is None else c for c in row)
            lines.append("| " + " | ".join([label, *texts]) + " |")
    if determinant:
        assert isinstance(result, JacobianResult) and result.determinant is not None
        lines += _determinant_table(determinant, result.determinant.size, precision, full)
    return "\n".join(lines) + "\n"


DETERMINANT_COLUMNS = {
    "det.det": "det J",
    "det.sign": "sign",
    "det.logabsdet": "log\\|det J\\|",
    "det.trace": "trace J",
}
"""The columns of det's one table, in the order the terminal shows them."""


def _sign_text(value: float) -> str:
    return "NaN" if np.isnan(value) else f"{int(value):+d}" if value else "0"


def _determinant_table(arrays: list[OutArray], size: int, precision: int, full: bool) -> list[str]:
    """det J, its sign, log|det J| and the trace as one table: a row, or a row per sample."""
    by_key = {out.key: out.array for out in arrays}
    shape = by_key["det.det"].shape
    count = int(np.prod(shape, dtype=np.int64))
    rows = window(count, None if full else ROWS_SHOWN)
    shown = [r for r in rows if r is not None]
    columns = {}
    for key in DETERMINANT_COLUMNS:
        flat = by_key[key].reshape(-1)[shown]
        texts = (
            [_sign_text(v) for v in flat] if key == "det.sign" else format_cells(flat, precision)
        )
        columns[key] = iter(texts)
    heading = f"det J ({size}×{size} J" + (f", {count} samples)" if shape else ")")
    lines = ["", f"### {heading}", ""]
    header = [*([""] if shape else []), *DETERMINANT_COLUMNS.values()]
    lines.append("| " + " | ".join(header) + " |")
    lines.append(("|---|" if shape else "|") + "---:|" * len(DETERMINANT_COLUMNS))
    for r in rows:
        label = [] if not shape else ["⋮" if r is None else _md(index_label("sample", shape, r))]
        texts = ["⋮" if r is None else next(columns[key]) for key in DETERMINANT_COLUMNS]
        lines.append("| " + " | ".join([*label, *texts]) + " |")
    return lines


_TEX_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#",
    "_": r"\_", "%": r"\%", "^": r"\^{}", "~": r"\~{}", "θ": r"\ensuremath{\theta}",
    "φ": r"\ensuremath{\phi}", "·": r"\ensuremath{\cdot}", "ᵀ": r"\ensuremath{^\top}",
    "²": r"\ensuremath{^2}", "∂": r"\ensuremath{\partial}", "×": r"\ensuremath{\times}",
    "Σ": r"\ensuremath{\Sigma}", "√": r"\ensuremath{\surd}",
}  # fmt: skip


def _tex_comment(text: str) -> str:
    """A comment line: one line, whatever the names hold."""
    return " ".join(visible(text).split())


def _tex_text(text: str) -> str:
    """Text safe inside \\texttt{…} and \\mathit{…}: TeX's special characters escaped,
    control and invisible ones spelt out."""
    return "".join(_TEX_SPECIAL.get(char, char) for char in visible(text))


def _tex(name: str) -> str:
    """A name as a math symbol: `x`, or `\\mathit{W1}` for longer ones."""
    escaped = _tex_text(name)
    return escaped if len(name) == 1 else rf"\mathit{{{escaped}}}"


def _tex_number(text: str) -> str:
    mantissa, _, exponent = text.partition("e")
    return rf"{mantissa} \times 10^{{{int(exponent)}}}" if exponent else text


def latex(result: Result, precision: int, full: bool) -> str:
    """The formula in math mode, then each array of the result as a bmatrix; J's entries are
    J_{ij} = ∂y_i/∂x_j, with what i and j stand for in a comment."""
    evaluation = result.evaluation
    lines = [
        _tex_comment(f"% jaccli: {evaluation.function_name}, {evaluation.dtype}"),
        rf"\[ \texttt{{{_tex_text(evaluation.formula)}}} \]",
    ]
    for out in result_arrays(result):
        heading, symbol = _heading(result, out)
        lines += ["", f"% {_tex_comment(heading)}"]
        if out.array.ndim == 0:
            value = _tex_number(str(format_cells(out.array, precision)))
            lines.append(rf"\[ {symbol} = {value} \]")
            continue
        cells, row_names, column_names = _cut(out, precision, full)
        if isinstance(result, JacobianResult) and not out.key.startswith("det."):
            y, x = _tex(out.row_name), _tex(out.column_name)
            symbol += rf" = \left[\frac{{\partial {y}_i}}{{\partial {x}_j}}\right]_{{ij}}"
            lines.append(
                _tex_comment(f"% rows i: {_range(row_names)}; columns j: {_range(column_names)}")
            )
        if len(column_names) > BMATRIX_COLUMNS:
            lines.append(rf"\setcounter{{MaxMatrixCols}}{{{len(column_names)}}}")
        lines += [r"\[", f"{symbol} =", r"\begin{bmatrix}"]
        for name, row in zip(row_names, cells, strict=True):
            if name is None:
                texts = [r"\ddots" if c is None else r"\vdots" for c in column_names]
            else:
                texts = [r"\cdots" if c is None else _tex_number(c) for c in row]
            lines.append(" & ".join(texts) + r" \\")
        lines += [r"\end{bmatrix}", r"\]"]
    return "\n".join(lines) + "\n"


def _range(names: list[str | None]) -> str:
    shown = [n for n in names if n is not None]
    return shown[0] if len(shown) == 1 else f"{shown[0]} … {shown[-1]}"


def formatted(result: Result, text_format: str, precision: int, full: bool) -> str:
    """The result in `text_format` (one of spec.TEXT_FORMATS)."""
    return (markdown if text_format == "markdown" else latex)(result, precision, full)
