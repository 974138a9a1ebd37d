"""What jaccli knows about a function: its name, formula, named inputs and the callable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from jaccli.errors import UsageError
from jaccli.spec import Shape

AxisPair = tuple[int, int]


@dataclass(frozen=True)
class Separable:
    """Axes along which f acts on one input independently: slice i of the input along
    `input_axis` moves only slice i of the output along `output_axis`.

    # NOTE [separable axes]
    One concept serves the per-row / per-column views (`--view rows|cols`) and the per-sample
    Jacobian: along a separable axis, J is block-diagonal, and block i is the Jacobian of the
    slice function r ↦ f(x with slice i = r)[slice i].
    """

    pairs: tuple[AxisPair, ...] = ()
    """Explicit (input_axis, output_axis) pairs, valid for an input of `ndim` dimensions."""
    ndim: int | None = None
    every_axis: bool = False
    """Elementwise: every axis of the input, matched with the same output axis."""
    all_but_last: bool = False
    """Acts along the last axis, independently over every other axis."""

    def axes(self, input_ndim: int, output_ndim: int) -> tuple[AxisPair, ...]:
        """The (input_axis, output_axis) pairs that hold for inputs and outputs of these ranks."""
        if self.every_axis:
            candidates: tuple[AxisPair, ...] = tuple((a, a) for a in range(input_ndim))
        elif self.all_but_last:
            candidates = tuple((a, a) for a in range(input_ndim - 1))
        elif self.ndim is None or self.ndim == input_ndim:
            candidates = self.pairs
        else:
            candidates = ()
        return tuple((i, o) for i, o in candidates if i < input_ndim and o < output_ndim)


NOT_SEPARABLE = Separable()
ELEMENTWISE = Separable(every_axis=True)
BATCHED_OVER_LEADING_AXES = Separable(all_but_last=True)


@dataclass(frozen=True)
class DerivedShape:
    """A constant's shape computed from the shape of the input it follows (affine's A is d×d
    for an x whose last dimension is d); `rule` raises UsageError for a shape it cannot follow."""

    rule: Callable[[Shape], Shape]
    shape: str
    """The shape for people, in symbols: `d×d`."""
    symbols: str
    """What the symbols are: `d = x's last dimension`."""


@dataclass(frozen=True)
class InputSpec:
    """One named input: its default shape, and whether it is differentiated or a constant."""

    name: str
    default_shape: Shape | None
    """None: the user must give a shape or value (or the parameter keeps its Python default)."""
    differentiable: bool = True
    shape_like: str | None = None
    """A constant whose shape follows this other input's (add's `a` follows `x`)."""
    derived_shape: DerivedShape | None = None
    """How the shape follows `shape_like`'s; None: the same shape."""
    separable: Separable = NOT_SEPARABLE
    has_default: bool = False
    """A user function's parameter with a default: kept, and not differentiated, unless given."""

    def followed_shape(self, shapes: Mapping[str, Shape]) -> Shape | None:
        """The shape this constant takes from the input it follows (in `shapes`); None when it
        follows none."""
        if self.shape_like is None:
            return None
        source = shapes[self.shape_like]
        return source if self.derived_shape is None else self.derived_shape.rule(source)


ShapeRule = Callable[[Mapping[str, Shape]], Shape]


class ShapeUnknown(Exception):
    """A shape rule that does not cover these shapes: one real pass (or torch) will tell."""


@dataclass(frozen=True)
class Function:
    """A function of named tensor inputs, with a one-line formula for people to read."""

    name: str
    formula: str
    inputs: tuple[InputSpec, ...]
    call: Callable[..., Any]
    """Called with every input as a keyword argument; returns the output tensor."""
    output_shape: ShapeRule | None = None
    """y's shape from the input shapes, in pure Python (no tensor, no torch start-up); raises
    UsageError naming the mismatch when they cannot work together. None: one real pass tells."""
    intermediate_elements: Callable[[Mapping[str, Shape]], int] | None = None
    """Elements of every tensor one call makes, from the input shapes (an expression's), to
    hold against the memory budget before it runs; None where that cannot be known."""
    source_file: str | None = None
    """The user's file the callable came from, to point at the line that raised."""
    separable_axes: Callable[[Mapping[str, Shape]], dict[str, tuple[AxisPair, ...]]] | None = None
    """Each input's separable axes, found from the input shapes (an expression's, from its
    syntax tree); None: the inputs' own `separable` only."""
    vectorized_call: Callable[..., Any] | None = None
    """The same function for inside torch.func's vectorized transforms, where `call` cannot run
    (a gradient by torch.autograd.grad under jacfwd); None: `call` runs there too."""
    jacobian_formula: str = ""
    """J in closed form, for a person (presets); tests evaluate each against the computed J."""
    may_break_graph: bool = False
    """Whether the callable is the user's own code, which may compute where autograd cannot see
    (`.item()`, NumPy, `detach`, torch's global state): its results are then checked against
    the function itself (NOTE [the function as the reference]). Presets and expressions cannot."""
    untrusted_derivative: bool = False
    """Whether torch's own derivative of a call the callable makes is wrong at some points:
    `det` of a singular matrix (torch 2.13 gives 0 for ∂det(diag(x))/∂x at x = [0, 2, 3], where
    it is [6, 0, 0]). Its results are checked against the function itself, as the user's code
    is, and many points are computed one at a time (`checked_against_itself`)."""
    kink_free: bool = False
    """Whether no torch call the callable makes can sit on a kink or leave the graph through a
    discrete value (no relu, abs, max/min, clamp, comparison, rounding or integer cast: the
    presets): a call of it then has no kink or cut to report, and its torch calls are not
    watched for them (NOTE [flat outputs and kinks] in engine/kinks.py)."""
    integer_inputs: bool = False
    """Whether an input outside wrt keeps the integers it was given (a user's callable: targets,
    indices); elsewhere every input is floating."""
    selected_output: str | None = None
    """The one output kept of several (--output NAME), by its name (`z`, `y1`, `aux.0`); None:
    every output."""

    @property
    def checked_against_itself(self) -> bool:
        """Whether its results are checked against the function's own differences (NOTE [the
        function as the reference]): the user's code, and calls whose torch derivative is not
        to be trusted at every point."""
        return self.may_break_graph or self.untrusted_derivative

    @property
    def is_guest(self) -> bool:
        """Whether the callable is the user's own code, which may change its inputs in place,
        print, or change torch's global state (NOTE [the user's function is a guest] in
        engine/evaluate.py); presets and expressions do none of that."""
        return self.may_break_graph

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs)

    @property
    def differentiable_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.inputs if spec.differentiable)

    @property
    def required_names(self) -> tuple[str, ...]:
        """The differentiable inputs that need a tensor: an unnamed --shape goes to the only one."""
        return tuple(s.name for s in self.inputs if s.differentiable and not s.has_default)

    def with_separable(
        self, axes: Mapping[str, tuple[AxisPair, ...]], shapes: Mapping[str, Shape]
    ) -> Function:
        """This function with `axes` as the separable axes of those inputs, at these shapes."""
        return replace(
            self,
            inputs=tuple(
                replace(spec, separable=Separable(axes[spec.name], len(shapes[spec.name])))
                if spec.name in axes
                else spec
                for spec in self.inputs
            ),
        )

    def named(self, name: str | None, option: str) -> str:
        """The input an option's `NAME=` gives, or without one the only input that needs a
        tensor; UsageError when several could be meant."""
        if name is not None:
            return name
        if len(self.required_names) != 1:
            raise UsageError(
                f"{self.name} has inputs {', '.join(self.input_names)}: name the one meant, as "
                f"in {option} {self.input_names[0]}=..."
            )
        return self.required_names[0]

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)
