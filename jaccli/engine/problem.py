"""From option values to a Problem: concrete input shapes, checked, then tensors at a point."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from jaccli.engine.guard import require_within_budget
from jaccli.errors import ComputationError, UsageError
from jaccli.functions.model import Function
from jaccli.spec import ArrayData, Shape, format_shape

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Problem:
    """A function, every input as a tensor (constants included), and the inputs to differentiate."""

    function: Function
    dtype: str
    inputs: dict[str, torch.Tensor]
    wrt: tuple[str, ...]
    output_shape: Shape
    generator: torch.Generator
    """Continues the seeded draws after the inputs (for a `randn` cotangent)."""

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]


def _assign(
    function: Function, options: Sequence[tuple[str | None, object]], option: str
) -> dict[str, object]:
    """Give each `--shape`/`--value` to its input; an unnamed one goes to the only input."""
    names = function.differentiable_names
    assigned: dict[str, object] = {}
    for name, item in options:
        if name is None:
            if len(names) != 1:
                raise UsageError(
                    f"{function.name} has inputs {', '.join(names)}: name the one meant, "
                    f"as in {option} {names[0]}=..."
                )
            name = names[0]
        if name not in function.input_names:
            raise UsageError(
                f"{option} {name!r}: {function.name} has no input {name!r} "
                f"(inputs: {', '.join(function.input_names)})"
            )
        if name in assigned:
            raise UsageError(f"{option} given twice for input {name!r}")
        assigned[name] = item
    return assigned


def resolve_shapes(
    function: Function,
    shape_options: Sequence[tuple[str | None, Shape]],
    value_options: Sequence[tuple[str | None, ArrayData]],
) -> dict[str, Shape]:
    """Each input's shape: from its value, else its `--shape`, else its default."""
    shapes: dict[str, Shape] = _assign(function, shape_options, "--shape")  # type: ignore[assignment]
    values: dict[str, ArrayData] = _assign(function, value_options, "--value")  # type: ignore[assignment]
    for name, data in values.items():
        if name in shapes and shapes[name] != data.shape:
            raise UsageError(
                f"input {name!r}: --shape {format_shape(shapes[name])} disagrees with its "
                f"--value of shape {format_shape(data.shape)}"
            )
        shapes[name] = data.shape
    for spec in function.inputs:
        if spec.name not in shapes:
            follows = shapes.get(spec.shape_like) if spec.shape_like else None
            shapes[spec.name] = follows if follows is not None else spec.default_shape
        elif spec.shape_like and shapes[spec.name] != shapes[spec.shape_like]:
            raise UsageError(
                f"{function.name}: {spec.name} takes the shape of {spec.shape_like} "
                f"({format_shape(shapes[spec.shape_like])}); got {format_shape(shapes[spec.name])}"
            )
    ordered = {spec.name: shapes[spec.name] for spec in function.inputs}
    if function.check_shapes is not None:
        function.check_shapes(ordered)
    return ordered


def resolve_wrt(function: Function, wrt: Sequence[str]) -> tuple[str, ...]:
    """The inputs to differentiate: those named by `--wrt`, else every differentiable one."""
    differentiable = function.differentiable_names
    if not wrt:
        return differentiable
    chosen: list[str] = []
    for name in wrt:
        if name not in function.input_names:
            raise UsageError(
                f"--wrt {name!r} is not an input of {function.name} "
                f"(inputs: {', '.join(differentiable)})",
                code="unknown_input",
            )
        if name not in differentiable:
            raise UsageError(
                f"--wrt {name!r}: {name} is a constant of {function.name}, not differentiated "
                f"(inputs: {', '.join(differentiable)})",
                code="unknown_input",
            )
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def output_shape(function: Function, shapes: dict[str, Shape]) -> Shape:
    """The output's shape, found on the meta device: no memory, no arithmetic."""
    meta = {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}
    described = ", ".join(f"{name}={format_shape(shape)}" for name, shape in shapes.items())
    try:
        output = function.call(**meta)
    except (RuntimeError, ValueError, IndexError, TypeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UsageError(f"{function.name} cannot take shapes {described}: {reason}") from None
    if not isinstance(output, torch.Tensor):
        raise ComputationError(f"{function.name} returned {type(output).__name__}, not a tensor")
    return tuple(output.shape)


def make_inputs(
    shapes: dict[str, Shape],
    values: dict[str, ArrayData],
    generator: torch.Generator,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """The point of evaluation: given values, else standard-normal draws from `generator`.

    The draws are float64, in input order, then cast to `dtype`: the same point on every machine
    and in both dtypes.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if name in values:
            data = values[name]
            tensor = torch.tensor(data.values, dtype=torch.float64).reshape(data.shape)
        else:
            tensor = torch.randn(shape, generator=generator, dtype=torch.float64)
        tensors[name] = tensor.to(dtype)
    return tensors


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`, which must fit torch's 64-bit seed."""
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed {seed} is out of range (0 to {MAX_SEED})")
    return torch.Generator().manual_seed(seed)


def prepare(
    function: Function,
    *,
    shape_options: Sequence[tuple[str | None, Shape]] = (),
    value_options: Sequence[tuple[str | None, ArrayData]] = (),
    wrt: Sequence[str] = (),
    seed: int = 0,
    dtype: str = "float32",
    budget: int | None = None,
) -> Problem:
    """Check every option against the function, then draw or load the inputs.

    Shapes are checked and the output shape found before any input is allocated, and the inputs
    and output must fit the memory budget, so a huge shape is refused in milliseconds.
    """
    wrt_names = resolve_wrt(function, wrt)
    shapes = resolve_shapes(function, shape_options, value_options)
    generator = seeded_generator(seed)
    torch_dtype = TORCH_DTYPES[dtype]
    out_shape = output_shape(function, shapes)
    itemsize = torch_dtype.itemsize
    stored = sum(math.prod(shape) for shape in shapes.values()) + math.prod(out_shape)
    require_within_budget("the inputs and output", stored * itemsize, budget, "use smaller shapes")
    values = dict(_assign(function, value_options, "--value"))
    tensors = make_inputs(shapes, values, generator, torch_dtype)  # type: ignore[arg-type]
    return Problem(function, dtype, tensors, wrt_names, out_shape, generator)
