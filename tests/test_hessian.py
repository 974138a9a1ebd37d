"""`jaccli hessian` and `jaccli hvp`: second derivatives against closed forms, torch.func and
torch.autograd.functional, under every strategy, and the memory guard on a quadratic H."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from jaccli.engine import Strategy, prepare, run_hessian, run_hvp
from jaccli.functions import PRESETS, resolve
from jaccli.spec import parse_shape_option
from tests.conftest import jaccli_command, measure, values_of
from tests.test_realworld import fn, realworld

STRATEGIES = list(Strategy)


def _problem(function, *shapes: str, seed: int = 2):
    return prepare(
        function,
        shape_options=[parse_shape_option(s) for s in shapes],
        dtype="float64",
        seed=seed,
    )


def _expression(text: str, names: list[str]):
    return resolve(None, text, names)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hessian_of_logsumexp_is_diag_p_minus_p_p_transposed(strategy) -> None:
    problem = _problem(PRESETS["logsumexp"], "x=5")
    result = run_hessian(problem, strategy, check=True)
    x = problem.inputs["x"].numpy()
    p = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    np.testing.assert_allclose(
        result.hessians["y"]["x"]["x"], np.diag(p) - np.outer(p, p), rtol=1e-12, atol=1e-15
    )
    assert result.guard.passed is True
    assert result.check.passed
    assert result.symmetry_error <= 1e-15


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hessian_of_a_quadratic_form_is_a_plus_a_transposed(strategy) -> None:
    problem = _problem(_expression("dot(x, A @ x)", ["x", "A"]), "x=4", "A=4x4")
    result = run_hessian(problem, strategy)
    a = problem.inputs["A"].numpy()
    assert problem.wrt == ("x", "A")
    np.testing.assert_allclose(result.hessians["y"]["x"]["x"], a + a.T, rtol=1e-12)
    # ∂²(xᵀAx)/∂x_i∂A_kl = δ_ik x_l + x_k δ_il
    x = problem.inputs["x"].numpy()
    cross = np.einsum("ik,l->ikl", np.eye(4), x) + np.einsum("k,il->ikl", x, np.eye(4))
    np.testing.assert_allclose(result.hessians["y"]["x"]["A"], cross, rtol=1e-12)
    np.testing.assert_allclose(result.hessians["y"]["A"]["A"], 0, atol=0)


def test_hessian_across_two_inputs_has_every_pair() -> None:
    problem = _problem(_expression("(sin(x) * cos(y)).sum()", ["x", "y"]), "x=3", "y=3")
    result = run_hessian(problem, check=True)
    x, y = problem.inputs["x"].numpy(), problem.inputs["y"].numpy()
    (out,) = result.hessians
    h = result.hessians[out]
    np.testing.assert_allclose(h["x"]["x"], np.diag(-np.sin(x) * np.cos(y)), rtol=1e-12)
    np.testing.assert_allclose(h["y"]["y"], np.diag(-np.sin(x) * np.cos(y)), rtol=1e-12)
    np.testing.assert_allclose(h["x"]["y"], np.diag(-np.cos(x) * np.sin(y)), rtol=1e-12)
    np.testing.assert_allclose(h["y"]["x"], h["x"]["y"].T, rtol=1e-12)
    names = [c.name for c in result.check.comparisons]
    assert any("forward-over-reverse" in n and "reverse-over-reverse" in n for n in names)
    assert any("central differences of the gradient" in n for n in names)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_hessian_of_each_output_element_matches_torch_func(strategy) -> None:
    problem = _problem(PRESETS["polar"], "x=3x2")
    result = run_hessian(problem, strategy)
    h = result.hessians["y"]["x"]["x"]
    x = problem.inputs["x"]
    assert h.shape == (3, 2, 3, 2, 3, 2)  # y.shape + x.shape + x.shape
    expected = torch.func.hessian(PRESETS["polar"].call)(x)
    np.testing.assert_allclose(h, expected.numpy(), rtol=1e-12, atol=1e-15)


def test_hessian_of_a_user_function_that_takes_its_own_gradient(jaccli) -> None:
    """The Jacobian of a force is the Hessian of the energy; its Hessian is a third derivative."""
    run = jaccli("hessian", "--fn", fn("energy"), "--shape", "x=4", "--dtype", "float64",
                 "--check", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x = torch.tensor(values_of(document["inputs"]["x"]))
    expected = torch.autograd.functional.hessian(realworld.energy, x).numpy()
    np.testing.assert_allclose(values_of(document["hessian"]["y"]["x"]["x"]), expected, rtol=1e-12)
    assert document["check"]["passed"] is True
    assert document["symmetry_error"] == 0


@pytest.mark.parametrize("strategy", ["loop", "rev", "fwd"])
def test_hessian_by_every_strategy_matches_autograd_functional(jaccli, strategy) -> None:
    run = jaccli("hessian", "--fn", fn("rosenbrock"), "--shape", "x=4", "--dtype", "float64",
                 "--strategy", strategy, "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x = torch.tensor(values_of(document["inputs"]["x"]))
    expected = torch.autograd.functional.hessian(realworld.rosenbrock, x, vectorize=True)
    np.testing.assert_allclose(
        values_of(document["hessian"]["y"]["x"]["x"]), expected.numpy(), rtol=1e-12
    )
    assert document["strategy"] == {"loop": "loop-rev", "rev": "rev", "fwd": "fwd"}[strategy]


def test_the_table_shows_h_as_a_labelled_matrix(jaccli) -> None:
    run = jaccli("hessian", "--fn", "logsumexp", "--shape", "3")
    assert run.exit_code == 0, run.stderr
    assert "∂²y/∂x²  3×3" in run.stdout
    assert "x[0]" in run.stdout and "symmetry: max|H − Hᵀ|" in run.stdout


def test_the_memory_guard_refuses_a_hessian_that_cannot_fit(jaccli, tmp_path) -> None:
    run = jaccli("hessian", "--fn", "logsumexp", "--shape", "100000", "--max-memory", "1GiB")
    assert run.exit_code == 3
    assert "100000×100000 Hessian would need about" in run.stderr
    plan = jaccli("hessian", "--fn", "logsumexp", "--shape", "100000", "--plan", "--json")
    assert plan.exit_code == 3
    assert plan.json()["plan"]["result_bytes"] == 100000 * 100000 * 4


def test_hessian_writes_its_blocks(jaccli, tmp_path) -> None:
    from safetensors.numpy import load_file

    path = tmp_path / "h.safetensors"
    run = jaccli("hessian", "--expr", "(x * y).sum()", "--shape", "x=2", "--shape", "y=2",
                 "--out", str(path))  # fmt: skip
    assert run.exit_code == 0, run.stderr
    arrays = load_file(path)
    assert set(arrays) == {"x/x", "x/y", "y/x", "y/y"}
    np.testing.assert_array_equal(arrays["x/y"], np.eye(2))


@pytest.mark.parametrize("vector", ["ones", "randn"])
def test_hvp_is_the_hessian_times_v(vector) -> None:
    problem = _problem(PRESETS["logsumexp"], "x=6")
    result = run_hvp(problem, vector, check=True)
    h = run_hessian(problem).hessians["y"]["x"]["x"]
    np.testing.assert_allclose(result.hvps["x"], h @ result.vectors["x"], rtol=1e-12, atol=1e-15)
    x = problem.inputs["x"]
    _, expected = torch.autograd.functional.hvp(
        PRESETS["logsumexp"].call, x, torch.from_numpy(result.vectors["x"])
    )
    np.testing.assert_allclose(result.hvps["x"], expected.numpy(), rtol=1e-12, atol=1e-15)
    assert result.method == "forward-over-reverse"
    assert result.guard.passed is True and result.check.passed


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("vector", ["ones", "randn"])
def test_a_wrong_hvp_is_refused_by_the_guard_even_where_h_v_cancels(
    monkeypatch, vector: str, dtype: str
) -> None:
    # H·1 of logsumexp is 0: its probe u·(H v) is rounding alone, against (H u)·v by
    # reverse-over-reverse, whose terms are of H's order
    from jaccli.engine import hessian as hessian_module
    from jaccli.errors import ComputationError

    real = hessian_module.hvp_forward_over_reverse

    def one_entry_off(f, primals, vectors):
        y, products = real(f, primals, vectors)
        wrong = products[0].clone()
        wrong[7] += 0.05 * max(1.0, float(torch.linalg.vector_norm(wrong)))
        return y, [wrong]

    def ten_percent_too_much(f, primals, vectors):
        y, products = real(f, primals, vectors)
        return y, [products[0] * 1.1]

    problem = prepare(PRESETS["logsumexp"], shape_options=[("x", (300,))], dtype=dtype)
    assert run_hvp(problem, vector).guard.passed is True
    wrong_ones = [one_entry_off] + ([ten_percent_too_much] if vector == "randn" else [])
    for wrong in wrong_ones:
        methods = {**hessian_module.HVP_METHODS, "forward-over-reverse": wrong}
        monkeypatch.setattr(hessian_module, "HVP_METHODS", methods)
        with pytest.raises(ComputationError, match="failed the correctness guard"):
            run_hvp(problem, vector)
        monkeypatch.undo()


def test_hvp_of_two_inputs_sums_over_the_second_input() -> None:
    problem = _problem(_expression("(sin(x) * cos(y)).sum()", ["x", "y"]), "x=3", "y=3")
    result = run_hvp(problem, "randn")
    h = run_hessian(problem).hessians
    (out,) = h
    v = result.vectors
    for a in "xy":
        expected = sum(h[out][a][b] @ v[b] for b in "xy")
        np.testing.assert_allclose(result.hvps[a], expected, rtol=1e-12, atol=1e-15)


def test_hvp_runs_where_h_would_not_fit(tmp_path) -> None:
    """n = 10⁶: H would take 8 TB in float64; H·v takes memory of the order of n."""
    x = np.random.default_rng(0).standard_normal(10**6)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "hv.npy"
    expression = ["hvp", "--expr", "(x.sin() * x).sum()", "--dtype", "float64"]
    small = measure([*jaccli_command(), *expression, "--shape", "10"])
    big = measure([*jaccli_command(), *expression, "--value", f"x=@{tmp_path / 'x.npy'}",
                   "--out", str(out), "--max-memory", "1GiB"])  # fmt: skip
    assert big.returncode == 0, big.stderr
    assert small.returncode == 0, small.stderr
    # f = Σ x sin x: H = diag(2 cos x − x sin x), so H·1 = 2 cos x − x sin x
    np.testing.assert_allclose(np.load(out), 2 * np.cos(x) - x * np.sin(x), rtol=1e-10)
    vector_kib = 8 * 10**6 // 1024  # one float64 vector of 10⁶ numbers
    assert big.peak_kib < small.peak_kib + 32 * vector_kib, (big.peak_kib, small.peak_kib)


def test_hvp_of_a_vector_output_is_refused(jaccli) -> None:
    run = jaccli("hvp", "--fn", "polar")
    assert run.exit_code == 2
    assert "hvp needs a scalar output; polar returns y 2" in run.stderr


def _counted(call, name: str = "counted"):
    """A function of a and b that is neither a user's nor watched for kinks, with a count of
    its calls."""
    from jaccli.functions.model import Function, InputSpec

    calls = []

    def counting(a, b):
        calls.append(1)
        return call(a, b)

    inputs = (InputSpec("a", (4,)), InputSpec("b", (4,)))
    return Function(name, "y = f(a, b)", inputs, counting, kink_free=True), calls


def test_hvp_of_a_preset_is_probed_through_its_own_gradient_graph() -> None:
    # NOTE [the probe of H·v runs through the gradient's graph]: one call of f in all
    function, calls = _counted(lambda a, b: (a.exp() * b.sin()).sum())
    problem = _problem(function, "a=4", "b=4")
    calls.clear()  # prepare's call for y's shape
    result = run_hvp(problem, "randn")
    assert len(calls) == 1 and result.guard.passed is True
    h = run_hessian(problem).hessians["y"]
    for a in "ab":
        expected = sum(h[a][b] @ result.vectors[b] for b in "ab")
        np.testing.assert_allclose(result.hvps[a], expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    ("point", "dtype"),
    [("[40, 1]", "float64"), ("[100, 1, -50]", "float64"), ("[30, 1, -50]", "float32")],
)
def test_hvp_of_logsumexp_at_spread_inputs_is_not_refused(jaccli, point, dtype) -> None:
    # NOTE [a reference that cancels]: (H u)ᵀv rounds at 1e-16 where H's entries are 1e-17,
    # and H·1 = 0 (exact by forward-over-reverse) was refused against it
    run = jaccli("hvp", "--fn", "logsumexp", "--value", f"x={point}", "--dtype", dtype, "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x = np.array(json.loads(point), dtype=np.float64)
    p = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    h = np.diag(p) - np.outer(p, p)  # H·1 = p − p·Σp = 0
    np.testing.assert_allclose(values_of(document["hvp"]["x"]), h @ np.ones_like(x), atol=1e-15)
    assert document["guard"]["passed"] is True


def test_hvp_past_an_overflowing_gradient_keeps_its_finite_value(jaccli) -> None:
    # NOTE [a dual seed with real zeros]: the seed's real 0 met the overflowed 3x² (0·∞ = NaN),
    # and the guard refused an H·v that is finite
    run = jaccli("hvp", "--expr", "(x**3).sum()", "--value", "x=[1e20, 2.0]", "--vector",
                 "[1, -1]", "--json")  # fmt: skip
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x = np.array([1e20, 2.0], dtype=np.float32).astype(np.float64)
    np.testing.assert_allclose(values_of(document["hvp"]["x"]), 6 * x * [1, -1], rtol=1e-6)
    assert document["guard"]["passed"] is True
    assert document["warnings"] == ["output y is not finite (infinite)"]


@pytest.mark.parametrize(
    ("call", "note"),
    [
        (lambda a, b: (a**2).sum(), "output y does not depend on input b: its Jacobian is zero"),
        (
            lambda a, b: (a**2).sum() + b.round().sum(),
            "output y depends on input b only through piecewise-constant operations (round)",
        ),
    ],
)
def test_hvp_warnings_come_from_forward_modes_own_call(call, note) -> None:
    function, calls = _counted(call)
    problem = _problem(function, "a=4", "b=4")
    calls.clear()  # prepare's call for y's shape
    result = run_hvp(problem, "ones")
    assert len(calls) == 1
    assert any(n.startswith(note) for n in result.notes), result.notes
    assert not any("input a" in n for n in result.notes)
