"""ASCII stand-ins for jaccli's glyphs, for a stream that cannot encode them (LC_ALL=C).

A renderable is translated before Rich lays it out, so columns are as wide as what is printed.
"""

from __future__ import annotations

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

ASCII_GLYPHS = str.maketrans(
    {
        "∂": "d", "‖": "|", "₂": "_2", "²": "^2", "ᵀ": "^T", "·": "*", "×": "x", "…": "...",
        "⋮": ":", "✓": "ok", "✗": "FAIL", "≤": "<=", "≥": ">=", "θ": "theta", "φ": "phi",
        "Σ": "sum", "ε": "eps", "—": "-", "–": "-", "─": "-", "│": "|", "→": "->", "↦": "->",
        "⋅": "*", "δ": "delta", "−": "-", "ᵢ": "_i", "ₖ": "_k", "░": "-", "▒": "+", "▓": "x",
        "█": "#", "▀": "'", "▄": ",", "┼": "+", "∞": "!",
    }
)  # fmt: skip


def ascii_text(text: str) -> str:
    """`text` with jaccli's glyphs spelt in ASCII (others are left for the encoder to replace)."""
    return text.translate(ASCII_GLYPHS)


def ascii_renderable(renderable: RenderableType) -> RenderableType:
    """The same renderable with every string in it spelt in ASCII (text styles are kept, the
    styled spans within a text are not)."""
    if isinstance(renderable, str):
        return ascii_text(renderable)
    if isinstance(renderable, Text):
        return Text(
            ascii_text(renderable.plain),
            style=renderable.style,
            justify=renderable.justify,
            overflow=renderable.overflow,
            no_wrap=renderable.no_wrap,
            end=renderable.end,
        )
    if isinstance(renderable, Group):
        return Group(*(ascii_renderable(r) for r in renderable.renderables))
    if isinstance(renderable, Columns):
        renderable.renderables = [ascii_renderable(r) for r in renderable.renderables]
        return renderable
    if isinstance(renderable, Table):
        for column in renderable.columns:
            column.header = ascii_renderable(column.header)
            column._cells = [ascii_renderable(cell) for cell in column._cells]
        if renderable.title is not None:
            renderable.title = ascii_renderable(renderable.title)  # type: ignore[assignment]
        return renderable
    return renderable
