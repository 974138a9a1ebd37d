"""`jaccli jacobian --out j.zarr`: J computed block by block into a zarr store from the command
line and the API equals the in-memory J; a run killed by SIGKILL resumes with --resume; an
existing store is never replaced without --force; --plan tells the blocks; the extras are
imported only when used; the peak memory of an out-of-core run stays within its budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zarr

import jaccli
from jaccli.blocks import store
from jaccli.engine import compute_jacobian, prepare
from jaccli.engine.blocks import joined_matrix
from jaccli.functions import resolve

MODEL = """\
import time
import torch

def f(x):
    return torch.tanh(x).cumsum(0) * x.sum()

def slow(x):
    time.sleep(0.01)
    return torch.sin(x).cumsum(0) * x.square().sum()
"""

Cli = Callable[..., object]


def _model(tmp_path: Path) -> Path:
    path = tmp_path / "model.py"
    path.write_text(MODEL, encoding="utf-8")
    return path


def _stored(path: Path, array: str = "J") -> np.ndarray:
    return zarr.open_group(str(path), mode="r")[array][...]


def _in_memory(name: str | None, expression: str | None, shapes: list, **options: object):  # type: ignore[no-untyped-def]
    """J as a matrix, computed in memory by the engine at the same inputs."""
    names = [name for name, _ in shapes]
    problem = prepare(resolve(name, expression, names), shape_options=shapes, **options)  # type: ignore[arg-type]
    return joined_matrix(problem, compute_jacobian(problem)).numpy()


@pytest.mark.parametrize("kind", ["preset", "expression", "user file"])
def test_a_stored_j_equals_the_in_memory_j(jaccli: Cli, tmp_path: Path, kind: str) -> None:
    if kind == "preset":
        function, shapes = ["--fn", "matmul"], [("a", (4, 4)), ("b", (4, 8))]
        expected = _in_memory("matmul", None, shapes, dtype="float64")
    elif kind == "expression":
        function, shapes = ["--expr", "softmax(x, dim=0)"], [("x", (32,))]
        expected = _in_memory(None, "softmax(x, dim=0)", shapes, dtype="float64")
    else:
        model = f"{_model(tmp_path)}:f"
        function, shapes = ["--fn", model], [("x", (32,))]
        expected = _in_memory(model, None, shapes, dtype="float64")
    shape_options = [f"--shape={name}={'x'.join(map(str, s))}" for name, s in shapes]
    out = tmp_path / "j.zarr"
    run = jaccli("jacobian", *function, *shape_options, "--dtype", "float64", "--out", str(out))
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    assert run.stdout == ""  # type: ignore[attr-defined]  # J is in the store, not on stdout
    assert f"jacobian: wrote {out}: J " in run.stderr  # type: ignore[attr-defined]
    np.testing.assert_allclose(_stored(out), expected, rtol=1e-12, atol=0)
    header = store.read_header(str(out))
    assert header["complete"] and header["command"] == "jacobian"
    assert header["dtype"] == "float64" and header["schema_version"] == 2


def test_an_existing_store_is_refused_then_resumed_or_replaced(jaccli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "j.zarr"
    args = ["jacobian", "--expr", "x.exp()", "--shape", "5", "--out", str(out)]
    assert jaccli(*args).exit_code == 0  # type: ignore[attr-defined]
    refused = jaccli(*args)
    assert refused.exit_code == 2  # type: ignore[attr-defined]
    assert refused.stderr == (  # type: ignore[attr-defined]
        f"jacobian: --out {out} exists; add --resume to complete it, or --force to replace it\n"
    )
    resumed = jaccli(*args, "--resume")
    assert resumed.exit_code == 0 and "0 computed" in resumed.stderr  # type: ignore[attr-defined]
    assert "1 kept from before" in resumed.stderr  # type: ignore[attr-defined]
    replaced = jaccli(*args[:2], "x.sin()", *args[3:], "--force")
    assert replaced.exit_code == 0  # type: ignore[attr-defined]
    x = _stored(out, "inputs/x").astype(np.float64)
    np.testing.assert_allclose(np.diag(_stored(out)), np.cos(x), rtol=1e-6)


def test_resume_refuses_the_store_of_another_run_in_one_line(jaccli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "j.zarr"
    assert jaccli("jacobian", "--expr", "x.exp()", "--shape", "5", "--out", str(out)).exit_code == 0  # type: ignore[attr-defined]
    other = jaccli("jacobian", "--expr", "x.sin()", "--shape", "5", "--out", str(out), "--resume")
    assert other.exit_code == 2  # type: ignore[attr-defined]
    assert other.stderr.count("\n") == 1  # type: ignore[attr-defined]
    assert "holds the Jacobian of y = x.exp(), not of y = x.sin()" in other.stderr  # type: ignore[attr-defined]
    shape = jaccli("jacobian", "--expr", "x.exp()", "--shape", "6", "--out", str(out), "--resume")
    assert shape.exit_code == 2 and "has input x of shape [5], not [6]" in shape.stderr  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--resume"], "--resume works with --out NAME.zarr"),
        (["--cluster", "local:2"], "--cluster works with --out NAME.zarr"),
        (["--out", "{tmp}/j.zarr", "--json"], "--json (J is in the store) does not go with it"),
        (["--out", "{tmp}/j.zarr", "--check"], "--check (each block is guarded"),
        (["--out", "{tmp}/j.zarr", "--strategy", "loop"], "--strategy loop does not go"),
        (["--out", "{tmp}/j.zarr", "--resume", "--force"], "give one of --resume and --force"),
        (["--out", "{tmp}/j.zarr", "--cluster", "lcl"], "bad --cluster 'lcl'"),
    ],
)
def test_what_does_not_go_with_a_store_is_refused(
    jaccli: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    given = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    run = jaccli("jacobian", "--expr", "x.exp()", "--shape", "5", *given)
    assert run.exit_code == 2 and message in run.stderr  # type: ignore[attr-defined]
    assert not (tmp_path / "j.zarr").exists()


@pytest.mark.parametrize("command", ["det", "vjp"])
def test_a_store_holds_j_or_h_only(jaccli: Cli, tmp_path: Path, command: str) -> None:
    run = jaccli(command, "--fn", "logsumexp", "--shape", "4", "--out", str(tmp_path / "r.zarr"))
    assert run.exit_code == 2  # type: ignore[attr-defined]
    assert run.stderr.count("\n") == 1  # type: ignore[attr-defined]
    assert "a .zarr store holds J or H computed block by block" in run.stderr  # type: ignore[attr-defined]
    assert f"{command}'s result is one " in run.stderr  # type: ignore[attr-defined]  # and why


def _in_memory_hessian(name: str | None, expression: str | None, shapes: list) -> np.ndarray:
    """H as the gradient's J matrix (rows: each output element by each wrt element), computed
    in memory by the engine's own hessian at the same inputs."""
    from jaccli.engine import run_hessian

    names = [name for name, _ in shapes]
    problem = prepare(resolve(name, expression, names), shape_options=shapes, dtype="float64")
    result = run_hessian(problem)
    ((_, by_a),) = result.hessians.items()
    ((a, by_b),) = by_a.items()
    (h,) = by_b.values()
    n = problem.inputs[a].numel()
    return np.asarray(h).reshape(-1, n)


@pytest.mark.parametrize(
    ("function", "shapes", "blocks"),
    [
        (["--fn", "logsumexp"], [("x", (40,))], "rows"),  # H square: VJPs of the gradient
        (["--expr", "softmax(x, dim=0)"], [("x", (12,))], "columns"),  # H tall: 144 x 12
        (["--fn", "USER:f"], [("x", (24,))], "columns"),
    ],
)
def test_a_stored_h_equals_the_in_memory_hessian(
    jaccli: Cli, tmp_path: Path, function: list[str], shapes: list, blocks: str
) -> None:
    if function[1] == "USER:f":
        function = ["--fn", f"{_model(tmp_path)}:f"]
    name, expression = (function[1], None) if function[0] == "--fn" else (None, function[1])
    expected = _in_memory_hessian(name, expression, shapes)
    out = tmp_path / "h.zarr"
    shape_options = [f"--shape={n}={'x'.join(map(str, s))}" for n, s in shapes]
    run = jaccli("hessian", *function, *shape_options, "--dtype", "float64", "--out", str(out),
                 "--max-memory", "48MiB")  # fmt: skip
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    assert f"hessian: wrote {out}: H {expected.shape[0]}x{expected.shape[1]} " in run.stderr  # type: ignore[attr-defined]
    np.testing.assert_allclose(_stored(out), expected, rtol=1e-12, atol=1e-15)
    header = store.read_header(str(out))
    assert header["command"] == "hessian" and header["blocks"]["kind"] == blocks
    assert list(zarr.open_group(str(out), mode="r")["outputs"]) == ["y"]  # f itself, not ∇f
    resumed = jaccli("hessian", *function, *shape_options, "--dtype", "float64",
                     "--out", str(out), "--resume")  # fmt: skip
    assert resumed.exit_code == 0 and "0 computed" in resumed.stderr  # type: ignore[attr-defined]
    other = jaccli("jacobian", *function, *shape_options, "--dtype", "float64",
                   "--out", str(out), "--resume")  # fmt: skip
    assert other.exit_code == 2 and "was written by hessian, not jacobian" in other.stderr  # type: ignore[attr-defined]


def test_hessians_at_points_from_zarr_into_a_store(jaccli: Cli, tmp_path: Path) -> None:
    points = np.random.default_rng(1).uniform(0.5, 2.0, size=(7, 2))
    zarr.create_array(str(tmp_path / "p.zarr"), shape=points.shape, dtype="f8")[...] = points
    out = tmp_path / "h.zarr"
    run = jaccli(
        "hessian", "--fn", "polar", "--points", f"x=@{tmp_path / 'p.zarr'}",
        "--dtype", "float64", "--out", str(out),
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    stored = _stored(out)
    assert stored.shape == (7, 4, 2)  # rows: ∂²(r cos θ), then ∂²(r sin θ), by (r, θ)
    r, theta = points[:, 0], points[:, 1]
    c, s, z = np.cos(theta), np.sin(theta), np.zeros_like(r)
    expected = np.stack(
        [np.stack([z, -s], -1), np.stack([-s, -r * c], -1),
         np.stack([z, c], -1), np.stack([c, -r * s], -1)], 1,
    )  # fmt: skip
    np.testing.assert_allclose(stored, expected, rtol=1e-12, atol=1e-15)


def test_points_from_zarr_into_a_store_equal_each_points_j(jaccli: Cli, tmp_path: Path) -> None:
    points = np.random.default_rng(0).uniform(0.5, 2.0, size=(9, 2))
    zarr.create_array(str(tmp_path / "p.zarr"), shape=points.shape, dtype="f8")[...] = points
    out = tmp_path / "j.zarr"
    run = jaccli(
        "jacobian", "--fn", "polar", "--points", f"x=@{tmp_path / 'p.zarr'}",
        "--dtype", "float64", "--out", str(out),
    )  # fmt: skip
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    stored = _stored(out)
    assert stored.shape == (9, 2, 2)
    r, theta = points[:, 0], points[:, 1]  # (r cos θ, r sin θ): J = [[cos, -r sin], [sin, r cos]]
    expected = np.stack(
        [np.stack([np.cos(theta), -r * np.sin(theta)], -1),
         np.stack([np.sin(theta), r * np.cos(theta)], -1)], 1,
    )  # fmt: skip
    np.testing.assert_allclose(stored, expected, rtol=1e-12)


def test_plan_tells_the_blocks_of_a_store_too_large_for_memory(jaccli: Cli, tmp_path: Path) -> None:
    args = ["jacobian", "--expr", "softmax(x, dim=0)", "--shape", "50000", "--plan"]
    in_memory = jaccli(*args, "--max-memory", "1GiB")
    assert in_memory.exit_code == 3  # type: ignore[attr-defined]  # J alone is 9.3 GiB
    out = ["--out", str(tmp_path / "j.zarr"), "--max-memory", "1GiB"]
    stored = jaccli(*args, *out, "--cluster", "local:2")
    assert stored.exit_code == 0, stored.stderr  # type: ignore[attr-defined]
    assert "blocks of" in stored.stdout and "9.3 GiB on disk at most" in stored.stdout  # type: ignore[attr-defined]
    assert "2 worker processes, at most" in stored.stdout  # type: ignore[attr-defined]
    document = jaccli(*args, *out, "--json").json()  # type: ignore[attr-defined]
    blocks = document["store"]
    assert blocks["kind"] == "rows" and blocks["refused"] is None and blocks["workers"] == 1
    assert blocks["count"] * blocks["size"] >= 50000 and blocks["peak_bytes"] <= 2**30
    assert blocks["store_bytes"] == 50000 * 50000 * 4
    assert not (tmp_path / "j.zarr").exists()


def test_the_api_stores_j_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "j.zarr"
    result = jaccli.jacobian("softmax(x, dim=0)", shape=16, dtype="float64", out=out)
    assert result.data.computed == result.data.plan.count and result.document()["complete"]
    expected = _in_memory(None, "softmax(x, dim=0)", [("x", (16,))], dtype="float64")
    np.testing.assert_allclose(_stored(out), expected, rtol=1e-12)
    again = jaccli.jacobian("softmax(x, dim=0)", shape=16, dtype="float64", out=out, resume=True)
    assert again.data.computed == 0
    with pytest.raises(ValueError, match="J is in the store"):
        again.array  # noqa: B018


def _stop_after(args: list[str], out: Path, blocks: int, signal_number: int) -> tuple[int, str]:
    """jaccli ARGS in a process group of its own, sent `signal_number` once `blocks` blocks
    of the store are marked done: its exit status and stderr."""
    running = subprocess.Popen(
        [sys.executable, "-m", "jaccli", *args],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and running.poll() is None:
            if out.exists() and store.done_blocks(str(out)).sum() >= blocks:
                break
            time.sleep(0.02)
        assert running.poll() is None, running.stderr.read()  # type: ignore[union-attr]
        os.killpg(running.pid, signal_number)  # jaccli and the worker it forked for model.py
        _, stderr = running.communicate(timeout=60)
    finally:
        running.kill()
        running.wait(timeout=30)
    return running.returncode, stderr


def test_a_run_stopped_by_ctrl_c_then_sigkill_resumes_to_the_same_j(
    jaccli: Cli, tmp_path: Path
) -> None:
    model = f"{_model(tmp_path)}:slow"
    out = tmp_path / "j.zarr"
    args = ["jacobian", "--fn", model, "--shape", "1000", "--dtype", "float64",
            "--max-memory", "12MiB", "--out", str(out)]  # fmt: skip
    status, stderr = _stop_after(args, out, 1, signal.SIGINT)
    assert status == 130
    assert stderr.endswith(
        f"jacobian: interrupted; the blocks done are kept in {out}: run the same command with "
        "--resume to compute the rest\n"
    )
    interrupted = store.done_blocks(str(out)).sum()
    status, _ = _stop_after([*args, "--resume"], out, interrupted + 1, signal.SIGKILL)
    assert status == -signal.SIGKILL
    marked = store.done_blocks(str(out))
    assert interrupted < marked.sum() < marked.size
    resumed = jaccli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.stderr  # type: ignore[attr-defined]
    computed = marked.size - marked.sum()
    assert f"{computed} computed in" in resumed.stderr  # type: ignore[attr-defined]
    assert f"{marked.sum()} kept from before" in resumed.stderr  # type: ignore[attr-defined]
    expected = _in_memory(model, None, [("x", (1000,))], dtype="float64")
    np.testing.assert_allclose(_stored(out), expected, rtol=1e-12)


OPTIONAL = ("zarr", "dask", "distributed")
IMPORTED = (
    "import sys\n"
    "from jaccli.cli import app\n"
    "try:\n"
    "    app(args=sys.argv[1:], prog_name='jaccli')\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(' '.join(sorted(sys.modules)), file=sys.stderr)\n"
)


@pytest.mark.parametrize("args", [["--help"], ["jacobian", "--help"]])
def test_help_imports_neither_zarr_nor_dask(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED, *args], capture_output=True, text=True, timeout=120
    )
    assert "--out" in done.stdout or "jacobian" in done.stdout
    assert not set(done.stderr.split()) & set(OPTIONAL)


HIDDEN = (
    "import sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None  # as if it were not installed\n"
    "from jaccli.__main__ import main\n"
    "sys.argv = ['jaccli', *sys.argv[2:]]\n"
    "main()\n"
)


@pytest.mark.parametrize(
    ("hidden", "extra", "options"),
    [
        ("zarr", "jaccli[zarr]", []),
        ("distributed", "jaccli[dask]", ["--cluster", "local:1"]),
    ],
)
def test_a_missing_extra_exits_2_with_the_pip_line(
    tmp_path: Path, hidden: str, extra: str, options: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", HIDDEN, hidden, "jacobian", "--expr", "x.exp()", "--shape", "3",
         "--out", str(tmp_path / "j.zarr"), *options],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and f"pip install '{extra}'" in done.stderr
    assert not (tmp_path / "j.zarr").exists()


PEAK = """\
import json, sys
from jaccli import memory
from jaccli.cli import app

peaks = []
reset_peak = memory.reset_peak

def kept_reset_peak():  # the engine restarts the kernel's count for each block: keep each
    peaks.append(memory.peak_resident_bytes())
    return reset_peak()

memory.reset_peak = kept_reset_peak

def run(n, out):
    args = [*sys.argv[3:], "--shape", str(n), "--out", out, "--max-memory", sys.argv[2]]
    try:
        app(args=args, prog_name="jaccli")
    except SystemExit as exit:
        assert exit.code == 0, exit.code

run(64, sys.argv[1] + "/warm.zarr")  # a plain run's baseline: everything loaded, a tiny J
baseline = memory.peak_resident_bytes()
memory.trim()
memory.reset_peak()
peaks.clear()
run(4000, sys.argv[1] + "/j.zarr")
print(json.dumps([baseline, max([memory.peak_resident_bytes(), *peaks])]), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "function",
    [
        ["jacobian", "--expr", "softmax(x, dim=0)"],
        ["hessian", "--fn", "logsumexp"],  # H of logsumexp is softmax's J: VJPs of the gradient
    ],
)
def test_an_out_of_core_cli_run_peaks_within_its_budget(tmp_path: Path, function: list) -> None:
    budget = 32 * 1024**2  # J is 4000² float32 numbers: 61 MiB
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(tmp_path), str(budget), *function],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    baseline, peak = json.loads(done.stderr.splitlines()[-1])  # jaccli keeps stdout its own
    assert peak - baseline <= budget  # the kernel's VmHWM, above the resident baseline
    assert store.done_blocks(str(tmp_path / "j.zarr")).sum() > 4
    stored = zarr.open_group(str(tmp_path / "j.zarr"), mode="r")
    x = stored["inputs/x"][...].astype(np.float64)
    y = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    for row in (0, 3999):  # J = diag(y) − y yᵀ, in the first and last blocks
        expected = -y[row] * y
        expected[row] += y[row]
        np.testing.assert_allclose(stored["J"][row], expected, rtol=1e-4, atol=1e-9)


def test_plan_with_points_reads_only_the_points_shape(jaccli: Cli, tmp_path: Path) -> None:
    """The points file may be larger than memory: --plan beside a store reads its metadata and
    first point, so a --max-value-size far below the file's size does not stop it."""
    points = tmp_path / "p.npy"
    np.save(points, np.random.default_rng(0).uniform(0.5, 2.0, size=(50000, 2)))
    args = ["jacobian", "--fn", "polar", "--points", f"x=@{points}", "--max-value-size", "1KiB"]
    whole = jaccli(*args, "--plan")
    assert whole.exit_code == 2 and "over the limit of 1.0 KiB" in whole.stderr  # type: ignore[attr-defined]
    document = jaccli(*args, "--plan", "--out", str(tmp_path / "j.zarr"), "--json").json()  # type: ignore[attr-defined]
    assert document["store"]["kind"] == "points"
    assert document["store"]["count"] * document["store"]["size"] >= 50000
    assert not (tmp_path / "j.zarr").exists()


def test_resume_under_another_budget_keeps_the_stored_blocks(jaccli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "j.zarr"
    args = ["jacobian", "--expr", "softmax(x, dim=0)", "--shape", "3000", "--dtype", "float64",
            "--out", str(out)]  # fmt: skip
    assert jaccli(*args, "--max-memory", "24MiB").exit_code == 0  # type: ignore[attr-defined]
    root = zarr.open_group(str(out), mode="r+")
    size = root.attrs["jaccli"]["blocks"]["size"]
    root["done"][1:3] = 0  # as if killed: two blocks to compute again
    root["J"][size : 3 * size] = np.nan
    resumed = jaccli(*args, "--max-memory", "200MiB", "--resume")
    assert resumed.exit_code == 0, resumed.stderr  # type: ignore[attr-defined]
    assert f"--resume keeps the store's blocks of {size} rows" in resumed.stderr  # type: ignore[attr-defined]
    assert "2 computed" in resumed.stderr and f"blocks of {size} rows" in resumed.stderr  # type: ignore[attr-defined]
    s = _stored(out, "outputs/y")
    np.testing.assert_allclose(_stored(out), np.diag(s) - np.outer(s, s), rtol=1e-12, atol=1e-18)
    too_small = jaccli(*args, "--max-memory", "9MiB", "--resume")
    assert too_small.exit_code == 3 and too_small.stderr.count("\n") == 1  # type: ignore[attr-defined]
    assert f"is laid out in blocks of {size} rows" in too_small.stderr  # type: ignore[attr-defined]
    assert jaccli(*args, "--max-memory", "200MiB", "--resume").exit_code == 0  # lock let go


def test_one_block_is_one_block(jaccli: Cli, tmp_path: Path) -> None:
    run = jaccli("jacobian", "--expr", "x.exp()", "--shape", "5", "--out", str(tmp_path / "j.zarr"))
    assert run.exit_code == 0 and " in 1 block of 5 rows, " in run.stderr  # type: ignore[attr-defined]


def test_plan_of_columns_says_rows_may_be_used_instead(jaccli: Cli, tmp_path: Path) -> None:
    run = jaccli("jacobian", "--expr", "outer(x, x)", "--shape", "6",
                 "--out", str(tmp_path / "j.zarr"), "--plan")  # fmt: skip
    assert run.exit_code == 0, run.stderr  # type: ignore[attr-defined]
    text = " ".join(run.stdout.split())  # type: ignore[attr-defined]
    assert "of 6 columns" in text and "rows instead if forward mode cannot run" in text


@pytest.mark.parametrize("suffix", [".zarr", ".npy"])
def test_an_out_path_with_escapes_reaches_stderr_spelt_out(
    jaccli: Cli, tmp_path: Path, suffix: str
) -> None:
    """A path is the user's text: an ESC sequence (or a newline) in it is shown as its escape
    in "wrote …" and in the refusal of an existing file, never sent to the terminal."""
    out = str(tmp_path / f"e\x1b[2Jx\n{suffix}")
    args = ("jacobian", "--expr", "x.sin()", "--shape", "x=3", "--out", out)
    wrote = jaccli(*args)
    assert wrote.exit_code == 0, wrote.stderr  # type: ignore[attr-defined]
    assert "\x1b" not in wrote.stderr and "e\\x1b[2Jx\\n" in wrote.stderr  # type: ignore[attr-defined]
    refused = jaccli(*args)
    assert refused.exit_code == 2  # type: ignore[attr-defined]
    assert "\x1b" not in refused.stderr and "e\\x1b[2Jx\\n" in refused.stderr  # type: ignore[attr-defined]
    assert refused.stderr.count("\n") == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_points_from_a_npy_file_to_a_store_leave_only_jaccli_lines_on_stderr(
    tmp_path: Path, dtype: str
) -> None:
    """A whole process (torch warns once a process): the block of points read from a .npy
    file is a read-only map, and torch.from_numpy's "The given NumPy array is not writable"
    reached the user as a warning of the run."""
    from tests.conftest import jaccli_command

    points = np.random.default_rng(0).uniform([0.5, 0.0], [2.0, 6.3], (5, 2)).astype(dtype)
    np.save(tmp_path / "p.npy", points)
    out = tmp_path / "j.zarr"
    done = subprocess.run(
        [*jaccli_command(), "jacobian", "--fn", "polar", "--points", f"x=@{tmp_path / 'p.npy'}",
         "--dtype", dtype, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"jacobian: wrote {out}: J 5x2x2"), lines
    r, theta = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    closed = np.stack(
        [np.stack([np.cos(theta), -r * np.sin(theta)], -1),
         np.stack([np.sin(theta), r * np.cos(theta)], -1)], 1,
    )  # fmt: skip
    np.testing.assert_allclose(_stored(out), closed, rtol=1e-6 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("entry", ["done/c/0", "digest/c/0", "inputs/x/c/0", "zarr.json"])
def test_a_store_holding_a_fifo_is_refused_by_resume_at_once(
    jaccli: Cli, tmp_path: Path, entry: str
) -> None:
    """zarr opens whatever a store holds: a done marker, digest or metadata file replaced
    with a FIFO made --resume wait for ever on it. It is refused in one line; --force
    replaces the store where its metadata is still its own. The store is written in this
    process; the runs that meet the FIFO are processes of their own, under a timeout."""
    from tests.conftest import jaccli_command

    out = tmp_path / "j.zarr"
    run = ["jacobian", "--expr", "softmax(x, dim=0)", "--shape", "24", "--dtype", "float64",
           "--max-memory", "64MiB", "--out", str(out)]  # fmt: skip
    assert jaccli(*run).exit_code == 0  # type: ignore[attr-defined]
    args = [*jaccli_command(), *run]
    (out / entry).unlink()
    os.mkfifo(out / entry)
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 2
    assert resumed.stderr == (
        f"jacobian: --resume: {out}: {entry} is not a regular file; use --force to replace "
        "the store\n"
    )
    forced = subprocess.run([*args, "--force"], capture_output=True, text=True, timeout=120)
    if entry == "zarr.json":  # no longer says it is a store jaccli wrote
        assert forced.returncode == 2 and "is not a store jaccli wrote" in forced.stderr
    else:
        assert forced.returncode == 0, forced.stderr
        assert not np.isnan(_stored(out)).any()


def test_points_from_a_fifo_named_npy_are_refused_at_once(tmp_path: Path) -> None:
    """np.load of a FIFO waits for a writer that never comes."""
    from tests.conftest import jaccli_command

    os.mkfifo(tmp_path / "p.npy")
    done = subprocess.run(
        [*jaccli_command(), "jacobian", "--fn", "polar", "--points", f"x=@{tmp_path / 'p.npy'}",
         "--out", str(tmp_path / "j.zarr")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"jacobian: --points x=@{tmp_path / 'p.npy'}: is not a regular file (a pipe, socket, "
        "device or directory); refused"
    ]
    assert not (tmp_path / "j.zarr").exists()


def test_a_local_cluster_run_leaves_only_jaccli_lines_on_stderr(tmp_path: Path) -> None:
    """A whole `--cluster local:2` process, to its os._exit: its stderr is jaccli's summary
    line alone, no `resource_tracker: ... leaked semaphore objects` after it (NOTE [the
    semaphores of a LocalCluster] in blocks/cluster.py); a user's file, run by the worker
    jaccli forks, the same."""
    from tests.conftest import jaccli_command

    model = f"{_model(tmp_path)}:f"
    for function in (["--expr", "softmax(x, dim=0)"], ["--fn", model]):
        out = tmp_path / "j.zarr"
        done = subprocess.run(
            [*jaccli_command(), "jacobian", *function, "--shape", "64", "--out", str(out),
             "--force", "--cluster", "local:2"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"jacobian: wrote {out}: J 64x64"), lines
