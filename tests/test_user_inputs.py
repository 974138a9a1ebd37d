"""What users hand jaccli beyond presets: plans of their functions, several outputs' cotangents,
float64 files in float32 runs, and checks that do not cry wolf."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaccli.engine import prepare, run_jacobian
from jaccli.engine.check import CheckOptions
from tests.conftest import jaccli_command, measure, values_of
from tests.wrong_derivative import square

REALWORLD = Path(__file__).parent / "fixtures" / "realworld.py"
MIB = 1024


def test_plan_of_a_user_function_or_expression_never_runs_it_on_real_data(tmp_path) -> None:
    source = tmp_path / "big.py"
    source.write_text("def f(x):\n    return (x.sin() * 2).sum(dim=1)\n")
    command = [*jaccli_command(), "jacobian", "--plan", "--json"]
    preset = measure([*command, "--fn", "expsum", "--shape", "20000x20000"])
    assert preset.returncode == 3  # the dense J is past the budget: the plan says so
    peaks = {}
    for function in (["--fn", f"{source}:f"], ["--expr", "x.sin().sum(dim=1)"]):
        small = measure([*command, *function, "--shape", "20x20"])
        large = measure([*command, *function, "--shape", "20000x20000"])
        assert large.returncode == 3, large.stderr
        assert '"outputs": {"y": {"shape": [20000]}}' in large.stdout
        # 20000x20000 float32 values would be 1.5 GiB: none are allocated
        assert large.peak_kib - small.peak_kib < 20 * MIB, (small.peak_kib, large.peak_kib)
        peaks[function[0]] = large.peak_kib
    # what remains above a preset's plan is torch's one-off import of its meta kernels
    assert max(peaks.values()) - preset.peak_kib < 100 * MIB, (preset.peak_kib, peaks)


def test_plan_says_when_the_output_shape_cannot_be_known(jaccli, tmp_path) -> None:
    source = tmp_path / "data_dependent.py"
    source.write_text("import torch\ndef f(x):\n    return x[: int(x.sum().item()) % 3 + 1]\n")
    run = jaccli("jacobian", "--fn", f"{source}:f", "--shape", "10", "--plan", "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["outputs"] == {}
    assert document["output_unknown"].startswith("f cannot run on tensors without values")
    assert document["plan"]["method"] == "unknown"


def test_several_outputs_take_a_cotangent_object_keyed_by_output(jaccli) -> None:
    args = ["vjp", "--fn", f"{REALWORLD}:nested", "--value", "a=[1.0, 2.0]",
            "--value", "b=[0.5, -1.0]", "--dtype", "float64", "--json"]  # fmt: skip
    cotangent = '{"y0.0": [1, 0], "y0.1": [0, 2], "y1": 3}'
    run = jaccli(*args, "--cotangent", cotangent, "--check")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    a, b = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    v00, v01, v1 = np.array([1.0, 0.0]), np.array([0.0, 2.0]), 3.0
    # y0.0 = a*b, y0.1 = a+b, y1 = sum(a-b)
    np.testing.assert_allclose(values_of(document["vjp"]["a"]), v00 * b + v01 + v1)
    np.testing.assert_allclose(values_of(document["vjp"]["b"]), v00 * a + v01 - v1)
    assert document["check"]["passed"] is True
    missing = jaccli(*args, "--cotangent", '{"y1": 3}')
    assert missing.exit_code == 2
    assert "--cotangent names y1; nested's outputs are y0.0, y0.1, y1" in missing.stderr
    array = jaccli(*args, "--cotangent", "[1, 2]")
    assert array.exit_code == 2 and 'give an object like {"y0.0": [...], ...}' in array.stderr


def test_a_float64_file_in_a_float32_run_is_rounded_with_a_warning(jaccli, tmp_path) -> None:
    exact, fine = tmp_path / "exact.npy", tmp_path / "fine.npy"
    np.save(exact, np.array([0.5, 2.0]))
    np.save(fine, np.array([0.1, 2.0]))
    quiet = jaccli("jacobian", "--fn", "sigmoid", "--value", f"x=@{exact}", "--json")
    assert quiet.json()["warnings"] == []
    rounded = jaccli("jacobian", "--fn", "sigmoid", "--value", f"x=@{fine}", "--json")
    assert rounded.json()["warnings"] == [
        "input x: the file's float64 values were rounded to float32; add --dtype float64 to "
        "keep every digit"
    ]
    assert "warning: input x: the file's float64 values" in rounded.stderr
    kept = jaccli("jacobian", "--fn", "sigmoid", "--value", f"x=@{fine}", "--dtype", "float64",
                  "--json")  # fmt: skip
    assert kept.json()["inputs"]["x"]["values"] == [0.1, 2.0] and kept.json()["warnings"] == []


def test_a_float64_points_file_in_a_float32_run_is_rounded_with_a_warning(jaccli, tmp_path) -> None:
    fine = tmp_path / "fine.npy"
    np.save(fine, np.array([[0.5, 2.0], [0.1, 2.0]]))  # only the second point rounds
    run = jaccli("jacobian", "--fn", "sigmoid", "--points", f"x=@{fine}", "--json")
    assert run.exit_code == 0, run.stderr
    assert "warning: input x: the file's float64 values were rounded to float32" in run.stderr
    kept = jaccli("jacobian", "--fn", "sigmoid", "--points", f"x=@{fine}", "--dtype", "float64")
    assert kept.exit_code == 0 and "warning" not in kept.stderr


@pytest.mark.parametrize("source", ["json", "npy", "points"])
def test_numbers_past_float32_s_range_are_refused_not_made_infinite(
    jaccli, tmp_path, source
) -> None:
    values = np.array([1e308, 1.0])
    np.save(tmp_path / "big.npy", values)
    np.save(tmp_path / "points.npy", np.stack([[1.0, 1.0], values]))
    option = {
        "json": ["--value", "x=[1e308, 1]"],
        "npy": ["--value", f"x=@{tmp_path / 'big.npy'}"],
        "points": ["--points", f"x=@{tmp_path / 'points.npy'}"],
    }[source]
    run = jaccli("jacobian", "--expr", "x / 2", *option)
    assert run.exit_code == 2, run.stderr
    what = "--points 'x'" if source == "points" else "--value 'x'"
    assert run.stderr == (
        f"jacobian: {what}: 1e+308 is past float32's range (±3.403e+38) and would become "
        "Infinity; add --dtype float64\n"
    )
    wide = jaccli("jacobian", "--expr", "x / 2", *option, "--dtype", "float64", "--json")
    assert wide.exit_code == 0, wide.stderr
    assert "Infinity" not in wide.stdout


@pytest.mark.parametrize(
    ("expression", "value"),
    [("(x + 100000).sum()", "[0.5, -1.0, 2.0]"), ("x * relu(x)", "[0.0, 1.5, -2.0]")],
)
def test_checks_allow_for_the_rounding_of_finite_differences(jaccli, expression, value) -> None:
    run = jaccli("check", "--expr", expression, "--value", value, "--json")
    assert run.exit_code == 0, run.stderr
    differences = run.json()["check"]["comparisons"][1]
    assert differences["passed"] is True and differences["max_abs_error"] > 0


def test_tolerances_and_step_can_be_set(jaccli) -> None:
    wrong = prepare(square(right=False), dtype="float64")  # backward 1.5x too large at x[1]
    assert run_jacobian(wrong, check=True).check.passed is False
    loose = run_jacobian(wrong, check=True, check_options=CheckOptions(rtol=0.5))
    assert loose.check.passed is True
    assert {(c.rtol, c.atol) for c in loose.check.comparisons} == {(0.5, 1e-12), (0.5, 1e-5)}
    args = ["check", "--expr", "(x + 100000).sum()", "--value", "[0.5, -1.0, 2.0]", "--json"]
    stepped = jaccli(*args, "--eps", "1e-3", "--rtol", "1e-4")
    assert stepped.json()["check"]["comparisons"][1]["step"] == 1e-3
    assert stepped.json()["check"]["comparisons"][1]["rtol"] == 1e-4
    bad = jaccli(*args, "--eps", "0")
    assert bad.exit_code == 2 and "step must be positive" in bad.stderr


def test_the_entry_beside_the_largest_error_is_the_one_that_has_it(jaccli) -> None:
    args = ["check", "--expr", "x ** 3", "--value", "[0.001, 30.0]"]
    differences = jaccli(*args, "--json").json()["check"]["comparisons"][1]
    # the largest absolute error is at x = 30, the largest relative one at x = 0.001
    assert differences["largest_error_entry"] == "∂y[1] / ∂x[1]"
    assert differences["worst_entries"][0]["entry"] == "∂y[0] / ∂x[0]"
    table = jaccli(*args, width=160)
    lines = table.stdout.splitlines()
    named = lines.index("✓ reverse mode vs central differences")
    assert lines[named + 1].rstrip().endswith("at ∂y[1] / ∂x[1]")


def test_no_negative_zero_is_printed(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "x * relu(x)", "--value", "[-1.0, -2.0]", "--json")
    assert "-0" not in run.stdout
    assert "-0" not in jaccli("jacobian", "--expr", "x * relu(x)", "--value", "[-1.0, -2.0]").stdout


def test_an_expression_input_held_fixed_stays_floating_when_given_integers(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "x @ c", "--shape", "x=2", "--value",
                 "c=[[1, 2], [3, 4]]", "--wrt", "x", "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["inputs"]["c"]["dtype"] == "float64"
    assert document["jacobian"]["y"]["x"]["values"] == [[1, 3], [2, 4]]  # (x @ c)_j = Σ x_i c_ij
