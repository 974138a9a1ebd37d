"""From option values to a Problem: concrete input shapes, checked, then tensors at a point."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from jaccli.arrays import ArrayData
from jaccli.engine.evaluate import evaluate, single_output_name, to_numpy
from jaccli.engine.guard import require_within_budget
from jaccli.engine.separable import declared_axes, verify_declared
from jaccli.errors import ComputationError, UsageError
from jaccli.functions.model import AxisPair, Function, ShapeUnknown
from jaccli.result import Evaluation, InputValue
from jaccli.spec import Shape, format_shape, require_in_range, rounds_in_float32

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
RESIDENT_MULTIPLE = 3
"""One call of the function holds its inputs about this many times: the inputs, the fresh copy
it gets (NOTE [the user's function is a guest]) and as much again in intermediate results."""
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Problem:
    """A function, its inputs as tensors (constants included), and the inputs to differentiate.

    A user function's parameter with a default and no --shape/--value is left out of `inputs`,
    so the function keeps its default.
    """

    function: Function
    dtype: str
    inputs: dict[str, torch.Tensor]
    wrt: tuple[str, ...]
    output_shapes: dict[str, Shape]
    """Each output's shape, by name: `y` for a single tensor, `y0`, `y1`… or a dict's keys."""
    generator: torch.Generator
    """Continues the seeded draws after the inputs (for a `randn` cotangent)."""
    notes: tuple[str, ...] = ()
    """Warnings about the inputs, such as float64 values rounded to float32."""
    output_unknown: str | None = None
    """With shapes only (--plan): why the output shapes could not be found, if they could not."""

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    @property
    def output_count(self) -> int:
        """Elements in all outputs together: the rows of J."""
        return sum(math.prod(shape) for shape in self.output_shapes.values())

    @property
    def resident_bytes(self) -> int:
        """What one call of the function holds besides J (RESIDENT_MULTIPLE), and its outputs."""
        inputs = sum(t.numel() * t.element_size() for t in self.inputs.values())
        return RESIDENT_MULTIPLE * inputs + self.output_count * self.torch_dtype.itemsize

    @property
    def input_count(self) -> int:
        """Elements in all `wrt` inputs together: the columns of J."""
        return sum(self.inputs[name].numel() for name in self.wrt)


def _assign(
    function: Function, options: Sequence[tuple[str | None, object]], option: str
) -> dict[str, object]:
    """Give each `--shape`/`--value` to its input; an unnamed one goes to the only input."""
    assigned: dict[str, object] = {}
    for given, item in options:
        name = function.named(given, option)
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
    shapes: dict[str, Shape],
    values: dict[str, ArrayData],
) -> dict[str, Shape]:
    """Each present input's shape: from its value, else its `--shape`, else its default.

    A user parameter with a Python default and neither is absent: the function keeps its default.
    """
    resolved = dict(shapes)
    for name, data in values.items():
        if name in resolved and resolved[name] != data.shape:
            raise UsageError(
                f"input {name!r}: --shape {format_shape(resolved[name])} disagrees with its "
                f"--value of shape {format_shape(data.shape)}"
            )
        resolved[name] = data.shape
    for spec in function.inputs:
        followed = spec.followed_shape(resolved)
        if spec.name in resolved:
            if followed is not None and resolved[spec.name] != followed:
                raise UsageError(
                    f"{function.name}: {spec.name} takes the shape "
                    f"{format_shape(followed)} from {spec.shape_like} "
                    f"({format_shape(resolved[spec.shape_like])}); "  # type: ignore[index]
                    f"got {format_shape(resolved[spec.name])}"
                )
        elif followed is not None:
            resolved[spec.name] = followed
        elif spec.default_shape is not None:
            resolved[spec.name] = spec.default_shape
        elif not spec.has_default:
            raise UsageError(
                f"input {spec.name!r} of {function.name} has neither shape nor value; give "
                f"--shape {spec.name}=2x3 or --value {spec.name}='[...]'",
                code="missing_input",
            )
    return {spec.name: resolved[spec.name] for spec in function.inputs if spec.name in resolved}


def resolve_wrt(
    function: Function,
    present: Sequence[str],
    wrt: Sequence[str],
    integer_files: Sequence[str] = (),
) -> tuple[str, ...]:
    """The inputs to differentiate: those named by `--wrt`, else every differentiable one but
    those given as integer files (targets, indices)."""
    differentiable = tuple(n for n in function.differentiable_names if n in present)
    if not wrt:
        floating = tuple(n for n in differentiable if n not in integer_files)
        if not differentiable:
            raise UsageError(f"{function.name} has no input to differentiate", code="no_input")
        return floating or differentiable
    chosen: list[str] = []
    for name in wrt:
        if name not in function.input_names:
            raise UsageError(
                f"--wrt {name!r} is not an input of {function.name} "
                f"(inputs: {', '.join(differentiable)})",
                code="unknown_input",
            )
        if not function.input(name).differentiable:
            raise UsageError(
                f"--wrt {name!r}: {name} is a constant of {function.name}, not differentiated "
                f"(inputs: {', '.join(differentiable)})",
                code="unknown_input",
            )
        if name not in present:
            raise UsageError(
                f"--wrt {name!r}: {name} keeps its default; give --shape or --value for it "
                "to differentiate it",
                code="unknown_input",
            )
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def make_inputs(
    shapes: dict[str, Shape],
    values: dict[str, ArrayData],
    generator: torch.Generator,
    dtype: torch.dtype,
    keep_integers: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """The point of evaluation: given values, else standard-normal draws from `generator`.

    The draws are float64, in input order, then cast to `dtype`: the same point on every machine
    and in both dtypes. Given integers stay int64 for the inputs in `keep_integers`.
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        if name in values:
            data = values[name]
            values_there = np.asarray(data.values)  # one point of a 1-D --points is a scalar
            tensor = torch.from_numpy(values_there).reshape(shape)
            if not (data.is_integer and name in keep_integers):
                tensor = tensor.to(dtype)
        else:
            tensor = draw_normal(shape, generator, dtype)
        tensors[name] = tensor
    return tensors


DRAW_CHUNK = 2**20
"""Numbers drawn in float64 at once; a multiple of 16, like torch's vectorized normal fill."""


def draw_normal(shape: Shape, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """Standard-normal float64 draws cast to `dtype`, the same numbers as one
    `torch.randn(shape, dtype=torch.float64)` call, drawn a chunk at a time so that no float64
    copy of the whole tensor exists.

    torch fills 16 numbers at a time and redraws the last 16 of a tail, so chunks of a multiple
    of 16 followed by a last chunk of at least 16 continue the one stream exactly.
    """
    count = math.prod(shape)
    out = torch.empty(count, dtype=dtype)
    start = 0
    while start < count:
        size = min(DRAW_CHUNK, count - start)
        if 0 < count - start - size < 16:
            size = count - start
        chunk = torch.randn(size, generator=generator, dtype=torch.float64)
        out[start : start + size] = chunk
        start += size
    return out.reshape(shape)


def _evaluate_with_hint(
    function: Function,
    tensors: dict[str, torch.Tensor],
    values: dict[str, ArrayData],
    wrt: Sequence[str],
    *,
    explicit: bool,
) -> dict[str, torch.Tensor]:
    """f at the point; when it fails and an input given as integers is differentiated (so made
    floating) by default, the error says how to keep it an integer."""
    try:
        return evaluate(function, tensors)
    except ComputationError as error:
        promoted = [n for n in wrt if n in values and values[n].is_integer]
        if explicit or not function.integer_inputs or not promoted or len(promoted) == len(wrt):
            raise
        others = [n for n in wrt if n not in promoted]
        raise ComputationError(
            f"{error.message}; {', '.join(promoted)} was given as integers but is differentiated "
            f"(so floating): to pass it as int64, differentiate the others only, as in "
            f"{' '.join(f'--wrt {n}' for n in others)}",
            code=error.code,
        ) from error


def seeded_generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`, which must fit torch's 64-bit seed."""
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed {seed} is out of range (0 to {MAX_SEED})")
    return torch.Generator().manual_seed(seed)


def rounding_note(name: str) -> str:
    """The warning for a float64 file whose values a float32 run rounds."""
    return (
        f"input {name}: the file's float64 values were rounded to float32; "
        "add --dtype float64 to keep every digit"
    )


def _rounding_notes(values: dict[str, ArrayData], dtype: str) -> tuple[str, ...]:
    """A warning for each float64 file whose values a float32 run rounds."""
    return tuple(
        rounding_note(name)
        for name, data in values.items()
        if data.from_file and rounds_in_float32(data, dtype)
    )


def meta_output_shapes(
    function: Function, shapes: dict[str, Shape], dtype: torch.dtype
) -> tuple[dict[str, Shape] | None, str | None]:
    """The output shapes from one call on meta tensors, which hold no values; (None, why)
    when the function cannot run on them. Tensors it makes itself are put on meta too."""
    meta = {name: torch.empty(shape, dtype=dtype, device="meta") for name, shape in shapes.items()}
    try:
        with torch.device("meta"):
            outputs = evaluate(function, meta)
    except ComputationError as error:
        return None, f"{function.name} cannot run on tensors without values ({error.message})"
    return {name: tuple(output.shape) for name, output in outputs.items()}, None


def _rule_output_shapes(function: Function, shapes: dict[str, Shape]) -> dict[str, Shape] | None:
    """The output shapes from the function's shape rule; None without one, or where the rule
    does not know these shapes."""
    if function.output_shape is None:
        return None
    try:
        return {single_output_name(function.input_names): function.output_shape(shapes)}
    except ShapeUnknown:
        return None


BYTES_PER_OUTPUT = 16 * 1024
"""What one named output costs beyond its numbers, measured at about 5 KiB a function call
(a tensor, its name, its graph node) and three more calls a run, plus its rows in the result:
a function returning 10⁶ scalars in a dict took 5.6 GB and 166 s."""


def _require_intermediates_fit(
    function: Function,
    shapes: dict[str, Shape],
    input_bytes: int,
    itemsize: int,
    budget: int | None,
) -> None:
    """Refuse (exit 3) an expression whose intermediate tensors would pass the budget, before it
    runs: `diag(x, 20000)` makes 400 million numbers out of one."""
    if function.intermediate_elements is None:
        return
    try:
        elements = function.intermediate_elements(shapes)
    except ShapeUnknown:
        return
    require_within_budget(
        f"evaluating {function.name} once ({elements} numbers in its intermediate results)",
        input_bytes + elements * itemsize,
        budget,
        "use smaller shapes",
    )


def prepare(
    function: Function,
    *,
    shape_options: Sequence[tuple[str | None, Shape]] = (),
    value_options: Sequence[tuple[str | None, ArrayData]] = (),
    point_options: Sequence[tuple[str, ArrayData]] = (),
    wrt: Sequence[str] = (),
    seed: int = 0,
    dtype: str = "float32",
    budget: int | None = None,
    shapes_only: bool = False,
    batch_axes: Sequence[tuple[str | None, int]] = (),
    output: str | None = None,
) -> Problem:
    """Check every option against the function, then draw or load the inputs.

    Shapes are checked and the output shapes found before any input is allocated, and the
    inputs and outputs must fit the memory budget, so a huge shape is refused in milliseconds.
    `point_options`: the inputs' values at one of --points (checked by the caller).
    With `shapes_only` (for --plan), inputs stay on the meta device, holding no values, and a
    function without a shape rule runs on meta tensors (never on real data) to tell its output
    shapes. With `output`, the function keeps that one of its outputs (--output NAME).
    """
    shapes_given: dict[str, Shape] = _assign(function, shape_options, "--shape")  # type: ignore[assignment]
    values: dict[str, ArrayData] = _assign(function, value_options, "--value")  # type: ignore[assignment]
    at_point: dict[str, ArrayData] = _assign(function, point_options, "--points")  # type: ignore[assignment]
    for name in at_point:
        if name in values:
            raise UsageError(f"input {name!r} has both --value and --points; give one")
    for option, given in (("--value", values), ("--points", at_point)):
        for name, data in given.items():
            require_in_range(f"{option} {name!r}", data, dtype)
    values = {**values, **at_point}
    shapes = resolve_shapes(function, shapes_given, values)
    integer_files = [
        n
        for n, data in values.items()
        if function.integer_inputs and data.is_integer and data.from_file
    ]
    wrt_names = resolve_wrt(function, list(shapes), wrt, integer_files)
    generator = seeded_generator(seed)
    torch_dtype = TORCH_DTYPES[dtype]
    itemsize = torch_dtype.itemsize
    input_bytes = sum(math.prod(shape) for shape in shapes.values()) * itemsize
    out_shapes = _rule_output_shapes(function, shapes)
    if shapes_only:
        if input_bytes >= 2**62:  # past what any tensor, even one without values, can describe
            require_within_budget("the inputs", input_bytes, budget, "use smaller shapes")
        unknown = None
        if out_shapes is None:
            out_shapes, unknown = meta_output_shapes(function, shapes, torch_dtype)
        if output is not None:
            function, out_shapes = select_output(function, out_shapes, output)
        meta = {
            name: torch.empty(shape, dtype=torch_dtype, device="meta")
            for name, shape in shapes.items()
        }
        if out_shapes:
            function, _ = _with_separable_axes(function, batch_axes, shapes, out_shapes)
        return Problem(
            function, dtype, meta, wrt_names, out_shapes or {}, generator, output_unknown=unknown
        )
    resident = RESIDENT_MULTIPLE * input_bytes
    require_within_budget("the inputs and one call on them", resident, budget, "use smaller shapes")
    _require_intermediates_fit(function, shapes, input_bytes, itemsize, budget)
    if out_shapes is not None:
        output_bytes = sum(math.prod(shape) for shape in out_shapes.values()) * itemsize
        require_within_budget(
            "the inputs, one call on them and the outputs",
            resident + output_bytes,
            budget,
            "use smaller shapes",
        )
    # A user callable's input outside wrt keeps the integers it was given (targets, indices);
    # presets and expressions compute in floating point throughout.
    keep_integers = [name for name in shapes if function.integer_inputs and name not in wrt_names]
    tensors = make_inputs(shapes, values, generator, torch_dtype, keep_integers)
    if out_shapes is None:
        outputs = _evaluate_with_hint(function, tensors, values, wrt_names, explicit=bool(wrt))
        require_within_budget(
            f"{len(outputs)} outputs (their names, tensors and a result each)",
            len(outputs) * BYTES_PER_OUTPUT,
            budget,
            "return fewer outputs (one tensor stacks many)",
        )
        out_shapes = {name: tuple(y.shape) for name, y in outputs.items()}
    if output is not None:
        function, out_shapes = select_output(function, out_shapes, output)
    function, declared = _with_separable_axes(function, batch_axes, shapes, out_shapes)
    verify_declared(function, tensors, declared)
    notes = _rounding_notes(values, dtype)
    return Problem(function, dtype, tensors, wrt_names, out_shapes, generator, notes)


def select_output(
    function: Function, output_shapes: dict[str, Shape] | None, output: str
) -> tuple[Function, dict[str, Shape] | None]:
    """The function keeping only `output` of its outputs, and that output's shape (unchanged
    when the shapes are unknown); UsageError naming the outputs when it has no such output."""
    if output_shapes is not None:
        if output not in output_shapes:
            by_position = all(re.fullmatch(r"y\d+(\..+)?", name) for name in output_shapes)
            raise UsageError(
                f"--output {output!r} is not an output of {function.name} "
                f"(outputs: {', '.join(output_shapes)})"
                + (
                    "; a tuple's outputs are named by position: return a dict or a namedtuple "
                    "to name them"
                    if by_position and len(output_shapes) > 1
                    else ""
                ),
                code="unknown_output",
            )
        output_shapes = {output: output_shapes[output]}
    return replace(function, selected_output=output), output_shapes


def _with_separable_axes(
    function: Function,
    batch_axes: Sequence[tuple[str | None, int]],
    shapes: dict[str, Shape],
    output_shapes: dict[str, Shape],
) -> tuple[Function, dict[str, tuple[AxisPair, ...]]]:
    """The function with the separable axes its syntax tree shows (an expression's) and those
    --batch-axis declares (which take precedence), and the declared ones, to verify."""
    axes = function.separable_axes(shapes) if function.separable_axes is not None else {}
    declared = declared_axes(function, batch_axes, shapes, output_shapes) if batch_axes else {}
    axes = {**axes, **declared}
    return (function.with_separable(axes, shapes) if axes else function), declared


def describe(problem: Problem, outputs: Mapping[str, torch.Tensor]) -> Evaluation:
    """The function, its inputs and its outputs as plain data for the renderers."""
    function = problem.function
    return Evaluation(
        function_name=function.name,
        formula=function.formula,
        dtype=problem.dtype,
        inputs=tuple(
            InputValue(
                spec.name,
                to_numpy(problem.inputs[spec.name]),
                spec.name in problem.wrt,
                spec.differentiable,
            )
            for spec in function.inputs
            if spec.name in problem.inputs
        ),
        outputs={name: to_numpy(output) for name, output in outputs.items()},
        wrt=problem.wrt,
        jacobian_formula=function.jacobian_formula,
    )
