"""Your own functions: Python callables from files and modules, and safe inline expressions."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import values_of

FIXTURES = Path(__file__).parent / "fixtures"
USERFNS = FIXTURES / "userfns.py"


def fn(name: str) -> str:
    return f"{USERFNS}:{name}"


def test_two_inputs_match_the_closed_form(jaccli) -> None:
    run = jaccli(
        "jacobian", "--fn", fn("quadratic"), "--shape", "x=3", "--shape", "w=3x3",
        "--dtype", "float64", "--json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["function"]["formula"] == "y = quadratic(x, w)"
    x, w = values_of(document["inputs"]["x"]), values_of(document["inputs"]["w"])
    np.testing.assert_allclose(values_of(document["jacobian"]["y"]["x"]), (w + w.T) @ x, rtol=1e-12)
    np.testing.assert_allclose(
        values_of(document["jacobian"]["y"]["w"]), np.outer(x, x), rtol=1e-12
    )


def test_a_tuple_output_gets_a_jacobian_block_per_output(jaccli) -> None:
    run = jaccli(
        "jacobian", "--fn", fn("polar_pair"), "--shape", "r=3", "--shape", "theta=3",
        "--dtype", "float64", "--json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["wrt"] == ["r", "theta"] and list(document["outputs"]) == ["y0", "y1"]
    r, theta = values_of(document["inputs"]["r"]), values_of(document["inputs"]["theta"])
    np.testing.assert_allclose(values_of(document["outputs"]["y0"]), r * np.cos(theta))
    blocks = document["jacobian"]
    np.testing.assert_allclose(values_of(blocks["y0"]["r"]), np.diag(np.cos(theta)), atol=1e-15)
    np.testing.assert_allclose(
        values_of(blocks["y0"]["theta"]), np.diag(-r * np.sin(theta)), atol=1e-15
    )
    np.testing.assert_allclose(values_of(blocks["y1"]["r"]), np.diag(np.sin(theta)), atol=1e-15)
    np.testing.assert_allclose(
        values_of(blocks["y1"]["theta"]), np.diag(r * np.cos(theta)), atol=1e-15
    )
    table = jaccli("jacobian", "--fn", fn("polar_pair"), "--shape", "r=2", "--shape", "theta=2")
    assert "Jacobian ∂y1/∂theta" in table.stdout and "Outputs" in table.stdout


def test_a_dict_output_names_its_blocks_by_key_and_vjp_sums_them(jaccli) -> None:
    args = ["--fn", fn("stats"), "--shape", "x=4", "--dtype", "float64", "--json"]
    document = jaccli("jacobian", *args).json()
    x = values_of(document["inputs"]["x"])
    np.testing.assert_allclose(values_of(document["jacobian"]["mean"]["x"]), np.full(4, 0.25))
    np.testing.assert_allclose(values_of(document["jacobian"]["energy"]["x"]), 2 * x)
    vjp = jaccli("vjp", *args, "--check").json()
    assert set(vjp["cotangent"]) == {"mean", "energy"}
    np.testing.assert_allclose(values_of(vjp["vjp"]["x"]), 0.25 + 2 * x, rtol=1e-12)
    assert vjp["check"]["passed"] is True


def test_a_default_argument_is_kept_and_not_differentiated_unless_given(jaccli) -> None:
    kept = jaccli("jacobian", "--fn", fn("scaled"), "--shape", "3", "--dtype", "float64", "--json")
    assert kept.exit_code == 0, kept.stderr
    document = kept.json()
    assert list(document["inputs"]) == ["x"]
    x = values_of(document["inputs"]["x"])
    np.testing.assert_allclose(
        values_of(document["jacobian"]["y"]["x"]), np.diag(2 * np.cos(x)), atol=1e-15
    )
    given = jaccli(
        "jacobian", "--fn", fn("scaled"), "--shape", "x=3", "--value", "scale=3",
        "--dtype", "float64", "--json",
    ).json()  # fmt: skip
    x = values_of(given["inputs"]["x"])
    np.testing.assert_allclose(values_of(given["jacobian"]["y"]["scale"]), np.sin(x), rtol=1e-12)
    np.testing.assert_allclose(
        values_of(given["jacobian"]["y"]["x"]), np.diag(3 * np.cos(x)), atol=1e-15
    )


def test_an_output_independent_of_an_input_gives_zeros_and_a_warning(jaccli) -> None:
    run = jaccli("jacobian", "--fn", fn("ignores_b"), "--shape", "a=2", "--shape", "b=3", "--json")
    assert run.exit_code == 0
    assert (
        run.stderr
        == "jacobian: warning: output y does not depend on input b: its Jacobian is zero\n"
    )
    document = run.json()
    assert values_of(document["jacobian"]["y"]["b"]).shape == (2, 3)
    assert not values_of(document["jacobian"]["y"]["b"]).any()
    assert document["warnings"] == ["output y does not depend on input b: its Jacobian is zero"]


def test_a_function_that_raises_exits_1_naming_the_line(jaccli) -> None:
    run = jaccli("jacobian", "--fn", fn("raises"), "--shape", "3")
    assert run.exit_code == 1
    assert run.stdout == ""
    where = os.path.relpath(USERFNS)
    assert run.stderr == f"jacobian: raises raised ValueError: negative input (at {where}:28)\n"
    traced = jaccli("jacobian", "--fn", fn("raises"), "--shape", "3", "--traceback")
    assert "Traceback" in traced.stderr and 'raise ValueError("negative input")' in traced.stderr


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("returns_float", "returned float"),
        ("returns_numbers", "returned a list of float"),
        ("returns_bool", "returned y as a tensor of torch.bool, not a floating tensor"),
    ],
)
def test_an_output_that_is_not_a_floating_tensor_exits_1(jaccli, name: str, says: str) -> None:
    run = jaccli("jacobian", "--fn", fn(name), "--shape", "3")
    assert run.exit_code == 1
    assert says in run.stderr and len(run.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        (f"{FIXTURES}/missing.py:f", "does not exist"),
        (f"{FIXTURES}/notes.txt:f", "is not a .py file"),
        (f"{FIXTURES}:f", "is a directory"),
        (f"{FIXTURES}/syntax_error.py:broken", f"syntax error in {FIXTURES}/syntax_error.py:2"),
        (
            fn("nothing"),
            "has no 'nothing' (callables it defines: Cube, cube, ignores_b, polar_pair",
        ),
        (fn("NOT_CALLABLE"), "'NOT_CALLABLE' is a int, not callable"),
        ("no_such_module_anywhere:f", "no installed module named 'no_such_module_anywhere'"),
    ],
)
def test_loading_errors_are_one_line_with_exit_2(jaccli, reference: str, message: str) -> None:
    run = jaccli("jacobian", "--fn", reference, "--shape", "3")
    assert run.exit_code == 2, run.stderr
    assert message in run.stderr and len(run.stderr.splitlines()) == 1


def test_an_input_with_neither_shape_nor_value_is_a_usage_error(jaccli) -> None:
    run = jaccli("jacobian", "--fn", fn("quadratic"), "--shape", "x=3")
    assert run.exit_code == 2
    assert "input 'w' of quadratic has neither shape nor value" in run.stderr


def test_a_module_in_the_current_directory_never_shadows_the_named_module(
    jaccli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))
    shadow = tmp_path / "jaccli_fixture_pkg"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    (shadow / "mod.py").write_text("def double(x):\n    return 3 * x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend("")
    run = jaccli("jacobian", "--fn", "jaccli_fixture_pkg.mod:double", "--shape", "2", "--json")
    assert run.exit_code == 0, run.stderr
    np.testing.assert_array_equal(values_of(run.json()["jacobian"]["y"]["x"]), 2 * np.eye(2))


def test_an_installed_module_function_works(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "torch.nn.functional:silu", "--shape", "input=3", "--json")
    assert run.exit_code == 0, run.stderr
    x = values_of(run.json()["inputs"]["input"])
    s = 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(
        values_of(run.json()["jacobian"]["y"]["input"]), np.diag(s * (1 + x * (1 - s))), rtol=1e-5
    )


# --- expressions ---------------------------------------------------------------------------


def test_expression_expsum_equals_the_preset(jaccli) -> None:
    expr = jaccli("jacobian", "--expr", "x.exp().sum(dim=1)", "--shape", "2x3", "--json").json()
    preset = jaccli("jacobian", "--fn", "expsum", "--shape", "2x3", "--json").json()
    assert expr["function"] == {"name": "expr", "formula": "y = x.exp().sum(dim=1)"}
    assert expr["jacobian"] == preset["jacobian"]


@pytest.mark.parametrize(
    ("expression", "shapes", "closed_form"),
    [
        ("a @ b", ["a=2x3", "b=3x2"], lambda v: {"a": np.einsum("ik,lj->ijkl", np.eye(2), v["b"])}),
        ("(x ** 2).sum() / 2", ["x=4"], lambda v: {"x": v["x"]}),
        ("-x[0] * x[1] + 3", ["x=2"], lambda v: {"x": np.array([-v["x"][1], -v["x"][0]])}),
        (
            "softmax(x, dim=-1)",
            ["x=3"],
            lambda v: {
                "x": (lambda s: np.diag(s) - np.outer(s, s))(np.exp(v["x"]) / np.exp(v["x"]).sum())
            },
        ),
        ("x.T @ x", ["x=2x2"], None),
        ("x[:, 1:].tanh().max(dim=1)", ["x=2x3"], None),
    ],
)
def test_expressions_compute_correct_jacobians(jaccli, expression, shapes, closed_form) -> None:
    args = ["jacobian", "--expr", expression, "--dtype", "float64", "--check", "--json"]
    for shape in shapes:
        args += ["--shape", shape]
    run = jaccli(*args)
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["check"]["passed"] is True
    if closed_form is not None:
        values = {name: values_of(entry) for name, entry in document["inputs"].items()}
        for wrt, expected in closed_form(values).items():
            np.testing.assert_allclose(
                values_of(document["jacobian"]["y"][wrt]), expected, rtol=1e-12, atol=1e-15
            )


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("x.numpy().tofile('p')", "'tofile' is not an allowed function or method"),
        ("x.numpy()", "'numpy' is not an allowed function or method"),
        ("x.__class__", "attribute '__class__' is not allowed"),
        ("numpy(x)", "'numpy' is not an allowed function or method"),
        ("x.storage()", "'storage' is not an allowed function or method"),
        ("x.register_hook(x)", "'register_hook' is not an allowed function or method"),
        ("save(x)", "'save' is not an allowed function or method"),
        ("load(x)", "'load' is not an allowed function or method"),
        ("(lambda: x)()", "only named functions and tensor methods can be called"),
        ("lambda: x", "a lambda is not allowed"),
        ("sum([v for v in x])", "a comprehension is not allowed"),
        ("f'{x}'", "an f-string is not allowed"),
        ("x + 'a'", "string literal 'a' is not allowed"),
        ("x.sum(axis=1)", "keyword 'axis' is not allowed"),
        ("x.sum(dim=x)", "keyword dim= takes a literal number"),
        ("x ** 1000", "exponent 1000 is past the bound of 64"),
        ("x * 1e9", "number 1000000000.0 is past the bound"),
        ("x" + " + x" * 200, "longer than 500"),
        ("x[x]", "indices and slices take literal integers only"),
        ("x if x else x", "if/else is not allowed"),
        ("exp", "'exp' is a function: call it"),
        ("x.data", "attribute 'data' is not allowed"),
        ("x +", "syntax error"),
    ],
)
def test_rejected_expressions_name_the_piece_and_run_nothing(
    jaccli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expression: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    run = jaccli("jacobian", "--expr", expression, "--shape", "3")
    assert run.exit_code == 2, (run.stdout, run.stderr)
    assert run.stderr.startswith("jacobian: --expr: ")
    assert message in run.stderr
    assert len(run.stderr.splitlines()) == 1
    assert os.listdir(tmp_path) == []  # nothing ran: no file appeared


def test_fn_and_expr_are_one_or_the_other(jaccli) -> None:
    both = jaccli("jacobian", "--fn", "expsum", "--expr", "x.exp()")
    neither = jaccli("jacobian")
    for run in (both, neither):
        assert run.exit_code == 2
        assert "give one of --fn NAME or --expr EXPRESSION" in run.stderr


def test_an_op_torch_cannot_differentiate_is_the_functions_not_an_internal_error(
    jaccli, tmp_path
) -> None:
    (tmp_path / "hv.py").write_text(
        "import torch\n\ndef f(x):\n    return torch.heaviside(x, torch.tensor(0.5)) * x\n"
    )
    run = jaccli("jacobian", "--fn", f"{tmp_path / 'hv.py'}:f", "--shape", "3")
    assert run.exit_code == 1
    assert "no derivative for" in run.stderr and "heaviside" in run.stderr
    assert "internal error" not in run.stderr
