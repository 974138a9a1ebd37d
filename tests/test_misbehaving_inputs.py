"""Files, streams and outputs that are not what they seem: each gets its own line and exit code,
never an internal error or a leaked warning (issue 18, files and streams)."""

from __future__ import annotations

import resource
from pathlib import Path

import numpy as np
import pytest

MISBEHAVING = Path(__file__).parent / "fixtures" / "misbehaving.py"


def fn(name: str) -> str:
    return f"{MISBEHAVING}:{name}"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("empty", "empty returned y with no elements (shape 0); J of an empty output is empty"),
        ("sparse", "sparse returned y as a torch.sparse_coo tensor; return a dense one"),
        ("meta", "meta returned y on the meta device, which holds no values"),
    ],
)
def test_an_output_without_usable_values_exits_1(jaccli, name: str, says: str) -> None:
    run = jaccli("jacobian", "--fn", fn(name), "--shape", "3")
    assert run.exit_code == 1
    assert run.stderr.startswith(f"jacobian: {says}") and len(run.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("asynchronous", "'asynchronous' is an async def function"),
        ("generator", "'generator' is a generator (it yields)"),
    ],
)
def test_async_and_generator_functions_are_refused_before_a_call(jaccli, name, says) -> None:
    run = jaccli("jacobian", "--fn", fn(name), "--shape", "3")
    assert run.exit_code == 2
    assert says in run.stderr and len(run.stderr.splitlines()) == 1  # no "never awaited"


def test_a_directory_named_like_an_array_file_is_refused(jaccli, tmp_path: Path) -> None:
    (tmp_path / "dir.npy").mkdir()
    run = jaccli("jacobian", "--fn", "expsum", "--value", f"x=@{tmp_path / 'dir.npy'}")
    assert run.exit_code == 2
    assert run.stderr == f"jacobian: --value @{tmp_path / 'dir.npy'}: is a directory, not a file\n"


def test_an_npy_header_with_a_boolean_dimension_is_refused(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.ones(1, dtype=np.float32))
    path.write_bytes(path.read_bytes().replace(b"'shape': (1,), ", b"'shape': (True,),"))
    run = jaccli("jacobian", "--expr", "x.sin()", "--value", f"x=@{path}")
    assert run.exit_code == 2
    assert run.stderr == (
        f"jacobian: --value @{path}: header's shape (True,) is not a tuple of sizes; refused\n"
    )


DEEP = "[" * 2000 + "1" + "]" * 2000


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (["--value", f"x={DEEP}"], None, "--value: lists nested too deep"),
        (["--points", "x=@-", "--jsonl"], DEEP + "\n", "--points x=@- line 1: lists nested too"),
    ],
)
def test_lists_nested_thousands_deep_are_refused(jaccli, args, stdin, says) -> None:
    run = jaccli("jacobian", "--expr", "x.sin()", *args, input=stdin)
    assert run.exit_code == 2
    assert says in run.stderr and "(an array has at most 64 dimensions)" in run.stderr


@pytest.mark.parametrize("reference", ["/dev/zero", "/dev/zero.py:f"])
def test_a_device_as_the_function_file_is_never_read(jaccli, reference: str) -> None:
    run = jaccli("jacobian", "--fn", reference, "--shape", "3")
    assert run.exit_code == 2
    assert len(run.stderr.splitlines()) == 1
    if reference == "/dev/zero":
        assert "--fn /dev/zero: is not a regular file (a pipe, socket or device)" in run.stderr


def test_a_function_file_over_the_size_limit_is_refused(jaccli, tmp_path: Path) -> None:
    path = tmp_path / "big.py"
    path.write_text("def f(x):\n    return x\n" + "#" * 2000 + "\n")
    run = jaccli("jacobian", "--fn", f"{path}:f", "--shape", "3", "--max-value-size", "1KiB")
    assert run.exit_code == 2
    assert "over the limit of 1.0 KiB; raise it with --max-value-size" in run.stderr


@pytest.mark.parametrize("seconds", ["0", "-1", "soon", "nan"])
def test_a_bad_timeout_is_a_usage_error(jaccli, seconds: str) -> None:
    run = jaccli("jacobian", "--fn", "expsum", "--timeout", seconds)
    assert run.exit_code == 2
    assert run.stderr.startswith(f"jacobian: bad --timeout {seconds!r}: expected a number")


@pytest.fixture
def full_disk():
    """Writes past 8 KiB fail as on a full disk (EFBIG: Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors", ".csv", ".png"])
def test_every_out_format_says_it_cannot_write_on_a_full_disk(
    jaccli, tmp_path: Path, suffix: str, full_disk
) -> None:
    path = tmp_path / f"j{suffix}"
    run = jaccli("jacobian", "--expr", "x.sin() * x.sum()", "--shape", "60", "--out", str(path))
    assert run.exit_code == 1
    assert run.stderr.startswith(f"jacobian: cannot write --out '{path}': ")
    assert len(run.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # nor a half-written file, nor a temporary one
