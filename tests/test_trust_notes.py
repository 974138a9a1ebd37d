"""Results that need a word of warning: outputs and derivatives that are not finite (and NaNs
that are structural zeros), flat functions and kinks, a singular J under det, and one output
picked out of several with --output."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import finite_difference_jacobian, values_of

TRUST = Path(__file__).parent / "fixtures" / "trust.py"


def fn(name: str) -> str:
    return f"{TRUST}:{name}"


def warnings_of(run) -> list[str]:
    assert run.exit_code == 0, run.stderr
    return run.json()["warnings"]


# NaN and Inf -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "function", [("--fn", fn("sqrt_shifted")), ("--expr", "sqrt(x - 10)")], ids=["file", "expr"]
)
def test_sqrt_outside_its_domain_names_the_nans_and_the_structural_zeros(jaccli, function) -> None:
    run = jaccli(
        "jacobian", *function, "--value", "x=[1.3,20,3.1]", "--dtype", "float64", "--json"
    )  # fmt: skip
    document = run.json()
    j = values_of(document["jacobian"]["y"]["x"])
    # the numbers are shown as torch computed them: 0·NaN in the backward pass of y[1]
    assert np.isnan(j[1, 0]) and np.isnan(j[1, 2])
    np.testing.assert_allclose(j[1, 1], 0.5 / math.sqrt(10), rtol=1e-14)
    output_note, j_note = warnings_of(run)
    assert output_note == "output y has 2 of 3 entries not finite (2 NaN): y[0], y[2]"
    assert j_note.startswith(
        "∂y/∂x has 6 of 9 entries not finite (6 NaN): ∂y[0]/∂x[0], ∂y[0]/∂x[2], "
        "∂y[1]/∂x[0], ∂y[1]/∂x[2], …; 2 are NaN only from 0·∞ in the backward pass, "
        "structural zeros (∂y[1]/∂x[0], ∂y[1]/∂x[2])"
    )
    assert f"jacobian: warning: {j_note}" in run.stderr


def test_an_output_that_reads_the_bad_input_is_not_called_structural(jaccli) -> None:
    # y = sqrt(x - 10) · sum(x): every finite output reads every input, so its NaNs are real
    run = jaccli(
        "jacobian", "--expr", "sqrt(x - 10) * sum(x)", "--value", "x=[1.3,20,3.1]",
        "--dtype", "float64", "--json",
    )  # fmt: skip
    (_, j_note) = warnings_of(run)
    assert "not finite" in j_note and "structural" not in j_note


def test_a_nan_from_where_is_explained_only_where_the_output_ignores_the_input(
    jaccli, tmp_path
) -> None:
    source = tmp_path / "guarded.py"
    source.write_text(
        "import torch\n"
        "def f(x):\n"
        "    return torch.where(x > 10, torch.sqrt(x - 10), torch.zeros_like(x))\n"
    )
    run = jaccli(
        "jacobian", "--fn", f"{source}:f", "--value", "x=[1.3,20]", "--dtype", "float64", "--json"
    )  # fmt: skip
    (note,) = warnings_of(run)  # the outputs are finite; J[0, 0] and J[1, 0] are NaN
    # y[1] never reads x[0]; y[0] reads it past 10 (+Infinity takes that branch), so its NaN
    # stays unexplained
    assert note.startswith(
        "∂y/∂x has 2 of 4 entries not finite (2 NaN): ∂y[0]/∂x[0], ∂y[1]/∂x[0]; 1 is NaN only "
        "from 0·∞ in the backward pass, a structural zero (∂y[1]/∂x[0])"
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("vjp", "vᵀ·J for x has 1 of 2 entries not finite (1 NaN): x.grad[0]"),
        ("jvp", "J·v of y has 1 of 2 entries not finite (1 NaN): y[0]"),
    ],
)
def test_products_that_are_not_finite_are_counted(jaccli, command, expected) -> None:
    run = jaccli(command, "--expr", "sqrt(x - 1)", "--value", "x=[0.5,2]", "--json")
    assert warnings_of(run) == ["output y has 1 of 2 entries not finite (1 NaN): y[0]", expected]


def test_second_order_results_that_are_not_finite_are_counted(jaccli) -> None:
    hessian = jaccli("hessian", "--expr", "sum(sqrt(x - 1))", "--value", "x=[0.5,2]", "--json")
    assert warnings_of(hessian)[1] == (
        "∂²y/∂x∂x has 2 of 4 entries not finite (2 NaN): ∂²y/∂x[0]∂x[0], ∂²y/∂x[1]∂x[0]"
    )
    hvp = jaccli("hvp", "--expr", "sum(sqrt(x - 1))", "--value", "x=[0.5,2]", "--json")
    assert warnings_of(hvp) == [
        "output y is not finite (NaN)",
        "H·v for x has 1 of 2 entries not finite (1 NaN): x[0]",
    ]


def test_batched_blocks_name_entries_in_the_full_input_and_output(jaccli) -> None:
    run = jaccli(
        "jacobian", "--expr", "sqrt(x)", "--value", "x=[[1,-1],[2,3]]", "--batched", "--json"
    )  # fmt: skip
    assert warnings_of(run) == [
        "output y has 1 of 4 entries not finite (1 NaN): y[0,1]",
        "∂y/∂x has 2 of 8 entries not finite (2 NaN): ∂y[0,0]/∂x[0,1], ∂y[0,1]/∂x[0,1]",
    ]


def test_a_finite_result_has_no_such_warning(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "sqrt(x)", "--value", "x=[1,2]", "--json")
    assert warnings_of(run) == []


# det of a singular J -----------------------------------------------------------------------


def test_a_singular_arm_says_so_in_the_table_and_the_json(jaccli) -> None:
    args = ("det", "--fn", fn("arm"), "--value", "q=[0.3,0]", "--dtype", "float64")
    document = jaccli(*args, "--json").json()
    det = document["det"]
    # det J = L1·L2·sin(q2) = 0 in exact arithmetic; float64 leaves rounding noise
    assert abs(float(det["det"]["values"])) < 1e-15
    assert det["singular"] == {"shape": [], "values": True}
    assert float(det["condition"]["values"]) > 1 / (2 * np.finfo(np.float64).eps)
    (note,) = document["warnings"]
    assert note.startswith("J is singular to working precision (cond J = ")
    assert "within rounding of 0" in note
    table = jaccli(*args)
    assert table.exit_code == 0
    assert "cond J" in table.stdout and "J is singular to working precision" in table.stdout


def test_a_regular_arm_is_not_called_singular(jaccli) -> None:
    q2 = 0.4
    args = ("det", "--fn", fn("arm"), "--value", f"q=[0.3,{q2}]", "--dtype", "float64")
    run = jaccli(*args, "--json")
    det = run.json()["det"]
    assert det["singular"]["values"] is False
    np.testing.assert_allclose(float(det["det"]["values"]), 1.0 * 0.7 * math.sin(q2), rtol=1e-12)
    assert warnings_of(run) == []
    assert "cond J" not in jaccli(*args).stdout


def test_batched_det_says_which_blocks_are_singular(jaccli) -> None:
    run = jaccli(
        "det", "--fn", "polar", "--value", "x=[[1,0.3],[0,0.5],[2,1]]", "--batched",
        "--dtype", "float64", "--json",
    )  # fmt: skip
    det = run.json()["det"]
    assert det["singular"]["values"] == [False, True, False]
    np.testing.assert_allclose(values_of(det["condition"])[[0, 2]], [1.0, 2.0], rtol=1e-12)
    (note,) = warnings_of(run)
    assert note.startswith("1 diagonal block is singular to working precision, of 3 (sample 1;")


# --output NAME -----------------------------------------------------------------------------

FLOW_POINT = "x=[0.3,-1.0,2.0]"


def flow_numpy(x: np.ndarray) -> tuple[np.ndarray, float]:
    """The fixture's affine flow in float64 NumPy: z = exp(s)·x + 0.5, log|det ∂z/∂x| = Σ s."""
    s = np.tanh(x[0]) * np.array([0.0, 1.0, 1.0])
    return np.exp(s) * x + 0.5, float(s.sum())


def test_det_of_one_output_of_a_flow_is_its_own_log_determinant(jaccli) -> None:
    run = jaccli(
        "det", "--fn", fn("flow_dict"), "--value", FLOW_POINT, "--output", "z", "--dtype",
        "float64", "--json",
    )  # fmt: skip
    document = run.json()
    assert list(document["outputs"]) == ["z"] and list(document["jacobian"]) == ["z"]
    x = np.array([0.3, -1.0, 2.0])
    z, logdet = flow_numpy(x)
    np.testing.assert_allclose(values_of(document["outputs"]["z"]), z, rtol=1e-15)
    np.testing.assert_allclose(float(document["det"]["logabsdet"]["values"]), logdet, rtol=1e-14)
    j_fd = finite_difference_jacobian(lambda v: flow_numpy(v)[0], x)
    np.testing.assert_allclose(values_of(document["jacobian"]["z"]["x"]), j_fd, atol=1e-8)


def test_the_other_output_of_a_flow_has_its_own_gradient_and_hessian(jaccli) -> None:
    x0 = 0.3
    common = ("--fn", fn("flow_dict"), "--value", FLOW_POINT, "--output", "logdet")
    jacobian = jaccli("jacobian", *common, "--dtype", "float64", "--json").json()
    sech2 = 1 / np.cosh(x0) ** 2
    np.testing.assert_allclose(
        values_of(jacobian["jacobian"]["logdet"]["x"]), [2 * sech2, 0, 0], rtol=1e-14, atol=0
    )
    hessian = jaccli("hessian", *common, "--dtype", "float64", "--json").json()
    expected = np.zeros((3, 3))
    expected[0, 0] = -4 * np.tanh(x0) * sech2  # d²/dx0² of 2·tanh(x0)
    np.testing.assert_allclose(values_of(hessian["hessian"]["logdet"]["x"]["x"]), expected)
    hvp = jaccli("hvp", *common, "--vector", "[1,0,0]", "--dtype", "float64", "--json").json()
    np.testing.assert_allclose(values_of(hvp["hvp"]["x"]), expected[:, 0], rtol=1e-14)


def test_check_and_a_picture_of_one_output(jaccli) -> None:
    check = jaccli("check", "--fn", fn("flow_dict"), "--value", FLOW_POINT, "--output", "z")
    assert check.exit_code == 0, check.stderr
    assert "∂z[1] / ∂x[0]" in check.stdout and "logdet" not in check.stdout
    picture = jaccli(
        "jacobian", "--fn", fn("flow_dict"), "--value", FLOW_POINT, "--output", "logdet",
        "--view", "sparsity", "--json",
    )  # fmt: skip
    structure = picture.json()["structure"]
    assert (structure["rows"], structure["columns"], structure["nonzeros"]) == (1, 3, 1)


def test_a_tuple_output_is_picked_by_position(jaccli) -> None:
    run = jaccli(
        "jacobian", "--fn", fn("affine_flow"), "--value", FLOW_POINT, "--output", "y1",
        "--dtype", "float64", "--json",
    )  # fmt: skip
    document = run.json()
    assert list(document["jacobian"]) == ["y1"]
    assert values_of(document["jacobian"]["y1"]["x"])[0] == pytest.approx(2 / np.cosh(0.3) ** 2)


@pytest.mark.parametrize(
    ("function", "outputs"),
    [
        ("flow_dict", "(outputs: z, logdet)"),
        ("affine_flow", "(outputs: y0, y1); a tuple's outputs are named by position"),
    ],
)
def test_an_unknown_output_is_a_usage_error_listing_the_outputs(jaccli, function, outputs) -> None:
    run = jaccli("det", "--fn", fn(function), "--value", FLOW_POINT, "--output", "w")
    assert run.exit_code == 2
    assert run.stderr.startswith(f"det: --output 'w' is not an output of {function} {outputs}")
    assert "Traceback" not in run.stderr


# Flat functions and kinks ------------------------------------------------------------------


def jacobian_and_warnings(jaccli, *args: str) -> tuple[dict, list[str]]:
    run = jaccli("jacobian", *args, "--dtype", "float64", "--json")
    return run.json()["jacobian"], warnings_of(run)


def test_round_is_flat_and_says_so(jaccli) -> None:
    args = ("--fn", fn("rounded"), "--value", "x=[0.3,1.7]")
    jacobians, notes = jacobian_and_warnings(jaccli, *args)
    assert not values_of(jacobians["y"]["x"]).any()
    assert notes == [
        "output y depends on input x only through piecewise-constant operations (round): its "
        "Jacobian is zero almost everywhere and undefined at the jumps"
    ]


def test_a_comparison_is_flat_not_independent(jaccli) -> None:
    # (x > 0).float() leaves autograd's graph: it used to be called independent of x
    jacobians, notes = jacobian_and_warnings(
        jaccli, "--fn", fn("flat_and_smooth"), "--value", "x=[0.5,-1.0]"
    )
    assert notes == [
        "output y0 depends on input x only through piecewise-constant operations (>): its "
        "Jacobian is zero almost everywhere and undefined at the jumps"
    ]
    np.testing.assert_allclose(values_of(jacobians["y1"]["x"]), np.diag(np.cos([0.5, -1.0])))


def test_an_input_reached_smoothly_too_is_not_flat(jaccli) -> None:
    _, notes = jacobian_and_warnings(jaccli, "--expr", "relu(x) + x", "--value", "x=[0.5,-1.0]")
    assert notes == []


@pytest.mark.parametrize(
    ("args", "expected_j", "convention"),
    [
        (("--fn", fn("relu_at_zero"), "--value", "x=[0.0,1.0]"), [[0, 0], [0, 1]],
         "relu at exactly 0 (one-sided derivatives 0 and 1; torch uses relu'(0) = 0), at 1 "
         "element"),
        (("--expr", "relu(x)", "--value", "x=[0.0,1.0]"), [[0, 0], [0, 1]],
         "relu at exactly 0 (one-sided derivatives 0 and 1; torch uses relu'(0) = 0), at 1 "
         "element"),
        (("--fn", fn("abs_at_zero"), "--value", "x=[0.0,-2.0]"), [[0, 0], [0, -1]],
         "abs at exactly 0 (one-sided derivatives −1 and 1; torch uses abs'(0) = 0), at 1 "
         "element"),
        (("--fn", fn("max_at_tie"), "--value", "x=[1.0,1.0,0.0]"), [0.5, 0.5, 0],
         "max at a tie (one-sided derivatives give all of it to one of the tied entries; torch "
         "splits it evenly among them), at 2 elements"),
        (("--expr", "max(x)", "--value", "x=[1.0,1.0,0.0]"), [0.5, 0.5, 0],
         "amax at a tie (one-sided derivatives give all of it to one of the tied entries; torch "
         "splits it evenly among them), at 2 elements"),
        (("--fn", fn("clamp_at_bound"), "--value", "x=[0.0,1.0,0.5]"), np.eye(3),
         "clamp at a bound (one-sided derivatives 0 and 1; torch uses 1), at 2 elements"),
        (("--fn", fn("hardtanh_at_bound"), "--value", "x=[-1.0,1.0,0.5]"), np.diag([0, 0, 1]),
         "hardtanh at a bound (one-sided derivatives 0 and 1; torch uses 0), at 2 elements"),
        (("--fn", fn("leaky_relu_at_zero"), "--value", "x=[0.0,1.0]"), np.diag([0.1, 1]),
         "leaky_relu at exactly 0 (one-sided derivatives its slope and 1; torch uses the slope), "
         "at 1 element"),
        (("--fn", fn("max_over_rows"), "--value", "x=[[1.0,1.0],[2.0,0.0]]"),
         [[[1, 0], [0, 0]], [[0, 0], [1, 0]]],
         "max over a dim at a tie (one-sided derivatives give all of it to one of the tied "
         "entries; torch gives it to the index it returns), at 2 elements"),
    ],
)  # fmt: skip
def test_a_point_on_a_kink_names_the_convention_j_follows(
    jaccli, args, expected_j, convention
) -> None:
    jacobians, notes = jacobian_and_warnings(jaccli, *args)
    np.testing.assert_array_equal(values_of(jacobians["y"]["x"]), expected_j)
    assert notes == [f"the point is on a kink: {convention}; the derivatives follow torch's choice"]


def test_per_sample_blocks_on_a_kink_say_so_as_the_dense_j_does(jaccli) -> None:
    run = jaccli("jacobian", "--expr", "x.relu()", "--value", "x=[0.0,1.0,-1.0]", "--batched",
                 "--json")  # fmt: skip
    np.testing.assert_array_equal(values_of(run.json()["jacobian"]["y"]["x"]), [0, 1, 0])
    assert warnings_of(run) == [
        "the point is on a kink: relu at exactly 0 (one-sided derivatives 0 and 1; torch uses "
        "relu'(0) = 0), at 1 element; the derivatives follow torch's choice"
    ]


def test_maximum_at_a_tie_splits_the_derivative(jaccli) -> None:
    jacobians, notes = jacobian_and_warnings(
        jaccli, "--fn", fn("maximum_at_tie"), "--value", "a=[1.0,3.0]", "--value", "b=[1.0,2.0]"
    )
    np.testing.assert_array_equal(values_of(jacobians["y"]["a"]), [[0.5, 0], [0, 1]])
    np.testing.assert_array_equal(values_of(jacobians["y"]["b"]), [[0.5, 0], [0, 0]])
    assert notes == [
        "the point is on a kink: maximum at a tie (one-sided derivatives give all of it to one "
        "argument or the other; torch splits it 1/2–1/2), at 1 element; the derivatives follow "
        "torch's choice"
    ]


def test_off_the_kink_there_is_no_note(jaccli) -> None:
    _, notes = jacobian_and_warnings(jaccli, "--fn", fn("relu_at_zero"), "--value", "x=[0.1,-1]")
    assert notes == []


def test_each_point_gets_its_own_warnings(jaccli, tmp_path) -> None:
    points = tmp_path / "points.json"
    points.write_text("[[1.0, 0.3], [0.0, 0.5]]")
    run = jaccli(
        "det", "--fn", "polar", "--points", f"x=@{points}", "--dtype", "float64", "--jsonl"
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    first, second = (json.loads(line) for line in run.stdout.splitlines())
    assert first["warnings"] == [] and first["det"]["singular"]["values"] is False
    assert second["det"]["singular"]["values"] is True  # polar at r = 0: det J = r = 0
    assert second["warnings"][0].startswith("J is singular to working precision")
    nan = tmp_path / "nan.json"
    nan.write_text("[[1.0, 4.0], [-1.0, 4.0]]")
    run = jaccli("jacobian", "--expr", "sqrt(x)", "--points", f"x=@{nan}", "--jsonl")
    first, second = (json.loads(line) for line in run.stdout.splitlines())
    assert not any("not finite" in note for note in first["warnings"])
    assert "output y has 1 of 2 entries not finite (1 NaN): y[0]" in second["warnings"]


def test_a_batch_of_flow_samples_has_the_flows_own_log_determinants(jaccli) -> None:
    common = ("--fn", fn("flow_dict"), "--shape", "x=4x3", "--batch-axis", "x=0", "--output", "z")
    det = jaccli("det", *common, "--batched", "--dtype", "float64", "--json").json()
    x = values_of(det["inputs"]["x"])
    np.testing.assert_allclose(values_of(det["det"]["logabsdet"]), 2 * np.tanh(x[:, 0]))
    view = jaccli("jacobian", *common, "--view", "rows")
    assert view.exit_code == 0, view.stderr
    assert "block i of J" in view.stdout


def test_a_binary_max_tied_at_zero_gets_its_kink_note(jaccli, tmp_path) -> None:
    # the second argument, a tensor equal to 0, read as False: max(a, b) tied at 0 said nothing
    (tmp_path / "k.py").write_text(
        "import torch\n\ndef max2(x):\n    return torch.max(x[0], x[1]) * x[2]\n"
    )
    run = jaccli("jacobian", "--fn", f"{tmp_path / 'k.py'}:max2", "--value", "x=[0,0,-1]",
                 "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "maximum at a tie" in run.stderr and "1/2–1/2" in run.stderr
    assert run.json()["jacobian"]["y"]["x"]["values"] == [-0.5, -0.5, 0.0]
