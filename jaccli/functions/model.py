"""What jaccli knows about a function: its name, formula, named inputs and the callable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jaccli.spec import Shape


@dataclass(frozen=True)
class InputSpec:
    """One named input: its default shape, and whether it is differentiated or a constant."""

    name: str
    default_shape: Shape
    differentiable: bool = True
    shape_like: str | None = None
    """A constant that always takes the shape of this other input (add's `a` follows `x`)."""


ShapeCheck = Callable[[Mapping[str, Shape]], None]


@dataclass(frozen=True)
class Function:
    """A function of named tensor inputs, with a one-line formula for people to read."""

    name: str
    formula: str
    inputs: tuple[InputSpec, ...]
    call: Callable[..., Any]
    """Called with every input as a keyword argument; returns the output tensor."""
    check_shapes: ShapeCheck | None = None
    """Raises UsageError naming the mismatch when the input shapes cannot work together."""

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def differentiable_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs if spec.differentiable)

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)
