"""Turning `--fn` or `--expr` into a Function: a preset, a user callable or an expression."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from jaccli.arrays import DEFAULT_VALUE_LIMIT
from jaccli.errors import UsageError
from jaccli.functions.expression import compile_expression
from jaccli.functions.model import Function, InputSpec
from jaccli.functions.presets import PRESETS
from jaccli.functions.user import (
    load_callable,
    looks_like_callable_reference,
    looks_like_file,
    missing_function_error,
)

__all__ = ["PRESETS", "Function", "InputSpec", "resolve"]


def resolve(
    name: str | None,
    expression: str | None = None,
    given_names: Sequence[str] = (),
    size_limit: int = DEFAULT_VALUE_LIMIT,
) -> Function:
    """The Function that `--fn` (a preset, `file.py:func`, `pkg.mod:func`) or `--expr` names;
    `given_names`, the inputs named by --shape and --value, name a builtin's inputs; a file
    of the user's is read only up to `size_limit` bytes (--max-value-size)."""
    if (name is None) == (expression is None):
        raise UsageError("give one of --fn NAME or --expr EXPRESSION", code="no_function")
    if expression is not None:
        return compile_expression(expression)
    assert name is not None
    if name in PRESETS:
        return PRESETS[name]
    if looks_like_callable_reference(name):
        return load_callable(name, given_names, size_limit)
    if looks_like_file(name):
        raise missing_function_error(name, size_limit)
    available = ", ".join(PRESETS)
    close = difflib.get_close_matches(name, PRESETS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(
        f"unknown function {name!r}; {hint}presets: {available}", code="unknown_function"
    )
