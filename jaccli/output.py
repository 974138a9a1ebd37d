"""Writing to stdout and stderr: whole texts the stream can encode, flushed at once.

Used by the CLI only; renderers build the texts, this puts them on the streams.

# NOTE [only jaccli writes to stdout]
A user's function runs inside jaccli's process: while it loads, at every call, and in any
thread it starts and leaves running. Whatever it writes (`print`, `print(file=sys.__stdout__)`,
`os.write(1, …)`) must not land in the result a script reads. So before a command can run user
code, `results_kept_apart` moves jaccli's stdout to a private descriptor, the only one the
result is written to, and points descriptor 1 and `sys.stdout` at stderr for the rest of the
process. In-process (tests, where stdout is not descriptor 1) only `sys.stdout` is swapped,
and restored afterwards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jaccli.errors import ComputationError, UsageError
from jaccli.messages import visible

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

_results: Any = None
"""The stream results go to while user code may run (NOTE [only jaccli writes to stdout])."""


def result_stream() -> Any:
    """Where jaccli's result is written: stdout, or the private copy of it kept apart."""
    return _results if _results is not None else sys.stdout


@contextlib.contextmanager
def results_kept_apart() -> Iterator[None]:
    """Run a command with its result written to stdout by jaccli alone (NOTE [only jaccli
    writes to stdout]); UsageError when stdout is closed, since the result could go nowhere."""
    global _results
    stdout = result_stream()
    if stdout is None:
        raise UsageError(
            "standard output is closed (>&-); redirect it instead (> /dev/null to discard the "
            "result)",
            code="closed_stdout",
        )
    if _results is not None:  # already apart: a command run twice in one process
        yield
        return
    if stdout is not sys.__stdout__ or _descriptor(stdout) != 1:
        _results, sys.stdout = stdout, sys.stderr
        try:
            yield
        finally:
            sys.stdout, _results = stdout, None
        return
    stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)  # for good: threads the user's code started may outlive the command
    _results = open(  # noqa: SIM115 (the process's stdout, open until it ends)
        private, "w", encoding=stdout.encoding, errors=stdout.errors, closefd=True
    )
    sys.stdout = sys.stderr
    yield


def _descriptor(stream: Any) -> int | None:
    try:
        return int(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def encodable(stream: Any, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except UnicodeEncodeError:
        return False
    return True


def write(stream: Any, text: str) -> None:
    """Write text the stream can encode: glyphs it cannot are spelt in ASCII, then replaced."""
    if not encodable(stream, text):
        from jaccli.render.ascii import ascii_text

        encoding = getattr(stream, "encoding", None) or "utf-8"
        text = ascii_text(text).encode(encoding, errors="replace").decode(encoding)
    stream.write(text)
    stream.flush()


def write_result(text: str) -> None:
    """Write (part of) the result to stdout; ComputationError when it cannot take it (a full
    disk, /dev/full), BrokenPipeError when the reader has gone (`| head`)."""
    stream = result_stream()
    try:
        write(stream, text)
    except OSError as error:
        _discard_unwritten(stream)
        if isinstance(error, BrokenPipeError):
            raise
        raise ComputationError(
            f"cannot write the result to stdout: {error.strerror or error}", code="cannot_write"
        ) from None


def _discard_unwritten(stream: Any) -> None:
    """Point the stream's descriptor at /dev/null, so that the text still buffered for it is
    dropped quietly at exit rather than failing again."""
    descriptor = _descriptor(stream)
    if descriptor is None:
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, descriptor)
    os.close(null)


def report_error(command: str, code: str, message: str, as_json: bool) -> None:
    """One line on stderr naming the operation; under --json a JSON error object as well. The
    line shows control characters as escapes: a path or name the user gave (`--out`, a file's
    name) may hold an ESC sequence that would otherwise reach the terminal."""
    write(sys.stderr, f"{command}: {visible(message)}\n")
    if as_json:
        from jaccli.render.document import dumps, error_document

        write(sys.stderr, dumps(error_document(code, message), ensure_ascii=True) + "\n")


def emit_json(document: dict[str, Any]) -> None:
    from jaccli.render.document import dumps

    text = dumps(document)
    if not encodable(result_stream(), text):  # \u escapes keep the document exact in ASCII
        text = dumps(document, ensure_ascii=True)
    write_result(text + "\n")


FULL_WIDTH = 1_000_000


def result_console(**options: Any) -> Console:
    """A Console that measures and colours for the stream results go to."""
    from rich.console import Console  # only for tables and pictures: --json never draws

    return Console(file=result_stream(), **options)


def emit_rich(renderable: RenderableType, full: bool = False) -> None:
    """Render the whole result first, then write it at once: no half-printed tables.

    With --full, lines are as wide as the tables need, not squeezed into the terminal.
    """
    if not encodable(result_stream(), "∂…✓"):
        from jaccli.render.ascii import ascii_renderable

        renderable = ascii_renderable(renderable)
    console = result_console(highlight=False, soft_wrap=False, width=FULL_WIDTH if full else None)
    with console.capture() as captured:
        console.print(renderable)
    write_result(captured.get())
