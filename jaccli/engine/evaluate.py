"""Calling the function on tensors, turning its failures and odd outputs into clear errors."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from jaccli.engine.problem import Problem
from jaccli.errors import ComputationError
from jaccli.result import Evaluation, InputValue


def call_function(problem: Problem, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """y = f(inputs), which must be a floating tensor."""
    name = problem.function.name
    try:
        output = problem.function.call(**inputs)
    except Exception as error:  # the function is the user's code: any failure is theirs to see
        raise ComputationError(f"{name} raised {type(error).__name__}: {error}") from error
    if not isinstance(output, torch.Tensor):
        raise ComputationError(f"{name} returned {type(output).__name__}, not a tensor")
    if not output.is_floating_point():
        raise ComputationError(
            f"{name} returned a tensor of {output.dtype}, not a floating tensor; "
            "only floating outputs have derivatives"
        )
    return output


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def describe(problem: Problem, output: torch.Tensor) -> Evaluation:
    """The function, its inputs and its output as plain data for the renderers."""
    function = problem.function
    return Evaluation(
        function_name=function.name,
        formula=function.formula,
        dtype=problem.dtype,
        inputs=tuple(
            InputValue(spec.name, to_numpy(problem.inputs[spec.name]), spec.differentiable)
            for spec in function.inputs
        ),
        output=to_numpy(output),
    )
