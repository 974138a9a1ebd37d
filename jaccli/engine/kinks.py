"""What one plain call of the function shows about its derivative beyond the numbers: outputs
that reach an input only through piecewise-constant operations (their J is zero almost
everywhere), and kinks met exactly (relu at 0, a tie of max), where torch picks one derivative
among several (NOTE [flat outputs and kinks]).

# NOTE [flat outputs and kinks]
Two ways an output can depend on an input and still get J = 0 from autograd:
- through an op whose derivative torch defines as 0 (round, floor, ceil, trunc, sign): the
  autograd graph keeps the path, through a node named RoundBackward0, FloorBackward0…; an input
  reached only through such nodes is reached "flat";
- through an op that leaves the graph (a comparison, argmax/argmin, a cast to an integer dtype):
  the result has no grad_fn and autograd cannot see the dependence at all. A TorchFunctionMode
  watches every torch call of the function: an integer or boolean result computed from an
  argument that requires grad is marked with the inputs it came from, and so is any result
  without grad computed from a marked one (`(x > 0).float()`). An integer or boolean function
  of real inputs takes discrete values, so it is piecewise constant; a floating result that
  leaves the graph (`detach()`) is not marked: it need not be constant, and that is a graph
  break, not a flat function.
Either way the function is piecewise constant in that input: J is exactly 0 between the jumps
and undefined on them, and finite differences across a jump see a spike instead.

A kink is a point where the one-sided derivatives differ; autograd returns one convention
without a word. The same mode sees the arguments of relu, abs, maximum/minimum, max/min/amax/
amin, clamp, hardtanh, relu6 and leaky_relu, and counts the elements that sit exactly on the
kink (x == 0, a tie, x at a bound). The conventions are torch 2.13's, each checked by a test
(tests/test_trust_notes.py): relu'(0) = 0, abs'(0) = 0, a maximum/minimum tie splits 1/2–1/2,
a tie of a full max/min/amax/amin (or amax/amin over dims) splits evenly among the tied
entries, max/min over a dim gives it all to the index returned, clamp at a bound passes 1,
hardtanh and relu6 at a bound give 0, leaky_relu at 0 gives its negative slope.

The watch rides on a call of the function made anyway, the correctness guard's fresh one
(jacobian.CallNotes), and costs per torch call a lookup; the element counts run only for the
ops above. A function none of whose torch calls is one of these (`Function.kink_free`: the
presets) is not watched: det of spherical (19 torch calls) took 1.89 ms watched and 1.75 ms
not (medians of 300 alternated runs, one thread, load 5), for nothing to see; its graph is
still walked for the outputs that do not reach an input.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

FLAT_NODES = {
    "RoundBackward0": "round",
    "RoundBackward1": "round",
    "FloorBackward0": "floor",
    "CeilBackward0": "ceil",
    "TruncBackward0": "trunc",
    "SignBackward0": "sign",
    "SgnBackward0": "sign",
}
"""Autograd nodes of ops whose derivative torch defines as 0 everywhere."""

OPERATOR_NAMES = {
    "__gt__": ">",
    "__ge__": ">=",
    "__lt__": "<",
    "__le__": "<=",
    "__eq__": "==",
    "__ne__": "!=",
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
    "eq": "==",
    "ne": "!=",
}

RELU = {torch.relu, F.relu, torch.Tensor.relu}
ABS = {torch.abs, torch.absolute, torch.Tensor.abs, torch.Tensor.__abs__}
PAIRWISE = {
    torch.maximum: "maximum",
    torch.minimum: "minimum",
    torch.Tensor.maximum: "maximum",
    torch.Tensor.minimum: "minimum",
    torch.fmax: "fmax",
    torch.fmin: "fmin",
}
REDUCTIONS = {
    torch.max: "max",
    torch.min: "min",
    torch.Tensor.max: "max",
    torch.Tensor.min: "min",
    torch.amax: "amax",
    torch.amin: "amin",
    torch.Tensor.amax: "amax",
    torch.Tensor.amin: "amin",
}
CLAMPS = {
    torch.clamp,
    torch.clip,
    torch.Tensor.clamp,
    torch.Tensor.clip,
    torch.clamp_min,
    torch.clamp_max,
}

CONVENTIONS = {
    "relu": "relu at exactly 0 (one-sided derivatives 0 and 1; torch uses relu'(0) = 0)",
    "abs": "abs at exactly 0 (one-sided derivatives −1 and 1; torch uses abs'(0) = 0)",
    "pairwise": "{op} at a tie (one-sided derivatives give all of it to one argument or the "
    "other; torch splits it 1/2–1/2)",
    "even": "{op} at a tie (one-sided derivatives give all of it to one of the tied entries; "
    "torch splits it evenly among them)",
    "index": "{op} over a dim at a tie (one-sided derivatives give all of it to one of the "
    "tied entries; torch gives it to the index it returns)",
    "clamp": "clamp at a bound (one-sided derivatives 0 and 1; torch uses 1)",
    "hardtanh": "{op} at a bound (one-sided derivatives 0 and 1; torch uses 0)",
    "leaky_relu": "leaky_relu at exactly 0 (one-sided derivatives its slope and 1; torch uses "
    "the slope)",
}


@dataclass
class Watched:
    """What the watch saw in one call."""

    kinks: dict[str, int] = field(default_factory=dict)
    """Elements on a kink, by the CONVENTIONS line that describes it."""
    tainted: dict[int, tuple[weakref.ref, frozenset[int], frozenset[str]]] = field(
        default_factory=dict
    )
    """id(tensor) → (the tensor, ids of the leaves it came from, the ops that cut the graph)."""

    def taint_of(self, value: Any) -> tuple[frozenset[int], frozenset[str]] | None:
        entry = self.tainted.get(id(value))
        if entry is None or entry[0]() is not value:
            return None
        return entry[1], entry[2]


class OpWatch(TorchFunctionMode):
    """Watches the torch calls of one function call (NOTE [flat outputs and kinks])."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = Watched()
        self.walked: dict[Any, set[int]] = {}
        """The leaves each autograd node reaches (the nodes are kept alive, so ids stay theirs)."""

    def __torch_function__(  # type: ignore[override]
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        try:
            self._kink(func, args, kwargs, result)
            self._taint(func, args, kwargs, result)
        except Exception:  # watching must never break the user's call
            pass
        return result

    def _leaves(self, tensor: torch.Tensor) -> set[int]:
        """Every leaf tensor's id the tensor's graph reaches, each graph walked once."""
        node = tensor.grad_fn
        if node is None:
            return {id(tensor)}
        if node not in self.walked:
            smooth, flat = leaves_reached(tensor)
            self.walked[node] = smooth | flat
        return self.walked[node]

    def _count(self, key: str, count: int) -> None:
        if count:
            self.seen.kinks[key] = self.seen.kinks.get(key, 0) + count

    def _kink(self, func: Any, args: tuple, kwargs: dict, result: Any) -> None:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or not x.requires_grad or not x.is_floating_point():
            return
        x = x.detach()
        if func in RELU:
            self._count(CONVENTIONS["relu"], int((x == 0).sum()))
        elif func in ABS:
            self._count(CONVENTIONS["abs"], int((x == 0).sum()))
        elif func is F.leaky_relu:
            self._count(CONVENTIONS["leaky_relu"], int((x == 0).sum()))
        elif func in (F.hardtanh, F.relu6):
            low, high = (0.0, 6.0) if func is F.relu6 else _bounds(args, kwargs, -1.0, 1.0)
            name = "relu6" if func is F.relu6 else "hardtanh"
            self._count(
                CONVENTIONS["hardtanh"].format(op=name), int(((x == low) | (x == high)).sum())
            )
        elif func in CLAMPS:
            self._count(CONVENTIONS["clamp"], _at_bounds(func, x, args, kwargs))
        elif func in PAIRWISE or (func in REDUCTIONS and _second_tensor(args, kwargs) is not None):
            other = _second_tensor(args, kwargs)
            op = PAIRWISE.get(func) or ("maximum" if REDUCTIONS[func] == "max" else "minimum")
            if other is not None:
                ties = torch.broadcast_tensors(x, other.detach())
                self._count(CONVENTIONS["pairwise"].format(op=op), int((ties[0] == ties[1]).sum()))
        elif func in REDUCTIONS:
            self._reduction(REDUCTIONS[func], x, args, kwargs, result)

    def _reduction(self, op: str, x: torch.Tensor, args: tuple, kwargs: dict, result: Any) -> None:
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        values = result[0] if isinstance(result, tuple) else result  # (values, indices) by dim
        if not isinstance(values, torch.Tensor):
            return
        values = values.detach()
        if dim is None or (isinstance(dim, tuple | list) and not dim):
            self._count(CONVENTIONS["even"].format(op=op), _ties(x == values))
            return
        dims = sorted(d % x.ndim for d in (dim if isinstance(dim, tuple | list) else (dim,)))
        keepdim = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        if not keepdim:
            for d in dims:
                values = values.unsqueeze(d)
        per_slice = (x == values).sum(dim=dims)
        tied = int(per_slice[per_slice > 1].sum())  # the tied entries, as for a full reduction
        key = "index" if op in ("max", "min") else "even"
        self._count(CONVENTIONS[key].format(op=op), tied)

    def _taint(self, func: Any, args: tuple, kwargs: dict, result: Any) -> None:
        outputs = list(_tensors(result))
        if not outputs or any(t.requires_grad for t in outputs):
            return
        arguments = list(_tensors((args, kwargs)))
        taints = [taint for taint in map(self.seen.taint_of, arguments) if taint is not None]
        differentiable = [t for t in arguments if t.requires_grad]
        discrete = not all(t.is_floating_point() or t.is_complex() for t in outputs)
        cut = bool(differentiable) and discrete
        if not taints and not cut:
            return  # detach() and friends: not piecewise constant (NOTE [flat outputs and kinks])
        leaves: set[int] = set()
        ops: set[str] = set()
        for taint in taints:
            leaves |= taint[0]
            ops |= taint[1]
        if cut:
            for t in differentiable:
                leaves |= self._leaves(t)
            name = getattr(func, "__name__", "an op")
            ops.add(OPERATOR_NAMES.get(name, name if "arg" in name else f".{name}()"))
        for t in outputs:
            self.seen.tainted[id(t)] = (weakref.ref(t), frozenset(leaves), frozenset(ops))


def _bounds(args: tuple, kwargs: dict, low: float, high: float) -> tuple[float, float]:
    low = args[1] if len(args) > 1 else kwargs.get("min_val", low)
    high = args[2] if len(args) > 2 else kwargs.get("max_val", high)
    return low, high


def _at_bounds(func: Any, x: torch.Tensor, args: tuple, kwargs: dict) -> int:
    """Elements of x exactly at a bound of clamp / clip / clamp_min / clamp_max."""
    if func is torch.clamp_max:
        bounds = [args[1] if len(args) > 1 else kwargs.get("max")]
    else:
        bounds = [
            args[1] if len(args) > 1 else kwargs.get("min"),
            args[2] if len(args) > 2 else kwargs.get("max"),
        ]
        if func is torch.clamp_min:
            bounds = bounds[:1]
    at = torch.zeros_like(x, dtype=torch.bool)
    for bound in bounds:
        if bound is not None:
            at |= x == (bound.detach() if isinstance(bound, torch.Tensor) else bound)
    return int(at.sum())


def _second_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    other = args[1] if len(args) > 1 else kwargs.get("other")
    return other if isinstance(other, torch.Tensor) else None


def _ties(equal: torch.Tensor) -> int:
    """The tied entries of a full reduction: how many equal the result, when more than one."""
    count = int(equal.sum())
    return count if count > 1 else 0


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def leaves_reached(y: torch.Tensor) -> tuple[set[int], set[int]]:
    """The ids of the leaf tensors y's autograd graph leads back to: those reached along some
    path without a piecewise-constant node (FLAT_NODES), and those reached only through one."""
    smooth: set[int] = set()
    flat: set[int] = set()
    if y.grad_fn is None:
        return ({id(y)} if y.requires_grad else smooth), flat
    seen: set[tuple[object, bool]] = set()
    stack: list[tuple[Any, bool]] = [(y.grad_fn, False)]
    while stack:
        node, through_flat = stack.pop()
        if node is None or (node, through_flat) in seen:
            continue
        seen.add((node, through_flat))
        through_flat = through_flat or node.name() in FLAT_NODES
        variable = getattr(node, "variable", None)  # AccumulateGrad holds its leaf
        if variable is not None:
            (flat if through_flat else smooth).add(id(variable))
        stack.extend((next_node, through_flat) for next_node, _ in node.next_functions)
    return smooth, flat - smooth


def flat_ops(y: torch.Tensor) -> set[str]:
    """The piecewise-constant ops (FLAT_NODES) in y's autograd graph."""
    names: set[str] = set()
    seen: set[object] = set()
    stack = [y.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node.name() in FLAT_NODES:
            names.add(FLAT_NODES[node.name()])
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def kink_notes(seen: Watched) -> tuple[str, ...]:
    """A note for each kind of kink met: how many elements, and torch's convention."""
    return tuple(
        f"the point is on a kink: {what}, at {count} element{'' if count == 1 else 's'}; "
        "the derivatives follow torch's choice"
        for what, count in seen.kinks.items()
    )
