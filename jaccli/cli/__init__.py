"""The command line: the Typer app, `--version`, and the commands (commands.py) with their
options from the table (jaccli/options.py); the error boundary (boundary.py) and the printing
of an outcome (show.py).

The only package that imports Typer, and nothing imports it but `jaccli.__main__`. torch is
imported inside the commands that compute, so `jaccli --help` and `jaccli presets` never pay
for it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperCommand, TyperGroup

from jaccli.cli.boundary import reporting
from jaccli.cli.commands import CALLBACKS, EXAMPLES
from jaccli.errors import ExitCode
from jaccli.help import printed_help
from jaccli.output import report_error, write, write_result
from jaccli.overview import COMMANDS as SUMMARIES
from jaccli.overview import DESCRIPTION, DETAILS, VERSION_HELP

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


class JaccliCommand(TyperCommand):
    """A command whose help is the one jaccli/help.py draws from the table of options, as
    `jaccli CMD --help` prints it before the app is built (one help, not two)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        formatter.write(printed_help(self.name or "", sys.stdout))


def _help(name: str) -> str:
    """The command's help as Typer keeps it (shell completion shows its first line)."""
    return "\n\n".join((SUMMARIES[name], *DETAILS[name])).replace("[", "\\[")


for _name in SUMMARIES:  # in the order `jaccli --help` lists them
    app.command(_name, cls=JaccliCommand, help=_help(_name), short_help=SUMMARIES[_name])(
        CALLBACKS[_name]
    )


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the app on `argv` (default sys.argv[1:]) and exit with its status."""
    app(args=list(argv) if argv is not None else None, prog_name="jaccli")
    raise AssertionError("unreachable: the app exits")
