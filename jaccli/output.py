"""Writing to stdout and stderr: whole texts the stream can encode, flushed at once.

Used by the CLI only; renderers build the texts, this puts them on the streams.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from rich.console import Console, RenderableType


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


def silence_stdout() -> None:
    """Point stdout at /dev/null after its reader has gone, so that nothing more written to it,
    nor the interpreter's last flush, fails again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def report_error(command: str, code: str, message: str, as_json: bool) -> None:
    """One line on stderr naming the operation; under --json a JSON error object as well."""
    write(sys.stderr, f"{command}: {message}\n")
    if as_json:
        from jaccli.render.document import dumps, error_document

        write(sys.stderr, dumps(error_document(code, message), ensure_ascii=True) + "\n")


def emit_json(document: dict[str, Any]) -> None:
    from jaccli.render.document import dumps

    text = dumps(document)
    if not encodable(sys.stdout, text):  # \u escapes keep the document exact in ASCII
        text = dumps(document, ensure_ascii=True)
    write(sys.stdout, text + "\n")


FULL_WIDTH = 1_000_000


def emit_rich(renderable: RenderableType, full: bool = False) -> None:
    """Render the whole result first, then write it at once: no half-printed tables.

    With --full, lines are as wide as the tables need, not squeezed into the terminal.
    """
    if not encodable(sys.stdout, "∂…✓"):
        from jaccli.render.ascii import ascii_renderable

        renderable = ascii_renderable(renderable)
    console = Console(highlight=False, soft_wrap=False, width=FULL_WIDTH if full else None)
    with console.capture() as captured:
        console.print(renderable)
    write(sys.stdout, captured.get())
