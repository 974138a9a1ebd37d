"""Calling the function on tensors, turning its failures and odd outputs into clear errors.

# NOTE [the user's function is a guest]
Every call gets fresh (differentiable) copies of its inputs, so a function that mutates an
input in place changes neither jaccli's inputs nor the next call's; whatever it prints goes to
stderr, so stdout keeps carrying the result only; `sys.exit` inside it is a failure of the
function (exit 1), never jaccli's own exit status; and torch's global state it changes (grad
mode, default dtype, anomaly mode, deterministic algorithms, `torch.autograd.grad` and
`backward` replaced) is put back when it returns, so jaccli's own passes run as jaccli set them.
What the function does to its own computation inside (gradients off, a patched autograd) is
left to the function as the reference (NOTE [the function as the reference]) to catch.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import traceback
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from jaccli.errors import ComputationError
from jaccli.functions.model import Function
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import first_line, shown_path

SINGLE_OUTPUT_NAMES = ("y", "out", "output", "result")


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of {value.dtype}"
    if isinstance(value, list | tuple) and value and not isinstance(value[0], torch.Tensor):
        return f"a {type(value).__name__} of {type(value[0]).__name__}"
    return "None" if value is None else type(value).__name__


def single_output_name(input_names: tuple[str, ...] | list[str]) -> str:
    """`y`, unless an input is called `y`: then the first of out, output, result that is free."""
    return next(n for n in (*SINGLE_OUTPUT_NAMES, "y_") if n not in input_names)


def _flatten(value: Any, path: str, named: dict[str, Any], function: str) -> None:
    """Leaves of nested tuples, lists and dicts, each under its dotted path (`y0.1`, `aux.0`)."""
    if isinstance(value, torch.Tensor):
        named[path] = value
        return
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple: its field names
        items: list[tuple[str, Any]] = list(zip(value._fields, value, strict=True))
    elif isinstance(value, tuple | list):
        items = [(str(i), v) for i, v in enumerate(value)]
    elif isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        items = list(value.items())
    else:
        raise ComputationError(
            f"{function} returned {_describe_value(value)}{_at(path)}; expected a floating "
            "tensor, or tuples, lists or dicts (with string keys) of them"
        )
    if not items:
        raise ComputationError(f"{function} returned an empty {type(value).__name__}{_at(path)}")
    for key, item in items:
        if not key or "." in key or any(c.isspace() for c in key) or not key.isprintable():
            raise ComputationError(
                f"{function} returned an output named {key!r}; names need letters without "
                "dots, spaces or control characters"
            )
        _flatten(item, f"{path}.{key}" if path else key, named, function)


def _at(path: str) -> str:
    """` at aux.0`: where in the returned structure, or nothing for the whole of it."""
    return f" at {path}" if path else ""


def outputs_of(
    value: Any, name: str, input_names: tuple[str, ...] = (), *, on_meta: bool = False
) -> dict[str, torch.Tensor]:
    """The function's result as named floating tensors: `y` for a tensor; `y0`, `y1`… for a
    tuple or list; a dict's keys; nested ones by dotted path (`y0.1`, `aux.0`); meta tensors
    only for a call `on_meta` inputs, which asks for shapes alone."""
    named: dict[str, Any] = {}
    if inspect.iscoroutine(value):  # closed, or Python warns it was never awaited
        value.close()
        raise ComputationError(
            f"{name} returned a coroutine (an async def function?); expected a floating tensor"
        )
    if isinstance(value, tuple | list) and not any(
        isinstance(item, torch.Tensor | tuple | list | Mapping) for item in value
    ):  # numbers, not tensors: say what the whole is
        raise ComputationError(
            f"{name} returned {_describe_value(value)}; expected a floating tensor, or "
            "tuples, lists or dicts (with string keys) of them"
        )
    if isinstance(value, torch.Tensor):
        named[single_output_name(input_names)] = value
    elif isinstance(value, tuple | list) and not hasattr(value, "_fields") and value:
        for i, item in enumerate(value):
            _flatten(item, f"y{i}", named, name)
    else:
        _flatten(value, "", named, name)
    for output_name, output in named.items():
        _require_usable(output, output_name, name, on_meta)
    return named


def _require_usable(output: torch.Tensor, output_name: str, function: str, on_meta: bool) -> None:
    """An output J can be taken of: a dense floating tensor with values (unless only its shape
    is asked for), and at least one."""
    if output.layout != torch.strided:
        raise ComputationError(
            f"{function} returned {output_name} as a {output.layout} tensor; return a dense "
            "one (.to_dense())"
        )
    if output.device.type == "meta" and not on_meta:
        raise ComputationError(
            f"{function} returned {output_name} on the meta device, which holds no values"
        )
    if not output.is_floating_point():
        raise ComputationError(
            f"{function} returned {output_name} as {_describe_value(output)}, not a floating "
            "tensor; only floating outputs have derivatives"
        )
    if output.numel() == 0:
        shape = "x".join(str(d) for d in output.shape)
        raise ComputationError(
            f"{function} returned {output_name} with no elements (shape {shape}); J of an "
            "empty output is empty"
        )


def _where(error: BaseException, source_file: str | None) -> str:
    """` (at file.py:12)`: the last line of the user's file in the traceback, if any."""
    if source_file is None:
        return ""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == source_file]
    if not frames:
        return ""
    return f" (at {shown_path(source_file)}:{frames[-1].lineno})"


AUTOGRAD_ENTRY_POINTS = (
    (torch.autograd, "grad"),
    (torch.autograd, "backward"),
    (torch.Tensor, "backward"),
)
"""The functions jaccli differentiates through, which user code may replace."""


@contextlib.contextmanager
def kept_torch_state() -> Iterator[None]:
    """Run user code, then put back the torch global state it changed: grad mode, default
    dtype, anomaly mode, deterministic algorithms and the autograd entry points."""
    grad_enabled = torch.is_grad_enabled()
    default_dtype = torch.get_default_dtype()
    anomaly = (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled())
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    entry_points = [getattr(owner, name) for owner, name in AUTOGRAD_ENTRY_POINTS]
    try:
        yield
    finally:
        if torch.is_grad_enabled() != grad_enabled:
            torch.set_grad_enabled(grad_enabled)
        if torch.get_default_dtype() != default_dtype:
            torch.set_default_dtype(default_dtype)
        if (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()) != anomaly:
            torch.set_anomaly_enabled(*anomaly)
        if (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ) != deterministic:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        for (owner, name), original in zip(AUTOGRAD_ENTRY_POINTS, entry_points, strict=True):
            if getattr(owner, name) is not original:
                setattr(owner, name, original)


@contextlib.contextmanager
def guest_code(what: str, source_file: str | None = None) -> Iterator[None]:
    """Run the user's code with its prints on stderr, torch's global state kept, and its
    failures and `sys.exit` calls turned into ComputationError naming `what` (see NOTE [the
    user's function is a guest])."""
    try:
        with contextlib.redirect_stdout(sys.stderr), kept_torch_state():
            yield
    except ComputationError:
        raise
    except SystemExit as error:
        raise ComputationError(
            f"{what} called sys.exit({error.code!r}){_where(error, source_file)}"
        ) from None
    except Exception as error:  # the user's code: any failure is theirs to see
        raise_if_out_of_memory(error)
        raise ComputationError(
            f"{what} raised {type(error).__name__}: {first_line(error)}{_where(error, source_file)}"
        ) from error


@contextlib.contextmanager
def blaming_user_code(function: Function) -> Iterator[None]:
    """Turn an exception raised in the user's file while jaccli differentiates (a custom
    `backward` or `jvp` that fails) into ComputationError naming the file and line; anything
    else passes through untouched."""
    try:
        yield
    except ComputationError:
        raise
    except Exception as error:
        raise_if_out_of_memory(error)
        where = _where(error, function.source_file)
        if not where and _no_derivative(error):
            raise ComputationError(
                f"{function.name} uses an operation torch has no derivative for "
                f"({first_line(error)}): jaccli cannot differentiate it",
                code="no_derivative",
            ) from error
        if not where:
            raise
        raise ComputationError(
            f"differentiating {function.name} raised {type(error).__name__}: "
            f"{first_line(error)}{where}"
        ) from error


def _no_derivative(error: Exception) -> bool:
    """Whether torch refused to differentiate an op (`derivative for aten::heaviside is not
    implemented`): the function's doing, not jaccli's."""
    text = str(error)
    return isinstance(error, RuntimeError) and "derivative for" in text and "implemented" in text


def fresh_copies(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Differentiable copies of the inputs, the function's to mutate."""
    return {name: t.clone() for name, t in inputs.items()}


def call_fresh(
    function: Function, fresh: dict[str, torch.Tensor], *, vectorized: bool = False
) -> dict[str, torch.Tensor]:
    """The outputs of f on tensors that are the function's to mutate (its `vectorized_call`,
    if it has one, inside torch.func's transforms)."""
    call = (function.vectorized_call if vectorized else None) or function.call
    with guest_code(function.name, function.source_file):
        value = call(**fresh)
    on_meta = any(t.device.type == "meta" for t in fresh.values())  # shapes only, for --plan
    outputs = outputs_of(value, function.name, function.input_names, on_meta=on_meta)
    kept = function.selected_output
    if kept is None:
        return outputs
    if kept not in outputs:
        raise ComputationError(
            f"{function.name} returned {', '.join(outputs)} this time, without the output "
            f"{kept!r} chosen with --output"
        )
    return {kept: outputs[kept]}


def call_function(
    function: Function, inputs: Mapping[str, torch.Tensor], *, vectorized: bool = False
) -> dict[str, torch.Tensor]:
    """The outputs of f(inputs), each a floating tensor; f gets fresh copies of the inputs."""
    return call_fresh(function, fresh_copies(inputs), vectorized=vectorized)


def as_leaf(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy that requires grad when floating: a function may differentiate its own
    inputs (a force from an energy), so none is handed to it without."""
    return tensor.detach().requires_grad_(tensor.is_floating_point())


def leaves_of(inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every input as `as_leaf` makes it."""
    return {name: as_leaf(t) for name, t in inputs.items()}


def evaluate(function: Function, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """f at a point, detached: never under no_grad, since f may use autograd itself."""
    with torch.enable_grad():
        outputs = call_function(function, leaves_of(inputs))
    return {name: output.detach() for name, output in outputs.items()}


def vector_jacobian(
    y: torch.Tensor,
    leaves: list[torch.Tensor],
    cotangent: torch.Tensor,
    *,
    create_graph: bool = False,
) -> tuple[torch.Tensor, ...]:
    """vᵀJ for each leaf (zeros where y does not depend on it), by one backward pass.

    It differentiates the scalar Σ v·y rather than passing v as grad_outputs: the same numbers,
    but an explicit grad_outputs makes torch import sympy, 0.35 s of every run.
    """
    return torch.autograd.grad(
        (y * cotangent).sum(),
        leaves,
        create_graph=create_graph,
        allow_unused=True,
        materialize_grads=True,
    )


def jacobian_vector(
    y: torch.Tensor, leaves: list[torch.Tensor], tangents: list[torch.Tensor]
) -> torch.Tensor:
    """J·v = Σₖ Jₖ vₖ by reverse-over-reverse: the derivative in u of (uᵀJ)·v, a pass through
    the graph of the backward pass. RuntimeError where that pass has no graph of its own (a
    custom backward)."""
    u = torch.zeros_like(y, requires_grad=True)
    gradients = vector_jacobian(y, leaves, u, create_graph=True)
    product = sum(
        (g * v.to(g.dtype).reshape(g.shape)).sum() for g, v in zip(gradients, tangents, strict=True)
    )
    if not isinstance(product, torch.Tensor) or not product.requires_grad:
        raise RuntimeError("the backward pass has no graph of its own")
    (j_v,) = torch.autograd.grad(product, u, allow_unused=True, materialize_grads=True)
    return j_v


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()
