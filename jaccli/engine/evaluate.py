"""Calling the function on tensors, turning its failures and odd outputs into clear errors."""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from jaccli.errors import ComputationError
from jaccli.functions.model import Function
from jaccli.result import Evaluation, InputValue

if TYPE_CHECKING:
    from jaccli.engine.problem import Problem


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of {value.dtype}"
    if isinstance(value, list | tuple) and value and not isinstance(value[0], torch.Tensor):
        return f"a {type(value).__name__} of {type(value[0]).__name__}"
    return "None" if value is None else type(value).__name__


def outputs_of(value: Any, name: str) -> dict[str, torch.Tensor]:
    """The function's result as named floating tensors: `y`; `y0`, `y1`… for a tuple or list;
    the keys of a dict."""
    if isinstance(value, torch.Tensor):
        named = {"y": value}
    elif (
        isinstance(value, tuple | list)
        and value
        and all(isinstance(v, torch.Tensor) for v in value)
    ):
        named = {f"y{i}": v for i, v in enumerate(value)}
    elif (
        isinstance(value, Mapping)
        and value
        and all(
            isinstance(k, str) and k.isidentifier() and isinstance(v, torch.Tensor)
            for k, v in value.items()
        )
    ):
        named = dict(value)
    else:
        raise ComputationError(
            f"{name} returned {_describe_value(value)}; expected a floating tensor, or a tuple, "
            "list or dict (with name keys) of them"
        )
    for output_name, output in named.items():
        if not output.is_floating_point():
            raise ComputationError(
                f"{name} returned {output_name} as {_describe_value(output)}, not a floating "
                "tensor; only floating outputs have derivatives"
            )
    return named


def _where(error: BaseException, source_file: str | None) -> str:
    """` (at file.py:12)`: the last line of the user's file in the traceback, if any."""
    if source_file is None:
        return ""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == source_file]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def call_function(
    function: Function, inputs: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The outputs of f(inputs), each a floating tensor."""
    try:
        value = function.call(**inputs)
    except ComputationError:
        raise
    except Exception as error:  # the function is the user's code: any failure is theirs to see
        raise ComputationError(
            f"{function.name} raised {type(error).__name__}: {error}"
            f"{_where(error, function.source_file)}"
        ) from error
    return outputs_of(value, function.name)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def describe(problem: Problem, outputs: Mapping[str, torch.Tensor]) -> Evaluation:
    """The function, its inputs and its outputs as plain data for the renderers."""
    function = problem.function
    return Evaluation(
        function_name=function.name,
        formula=function.formula,
        dtype=problem.dtype,
        inputs=tuple(
            InputValue(spec.name, to_numpy(problem.inputs[spec.name]), spec.differentiable)
            for spec in function.inputs
            if spec.name in problem.inputs
        ),
        outputs={name: to_numpy(output) for name, output in outputs.items()},
    )
