"""The function as the reference: results of user code against the function's own differences.

Functions that hide part of their computation from autograd (.item(), NumPy, detach, int(),
.tolist(), gradients turned off, a replaced torch.autograd.grad) are refused with the file and
line of the break; correct functions, float32 ones, kinks and branches on values pass.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from jaccli.arrays import ArrayData
from jaccli.engine import prepare, run_hessian, run_hvp, run_jacobian, run_jvp, run_vjp
from jaccli.engine.reference import SAFETY
from jaccli.functions.user import load_callable
from tests.conftest import finite_difference_jacobian, values_of

FIXTURES = Path(__file__).parent / "fixtures"
BREAKS = FIXTURES / "graph_breaks.py"
SHOWN = "tests/fixtures/graph_breaks.py"


def _line(function: str) -> int:
    """The line of `function` in the fixture file marked `# breaks here`."""
    lines = BREAKS.read_text(encoding="utf-8").splitlines()
    start = next(i for i, text in enumerate(lines) if text.startswith(f"def {function}("))
    return next(i + 1 for i in range(start, len(lines)) if "# breaks here" in lines[i])


OFF = "(torch.no_grad or torch.set_grad_enabled(False))"
BREAKING = [
    ("uses_item", ".item() turns a tensor that depends on x into a Python number"),
    ("numpy_round_trip", ".numpy() turns a tensor detached from x into a NumPy array"),
    ("detach_misuse", ".detach() takes a tensor that depends on x out of the graph"),
    ("fixed_point", "int() turns a tensor that depends on x into a Python number"),
    ("via_list", ".tolist() turns a tensor that depends on x into a Python list"),
    ("grad_off", f"mul runs on a tensor that depends on x with gradient recording off {OFF}"),
    ("no_grad_block", f"sum runs on a tensor that depends on x with gradient recording off {OFF}"),
]


@pytest.mark.parametrize(("name", "says"), BREAKING, ids=[b[0] for b in BREAKING])
def test_a_graph_break_is_refused_naming_file_and_line(jaccli, name: str, says: str) -> None:
    run = jaccli("jacobian", "--fn", f"{SHOWN}:{name}", "--value", "x=[1, 2, 3]",
                 "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 1, run.stdout
    assert run.stdout == ""
    message = run.stderr.splitlines()[0]
    assert message == (
        f"jacobian: {name}: {SHOWN}:{_line(name)} {says}; autograd cannot follow it, "
        "so J would be wrong"
    )
    assert '"code": "graph_break"' in run.stderr
    assert torch.is_grad_enabled()  # the function turned gradients off; jaccli put them back


@pytest.mark.parametrize("command", ["vjp", "jvp", "det"])
def test_every_command_refuses_the_break(jaccli, command: str) -> None:
    run = jaccli(command, "--fn", f"{SHOWN}:uses_item", "--value", "x=[1, 2, 3]",
                 "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 1
    assert f"{SHOWN}:{_line('uses_item')} .item()" in run.stderr


@pytest.mark.parametrize("command", ["hessian", "hvp"])
def test_second_derivatives_refuse_the_break(jaccli, tmp_path, command: str) -> None:
    source = tmp_path / "energy.py"
    source.write_text(
        "def energy(x):\n    s = (x ** 2).sum().item()\n    return (x ** 2).sum() * s\n",
        encoding="utf-8",
    )
    run = jaccli(command, "--fn", f"{source}:energy", "--value", "x=[1, 2, 3]",
                 "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 1
    assert "energy.py:2 .item() turns a tensor that depends on x into a Python number" in (
        run.stderr
    )
    assert "so H would be wrong" in run.stderr


def test_a_batched_break_is_refused(jaccli) -> None:
    run = jaccli("jacobian", "--fn", f"{SHOWN}:uses_item", "--value", "x=[[1, 2], [3, 4]]",
                 "--batched", "--batch-axis", "0", "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 1
    assert ".item() turns a tensor that depends on x" in run.stderr


def test_points_refuse_the_break(jaccli, tmp_path) -> None:
    source = tmp_path / "points.npy"
    np.save(source, np.arange(12.0).reshape(4, 3) + 1)
    run = jaccli("jacobian", "--fn", f"{SHOWN}:detach_misuse", "--points", f"x=@{source}",
                 "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 1
    assert "point 0: detach_misuse" in run.stderr and ".detach()" in run.stderr


def test_a_branch_on_a_value_keeps_working(jaccli) -> None:
    for name, point, expected in [
        ("branch_on_item", [1.0, 2.0, 3.0], 2 * np.eye(3)),
        ("branch_on_item", [-1.0, -2.0, 3.0 - 1e-12], 3 * np.eye(3)),  # the branch inside the step
        ("branch_on_tensor", [1.0, 2.0, 3.0], np.diag(np.cos([1.0, 2.0, 3.0]))),
    ]:
        run = jaccli("jacobian", "--fn", f"{SHOWN}:{name}", "--value", f"x={point}",
                     "--dtype", "float64", "--json")  # fmt: skip
        assert run.exit_code == 0, run.stderr
        document = run.json()
        np.testing.assert_allclose(values_of(document["jacobian"]["y"]["x"]), expected)
        reference = document["guard"]["function_reference"]
        assert reference["passed"] is True and reference["quantity"] == "uᵀJv"


def test_a_zeroing_autograd_installed_at_import_is_refused(jaccli, monkeypatch) -> None:
    monkeypatch.setattr(torch.autograd, "grad", torch.autograd.grad)  # undone after the test
    run = jaccli("jacobian", "--fn", "tests/fixtures/patched_autograd.py:double",
                 "--value", "x=[1, 2, 3]", "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 1
    assert run.stderr.splitlines()[0] == (
        "jacobian: double: torch.autograd.grad is replaced by a function of "
        "tests/fixtures/patched_autograd.py:6; jaccli differentiates through it, so J would be "
        "wrong"
    )


def test_torch_state_changed_inside_the_function_is_put_back(jaccli) -> None:
    original = torch.autograd.grad
    for name in ("patches_grad_inside", "leaves_state_changed"):
        run = jaccli("jacobian", "--fn", f"{SHOWN}:{name}", "--value", "x=[1, 2, 3]",
                     "--json")  # fmt: skip
        assert run.exit_code == 0, run.stderr
        j = values_of(run.json()["jacobian"]["y"]["x"])
        expected = 2 * np.eye(3) if name == "patches_grad_inside" else np.diag(np.cos([1, 2, 3]))
        np.testing.assert_allclose(j, expected, rtol=1e-6)
    assert torch.autograd.grad is original
    assert torch.get_default_dtype() == torch.float32
    assert not torch.is_anomaly_enabled()


def test_the_check_shows_in_the_table_and_json(jaccli) -> None:
    run = jaccli("jacobian", "--fn", f"{SHOWN}:smooth", "--value", "x=[0.5, 1, 2]",
                 "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    assert "checked against the function's own differences\n  uᵀJv " in run.stdout
    preset = jaccli("jacobian", "--fn", "expsum", "--json")
    assert preset.json()["guard"]["function_reference"] is None  # a preset cannot break the graph


def _problem(name: str, point: np.ndarray, dtype: str):
    function = load_callable(f"{BREAKS}:{name}")
    data = ArrayData(point.shape, point.astype(np.float64))
    return prepare(function, value_options=[("x", data)], dtype=dtype)


CORRECT = ["smooth", "softmax_energy", "mlp", "kinked", "on_kink", "stairs", "pairwise"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_correct_functions_pass_at_many_random_points(dtype: str) -> None:
    """No false refusal: every correct function at 12 random points (including points on the
    kinks of `on_kink` and the jumps of `stairs`), for J, J·v, vᵀJ and H·v, in both dtypes."""
    rng = np.random.default_rng(11)
    for name in CORRECT:
        for k in range(12):
            point = rng.standard_normal(rng.integers(2, 7)) * rng.choice([0.01, 1.0, 30.0])
            if k % 4 == 0:
                point[: len(point) // 2] = 0.0  # on the kinks of on_kink, the jumps of stairs
            problem = _problem(name, point, dtype)
            result = run_jacobian(problem)
            reference = result.guard.function_reference
            assert reference is not None and reference.passed is not False, (name, point)
            assert run_jvp(problem, "randn").guard.function_reference.passed is not False
            if name not in ("mlp", "pairwise"):  # one output per input: a VJP that is J's
                assert run_vjp(problem, "randn").guard.function_reference.passed is not False


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_correct_scalar_functions_pass_the_second_difference(dtype: str) -> None:
    rng = np.random.default_rng(12)
    for k in range(10):
        point = rng.standard_normal(4) * (1.0 if k % 2 else 5.0)
        problem = _problem("softmax_energy", point, dtype)
        h = run_hessian(problem).guard.function_reference
        assert h is not None and h.passed is not False, (point, h)
        hv = run_hvp(problem, "randn").guard.function_reference
        assert hv is not None and hv.passed is not False, (point, hv)


def test_the_error_estimate_is_close_to_the_true_error() -> None:
    """On a function with a known derivative, the estimate bounds the real error of the
    differences, and SAFETY times it is far below what a graph break costs."""
    point = np.array([0.3, -1.2, 2.0])
    problem = _problem("smooth", point, "float64")
    reference = run_jacobian(problem).guard.function_reference
    true_error = abs(reference.difference - reference.value)
    assert true_error <= reference.estimated_error
    assert SAFETY * reference.estimated_error < 1e-6 * abs(reference.value)


def test_a_refusal_without_a_named_break_says_what_disagreed(jaccli, tmp_path) -> None:
    source = tmp_path / "custom.py"
    source.write_text(
        "import torch\n"
        "class Wrong(torch.autograd.Function):\n"
        "    @staticmethod\n"
        "    def forward(ctx, x):\n"
        "        return x.sin()\n"
        "    @staticmethod\n"
        "    def backward(ctx, g):\n"
        "        return g * 2\n"
        "def wrong(x):\n"
        "    return Wrong.apply(x)\n",
        encoding="utf-8",
    )
    run = jaccli("jacobian", "--fn", f"{source}:wrong", "--value", "x=[1, 2, 3]",
                 "--dtype", "float64", "--strategy", "loop", "--json")  # fmt: skip
    assert run.exit_code == 1
    assert "wrong: the result disagrees with the function's own central differences" in (run.stderr)
    assert '"code": "function_reference_failed"' in run.stderr


def test_the_fd_reference_agrees_with_an_independent_float64_jacobian() -> None:
    """The value the check compares is uᵀJv of the J shown: recompute it from J and the
    direction-free central-difference J of the conftest helper."""
    point = np.array([0.7, -0.4, 1.3])
    problem = _problem("smooth", point, "float64")
    result = run_jacobian(problem)
    j = result.jacobians["y"]["x"]

    def f(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x)
        return (torch.sin(t) * torch.exp(0.3 * t) + t.pow(2).sum() * torch.tanh(t)).numpy()

    np.testing.assert_allclose(j, finite_difference_jacobian(f, point), rtol=1e-7, atol=1e-9)
    reference = result.guard.function_reference
    assert math.isclose(reference.value, reference.difference, rel_tol=1e-8)


def test_a_break_after_a_legitimate_branch_names_both_places(jaccli, tmp_path) -> None:
    # the branch's .item() comes first; the refusal named it alone, not the line that broke J
    (tmp_path / "mis.py").write_text(
        "def f(x):\n"
        "    if x.sum().item() > 0:\n"
        "        s = x.sum().item()\n"
        "        return x * s\n"
        "    return x\n"
    )
    run = jaccli("jacobian", "--fn", f"{tmp_path / 'mis.py'}:f", "--value", "x=[1,2,3]",
                 "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 1
    assert "mis.py:2 .item()" in run.stderr and "mis.py:3 .item()" in run.stderr, run.stderr


WRONG_AT_THE_POINT = """\
import torch

def zero_at_zero(x):
    return torch.where(x == 0, torch.zeros_like(x), x)  # y = x everywhere; autograd says 0 at 0

def detached_below_zero(x):
    return torch.where(x > 0, x**2, x.detach() ** 2 + 0 * x)
"""


def test_a_derivative_wrong_at_a_smooth_point_is_refused_not_checked_nearby(
    jaccli, tmp_path
) -> None:
    # NOTE [kinks at the point]: y = x is smooth at 0, so agreement a little away proves nothing
    (tmp_path / "wrong.py").write_text(WRONG_AT_THE_POINT, encoding="utf-8")
    fn = f"{tmp_path / 'wrong.py'}:zero_at_zero"
    at_zero = jaccli("jacobian", "--fn", fn, "--value", "x=[0.0, 1.0]", "--dtype", "float64")
    assert at_zero.exit_code == 1
    assert "disagrees with the function's own central differences" in at_zero.stderr
    away = jaccli("jacobian", "--fn", fn, "--value", "x=[0.5, 1.0]", "--dtype", "float64", "--json")
    assert away.exit_code == 0, away.stderr
    np.testing.assert_array_equal(values_of(away.json()["jacobian"]["y"]["x"]), np.eye(2))


def test_det_of_a_singular_matrix_in_an_expression_is_refused(jaccli) -> None:
    # torch's det backward gives 0 at diag(0, 2, 3), where ∂(x0·x1·x2)/∂x = [6, 0, 0]
    refused = jaccli("jacobian", "--expr", "det(diag(x))", "--value", "x=[0, 2, 3]")
    assert refused.exit_code == 1
    assert "torch's derivative is wrong here (det of a singular matrix" in refused.stderr
    answered = jaccli("jacobian", "--expr", "det(diag(x))", "--value", "x=[1, 2, 3]",
                      "--dtype", "float64", "--json")  # fmt: skip
    assert answered.exit_code == 0, answered.stderr
    np.testing.assert_allclose(values_of(answered.json()["jacobian"]["y"]["x"]), [6, 3, 2])


@pytest.mark.parametrize(
    ("call", "says"),
    [
        ("detached_below_zero", "wrong.py:7 .detach() takes a tensor that depends on x"),
        ("det(diag(x))", "torch's derivative is wrong here (det of a singular matrix"),
    ],
)
def test_points_past_the_first_are_checked_against_the_function(
    jaccli, tmp_path, call: str, says: str
) -> None:
    # NOTE [points autograd cannot see]: right at point 0, wrong by autograd at point 1
    (tmp_path / "wrong.py").write_text(WRONG_AT_THE_POINT, encoding="utf-8")
    function = ["--expr", call] if "(" in call else ["--fn", f"{tmp_path / 'wrong.py'}:{call}"]
    points = tmp_path / "points.npy"
    np.save(points, np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 3.0], [2.0, 1.0, 0.5]]))
    run = jaccli("jacobian", *function, "--points", f"x=@{points}", "--dtype", "float64")
    assert run.exit_code == 1
    assert run.stderr.startswith("jacobian: point 1: ") and says in run.stderr
    np.save(points, np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 0.5], [0.5, 4.0, 1.0]]))
    fine = jaccli("jacobian", *function, "--points", f"x=@{points}", "--dtype", "float64",
                  "--json")  # fmt: skip
    assert fine.exit_code == 0, fine.stderr
    assert "checked against the function one at a time" in fine.stderr
    x = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 0.5], [0.5, 4.0, 1.0]])
    j = values_of(fine.json()["jacobian"]["y"]["x"])
    if "(" in call:  # ∂(x0·x1·x2)/∂x
        expected = np.stack([x[:, 1] * x[:, 2], x[:, 0] * x[:, 2], x[:, 0] * x[:, 1]], 1)
    else:  # diag(2x)
        expected = np.stack([np.diag(2 * p) for p in x])
    np.testing.assert_allclose(j, expected, rtol=1e-9)


SCALES_APART = """\
import torch

def hidden(a, b):
    return 1e12 * a + b.detach() ** 2

def seen(a, b):
    return 1e12 * a + b**2
"""


@pytest.mark.parametrize("command", ["jacobian", "vjp"])
def test_an_input_far_smaller_than_another_is_checked_on_its_own(
    jaccli, tmp_path, command: str
) -> None:
    # NOTE [each input its own reference]: b's part of one joint uᵀJv sat below a's rounding
    (tmp_path / "apart.py").write_text(SCALES_APART, encoding="utf-8")
    values = ["--value", "a=[1.0, 2.0]", "--value", "b=[3.0, 4.0]", "--dtype", "float64"]
    hidden = jaccli(command, "--fn", f"{tmp_path / 'apart.py'}:hidden", *values)
    assert hidden.exit_code == 1
    assert ".detach() takes a tensor that depends on b out of the graph" in hidden.stderr
    seen = jaccli(command, "--fn", f"{tmp_path / 'apart.py'}:seen", *values, "--json")
    assert seen.exit_code == 0, seen.stderr
    document = seen.json()
    assert document["guard"]["function_reference"]["passed"] is True
    if command == "jacobian":
        np.testing.assert_array_equal(values_of(document["jacobian"]["y"]["b"]), np.diag([6, 8]))
    else:  # the cotangent of ones: 2b
        np.testing.assert_array_equal(values_of(document["vjp"]["b"]), [6, 8])


UNUSED_AND_SMALL = """\
import torch

def unused(x, y):
    return torch.sin(x)

def scales(a, b):
    return 1e6 * a + b
"""


def test_an_input_that_cannot_be_checked_on_its_own_is_named_and_the_rest_stands(
    jaccli, tmp_path
) -> None:
    # NOTE [each input its own reference]: b's part of 1e6·a + b is below float32's rounding
    (tmp_path / "u.py").write_text(UNUSED_AND_SMALL, encoding="utf-8")
    small = jaccli("jacobian", "--fn", f"{tmp_path / 'u.py'}:scales", "--value", "a=[1, 2]",
                   "--value", "b=[3, 4]", "--json")  # fmt: skip
    assert small.exit_code == 0, small.stderr
    document = small.json()
    assert document["guard"]["function_reference"]["passed"] is True
    assert document["warnings"] == [
        "uᵀJv along b was not checked against scales's differences: the function's differences "
        "at two steps disagree by more than their own size (it is random, or rough within the "
        "step): they cannot check the result"
    ]
    np.testing.assert_array_equal(values_of(document["jacobian"]["y"]["b"]), np.eye(2))
    unused = jaccli("jacobian", "--fn", f"{tmp_path / 'u.py'}:unused", "--value", "x=[0.3, 1.2]",
                    "--value", "y=[1, 2]", "--dtype", "float64", "--json")  # fmt: skip
    assert unused.exit_code == 0, unused.stderr
    assert unused.json()["warnings"] == [
        "output out does not depend on input y: its Jacobian is zero"
    ]
    assert unused.json()["guard"]["function_reference"]["passed"] is True


AT_ZERO = """\
import torch

def zero_at_zero(x):
    return torch.where(x == 0, torch.zeros_like(x), x)

def relu_plus(x):
    return torch.relu(x) * 2 + x
"""


@pytest.mark.parametrize("command", ["jacobian", "vjp", "jvp"])
def test_a_point_autograd_gets_wrong_alone_is_found_among_many(jaccli, tmp_path, command) -> None:
    # NOTE [every point against the function]: no detach, no kink note; AD says 0 at x = 0
    (tmp_path / "z.py").write_text(AT_ZERO, encoding="utf-8")
    x = np.random.default_rng(3).standard_normal((40, 3)) + 0.5
    x[17, 1] = 0.0
    points = tmp_path / "points.npy"
    np.save(points, x)
    refused = jaccli(command, "--fn", f"{tmp_path / 'z.py'}:zero_at_zero", "--points",
                     f"x=@{points}", "--dtype", "float64")  # fmt: skip
    assert refused.exit_code == 1
    assert refused.stderr.startswith(f"{command}: point 17: zero_at_zero: the result disagrees")
    if command != "jacobian":
        return
    kinked = jaccli("jacobian", "--fn", f"{tmp_path / 'z.py'}:relu_plus", "--points",
                    f"x=@{points}", "--dtype", "float64", "--json")  # fmt: skip
    assert kinked.exit_code == 0, kinked.stderr
    j = values_of(kinked.json()["jacobian"]["y"]["x"])
    np.testing.assert_array_equal(j, np.stack([np.diag(1 + 2 * (p > 0)) for p in x]))
    warnings = kinked.json()["warnings"]
    assert len(warnings) == 1 and warnings[0].startswith("point 17: the point is on a kink: relu")


FAR_AND_MIXED = """\
import torch

def sin_far(x):
    return torch.sin(x)

def mixed(x):  # features of 1e3 and 1e-3 side by side
    return torch.stack([torch.tanh(x[0] / 1000 + x[1] * 1000), x[0] * x[1]])
"""


@pytest.mark.parametrize("call", ["sin_far", "mixed"])
def test_points_the_differences_cannot_resolve_keep_their_vectorized_j(
    jaccli, tmp_path, call
) -> None:
    # NOTE [every point against the function]: steps of 60 over sin at 1e4, or moving a 1e-3
    # feature across its range, sent most points to the single-point engine, which refused
    (tmp_path / "f.py").write_text(FAR_AND_MIXED, encoding="utf-8")
    rng = np.random.default_rng(7)
    if call == "sin_far":
        x = (1e4 * (1 + 0.5 * rng.random((300, 3)))).astype(np.float32)
    else:
        x = np.stack([1e3 * rng.standard_normal(300), 1e-3 * rng.standard_normal(300)], 1)
        x = x.astype(np.float32)
    points = tmp_path / "points.npy"
    np.save(points, x)
    out = tmp_path / "j.npy"
    run = jaccli("jacobian", "--fn", f"{tmp_path / 'f.py'}:{call}", "--points", f"x=@{points}",
                 "--out", str(out))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    x64 = x.astype(np.float64)
    if call == "sin_far":
        expected = np.stack([np.diag(np.cos(p)) for p in x64])
    else:
        sech2 = 1 - np.tanh(x64[:, 0] / 1000 + x64[:, 1] * 1000) ** 2
        expected = np.stack(
            [np.stack([sech2 / 1000, sech2 * 1000], 1), np.stack([x64[:, 1], x64[:, 0]], 1)], 1
        )
    np.testing.assert_allclose(np.load(out), expected, rtol=2e-3, atol=1e-6)
