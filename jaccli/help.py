"""`jaccli COMMAND --help`: the command's usage, description, options by panel and examples,
drawn from the table of options (jaccli/options.py) and the texts of jaccli/overview.py.

Typer's help formatter loads a Markdown parser and Pygments and has Rich lay out a table per
panel: about three times the cost of importing Typer and Rich, for text that never changes.
This module draws the same panels with plain strings (no Typer, no Rich), for `__main__`'s fast
path and for the app's commands alike (cli/__init__.py), so there is one help, not two.

Every piece of text is stripped of control characters before it is laid out (the names are
ours, but nothing printed may carry a terminal escape), and colour is added only on a terminal,
never under NO_COLOR.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from collections.abc import Iterable
from typing import Any

from jaccli.options import Option, options_of
from jaccli.overview import COMMANDS, DETAILS, EXAMPLES

HELP_OPTION = ("--help", "-h", "", "Show this message and exit.")
"""The row of the panel every command's help opens with."""
MIN_WIDTH = 40
"""Narrower terminals get the help laid out for this width (lines then wrap in the terminal)."""
MIN_HELP_COLUMN = 20
"""Below this, an option's help goes under its flags rather than beside them."""
STYLES = {
    "usage": "33",  # yellow
    "command": "1",  # bold
    "long": "1;36",  # bold cyan
    "short": "1;32",  # bold green
    "metavar": "1;33",  # bold yellow
    "border": "2",  # dim
    "default": "2",
    "detail": "2",
}
"""SGR codes of Typer's help styles."""
ASCII_BOX = str.maketrans({"╭": "+", "╮": "+", "╰": "+", "╯": "+", "─": "-", "│": "|"})


def printable(text: str) -> str:
    """`text` without control or format characters (no escape sequence can get through)."""
    return "".join(c for c in text if unicodedata.category(c)[0] != "C")


def cells(text: str) -> int:
    """The terminal cells `text` takes (wide East Asian characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def wrap(text: str, width: int) -> list[str]:
    """`text`'s words in lines of at most `width` cells; a longer word is cut."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        while cells(word) > width:
            if line:
                lines.append(line)
                line = ""
            cut = width
            while cells(word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        if not line:
            line = word
        elif cells(line) + 1 + cells(word) <= width:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    if line or not lines:
        lines.append(line)
    return lines


class _Canvas:
    """Lines of text, coloured or not."""

    def __init__(self, width: int, colour: bool) -> None:
        self.width = width
        self.colour = colour
        self.lines: list[str] = []

    def paint(self, text: str, style: str, pad: int | None = None) -> str:
        """`text` (padded to `pad` cells) in `style`; the padding stays unstyled."""
        spaces = " " * (pad - cells(text)) if pad is not None else ""
        if not self.colour or not text:
            return text + spaces
        return f"\x1b[{STYLES[style]}m{text}\x1b[0m{spaces}"

    def paragraph(self, text: str, style: str | None = None) -> None:
        for line in wrap(text, self.width - 2):
            self.lines.append(" " + (self.paint(line, style) if style else line))
        self.lines.append("")

    def panel(self, title: str, rows: Iterable[tuple[str, str, str, str]]) -> None:
        """A rounded box titled `title`, one row an option: long flags, short flags, metavar,
        help (its default already in it)."""
        rows = list(rows)
        inner = self.width - 4
        widths = [max(cells(row[k]) for row in rows) for k in range(3)]
        used = sum(w + 2 for w in widths if w)
        beside = inner - used >= MIN_HELP_COLUMN
        border = self.paint
        top = f"╭─ {title} " + "─" * max(self.width - cells(title) - 5, 0) + "╮"
        self.lines.append(border(top, "border"))
        for row in rows:
            head = "".join(
                self.paint(text, style, width + 2)
                for text, style, width in zip(
                    row[:3], ("long", "short", "metavar"), widths, strict=True
                )
                if width
            )
            if beside:
                texts = wrap(row[3], inner - used)
                first = [head + texts[0]]
                more = [" " * used + text for text in texts[1:]]
            else:
                first = [head.rstrip()]
                more = ["    " + text for text in wrap(row[3], inner - 4)]
            for line in first + more:
                plain = cells(_plain(line))
                self.lines.append(
                    border("│", "border") + " " + line + " " * max(inner - plain, 0) + " "
                    + border("│", "border")
                )  # fmt: skip
        self.lines.append(border("╰" + "─" * (self.width - 2) + "╯", "border"))


def _plain(text: str) -> str:
    """`text` without the SGR sequences `_Canvas.paint` put in."""
    while "\x1b[" in text:
        start = text.index("\x1b[")
        text = text[:start] + text[text.index("m", start) + 1 :]
    return text


def _row(option: Option) -> tuple[str, str, str, str]:
    """An option's row: its long flags, short flags, metavar (with its range) and help (with
    its default), as Typer's help shows them."""
    longs = ", ".join(flag for flag in option.flags if flag.startswith("--"))
    shorts = ", ".join(flag for flag in option.flags if not flag.startswith("--"))
    metavar = option.metavar or ""
    if option.limits is not None:
        metavar = f"{metavar} [{option.limits[0]}<=x<={option.limits[1]}]"
    text = option.help.replace("\\[", "[")
    if option.default is not None and not isinstance(option.default, bool):
        text = f"{text} [default: {option.default}]"
    return printable(longs), printable(shorts), printable(metavar), printable(text)


def command_help(command: str, width: int, colour: bool) -> str:
    """The whole help of `command` for a terminal `width` cells wide, ending in one newline."""
    canvas = _Canvas(max(width, MIN_WIDTH), colour)
    canvas.lines.append("")
    usage = canvas.paint("Usage:", "usage") + " "
    canvas.lines.append(
        " " + usage + canvas.paint(f"jaccli {printable(command)} [OPTIONS]", "command")
    )
    canvas.lines.append("")
    canvas.paragraph(printable(COMMANDS[command]))
    for detail in DETAILS[command]:
        canvas.paragraph(printable(detail), "detail")
    canvas.panel("Options", [HELP_OPTION])
    panels: dict[str, list[tuple[str, str, str, str]]] = {}
    for option in options_of(command):
        panels.setdefault(option.panel, []).append(_row(option))
    for title, rows in panels.items():
        canvas.panel(printable(title), rows)
    canvas.lines.append("")
    canvas.paragraph("Examples:")
    for example in EXAMPLES[command]:
        canvas.paragraph(printable(example))
    return "\n".join(line.rstrip(" ") for line in canvas.lines).rstrip("\n") + "\n"


def terminal_width() -> int:
    """The terminal's width in cells: $COLUMNS, else stdout's terminal, else 80 (as Rich)."""
    import shutil

    return shutil.get_terminal_size((80, 24)).columns


def colour_wanted(stream: Any) -> bool:
    """Whether to colour: on a terminal, or with FORCE_COLOR; never with NO_COLOR or TERM=dumb."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def printed_help(command: str, stream: Any) -> str:
    """`command`'s help as it is printed on `stream`: its width and colour, in ASCII boxes on a
    stream that cannot encode the rounded ones."""
    from jaccli.output import encodable

    text = command_help(command, terminal_width(), colour_wanted(stream))
    if not encodable(stream, "╭─│╯"):
        text = text.translate(ASCII_BOX)
    return text


def print_command_help(command: str) -> None:
    """Print `command`'s help on stdout (the reader going away early is not an error)."""
    from jaccli.output import write

    try:
        write(sys.stdout, printed_help(command, sys.stdout))
    except BrokenPipeError:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
