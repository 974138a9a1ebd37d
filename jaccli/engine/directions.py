"""The vectors products are taken with: a cotangent per output, a tangent per input."""

from __future__ import annotations

import torch

from jaccli.arrays import ArrayData
from jaccli.engine.problem import Problem
from jaccli.errors import UsageError
from jaccli.spec import Direction, Shape, format_shape


def make_directions(
    problem: Problem, direction: Direction, shapes: dict[str, Shape], option: str, part: str
) -> dict[str, torch.Tensor]:
    """A vector for each of `shapes` (the outputs' for a cotangent, the `wrt` inputs' for a
    tangent), each in its shape: all ones, seeded normal draws, the given array (a single
    part) or the given object of arrays by name (several). `part` says what they are
    (`output`, `input`) and `option` which option gave them, for messages."""
    dtype = problem.torch_dtype
    if direction == "ones":
        return {name: torch.ones(shape, dtype=dtype) for name, shape in shapes.items()}
    if direction == "randn":
        return {
            name: torch.randn(shape, generator=problem.generator, dtype=torch.float64).to(dtype)
            for name, shape in shapes.items()
        }
    function = problem.function.name
    names = ", ".join(shapes)

    def given(name: str, shape: Shape, data: ArrayData) -> torch.Tensor:
        if data.shape != shape:
            raise UsageError(
                f"{option} has shape {format_shape(data.shape)}, but {function}'s {part} "
                f"{name} has shape {format_shape(shape)}; give an array of {name}'s shape, "
                "ones or randn",
                code=f"bad_{option.lstrip('-')}",
            )
        return torch.from_numpy(data.values).reshape(shape).to(dtype)

    if isinstance(direction, dict):
        if set(direction) != set(shapes):
            raise UsageError(
                f"{option} names {', '.join(direction)}; {function}'s {part}s are {names}: "
                "give an array for each",
                code=f"bad_{option.lstrip('-')}",
            )
        return {name: given(name, shape, direction[name]) for name, shape in shapes.items()}
    assert isinstance(direction, ArrayData)
    if len(shapes) != 1:
        raise UsageError(
            f"{option} as an array needs a single {part}; {function} has {part}s {names} (give "
            f'an object like {{"{next(iter(shapes))}": [...], ...}}, ones or randn)',
            code=f"bad_{option.lstrip('-')}",
        )
    ((name, shape),) = shapes.items()
    return {name: given(name, shape, direction)}
