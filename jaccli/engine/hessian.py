"""Second derivatives: the Hessian H, and the Hessian-vector product H·v without forming H.

# NOTE [the Hessian is the Jacobian of the gradient]
For each output y and `wrt` inputs a and b, H[y][a][b] = ∂(∂y/∂a)/∂b, with
`H.shape == y.shape + a.shape + b.shape`. jaccli builds the gradient g = (∂y/∂a for every y
and a) as a function of its own and hands it to `compute_jacobian`, so the Hessian gets the
Jacobian's cost model, strategies, memory plan and chunking, fallbacks and correctness guard:
loops of gradients (reverse-over-reverse, `loop-rev`; forward-over-reverse, `loop-fwd`),
`jacrev` of the gradient, and `jacfwd(jacrev(f))`, the vectorized forward-over-reverse. Inside
the loops and jacrev the gradient is `torch.autograd.grad(create_graph=True)`; inside jacfwd,
where autograd.grad cannot run, it is `torch.func.jacrev`. The guard then compares uᵀ(H v)
with a reverse pass through the gradient's own graph.

# NOTE [the probe of H·v runs through the gradient's graph]
Forward-over-reverse builds the gradient g = ∇y with its graph (create_graph) to carry the
tangent v through it; H u is one more backward pass through that same graph, the gradient of
Σ g·u. For a preset or an expression, which computes the same graph at every call, the guard
takes that pass (`keeping_gradients` hands it the graph): a fresh call of f and a fresh
gradient would only repeat the forward pass and the first backward pass, most of H·v's own
cost (logsumexp of 10⁶: 21 of 38 ms). The two compositions stay independent: the result's
tangents are forward mode's through the backward pass, the reference is reverse mode's. The
user's own code, which may compute differently from one call to the next, always gets a
fresh call, as does a result by reverse-over-reverse (its backward pass frees the graph).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from jaccli.engine.directions import make_directions
from jaccli.engine.evaluate import as_leaf, call_function, evaluate, to_numpy
from jaccli.engine.jacobian import (
    GRADIENT_OF,
    CallNotes,
    forward_mode_without_dynamo,
    split_wrt,
)
from jaccli.engine.problem import Problem, describe
from jaccli.engine.trust import disagreement, dot_terms, probe_directions, probe_products
from jaccli.errors import ComputationError, UsageError
from jaccli.functions.model import Function
from jaccli.memory import raise_if_out_of_memory
from jaccli.messages import first_line
from jaccli.result import Check, Guard, HessianResult, HvpResult, JacobianResult
from jaccli.spec import Direction, format_shape


def gradient_name(output: str, wrt: str) -> str:
    """`(∂y/∂x)`: the name of one part of the gradient, an output of the gradient function."""
    return f"(∂{output}/∂{wrt})".replace(".", "·")  # output names may not hold dots


def gradient_problem(
    problem: Problem, values_seen: dict[str, torch.Tensor] | None = None
) -> Problem:
    """The problem whose Jacobian is the Hessian of `problem` (see the NOTE above); each plain
    call of its function puts the outputs of `problem`'s function it made, detached, into
    `values_seen` (when given)."""
    function, wrt = problem.function, problem.wrt
    outputs = list(problem.output_shapes)
    names = [gradient_name(y, a) for y in outputs for a in wrt]

    def by_autograd(**inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        xs = [inputs[a] for a in wrt]
        values = call_function(function, inputs)
        if values_seen is not None:
            values_seen.update((name, value.detach()) for name, value in values.items())
        parts = []
        for y in outputs:
            flat = values[y].reshape(-1)
            rows = [
                torch.autograd.grad(
                    flat[i], xs, create_graph=True, allow_unused=True, materialize_grads=True
                )
                if flat.requires_grad
                else tuple(torch.zeros_like(x) for x in xs)
                for i in range(flat.numel())
            ]
            for k, x in enumerate(xs):
                parts.append(
                    torch.stack([row[k] for row in rows]).reshape(values[y].shape + x.shape)
                )
        return dict(zip(names, parts, strict=True))

    def by_torch_func(**inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        fixed = {n: t for n, t in inputs.items() if n not in wrt}

        def joined(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            values = call_function(function, {**fixed, **dict(zip(wrt, xs, strict=True))})
            return tuple(values[y] for y in outputs)

        jacobians: Any = torch.func.jacrev(joined, argnums=tuple(range(len(wrt))))(
            *(inputs[a] for a in wrt)
        )
        return dict(
            zip(
                names,
                (jacobians[i][k] for i in range(len(outputs)) for k in range(len(wrt))),
                strict=True,
            )
        )

    gradient = Function(
        name=function.name,
        formula=f"{GRADIENT_OF}{function.formula}",
        inputs=tuple(spec for spec in function.inputs if spec.name in problem.inputs),
        call=by_autograd,
        vectorized_call=by_torch_func,
        source_file=function.source_file,
        kink_free=function.kink_free,
        integer_inputs=function.integer_inputs,
    )
    shapes = {
        gradient_name(y, a): (*problem.output_shapes[y], *problem.inputs[a].shape)
        for y in outputs
        for a in wrt
    }
    return Problem(
        gradient,
        problem.dtype,
        problem.inputs,
        wrt,
        shapes,
        problem.generator,
        problem.notes,
        problem.output_unknown,
    )


def symmetry_error(
    problem: Problem, hessians: dict[str, dict[str, dict[str, np.ndarray]]]
) -> float:
    """max |H[y][a][b] − H[y][b][a]ᵀ| over every output element and pair of inputs: zero in
    exact arithmetic for a twice continuously differentiable f."""
    largest = 0.0
    for y, by_a in hessians.items():
        m = math.prod(problem.output_shapes[y])
        for a, by_b in by_a.items():
            for b, h in by_b.items():
                n_a, n_b = problem.inputs[a].numel(), problem.inputs[b].numel()
                left = h.reshape(m, n_a, n_b)
                right = hessians[y][b][a].reshape(m, n_b, n_a)
                for start in range(0, n_a, SYMMETRY_ROWS):  # a float64 block at a time
                    block = left[:, start : start + SYMMETRY_ROWS]
                    mirror = right[:, :, start : start + SYMMETRY_ROWS].transpose(0, 2, 1)
                    difference = np.subtract(block, mirror, dtype=np.float64)
                    if difference.size:
                        worst = float(np.abs(difference, out=difference).max())
                        largest = max(largest, math.inf if math.isnan(worst) else worst)
    return largest


SYMMETRY_ROWS = 256
"""Rows of H compared at a time: a float64 difference of all of H would be 2× its float32 bytes."""


def hessian_result(
    problem: Problem,
    gradient_jacobian: JacobianResult,
    outputs: dict[str, torch.Tensor] | None = None,
) -> HessianResult:
    """H[y][a][b] for every output y and pair of `wrt` inputs, from the Jacobian of the
    gradient (`gradient_problem`), with its strategy, guard and notes; y is `outputs` where
    the gradient's calls gave them at the point (else a call of its own)."""
    hessians = {
        y: {
            a: {b: gradient_jacobian.jacobians[gradient_name(y, a)][b] for b in problem.wrt}
            for a in problem.wrt
        }
        for y in problem.output_shapes
    }
    return HessianResult(
        evaluation=describe(problem, outputs or evaluate(problem.function, problem.inputs)),
        hessians=hessians,
        strategy=gradient_jacobian.strategy,
        strategy_reason=gradient_jacobian.strategy_reason,
        symmetry_error=symmetry_error(problem, hessians),
        notes=gradient_jacobian.notes,
        guard=gradient_jacobian.guard,
    )


FORWARD_OVER_REVERSE = "forward-over-reverse"
REVERSE_OVER_REVERSE = "reverse-over-reverse"


def _gradient(
    f: Callable[..., torch.Tensor],
    leaves: list[torch.Tensor],
    seed: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """y (a scalar) and its gradient for each leaf, with the graph kept for a second pass
    (seeded by `seed(y)` where given, 1 otherwise)."""
    y = f(*leaves).reshape(())
    if not y.requires_grad:
        return y, tuple(torch.zeros_like(leaf) for leaf in leaves)
    gradients = torch.autograd.grad(
        y,
        leaves,
        grad_outputs=None if seed is None else seed(y),
        create_graph=True,
        allow_unused=True,
        materialize_grads=True,
    )
    return y, gradients


def gradient_at(f: Callable[..., torch.Tensor], primals: list[torch.Tensor]) -> list[torch.Tensor]:
    """The gradient of f's scalar output for each primal, detached."""
    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        _, gradients = _gradient(f, leaves)
    return [g.detach() for g in gradients]


Kept = tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]
"""The leaves a forward-over-reverse pass took and f's gradient for each, with its graph."""

_KEPT: ContextVar[list[Kept] | None] = ContextVar("kept gradients", default=None)


@contextmanager
def keeping_gradients(keep: bool) -> Iterator[list[Kept]]:
    """Within it (when `keep`), forward-over-reverse leaves its gradient's graph in the list
    it yields, for the guard (NOTE [the probe of H·v runs through the gradient's graph])."""
    kept: list[Kept] = []
    token = _KEPT.set(kept if keep else None)
    try:
        yield kept
    finally:
        _KEPT.reset(token)


def hvp_forward_over_reverse(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], vectors: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y and H·v as the JVP of the gradient: one forward-mode pass through the backward pass
    (seeded by a dual 1, or by a plain 1 where that gives NaN: NOTE [a dual seed with real
    zeros])."""
    y, products = _jvp_of_gradient(f, primals, vectors, _dual_seed)
    if any(bool(product.sum().isnan()) for product in products):
        y, products = _jvp_of_gradient(f, primals, vectors, None)
    return y, products


def _jvp_of_gradient(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    vectors: list[torch.Tensor],
    seed: Callable[[torch.Tensor], torch.Tensor] | None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y and the JVP of the gradient along `vectors`, its backward pass seeded by `seed(y)`
    (a plain 1 for None)."""
    import torch.autograd.forward_ad as fwad

    forward_mode_without_dynamo()

    with fwad.dual_level(), torch.enable_grad():
        pairs = zip(primals, vectors, strict=True)
        duals = [fwad.make_dual(as_leaf(p), v.to(p.dtype)) for p, v in pairs]
        y, gradients = _gradient(f, duals, seed)
        kept = _KEPT.get()
        if kept is not None:
            kept[:] = [(duals, gradients)]
        products = [fwad.unpack_dual(g).tangent for g in gradients]
        products = [
            torch.zeros_like(p) if t is None else t.detach()
            for p, t in zip(primals, products, strict=True)
        ]
    return fwad.unpack_dual(y).primal.detach(), products


def _dual_seed(y: torch.Tensor) -> torch.Tensor:
    """The backward pass's seed 1 as a dual number with a tangent of real zeros.

    NOTE [a dual seed with real zeros]
    Seeded with a plain 1, the backward pass's tangents start undefined, and forward mode stands
    torch's zero tensors (`_efficientzerotensor`) in for them; every product with one runs torch's
    Python references and prims (0.45 of H·v's 0.7 ms for logsumexp of 1000, measured, one
    thread). A seed whose tangent is a real 0 keeps every tangent a plain tensor: the same
    numbers, by the ordinary kernels, wherever the backward pass stays finite. Where it does
    not, the real 0 meets the infinity (0·∞) and gives NaN where a zero tensor would have
    dropped the term: (x³).sum() at x = 1e20 in float32 has H·v = 6x·v = 6e20, but its
    gradient 3x² overflows. So an H·v with NaN in it is computed again with the plain seed,
    whose zero tensors skip those terms; either is then probed by reverse-over-reverse."""
    import torch.autograd.forward_ad as fwad

    primal = fwad.unpack_dual(y).primal
    return fwad.make_dual(torch.ones_like(primal), torch.zeros_like(primal))


def hvp_reverse_over_reverse(
    f: Callable[..., torch.Tensor], primals: list[torch.Tensor], vectors: list[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """y and H·v as the gradient of ∇y·v: a backward pass through the backward pass."""
    leaves = [as_leaf(p) for p in primals]
    with torch.enable_grad():
        y, gradients = _gradient(f, leaves)
        product = sum((g * v.to(g.dtype)).sum() for g, v in zip(gradients, vectors, strict=True))
        if not isinstance(product, torch.Tensor) or not product.requires_grad:
            return y.detach(), [torch.zeros_like(p) for p in primals]
        products = torch.autograd.grad(product, leaves, allow_unused=True, materialize_grads=True)
    return y.detach(), [p.detach() for p in products]


HVP_METHODS = {
    FORWARD_OVER_REVERSE: hvp_forward_over_reverse,
    REVERSE_OVER_REVERSE: hvp_reverse_over_reverse,
}


def require_scalar(problem: Problem) -> None:
    """H·v is of a scalar function: refuse several outputs or one with more than one element."""
    shapes = problem.output_shapes
    if len(shapes) != 1 or math.prod(next(iter(shapes.values()))) != 1:
        described = ", ".join(f"{name} {format_shape(shape)}" for name, shape in shapes.items())
        raise UsageError(
            f"hvp needs a scalar output; {problem.function.name} returns {described} (reduce "
            "it to one number, or use hessian for H of each element)",
            code="not_scalar",
        )


def compute_hvp(problem: Problem, vector: Direction) -> HvpResult:
    """H·v for each `wrt` input, (H·v)_a = Σ_b H_ab v_b, without forming H: forward-over-reverse,
    or reverse-over-reverse where forward mode fails, verified by the correctness guard against
    (H u)·v by reverse-over-reverse."""
    require_scalar(problem)
    shapes = {name: tuple(problem.inputs[name].shape) for name in problem.wrt}
    vectors = make_directions(problem, vector, shapes, "--vector", "input")
    primals, f = split_wrt(problem)
    call_notes = CallNotes()
    _, f_watched = split_wrt(problem, notes=call_notes)  # the guard's call gives the warnings
    # a preset's or an expression's own call gives them, and its gradient's graph the guard's
    # reference (NOTE [the probe of H·v runs through the gradient's graph])
    reuse = not problem.function.is_guest
    vs = [vectors[name] for name in problem.wrt]
    rejected: list[str] = []
    with keeping_gradients(reuse) as kept:
        for method, compute in HVP_METHODS.items():
            try:
                y, products = compute(f_watched if reuse else f, primals, vs)
            except (ComputationError, RuntimeError, NotImplementedError) as error:
                raise_if_out_of_memory(error)
                why = error.message if isinstance(error, ComputationError) else first_line(error)
                rejected.append(f"{method} failed: {why[:200]}")
                continue
            break
        else:
            raise ComputationError(
                f"cannot compute H·v of {problem.function.name}: {'; '.join(rejected)}"
            )
    graph = kept[0] if kept and method == FORWARD_OVER_REVERSE else None
    kept.clear()
    guard = _hvp_guard(f_watched, primals, vs, products, method, graph)
    del graph  # its graph is freed
    if guard.passed is False:
        raise ComputationError(
            f"H·v of {problem.function.name} by {method} failed the correctness guard: "
            f"{disagreement(guard)}",
            code="guard_failed",
        )
    notes = list(problem.notes) + list(call_notes.ensure(problem).notes)
    if rejected:
        notes.insert(0, f"{'; '.join(rejected)}; computed H·v by {method} instead")
    reason = "the JVP of the gradient" if method == FORWARD_OVER_REVERSE else "; ".join(rejected)
    ((output, shape),) = problem.output_shapes.items()
    return HvpResult(
        evaluation=describe(problem, {output: y.reshape(shape)}),
        vectors={name: to_numpy(v) for name, v in vectors.items()},
        hvps={name: to_numpy(p) for name, p in zip(problem.wrt, products, strict=True)},
        method=method,
        method_reason=reason,
        notes=tuple(notes),
        guard=replace(guard, rejected=tuple(rejected)),
    )


def _hvp_guard(
    f: Callable[..., torch.Tensor],
    primals: list[torch.Tensor],
    vectors: list[torch.Tensor],
    products: list[torch.Tensor],
    method: str,
    kept: Kept | None = None,
) -> Guard:
    """uᵀ(H v) from the result against (H u)ᵀv (H is symmetric) by reverse-over-reverse
    through the gradient's graph `kept` (NOTE [the probe of H·v runs through the gradient's
    graph]), or over a fresh call of f: the other composition for a forward-over-reverse
    result, another vector for a reverse-over-reverse one (which is used only where forward
    mode cannot run).

    The reference's terms (H u)_i v_i are of H's order even where H·v cancels to nothing (H·1
    of logsumexp is 0), so its rounding is weighed at H's scale."""
    dtype = products[0].dtype if products else torch.float64
    us = probe_directions([p.shape for p in primals], dtype)
    pairs = list(zip(us, products, strict=True))
    name = f"(H u)ᵀv by {REVERSE_OVER_REVERSE}, H symmetric"
    try:
        u_as = [u.to(p.dtype) for u, p in zip(us, primals, strict=True)]
        h_u = None if kept is None else _through_gradient(kept, u_as)
        if h_u is None:
            _, h_u = hvp_reverse_over_reverse(f, primals, u_as)
    except (ComputationError, RuntimeError, NotImplementedError) as error:
        raise_if_out_of_memory(error)
        why = f"{REVERSE_OVER_REVERSE} could not run ({first_line(error)[:160]})"
        return probe_products(method, name, pairs, None, dtype, why)

    def typical_scale() -> float:
        """Σ (u_i (H w)_i)² for a random w of v's norm: rounding of the order of H's terms,
        should (H u)·v cancel too."""
        ws = probe_directions([p.shape for p in primals], dtype, draw=1)
        norm_v = math.sqrt(sum(float(v.to(torch.float64).square().sum()) for v in vectors))
        norm_w = math.sqrt(sum(float(w.square().sum()) for w in ws)) or 1.0
        w_scaled = [(w * norm_v / norm_w).to(p.dtype) for w, p in zip(ws, primals, strict=True)]
        _, h_w = hvp_reverse_over_reverse(f, primals, w_scaled)
        return dot_terms(zip(us, h_w, strict=True))[1]

    def other_reference() -> list[tuple[torch.Tensor, torch.Tensor]]:
        """uᵀ(H v) by reverse-over-reverse along v (NOTE [a reference that cancels])."""
        _, h_v = hvp_reverse_over_reverse(f, primals, vectors)
        return list(zip(us, h_v, strict=True))

    reference = list(zip(vectors, h_u, strict=True))
    return probe_products(
        method, name, pairs, reference, dtype, None, typical_scale, other_reference
    )


def _through_gradient(kept: Kept, us: list[torch.Tensor]) -> list[torch.Tensor] | None:
    """H u by one backward pass through the gradient's graph `kept` (freed by it): the
    gradient of Σ g·u. None where that pass cannot run, for a fresh call to give it."""
    leaves, gradients = kept
    with torch.enable_grad():
        product = sum((g * u).sum() for g, u in zip(gradients, us, strict=True))
        if not isinstance(product, torch.Tensor) or not product.requires_grad:
            return None
        try:
            products = torch.autograd.grad(
                product, leaves, allow_unused=True, materialize_grads=True
            )
        except RuntimeError as error:
            raise_if_out_of_memory(error)
            return None
    return [p.detach() for p in products]


COMPOSITION_NAMES = {
    "reverse mode": REVERSE_OVER_REVERSE,
    "forward mode": FORWARD_OVER_REVERSE,
    "central differences": "central differences of the gradient",
}


def as_compositions(check: Check) -> Check:
    """The check of the gradient's Jacobian, named as what it is for H: reverse-over-reverse
    against forward-over-reverse, and central differences of the gradient."""

    def renamed(text: str) -> str:
        for mode, composition in COMPOSITION_NAMES.items():
            text = text.replace(mode, composition)
        return text

    return Check(
        tuple(
            replace(c, name=renamed(c.name), reference=renamed(c.reference))
            for c in check.comparisons
        )
    )
