"""The correctness guard: a method whose J disagrees with an independent product is caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jaccli.engine import Strategy, compute_jacobian, prepare
from jaccli.engine import jacobian as jacobian_module
from jaccli.engine.batched import compute_batched
from jaccli.engine.trust import probe_jacobians
from jaccli.errors import ComputationError
from jaccli.functions import PRESETS
from jaccli.functions.model import ELEMENTWISE, Function, InputSpec


def _perturbing(broken: set[str]):
    """A stand-in for jacobian_of whose methods in `broken` return J with one entry moved."""
    real = jacobian_module.jacobian_of

    def jacobian_of(f, primals, method, chunk_size=None, progress=None, **options):
        y, jacobians = real(f, primals, method, chunk_size, progress, **options)
        if method in broken:
            jacobians = [j.contiguous().clone() for j in jacobians]
            jacobians[0].view(-1)[1] += 0.01 * (1 + jacobians[0].abs().max())
        return y, jacobians

    return jacobian_of


def _problem(name: str = "tanh_linear", dtype: str = "float64"):
    return prepare(PRESETS[name], dtype=dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_wrong_method_falls_back_to_one_that_passes(monkeypatch, dtype: str) -> None:
    problem = _problem(dtype=dtype)
    planned = jacobian_module.plan_jacobian(problem).method
    monkeypatch.setattr(jacobian_module, "jacobian_of", _perturbing({planned}))
    result = compute_jacobian(problem)
    monkeypatch.undo()
    assert result.strategy == "loop-rev" != planned
    assert result.guard is not None and result.guard.passed is True
    assert result.guard.rejected[0].startswith(f"{planned} failed the correctness guard: uᵀ(J v)")
    assert any("failed the correctness guard" in note for note in result.notes)
    expected = compute_jacobian(problem, Strategy.LOOP).jacobians["y"]["x"]
    np.testing.assert_array_equal(result.jacobians["y"]["x"], expected)


def test_an_explicit_strategy_that_fails_the_guard_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(jacobian_module, "jacobian_of", _perturbing({"fwd"}))
    with pytest.raises(ComputationError, match=r"--strategy fwd: fwd's J failed the correctness"):
        compute_jacobian(_problem(), Strategy.FWD)


def test_when_every_method_is_wrong_nothing_is_printed(monkeypatch) -> None:
    everything = {"loop-rev", "loop-fwd", "rev", "fwd"}
    monkeypatch.setattr(jacobian_module, "jacobian_of", _perturbing(everything))
    with pytest.raises(ComputationError, match="no method gives a Jacobian of tanh_linear"):
        compute_jacobian(_problem())


def test_the_probe_reads_a_subset_of_rows_of_a_large_jacobian() -> None:
    x = torch.randn(1024, dtype=torch.float64)  # 2**20 entries: all of them are read
    j = torch.diag(torch.cos(x))
    guard = probe_jacobians(torch.sin, [x], x.shape, [j], "loop-rev")
    assert guard.passed is True and guard.rows_probed is None
    big = torch.randn(2048, 4096, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = big.clone()
    guard = probe_jacobians(lambda v: w @ v, [torch.randn(4096, dtype=torch.float64)], (2048,),
                            [big], "rev")  # fmt: skip
    assert guard.passed is True and guard.rows_probed == 2**20 // 4096
    one_column = big.clone()
    one_column[:, 7] += 1  # a whole wrong column (of J's order) shows in any rows probed
    # and so does 10 % too much everywhere (1 % too, but only for most random probes: the
    # guard's own u and v are fixed, so this J is seeded)
    everywhere = big * 1.1
    for wrong in (one_column, everywhere):
        guard = probe_jacobians(lambda v: w @ v, [torch.randn(4096, dtype=torch.float64)],
                                (2048,), [wrong], "rev")  # fmt: skip
        assert guard.passed is False


def test_batched_blocks_of_a_function_that_is_not_separable_are_refused() -> None:
    # claims to act elementwise, but every output depends on the sum of all inputs
    lying = Function(
        "lying",
        "y = x + x.sum()",
        (InputSpec("x", (4,), separable=ELEMENTWISE),),
        lambda x: x + x.sum(),
        output_shape=lambda shapes: shapes["x"],
    )
    problem = prepare(lying, dtype="float64")
    with pytest.raises(ComputationError, match="may not act on each sample alone"):
        compute_batched(problem)
    honest = prepare(PRESETS["sigmoid"], shape_options=[("x", (5,))], dtype="float64")
    assert compute_batched(honest).guard.passed is True


@pytest.mark.parametrize("size", [1e-30, 1e30, 3e37])
def test_the_probe_works_in_j_s_own_units_near_float32_s_limits(size: float) -> None:
    # uᵀJ in float32 would overflow (3e37·n) or lose digits to subnormals (1e-30·u): the probe
    # scales u by a power of two, so a right J passes and a J 10 % off still fails
    w = torch.randn(6, 5, generator=torch.Generator().manual_seed(2)) * size
    x = torch.randn(5)
    assert probe_jacobians(lambda v: w @ v, [x], (6,), [w.clone()], "rev").passed is True
    wrong = w.clone()
    wrong[:, 2] *= 1.1
    assert probe_jacobians(lambda v: w @ v, [x], (6,), [wrong], "rev").passed is False


def test_correct_jacobians_near_float32_s_limits_pass_the_guard(jaccli) -> None:
    # polar at r = 3e38: J's entries are near float32's largest; x·1e-45: J is the smallest
    # subnormal times I
    run = jaccli("jacobian", "--fn", "polar", "--value", "x=[3e38, 1]", "--json")
    assert run.exit_code == 0, run.stderr
    j = np.array(run.json()["jacobian"]["y"]["x"]["values"], dtype=np.float64)
    r, theta = np.float64(np.float32(3e38)), 1.0
    expected = [[np.cos(theta), -r * np.sin(theta)], [np.sin(theta), r * np.cos(theta)]]
    np.testing.assert_allclose(j, expected, rtol=1e-6)
    run = jaccli("jacobian", "--expr", "x*1e-45", "--shape", "3", "--json")
    assert run.exit_code == 0, run.stderr
    j = np.array(run.json()["jacobian"]["y"]["x"]["values"], dtype=np.float32)
    np.testing.assert_array_equal(j, np.eye(3, dtype=np.float32) * np.float32(1e-45))


def test_a_float32_j_below_its_precision_is_refused_pointing_at_float64(jaccli) -> None:
    # a sharp softmax: J = diag(p) − ppᵀ is of the order of float32's rounding of p, so the two
    # AD modes differ by as much as J itself; float64 computes it
    sharp = ["jacobian", "--expr", "(x*30).softmax(0)", "--shape", "50"]
    refused = jaccli(*sharp)
    assert refused.exit_code == 1 and "try --dtype float64" in refused.stderr, refused.stderr
    run = jaccli(*sharp, "--dtype", "float64", "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    x = np.array(document["inputs"]["x"]["values"])
    p = np.exp(30 * x - (30 * x).max())
    p /= p.sum()
    expected = 30 * (np.diag(p) - np.outer(p, p))
    got = np.array(document["jacobian"]["y"]["x"]["values"], dtype=float)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-14)
