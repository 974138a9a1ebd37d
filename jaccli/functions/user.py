"""Loading the user's own callable: `path/to/file.py:func` or `package.module:func`.

This runs the user's code with the user's rights, as `python file.py` would.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from jaccli.errors import UsageError
from jaccli.functions.model import Function, InputSpec


def looks_like_callable_reference(text: str) -> bool:
    """`file.py:func` and `pkg.mod:func` name user callables; preset names have no colon."""
    return ":" in text


def load_callable(reference: str) -> Function:
    """The Function for `file.py:func` or `pkg.mod:func`: inputs from the signature."""
    target, _, attribute = reference.rpartition(":")
    if not target or not attribute:
        raise UsageError(
            f"--fn {reference!r}: expected path/to/file.py:func or package.module:func",
            code="bad_function",
        )
    is_file = target.endswith(".py") or os.sep in target or "/" in target
    module = _load_file(target) if is_file else _import_module(target)
    source = getattr(module, "__file__", None) if is_file else None
    if not hasattr(module, attribute):
        defined = _defined_callables(module)
        listed = ", ".join(defined) if defined else "none"
        raise UsageError(
            f"--fn {reference!r}: {target} has no {attribute!r} (callables it defines: {listed})",
            code="bad_function",
        )
    function = getattr(module, attribute)
    if not callable(function):
        raise UsageError(
            f"--fn {reference!r}: {attribute!r} is a {type(function).__name__}, not callable",
            code="bad_function",
        )
    inputs = _inputs_of(function, reference)
    return Function(
        name=attribute,
        formula=f"y = {attribute}({', '.join(spec.name for spec in inputs)})",
        inputs=inputs,
        call=function,
        source_file=source,
    )


def _load_file(path_text: str) -> ModuleType:
    path = Path(path_text)
    if not path.exists():
        raise UsageError(f"--fn: file {path_text!r} does not exist", code="bad_function")
    if path.is_dir():
        raise UsageError(f"--fn: {path_text!r} is a directory, not a .py file", code="bad_function")
    if path.suffix != ".py":
        raise UsageError(f"--fn: {path_text!r} is not a .py file", code="bad_function")
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--fn: cannot read {path_text!r}: {error}", code="bad_function") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as error:
        raise UsageError(
            f"--fn: syntax error in {path_text}:{error.lineno}: {error.msg}", code="bad_function"
        ) from None
    # A name of our own: the file never replaces, nor is replaced by, a module of the same name.
    module_name = f"jaccli_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)  # the user's own file, run as `python file.py` would
    except Exception as error:
        del sys.modules[module_name]
        raise UsageError(
            f"--fn: importing {path_text} raised {type(error).__name__}: {error}",
            code="bad_function",
        ) from error
    return module


def _import_module(name: str) -> ModuleType:
    """Import `name` from the installed packages; the current directory cannot shadow it."""
    here = {"", ".", os.getcwd()}
    saved = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if entry not in here]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise UsageError(f"--fn: no module named {error.name!r}", code="bad_function") from None
    except Exception as error:
        raise UsageError(
            f"--fn: importing {name} raised {type(error).__name__}: {error}", code="bad_function"
        ) from error
    finally:
        sys.path[:] = saved


def _defined_callables(module: ModuleType) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and callable(value)
        and getattr(value, "__module__", None) == module.__name__
    )


def _signature(function: Any, reference: str) -> inspect.Signature:
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        raise UsageError(
            f"--fn {reference!r}: cannot read the parameters of {function!r}", code="bad_function"
        ) from None


def _inputs_of(function: Any, reference: str) -> tuple[InputSpec, ...]:
    """One input per parameter; a parameter with a default keeps it unless given a value."""
    inputs = []
    for parameter in _signature(function, reference).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise UsageError(
                f"--fn {reference!r}: *{parameter.name} parameters are not supported; "
                "name each input",
                code="bad_function",
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise UsageError(
                f"--fn {reference!r}: positional-only parameter {parameter.name!r} cannot be "
                "given by name",
                code="bad_function",
            )
        has_default = parameter.default is not parameter.empty
        inputs.append(
            InputSpec(
                parameter.name,
                default_shape=None,
                has_default=has_default,
            )
        )
    return tuple(inputs)
