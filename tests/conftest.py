"""Shared helpers: run the CLI in-process, and reference Jacobians computed independently."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from jaccli.cli import app


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def jaccli() -> Callable[..., Run]:
    """Run `jaccli ARGS` in this process at a fixed 100-column width, with colour off."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None, width: int = 100) -> Run:
        result = runner.invoke(
            app, list(args), input=input, env={"COLUMNS": str(width), "NO_COLOR": "1"}
        )
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
