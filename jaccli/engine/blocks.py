"""One block of J at a time: rows or columns of J as a matrix, or J at a block of points, each
computed by the engine's own methods and verified before it is handed on.

# NOTE [J as a matrix]
A block is a rectangle of J as a matrix: rows are the outputs flattened end to end in output
order, columns the `wrt` inputs flattened end to end in `wrt` order (the layout of the JSON's
"structure"). A block of rows is a chunk of vmapped VJPs (one reverse pass a row, as jacrev),
a block of columns a chunk of vmapped JVPs (one forward pass a column, as jacfwd); a function
vmap cannot run is computed by a loop of single passes over the same rows or columns, with a
note. Every block is probed on its own by the correctness guard (`trust.probe_block`: u over
its rows, v over its columns, against one plain reverse pass) and, for a user's function, by
the function's own differences (`reference.check_block`), so a block that is wrong anywhere is
refused (exit 1) before it is stored, whichever process computed it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch

from jaccli import memory
from jaccli.engine.det import joint_matrix
from jaccli.engine.jacobian import (
    load_vectorizing,
    loop_reverse_rows,
    reverse_rows,
    split_wrt,
)
from jaccli.engine.many import run_points
from jaccli.engine.problem import Problem
from jaccli.engine.reference import check_block
from jaccli.engine.trust import disagreement, probe_block
from jaccli.errors import ComputationError
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import brief
from jaccli.result import Guard, JacobianResult

CHUNKS_A_BLOCK = 4
"""A block's rows (columns) go through vmap in this many chunks: its VJPs (JVPs), their basis
and the function's backward intermediates take a fraction of the block beside it."""


@dataclass(frozen=True)
class Block:
    """One block of J's matrix: the values and how they were computed and verified."""

    values: np.ndarray
    """rows × columns of J as a matrix, or (points, rows, columns) for a block of points."""
    method: str
    guard: Guard
    notes: tuple[str, ...] = ()


def joined_rows(problem: Problem, start: int, stop: int, chunk_size: int | None = None) -> Block:
    """Rows start:stop of J as a matrix (NOTE [J as a matrix]) by vmapped VJPs, or a loop of
    backward passes where vmap cannot run the function; verified."""
    primals, f = split_wrt(problem)
    _, f_vectorized = split_wrt(problem, vectorized=True)
    notes: tuple[str, ...] = ()
    try:
        load_vectorizing()
        chunk = chunk_size or max(1, -(-(stop - start) // CHUNKS_A_BLOCK))
        _, parts = reverse_rows(f_vectorized, primals, (start, stop), chunk, largest_chunk=chunk)
        method = "rev"
    except ComputationError as error:
        _, parts = loop_reverse_rows(f, primals, (start, stop))
        method = "loop-rev"
        notes = (
            f"could not vectorize {problem.function.name} ({brief(error.message, 160)}); "
            "computed its rows with a loop of backward passes",
        )
    flat = [p.reshape(stop - start, -1) for p in parts]
    matrix = flat[0] if len(flat) == 1 else torch.cat(flat, dim=1)  # one input: no copy
    del parts, flat
    guard = _verified(problem, f, primals, matrix, (start, stop), (0, problem.input_count), method)
    return Block(matrix.numpy(), method, guard, notes)


def joined_columns(problem: Problem, start: int, stop: int, chunk_size: int | None = None) -> Block:
    """Columns start:stop of J as a matrix (NOTE [J as a matrix]) by vmapped JVPs, or a loop of
    forward passes where vmap cannot run the function; verified."""
    primals, f = split_wrt(problem)
    _, f_vectorized = split_wrt(problem, vectorized=True)
    notes: tuple[str, ...] = ()
    try:
        load_vectorizing()
        chunk = chunk_size or max(1, -(-(stop - start) // CHUNKS_A_BLOCK))
        matrix = _forward_columns(f_vectorized, primals, start, stop, chunk, vmapped=True)
        method = "fwd"
    except ComputationError as error:
        matrix = _forward_columns(f, primals, start, stop, 1, vmapped=False)
        method = "loop-fwd"
        notes = (
            f"could not vectorize {problem.function.name} ({brief(error.message, 160)}); "
            "computed its columns with a loop of forward passes",
        )
    n_out = problem.output_count
    guard = _verified(problem, f, primals, matrix, (0, n_out), (start, stop), method)
    return Block(matrix.numpy(), method, guard, notes)


def _forward_columns(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    start: int,
    stop: int,
    chunk_size: int | None,
    *,
    vmapped: bool,
) -> torch.Tensor:
    """J[:, start:stop] as a matrix, one JVP a column along the basis vectors of the joined
    inputs, `chunk_size` columns vmapped at once (or one by one)."""
    sizes = [p.numel() for p in primals]
    offsets = np.cumsum([0, *sizes])
    columns: list[torch.Tensor] = []
    step = max(1, chunk_size or (stop - start))
    for first in range(start, stop, step):
        last = min(stop, first + step)
        count = last - first
        tangents = []
        for k, p in enumerate(primals):
            basis = torch.zeros((count, sizes[k]), dtype=p.dtype)
            inside = [
                (c, c - offsets[k]) for c in range(first, last) if offsets[k] <= c < offsets[k + 1]
            ]
            for c, local in inside:
                basis[c - first, local] = 1
            tangents.append(basis.reshape(count, *p.shape))

        def column(*ts: torch.Tensor) -> torch.Tensor:
            return torch.func.jvp(f, tuple(primals), ts)[1]

        try:
            if vmapped:
                part = torch.func.vmap(column)(*tangents).reshape(count, -1)
            else:
                part = torch.stack(
                    [column(*(t[k] for t in tangents)).reshape(-1) for k in range(count)]
                )
        except ComputationError:
            raise
        except (RuntimeError, NotImplementedError) as error:
            raise_if_out_of_memory(error)
            raise ComputationError(
                f"forward mode cannot run the function ({brief(str(error), 160)})"
            ) from error
        columns.append(part.detach().T)
    memory.trim()
    return torch.cat(columns, dim=1).contiguous()


def _verified(
    problem: Problem,
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    matrix: torch.Tensor,
    rows: tuple[int, int],
    columns: tuple[int, int],
    method: str,
) -> Guard:
    """The block's guard verdict, or ComputationError (exit 1) where it fails the correctness
    guard or, for a user's function, the function's own differences."""
    shapes = list(problem.output_shapes.values())
    y_shape = shapes[0] if len(shapes) == 1 else (problem.output_count,)  # split_wrt's f
    guard = probe_block(f, primals, y_shape, matrix, rows, columns, method)
    if guard.passed is False:
        raise ComputationError(
            f"the block of rows {rows[0]}:{rows[1]}, columns {columns[0]}:{columns[1]} of J "
            f"failed the correctness guard ({method}): {disagreement(guard)}",
            code="guard_failed",
        )
    reference = check_block(problem, matrix, rows, columns)
    return guard if reference is None else replace(guard, function_reference=reference)


def joined_at_points(
    problem: Problem,
    points: Mapping[str, torch.Tensor],
    first_index: int,
    budget: int | None = None,
) -> Block:
    """J as a matrix at each of a block of points (the inputs in `points` vary along their
    leading axis), by the engine of many points (NOTE [many points]): (points, rows, columns);
    the first point that fails stops the block."""
    from jaccli.engine.run import run_jacobian

    count = next(iter(points.values())).shape[0]
    n_out, n_in = problem.output_count, problem.input_count
    values = np.empty((count, n_out, n_in), dtype=np.dtype(problem.dtype))
    guard: Guard | None = None
    notes: list[str] = []
    for outcomes in run_points(
        problem,
        "jacobian",
        points,
        lambda p: run_jacobian(p, budget=budget),
        first_index=first_index,
        budget=budget,
    ):
        for outcome in outcomes:
            if outcome.error is not None:
                raise type(outcome.error)(
                    f"at point {outcome.index}: {outcome.error.message}", code=outcome.error.code
                )
            result = outcome.result
            assert isinstance(result, JacobianResult)
            values[outcome.index - first_index] = joined_matrix(problem, result).numpy()
            if guard is None or not guard.method.startswith("vmap"):
                guard = result.guard  # the chunk's vectorized verdict, where there is one
            notes.extend(n for n in result.notes if n not in notes)
    assert guard is not None
    return Block(values, guard.method, guard, tuple(notes))


def joined_matrix(problem: Problem, result: JacobianResult) -> torch.Tensor:
    """J of a result as a matrix (NOTE [J as a matrix])."""
    return torch.cat(
        [
            joint_matrix(result.jacobians[name], int(np.prod(shape, dtype=np.int64)))
            for name, shape in problem.output_shapes.items()
        ],
        dim=0,
    )
