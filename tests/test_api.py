"""The Python API on the CLI's runner: the same documents, tables, refusals, guard and limits."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from typing import Any

import numpy as np
import pytest
from rich.console import Console

import jaccli
from jaccli import memory
from jaccli.render.document import dumps
from tests.conftest import validate_document
from tests.fixtures.userfns import ignores_b, polar_pair

USERFNS = "tests/fixtures/userfns.py"
POINTS = np.array([[1.0, 0.5], [2.0, 0.1], [0.5, -1.0]], dtype=np.float32)

# (CLI arguments, the API function, its arguments): the same run both ways.
SAME_RUNS: list[tuple[list[str], Any, tuple[Any, ...], dict[str, Any]]] = [
    (["jacobian", "--fn", "expsum", "--shape", "2x3"], jaccli.jacobian, ("expsum",),
     {"shape": (2, 3)}),
    (["jacobian", "--expr", "x.sin() * a", "--value", "x=[1, 2, 3]", "--value", "a=[4, 5, 6]",
      "--wrt", "x", "--strategy", "fwd"], jaccli.jacobian, ("x.sin() * a",),
     {"x": [1, 2, 3], "a": np.array([4, 5, 6]), "wrt": "x", "strategy": "fwd"}),
    (["jacobian", "--fn", "matmul", "--wrt", "a", "--view", "rows", "--check"], jaccli.jacobian,
     ("matmul",), {"wrt": ["a"], "view": "rows", "check": True}),
    (["jacobian", "--fn", "planar_flow", "--shape", "x=6x4", "--view", "sparsity"],
     jaccli.jacobian, ("planar_flow",), {"shape": {"x": (6, 4)}, "view": "sparsity"}),
    (["jacobian", "--fn", f"{USERFNS}:polar_pair", "--shape", "r=3", "--shape", "theta=3"],
     jaccli.jacobian, (polar_pair,), {"shape": {"r": 3, "theta": "3"}}),
    (["jacobian", "--fn", "expsum", "--shape", "200x300", "--plan", "--max-memory", "1GiB"],
     jaccli.jacobian, ("expsum",), {"shape": "200x300", "plan": True, "max_memory": 2**30}),
    (["jacobian", "--fn", "polar", "--points", "x=@POINTS"], jaccli.jacobian, ("polar",),
     {"points": {"x": POINTS}}),
    (["det", "--fn", "spherical", "--value", "x=[2, 0.5, 1]", "--dtype", "float64"], jaccli.det,
     ("spherical",), {"x": [2, 0.5, 1], "dtype": "float64"}),
    (["det", "--fn", "planar_flow", "--shape", "x=8x3", "--batched"], jaccli.det,
     ("planar_flow",), {"shape": (8, 3), "batched": True}),
    (["vjp", "--fn", "matmul", "--cotangent", "[[1, 0], [0, 0]]", "--check"], jaccli.vjp,
     ("matmul",), {"cotangent": [[1, 0], [0, 0]], "check": True}),
    (["jvp", "--fn", "polar", "--value", "x=[2, 0.5]", "--tangent", "[0, 1]", "--dtype",
      "float64"], jaccli.jvp, ("polar",), {"x": [2, 0.5], "tangent": [0, 1], "dtype": "float64"}),
    (["hessian", "--fn", "logsumexp", "--shape", "3", "--check"], jaccli.hessian,
     ("logsumexp",), {"shape": 3, "check": True}),
    (["hvp", "--expr", "(x.sin() * x).sum()", "--shape", "5", "--vector", "randn"], jaccli.hvp,
     ("(x.sin() * x).sum()",), {"shape": (5,), "vector": "randn"}),
    (["check", "--fn", "expsum", "--rtol", "1e-3"], jaccli.check, ("expsum",), {"rtol": 1e-3}),
    (["check", "--fn", "polar", "--points", "x=@POINTS"], jaccli.check, ("polar",),
     {"points": {"x": POINTS}}),
]  # fmt: skip


def _cli_args(args: list[str], tmp_path: Any) -> list[str]:
    """The arguments with @POINTS the file of POINTS."""
    np.save(tmp_path / "points.npy", POINTS)
    return [arg.replace("@POINTS", f"@{tmp_path / 'points.npy'}") for arg in args]


@pytest.mark.parametrize(("args", "function", "positional", "keywords"), SAME_RUNS)
def test_the_api_and_the_cli_give_the_same_document(
    jaccli_cli, tmp_path, args, function, positional, keywords
) -> None:
    run = jaccli_cli(*_cli_args(args, tmp_path), "--json")
    assert run.exit_code == 0, run.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jaccli.JaccliWarning)
        document = function(*positional, **keywords).document()
    validate_document(document)
    assert json.loads(dumps(document)) == run.json()


@pytest.mark.parametrize(
    "index", [0, 3, 7, 9, 11, 13], ids=["jacobian", "sparsity", "det", "vjp", "hessian", "check"]
)
def test_the_api_draws_the_same_tables_as_the_cli(jaccli_cli, tmp_path, index: int) -> None:
    args, function, positional, keywords = SAME_RUNS[index]
    run = jaccli_cli(*_cli_args(args, tmp_path), width=100)
    assert run.exit_code == 0, run.stderr
    result = function(*positional, **keywords)
    console = Console(
        width=100, file=io.StringIO(), color_system=None, highlight=False, soft_wrap=False
    )
    console.print(result)
    assert console.file.getvalue() == run.stdout  # type: ignore[attr-defined]


def test_jupyter_shows_the_tables(jaccli_cli) -> None:
    bundle = jaccli.jacobian("polar", x=[2.0, 0.5])._repr_mimebundle_(include=[], exclude=[])
    assert "∂y[0] / ∂x" in bundle["text/plain"] or "∂y/∂x" in bundle["text/plain"]
    assert "polar" in bundle["text/html"]


def test_the_arrays_are_the_documents_numbers() -> None:
    x = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    result = jaccli.jacobian(lambda x: x.exp().sum(dim=1), x=x, dtype="float64")
    j = result.array
    assert j.shape == (2, 2, 3)
    np.testing.assert_allclose(j[1, 1], np.exp(x[1]), rtol=1e-12)  # the closed form
    np.testing.assert_array_equal(j[0, 1], 0.0)
    assert result.arrays["jacobian"]["y"]["x"] is j
    np.testing.assert_array_equal(result.arrays["inputs"]["x"], x)
    document = result.document()
    np.testing.assert_array_equal(np.array(document["jacobian"]["y"]["x"]["values"]), j)


def test_a_function_that_hides_its_derivative_is_refused_as_by_the_cli() -> None:
    from tests.wrong_derivative import SquareWithWrongBackward

    def square(x: Any) -> Any:
        return SquareWithWrongBackward.apply(x)

    with pytest.raises(jaccli.ComputationError, match="central differences"):
        jaccli.jacobian(square, x=[1.0, 2.0, 3.0], dtype="float64")


def test_the_memory_budget_refuses_and_is_lifted_after_the_call() -> None:
    with pytest.raises(jaccli.ResourceError, match="over the memory budget"):
        jaccli.jacobian("expsum", shape=(100_000, 100_000))
    assert not memory.holding()
    jaccli.jacobian("expsum", max_memory="512MiB")
    assert not memory.holding()


def test_refusals_are_the_clis(jaccli_cli) -> None:
    run = jaccli_cli("jacobian", "--fn", "expsum", "--view", "heatmap", "--batched")
    assert run.exit_code == 2
    with pytest.raises(jaccli.UsageError) as refused:
        jaccli.jacobian("expsum", view="heatmap", batched=True)
    assert run.stderr == f"jacobian: {refused.value.message}\n"


def test_an_option_of_another_command_is_not_taken_for_an_input() -> None:
    with pytest.raises(TypeError, match="vjp\\(\\) takes no option 'strategy'"):
        jaccli.vjp("matmul", strategy="fwd")


def test_an_input_named_like_an_option_is_given_by_value() -> None:
    result = jaccli.jacobian(lambda x, eps: x * eps, value={"x": [1.0, 2.0], "eps": [3.0, 4.0]})
    np.testing.assert_allclose(result.arrays["jacobian"]["y"]["eps"], np.diag([1.0, 2.0]))


def test_a_warning_of_the_cli_is_a_python_warning() -> None:
    with pytest.warns(jaccli.JaccliWarning, match="does not depend on input b"):
        result = jaccli.jacobian(ignores_b, shape={"a": 2, "b": 2})
    assert any("does not depend on input b" in note for note in result.notes)


def test_import_jaccli_is_cheap_and_the_api_never_imports_typer() -> None:
    code = (
        "import sys\n"
        "import jaccli\n"
        "loaded = {'torch', 'numpy', 'rich', 'typer'} & set(sys.modules)\n"
        "print(sorted(loaded))\n"
        "jaccli.jacobian('expsum', shape=(2, 3)).document()\n"
        "print('torch' in sys.modules, 'typer' in sys.modules, 'click' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.splitlines() == ["[]", "True False False"]


@pytest.fixture
def jaccli_cli(jaccli):  # type: ignore[no-untyped-def]
    """The CLI in this process (conftest's `jaccli` fixture, renamed beside the package)."""
    return jaccli


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_memory": -5}, "bad memory size -5"),  # was a ResourceError of a "-5 B" budget
        ({"max_memory": 0}, "bad memory size 0"),
        ({"max_memory": True}, "bad memory size True"),  # was a budget of 1 B
        ({"max_memory": 0.5}, "bad memory size 0.5"),  # was a TypeError
        ({"max_value_size": -1}, "bad memory size -1"),
        ({"sparsity": 5}, "--sparsity: expected the path of a .npz or .mtx file, not int"),
        ({"sparsity": np.eye(3)}, "expected the path of a .npz or .mtx file, not ndarray"),
    ],
)
def test_hostile_option_values_raise_usage_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(jaccli.UsageError, match=message):
        jaccli.jacobian(lambda x: x * 2, x=np.ones(3), **options)
