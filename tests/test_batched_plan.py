"""Per-sample Jacobians, --plan, and the guards that keep big runs from starting."""

from __future__ import annotations

import numpy as np
import pytest

from jaccli.engine import compute_jacobian, prepare, run_jacobian
from jaccli.functions import PRESETS
from tests.conftest import values_of


@pytest.mark.parametrize(
    ("name", "shapes"),
    [
        ("expsum", [("x", (5, 4))]),
        ("matmul", [("a", (3, 4)), ("b", (4, 5))]),
        ("add", [("x", (3, 4))]),
        ("softmax", [("x", (3, 4))]),
        ("sigmoid", [("x", (6,))]),
        ("polar", [("x", (3, 2))]),
        ("cross", [("a", (4, 3)), ("b", (4, 3))]),
        ("logsumexp", [("x", (2, 5))]),
    ],
)
def test_per_sample_blocks_equal_the_dense_diagonal_blocks(name, shapes) -> None:
    problem = prepare(PRESETS[name], shape_options=shapes, dtype="float64")
    dense = compute_jacobian(problem).jacobians["y"]
    result = run_jacobian(problem, batched=True)
    assert result.per_sample is not None
    y_ndim = len(problem.output_shapes["y"])
    for wrt, (input_axis, output_axis) in result.per_sample.items():
        blocks = result.jacobians["y"][wrt]
        assert blocks.shape[0] == problem.inputs[wrt].shape[input_axis]
        for i in range(blocks.shape[0]):
            diagonal = np.take(
                np.take(dense[wrt], i, axis=output_axis), i, axis=y_ndim - 1 + input_axis
            )
            np.testing.assert_allclose(blocks[i], diagonal, rtol=1e-13, atol=1e-15)


def test_batched_expsum_json_marks_the_layout_and_axis(jaccli) -> None:
    run = jaccli(
        "jacobian", "--fn", "expsum", "--shape", "64x8", "--batched", "--dtype", "float64", "--json"
    )
    assert run.exit_code == 0, run.stderr
    document = run.json()
    assert document["layout"] == "per-sample"
    entry = document["jacobian"]["y"]["x"]
    assert (entry["axis"], entry["output_axis"], entry["shape"]) == (0, 0, [64, 8])
    np.testing.assert_allclose(
        values_of(entry), np.exp(values_of(document["inputs"]["x"])), rtol=1e-14
    )
    assert document["strategy"].startswith("per-sample")


def test_batched_is_cheap_where_dense_would_not_fit(jaccli) -> None:
    dense = jaccli("jacobian", "--fn", "expsum", "--shape", "1024x256", "--max-memory", "512MiB")
    assert dense.exit_code == 3 and "--batched" in dense.stderr
    batched = jaccli(
        "jacobian", "--fn", "expsum", "--shape", "1024x256", "--batched", "--max-memory", "512MiB"
    )
    assert batched.exit_code == 0, batched.stderr
    assert "showing 3 of 1024 blocks; --full shows every block" in batched.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fn", "tanh_linear"], "tanh_linear has no known axis along which it acts on x"),
        (
            ["--fn", "expsum", "--view", "rows"],
            "--batched already shows J block by block; drop --view",
        ),
        (["--fn", "expsum", "--check"], "drop --check"),
    ],
)
def test_batched_refusals(jaccli, args: list[str], message: str) -> None:
    run = jaccli("jacobian", *args, "--batched")
    assert run.exit_code == 2
    assert message in run.stderr


def test_plan_says_what_would_happen_without_computing(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "1024x256", "--plan", "--json")
    assert run.exit_code == 0, run.stderr
    document = run.json()
    plan = document["plan"]
    assert "values" not in document["inputs"]["x"]  # nothing was drawn, let alone computed
    assert (plan["outputs"], plan["inputs"]) == (1024, 262144)
    assert plan["result_bytes"] == 1024 * 262144 * 4
    assert plan["method"] == "rev" and "reverse mode, fewer passes" in plan["reason"]
    assert plan["per_sample"]["result_bytes"] == 262144 * 4
    assert plan["suggestion"] == (
        "J is block-diagonal: --batched keeps only its blocks (1.0 MiB instead of 1.0 GiB)"
    )
    table = jaccli("jacobian", "--fn", "expsum", "--shape", "1024x256", "--plan")
    assert "peak memory" in table.stdout and "nothing was computed" in table.stdout


def test_plan_of_a_refused_shape_exits_3_and_says_why(jaccli) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--shape", "100000x100000", "--plan", "--json")
    assert run.exit_code == 3
    assert run.json()["plan"]["refused"].startswith("the 100000×10000000000 Jacobian would need")


def test_plan_chunks_reverse_mode_within_a_small_budget(jaccli) -> None:
    run = jaccli(
        "jacobian",
        "--fn",
        "softmax",
        "--shape",
        "400",
        "--strategy",
        "rev",
        "--max-memory",
        "1MiB",
        "--plan",
        "--json",
    )
    plan = run.json()["plan"]
    assert run.exit_code == 0, run.stderr
    assert plan["chunk_size"] is not None and plan["peak_bytes"] <= plan["budget_bytes"]


def test_json_of_a_huge_jacobian_is_refused_before_computing(jaccli) -> None:
    run = jaccli(
        "jacobian", "--fn", "sigmoid", "--shape", "3000", "--json", "--max-memory", "64MiB"
    )
    assert run.exit_code == 3
    assert run.stdout == ""
    assert "--json of the 3000×3000 Jacobian (9000000 numbers) would need about" in run.stderr
    assert "--out j.npy" in run.stderr


def test_progress_appears_only_after_the_delay_and_only_when_enabled(monkeypatch) -> None:
    from jaccli.render import progress as module

    clock = iter([0.0, 0.5, 2.0, 2.1, 2.2])
    monkeypatch.setattr(module.time, "monotonic", lambda: next(clock))
    bar = module.DelayedProgress("jacobian", enabled=True)  # starts at 0.0
    bar(1, 10)  # at 0.5 s: nothing yet
    assert bar.bar is None
    bar(5, 10)  # at 2.0 s: the bar appears
    assert bar.bar is not None
    assert bar.bar.tasks[0].completed == 5
    bar.stop()
    off = module.DelayedProgress("jacobian", enabled=False)
    off(1, 10)
    assert off.bar is None
