"""From a Request to the engine's Problem: the budget held, the values read, the function
resolved and the inputs drawn or loaded (this imports torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from jaccli import memory, spec
from jaccli.arrays import ArrayData
from jaccli.functions import Function, resolve
from jaccli.request import Request
from jaccli.timeout import clock_pending, start_clock

if TYPE_CHECKING:
    from jaccli.engine import Problem


def hold_budget(request: Request) -> None:
    """Let the kernel hold the budget from here on (NOTE [the budget holds for real] in
    jaccli/memory.py), before anything is read; this imports torch."""
    memory.hold(memory.budget_or_default(request.limits.budget))


def read_direction(request: Request, option: str, part: str) -> spec.Direction:
    """The vector of a product, read as --value reads files and JSON (`part`: whose shapes it
    takes, `output` or `input`)."""
    given = request.compute.direction
    assert given is not None
    if not isinstance(given, str):
        return given
    return spec.parse_direction(given, option, part, request.limits.value_limit)


def build_problem(
    request: Request,
    *,
    shapes_only: bool = False,
    values: Sequence[tuple[str, ArrayData]] = (),
) -> Problem:
    """The Problem the request describes, with `values` for inputs already read (the first of
    --points), and the warning when --max-memory was reduced to the memory available; starts
    --timeout's clock once torch has loaded, before the function is loaded."""
    inputs, limits = request.inputs, request.limits
    value_options = [
        (
            name,
            given if isinstance(given, ArrayData) else spec.read_value(given, limits.value_limit),
        )
        for name, given in inputs.values
    ]
    given_names = [name or "x" for name, _ in (*inputs.shapes, *value_options, *values)]
    if clock_pending():
        import jaccli.engine  # noqa: F401 (torch's start-up is not the function's time)

        start_clock()
    function = _function(request, given_names)
    from jaccli.engine import prepare
    from jaccli.engine.device import on_device, resolve_device

    place = resolve_device(inputs.device)
    problem = prepare(
        function,
        shape_options=inputs.shapes,
        value_options=value_options,
        point_options=values,
        wrt=inputs.wrt,
        seed=inputs.seed,
        dtype=inputs.dtype,
        budget=limits.budget,
        shapes_only=shapes_only,
        batch_axes=inputs.batch_axes,
        output=inputs.output,
    )
    problem = problem if shapes_only else on_device(problem, place)
    if limits.budget_note is None:
        return problem
    return replace(problem, notes=(limits.budget_note, *problem.notes))


def _function(request: Request, given_names: Sequence[str]) -> Function:
    """The function `--fn` or `--expr` names, or the callable the Python API was given."""
    chosen = request.function
    if chosen.callable is not None:
        from jaccli.functions.user import callable_function

        return callable_function(chosen.callable, given_names)
    return resolve(chosen.name, chosen.expression, given_names, request.limits.value_limit)
