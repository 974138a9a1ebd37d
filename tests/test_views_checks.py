"""Per-row and per-column views, and the checks that verify every number (issue: the lesson)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from jaccli.engine import prepare, run_jacobian, run_vjp
from jaccli.functions import PRESETS
from tests.conftest import assert_golden, values_of
from tests.wrong_derivative import square


def test_rows_view_of_matmul_wrt_a_rebuilds_a_grad_with_slice_jacobians_b_transposed() -> None:
    problem = prepare(PRESETS["matmul"], wrt=["a"], dtype="float64")
    result = run_vjp(problem, "randn")
    view = result.view
    assert view is not None and (view.wrt, view.name, view.input_axis) == ("a", "rows", 0)
    b = problem.inputs["b"].numpy()
    v = result.cotangents["y"]
    assert len(view.slices) == 2
    for i, row in enumerate(view.slices):
        np.testing.assert_allclose(row.jacobian, b.T, rtol=1e-14)
        np.testing.assert_allclose(row.product, v[i] @ b.T, rtol=1e-12)
        np.testing.assert_array_equal(row.full_slice, result.vjps["a"][i])
        assert row.agrees


def test_cols_view_of_matmul_wrt_b_rebuilds_b_grad_with_slice_jacobians_a() -> None:
    problem = prepare(PRESETS["matmul"], wrt=["b"], shape_options=[("b", (3, 4))], dtype="float64")
    result = run_vjp(problem, "randn")
    view = result.view
    assert view is not None and (view.name, view.input_axis, view.output_axis) == ("cols", 1, 1)
    a = problem.inputs["a"].numpy()
    assert len(view.slices) == 4
    for j, row in enumerate(view.slices):
        np.testing.assert_allclose(row.jacobian, a, rtol=1e-14)
        np.testing.assert_allclose(row.product, result.cotangents["y"][:, j] @ a, rtol=1e-12)
        np.testing.assert_array_equal(row.full_slice, result.vjps["b"][:, j])
        assert row.agrees


def test_expsum_rows_view_gives_exp_rows_and_the_dense_diagonal_blocks() -> None:
    problem = prepare(PRESETS["expsum"], shape_options=[(None, (3, 4))], dtype="float64")
    result = run_jacobian(problem, view="rows")
    x = problem.inputs["x"].numpy()
    j = result.jacobians["y"]["x"]
    assert result.view is not None
    for i, row in enumerate(result.view.slices):
        assert row.jacobian.shape == (4,)
        np.testing.assert_allclose(row.jacobian, np.exp(x[i]), rtol=1e-14)
        np.testing.assert_array_equal(row.full_slice, j[i, i])
        assert row.agrees


def test_view_json_carries_every_slice(jaccli) -> None:
    run = jaccli("vjp", "--fn", "matmul", "--wrt", "a", "--dtype", "float64", "--json")
    document = run.json()
    view = document["view"]
    assert (view["wrt"], view["name"], view["axis"], view["output_axis"]) == ("a", "rows", 0, 0)
    assert view["agrees"] is True
    b = values_of(document["inputs"]["b"])
    grad = values_of(document["vjp"]["a"])
    for i, entry in enumerate(view["slices"]):
        assert entry["index"] == i
        np.testing.assert_allclose(values_of(entry["jacobian"]), b.T, rtol=1e-14)
        np.testing.assert_array_equal(values_of(entry["full"]), grad[i])
        np.testing.assert_allclose(values_of(entry["product"]), grad[i], rtol=1e-12)
        assert set(entry) >= {"input", "output", "cotangent", "max_difference", "agrees"}


def test_full_view_and_several_inputs_show_the_plain_result(jaccli) -> None:
    assert (
        "view"
        not in jaccli("vjp", "--fn", "matmul", "--view", "full", "--wrt", "a", "--json").json()
    )
    assert "view" not in jaccli("vjp", "--fn", "matmul", "--json").json()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["jacobian", "--fn", "expsum", "--view", "cols"],
            "jacobian: --view cols: expsum does not act on x column by column "
            "(views for x: rows, full)",
        ),
        (
            ["vjp", "--fn", "matmul", "--wrt", "b", "--view", "rows"],
            "vjp: --view rows: matmul does not act on b row by row (views for b: cols, full)",
        ),
        (
            ["vjp", "--fn", "matmul", "--view", "rows"],
            "vjp: --view rows shows one input at a time; add --wrt with one of a, b",
        ),
        (["vjp", "--fn", "matmul", "--view", "diagonal"], "vjp: unknown --view 'diagonal'"),
        (
            ["vjp", "--fn", "tanh_linear", "--view", "rows"],
            "vjp: --view rows: tanh_linear does not act on x row by row (views for x: full)",
        ),
    ],
)
def test_a_view_the_function_does_not_decompose_along_is_a_usage_error(
    jaccli, args, message
) -> None:
    run = jaccli(*args)
    assert run.exit_code == 2
    assert run.stdout == ""
    assert run.stderr.splitlines()[0].startswith(message)


@pytest.mark.parametrize("command", ["jacobian", "vjp"])
def test_check_passes_on_every_preset(jaccli, command: str) -> None:
    for name in PRESETS:
        run = jaccli(command, "--fn", name, "--check", "--json")
        assert run.exit_code == 0, (name, run.stderr)
        check = run.json()["check"]
        assert check["passed"] is True
        assert all(c["passed"] is True for c in check["comparisons"]), name


def test_jacobian_check_reports_modes_and_finite_differences_with_tolerances(jaccli) -> None:
    check = jaccli("jacobian", "--fn", "expsum", "--check", "--json").json()["check"]
    names = [c["name"] for c in check["comparisons"]]
    assert names == ["reverse mode vs forward mode", "reverse mode vs central differences"]
    fd = check["comparisons"][1]
    assert fd["step"] == 1e-6 and fd["rtol"] > 0 and fd["atol"] > 0
    assert 0 <= fd["max_abs_error"] < 1e-4
    assert fd["worst_entries"][0]["entry"].startswith("∂y[")


@pytest.fixture
def with_square(monkeypatch) -> None:
    monkeypatch.setitem(PRESETS, "bad_square", square(right=False))
    monkeypatch.setitem(PRESETS, "square", square(right=True))


@pytest.mark.usefixtures("with_square")
def test_a_wrong_backward_fails_jacobian_check_and_names_the_entry(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "bad_square", "--check")
    assert run.exit_code == 1
    assert "Check  FAILED" in run.stdout
    line = run.stderr.strip()
    assert line.startswith(
        "jacobian: check failed: reverse mode vs central differences: ∂y[1] / ∂x[1] is"
    )
    # forward mode has no rule for this autograd.Function: skipped with the reason, not a crash
    document = jaccli("jacobian", "--fn", "bad_square", "--check", "--json").json()
    modes, fd = document["check"]["comparisons"]
    assert modes["passed"] is None and "jvp" in modes["skipped"]
    assert fd["passed"] is False
    assert fd["worst_entries"][0]["entry"] == "∂y[1] / ∂x[1]"
    assert fd["worst_entries"][0]["output_index"] == [1] and fd["worst_entries"][0][
        "input_index"
    ] == [1]
    assert jaccli("jacobian", "--fn", "square", "--check").exit_code == 0


@pytest.mark.usefixtures("with_square")
def test_a_wrong_backward_fails_vjp_check_and_the_check_command(jaccli) -> None:
    vjp = jaccli("vjp", "--fn", "bad_square", "--check")
    assert vjp.exit_code == 1
    assert "x.grad[1]" in vjp.stderr
    check = jaccli("check", "--fn", "bad_square")
    assert check.exit_code == 1
    assert "Worst entries: reverse mode vs central differences" in check.stdout
    assert check.stderr.startswith(
        "check: check failed: reverse mode vs central differences: ∂y[1] / ∂x[1]"
    )
    document = jaccli("check", "--fn", "bad_square", "--json").json()
    assert document["command"] == "check" and document["dtype"] == "float64"
    assert document["check"]["passed"] is False
    good = jaccli("check", "--fn", "square", "--json")
    assert good.exit_code == 0 and good.json()["check"]["passed"] is True


def test_check_command_runs_in_float64_and_lists_worst_entries(jaccli) -> None:
    run = jaccli("check", "--fn", "polar", "--shape", "4x2")
    assert run.exit_code == 0, run.stderr
    assert "float64" in run.stdout
    assert "Check  passed" in run.stdout
    assert "Worst entries: reverse mode vs central differences" in run.stdout
    assert "step h = 1e-06·max(1, |x|)" in " ".join(run.stdout.split())


@pytest.mark.parametrize(
    ("golden", "args", "width"),
    [
        ("vjp_matmul_rows.txt", ["vjp", "--fn", "matmul", "--wrt", "a"], 160),
        ("vjp_matmul_cols.txt", ["vjp", "--fn", "matmul", "--wrt", "b"], 100),
        ("vjp_matmul_rows_narrow.txt", ["vjp", "--fn", "matmul", "--wrt", "a"], 80),
        ("jacobian_expsum_rows.txt", ["jacobian", "--fn", "expsum", "--view", "rows"], 100),
        ("jacobian_expsum.txt", ["jacobian", "--fn", "expsum"], 100),
    ],
)
def test_rendered_views_match_the_reviewed_layout(
    jaccli, golden: str, args: list[str], width: int
) -> None:
    run = jaccli(*args, width=width)
    assert run.exit_code == 0, run.stderr
    assert_golden(golden, _without_strategy(run.stdout))


def _without_strategy(text: str) -> str:
    """The output without its last part, the strategy and its reason, which depend on what this
    process already loaded, not on the layout."""
    return text.split("\n\nstrategy ")[0] + "\n"


LAYOUTS = {
    "jacobian_expsum": ["jacobian", "--fn", "expsum"],
    "jacobian_polar": ["jacobian", "--fn", "polar"],
    "plan_expsum": ["jacobian", "--fn", "expsum", "--shape", "512x512", "--plan",
                    "--max-memory", "1GiB"],
    "check_expsum": ["check", "--fn", "expsum"],
    "det_spherical": ["det", "--fn", "spherical"],
    "hessian_logsumexp": ["hessian", "--fn", "logsumexp"],
    "vjp_matmul": ["vjp", "--fn", "matmul", "--wrt", "a"],
    "jvp_expsum": ["jvp", "--fn", "expsum"],
    "presets": ["presets"],
}  # fmt: skip


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_fits_60_80_and_120_columns(jaccli, name: str, width: int) -> None:
    """Reviewed at each width: labels are shortened by design, so no line is wider than the
    terminal and Rich never has to cut one (`compari…`)."""
    run = jaccli(*LAYOUTS[name], width=width)
    assert run.exit_code == 0, run.stderr
    shown = _without_strategy(run.stdout)
    assert all(len(line) <= width for line in shown.splitlines())
    assert not re.search(r"[a-z]…", shown), "a label was cut"
    assert_golden(f"layout_{name}_{width}.txt", shown)


def test_json_check_document_is_strict_json(jaccli) -> None:
    run = jaccli("check", "--fn", "expsum", "--json")
    json.loads(run.stdout, parse_constant=lambda name: pytest.fail(f"bare {name}"))
