"""The Python API: `jaccli.jacobian(f, x=...)` and its relatives, on the CLI's runner.

    >>> import jaccli, torch
    >>> r = jaccli.jacobian(lambda x: x.exp().sum(dim=1), x=torch.ones(2, 3))
    >>> r.array.shape          # J.shape == y.shape + x.shape
    (2, 2, 3)

Each function takes the function first (a callable, a preset's name, `path/to/file.py:func`
or `package.module:func`, or else an expression such as "x.sin() * a"), the inputs' values
as keyword arguments (tensors, arrays, nested lists or numbers) or their shapes (`shape=(2,
3)`, `shape={"a": (2, 3)}`), and the command's options as keyword arguments named as on the
command line (`max_memory="2GiB"`, `view="rows"`, `points={"x": xs}`); an input whose name is
also an option's is given as `value={"name": ...}`. Each returns a Result: the arrays, the
same JSON document as the CLI's --json (`.document()`), and the same tables, drawn by Rich in
a terminal (`rich.print(result)`) and in Jupyter.

The same Request, runner, correctness guard and memory budget as the CLI: a result that fails
the guard raises ComputationError; the budget is held by the kernel during the call and lifted
after it (NOTE [the budget holds for real] in memory.py); `timeout=` stops the call on the main
thread. The user's function runs in this process: the CLI forks a worker for a --fn of the
user's so that the process the user started can report a worker that dies, but a function
given to the API is already the caller's own code in the caller's process. The jaccli warnings
the CLI prints (`jacobian: warning: …`) are Python warnings of class JaccliWarning here, and in
`Result.notes`. No Typer here.
"""

from __future__ import annotations

import inspect
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console, ConsoleOptions, RenderResult
from rich.jupyter import JupyterMixin

from jaccli import memory
from jaccli.arrays import ArrayData
from jaccli.errors import UsageError
from jaccli.functions.presets import PRESETS
from jaccli.options import OPTIONS, options_of, parse
from jaccli.request import FunctionChoice, Request
from jaccli.result import (
    HessianResult,
    HvpResult,
    JacobianResult,
    JvpResult,
    SparseHessianResult,
    SparseJacobianResult,
    VjpResult,
)
from jaccli.runner import AtPoints, Computed, Outcome, Planned, Stored, run
from jaccli.spec import format_shape
from jaccli.timeout import Expired, TimedOut, Timeout, time_limit, timeout_error

__all__ = ["JaccliWarning", "Result", "check", "det", "hessian", "hvp", "jacobian", "jvp", "vjp"]

_REFERENCE = re.compile(r"[^:\s]+:[A-Za-z_][A-Za-z0-9_]*")
"""`path/to/file.py:func` or `package.module:func`: a user's callable, not an expression."""


class JaccliWarning(UserWarning):
    """What a result's numbers cannot say (the CLI's `COMMAND: warning: …` lines)."""


class Result(JupyterMixin):
    """What one call computed: the arrays, the JSON document, and the tables."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome

    @property
    def command(self) -> str:
        return self.outcome.request.command

    @property
    def data(self) -> Any:
        """The engine's result (JacobianResult, VjpResult, …; a PlanReport for `plan=True`;
        a list of results, one a point, for `points=`; for `out="j.zarr"` the blocks'
        outcome, J being in the store)."""
        if isinstance(self.outcome, Planned):
            return self.outcome.report
        if isinstance(self.outcome, Stored):
            return self.outcome.blocks
        if isinstance(self.outcome, AtPoints):
            return self.outcome.results
        assert isinstance(self.outcome, Computed)
        return self.outcome.result

    @property
    def arrays(self) -> dict[str, Any]:
        """The computed arrays keyed as in the document: `jacobian[output][input]`, `det`
        (sign, logabsdet, det, trace), `vjp[input]`, `jvp[output]`, `hessian[output][a][b]`
        or `hvp[input]`, besides `inputs` and `outputs` by name; with `points=`, each array
        gains a leading point axis."""
        if isinstance(self.outcome, AtPoints):
            per_point = [_arrays(result) for result in self.outcome.results]
            return _stacked(per_point)
        if isinstance(self.outcome, Planned):
            raise ValueError("a plan computes no arrays; see .data or .document()")
        if isinstance(self.outcome, Stored):
            path = self.outcome.blocks.path
            raise ValueError(
                f"J is in the store {path}, not in memory: zarr.open_group({path!r})['J'] "
                "(rows × columns of J as a matrix)"
            )
        return _arrays(self.data)

    @property
    def array(self) -> np.ndarray:
        """The one array computed (J, vᵀ·J, J·v, H or H·v), when there is exactly one."""
        key = {"det": "jacobian", "check": "jacobian"}.get(self.command, self.command)
        leaves = list(_leaves(self.arrays[key], (key,)))
        if len(leaves) != 1:
            names = ", ".join(".".join(path) for path, _ in leaves)
            raise ValueError(f"{len(leaves)} arrays were computed ({names}); see .arrays")
        return leaves[0][1]

    @property
    def notes(self) -> tuple[str, ...]:
        """The warnings: what the numbers cannot say."""
        return () if isinstance(self.outcome, Planned) else self.outcome.notes

    @property
    def passed(self) -> bool:
        """Whether every check and view asked for agreed (True when none was)."""
        if isinstance(self.outcome, Computed):
            return self.outcome.passed
        if isinstance(self.outcome, AtPoints):
            return all(result.check is None or result.check.passed for result in self.data)
        if isinstance(self.outcome, Stored):
            return True  # a block that fails its guard ends the run
        return self.outcome.refused is None

    def document(self) -> dict[str, Any]:
        """The JSON document the CLI prints with --json (json.dumps it with allow_nan=False);
        for `out="j.zarr"`, the run as the store's attributes describe it."""
        if isinstance(self.outcome, Stored):
            from jaccli.blocks.store import read_header

            return read_header(self.outcome.blocks.path)
        return self.outcome.document()

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """The CLI's tables, fitted to the console that draws them."""
        from jaccli.render.layout import Layout

        shown = self.outcome.request.show
        layout = Layout(
            precision=shown.precision,
            width=options.max_width,
            full=shown.full,
            color=console.color_system is not None,
        )
        if isinstance(self.outcome, Planned):
            from jaccli.render.plan import plan_renderable

            yield plan_renderable(self.outcome.report, self.outcome.store)
        elif isinstance(self.outcome, Stored):
            from rich.text import Text

            yield Text(self.outcome.summary())
        elif isinstance(self.outcome, AtPoints):
            from jaccli.render.results import points_renderable

            yield points_renderable(self.command, self.outcome.results, layout)
        else:
            assert isinstance(self.outcome, Computed)
            from jaccli.render.picture import frame
            from jaccli.render.results import result_renderable

            view = self.outcome.request.compute.picture
            picture = None
            if view is not None:
                picture = self.outcome.picture(*frame(self.outcome.result, view, layout))  # type: ignore[arg-type]
            yield result_renderable(self.command, self.outcome.result, layout, picture)

    def __repr__(self) -> str:
        request = self.outcome.request
        return f"<jaccli {request.command} of {request.function.label}>"


def _arrays(result: Any) -> dict[str, Any]:
    evaluation = result.evaluation
    arrays: dict[str, Any] = {
        "inputs": {value.name: value.values for value in evaluation.inputs},
        "outputs": dict(evaluation.outputs),
    }
    if isinstance(result, JacobianResult):
        arrays["jacobian"] = result.jacobians
        if result.determinant is not None:
            det = result.determinant
            arrays["det"] = {
                "sign": det.sign,
                "logabsdet": det.logabsdet,
                "det": det.det,
                "trace": det.trace,
            }
    elif isinstance(result, VjpResult):
        arrays.update(vjp=result.vjps, cotangent=result.cotangents)
    elif isinstance(result, JvpResult):
        arrays.update(jvp=result.jvps, tangent=result.tangents)
    elif isinstance(result, HessianResult):
        arrays["hessian"] = result.hessians
    elif isinstance(result, HvpResult):
        arrays.update(hvp=result.hvps, vector=result.vectors)
    elif isinstance(result, SparseJacobianResult):
        arrays["jacobian"] = result.blocks()  # scipy.sparse CSR blocks, never densified
        if result.determinant is not None:
            det = result.determinant
            arrays["det"] = {"sign": det.sign, "logabsdet": det.logabsdet, "det": det.det}
    elif isinstance(result, SparseHessianResult):
        arrays["hessian"] = result.blocks()
    return arrays


def _stacked(parts: list[Any]) -> Any:
    if isinstance(parts[0], dict):
        return {key: _stacked([part[key] for part in parts]) for key in parts[0]}
    return np.stack(parts)


def _leaves(node: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    else:
        yield path, node


def _array_data(value: Any, what: str) -> ArrayData:
    """A tensor, array, nested list or number as the values of an input or a vector."""
    if isinstance(value, ArrayData):
        return value
    if hasattr(value, "detach"):  # a torch.Tensor, wherever it lives
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise UsageError(f"{what}: not a rectangular array of numbers ({error})") from None
    if array.dtype.kind not in "fiu":
        raise UsageError(f"{what}: an array of {array.dtype} is not an array of numbers")
    return ArrayData(tuple(array.shape), array)


def _shapes(given: Any) -> list[str]:
    """`shape=`: (2, 3), 4 or "2x3" for the only input, or {"a": (2, 3), …} by name."""
    if given is None:
        return []
    if isinstance(given, Mapping):
        return [f"{name}={_shape_text(shape)}" for name, shape in given.items()]
    if isinstance(given, list) and all(isinstance(item, str) for item in given):
        return given
    return [_shape_text(given)]


def _shape_text(shape: Any) -> str:
    """A shape as the command line spells it: "2x3", (2, 3), 4 or () (a scalar)."""
    if isinstance(shape, str):
        return shape
    return format_shape((int(shape),) if isinstance(shape, int) else tuple(int(d) for d in shape))


def _named(given: Any, option: str) -> list[Any]:
    """`value=` or `points=`: {name: values}, or the values of the only input; a string is
    read as on the command line (JSON, or @file)."""
    if given is None:
        return []
    if isinstance(given, str):
        return [given]
    if not isinstance(given, Mapping):
        return [(None, _array_data(given, option))]
    return [
        f"{name}={values}" if isinstance(values, str) else (name, _array_data(values, option))
        for name, values in given.items()
    ]


def _direction(given: Any, option: str) -> Any:
    """A product's vector: ones, randn, an array, or {name: array} for several."""
    if isinstance(given, str):
        return given
    if isinstance(given, Mapping):
        return {name: _array_data(value, f"{option} {name!r}") for name, value in given.items()}
    return _array_data(given, option)


def _words(given: Any, text: Callable[[Any, Any], str]) -> list[str]:
    """A repeatable option: one word, words, or {name: value} as NAME=VALUE words."""
    if given is None:
        return []
    if isinstance(given, Mapping):
        return [text(name, value) for name, value in given.items()]
    if isinstance(given, str | int):
        return [str(given)]
    return [str(item) for item in given]


_CONVERSIONS: dict[str, Callable[[Any], Any]] = {
    "shape": _shapes,
    "value": lambda given: _named(given, "value"),
    "points": lambda given: _named(given, "points"),
    "wrt": lambda given: _words(given, lambda name, _: name),
    "batch_axis": lambda given: _words(given, lambda name, axis: f"{name}={axis}"),
    "cotangent": lambda given: _direction(given, "cotangent"),
    "tangent": lambda given: _direction(given, "tangent"),
    "vector": lambda given: _direction(given, "vector"),
    "out": lambda given: None if given is None else str(Path(given)),
}
"""The Python values an option takes, as the table's parse reads them."""


def _function(f: Any) -> FunctionChoice:
    if callable(f):
        return FunctionChoice(callable=f)
    if not isinstance(f, str):
        raise UsageError(
            f"the function: expected a callable, a preset's name or an expression, not "
            f"{type(f).__name__}"
        )
    if f in PRESETS or _REFERENCE.fullmatch(f.strip()):
        return FunctionChoice(name=f.strip())
    return FunctionChoice(expression=f)


def _given(command: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options as the table parses them, the inputs' values among them; an option another
    command takes is refused here rather than read as an input's name."""
    accepted = {option.name: option for option in options_of(command) if option.api}
    others = {option.name for option in OPTIONS} - set(accepted)
    given: dict[str, Any] = {}
    values = _CONVERSIONS["value"](options.pop("value", None))
    for name, value in options.items():
        if name in accepted:
            convert = _CONVERSIONS.get(name)
            given[name] = convert(value) if convert is not None else value
        elif name in others:
            raise TypeError(
                f"{command}() takes no option {name!r} (its options: {', '.join(accepted)}); "
                f"give an input named {name!r} as value={{{name!r}: ...}}"
            )
        else:
            values.append((name, _array_data(value, name)))
    given["value"] = values
    return given


@contextmanager
def _limits(request: Request) -> Iterator[None]:
    """The call under its --timeout, with the memory budget lifted at the end; an allocation
    that failed becomes the budget's refusal."""
    seconds = request.limits.timeout
    limit = None if seconds is None else Timeout(seconds, request.function.label)
    try:
        with time_limit(limit):
            yield
    except TimedOut as error:
        assert limit is not None
        raise timeout_error(limit, error.where) from None
    except Exception as error:
        if memory.out_of_memory(error):
            raise memory.refusal(error) from None
        if limit is not None and Expired.where is not None:
            raise timeout_error(limit, Expired.where) from None
        raise
    finally:
        memory.release()


def _call(command: str, f: Any, options: dict[str, Any]) -> Result:
    """Parse, run and wrap one call; the CLI's refusals are raised as JaccliError."""
    request = replace(parse(command, _given(command, options)), function=_function(f))
    with _limits(request):
        outcome = run(request)
        if isinstance(outcome, Computed | AtPoints):
            outcome.write_out()
    result = Result(outcome)
    for note in result.notes:
        warnings.warn(f"{command}: {note}", JaccliWarning, stacklevel=3)
    return result


def _api_function(command: str, summary: str) -> Callable[..., Result]:
    """The API function of one command, with the command's options as its signature."""

    def call(f: Any, /, **options: Any) -> Result:
        return _call(command, f, options)

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [
        inspect.Parameter("f", inspect.Parameter.POSITIONAL_ONLY),
        *(
            inspect.Parameter(option.name, keyword, default=option.default)
            for option in options_of(command)
            if option.api
        ),
        inspect.Parameter("inputs", inspect.Parameter.VAR_KEYWORD),
    ]
    call.__signature__ = inspect.Signature(parameters, return_annotation=Result)  # type: ignore[attr-defined]
    call.__name__ = call.__qualname__ = command
    call.__doc__ = (
        f"{summary}\n\nThe arguments: help(jaccli.api); the options: jaccli {command} --help."
    )
    return call


jacobian = _api_function("jacobian", "y = f(x) and its Jacobian J (J.shape == y.shape + x.shape).")
det = _api_function("det", "J and det J of a square Jacobian, with log|det J| and the trace.")
vjp = _api_function("vjp", "The vector-Jacobian product vᵀ·J (cotangent=v, default ones).")
jvp = _api_function("jvp", "The Jacobian-vector product J·v (tangent=v, default ones).")
hessian = _api_function("hessian", "The Hessian H = ∂²y/∂a∂b of each output.")
hvp = _api_function("hvp", "The Hessian-vector product H·v of a scalar output (vector=v).")
check = _api_function(
    "check", "A gradient check in float64: AD against the other mode and differences."
)
