"""The plain data the engine hands to the renderers: numpy arrays and names, no torch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class InputValue:
    """One input at the point of evaluation; constants are shown but not differentiated."""

    name: str
    values: np.ndarray
    differentiable: bool


@dataclass(frozen=True)
class Evaluation:
    """A function evaluated at a point: what every result starts with."""

    function_name: str
    formula: str
    dtype: str
    inputs: tuple[InputValue, ...]
    output: np.ndarray


@dataclass(frozen=True)
class JacobianResult:
    """J for each `wrt` input, with `J.shape == output.shape + input.shape`."""

    evaluation: Evaluation
    jacobians: dict[str, np.ndarray]
    strategy: str
    strategy_reason: str


@dataclass(frozen=True)
class VjpResult:
    """vᵀ·J for each `wrt` input: the gradient `backward(v)` leaves in that input."""

    evaluation: Evaluation
    cotangent: np.ndarray
    vjps: dict[str, np.ndarray]
