"""How messages word things: an exception's first line, a byte count, a file's path, a long
text cut short.

Imports nothing of jaccli's: every layer words its messages with these.
"""

from __future__ import annotations

import os


def first_line(error: BaseException) -> str:
    """An exception's message folded to its first line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def format_bytes(count: float) -> str:
    """Bytes for people: `512 B`, `3.0 KiB`, `1.5 GiB`."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def shorten(text: str, limit: int = 40) -> str:
    """`text` cut to at most `limit` characters, ending in `…` when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def brief(text: str, limit: int) -> str:
    """`text` in at most about `limit` characters, cut between words (never inside a file's
    path) and keeping a trailing `(at file.py:12)` whole."""
    head, at, location = text.rpartition(" (at ")
    if not at or not location.endswith(")"):
        head, location = text, ""
    else:
        location = f" (at {location}"
    room = max(limit - len(location), 20)
    if len(head) > room:
        cut = head[: room - 2].rpartition(" ")[0] or head[: room - 2]
        head = cut.rstrip(" ,;:") + " …"
    return head + location


def visible(text: str) -> str:
    """The text with every control or invisible character spelt as its escape (`\\n`, `\\x1b`,
    `\\u200b`): a name shows what it holds and cannot move a cursor or end a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shown_path(filename: str) -> str:
    """A file's path as the user would type it: relative to here, unless it is elsewhere."""
    try:
        relative = os.path.relpath(filename)
    except ValueError:  # another drive
        return filename
    return filename if relative.startswith("..") else relative
