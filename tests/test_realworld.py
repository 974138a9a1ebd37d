"""Functions of the kinds other projects' test suites exercise, each Jacobian compared with
torch.autograd.functional.jacobian computed here and with float64 central differences, under
every strategy: the right J, or a refusal that says why (never a wrong J with exit 0)."""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import values_of

FIXTURE = Path(__file__).parent / "fixtures" / "realworld.py"
_spec = importlib.util.spec_from_file_location("realworld_reference", FIXTURE)
assert _spec is not None and _spec.loader is not None
realworld = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(realworld)

STRATEGIES = ["auto", "loop", "rev", "fwd"]


def fn(name: str) -> str:
    return f"{FIXTURE}:{name}"


def reference_jacobians(
    function: Callable, inputs: dict[str, np.ndarray], wrt: list[str]
) -> dict[str, dict[str, np.ndarray]]:
    """jacobian[output][wrt] by torch.autograd.functional.jacobian in float64, each call on
    fresh copies, outputs flattened as jaccli names them."""
    fixed = {n: torch.tensor(v) for n, v in inputs.items() if n not in wrt}

    def flat(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        given = {**{n: t.clone() for n, t in fixed.items()}, **dict(zip(wrt, args, strict=True))}
        return tuple(leaves(call(function, given)))

    primals = tuple(torch.tensor(inputs[n]) for n in wrt)
    result = torch.autograd.functional.jacobian(flat, primals)
    names = names_of(call(function, {n: as_leaf(v) for n, v in inputs.items()}))
    if names == ["y"] and "y" in inputs:  # an input called y: jaccli calls the output out
        names = ["out"]
    return {
        out: {w: result[i][k].numpy() for k, w in enumerate(wrt)} for i, out in enumerate(names)
    }


def call(function: Callable, inputs: dict[str, torch.Tensor]):
    """function(*inputs) in the order of its parameters (some are positional-only)."""
    names = [n for n in inspect.signature(function).parameters if n in inputs]
    return function(*(inputs[n] for n in names))


def as_leaf(values: np.ndarray) -> torch.Tensor:
    tensor = torch.tensor(values)
    return tensor.requires_grad_(tensor.is_floating_point())


def leaves(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    items = value.values() if isinstance(value, dict) else value
    return [leaf for item in items for leaf in leaves(item)]


def names_of(value, path: str = "") -> list[str]:
    """Output names as jaccli gives them: y; y0, y1 for a tuple; keys; dotted when nested."""
    if isinstance(value, torch.Tensor):
        return [path or "y"]
    if isinstance(value, dict):
        items = list(value.items())
    elif hasattr(value, "_fields"):
        items = list(zip(value._fields, value, strict=True))
    else:
        items = [(str(i) if path else f"y{i}", v) for i, v in enumerate(value)]
    return [n for key, v in items for n in names_of(v, f"{path}.{key}" if path else key)]


def central_differences(function: Callable, inputs: dict[str, np.ndarray], wrt: str, out: int):
    x = inputs[wrt]
    columns = []
    for j in range(x.size):
        shifted = []
        for sign in (1, -1):
            moved = {n: torch.tensor(v) for n, v in inputs.items()}
            moved[wrt].view(-1)[j] += sign * 1e-6
            moved = {n: t.requires_grad_(t.is_floating_point()) for n, t in moved.items()}
            shifted.append(leaves(call(function, moved))[out].detach().numpy())
        columns.append((shifted[0] - shifted[1]) / 2e-6)
    return np.stack(columns, axis=-1).reshape(tuple(np.shape(shifted[0])) + tuple(x.shape))


CASES = [
    ("force", ["--shape", "x=4"]),
    ("jacobian_of_jacobian", ["--shape", "x=3"]),
    ("func_grad", ["--shape", "x=4"]),
    ("sets_items", ["--shape", "x=4"]),
    ("relu_product", ["--value", "x=[0.0, -1.5, 2.0]"]),
    ("determinant", ["--shape", "m=3x3"]),
    ("inverse", ["--value", "m=[[2, 1], [0.5, 3]]"]),
    ("solve", ["--value", "a=[[3, 1], [1, 2]]", "--shape", "b=2"]),
    ("symmetric_eigenvalues", ["--value", "m=[[2, 0.3, 0], [0.3, 1, 0.2], [0, 0.2, -1]]"]),
    ("scalar_to_vector", ["--shape", "s=scalar"]),
    ("rosenbrock", ["--shape", "x=4"]),
    ("with_default", ["--shape", "x=3"]),
    ("ignores_second", ["--shape", "x=3", "--shape", "unused=2"]),
    ("unrelated_outputs", ["--shape", "x=2", "--shape", "y=3"]),
    ("mixed_dtypes", ["--shape", "x=3", "--shape", "y=3"]),
    ("zero_dim_mixed", ["--shape", "x=scalar", "--shape", "y=1"]),
    ("narrowed", ["--shape", "a=4"]),
    ("disconnected", ["--value", "a=[1.5, 2.5]"]),
    ("nested", ["--shape", "a=3", "--shape", "b=3"]),
    ("dict_of_tuples", ["--shape", "x=3"]),
    ("named_pair", ["--shape", "x=2"]),
    ("one_tuple", ["--shape", "x=2"]),
    ("positional_only", ["--shape", "x=2", "--shape", "y=2"]),
]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize(("name", "args"), CASES, ids=[c[0] for c in CASES])
def test_jacobian_is_right_or_refused(jaccli, name: str, args: list[str], strategy: str) -> None:
    run = jaccli(
        "jacobian", "--fn", fn(name), *args, "--dtype", "float64", "--strategy", strategy, "--json"
    )
    if run.exit_code != 0:
        # only an explicit vectorized strategy may refuse, and it must say why in one line
        assert strategy in ("rev", "fwd"), run.stderr
        assert run.exit_code == 1, run.stderr
        assert run.stderr.count("\n") == 2 and "try --strategy" in run.stderr
        return
    document = run.json()
    function = getattr(realworld, name)
    inputs = {n: values_of(entry) for n, entry in document["inputs"].items()}
    expected = reference_jacobians(function, inputs, document["wrt"])
    assert set(document["jacobian"]) == set(expected)
    # a float32 output's J carries float32's precision when forward mode computes it (as
    # torch's own tests note); every other case is float64 through and through
    rtol = 1e-6 if name == "mixed_dtypes" else 1e-10
    for out, by_wrt in expected.items():
        for wrt, j in by_wrt.items():
            got = values_of(document["jacobian"][out][wrt])
            np.testing.assert_allclose(got, j, rtol=rtol, atol=1e-12, err_msg=f"{out}/{wrt}")
    assert document["guard"]["passed"] is True


NOT_FOR_DIFFERENCES = {
    "mixed_dtypes": "a float32 output's differences at h = 1e-6 are rounding noise",
}


@pytest.mark.parametrize(
    ("name", "args"),
    [case for case in CASES if case[0] not in NOT_FOR_DIFFERENCES],
    ids=[case[0] for case in CASES if case[0] not in NOT_FOR_DIFFERENCES],
)
def test_jacobian_matches_central_differences(jaccli, name: str, args: list[str]) -> None:
    document = jaccli("jacobian", "--fn", fn(name), *args, "--dtype", "float64", "--json").json()
    inputs = {n: values_of(entry) for n, entry in document["inputs"].items()}
    function = getattr(realworld, name)
    for index, out in enumerate(document["jacobian"]):
        for wrt in document["wrt"]:
            np.testing.assert_allclose(
                values_of(document["jacobian"][out][wrt]),
                central_differences(function, inputs, wrt, index),
                rtol=1e-5,
                atol=1e-6,
                err_msg=f"{out}/{wrt}",
            )


def test_functions_that_differentiate_their_input_pass_jaccli_check(jaccli) -> None:
    for name in ("force", "jacobian_of_jacobian", "func_grad"):
        run = jaccli("check", "--fn", fn(name), "--shape", "x=3", "--json")
        assert run.exit_code == 0, run.stderr
        assert run.json()["check"]["passed"] is True


def test_a_vjp_of_a_force_is_the_hessian_times_v(jaccli) -> None:
    run = jaccli(
        "vjp", "--fn", fn("force"), "--shape", "x=4", "--cotangent", "randn", "--dtype",
        "float64", "--check", "--json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x = torch.tensor(values_of(document["inputs"]["x"]))
    v = values_of(document["cotangent"]["y"])
    hessian = torch.autograd.functional.hessian(realworld.energy, x).numpy()
    np.testing.assert_allclose(values_of(document["vjp"]["x"]), v @ hessian, rtol=1e-12)
    assert document["guard"]["passed"] is True


def test_in_place_mutation_of_an_input_changes_neither_the_result_nor_the_input(jaccli) -> None:
    run = jaccli(
        "jacobian", "--fn", fn("mutates_constant"), "--value", "x=[1.5, -2.0]", "--value",
        "c=[1.0, 1.0]", "--wrt", "x", "--dtype", "float64", "--json",
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["inputs"]["c"]["values"] == [1, 1]  # shown as given, not 8
    assert document["outputs"]["y"]["values"] == [3, -4]  # 2x, not 4x
    np.testing.assert_array_equal(values_of(document["jacobian"]["y"]["x"]), 2 * np.eye(2))
    assert document["warnings"] == [
        "mutates_constant modifies its input c in place; every call got a fresh copy, and c is "
        "shown as given"
    ]
    assert "modifies its input c in place" in run.stderr


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_copy_into_an_input_named_y_reports_the_given_values(jaccli, strategy: str) -> None:
    run = jaccli(
        "jacobian", "--fn", fn("copies_into_input"), "--value", "x=[1, 2]", "--value",
        "y=[7.0, 8.0]", "--wrt", "x", "--strategy", strategy, "--dtype", "float64", "--json",
    )  # fmt: skip
    if run.exit_code != 0:  # vmap refuses writing a batched x into an unbatched y
        assert strategy in ("rev", "fwd") and "try --strategy" in run.stderr, run.stderr
        return
    document = run.json()
    assert document["inputs"]["y"]["values"] == [7, 8]
    assert list(document["outputs"]) == ["out"]  # the input y keeps its name
    np.testing.assert_array_equal(values_of(document["jacobian"]["out"]["x"]), 3 * np.eye(2))
    assert "∂out" in jaccli("jacobian", "--fn", fn("copies_into_input"), "--value", "x=[1, 2]",
                            "--value", "y=[7.0, 8.0]", "--wrt", "x").stdout  # fmt: skip


def test_integer_targets_stay_integers_for_cross_entropy(jaccli, tmp_path: Path) -> None:
    targets = tmp_path / "targets.npy"
    np.save(targets, np.array([1, 3], dtype=np.int64))
    for given in ("targets=[1, 3]", f"targets=@{targets}"):
        wrt = ["--wrt", "logits"] if "@" not in given else []  # an integer file is not wrt
        run = jaccli(
            "jacobian", "--fn", fn("cross_entropy"), "--shape", "logits=2x4", "--value", given,
            *wrt, "--dtype", "float64", "--json",
        )  # fmt: skip
        assert run.exit_code == 0, run.stderr
        document = run.json()
        assert document["wrt"] == ["logits"]
        assert document["inputs"]["targets"] == {
            "shape": [2], "values": [1, 3], "dtype": "int64", "differentiated": False,
            "constant": False,
        }  # fmt: skip
        logits = torch.tensor(values_of(document["inputs"]["logits"]))
        expected = (torch.softmax(logits, dim=1) - torch.eye(4)[[1, 3]]) / 2
        np.testing.assert_allclose(
            values_of(document["jacobian"]["y"]["logits"]), expected.numpy(), rtol=1e-12
        )


def test_builtins_take_positional_inputs_named_x(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "torch:sin", "--value", "[0.5, 1.0]", "--dtype", "float64",
                 "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["function"] == {"name": "sin", "formula": "y = torch.sin(x)"}
    np.testing.assert_allclose(
        values_of(document["jacobian"]["y"]["x"]), np.diag(np.cos([0.5, 1.0])), rtol=1e-15
    )
    gelu = jaccli("jacobian", "--fn", "torch.nn.functional:gelu", "--shape", "3", "--json")
    assert gelu.exit_code == 0, gelu.stderr
    two = jaccli("jacobian", "--fn", "torch:atan2", "--value", "x=[1.0]", "--value", "x1=[2.0]",
                 "--dtype", "float64", "--json").json()  # fmt: skip
    assert two["jacobian"]["y"]["x"]["values"] == [[pytest.approx(2 / 5)]]  # ∂atan2(x, x1)/∂x
    assert two["jacobian"]["y"]["x1"]["values"] == [[pytest.approx(-1 / 5)]]
    missing = jaccli("jacobian", "--fn", "torch:sin")
    assert missing.exit_code == 2 and "0x" not in missing.stderr, missing.stderr


def test_user_code_cannot_take_over_stdout_or_the_exit_status(jaccli) -> None:
    printed = jaccli("jacobian", "--fn", fn("prints_and_returns"), "--shape", "2", "--json")
    assert printed.exit_code == 0
    printed.json()  # stdout is the document alone
    assert "debug: called" in printed.stderr
    for name, code in (("exits_zero", 0), ("exits_three", 3)):
        run = jaccli("jacobian", "--fn", fn(name), "--shape", "2")
        assert run.exit_code == 1, run.stderr
        assert run.stderr.startswith(f"jacobian: {name} called sys.exit({code}) (at ")
        assert run.stderr.count("\n") == 1


def test_helpful_errors_for_a_function_reference_missing_a_piece(jaccli, tmp_path, monkeypatch):
    (tmp_path / "model.py").write_text("def spring(x):\n    return x ** 2\n")
    monkeypatch.chdir(tmp_path)
    module_style = jaccli("jacobian", "--fn", "model:spring", "--shape", "2")
    assert module_style.exit_code == 2
    assert "did you mean --fn model.py:spring?" in module_style.stderr
    no_function = jaccli("jacobian", "--fn", "model.py", "--shape", "2")
    assert no_function.exit_code == 2
    assert no_function.stderr == (
        "jacobian: --fn 'model.py' names a file but no function in it; add one, as in "
        "--fn model.py:spring (functions it defines: spring)\n"
    )
    relative = jaccli("jacobian", "--fn", "model.py:spring", "--value", "[1, 2]", "--json")
    assert relative.json()["jacobian"]["y"]["x"]["values"] == [[2, 0], [0, 4]]


@pytest.mark.parametrize("name", ["float32_inside", "half_precision"])
def test_functions_computing_in_lower_precision_are_not_refused(jaccli, name: str) -> None:
    run = jaccli("jacobian", "--fn", fn(name), "--shape", "x=50x3", "--dtype", "float64", "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["guard"]["passed"] is True
    x = torch.tensor(values_of(document["inputs"]["x"]))
    expected = torch.autograd.functional.jacobian(getattr(realworld, name), x).double().numpy()
    np.testing.assert_allclose(values_of(document["jacobian"]["y"]["x"]), expected, rtol=1e-2)


def test_integers_differentiated_by_default_get_a_way_out_when_the_function_fails(jaccli) -> None:
    run = jaccli("jacobian", "--fn", fn("cross_entropy"), "--shape", "logits=2x4", "--value",
                 "targets=[1, 3]")  # fmt: skip
    assert run.exit_code == 1
    assert run.stderr.rstrip().endswith(
        "targets was given as integers but is differentiated (so floating): to pass it as "
        "int64, differentiate the others only, as in --wrt logits"
    )


def test_batched_with_several_outputs_is_a_usage_error(jaccli) -> None:
    run = jaccli("jacobian", "--fn", fn("dict_of_tuples"), "--shape", "3", "--batched")
    assert run.exit_code == 2
    assert run.stderr == (
        "jacobian: --batched needs a single output; dict_of_tuples returns loss, aux.0, aux.1"
        " (pick one with --output loss)\n"
    )


def test_a_string_among_the_outputs_is_refused_naming_it(jaccli) -> None:
    run = jaccli("jacobian", "--fn", fn("with_a_string"), "--shape", "3")
    assert run.exit_code == 1
    assert "with_a_string returned str at y1; expected a floating tensor" in run.stderr
