"""Strategy choice, fallback, chunking and the memory guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from jaccli.engine import Strategy, compute_jacobian, prepare
from jaccli.engine.jacobian import COLD_LOOP_LIMIT, choose_strategy, plan_jacobian
from jaccli.errors import ResourceError
from jaccli.functions import PRESETS
from tests.conftest import values_of

USERFNS = Path(__file__).parent / "fixtures" / "userfns.py"


@pytest.mark.parametrize(
    ("n_out", "n_in", "method"),
    [(2, 6, "loop-rev"), (4096, 64, "loop-fwd"), (64, 4096, "loop-rev"), (512, 512, "rev"),
     (4096, 300, "fwd"), (300, 4096, "rev")],
)  # fmt: skip
def test_auto_takes_the_mode_with_fewer_passes_and_a_loop_when_they_are_few(
    n_out: int, n_in: int, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("jaccli.engine.jacobian.vectorized_start_up_paid", lambda: False)
    chosen, reason = choose_strategy(Strategy.AUTO, n_out, n_in)
    assert chosen == method
    assert reason


def test_once_torch_func_has_loaded_only_a_few_passes_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("jaccli.engine.jacobian.vectorized_start_up_paid", lambda: True)
    assert choose_strategy(Strategy.AUTO, 64, 4096)[0] == "rev"
    assert choose_strategy(Strategy.AUTO, 8, 4096)[0] == "loop-rev"
    # a Hessian's passes each go through a backward pass: batched, 16 took half the loop's time
    assert choose_strategy(Strategy.AUTO, 16, 16, second_order=True)[0] == "rev"
    assert choose_strategy(Strategy.AUTO, 4, 4, second_order=True)[0] == "loop-rev"


@pytest.mark.parametrize("strategy", ["loop", "rev", "fwd", "auto"])
def test_every_strategy_gives_the_same_jacobian(jaccli, strategy: str) -> None:
    args = [
        "jacobian",
        "--fn",
        "tanh_linear",
        "--shape",
        "x=5",
        "--shape",
        "W=7x5",
        "--dtype",
        "float64",
        "--json",
    ]
    reference = jaccli(*args, "--strategy", "loop").json()
    run = jaccli(*args, "--strategy", strategy).json()
    x, w = values_of(reference["inputs"]["x"]), values_of(reference["inputs"]["W"])
    expected = (1 - np.tanh(w @ x) ** 2)[:, None] * w
    np.testing.assert_allclose(
        values_of(run["jacobian"]["y"]["x"]), expected, rtol=1e-12, atol=1e-15
    )
    assert run["strategy"] in {"loop-rev", "loop-fwd", "rev", "fwd"}


def test_a_function_vmap_cannot_run_falls_back_to_a_loop_with_a_note(jaccli) -> None:
    n = COLD_LOOP_LIMIT + 44  # past any loop limit: auto first tries vmap
    run = jaccli(
        "jacobian",
        "--fn",
        f"{USERFNS}:cube",
        "--shape",
        f"x={n}",
        "--dtype",
        "float64",
        "--json",
    )
    assert run.exit_code == 0, run.stderr
    assert "could not vectorize cube; computed J with loop-rev instead" in run.stderr
    document = run.json()
    assert document["strategy"] == "loop-rev"
    x = values_of(document["inputs"]["x"])
    np.testing.assert_allclose(
        values_of(document["jacobian"]["y"]["x"]), np.diag(3 * x**2), rtol=1e-12
    )
    forced = jaccli("jacobian", "--fn", f"{USERFNS}:cube", "--shape", f"x={n}", "--strategy", "rev")
    assert forced.exit_code == 1 and "try --strategy loop" in forced.stderr


def test_reverse_mode_is_chunked_to_fit_the_budget_and_stays_correct() -> None:
    problem = prepare(PRESETS["softmax"], shape_options=[(None, (400,))], dtype="float64")
    result_bytes = 400 * 400 * 8
    budget = int(result_bytes * 1.5)  # room for J, not for jacrev's 2× J
    plan = plan_jacobian(problem, Strategy.REV, budget)
    assert plan.method == "rev" and plan.chunk_size is not None and plan.chunk_size < 400
    assert plan.peak_bytes <= budget
    chunked = compute_jacobian(problem, Strategy.REV, budget).jacobians["y"]["x"]
    whole = compute_jacobian(problem, Strategy.LOOP).jacobians["y"]["x"]
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-15)


def test_forward_mode_over_budget_becomes_its_loop() -> None:
    problem = prepare(PRESETS["sigmoid"], shape_options=[(None, (300,))], dtype="float64")
    plan = plan_jacobian(problem, Strategy.FWD, int(300 * 300 * 8 * 1.5))
    assert plan.method == "loop-fwd" and "within the budget" in plan.reason


def test_a_jacobian_that_cannot_fit_is_refused_naming_the_ways_out() -> None:
    problem = prepare(PRESETS["expsum"], shape_options=[(None, (64, 64))])
    plan = plan_jacobian(problem, budget=512 * 1024)
    assert plan.refused is not None
    with pytest.raises(ResourceError) as refused:
        compute_jacobian(problem, budget=512 * 1024)
    message = refused.value.message
    assert message == plan.refused
    assert "the 64×4096 Jacobian would need about" in message
    assert "--batched for only the diagonal blocks" in message and "--max-memory" in message
