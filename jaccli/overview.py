"""`jaccli --help`: the commands and the app's own options, drawn without building the commands.

Typer builds every command's options and loads its Rich help formatter (with a Markdown parser)
before it prints the top-level help: about 100 ms for a list of eight lines. The same panels
are drawn here from the summaries the commands themselves use (`COMMANDS`), so `jaccli --help`
costs little more than importing Rich.
"""

from __future__ import annotations

DESCRIPTION = (
    "Jacobians and their determinants, vector-Jacobian and Jacobian-vector products, Hessians "
    "and Hessian-vector products of functions, by PyTorch autograd."
)
COMMANDS = {
    "jacobian": "Compute y = f(x) and its Jacobian J.",
    "det": "Compute J and det J of a square Jacobian.",
    "vjp": "Compute the vector-Jacobian product vᵀ·J.",
    "jvp": "Compute the Jacobian-vector product J·v.",
    "hessian": "Compute the Hessian H = ∂²y/∂a∂b.",
    "hvp": "Compute the Hessian-vector product H·v.",
    "check": "Gradient-check a function in float64.",
    "presets": "List the preset functions.",
}
"""Each command's one-line summary, as `jaccli --help` lists it."""
VERSION_HELP = "Print the versions of jaccli, torch and Python, and exit."
OPTIONS = {
    "--version": VERSION_HELP,
    "--install-completion": "Install completion for the current shell.",
    "--show-completion": "Show completion for the current shell, to copy it or customize "
    "the installation.",
    "--help  -h": "Show this message and exit.",
}


def print_overview() -> None:
    """The usage line, what jaccli computes, its options and its commands, in Typer's panels."""
    from rich import box
    from rich.console import Console, Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    def panel(title: str, rows: dict[str, str], style: str) -> Panel:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0), expand=False)
        table.add_column(style=style, no_wrap=True)
        table.add_column(ratio=1)
        for name, text in rows.items():
            table.add_row(name, text)
        return Panel(table, title=title, title_align="left", border_style="dim", box=box.ROUNDED)

    console = Console(highlight=False)
    console.print(
        Group(
            Padding(
                Text.assemble(
                    ("Usage: ", "yellow"), ("jaccli [OPTIONS] COMMAND [ARGS]...", "bold")
                ),
                1,
            ),
            Padding(Text(DESCRIPTION), (0, 1, 1, 1)),
            panel("Options", OPTIONS, "bold cyan"),
            panel("Commands", COMMANDS, "bold cyan"),
            Text(""),
        )
    )
