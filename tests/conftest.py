"""Shared helpers: run the CLI in-process, and reference Jacobians computed independently."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

import jaccli as jaccli_package
from jaccli.cli import app

# NOTE [one torch thread a worker]: the suite runs two workers on two cores (pyproject's
# addopts); with torch's default of a thread a core each worker's idle intra-op threads spin
# while the other worker computes. Each worker computes on one thread; the processes the
# tests start keep torch's default, as a user's would.
torch.set_num_threads(1)

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, text: str) -> None:
    """`text` must be the reviewed layout in tests/golden/`name` (JACCLI_UPDATE_GOLDEN=1
    rewrites it, for review in the diff)."""
    path = GOLDEN / name
    if os.environ.get("JACCLI_UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), (
        f"layout changed; review and rerun with JACCLI_UPDATE_GOLDEN=1 ({path})"
    )


SCHEMA_PATH = Path(jaccli_package.__file__).parent / "schema" / "document-2.schema.json"
_VALIDATOR = Draft202012Validator(json.loads(SCHEMA_PATH.read_text(encoding="utf-8")))


def validate_document(document: Any) -> None:
    """Fail the test unless `document` is valid under the shipped JSON Schema."""
    errors = sorted(_VALIDATOR.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path)
        pytest.fail(f"document invalid at /{where}: {errors[0].message[:300]}")


def validate_output(args: Sequence[str], stdout: str, stderr: str) -> None:
    """Every JSON document a --json run printed (stdout, and an error object on stderr) must
    follow the schema."""
    if "--json" not in args:
        return
    if stdout.strip():
        validate_document(json.loads(stdout))
    for line in stderr.splitlines():
        if line.startswith("{"):
            validate_document(json.loads(line))


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def jaccli() -> Callable[..., Run]:
    """Run `jaccli ARGS` in this process at a fixed 100-column width, with colour off; every
    JSON document it prints is validated against the shipped schema."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, width: int = 100) -> Run:
        result = runner.invoke(
            app, list(args), input=input, env={"COLUMNS": str(width), "NO_COLOR": "1"}
        )
        validate_output(args, result.stdout, result.stderr)
        return Run(result.exit_code, result.stdout, result.stderr)

    return run


def finite_difference_jacobian(
    f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, step: float = 1e-6
) -> np.ndarray:
    """Central differences in float64: J[..., j] = (f(x + h e_j) - f(x - h e_j)) / 2h."""
    x = np.asarray(x, dtype=np.float64)
    y_shape = np.shape(f(x))
    columns = []
    for j in range(x.size):
        e = np.zeros(x.size)
        e[j] = step
        e = e.reshape(x.shape)
        columns.append((np.asarray(f(x + e)) - np.asarray(f(x - e))) / (2 * step))
    return np.stack(columns, axis=-1).reshape(*y_shape, *x.shape)


def values_of(entry: dict[str, Any]) -> np.ndarray:
    """A `{"shape", "values"}` entry of a JSON document as a float64 array of that shape."""
    array = np.array(entry["values"], dtype=np.float64)
    assert list(array.shape) == entry["shape"]
    return array


def shapes_of(document: dict[str, Any], key: str) -> dict[str, Sequence[int]]:
    return {name: entry["shape"] for name, entry in document[key].items()}


@dataclass
class Measured:
    returncode: int
    peak_kib: int
    """The peak resident memory of the command, from the kernel's accounting of children."""
    stdout: str
    stderr: str


_MEASURE = (
    "import resource, subprocess, sys\n"
    "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(done.stderr)\n"
    "sys.stdout.write(done.stdout)\n"
    "sys.stdout.write('\\n%d %d' % (done.returncode, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
)


def measure(command: Sequence[str], timeout: float = 120, env: dict | None = None) -> Measured:
    """Run `command` from a fresh Python of its own, so that the peak resident memory the kernel
    reports for its children is this command's alone."""
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "100", **(env or {})},
    )
    stdout, _, tail = done.stdout.rpartition("\n")
    returncode, peak = (int(part) for part in tail.split())
    return Measured(returncode, peak, stdout, done.stderr)


def jaccli_command() -> list[str]:
    """The console script installed beside this Python, as a new user runs it."""
    import shutil
    import sys

    script = Path(sys.executable).with_name("jaccli")
    found = str(script) if script.exists() else shutil.which("jaccli")
    if found is None:
        pytest.fail("the jaccli console script is not installed (pip install -e .)")
    return [found]
