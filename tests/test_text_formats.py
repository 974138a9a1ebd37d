"""--format markdown and --format latex: text to paste, with the numbers the JSON has."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest


def _unescaped(cell: str) -> str:
    """A cell as Markdown shows it: backslash escapes of punctuation undone."""
    return re.sub(r"\\([!-/:-@[-`{-~])", r"\1", cell)


def _markdown_tables(text: str) -> list[list[list[str]]]:
    """Every GitHub table in the text, as rows of cells (the separator row dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [_unescaped(c.strip()) for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            if not all(re.fullmatch(r"-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def test_markdown_jacobian_is_a_table_of_j_with_labelled_rows_and_columns(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "2x3", "--format", "markdown")
    assert run.exit_code == 0, run.stderr
    ((header, *rows),) = _markdown_tables(run.stdout)
    assert header == ["", "x[0,0]", "x[0,1]", "x[0,2]", "x[1,0]", "x[1,1]", "x[1,2]"]
    assert [row[0] for row in rows] == ["y[0]", "y[1]"]
    assert all(len(row) == len(header) for row in rows)
    values = jaccli("jacobian", "--fn", "expsum", "--shape", "2x3", "--json").json()
    x = np.array(values["inputs"]["x"]["values"])
    expected = np.zeros((2, 6))  # ∂y[i]/∂x[k,j] = δ_ik exp(x[i,j])
    expected[0, :3], expected[1, 3:] = np.exp(x[0]), np.exp(x[1])
    shown = np.array([[float(c) for c in row[1:]] for row in rows])
    np.testing.assert_allclose(shown, expected, atol=5e-5)


def test_markdown_of_a_large_j_is_cut_with_a_gap_row_and_column(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "x.sin()", "--shape", "50", "--format", "markdown")
    assert run.exit_code == 0, run.stderr
    ((header, *rows),) = _markdown_tables(run.stdout)
    assert len(header) == 1 + 12 and "…" in header and header[-1] == "x[49]"
    assert len(rows) == 20 and rows[-2][0] == "⋮" and rows[-1][0] == "y[49]"
    full = jaccli(
        "jacobian", "--expr", "x.sin()", "--shape", "50", "--format", "markdown", "--full"
    )
    ((header, *rows),) = _markdown_tables(full.stdout)
    assert len(header) == 51 and len(rows) == 50


@pytest.mark.parametrize(
    "command",
    [
        ["jacobian", "--fn", "matmul"],
        ["det", "--fn", "polar"],
        ["vjp", "--fn", "matmul"],
        ["jvp", "--fn", "expsum"],
        ["hessian", "--fn", "logsumexp"],
        ["hvp", "--fn", "logsumexp"],
    ],
)
def test_every_computing_command_prints_markdown_and_balanced_latex(
    jaccli, command: list[str]
) -> None:
    markdown = jaccli(*command, "--format", "markdown")
    assert markdown.exit_code == 0, markdown.stderr
    tables = _markdown_tables(markdown.stdout)
    assert tables and all(len({len(row) for row in table}) == 1 for table in tables)
    latex = jaccli(*command, "--format", "latex")
    assert latex.exit_code == 0, latex.stderr
    text = latex.stdout
    assert text.count(r"\begin{bmatrix}") == text.count(r"\end{bmatrix}") >= 1
    assert text.count(r"\[") == text.count(r"\]")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
    assert body.count("{") == body.count("}") + body.count(r"\}") - body.count(r"\{")
    for matrix in re.findall(r"\\begin\{bmatrix\}\n(.*?)\\end\{bmatrix\}", text, re.S):
        widths = {line.count("&") for line in matrix.splitlines()}
        assert len(widths) == 1  # every row of a bmatrix has as many cells


def test_latex_j_has_the_partial_derivative_headers_and_the_formula_in_math_mode(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "polar", "--format", "latex", "--dtype", "float64")
    assert run.exit_code == 0, run.stderr
    assert r"\frac{\partial y}{\partial x} = \left[\frac{\partial y_i}{\partial x_j}\right]" in (
        run.stdout
    )
    assert r"\[ \texttt{y = (r cos \ensuremath{\theta}, r sin \ensuremath{\theta})" in run.stdout
    rows = re.search(r"\\begin\{bmatrix\}\n(.*?)\\end\{bmatrix\}", run.stdout, re.S)
    assert rows is not None
    shown = np.array(
        [[float(c) for c in line.rstrip(" \\").split("&")] for line in rows[1].splitlines()]
    )
    document = jaccli("jacobian", "--fn", "polar", "--json", "--dtype", "float64").json()
    r, theta = document["inputs"]["x"]["values"]
    polar = [[np.cos(theta), -r * np.sin(theta)], [np.sin(theta), r * np.cos(theta)]]
    np.testing.assert_allclose(shown, polar, atol=5e-5)


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX installed")
def test_latex_compiles(jaccli, tmp_path) -> None:
    commands = [
        ["det", "--fn", "spherical"],  # θ and φ in the formula
        ["jacobian", "--fn", "matmul"],
        ["jacobian", "--expr", "x.sin()", "--shape", "40", "--precision", "2"],  # cut: ⋯ ⋮ ⋱
        ["vjp", "--fn", "tanh_linear"],
        ["hessian", "--fn", "logsumexp"],
        ["hvp", "--fn", "logsumexp", "--dtype", "float64", "--precision", "12"],
    ]
    body = ""
    for command in commands:
        run = jaccli(*command, "--format", "latex")
        assert run.exit_code == 0, run.stderr
        body += run.stdout
    source = tmp_path / "j.tex"
    source.write_text(
        "\\documentclass{article}\\usepackage{amsmath}\\begin{document}\n"
        + body
        + "\\end{document}\n",
        encoding="utf-8",
    )
    compiled = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", source.name],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stdout[-2000:]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "html"], "unknown --format 'html'"),
        (["--format", "latex", "--json"], "pick one"),
        (["--format", "markdown", "--view", "heatmap"], "drop --view heatmap"),
        (["--format", "markdown", "--points", "x=[[1,2,3],[4,5,6]]"], "--format works at one"),
    ],
)
def test_format_conflicts_are_one_line_usage_errors(jaccli, extra: list[str], message: str) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "3", *extra)
    assert run.exit_code == 2, run.stdout
    assert message in run.stderr.splitlines()[0]
