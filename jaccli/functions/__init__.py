"""Turning a `--fn` name into a Function: presets now, user callables and expressions later."""

from __future__ import annotations

import difflib

from jaccli.errors import UsageError
from jaccli.functions.model import Function, InputSpec
from jaccli.functions.presets import PRESETS

__all__ = ["PRESETS", "Function", "InputSpec", "resolve"]


def resolve(name: str) -> Function:
    """The Function a `--fn` value names."""
    if name in PRESETS:
        return PRESETS[name]
    available = ", ".join(PRESETS)
    if ":" in name:
        raise UsageError(
            f"--fn {name!r} names a Python callable; loading your own functions is not "
            f"supported yet (presets: {available})",
            code="unknown_function",
        )
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown function {name!r}; {hint}presets: {available}", code="unknown_function"
    )
