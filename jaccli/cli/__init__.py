"""The command line: the Typer app, `--version`, and the commands (commands.py) with their
options from the table (jaccli/options.py); the error boundary (boundary.py) and the printing
of an outcome (show.py).

The only package that imports Typer, and nothing imports it but `jaccli.__main__`. torch is
imported inside the commands that compute, so `jaccli --help` and `jaccli presets` never pay
for it.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from jaccli.cli.boundary import reporting
from jaccli.cli.commands import CALLBACKS, EXAMPLES
from jaccli.errors import ExitCode
from jaccli.output import report_error, write, write_result
from jaccli.overview import COMMANDS as SUMMARIES
from jaccli.overview import DESCRIPTION, VERSION_HELP

__all__ = ["EXAMPLES", "app", "run"]

# Click's base exception, found through Typer so it works whether Typer vendors Click or not.
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


class JaccliGroup(TyperGroup):
    """Turns Click's own usage errors into the one-line form every other error has."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        argv = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
        try:
            status = super().main(*args, standalone_mode=False, **kwargs)
        except _ClickException as error:
            if type(error).__name__ == "NoArgsIsHelpError":
                write(sys.stderr, error.format_message() + "\n")
                sys.exit(ExitCode.USAGE)
            report_error("jaccli", "usage", error.format_message(), "--json" in argv)
            sys.exit(getattr(error, "exit_code", ExitCode.USAGE))
        except typer.Abort:
            sys.exit(ExitCode.INTERRUPTED)
        sys.exit(status if isinstance(status, int) else ExitCode.OK)


app = typer.Typer(
    cls=JaccliGroup,
    name="jaccli",
    help=DESCRIPTION,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(asked: bool) -> None:
    """`jaccli --version`: jaccli's, torch's and Python's versions, without importing torch."""
    if not asked:
        return
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from jaccli import __version__

    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    with reporting("jaccli", False, False):
        write_result(
            f"jaccli {__version__}, torch {torch_version}, Python {platform.python_version()}\n"
        )
    raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help=VERSION_HELP),
    ] = False,
) -> None:
    """The app's own options; its help text is `overview.DESCRIPTION`."""


def _help(callback: Any) -> str:
    """The command's help: its docstring with the line breaks inside a paragraph joined
    (Typer's Rich help keeps them, which broke sentences mid-line at any terminal width)."""
    paragraphs = inspect.cleandoc(callback.__doc__ or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _epilog(name: str) -> str:
    """The command's examples as a help epilog (Rich markup: brackets escaped)."""
    lines = (line.replace("[", "\\[") for line in EXAMPLES[name])
    return "Examples:\n\n" + "\n\n".join(lines)


for _name in SUMMARIES:  # in the order `jaccli --help` lists them
    app.command(
        _name, help=_help(CALLBACKS[_name]), short_help=SUMMARIES[_name], epilog=_epilog(_name)
    )(CALLBACKS[_name])


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the app on `argv` (default sys.argv[1:]) and exit with its status."""
    app(args=list(argv) if argv is not None else None, prog_name="jaccli")
    raise AssertionError("unreachable: the app exits")
