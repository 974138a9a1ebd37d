"""Each command's Typer parameters, built from the table of options (jaccli/options.py): the
flags, help, panels, metavars, defaults and shell completion are declared there once."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

from jaccli.options import Option, options_of


def _choices(*choices: str) -> Callable[[str], list[str]]:
    """Shell completion of an option with fixed choices: those that start with what was typed."""

    def complete(incomplete: str) -> list[str]:
        return [choice for choice in choices if choice.startswith(incomplete)]

    return complete


def _parameter(option: Option) -> inspect.Parameter:
    """The Typer parameter of one option."""
    completion = option.complete or (_choices(*option.choices) if option.choices else None)
    low, high = option.limits or (None, None)
    info = typer.Option(
        *option.flags,
        help=option.help,
        rich_help_panel=option.panel,
        metavar=option.metavar,
        autocompletion=completion,
        show_default=option.default is not None,
        min=low,
        max=high,
    )
    return inspect.Parameter(
        option.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=option.default,
        annotation=Annotated[option.annotation, info],
    )


def signature(command: str) -> inspect.Signature:
    """The signature Typer reads the command's options from, in the order its help lists them."""
    return inspect.Signature([_parameter(option) for option in options_of(command)])


def with_options(command: str, callback: Callable[..., Any]) -> Callable[..., Any]:
    """`callback(**options)` with the command's options as its signature."""
    callback.__signature__ = signature(command)  # type: ignore[attr-defined]
    return callback
