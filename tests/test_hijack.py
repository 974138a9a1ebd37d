"""User code may not hijack the process: only jaccli writes to stdout and chooses the exit code
(NOTE [only jaccli writes to stdout], NOTE [a worker that dies without saying why]), and
--timeout stops a function that never returns.

Real processes, since descriptors, exits and signals are the point; each bounded by a timeout,
so that a hang fails the test rather than the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import jaccli_command, validate_document

MISBEHAVING = Path(__file__).parent / "fixtures" / "misbehaving.py"
ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}


def fn(name: str) -> str:
    return f"{MISBEHAVING}:{name}"


def run(*args: str, timeout: float = 120, **options) -> subprocess.CompletedProcess[str]:
    options.setdefault("env", ENV)
    return subprocess.run(
        [*jaccli_command(), *args], capture_output=True, text=True, timeout=timeout, **options
    )


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_writes_to_descriptor_1_and_a_printing_thread_leave_the_json_whole() -> None:
    done = run("jacobian", "--fn", fn("writes_to_stdout"), "--shape", "3", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)  # nothing but the document
    validate_document(document)
    x = np.array(document["inputs"]["x"]["values"])
    j = np.array(document["jacobian"]["y"]["x"]["values"])
    np.testing.assert_allclose(j, np.diag(np.cos(x)), rtol=1e-6)
    for text in ("os.write to descriptor 1", "print to sys.__stdout__", "print to sys.stdout"):
        assert text in done.stderr  # moved, not lost


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("exits_0", "ended jaccli's process itself (exit status 0"),
        ("exits_3", "ended jaccli's process itself (exit status 3"),
        ("kills_itself", "was running when jaccli's process was killed by SIGKILL"),
    ],
)
def test_a_function_that_ends_the_process_is_reported_by_the_supervisor(
    name: str, says: str
) -> None:
    done = run("jacobian", "--fn", fn(name), "--shape", "3", "--json")
    assert done.returncode == 1  # never 0 (success) nor 3 (the memory guard)
    assert done.stdout == ""
    line, error = done.stderr.splitlines()
    assert line.startswith(f"jacobian: {fn(name)} ") and says in line
    assert json.loads(error)["error"]["code"] == "worker_died"


def test_timeout_stops_an_infinite_loop_and_says_where_it_was() -> None:
    done = run("jacobian", "--fn", fn("loops"), "--shape", "3", "--timeout", "1", "--json")
    assert done.returncode == 1
    assert done.stdout == ""
    line, error = done.stderr.splitlines()
    lines = MISBEHAVING.read_text().splitlines()
    loop = lines.index("def loops(x):") + 1
    shown = os.path.relpath(MISBEHAVING)
    assert line in {
        f"jacobian: {fn('loops')} did not finish within --timeout 1s "
        f"(it was at {shown}:{number} in loops); stopped"
        for number in (loop + 1, loop + 2)  # the `while` or the line inside it
    }
    assert json.loads(error)["error"]["code"] == "timeout"


def test_timeout_stops_a_function_that_swallows_the_interruption() -> None:
    done = run("jacobian", "--fn", fn("loops_stubbornly"), "--shape", "3", "--timeout", "1")
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert line.startswith(f"jacobian: {fn('loops_stubbornly')} did not finish within --timeout 1s")
    assert "in loops_stubbornly); stopped" in line


def test_out_is_written_where_asked_when_the_function_changes_directory(tmp_path: Path) -> None:
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    for folder in (here, elsewhere):
        (folder / "j.npy").write_bytes(b"old")
    done = run(
        "jacobian", "--fn", fn("moves_elsewhere"), "--value", "[1, 2]", "--out", "j.npy",
        "--force", cwd=here, env={**ENV, "JACCLI_TEST_ELSEWHERE": str(elsewhere)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(here / "j.npy"), 2 * np.eye(2, dtype=np.float32))
    assert (elsewhere / "j.npy").read_bytes() == b"old"
    assert done.stderr.endswith(f"jacobian: wrote {here / 'j.npy'}\n")


@pytest.mark.parametrize("reference", ["model.py", "model.py:f", "x=@model.json"])
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path, reference: str) -> None:
    os.mkfifo(tmp_path / reference.split(":")[0].removeprefix("x=@"))
    option = ["--value", reference, "--fn", "expsum"] if "@" in reference else ["--fn", reference]
    done = run("jacobian", *option, "--shape", "2x3", cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert "is not a regular file (a pipe, socket or device); refused" in one_line(done.stderr)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_stdout_says_it_cannot_write() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*jaccli_command(), "jacobian", "--fn", "expsum", "--json"],
            stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == (
        "jacobian: cannot write the result to stdout: No space left on device"
    )


@pytest.mark.parametrize(
    ("args", "redirect", "says"),
    [
        ("jacobian --fn expsum --value x=@-", "<&-", "jacobian: --value @-: standard input"),
        ("jacobian --fn expsum --points x=@- --jsonl", "<&-", "jacobian: --points x=@-: standard"),
        ("jacobian --fn expsum", ">&-", "jacobian: standard output is closed (>&-)"),
        ("presets", ">&-", "presets: standard output is closed (>&-)"),
    ],
)  # fmt: skip
def test_closed_standard_streams_are_named_with_exit_2(args: str, redirect: str, says: str) -> None:
    command = " ".join([*jaccli_command(), args, redirect])
    done = subprocess.run(
        ["sh", "-c", f"exec {command}"], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert done.returncode == 2
    assert one_line(done.stderr).startswith(says)


def test_a_stream_of_points_answers_each_line_through_the_supervisor() -> None:
    """A coprocess: one line in, its answer out, before the next line is written."""
    command = [*jaccli_command(), "jacobian", "--fn", fn("slow_sine"), "--points", "x=@-"]
    with subprocess.Popen(
        [*command, "--jsonl"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=ENV, text=True,
    ) as process:  # fmt: skip
        assert process.stdin is not None and process.stdout is not None
        answers = []
        for point in ([0.0, 1.0], [2.0, 3.0]):
            process.stdin.write(json.dumps(point) + "\n")
            process.stdin.flush()
            answers.append(json.loads(process.stdout.readline()))
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    for k, (answer, point) in enumerate(zip(answers, ([0.0, 1.0], [2.0, 3.0]), strict=True)):
        assert answer["point"] == k
        j = np.array(answer["jacobian"]["y"]["x"]["values"])
        np.testing.assert_allclose(j, np.diag(np.cos(point)), rtol=1e-6)
