"""Renderers on their own: number formats, JSON values, escaping, truncation, at a fixed width."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from jaccli.functions.model import Function, InputSpec
from jaccli.render.document import dumps, presets_document
from jaccli.render.layout import Layout
from jaccli.render.numbers import format_cells, json_values
from jaccli.render.tables import array_table, evaluation_renderables, presets_table
from jaccli.result import Evaluation, InputValue


def render(renderable, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


def test_cells_share_one_notation_and_never_show_negative_zero() -> None:
    assert format_cells(np.array([1.5, -0.00001, 2.0]), 3).tolist() == ["1.500", "0.000", "2.000"]
    assert format_cells(np.array([1e7, 2.0]), 2).tolist() == ["1.00e+07", "2.00e+00"]
    assert format_cells(np.array([1e-9, -2e-9]), 4).tolist() == ["1.0000e-09", "-2.0000e-09"]
    assert format_cells(np.array([np.nan, np.inf, -np.inf]), 2).tolist() == ["nan", "inf", "-inf"]


def test_json_values_are_shortest_round_trip_and_non_finite_strings() -> None:
    values = json_values(np.array([[0.1, np.nan], [np.inf, -np.inf]], dtype=np.float32))
    assert values == [[0.1, "NaN"], ["Infinity", "-Infinity"]]
    assert np.float32(json_values(np.array([1 / 3], dtype=np.float32))[0]) == np.float32(1 / 3)
    text = dumps({"v": values})
    assert json.loads(text) == {"v": values}


def test_user_strings_print_as_written_not_as_markup() -> None:
    function = Function("[bold]f", "y = [red]x[/red]", (InputSpec("[i]x", (2,)),), lambda **_: None)
    table = render(presets_table([(function, False)]))
    assert "[bold]f" in table and "y = [red]x[/red]" in table and "[i]x" in table
    evaluation = Evaluation(
        function_name="[bold]f",
        formula="y = [red]x[/red]",
        dtype="float32",
        inputs=(InputValue("[i]x", np.array([1.0, 2.0]), True),),
        outputs={"y": np.array(3.0)},
    )
    shown = render(evaluation_renderables(evaluation, Layout())[0])
    assert shown.startswith("[bold]f   y = [red]x[/red]   float32")
    assert presets_document([(function, False)])["presets"][0]["name"] == "[bold]f"


def test_a_big_grid_is_cut_with_ellipses_and_says_how_to_see_everything() -> None:
    text = render(
        array_table(np.arange(100 * 40, dtype=float).reshape(100, 40), "J", Layout(width=80))
    )
    assert "⋮" in text and "…" in text
    assert "shown: 19 of 100 rows, " in text and "(--full: all)" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    full = render(
        array_table(np.arange(30, dtype=float).reshape(3, 10), "J", Layout(width=80, full=True)),
        200,
    )
    assert "…" not in full and "29.0000" in full


def test_a_scalar_and_a_long_vector_read_well() -> None:
    assert "3.0000" in render(array_table(np.array(3.0), "y", Layout()))
    column = render(array_table(np.arange(50, dtype=float), "x", Layout(width=60)))
    lines = [line for line in column.splitlines() if line.strip()]
    assert lines[1].split() == ["0", "0.0000"]  # one entry per row, labelled by its index


def test_a_zero_entry_in_the_worst_entries_is_printed_0_never_minus_0() -> None:
    """A derivative of -0.0 is zero: the check's tables and its failure line print it as 0."""
    from jaccli.render.checks import check_failure_line, check_renderable
    from jaccli.result import Check, Comparison, EntryError

    entry = EntryError("x", "y", (0,), (1,), -0.0, 0.5, 0.5, 1.0)
    comparison = Comparison(
        "reverse mode vs central differences",
        "central differences",
        1e-6,
        1e-8,
        1e-6,
        0.5,
        1.0,
        (entry,),
        passed=False,
    )
    check = Check(comparisons=(comparison,))
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(check_renderable(check, worst_entries=True))
    table = console.file.getvalue()
    assert "-0 " not in table and " 0 " in table and "0.5" in table
    assert check_failure_line(check).split(" is ")[1].startswith("0 where")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_arrays_are_written_as_the_vectorized_path_writes_them(dtype, monkeypatch) -> None:
    """json_values goes number by number for a point's few numbers: the same text."""
    import json

    from jaccli.render import numbers

    rng = np.random.default_rng(1)
    specials = [np.nan, np.inf, -np.inf, -0.0, 0.1, 1e-45, 3.4e38, 1 / 3]
    arrays = []
    for shape in [(), (1,), (3,), (2, 3), (2, 1, 3), (4, 4, 4), (8, 8)]:
        for _ in range(20):
            flat = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).reshape(-1)
            flat[rng.integers(0, flat.size, 2)] = rng.choice(specials, 2)
            arrays.append(flat.astype(dtype).reshape(shape))
    small = [json.dumps(numbers.json_values(a)) for a in arrays]
    monkeypatch.setattr(numbers, "SMALL_ARRAY", -1)
    assert small == [json.dumps(numbers.json_values(a)) for a in arrays]
