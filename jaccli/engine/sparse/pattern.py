"""J's sparsity pattern: which entries of J can be non-zero, found by running the function
once on its real values while tracking, for every element of every tensor, the input elements
it depends on (tracer.py, with one small rule per kind of aten op: the table in rules.py).

The interface (what colouring and compressed AD build on):

    @dataclass(frozen=True)
    class SparsityPattern:
        matrix: scipy.sparse.csr_array  # bool, (m, n): rows = the outputs flattened, in
                                        # order; columns = the wrt inputs flattened and
                                        # concatenated in wrt order (J as one matrix)
        exact: bool                     # every op had an exact rule
        value_dependent: bool           # data-dependent selection seen: holds at this point
        notes: tuple[str, ...]          # what the pattern cannot promise, and why

    detect_pattern(problem, budget=None) -> SparsityPattern
    hessian_pattern(problem, budget=None) -> SparsityPattern   # n × n, symmetric
    read_pattern(path, shape, size_limit=…, budget=None) -> SparsityPattern  # pattern_file.py

The contract: the pattern never misses a non-zero of J as autograd computes it; it may hold
more. `exact` is structural: with it, no entry is there only because a rule had to be safe,
but an entry whose terms cancel (x − x) or that a branch not taken at this point feeds (where,
max, relu) is kept, as in every structural method. `value_dependent`: an index, mask, sort or
Python number taken from the differentiated inputs' values, or a zero or index taken from an
input outside wrt, shaped it: it holds at this point (for these values) only, and a note says
which op. `budget` (bytes; None: the default budget) bounds the pattern's own size: a pattern
too dense to hold is refused (exit 3) rather than built.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from jaccli.engine.evaluate import blaming_user_code, leaves_of
from jaccli.engine.problem import Problem
from jaccli.engine.sparse import dependencies as deps
from jaccli.engine.sparse.tracer import Tracer
from jaccli.errors import ComputationError, JaccliError, UsageError
from jaccli.spec import format_shape


@dataclass(frozen=True)
class SparsityPattern:
    """Where J can be non-zero: J as one matrix (rows: outputs flattened in order, columns:
    the `wrt` inputs flattened and concatenated), True at every entry that may be non-zero."""

    matrix: sp.csr_array
    exact: bool
    """Every op had an exact rule: no entry is there only because a rule had to be safe."""
    value_dependent: bool
    """Values shaped it (an index, mask or sort chosen by the inputs' values; the zeros or
    indices of an input outside wrt): it holds at this point only."""
    notes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.matrix.shape
        return int(rows), int(columns)

    @property
    def nnz(self) -> int:
        return int(self.matrix.nnz)

    @property
    def density(self) -> float:
        rows, columns = self.shape
        return self.nnz / (rows * columns) if rows and columns else 0.0

    def __repr__(self) -> str:
        rows, columns = self.shape
        kind = "exact" if self.exact else "superset"
        where = ", at this point only" if self.value_dependent else ""
        return f"SparsityPattern({rows}×{columns}, nnz={self.nnz}, {kind}{where})"


def detect_pattern(problem: Problem, budget: int | None = None) -> SparsityPattern:
    """J's sparsity pattern at the problem's point, by one traced call of the function."""
    tracer = Tracer(problem.input_count, budget)
    with torch.enable_grad():
        leaves = leaves_of(problem.inputs)
        outputs = tracer.call(problem.function, _watched_copies(leaves, problem.wrt, tracer))
        _require_same_outputs(problem, outputs)
        matrix = deps.stack([tracer.dependencies(outputs[n]) for n in problem.output_shapes])
        if _has_custom_functions(outputs.values()):
            ys = [outputs[n] for n in problem.output_shapes]
            xs = [leaves[n] for n in problem.wrt]
            matrix = _joined(matrix, _through_backward(ys, xs, tracer, problem.function.name))
    return _pattern(matrix, tracer)


def _joined(matrix: sp.csr_array, more: sp.csr_array) -> sp.csr_array:
    """The entries of both (of one shape)."""
    joined = deps.union([matrix, more])
    return matrix if joined is None else joined


def _has_custom_functions(outputs: Iterable[torch.Tensor]) -> bool:
    """Whether autograd's graph of the outputs holds a custom autograd.Function."""
    seen: set[Any] = set()
    nodes = [o.grad_fn for o in outputs]
    while nodes:
        node = nodes.pop()
        if node is None or node in seen:
            continue
        if isinstance(node, torch.autograd.function.BackwardCFunction):
            return True
        seen.add(node)
        nodes.extend(following for following, _ in node.next_functions)
    return False


def _through_backward(
    ys: list[torch.Tensor], xs: list[torch.Tensor], tracer: Tracer, what: str
) -> sp.csr_array:
    """The pattern of ∂y/∂x (rows: every y's elements in turn, columns: the xs') as autograd's
    backward pass has it: one traced backward pass, each y's cotangent watched (its elements
    the columns), gives its transpose.

    # NOTE [custom autograd Functions]
    A custom Function's forward may compute outside torch (NumPy, a solver), where the tracer
    cannot see, and autograd's J then comes from its own backward. So where the graph holds
    one, the backward pass is traced too and its pattern added: what every backward formula
    (the custom ones included) sends each output's cotangent to; for H, the backward of the
    gradient. The tensors the backward saved are not known to this trace: their zeros are
    taken as values of this point, never as structure.
    """
    rows = sum(y.numel() for y in ys)
    columns = sum(x.numel() for x in xs)
    reverse = Tracer(rows, tracer.budget, unseen_vary=True)
    pulled, cotangents, first = [], [], 0
    for y in ys:
        if y.requires_grad:
            cotangent = torch.ones_like(y)
            reverse.watch(cotangent, first)
            pulled.append(y)
            cotangents.append(cotangent)
        first += y.numel()
    try:
        with reverse:
            gradients = torch.autograd.grad(pulled, xs, cotangents, allow_unused=True)
    except JaccliError:
        reverse.require_no_refusal()
        raise
    except Exception as error:  # the user's backward: any failure, be safe
        tracer.note(
            f"the backward pass of {what} failed when asked for the pattern "
            f"({type(error).__name__}): every output depends on every input element",
            exact=False,
        )
        tracer.require_entries(rows * columns, "a failed backward")
        return deps.repeated_row(np.arange(columns), rows, columns)
    reverse.require_no_refusal()
    for text in reverse.notes:
        tracer.note(text, exact=reverse.exact, value_dependent=reverse.value_dependent)
    transposed = deps.stack(
        [
            reverse.dependencies(g) if g is not None else deps.no_dependencies(x.numel(), rows)
            for g, x in zip(gradients, xs, strict=True)
        ]
    )
    return transposed.T.tocsr()


def hessian_pattern(problem: Problem, budget: int | None = None) -> SparsityPattern:
    """The sparsity pattern of the Hessian of a scalar function (n × n over the `wrt` inputs,
    symmetric), by tracing the computation of its gradient: one call and one backward pass.

    The gradient is an ordinary computation of x, so its traced dependencies contain the
    non-zeros of its Jacobian, H; the pattern is made symmetric (H is), which only adds.
    """
    shapes = problem.output_shapes
    if len(shapes) != 1 or math.prod(next(iter(shapes.values()))) != 1:
        described = ", ".join(f"{name} {format_shape(shape)}" for name, shape in shapes.items())
        raise UsageError(
            f"the Hessian's sparsity pattern is of a scalar function; {problem.function.name} "
            f"returns {described}",
            code="not_scalar",
        )
    tracer = Tracer(problem.input_count, budget)
    with torch.enable_grad():
        leaves = leaves_of(problem.inputs)
        outputs = tracer.call(problem.function, _watched_copies(leaves, problem.wrt, tracer))
        _require_same_outputs(problem, outputs)
        (output,) = outputs.values()
        xs = [leaves[name] for name in problem.wrt]  # not the copies, which f may overwrite
        custom = _has_custom_functions([output])
        if output.requires_grad:
            with tracer, blaming_user_code(problem.function):
                gradients = torch.autograd.grad(
                    output.reshape(()),
                    xs,
                    allow_unused=True,
                    materialize_grads=True,
                    create_graph=custom,
                )
            tracer.require_no_refusal()
        else:  # a constant: H = 0
            gradients = tuple(torch.zeros_like(x) for x in xs)
        rows = deps.stack([tracer.dependencies(g) for g in gradients])
        if custom:  # NOTE [custom autograd Functions]: H as autograd has it, too
            name = f"the gradient of {problem.function.name}"
            rows = _joined(rows, _through_backward(list(gradients), xs, tracer, name))
    symmetric = (rows + rows.T).tocsr()
    symmetric.sum_duplicates()
    return _pattern(symmetric, tracer)


def _watched_copies(
    leaves: dict[str, torch.Tensor], wrt: tuple[str, ...], tracer: Tracer
) -> dict[str, torch.Tensor]:
    """Copies of the inputs for the function to use (and mutate), made outside the tracer,
    each `wrt` input watched (its element k is column (its first column) + k), the others
    remembered as the inputs whose values a structural zero or an index may come from."""
    fresh = {name: leaf.clone() for name, leaf in leaves.items()}
    first = 0
    for name in wrt:
        tracer.watch(fresh[name], first)
        first += fresh[name].numel()
    for name in fresh.keys() - set(wrt):
        tracer.watch_constant(fresh[name], name)
    return fresh


def _require_same_outputs(problem: Problem, outputs: dict[str, torch.Tensor]) -> None:
    """The traced call must return what the problem's first call did."""
    shapes = {name: tuple(output.shape) for name, output in outputs.items()}
    if shapes != problem.output_shapes:
        raise ComputationError(
            f"{problem.function.name} returned outputs of other shapes when traced for its "
            f"sparsity pattern ({_described(shapes)}, not {_described(problem.output_shapes)})"
        )


def _described(shapes: dict[str, tuple[int, ...]]) -> str:
    return ", ".join(f"{name} {format_shape(shape)}" for name, shape in shapes.items())


def _pattern(matrix: sp.csr_array, tracer: Tracer) -> SparsityPattern:
    if matrix.dtype != bool or not matrix.has_canonical_format:  # never sort a shared array
        matrix = sp.csr_array(matrix, dtype=bool, copy=True)
        matrix.sum_duplicates()
    return SparsityPattern(matrix, tracer.exact, tracer.value_dependent, tuple(tracer.notes))
