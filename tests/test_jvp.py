"""`jaccli jvp`: J·v against closed-form Jacobians, torch.func.jvp and the real-world functions'
Jacobians, the fallback where forward mode cannot see the function, and bad tangents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jaccli.engine import prepare, run_jvp
from jaccli.functions import PRESETS
from jaccli.spec import parse_shape_option
from tests.conftest import values_of
from tests.test_presets_math import CLOSED_FORMS
from tests.test_realworld import CASES, fn, realworld, reference_jacobians

USERFNS = "tests/fixtures/userfns.py"


def _contract(j: np.ndarray, v: np.ndarray) -> np.ndarray:
    """J·v: J's trailing input axes contracted with v."""
    return np.tensordot(j, v, axes=v.ndim)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_jvp_is_the_closed_form_jacobian_times_v(name: str) -> None:
    shapes, closed_form = CLOSED_FORMS[name]
    problem = prepare(
        PRESETS[name], shape_options=[parse_shape_option(s) for s in shapes], dtype="float64"
    )
    result = run_jvp(problem, "randn", check=True)
    jacobians = closed_form({k: t.numpy() for k, t in problem.inputs.items()})
    expected = sum(_contract(jacobians[w], result.tangents[w]) for w in problem.wrt)
    np.testing.assert_allclose(result.jvps["y"], expected, rtol=1e-12, atol=1e-12)
    assert result.method == "forward mode"
    assert result.guard.passed is True
    assert result.check.passed


def test_jvp_of_two_inputs_sums_as_torch_func_jvp_does(jaccli) -> None:
    run = jaccli("jvp", "--fn", "matmul", "--tangent", "randn", "--dtype", "float64", "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    a, b = (torch.tensor(values_of(document["inputs"][n])) for n in "ab")
    va, vb = (torch.tensor(values_of(document["tangent"][n])) for n in "ab")
    _, expected = torch.func.jvp(torch.matmul, (a, b), (va, vb))
    np.testing.assert_allclose(values_of(document["jvp"]["y"]), expected.numpy(), rtol=1e-12)
    assert document["method"] == "forward mode"


def test_a_tangent_for_each_input_is_given_by_name(jaccli) -> None:
    run = jaccli("jvp", "--fn", "matmul", "--shape", "a=1x2", "--shape", "b=2x1", "--tangent",
                 '{"a": [[1, 0]], "b": [[0], [0]]}', "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    b = values_of(document["inputs"]["b"])
    # ∂(a @ b)[0,0]/∂a[0,0] = b[0,0]
    assert values_of(document["jvp"]["y"])[0, 0] == pytest.approx(b[0, 0], rel=1e-12)


@pytest.mark.parametrize(("name", "args"), CASES, ids=[c[0] for c in CASES])
def test_jvp_of_real_world_functions_is_their_jacobian_times_v(jaccli, name, args) -> None:
    run = jaccli("jvp", "--fn", fn(name), *args, "--tangent", "randn", "--dtype", "float64",
                 "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    inputs = {n: values_of(entry) for n, entry in document["inputs"].items()}
    expected = reference_jacobians(getattr(realworld, name), inputs, document["wrt"])
    tangents = {w: values_of(entry) for w, entry in document["tangent"].items()}
    rtol = 1e-6 if name == "mixed_dtypes" else 1e-10  # a float32 output
    for out, by_wrt in expected.items():
        product = sum(_contract(j, tangents[w]) for w, j in by_wrt.items())
        np.testing.assert_allclose(
            values_of(document["jvp"][out]), product, rtol=rtol, atol=1e-12, err_msg=out
        )
    assert document["guard"]["passed"] is True


def test_forward_mode_blind_to_a_custom_function_gives_way_to_reverse_over_reverse(
    jaccli,
) -> None:
    run = jaccli("jvp", "--fn", f"{USERFNS}:cube", "--shape", "x=3", "--tangent", "randn",
                 "--dtype", "float64", "--check", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x, v = values_of(document["inputs"]["x"]), values_of(document["tangent"]["x"])
    np.testing.assert_allclose(values_of(document["jvp"]["y"]), 3 * x**2 * v, rtol=1e-12)
    assert document["method"] == "reverse-over-reverse"
    assert document["guard"]["rejected"][0].startswith("forward mode failed")
    assert "computed J·v by reverse-over-reverse instead" in run.stderr
    assert document["check"]["passed"] is True


def test_check_compares_with_reverse_mode_and_a_difference_along_v(jaccli) -> None:
    run = jaccli("jvp", "--fn", "spherical", "--shape", "4x3", "--check", "--dtype", "float64")
    assert run.exit_code == 0, run.stderr
    assert "forward mode vs J·v" in run.stdout
    assert "a central difference along v (float64)" in run.stdout
    assert "∂y[" in run.stdout and "/ ∂v" in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fn", "polar", "--tangent", "[1, 2, 3]"],
         "--tangent has shape 3, but polar's input x has shape 2; give an array of x's shape"),
        (["--fn", "matmul", "--tangent", "[[1]]"],
         "--tangent as an array needs a single input; matmul has inputs a, b"),
        (["--fn", "matmul", "--tangent", '{"a": [[1]]}'],
         "--tangent names a; matmul's inputs are a, b: give an array for each"),
        (["--fn", "polar", "--tangent", "sideways"],
         "--tangent 'sideways' is not ones, randn or a JSON array of numbers"),
    ],
)  # fmt: skip
def test_a_bad_tangent_exits_2_in_one_line(jaccli, args, message) -> None:
    run = jaccli("jvp", *args, "--json")
    assert run.exit_code == 2
    assert message in run.stderr.splitlines()[0]
    assert run.stdout == ""


def test_jvp_writes_j_v_to_a_file(jaccli, tmp_path) -> None:
    path = tmp_path / "jv.npy"
    run = jaccli("jvp", "--fn", "expsum", "--out", str(path), "--json", "--dtype", "float64")
    assert run.exit_code == 0, run.stderr
    np.testing.assert_array_equal(np.load(path), values_of(run.json()["jvp"]["y"]))


def test_the_rows_view_rebuilds_j_v_row_by_row(jaccli) -> None:
    run = jaccli("jvp", "--fn", "matmul", "--wrt", "a", "--tangent", "randn", "--view", "rows",
                 "--dtype", "float64", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    b = values_of(document["inputs"]["b"])
    v = values_of(document["tangent"]["a"])
    view = document["view"]
    assert view["name"] == "rows" and view["agrees"] is True
    for i, row in enumerate(view["slices"]):
        # row i of a @ b moves along v[i] by v[i] @ b: J_i·v[i]
        np.testing.assert_allclose(values_of(row["tangent"]), v[i])
        np.testing.assert_allclose(values_of(row["product"]), v[i] @ b, rtol=1e-12)
        np.testing.assert_allclose(values_of(row["full"]), values_of(document["jvp"]["y"])[i])
    assert "J_i·v[i]" in jaccli("jvp", "--fn", "matmul", "--wrt", "a").stdout


def test_jvp_of_a_preset_is_probed_through_forward_modes_own_call() -> None:
    from tests.test_hessian import _counted

    function, calls = _counted(lambda a, b: a.exp() * b.sin())
    problem = prepare(function, shape_options=[("a", (4,)), ("b", (4,))], dtype="float64")
    calls.clear()  # prepare's call for y's shape
    result = run_jvp(problem, "randn")
    assert len(calls) == 1 and result.guard.passed is True
    a, b = (problem.inputs[n] for n in "ab")
    v = {n: torch.from_numpy(t) for n, t in result.tangents.items()}
    expected = a.exp() * b.sin() * v["a"] + a.exp() * b.cos() * v["b"]
    np.testing.assert_allclose(result.jvps["y"], expected.numpy(), rtol=1e-12)
    notes = run_jvp(
        prepare(_counted(lambda a, b: a * 2)[0], shape_options=[("a", (4,)), ("b", (4,))]), "ones"
    ).notes
    assert notes == ("output y does not depend on input b: its Jacobian is zero",)


def test_a_wrong_forward_mode_jvp_fails_the_guard_through_its_own_graph(monkeypatch) -> None:
    from jaccli.engine import jvp as jvp_module

    real = jvp_module.forward_jvp

    def one_entry_off(f, primals, tangents):
        y, j_v = real(f, primals, tangents)
        wrong = j_v.clone()
        wrong[3] += 0.05 * max(1.0, float(torch.linalg.vector_norm(wrong)))
        return y, wrong

    monkeypatch.setitem(jvp_module.METHODS, jvp_module.FORWARD, one_entry_off)
    problem = prepare(PRESETS["softmax"], shape_options=[("x", (300,))])
    result = run_jvp(problem, "randn")
    assert result.method == jvp_module.DOUBLE_BACKWARD
    assert "forward mode failed the correctness guard" in result.method_reason
    _, expected = torch.func.jvp(
        PRESETS["softmax"].call, (problem.inputs["x"],), (torch.from_numpy(result.tangents["x"]),)
    )
    np.testing.assert_allclose(result.jvps["y"], expected.numpy(), rtol=1e-5, atol=1e-7)
