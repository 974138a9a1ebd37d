"""Every preset's Jacobian and VJP against its closed form in float64, computed independently
with numpy, and against torch.autograd.functional.jacobian and central finite differences."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from jaccli.engine import Strategy, compute_jacobian, compute_vjp, prepare
from jaccli.functions import PRESETS
from tests.conftest import finite_difference_jacobian


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _skew(u: np.ndarray) -> np.ndarray:
    """The matrix [u]× with [u]× v = u × v."""
    return np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])


def _per_row(
    block: Callable[[np.ndarray], np.ndarray], x: np.ndarray, out_per_row: tuple
) -> np.ndarray:
    """J block-diagonal over the leading axis of a 2-D x: J[r, ..., r, :] = block(x[r])."""
    rows = x.shape[0]
    j = np.zeros((rows, *out_per_row, *x.shape))
    for r in range(rows):
        j[(r,) + (slice(None),) * len(out_per_row) + (r,)] = block(x[r])
    return j


def _spherical_block(x: np.ndarray) -> np.ndarray:
    """∂(r sinθ cosφ, r sinθ sinφ, r cosθ)/∂(r, θ, φ)."""
    r, t, p = x
    return np.array(
        [
            [np.sin(t) * np.cos(p), r * np.cos(t) * np.cos(p), -r * np.sin(t) * np.sin(p)],
            [np.sin(t) * np.sin(p), r * np.cos(t) * np.sin(p), r * np.sin(t) * np.cos(p)],
            [np.cos(t), -r * np.sin(t), 0.0],
        ]
    )


def _cylindrical_block(x: np.ndarray) -> np.ndarray:
    """∂(r cosθ, r sinθ, z)/∂(r, θ, z)."""
    r, t, _ = x
    return np.array(
        [[np.cos(t), -r * np.sin(t), 0.0], [np.sin(t), r * np.cos(t), 0.0], [0.0, 0.0, 1.0]]
    )


def _planar_block(x: np.ndarray, v: dict[str, np.ndarray]) -> np.ndarray:
    """∂(x + u tanh(wᵀx + b))/∂x = I + (1 − tanh²(wᵀx + b)) u wᵀ."""
    slope = 1 - np.tanh(v["w"] @ x + v["b"]) ** 2
    return np.eye(len(x)) + slope * np.outer(v["u"], v["w"])


# name -> (shapes, closed form of {wrt: J} from the float64 inputs)
CLOSED_FORMS: dict[
    str, tuple[list[str], Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]]
] = {
    "expsum": (
        ["x=3x4"],
        lambda v: {"x": _per_row(lambda row: np.exp(row), v["x"], ())},
    ),
    "add": (["x=2x3"], lambda v: {"x": np.eye(6).reshape(2, 3, 2, 3)}),
    "matmul": (
        ["a=2x3", "b=3x4"],
        lambda v: {
            # ∂(ab)[i,j]/∂a[k,l] = δik b[l,j];  ∂(ab)[i,j]/∂b[k,l] = a[i,k] δjl
            "a": np.einsum("ik,lj->ijkl", np.eye(2), v["b"]),
            "b": np.einsum("ik,jl->ijkl", v["a"], np.eye(4)),
        },
    ),
    "sigmoid": (
        ["x=4"],
        lambda v: {"x": np.diag((s := 1 / (1 + np.exp(-v["x"]))) * (1 - s))},
    ),
    "softmax": (
        ["x=2x3"],
        lambda v: {
            "x": _per_row(
                lambda row: np.diag(_softmax(row)) - np.outer(_softmax(row), _softmax(row)),
                v["x"],
                (3,),
            )
        },
    ),
    "tanh_linear": (
        ["x=3", "W=5x3"],
        lambda v: {"x": (1 - np.tanh(v["W"] @ v["x"]) ** 2)[:, None] * v["W"]},
    ),
    "logsumexp": (["x=2x4"], lambda v: {"x": _per_row(_softmax, v["x"], ())}),
    "norm": (["x=5"], lambda v: {"x": v["x"] / np.linalg.norm(v["x"])}),
    "polar": (
        ["x=2"],
        lambda v: {
            "x": np.array(
                [
                    [np.cos(v["x"][1]), -v["x"][0] * np.sin(v["x"][1])],
                    [np.sin(v["x"][1]), v["x"][0] * np.cos(v["x"][1])],
                ]
            )
        },
    ),
    "spherical": (["x=2x3"], lambda v: {"x": _per_row(_spherical_block, v["x"], (3,))}),
    "cylindrical": (["x=3"], lambda v: {"x": _cylindrical_block(v["x"])}),
    "affine": (["x=2x4"], lambda v: {"x": _per_row(lambda _: v["A"], v["x"], (4,))}),
    "planar_flow": (
        ["x=3x4"],
        lambda v: {"x": _per_row(lambda row: _planar_block(row, v), v["x"], (4,))},
    ),
    "cross": (["a=3", "b=3"], lambda v: {"a": -_skew(v["b"]), "b": _skew(v["a"])}),
}


def test_every_preset_has_a_closed_form_test() -> None:
    assert set(CLOSED_FORMS) == set(PRESETS)


def _problem(name: str, seed: int = 3):
    from jaccli.spec import parse_shape_option

    shapes, _ = CLOSED_FORMS[name]
    return prepare(
        PRESETS[name],
        shape_options=[parse_shape_option(s) for s in shapes],
        seed=seed,
        dtype="float64",
    )


@pytest.mark.parametrize("strategy", [Strategy.LOOP, Strategy.REV, Strategy.FWD, Strategy.AUTO])
@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_jacobian_matches_closed_form(name: str, strategy: Strategy) -> None:
    problem = _problem(name)
    values = {k: t.numpy() for k, t in problem.inputs.items()}
    expected = CLOSED_FORMS[name][1](values)
    result = compute_jacobian(problem, strategy)
    assert set(result.jacobians["y"]) == set(expected)
    for wrt, j in result.jacobians["y"].items():
        # the shape convention: J.shape == y.shape + x.shape
        assert j.shape == result.evaluation.outputs["y"].shape + values[wrt].shape
        np.testing.assert_allclose(j, expected[wrt], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_jacobian_matches_autograd_functional_and_finite_differences(name: str) -> None:
    problem = _problem(name, seed=11)
    result = compute_jacobian(problem)
    for wrt, j in result.jacobians["y"].items():

        def f_of(t: torch.Tensor, wrt: str = wrt) -> torch.Tensor:
            return PRESETS[name].call(**{**problem.inputs, wrt: t})

        reference = torch.autograd.functional.jacobian(f_of, problem.inputs[wrt]).numpy()
        np.testing.assert_allclose(j, reference, rtol=1e-12, atol=1e-12)
        numeric = finite_difference_jacobian(
            lambda x: f_of(torch.from_numpy(x)).numpy(), problem.inputs[wrt].numpy()
        )
        np.testing.assert_allclose(j, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
def test_vjp_equals_cotangent_times_closed_form_jacobian(name: str) -> None:
    problem = _problem(name)
    values = {k: t.numpy() for k, t in problem.inputs.items()}
    expected = CLOSED_FORMS[name][1](values)
    result = compute_vjp(problem, "randn")
    v = result.cotangents["y"]
    assert v.shape == result.evaluation.outputs["y"].shape
    for wrt, vjp in result.vjps.items():
        j = expected[wrt]
        # vᵀ·J contracts v over y's axes
        contracted = np.tensordot(v, j, axes=v.ndim)
        np.testing.assert_allclose(vjp, contracted, rtol=1e-12, atol=1e-12)


def test_lesson_expsum_is_block_diagonal_with_exp_blocks() -> None:
    problem = prepare(PRESETS["expsum"], dtype="float64")
    x = problem.inputs["x"].numpy()
    j = compute_jacobian(problem).jacobians["y"]["x"]
    assert j.shape == (2, 2, 3)
    for i in range(2):
        for k in range(2):
            if i != k:
                assert not j[i, k].any()
        np.testing.assert_allclose(j[i, i], np.exp(x[i]), rtol=1e-14)


def test_lesson_add_vjp_with_ones_is_all_ones() -> None:
    result = compute_vjp(prepare(PRESETS["add"], dtype="float64"), "ones")
    np.testing.assert_array_equal(result.vjps["x"], np.ones(3))
    assert "a" not in result.vjps


def test_lesson_matmul_vjps_are_ones_times_b_transposed_and_a_transposed_times_ones() -> None:
    problem = prepare(PRESETS["matmul"], dtype="float64")
    a, b = problem.inputs["a"].numpy(), problem.inputs["b"].numpy()
    result = compute_vjp(problem, "ones")
    ones = np.ones((2, 2))
    np.testing.assert_allclose(result.vjps["a"], ones @ b.T, rtol=1e-14)
    np.testing.assert_allclose(result.vjps["b"], a.T @ ones, rtol=1e-14)


def test_every_preset_carries_its_jacobian_formula_and_the_test_that_evaluates_it() -> None:
    """Each preset's `jacobian_formula` (shown under its formula and in `presets`) is the one
    CLOSED_FORMS evaluates numerically against the computed J in the tests above."""
    for name, function in PRESETS.items():
        assert function.jacobian_formula.startswith("∂y"), name
        assert max(len(line) for line in function.jacobian_formula.splitlines()) <= 42, name
    assert set(CLOSED_FORMS) == {n for n, f in PRESETS.items() if f.jacobian_formula}


def test_the_jacobian_formula_is_shown_under_the_formula_and_in_presets(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum")
    assert run.stdout.splitlines()[1] == "J: ∂y[i]/∂x[k,j] = δ_ik exp(x[i,j])"
    listed = jaccli("presets", "--json").json()["presets"]
    formulas = {entry["name"]: entry["jacobian_formula"] for entry in listed}
    assert formulas["matmul"] == "∂y[i,j]/∂a[k,l] = δ_ik b[l,j] ∂y[i,j]/∂b[k,l] = a[i,k] δ_jl"
    assert "δ_ik exp(x[i,j])" in " ".join(jaccli("presets", width=120).stdout.split())


@pytest.mark.parametrize("width", [60, 80, 120])
def test_presets_table_breaks_no_formula_at_60_80_or_120_columns(jaccli, width: int) -> None:
    run = jaccli("presets", width=width)
    lines = [line.strip() for line in run.stdout.splitlines()]
    for function in PRESETS.values():
        for designed in [function.formula, *function.jacobian_formula.splitlines()]:
            assert any(designed.strip() in line for line in lines), designed
