"""Loading the user's own callable: `path/to/file.py:func` or `package.module:func`.

This runs the user's code with the user's rights, as `python file.py` would.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from jaccli.arrays import DEFAULT_VALUE_LIMIT
from jaccli.errors import ComputationError, UsageError
from jaccli.functions.model import Function, InputSpec
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import first_line


def looks_like_callable_reference(text: str) -> bool:
    """`file.py:func` and `pkg.mod:func` name user callables; preset names have no colon."""
    return ":" in text


def looks_like_file(text: str) -> bool:
    """`model.py`, `path/to/model`: a file, not a preset's or a module's name."""
    return text.endswith(".py") or os.sep in text or "/" in text


def missing_function_error(reference: str, size_limit: int = DEFAULT_VALUE_LIMIT) -> UsageError:
    """`--fn model.py` names a file but no function in it: list the functions it defines,
    read off its syntax tree (the file is not run); a file that cannot be read as source is
    refused as `--fn file.py:func` would refuse it."""
    defined = []
    source = read_source(reference, size_limit) if os.path.lexists(reference) else b""
    try:
        tree = ast.parse(source.decode("utf-8"))
        defined = [
            node.name
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and not node.name.startswith("_")
        ]
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        pass
    example = f"{reference}:{defined[0] if defined else 'func'}"
    listed = f" (functions it defines: {', '.join(defined)})" if defined else ""
    return UsageError(
        f"--fn {reference!r} names a file but no function in it; add one, as in "
        f"--fn {example}{listed}",
        code="bad_function",
    )


def load_callable(
    reference: str, given_names: Sequence[str] = (), size_limit: int = DEFAULT_VALUE_LIMIT
) -> Function:
    """The Function for `file.py:func` or `pkg.mod:func`: inputs from the signature, or for
    a builtin without one (`torch:sin`), from the names given on the command line; a file is
    read only if it is a regular file of at most `size_limit` bytes."""
    target, _, attribute = reference.rpartition(":")
    if not target or not attribute:
        raise UsageError(
            f"--fn {reference!r}: expected path/to/file.py:func or package.module:func",
            code="bad_function",
        )
    if not attribute.isidentifier():
        raise UsageError(
            f"--fn {reference!r}: {attribute!r} is not a Python name; expected "
            "path/to/file.py:func or package.module:func",
            code="bad_function",
        )
    is_file = looks_like_file(target)
    module = _load_file(target, size_limit) if is_file else _import_module(target, attribute)
    source = getattr(module, "__file__", None) if is_file else None
    if not hasattr(module, attribute):
        defined = _defined_callables(module)
        listed = ", ".join(defined) if defined else "none"
        raise UsageError(
            f"--fn {reference!r}: {target} has no {attribute!r} (callables it defines: {listed})",
            code="bad_function",
        )
    shown = f"{target}.{attribute}" if not is_file else attribute
    return _function_of(
        getattr(module, attribute), attribute, shown, f"--fn {reference!r}", given_names, source
    )


def callable_function(function: Any, given_names: Sequence[str] = ()) -> Function:
    """The Function for a Python callable (the API's `jaccli.jacobian(f, …)`): inputs from its
    signature, or for a builtin without one, from the names of the values given."""
    name = getattr(function, "__name__", None) or type(function).__name__
    try:
        source = inspect.getsourcefile(function)
    except TypeError:  # a builtin, or an object with __call__ defined in C
        source = None
    return _function_of(function, name, name, f"function {name!r}", given_names, source)


def _function_of(
    function: Any,
    name: str,
    shown: str,
    where: str,
    given_names: Sequence[str],
    source: str | None,
) -> Function:
    """The Function that calls `function` (named `name`, shown as `shown` in its formula);
    `where` names it in a refusal."""
    if not callable(function):
        raise UsageError(
            f"{where}: {name!r} is a {type(function).__name__}, not callable",
            code="bad_function",
        )
    if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
        raise UsageError(
            f"{where}: {name!r} is an async def function, whose calls return "
            "a coroutine, not tensors; make it a plain def",
            code="bad_function",
        )
    if inspect.isgeneratorfunction(function):
        raise UsageError(
            f"{where}: {name!r} is a generator (it yields), whose calls return "
            "a generator, not tensors; return the outputs instead",
            code="bad_function",
        )
    signature = _signature(function)
    if signature is None:  # a builtin: its inputs are positional, named x, x1, … by the user
        names = _positional_names(given_names)
        inputs = tuple(InputSpec(input_name, default_shape=None) for input_name in names)
        call = _positional_call(function, names, ())
    else:
        inputs, positional = _inputs_of(signature, where)
        call = _positional_call(function, positional, [s.name for s in inputs])
    return Function(
        name=name,
        formula=f"y = {shown}({', '.join(spec.name for spec in inputs)})",
        inputs=inputs,
        call=call,
        source_file=source,
        integer_inputs=True,
        may_break_graph=True,
    )


_INDEXED_X = re.compile(r"x([0-9]*)")


def _positional_names(given: Sequence[str]) -> tuple[str, ...]:
    """The inputs of a function without a signature, in call order: x, x1, x2, … first, then
    other names as given; `x` alone when none is given."""
    unique = list(dict.fromkeys(given)) or ["x"]
    indexed = sorted(
        (n for n in unique if _INDEXED_X.fullmatch(n)),
        key=lambda n: int(n[1:] or 0),
    )
    return (*indexed, *(n for n in unique if not _INDEXED_X.fullmatch(n)))


def _positional_call(
    function: Callable[..., Any], positional: Sequence[str], names: Sequence[str]
) -> Callable[..., Any]:
    """`function` called with the inputs by keyword, except `positional` ones, passed in order
    (up to the first not given: the rest keep their defaults)."""
    if not positional:
        return function
    keyword = [n for n in names if n not in positional]

    def call(**inputs: Any) -> Any:
        args = []
        for name in positional:
            if name not in inputs:
                break
            args.append(inputs[name])
        return function(*args, **{n: inputs[n] for n in keyword if n in inputs})

    return call


def read_source(path_text: str, size_limit: int) -> bytes:
    """The bytes of the user's source file, with the checks of a --value file: a regular file
    (a FIFO would block, /dev/zero never ends) of at most `size_limit` bytes."""
    from jaccli.loaders import read_regular_file

    try:
        return read_regular_file(path_text, size_limit, option="--fn ")
    except UsageError as error:
        raise UsageError(error.message, code="bad_function") from None


def _load_file(path_text: str, size_limit: int) -> ModuleType:
    path = Path(path_text)
    if not os.path.lexists(path):
        raise UsageError(f"--fn: file {path_text!r} does not exist", code="bad_function")
    if path.suffix != ".py" and not _is_dir(path):
        raise UsageError(f"--fn: {path_text!r} is not a .py file", code="bad_function")
    try:
        source = read_source(path_text, size_limit).decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"--fn: cannot read {path_text!r}: {error}", code="bad_function") from None
    try:
        code = compile(source, str(path.resolve()), "exec")
    except SyntaxError as error:
        raise UsageError(
            f"--fn: syntax error in {path_text}:{error.lineno}: {error.msg}", code="bad_function"
        ) from None
    except ValueError as error:  # a NUL byte
        raise UsageError(f"--fn: cannot read {path_text!r}: {error}", code="bad_function") from None
    # A name of our own: the file never replaces, nor is replaced by, a module of the same name.
    module_name = f"jaccli_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path.resolve())
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        # the user's own file, run as `python file.py` would, its prints kept off stdout
        with contextlib.redirect_stdout(sys.stderr):
            exec(code, module.__dict__)
    except SystemExit as error:
        del sys.modules[module_name]
        raise ComputationError(
            f"--fn: importing {path_text} called sys.exit({error.code!r})", code="bad_function"
        ) from None
    except Exception as error:
        raise_if_out_of_memory(error)
        del sys.modules[module_name]
        raise UsageError(
            f"--fn: importing {path_text} raised {type(error).__name__}: {first_line(error)}",
            code="bad_function",
        ) from error
    return module


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _import_module(name: str, attribute: str) -> ModuleType:
    """Import `name` from the installed packages; the current directory cannot shadow it."""
    here = {"", ".", os.getcwd()}
    saved = list(sys.path)
    sys.path[:] = [entry for entry in sys.path if entry not in here]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return importlib.import_module(name)
    except ModuleNotFoundError as error:
        local = Path(*name.split(".")).with_suffix(".py")
        hint = f"; did you mean --fn {local}:{attribute}?" if local.is_file() else ""
        raise UsageError(
            f"--fn: no installed module named {error.name!r}{hint}", code="bad_function"
        ) from None
    except SystemExit as error:
        raise ComputationError(
            f"--fn: importing {name} called sys.exit({error.code!r})", code="bad_function"
        ) from None
    except Exception as error:
        raise_if_out_of_memory(error)
        raise UsageError(
            f"--fn: importing {name} raised {type(error).__name__}: {first_line(error)}",
            code="bad_function",
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


def _signature(function: Any) -> inspect.Signature | None:
    """The function's signature, or None for a builtin that has none to read."""
    try:
        return inspect.signature(function)
    except (TypeError, ValueError):
        return None


def _inputs_of(signature: inspect.Signature, where: str) -> tuple[tuple[InputSpec, ...], list[str]]:
    """One input per parameter, and the names of those passed positionally; a parameter with
    a default keeps it unless given a value."""
    inputs = []
    positional = []
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise UsageError(
                f"{where}: *{parameter.name} parameters are not supported; name each input",
                code="bad_function",
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            positional.append(parameter.name)
        has_default = parameter.default is not parameter.empty
        inputs.append(InputSpec(parameter.name, default_shape=None, has_default=has_default))
    return tuple(inputs), positional
