"""The commands, by family. Each is the same three steps: parse its options into a Request
(jaccli/options.py), run it (jaccli/runner), show the outcome (show.py); its options come from
the table, and its help (summary, paragraphs, examples) from jaccli/overview.py."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

from jaccli import overview
from jaccli.cli.boundary import reporting
from jaccli.cli.parameters import with_options
from jaccli.options import parse
from jaccli.output import write
from jaccli.request import Request

EXAMPLES: dict[str, list[str]] = {}
"""Each command's examples, shown at the end of its help (and run by the tests)."""
CALLBACKS: dict[str, Callable[..., None]] = {}
"""Each command's callback, by name."""


def run_command(command: str, given: dict[str, Any]) -> None:
    """Parse → run → show, inside the error boundary."""
    with reporting(command, given.get("json_", False), given.get("traceback", False)) as boundary:
        request = parse(command, given)
        with boundary.running(request), _resumable(request):
            from jaccli.cli.show import show
            from jaccli.runner import run

            show(run(request, _progress_bar))


@contextlib.contextmanager
def _resumable(request: Request) -> Iterator[None]:
    """Ctrl-C during a run into a .zarr store says how to finish it (the exit is still 130)."""
    try:
        yield
    except KeyboardInterrupt:
        out = request.show.out
        if request.show.to_store and out is not None and out.exists():
            write(
                sys.stderr,
                f"{request.command}: interrupted; the blocks done are kept in {out}: run the "
                "same command with --resume to compute the rest\n",
            )
        raise


def _progress_bar(description: str, unit: str | None = None) -> Any:
    """A progress bar on stderr for a long computation (Rich's progress loads when one runs)."""
    from jaccli.render.progress import progress_bar

    return progress_bar(description, unit)


def _command(callback: Callable[..., None]) -> Callable[..., None]:
    """A command: its options come from the table, its help and examples from
    jaccli/overview.py (where `jaccli CMD --help` draws them without building the app)."""
    EXAMPLES[callback.__name__] = list(overview.EXAMPLES[callback.__name__])
    CALLBACKS[callback.__name__] = with_options(callback.__name__, callback)
    return callback


# First order


@_command
def jacobian(**options: Any) -> None:
    """Compute y = f(x) and its Jacobian J."""
    run_command("jacobian", options)


@_command
def det(**options: Any) -> None:
    """Compute J and det J of a square Jacobian."""
    run_command("det", options)


@_command
def check(**options: Any) -> None:
    """Gradient-check a function in float64."""
    run_command("check", options)


# Products


@_command
def vjp(**options: Any) -> None:
    """Compute the vector-Jacobian product vᵀ·J."""
    run_command("vjp", options)


@_command
def jvp(**options: Any) -> None:
    """Compute the Jacobian-vector product J·v."""
    run_command("jvp", options)


@_command
def hvp(**options: Any) -> None:
    """Compute the Hessian-vector product H·v."""
    run_command("hvp", options)


# Second order


@_command
def hessian(**options: Any) -> None:
    """Compute the Hessian H = ∂²y/∂a∂b."""
    run_command("hessian", options)


# The presets


@_command
def presets(**options: Any) -> None:
    """List the preset functions."""
    run_command("presets", options)
