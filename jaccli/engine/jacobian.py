"""The Jacobian J of y = f(inputs) for each `wrt` input, with `J.shape == y.shape + x.shape`.

# NOTE [choosing a strategy]
Start-up dominates small problems (measured: docs/performance.md, Benchmarks): the first
`torch.func` call in a process imports torch._dynamo (+1.0–1.5 s), the first forward-mode dual
tensor costs about 0.2 s, and a plain `torch.autograd.grad` costs nothing extra. So while that
start-up is still unpaid, a Python loop of single passes along the smaller side of J wins up to a
few hundred passes: one backward pass per output element (`loop-rev`), or one forward pass per input
element (`loop-fwd`). Once paid (torch._dynamo is loaded), only a handful of passes beat vmap. Past
that, the vectorized `torch.func.jacrev` (fewer outputs than inputs) or `torch.func.jacfwd` (more
outputs) win by 60–150× over the wrong mode on lopsided shapes.

# NOTE [memory]
Measured peaks above the inputs, as multiples of J's bytes: jacrev 2× (chunked: J plus two
rows of VJPs per chunk row), jacfwd 3×, and the loops 1× because they fill a preallocated J.
Over the budget, reverse mode is chunked and forward mode falls back to its loop; when J itself
does not fit, nothing is computed (exit 3). These multiples are the plan's estimate; computing,
reverse mode sizes its chunks from a measured first chunk (NOTE [chunks from a measured first
chunk]) and the kernel holds the budget (NOTE [the budget holds for real] in jaccli/memory.py).
"""

from __future__ import annotations

import math
import os
import sys
import traceback
import types
from collections.abc import Callable, Iterator
from dataclasses import replace
from enum import Enum
from typing import TypeVar

import numpy as np
import torch

from jaccli import memory
from jaccli.engine.evaluate import (
    as_leaf,
    call_fresh,
    call_function,
    fresh_copies,
    leaves_of,
    to_numpy,
)
from jaccli.engine.kinks import OpWatch, Watched, flat_ops, kink_notes, leaves_reached
from jaccli.engine.problem import Problem, describe
from jaccli.engine.trust import Made, disagreement, probe_jacobians
from jaccli.errors import ComputationError, ResourceError
from jaccli.memory import budget_or_default, raise_if_out_of_memory
from jaccli.messages import format_bytes
from jaccli.result import JacobianResult, Plan

COLD_LOOP_LIMIT = 256
"""Passes a loop may take while torch.func's start-up is unpaid in this process."""
WARM_LOOP_LIMIT = 16
"""Passes a loop may take once it is paid."""
WARM_SECOND_ORDER_LOOP_LIMIT = 4
"""The same for a Hessian, whose every pass is a backward pass through a backward pass, while
reverse mode batches them all into one (logsumexp: 16 passes 2.2 ms, batched 1.1 ms; 4 passes
1.3 ms against 1.2 ms, measured)."""

Returned = TypeVar("Returned")
Progress = Callable[[int, int], None]
"""Called with (passes done, passes in all) as a loop goes."""


class Strategy(str, Enum):
    """How J is computed: a loop of single passes, or vectorized reverse or forward mode."""

    AUTO = "auto"
    LOOP = "loop"
    REV = "rev"
    FWD = "fwd"


def vectorized_start_up_paid() -> bool:
    """Whether torch.func has already run in this process (it leaves torch._dynamo loaded)."""
    return "torch._dynamo" in sys.modules


def _loop_limit(second_order: bool = False) -> int:
    if not vectorized_start_up_paid():
        return COLD_LOOP_LIMIT
    return WARM_SECOND_ORDER_LOOP_LIMIT if second_order else WARM_LOOP_LIMIT


def method_in_mode(mode: str, n_out: int, n_in: int, *, second_order: bool = False) -> str:
    """The method for reverse (`rev`) or forward (`fwd`) mode: its loop when passes are few
    (fewer for the passes of a Hessian)."""
    passes = n_out if mode == "rev" else n_in
    return f"loop-{mode}" if passes <= _loop_limit(second_order) else mode


def choose_strategy(
    requested: Strategy, n_out: int, n_in: int, *, second_order: bool = False
) -> tuple[str, str]:
    """The method to use and the reason, from the output and input element counts (of the
    gradient, for a Hessian: `second_order`)."""
    mode = "rev" if n_out <= n_in else "fwd"
    if requested is Strategy.LOOP:
        return f"loop-{mode}", "requested with --strategy loop"
    if requested in (Strategy.REV, Strategy.FWD):
        return requested.value, f"requested with --strategy {requested.value}"
    method = method_in_mode(mode, n_out, n_in, second_order=second_order)
    if method.startswith("loop"):
        passes = min(n_out, n_in)
        kind = "backward" if mode == "rev" else "forward"
        if vectorized_start_up_paid():
            why = "beats vmap" if passes == 1 else "beat vmap"
        else:
            why = "(torch.func takes ~1 s to load)"
        return method, f"{passes} {kind} pass{'' if passes == 1 else 'es'} {why}"
    if mode == "rev":
        return "rev", f"{n_out} outputs ≤ {n_in} inputs: reverse mode, fewer passes"
    return "fwd", f"{n_out} outputs > {n_in} inputs: forward mode, fewer passes"


def _peak(method: str, result_bytes: int, row_bytes: int, chunk_size: int | None) -> int:
    if method == "rev":
        return result_bytes + 2 * chunk_size * row_bytes if chunk_size else 2 * result_bytes
    return 3 * result_bytes if method == "fwd" else result_bytes


def plan_jacobian(
    problem: Problem, strategy: Strategy = Strategy.AUTO, budget: int | None = None
) -> Plan:
    """Choose the method and chunking that fit the memory budget; `refused` says why not."""
    n_out, n_in = problem.output_count, problem.input_count
    method, reason = choose_strategy(strategy, n_out, n_in, second_order=is_gradient(problem))
    limit = budget_or_default(budget)
    itemsize = problem.torch_dtype.itemsize
    result_bytes = n_out * n_in * itemsize
    row_bytes = n_in * itemsize
    resident = problem.resident_bytes
    available = limit - resident
    chunk_size = None
    if _peak(method, result_bytes, row_bytes, None) > available and result_bytes < available:
        if method == "rev":
            chunk_size = max(1, (available - result_bytes) // (2 * row_bytes))
            reason += (
                f"; chunks of {chunk_size} rows keep it within the budget (estimated; the "
                "first chunk's measured peak sizes the rest)"
            )
        elif method == "fwd":
            method = "loop-fwd"
            reason += "; a loop of forward passes keeps it within the budget"
    peak = _peak(method, result_bytes, row_bytes, chunk_size) + resident
    refused = None
    if peak > limit:
        what = "Hessian" if is_gradient(problem) else "Jacobian"
        refused = (
            f"the {n_out}×{n_in} {what} would need about {format_bytes(peak)} ({method}), over "
            f"the memory budget of {format_bytes(limit)}; {_way_out(problem)}"
        )
    return Plan(method, reason, n_out, n_in, result_bytes, peak, limit, chunk_size, refused)


GRADIENT_OF = "the gradient of "
"""How the formula of a gradient problem begins (hessian.gradient_problem): its J is a Hessian."""


def is_gradient(problem: Problem) -> bool:
    """Whether `problem` is the gradient of another, whose J is that one's Hessian."""
    return problem.function.formula.startswith(GRADIENT_OF)


def plan_inputs_only(problem: Problem, budget: int | None = None) -> Plan:
    """What can be known when the output shapes cannot: the inputs' size against the budget."""
    limit = budget_or_default(budget)
    inputs_bytes = sum(t.numel() for t in problem.inputs.values()) * problem.torch_dtype.itemsize
    refused = None
    if inputs_bytes > limit:
        refused = (
            f"the inputs alone would need about {format_bytes(inputs_bytes)}, over the memory "
            f"budget of {format_bytes(limit)}; use smaller shapes, or raise --max-memory"
        )
    reason = "the output shape is unknown until the function runs"
    return Plan("unknown", reason, 0, problem.input_count, 0, inputs_bytes, limit, None, refused)


def require_feasible(plan: Plan) -> Plan:
    """The plan, or ResourceError (exit 3) when it does not fit the budget."""
    if plan.refused is not None:
        raise ResourceError(plan.refused, code="memory_budget")
    return plan


def _way_out(problem: Problem) -> str:
    ways = ["--sparse for only the non-zeros (when most entries are zero)"]
    if is_gradient(problem):  # hessian has no --batched; hvp takes a scalar output
        if problem.output_count == problem.input_count:
            ways.append("hvp for H·v without forming H")
    else:
        if has_separable_axis(problem):
            ways.append("--batched for only the diagonal blocks")
        ways.append("vjp for one combination of rows")
    ways += ["smaller shapes", "a larger --max-memory"]
    return "try " + ", ".join(ways)


def has_separable_axis(problem: Problem) -> bool:
    """Whether J has diagonal blocks to keep: a single output, separable along some axis."""
    if len(problem.output_shapes) != 1:
        return False
    (shape,) = problem.output_shapes.values()
    return any(
        problem.function.input(wrt).separable.axes(problem.inputs[wrt].ndim, len(shape))
        for wrt in problem.wrt
    )


def _candidates(
    problem: Problem, strategy: Strategy, plan: Plan, budget: int | None
) -> Iterator[Plan]:
    """The methods to try in turn: the plan's, then (under auto) a loop of reverse passes, then
    torch.func's reverse mode, for when a method fails or fails the guard (each fallback
    planned only when it is reached)."""
    yield plan
    if strategy is not Strategy.AUTO:
        return
    tried = {plan.method}
    if "loop-rev" not in tried:
        tried.add("loop-rev")
        yield replace(plan, method="loop-rev", chunk_size=None)
    rev = plan_jacobian(problem, Strategy.REV, budget)
    if rev.refused is None and rev.method not in tried:
        yield rev


def compute_jacobian(
    problem: Problem,
    strategy: Strategy = Strategy.AUTO,
    budget: int | None = None,
    progress: Progress | None = None,
) -> JacobianResult:
    """J of each output for each `wrt` input, by the requested strategy or the one the sizes
    call for, verified by the correctness guard (NOTE [the correctness guard] in trust.py).

    Under auto, a method that raises or fails the guard gives way to a reverse-mode loop, then
    to vectorized reverse mode; an explicit strategy that does either is refused (exit 1).
    """
    plan = require_feasible(plan_jacobian(problem, strategy, budget))
    call_notes = CallNotes()
    primals, f_watched = split_wrt(problem, notes=call_notes)  # the guard's call: warnings too
    rejected: list[str] = []
    """Why each method tried before the one used was not used, in full (for the JSON)."""
    briefly: list[str] = []
    """The same in a few words (for the warning on stderr)."""
    for candidate in _candidates(problem, strategy, plan, budget):
        method = candidate.method
        sizing: list[str] = []
        call_notes.made = None
        try:
            joined_y, joined = jacobian_by(
                problem, method, candidate.chunk_size, progress, sizing, call_notes
            )
        except ComputationError as error:
            if strategy is not Strategy.AUTO or method == "loop-rev":
                raise
            rejected.append(f"{method} failed: {error.message}")
            briefly.append(
                f"could not vectorize {problem.function.name}"
                if method in ("rev", "fwd")
                else f"{method} could not run"
            )
            continue
        made = None if problem.function.is_guest else call_notes.made
        guard = probe_jacobians(f_watched, primals, joined_y.shape, joined, method, made)
        call_notes.made = None  # its graph is freed
        if guard.passed is not False:
            break
        rejected.append(f"{method} failed the correctness guard: {disagreement(guard)}")
        briefly.append(f"{method}'s J failed the correctness guard ({disagreement(guard)})")
        if strategy is not Strategy.AUTO:
            raise ComputationError(
                f"--strategy {strategy.value}: {method}'s J failed the correctness guard, "
                f"{disagreement(guard)}; this method cannot differentiate "
                f"{problem.function.name} (try --strategy auto)",
                code="guard_failed",
            )
    else:
        precision = (
            f"; if {problem.function.name} is right, {problem.dtype} may lack the precision for "
            "J here (a sharp softmax's J is rounding beside its outputs): try --dtype float64"
            if problem.torch_dtype != torch.float64
            else ""
        )
        raise ComputationError(
            f"no method gives a Jacobian of {problem.function.name} that passes the "
            f"correctness guard: {'; '.join(rejected)}{precision}",
            code="guard_failed",
        )
    reason = (
        candidate.reason
        if not sizing
        else f"{candidate.reason.split('; chunks of')[0]}; {sizing[0]}"
    )
    notes = []
    if rejected:
        reason = f"{'; '.join(rejected)}; so {method}"
        notes.append(f"{'; '.join(briefly)}; computed J with {method} instead")
    jacobians = split_jacobians(problem, joined)
    return JacobianResult(
        evaluation=describe(problem, split_outputs(problem, joined_y)),
        jacobians=jacobians,
        strategy=method,
        strategy_reason=reason,
        notes=(*notes, *problem.notes, *call_notes.ensure(problem).notes),
        guard=replace(guard, rejected=tuple(rejected)),
    )


def split_outputs(problem: Problem, joined: torch.Tensor) -> dict[str, torch.Tensor]:
    """The outputs by name, from the one tensor `split_wrt`'s function returns."""
    names = list(problem.output_shapes)
    if len(names) == 1:
        return {names[0]: joined}
    sizes = [math.prod(shape) for shape in problem.output_shapes.values()]
    return {
        name: part.reshape(problem.output_shapes[name])
        for name, part in zip(names, joined.split(sizes), strict=True)
    }


def split_jacobians(
    problem: Problem, joined: list[torch.Tensor]
) -> dict[str, dict[str, np.ndarray]]:
    """jacobians[output][wrt] from J of the joined output for each wrt input."""
    names = list(problem.output_shapes)
    blocks: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
    sizes = [math.prod(shape) for shape in problem.output_shapes.values()]
    for wrt, j in zip(problem.wrt, joined, strict=True):
        x_shape = problem.inputs[wrt].shape
        parts = [j] if len(names) == 1 else j.split(sizes)
        for name, part in zip(names, parts, strict=True):
            blocks[name][wrt] = to_numpy(part.reshape((*problem.output_shapes[name], *x_shape)))
    return blocks


class CallNotes:
    """Warnings from one plain call: an output that does not depend on an input at all (its
    Jacobian is zero), or only through piecewise-constant operations (zero almost everywhere),
    a point on a kink (NOTE [flat outputs and kinks]), and an input modified in place.

    Read off the autograd graph of one forward pass, the torch calls it made and the inputs'
    version counters, not off J; the pass is one the guard makes anyway: split_wrt(problem,
    notes=…) watches each call of its f, and `notes` holds the last one's (None before any
    call), `outputs` its outputs, detached.
    """

    def __init__(self) -> None:
        self.notes: tuple[str, ...] | None = None
        self.outputs: dict[str, torch.Tensor] = {}
        self.made: Made | None = None
        """The last call's joined output, with its graph, and the `wrt` leaves it took."""

    def call(
        self, problem: Problem, inputs: dict[str, torch.Tensor], wrt_leaves: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """f's outputs at `inputs` (every input, the `wrt` ones being `wrt_leaves`), watched."""
        given = fresh_copies(inputs) if problem.function.is_guest else inputs
        if problem.function.kink_free:  # nothing for the watch to see
            outputs, seen = call_fresh(problem.function, given), Watched()
        else:
            watch = OpWatch()
            with watch:
                outputs = call_fresh(problem.function, given)
            seen = watch.seen
        self.notes = _call_notes(problem, wrt_leaves, given, outputs, seen)
        self.outputs = {name: y.detach() for name, y in outputs.items()}
        return outputs

    def ensure(self, problem: Problem) -> CallNotes:
        """These notes, after a call of f of their own where the guard made none (its
        reference pass failed before calling f)."""
        if self.notes is None:
            _, f = split_wrt(problem, notes=self)
            with torch.enable_grad():
                f(*(as_leaf(problem.inputs[name]) for name in problem.wrt))
        return self


def _call_notes(
    problem: Problem,
    wrt_leaves: dict[str, torch.Tensor],
    given: dict[str, torch.Tensor],
    outputs: dict[str, torch.Tensor],
    seen: Watched,
) -> tuple[str, ...]:
    """CallNotes's warnings from one call on `given` (the user's fresh copies, whose version
    counters tell an input modified in place), whose graph leads back to `wrt_leaves`."""
    notes = [
        f"{problem.function.name} modifies its input {name} in place; every call got a fresh "
        f"copy, and {name} is shown as given"
        for name, tensor in given.items()
        if problem.function.is_guest and tensor._version > 0
    ]
    # a forward-mode dual is a view of its leaf: the graph reaches the leaf
    reached_as = {wrt: id(_graph_leaf(wrt_leaves[wrt])) for wrt in problem.wrt}
    for name, y in outputs.items():
        smooth, flat = leaves_reached(y)
        taint = seen.taint_of(y)
        cut_from, cut_by = taint if taint is not None else (frozenset(), frozenset())
        flat_inputs = [
            wrt
            for wrt in problem.wrt
            if reached_as[wrt] not in smooth and reached_as[wrt] in flat | cut_from
        ]
        unused = [
            wrt for wrt in problem.wrt if reached_as[wrt] not in smooth and wrt not in flat_inputs
        ]
        if flat_inputs:
            ops = ", ".join(sorted(flat_ops(y) | set(cut_by)))
            notes.append(
                f"output {name} depends on {_listed(flat_inputs, 'input')} only through "
                f"piecewise-constant operations ({ops}): its Jacobian is zero almost everywhere "
                "and undefined at the jumps"
            )
        if len(unused) == 1:
            notes.append(
                f"output {name} does not depend on input {unused[0]}: its Jacobian is zero"
            )
        elif unused:  # one line an output, however many inputs it ignores
            notes.append(
                f"output {name} does not depend on {_listed(unused, 'input')}: their "
                "Jacobians are zero"
            )
    return (*notes, *kink_notes(seen))


def _graph_leaf(tensor: torch.Tensor) -> torch.Tensor:
    """The leaf whose gradient a tensor's graph accumulates into: itself, or the base of a
    view (forward mode's dual of a leaf is one)."""
    return tensor if tensor._base is None else tensor._base


def _listed(names: list[str], what: str) -> str:
    """`input x`, or `3 inputs (a, b, c)` with at most NAMES_LISTED names before `…`."""
    if len(names) == 1:
        return f"{what} {names[0]}"
    shown = ", ".join(names[:NAMES_LISTED]) + (", …" if len(names) > NAMES_LISTED else "")
    return f"{len(names)} {what}s ({shown})"


NAMES_LISTED = 4
"""Inputs named in one warning before `…`."""


def jacobian_by(
    problem: Problem,
    method: str,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    sizing: list[str] | None = None,
    notes: CallNotes | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The joined y and J of it for each `wrt` input, by `method` (jacobian_of); a method that
    makes one plain call of a preset or an expression (loop-rev, rev of a gradient) makes it
    watched by `notes`, for the guard to reuse (NOTE [the correctness guard]).

    torch.func's transforms (rev, fwd) run the function's vectorized call, except for the
    Jacobian of a gradient (a Hessian) by reverse mode: there the gradient's vectorized call
    would nest torch.func.jacrev inside torch.func.vjp, while a plain backward pass through
    the gradient's own graph, batched over J's rows (what torch.autograd.functional.hessian
    does with vectorize=True), took a quarter of the time (logsumexp of 256, measured)."""
    batched_backward = method == "rev" and is_gradient(problem)
    vectorized = method in ("rev", "fwd") and not batched_backward
    reusable = (method == "loop-rev" or batched_backward) and not problem.function.is_guest
    primals, f = split_wrt(problem, vectorized=vectorized, notes=notes if reusable else None)
    return jacobian_of(
        f, primals, method, chunk_size, progress, sizing=sizing, batched_backward=batched_backward
    )


def jacobian_of(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    method: str,
    chunk_size: int | None = None,
    progress: Progress | None = None,
    sizing: list[str] | None = None,
    *,
    batched_backward: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y = f(*primals) and J of y for each primal, by `method`: loop-rev, loop-fwd, rev, fwd;
    `sizing` gets how rev sized its chunks. With `batched_backward`, rev runs f once as it is
    and batches its plain backward pass over J's rows, rather than torch.func.vjp."""
    if method == "rev":
        load_vectorizing()
        return _reverse_in_chunks(f, primals, chunk_size, sizing, batched_backward)
    if method == "fwd":  # forward mode alone: no torch._dynamo
        load_forward_vectorizing()
        return _vectorized(f, primals, torch.func.jacfwd)
    loop = _loop_reverse if method == "loop-rev" else _loop_forward
    return loop(f, primals, progress)


def load_vectorizing() -> None:
    """Load torch.func's machinery (torch._dynamo) outside the held memory budget, once."""
    if not vectorized_start_up_paid():
        memory.outside_budget(_touch_vectorizing)


def load_forward_vectorizing() -> None:
    """Load what vmap over torch.func.jvp needs outside the held memory budget: forward mode
    alone leaves torch._dynamo unloaded (about 1 s of CPU that a run of JVPs never uses)."""
    forward_mode_without_dynamo()
    if not vectorized_start_up_paid() and not _Forward.loaded:
        memory.outside_budget(_touch_forward)
        _Forward.loaded = True


class _Forward:
    loaded = False
    spared = False


# NOTE [forward mode without torch._dynamo]
# Forward mode runs some ops through torch's Python references (`torch._refs.mul` for a dual
# tensor times a Python number, as in `2 * x`), each wrapped in torch._compile._disable_dynamo,
# whose first call imports torch._dynamo (1.1-1.4 s of CPU) only to wrap the reference in
# torch._dynamo.disable and cache that as its `__dynamo_disable`. Outside torch.compile that
# wrapper calls the reference and nothing else, so where torch._dynamo is not loaded yet the
# cache is filled with the reference itself: the same numbers, without the import (the 10⁶
# Burgers residual's three JVPs paid it on every run). A torch whose wrapper looks different is
# left as it is: it imports torch._dynamo, as before.
def forward_mode_without_dynamo() -> None:
    """Fill the cache of every Python reference torch wraps in _disable_dynamo with the
    reference itself, so that forward mode does not import torch._dynamo (NOTE [forward mode
    without torch._dynamo]); once a process, and only while torch._dynamo is not loaded."""
    if _Forward.spared or vectorized_start_up_paid():
        return
    _Forward.spared = True
    try:
        import torch._compile
        import torch._decomp
        import torch._refs

        inner = torch._compile._disable_dynamo(lambda: None).__code__
        if "fn" not in inner.co_freevars:
            return
        cell = inner.co_freevars.index("fn")
        for name, module in list(sys.modules.items()):
            if name.startswith(("torch._refs", "torch._decomp", "torch._prims")) and module:
                for value in list(vars(module).values()):
                    _spare(value, inner, cell)
        for value in list(torch._decomp.decomposition_table.values()):
            _spare(value, inner, cell)
    except Exception:  # a torch laid out otherwise: it imports torch._dynamo, as before
        return


def _spare(wrapper: object, inner: types.CodeType, cell: int) -> None:
    """Along `wrapper`'s chain of __wrapped__, give each _disable_dynamo wrapper's reference
    itself as its cached `__dynamo_disable`."""
    for _ in range(8):
        if getattr(wrapper, "__code__", None) is inner:
            reference = wrapper.__closure__[cell].cell_contents  # type: ignore[attr-defined]
            if getattr(reference, "__dynamo_disable", None) is None:
                reference.__dynamo_disable = reference
        wrapper = getattr(wrapper, "__wrapped__", None)
        if wrapper is None:
            return


def _touch_forward() -> None:
    """One tiny vmapped JVP: it imports what torch.func's forward mode loads lazily."""
    torch.func.vmap(lambda t: torch.func.jvp(torch.sin, (torch.zeros(2),), (t,))[1])(torch.eye(2))


def _touch_vectorizing() -> None:
    """One tiny vmapped VJP: it imports what torch.func loads lazily."""
    _, pull = torch.func.vjp(torch.sin, torch.zeros(2))
    torch.func.vmap(pull)(torch.eye(2))


def split_wrt(
    problem: Problem, *, vectorized: bool = False, notes: CallNotes | None = None
) -> tuple[list[torch.Tensor], Callable[..., torch.Tensor]]:
    """The wrt tensors, and f as a function of them alone (other inputs held fixed) that
    returns one tensor: the single output as it is, several flattened end to end. With
    `vectorized`, f is the one for inside torch.func's transforms; with `notes`, each call is
    watched for the warnings of CallNotes."""
    wrt = problem.wrt
    fixed = leaves_of({name: t for name, t in problem.inputs.items() if name not in wrt})
    names = list(problem.output_shapes)

    def f_of_wrt(*wrt_values: torch.Tensor) -> torch.Tensor:
        given = dict(zip(wrt, wrt_values, strict=True))
        inputs = {**fixed, **given}
        if notes is None:
            outputs = call_function(problem.function, inputs, vectorized=vectorized)
        else:
            outputs = notes.call(problem, inputs, given)
        joined = (
            outputs[names[0]]
            if len(names) == 1
            else torch.cat([outputs[name].reshape(-1) for name in names])
        )
        if notes is not None:
            notes.made = (joined, list(wrt_values))
        return joined

    return [problem.inputs[name] for name in wrt], f_of_wrt


def _loop_reverse(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], progress: Progress | None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One backward pass per output element: row i of J is ∂y[i]/∂x, written in place."""
    y, rows = loop_reverse_rows(f, primals, None, progress)
    return y, [j.reshape((*y.shape, *p.shape)) for j, p in zip(rows, primals, strict=True)]


def loop_reverse_rows(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    rows: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y = f(*primals) and rows `rows` (start, stop; None: all) of J for each primal, one
    backward pass a row, each (stop − start, *primal.shape)."""
    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        y = f(*leaves)
        flat = y.reshape(-1)
        start, stop = rows if rows is not None else (0, flat.numel())
        jacobians = [torch.zeros((stop - start, *leaf.shape), dtype=leaf.dtype) for leaf in leaves]
        for i in range(start, stop if flat.requires_grad else start):
            grads = torch.autograd.grad(flat[i], leaves, retain_graph=True, allow_unused=True)
            for j, grad in zip(jacobians, grads, strict=True):
                if grad is not None:
                    j[i - start] = grad
            if progress is not None:
                progress(i + 1 - start, stop - start)
    return y.detach(), jacobians


def _loop_forward(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], progress: Progress | None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One forward-mode pass per input element: column j of J is ∂y/∂x[j], written in place."""
    import torch.autograd.forward_ad as fwad

    forward_mode_without_dynamo()

    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        y = f(*leaves).detach()
    total = sum(p.numel() for p in primals)
    done = 0
    jacobians = []
    with fwad.dual_level(), torch.enable_grad():
        for k, primal in enumerate(primals):
            columns = torch.zeros((y.numel(), primal.numel()), dtype=y.dtype)
            tangent = torch.zeros(primal.numel(), dtype=primal.dtype)
            for j in range(primal.numel()):
                tangent.zero_()
                tangent[j] = 1
                args = list(leaves)
                args[k] = fwad.make_dual(leaves[k], tangent.reshape(primal.shape))
                derivative = fwad.unpack_dual(f(*args)).tangent
                if derivative is not None:
                    columns[:, j] = derivative.detach().reshape(-1)  # keep no graph
                done += 1
                if progress is not None:
                    progress(done, total)
            jacobians.append(columns.reshape((*y.shape, *primal.shape)))
    return y, jacobians


def autograd_grad_call(error: BaseException) -> str | None:
    """`file.py:12`, where the user's code called torch.autograd.grad, if that call raised the
    error (or its cause); None otherwise."""
    cause = error.__cause__ or error
    frames = traceback.extract_tb(cause.__traceback__)
    grad_file = os.path.join("torch", "autograd", "__init__.py")
    for k, frame in enumerate(frames[1:], start=1):
        if frame.name == "grad" and frame.filename.endswith(grad_file):
            caller = frames[k - 1]
            relative = os.path.relpath(caller.filename)
            return f"{caller.filename if relative.startswith('..') else relative}:{caller.lineno}"
    return None


def _not_vectorizable(error: Exception) -> ComputationError:
    """The refusal of a vectorized method that failed: the user's own error as it is, torch's
    (a batching rule vmap lacks) as why it cannot be vectorized; either way, the loop may run."""
    if isinstance(error, ComputationError):
        return ComputationError(f"{error.message}; try --strategy loop")
    return ComputationError(
        f"the function cannot be vectorized ({str(error).splitlines()[0]}); try --strategy loop"
    )


def _vectorized(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    transform: Callable[..., Callable[..., object]],
    **options: object,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """J by torch.func's vmapped VJPs (jacrev) or JVPs (jacfwd)."""

    def f_and_value(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = f(*args)
        return y, y.detach()

    argnums = tuple(range(len(primals)))
    try:
        jacobians, y = transform(f_and_value, argnums=argnums, has_aux=True, **options)(*primals)  # type: ignore[misc]
    except ComputationError as error:
        call = autograd_grad_call(error) if transform is torch.func.jacfwd else None
        if call is not None:
            raise ComputationError(
                "forward mode (jacfwd) cannot run a function that calls torch.autograd.grad "
                f"inside (at {call}): its inputs carry tangents, not a graph to differentiate; "
                "try --strategy rev, loop or auto",
                code="forward_mode_autograd",
            ) from error
        raise _not_vectorizable(error) from error
    except (RuntimeError, NotImplementedError) as error:
        raise_if_out_of_memory(error)
        raise _not_vectorizable(error) from error
    return y, list(jacobians)


class ChunkTooLarge(Exception):
    """A chunk's allocation was refused under the held memory limit."""


TRIM_AFTER_BYTES = 64 * 1024**2
"""A J this large leaves chunks' temporaries worth handing back to the kernel (memory.trim,
0.2 ms a call); below it, malloc's own trimming is enough."""
FIRST_CHUNK_ROWS = 32
"""Rows of J whose real peak is measured before the rest are sized (NOTE [chunks from a
measured first chunk])."""
HEADROOM_USED = 0.75
"""The share of the budget still free that the rest of the chunks may take."""


Pullback = Callable[[torch.Tensor], tuple[torch.Tensor, ...]]
"""Cotangents stacked along a leading axis -> the VJP of each, stacked, for each primal."""


def _vmapped_vjp(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor]
) -> tuple[torch.Tensor, Pullback]:
    """y, detached, and its VJPs by torch.func.vjp vmapped over the cotangents."""
    y, vjp_of = torch.func.vjp(f, *primals)
    return y.detach(), torch.func.vmap(vjp_of)


def _batched_backward(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor]
) -> tuple[torch.Tensor, Pullback]:
    """y, detached, and its VJPs by one plain backward pass through a call of f as it is,
    batched over the cotangents (`is_grads_batched`)."""
    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        y = f(*leaves)

    def pull(cotangents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = cotangents.shape[0]
        if not y.requires_grad:
            return tuple(torch.zeros((count, *leaf.shape), dtype=leaf.dtype) for leaf in leaves)
        with torch.enable_grad():
            grads = torch.autograd.grad(
                y, leaves, cotangents, retain_graph=True, allow_unused=True, is_grads_batched=True
            )
        return tuple(
            torch.zeros((count, *leaf.shape), dtype=leaf.dtype) if g is None else g
            for g, leaf in zip(grads, leaves, strict=True)
        )

    return y.detach(), pull


def _reverse_in_chunks(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    chunk_size: int | None,
    sizing: list[str] | None = None,
    batched_backward: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """J by vmapped VJPs (what torch.func.jacrev does), a chunk of rows at a time written into
    a preallocated J (`reverse_rows` over every row). Unlike jacrev(chunk_size=…), which
    concatenates its chunks (J twice) after building the whole identity (n_out² elements),
    nothing here is bigger than J and one chunk."""
    y, jacobians = reverse_rows(
        f, primals, None, chunk_size, sizing, batched_backward=batched_backward
    )
    return y, [j.reshape((*y.shape, *p.shape)) for j, p in zip(jacobians, primals, strict=True)]


def reverse_rows(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    rows: tuple[int, int] | None,
    chunk_size: int | None,
    sizing: list[str] | None = None,
    *,
    largest_chunk: int | None = None,
    batched_backward: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y = f(*primals) and rows `rows` (start, stop; None: all) of J for each primal, each
    (stop − start, *primal.shape), by vectorized VJPs a chunk of rows at a time, at most
    `largest_chunk` rows however much the budget leaves."""
    try:
        y, pull = (_batched_backward if batched_backward else _vmapped_vjp)(f, primals)
    except (ComputationError, RuntimeError, NotImplementedError) as error:
        raise_if_out_of_memory(error)
        raise _not_vectorizable(error) from error
    first_row, last_row = rows if rows is not None else (0, y.numel())
    count = last_row - first_row
    jacobians = [torch.empty((count, *p.shape), dtype=p.dtype) for p in primals]

    def fill(start: int, stop: int) -> None:
        basis = torch.zeros((stop - start, y.numel()), dtype=y.dtype)
        basis[torch.arange(stop - start), torch.arange(first_row + start, first_row + stop)] = 1
        try:
            parts = pull(basis.reshape(stop - start, *y.shape))
        except ComputationError as error:
            raise _not_vectorizable(error) from error
        except (RuntimeError, NotImplementedError, MemoryError) as error:
            if memory.out_of_memory(error):
                raise ChunkTooLarge from error
            raise _not_vectorizable(error) from error
        for j, part in zip(jacobians, parts, strict=True):
            j[start:stop] = part

    fill_in_chunks(count, fill, chunk_size, sizing, largest_chunk=largest_chunk)
    if rows is not None or sum(j.numel() * j.element_size() for j in jacobians) >= TRIM_AFTER_BYTES:
        memory.trim()  # a stored block's heaps too: the next block reuses them
    return y, jacobians


def vectorized_call(
    function: Callable[..., Returned], *batches: torch.Tensor, out_dims: object = 0
) -> Returned:
    """torch.func.vmap(function, out_dims=…) over the leading axis of `batches`: ChunkTooLarge
    where the held limit refuses its memory, the refusal of a method that cannot be vectorized
    where vmap or the function fails."""
    try:
        return torch.func.vmap(function, out_dims=out_dims)(*batches)  # type: ignore[arg-type]
    except ComputationError as error:
        raise _not_vectorizable(error) from error
    except (RuntimeError, NotImplementedError, MemoryError) as error:
        if memory.out_of_memory(error):
            raise ChunkTooLarge from error
        raise _not_vectorizable(error) from error


def fill_in_chunks(
    total: int,
    fill: Callable[[int, int], None],
    chunk_size: int | None,
    sizing: list[str] | None = None,
    unit: str = "rows",
    *,
    largest_chunk: int | None = None,
) -> None:
    """fill(start, stop) over 0…total in chunks of `chunk_size` (all at once for None), the
    chunks sized again from a measured first chunk, at most `largest_chunk`; `sizing` gets how
    they were sized.

    # NOTE [chunks from a measured first chunk]
    The estimate of a row's cost (two rows of VJPs) misses what the function's backward really
    allocates: a 1-D stencil's slices each pad a full row, six rows and more. So a first chunk
    of FIRST_CHUNK_ROWS rows runs with the kernel's peak count reset, its real peak above the
    resident memory before it gives the cost of a row, and the rest of the rows go in chunks
    that take HEADROOM_USED of what the held limit (jaccli/memory.py) still leaves; where
    nothing is held or measurable, the plan's chunk size (from the estimate) stands. The peak
    can read low (a chunk reuses pages freed before it), so a chunk the kernel refuses
    (`fill` raises ChunkTooLarge) is halved and tried again: the refusal is the measurement
    that cannot be wrong. The same holds for the colours of a sparse J (engine/sparse).

    # NOTE [a chunk's freed heap]
    glibc keeps what a chunk freed in the middle of its heap resident, and the next chunk's
    temporaries rarely land in the same place: a Hessian's 4000-row block of 66-row chunks
    kept 4–9 MiB more after each chunk, 20 MiB above where it began for 4 MiB of J, and under
    a held budget its peak passed the budget. So where a budget is held, the heap's free
    memory goes back to the kernel between chunks (0.1 ms a chunk measured; none for one chunk).
    """
    size = total if chunk_size is None else chunk_size
    start = 0
    if memory.holding() and total > FIRST_CHUNK_ROWS:
        before = memory.resident_bytes()
        first = min(FIRST_CHUNK_ROWS, size)
        measured = memory.reset_peak()
        fill(0, first)
        start = first
        peak, headroom = memory.peak_resident_bytes(), memory.headroom_bytes()
        if measured and before is not None and peak is not None and headroom is not None:
            per_row = max(1, (peak - before) // first)
            size = max(1, min(largest_chunk or total, int(headroom * HEADROOM_USED) // per_row))
            if sizing is not None:
                sizing.append(
                    f"chunks of {size} {unit}, sized from the first {first} {unit}' measured "
                    f"peak ({format_bytes(per_row)} a {unit.rstrip('s')})"
                )
    elif chunk_size is not None and sizing is not None:
        sizing.append(f"chunks of {size} {unit}, sized from the estimate")
    while start < total:
        stop = min(total, start + size)
        try:
            fill(start, stop)
        except ChunkTooLarge as too_large:
            if size == 1:
                raise memory.refusal(too_large) from too_large
            size //= 2  # the kernel refused it: a smaller chunk is the measurement that holds
            if sizing:
                sizing[0] = f"{sizing[0]}, halved to {size} when the kernel refused a chunk"
            continue
        start = stop
        if start < total and memory.holding():
            memory.trim()  # NOTE [a chunk's freed heap]
