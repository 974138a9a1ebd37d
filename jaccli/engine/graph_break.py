"""Naming a graph break: where the user's function hides part of its computation from autograd.

It runs only once the function as the reference has refused a result (NOTE [the function as
the reference]): the function runs once more under a TorchFunctionMode, which sees every torch
call the function makes, including the Tensor methods that leave autograd's graph (`item`,
`tolist`, `numpy`, `__array__`, `__float__`, `__int__`, `__index__`, `detach`, `.data`) and the
ops that run while gradient recording is off. The first that takes a tensor depending on a
differentiated input is named, with the line of the user's file it was called from. A value
turned into a number only to choose a branch (`if x.sum().item() > 0:`) is seen too, but is
never named unless the differences disagree with the result first.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from jaccli.engine.evaluate import AUTOGRAD_ENTRY_POINTS, call_function, leaves_of
from jaccli.engine.problem import Problem
from jaccli.errors import ComputationError
from jaccli.messages import shown_path

CONVERSIONS = {
    "item": (".item()", "a Python number"),
    "tolist": (".tolist()", "a Python list"),
    "__float__": ("float()", "a Python number"),
    "__int__": ("int()", "a Python number"),
    "__index__": ("an index", "a Python integer"),
    "numpy": (".numpy()", "a NumPy array"),
    "__array__": ("np.asarray()", "a NumPy array"),
}
"""Tensor methods that turn a tensor into Python or NumPy values: what the user wrote, and what
it makes."""
DETACHING = {"detach": ".detach()", "detach_": ".detach_()"}
TORCH_DIRECTORY = os.path.dirname(torch.__file__)
JACCLI_DIRECTORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class _Event:
    """One place where autograd loses track of a differentiated input."""

    kind: str
    """`conversion`, `no_grad` or `detach`."""
    where: str
    text: str
    """What happened there, as the message says it."""


def _location(source_file: str | None) -> str:
    """`bad.py:3`: the line of the user's file the current torch call came from; without a
    file, the innermost frame outside torch and jaccli."""
    frame: types.FrameType | None = sys._getframe(2)
    fallback = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if source_file is not None and filename == source_file:
            return f"{shown_path(filename)}:{frame.f_lineno}"
        outside = not filename.startswith((TORCH_DIRECTORY, JACCLI_DIRECTORY, "<"))
        if fallback is None and outside and "importlib" not in filename:
            fallback = f"{shown_path(filename)}:{frame.f_lineno}"
        frame = frame.f_back
    return fallback or "the function"


PLACES_NAMED = 3
"""Places of one kind of break a refusal names."""


class _Recorder(TorchFunctionMode):
    """Records the conversions, ops without gradients and detaches of a tensor that depends on
    a differentiated input: the first few places of each kind (a conversion that only chose a
    branch may come before the one that broke the graph)."""

    def __init__(self, leaf_names: dict[int, str], source_file: str | None) -> None:
        super().__init__()
        self.leaf_names = leaf_names
        self.source_file = source_file
        self.detached: dict[int, tuple[Any, str]] = {}
        """id → (the tensor, the input it was detached from): values autograd no longer sees."""
        self.events: dict[str, list[_Event]] = {}

    def _origin(self, tensor: torch.Tensor) -> str | None:
        """The differentiated input `tensor` depends on, by autograd's graph or by a detach."""
        kept = self.detached.get(id(tensor))
        if kept is not None and kept[0] is tensor:
            return kept[1]
        if not tensor.requires_grad:
            return None
        if tensor.grad_fn is None:
            return self.leaf_names.get(id(tensor))
        stack, seen = [tensor.grad_fn], set()
        while stack:
            node = stack.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            variable = getattr(node, "variable", None)
            if variable is not None and id(variable) in self.leaf_names:
                return self.leaf_names[id(variable)]
            stack.extend(next_node for next_node, _ in node.next_functions)
        return None

    def _note(self, kind: str, text: str) -> None:
        seen = self.events.setdefault(kind, [])
        where = _location(self.source_file)
        if len(seen) < PLACES_NAMED and all(event.where != where for event in seen):
            seen.append(_Event(kind, where, text))

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple = (),
        kwargs: dict | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        leaving = first is not None and (name in CONVERSIONS or name in DETACHING)
        origin = self._origin(first) if leaving else None  # type: ignore[arg-type]
        if name in CONVERSIONS and origin is not None:
            method, makes = CONVERSIONS[name]
            how = "that depends on" if first.requires_grad else "detached from"  # type: ignore[union-attr]
            self._note("conversion", f"{method} turns a tensor {how} {origin} into {makes}")
        elif name in DETACHING and first is not None and first.requires_grad and origin:
            self._note(
                "detach",
                f"{DETACHING[name]} takes a tensor that depends on {origin} out of the graph",
            )
        elif not torch.is_grad_enabled() and name not in CONVERSIONS and not _in_custom_forward():
            origins = [o for t in inputs if t.requires_grad and (o := self._origin(t))]
            if origins and any(t.is_floating_point() for t in _tensors(result)):
                self._note(
                    "no_grad",
                    f"{name} runs on a tensor that depends on {origins[0]} with gradient "
                    "recording off (torch.no_grad or torch.set_grad_enabled(False))",
                )
        tainted = [self._origin(t) for t in inputs if id(t) in self.detached]
        if name in DETACHING and origin is not None:
            tainted.append(origin)
        if tainted and tainted[0] is not None:
            for output in _tensors(result):
                if not output.requires_grad:
                    self.detached[id(output)] = (output, tainted[0])
        return result


CUSTOM_FUNCTION_FILE = os.path.join(TORCH_DIRECTORY, "autograd", "function.py")


def _in_custom_forward() -> bool:
    """Whether the current torch call is inside a custom autograd.Function's forward, which
    runs with gradient recording off by design (its backward stands for it)."""
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename == CUSTOM_FUNCTION_FILE and frame.f_code.co_name == "apply":
            return True
        frame = frame.f_back
    return False


def _tensors(value: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(value)[0] if isinstance(t, torch.Tensor)]


def _replaced_entry_point() -> str | None:
    """`torch.autograd.grad is replaced by a function of bad.py:4`, when user code replaced one
    of the functions jaccli differentiates through for good (at import time)."""
    for owner, name in AUTOGRAD_ENTRY_POINTS:
        entry = getattr(owner, name)
        if (getattr(entry, "__module__", None) or "").startswith("torch"):
            continue
        code = getattr(entry, "__code__", None)
        where = (
            f"a function of {shown_path(code.co_filename)}:{code.co_firstlineno}"
            if code is not None
            else repr(entry)[:60]
        )
        owner_name = "torch.autograd" if owner is torch.autograd else "torch.Tensor"
        return f"{owner_name}.{name} is replaced by {where}; jaccli differentiates through it"
    return None


def _recorded(problem: Problem) -> dict[str, list[_Event]] | None:
    """The places of each kind where one call of the function at the problem's inputs leaves
    autograd's graph; None where the call fails."""
    leaves = leaves_of(problem.inputs)
    names = {id(leaves[name]): name for name in problem.wrt}
    recorder = _Recorder(names, problem.function.source_file)
    try:
        with torch.enable_grad(), recorder:
            call_function(problem.function, leaves)
    except ComputationError:
        return None
    return recorder.events


def describe_graph_break(problem: Problem, derivative: str) -> str | None:
    """Where the function hides part of its computation from autograd, as one phrase ending in
    what that does to `derivative` (`J`, `H`); None when the recorder sees nothing."""
    replaced = _replaced_entry_point()
    if replaced is not None:
        return f"{replaced}, so {derivative} would be wrong"
    recorded = _recorded(problem) or {}
    for kind in ("conversion", "no_grad", "detach"):
        events = recorded.get(kind)
        if events:
            places = "; ".join(f"{event.where} {event.text}" for event in events)
            which = "it" if len(events) == 1 else "one of them (a branch on a value is fine)"
            return f"{places}; autograd cannot follow {which}, so {derivative} would be wrong"
    return None


def first_silent_graph_break(problem: Problem) -> str | None:
    """The first place where a call of the function at the problem's inputs leaves autograd's
    graph without making Python or NumPy values, as vmap would run it too (`bad.py:3 .detach()
    takes a tensor that depends on x out of the graph`; an op under torch.no_grad), even where
    the result there does not depend on it; None where it never does, or the call fails."""
    replaced = _replaced_entry_point()
    if replaced is not None:
        return replaced
    recorded = _recorded(problem) or {}
    for kind in ("no_grad", "detach"):
        if recorded.get(kind):
            event = recorded[kind][0]
            return f"{event.where} {event.text}"
    return None
