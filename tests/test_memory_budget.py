"""--max-memory holds for real: peak resident memory from the kernel's accounting stays within
the budget plus a plain run's baseline, or the run is refused with exit 3 and one line."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from jaccli import memory
from jaccli.errors import ResourceError
from jaccli.points import BATCH_BYTES, PointStream
from tests.conftest import jaccli_command

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
MiB = 1024**2
STENCIL = """
def residual(u):
    dx = 0.01
    return u[1:-1] * (u[2:] - u[:-2]) / (2 * dx) - (u[2:] - 2 * u[1:-1] + u[:-2]) / dx**2
"""


def _run(args: list[str], stdin: Path | None = None) -> tuple[int, int, str]:
    """(exit code, peak resident bytes from the kernel's rusage of this child, stderr)."""
    with tempfile.TemporaryFile() as err, open(stdin or os.devnull, "rb") as source:
        process = subprocess.Popen(
            [*jaccli_command(), *args],
            stdin=source,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=ENV,
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return process.returncode, usage.ru_maxrss * 1024, err.read().decode()


def _stencil_jacobian(u: np.ndarray, dx: float = 0.01) -> np.ndarray:
    """The residual's J in closed form: three diagonals."""
    n = u.size
    j = np.zeros((n - 2, n))
    i = np.arange(n - 2)
    j[i, i] = -u[1:-1] / (2 * dx) - 1 / dx**2
    j[i, i + 1] = (u[2:] - u[:-2]) / (2 * dx) + 2 / dx**2
    j[i, i + 2] = u[1:-1] / (2 * dx) - 1 / dx**2
    return j


def test_a_stencil_under_reverse_mode_stays_within_the_budget(tmp_path: Path) -> None:
    """The vmapped VJP of a stencil allocates several rows of n per row of J (the estimate said
    two): at n = 4000 in float64 it peaked at 1.09 GB under --max-memory 512MiB, and at
    n = 5000 at 1.5 GB under 1GiB."""
    (tmp_path / "burgers.py").write_text(STENCIL, encoding="utf-8")
    fn = f"{tmp_path / 'burgers.py'}:residual"
    common = ["jacobian", "--fn", fn, "--dtype", "float64", "--force"]
    code, baseline, _ = _run(
        [*common, "--shape", "64", "--strategy", "rev", "--out", str(tmp_path / "small.npy")]
    )
    assert code == 0
    for n, strategy, budget in ((4000, "rev", 512), (5000, "auto", 1024)):
        u = np.random.default_rng(n).standard_normal(n)
        np.save(tmp_path / "u.npy", u)
        out = tmp_path / "j.npy"
        values = ["--value", f"u=@{tmp_path / 'u.npy'}", "--out", str(out)]
        limits = ["--strategy", strategy, "--max-memory", f"{budget}MiB"]
        code, peak, err = _run([*common, *values, *limits])
        assert code == 0, err
        assert peak <= budget * MiB + baseline, (
            f"n={n}: peak {peak / MiB:.0f} MiB, baseline {baseline / MiB:.0f} MiB"
        )
        np.testing.assert_allclose(np.load(out), _stencil_jacobian(u), rtol=1e-12, atol=1e-9)


def test_a_jacobian_that_cannot_fit_is_refused_with_one_line(tmp_path: Path) -> None:
    """The stencil's J at n = 10,000 is 763 MiB in float64: refused up front under 512MiB."""
    (tmp_path / "burgers.py").write_text(STENCIL, encoding="utf-8")
    fn = f"{tmp_path / 'burgers.py'}:residual"
    args = ["jacobian", "--fn", fn, "--shape", "10000", "--dtype", "float64", "--strategy", "rev"]
    code, _, err = _run([*args, "--max-memory", "512MiB"])
    assert code == 3
    assert err.count("\n") == 1 and "512.0 MiB" in err and "--max-memory" in err


def test_a_hessian_past_its_estimate_is_held_by_the_kernel() -> None:
    """hessian of (x**3).sum() at 4000 under 100MiB peaked at 0.97 GB: now it is refused (or
    computed) within the budget, and never by an internal error."""
    code, baseline, _ = _run(
        ["hessian", "--expr", "(x**3).sum()", "--shape", "30", "--strategy", "rev"]
    )
    assert code == 0
    args = ["hessian", "--expr", "(x**3).sum()", "--shape", "4000", "--max-memory", "100MiB"]
    code, peak, err = _run(args)
    assert code in (0, 3), err
    assert peak <= 100 * MiB + baseline, f"peak {peak / MiB:.0f} MiB, baseline {baseline / MiB:.0f}"
    if code == 3:
        assert err.count("\n") == 1 and "100.0 MiB" in err and "internal error" not in err
        assert "hvp" in err  # the way out for a Hessian, not vjp alone


def test_a_stream_batches_waiting_lines_by_their_bytes(tmp_path: Path, monkeypatch) -> None:
    """Waiting lines were all parsed before the first point was computed (up to 4,096 of them,
    however long: 4,000 lines of 25,000 numbers peaked at 2.72 GB under 512MiB); a batch now
    holds at most BATCH_BYTES of text, and every point still arrives once, in order."""
    line = "[" + ",".join([str(float(k)) for k in range(10_000)]) + "]"
    lines = [line.replace("[0.0", f"[{k}.0", 1) for k in range(200)]
    (tmp_path / "points.jsonl").write_text("\n".join(lines) + "\n", encoding="ascii")
    with open(tmp_path / "points.jsonl", encoding="ascii") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        batches = list(PointStream("x", 1 << 20).batches())
    assert max(len(batch) for batch in batches) * len(line) <= BATCH_BYTES + len(line)
    firsts = [point.values[0] for batch in batches for _, _, point in batch]
    assert firsts == list(range(200))


def test_a_budget_above_the_machines_memory_is_refused_before_anything_runs() -> None:
    total, _ = memory.machine_memory()
    if total is None:
        pytest.skip("no /proc/meminfo here")
    budget = f"{2 * total // 1024**3 + 1}GiB"
    code, _, err = _run(["jacobian", "--expr", "x.sin()", "--shape", "3", "--max-memory", budget])
    assert code == 3
    assert err.startswith("jacobian: --max-memory ") and "more than this machine has" in err
    assert err.count("\n") == 1 and "internal error" not in err


def test_a_budget_above_what_is_available_is_reduced_with_a_warning(monkeypatch) -> None:
    monkeypatch.setattr(memory, "machine_memory", lambda: (16 * 1024**3, 2 * 1024**3))
    budget, warning = memory.fit_to_machine(8 * 1024**3)
    assert budget == 2 * 1024**3
    assert warning is not None and "2.0 GiB available now" in warning
    assert memory.fit_to_machine(1024**3) == (1024**3, None)
    with pytest.raises(ResourceError, match="more than this machine has"):
        memory.fit_to_machine(32 * 1024**3)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (MemoryError(), True),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"
            ),
            True,
        ),
        (RuntimeError("std::bad_alloc"), True),
        (RuntimeError("vmap: cannot vectorize .item()"), False),
    ],
)
def test_allocation_failures_are_told_from_other_errors(error: Exception, expected: bool) -> None:
    assert memory.out_of_memory(error) is expected
