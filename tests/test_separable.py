"""Separable axes of your own functions: --batch-axis, verified before it is trusted, and the
axes an expression's syntax tree shows."""

from __future__ import annotations

import numpy as np
import pytest

from jaccli.functions.expression import compile_expression
from tests.conftest import values_of

BATCHING = "tests/fixtures/batching.py"


@pytest.mark.parametrize(
    ("text", "shapes", "axes"),
    [
        ("sin(x)", {"x": (3, 4)}, {"x": ((0, 0), (1, 1))}),
        ("x.exp().sum(dim=1)", {"x": (2, 3)}, {"x": ((0, 0),)}),
        ("x.sum(dim=0, keepdim=True)", {"x": (2, 3)}, {"x": ((1, 1),)}),
        ("softmax(x, dim=-1)", {"x": (3, 4)}, {"x": ((0, 0),)}),
        ("x - x.mean(dim=0)", {"x": (3, 4)}, {"x": ((1, 1),)}),
        ("a @ b", {"a": (2, 3), "b": (3, 4)}, {"a": ((0, 0),), "b": ((1, 1),)}),
        ("W @ x", {"W": (2, 3), "x": (3,)}, {"W": ((0, 0),)}),
        ("x @ x", {"x": (3, 3)}, {}),
        ("x * y", {"x": (3, 1), "y": (1, 4)}, {"x": ((0, 0),), "y": ((1, 1),)}),
        ("x * y", {"x": (3, 4), "y": (4,)}, {"x": ((0, 0), (1, 1)), "y": ((0, 1),)}),
        ("(x * x).sum()", {"x": (3,)}, {}),
        ("x + x.sum()", {"x": (3,)}, {}),
        ("diag(x)", {"x": (3,)}, {}),
    ],
)
def test_an_expression_shows_its_separable_axes(text, shapes, axes) -> None:
    assert compile_expression(text).separable_axes(shapes) == axes


def test_an_elementwise_expression_has_a_rows_view(jaccli) -> None:
    run = jaccli("vjp", "--expr", "sin(x)", "--shape", "2x3", "--view", "rows", "--json",
                 "--dtype", "float64")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    view = run.json()["view"]
    assert view["name"] == "rows" and len(view["slices"]) == 2
    x = values_of(run.json()["inputs"]["x"])
    np.testing.assert_allclose(values_of(view["slices"][1]["jacobian"]), np.diag(np.cos(x[1])))


def test_a_declared_axis_gives_the_dense_j_diagonal_blocks(jaccli) -> None:
    args = ["--fn", f"{BATCHING}:per_sample", "--shape", "x=5x3", "--shape", "W=3x3", "--wrt",
            "x", "--dtype", "float64", "--json"]  # fmt: skip
    batched = jaccli("jacobian", *args, "--batch-axis", "x=0", "--batched")
    assert batched.exit_code == 0, batched.stderr
    dense = jaccli("jacobian", *args)
    j = values_of(dense.json()["jacobian"]["y"]["x"])
    blocks = values_of(batched.json()["jacobian"]["y"]["x"])
    assert blocks.shape == (5, 3, 3)
    for i in range(5):
        np.testing.assert_allclose(blocks[i], j[i, :, i, :], rtol=1e-12, atol=1e-15)
    assert batched.json()["layout"] == "per-sample"


@pytest.mark.parametrize("name", ["centred", "batch_normalized"])
def test_a_function_that_mixes_samples_is_refused(jaccli, name) -> None:
    run = jaccli("jacobian", "--fn", f"{BATCHING}:{name}", "--shape", "4x3", "--batch-axis",
                 "x=0", "--batched")  # fmt: skip
    assert run.exit_code == 1
    assert f"--batch-axis x=0: {name} mixes samples" in run.stderr
    assert run.stdout == ""


def test_mixing_that_spares_sample_0_is_caught_by_the_per_sample_guard(jaccli) -> None:
    run = jaccli("jacobian", "--fn", f"{BATCHING}:neighbour_leak", "--shape", "4x3",
                 "--batch-axis", "x=0", "--batched")  # fmt: skip
    assert run.exit_code == 1
    assert "failed the correctness guard" in run.stderr
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("axis", "message"),
    [
        ("x=2", "--batch-axis x=2: x has shape 4x3, with no axis 2"),
        ("x=1", "--batch-axis x=1: y has shape 4x2; its axis 1 must run along x's, of 3 samples"),
        ("z=0", "--batch-axis z=0: z is not an input to differentiate"),
        ("x=first", "bad --batch-axis 'x=first': 'first' is not an axis"),
    ],
)
def test_a_bad_batch_axis_exits_2(jaccli, axis, message) -> None:
    run = jaccli("jacobian", "--fn", f"{BATCHING}:per_sample", "--shape", "x=4x3", "--shape",
                 "W=3x2", "--wrt", "x", "--batch-axis", axis)  # fmt: skip
    assert run.exit_code == 2
    assert message in run.stderr


def test_per_sample_det_of_a_users_flow(jaccli) -> None:
    run = jaccli("det", "--fn", f"{BATCHING}:per_sample", "--shape", "x=6x3", "--shape",
                 "W=3x3", "--wrt", "x", "--batch-axis", "x=0", "--batched", "--dtype", "float64",
                 "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x, w = values_of(document["inputs"]["x"]), values_of(document["inputs"]["W"])
    # y_i = 2 tanh(x_i W): J_i = 2 diag(1 − tanh²(x_i W)) Wᵀ
    for i in range(6):
        j_i = 2 * np.diag(1 - np.tanh(x[i] @ w) ** 2) @ w.T
        sign, logabsdet = np.linalg.slogdet(j_i)
        assert document["det"]["logabsdet"]["values"][i] == pytest.approx(logabsdet, rel=1e-12)
        assert document["det"]["sign"]["values"][i] == sign
