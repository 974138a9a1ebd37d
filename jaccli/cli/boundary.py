"""The error boundary: every error becomes one line on stderr and its exit code, never a
traceback; Python warnings become one-line jaccli warnings; the run stops at its --timeout."""

from __future__ import annotations

import sys
import traceback as traceback_module
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer

from jaccli import memory, messages
from jaccli.errors import ExitCode, Interrupt, JaccliError
from jaccli.output import report_error, results_kept_apart, write
from jaccli.request import Request
from jaccli.timeout import Expired, TimedOut, Timeout, time_limit, timeout_error


class Boundary:
    """What the boundary knows of the run inside it: the --timeout it runs under, once the
    request is parsed."""

    def __init__(self) -> None:
        self.limit: Timeout | None = None

    @contextmanager
    def running(self, request: Request) -> Iterator[None]:
        """Run the request with its result written to stdout by jaccli alone (NOTE [only
        jaccli writes to stdout] in output.py), stopped at its --timeout."""
        seconds = request.limits.timeout
        self.limit = None if seconds is None else Timeout(seconds, request.function.label)
        with results_kept_apart(), time_limit(self.limit):
            yield


@contextmanager
def reporting(command: str, as_json: bool, show_traceback: bool) -> Iterator[Boundary]:
    """The error boundary: JaccliError becomes one line and its exit code, never a traceback.

    Python warnings raised inside it (torch's, numpy's, the user's) are held back and printed
    as one-line jaccli warnings, without the install paths Python's own form shows; the memory
    budget held is lifted at the end.
    """
    boundary = Boundary()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            with _error_boundary(command, as_json, show_traceback, lambda: boundary.limit):
                yield boundary
        finally:
            memory.release()
            for text in dict.fromkeys(_warning_line(w) for w in caught if _worth_showing(w)):
                write(sys.stderr, f"{command}: warning: {messages.visible(text)}\n")


def _worth_showing(caught: warnings.WarningMessage) -> bool:
    """A warning about the user's code or data, not torch's notes on its own internals."""
    return not issubclass(caught.category, DeprecationWarning | FutureWarning)


def _warning_line(caught: warnings.WarningMessage) -> str:
    text = str(caught.message).strip()
    return f"{caught.category.__name__}: {text.splitlines()[0] if text else ''}"[:300]


def _interrupted(error: BaseException) -> bool:
    """Whether Ctrl-C is behind this error: Python wraps a KeyboardInterrupt that lands inside
    some machinery (a class body's __set_name__ during an import) in a RuntimeError."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextmanager
def _error_boundary(
    command: str,
    as_json: bool,
    show_traceback: bool,
    limit: Callable[[], Timeout | None] = lambda: None,
) -> Iterator[None]:
    try:
        yield
    except (typer.Exit, KeyboardInterrupt):
        raise
    except BrokenPipeError:  # the reader has all it wants (`| head`): end quietly
        raise typer.Exit(ExitCode.OK) from None
    except TimedOut as error:
        timeout = limit()
        assert timeout is not None
        _report(command, timeout_error(timeout, error.where), as_json, show_traceback)
    except Exception as error:
        if Interrupt.seen or _interrupted(error):
            raise KeyboardInterrupt from None
        timeout = limit()
        if timeout is not None and Expired.where is not None:  # TimedOut, wrapped in another
            error = timeout_error(timeout, Expired.where)
        _report(command, error, as_json, show_traceback)


def _report(command: str, error: Exception, as_json: bool, show_traceback: bool) -> NoReturn:
    """One line (and the JSON object) for the error, then its exit code."""
    if show_traceback:
        traceback_module.print_exc()
    if memory.out_of_memory(error):
        error = memory.refusal(error)
    if isinstance(error, JaccliError):
        report_error(command, error.code, error.message, as_json)
        raise typer.Exit(error.exit_code) from None
    message = (
        f"internal error: {type(error).__name__}: {messages.first_line(error)[:300]} "
        "(run with --traceback)"
    )
    report_error(command, "internal", message, as_json)
    raise typer.Exit(ExitCode.COMPUTATION) from None
