"""Shapes of a checked expression, in pure Python: the output shape, and every intermediate's.

Known before any tensor exists, they give expressions a shape rule (so `--plan` never runs them)
and bound what evaluating them allocates: `diag(x, 20000)` or `x + x.T` on a 20000x1 x make
tensors far larger than their inputs. Where a combination of shapes is one these rules do not
know, `ShapeUnknown` says so and the caller lets torch find out.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping

from jaccli.errors import UsageError
from jaccli.functions import shape_rules
from jaccli.functions.model import ShapeUnknown
from jaccli.spec import Shape, format_shape

SAME_SHAPE = frozenset(
    [
        "exp",
        "log",
        "sin",
        "cos",
        "tan",
        "tanh",
        "sinh",
        "cosh",
        "sigmoid",
        "relu",
        "softplus",
        "sqrt",
        "abs",
        "square",
        "log1p",
        "expm1",
        "erf",
        "softmax",
        "log_softmax",
        "cumsum",
    ]
)
REDUCTIONS = frozenset(["sum", "mean", "prod", "logsumexp", "norm", "max", "min"])
BINARY_CALLS = frozenset({"outer", "dot", "matmul"})
Scalar = None
"""The shape of a Python number in the expression: it broadcasts against anything."""


def _reject(text: str) -> UsageError:
    return UsageError(f"--expr: {text}", code="bad_expression")


class ShapeWalk:
    """Walks a checked expression tree, recording the number of elements of every node."""

    def __init__(self, shapes: Mapping[str, Shape]) -> None:
        self.shapes = shapes
        self.elements = 0
        """Elements of every tensor the expression makes, added up."""

    def shape(self, node: ast.expr) -> Shape | None:
        result = self._shape(node)
        if result is not None:
            self.elements += math.prod(result)
        return result

    def _shape(self, node: ast.expr) -> Shape | None:
        if isinstance(node, ast.Constant):
            return Scalar
        if isinstance(node, ast.Name):
            return tuple(self.shapes[node.id])
        if isinstance(node, ast.UnaryOp):
            return self.shape(node.operand)
        if isinstance(node, ast.BinOp):
            left, right = self.shape(node.left), self.shape(node.right)
            if isinstance(node.op, ast.MatMult):
                return matmul_shape(_tensor(left), _tensor(right))
            return broadcast(left, right)
        if isinstance(node, ast.Attribute):  # .T
            return tuple(reversed(_tensor(self.shape(node.value))))
        if isinstance(node, ast.Subscript):
            return index_shape(_tensor(self.shape(node.value)), node.slice)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise ShapeUnknown(type(node).__name__)

    def _call(self, node: ast.Call) -> Shape | None:
        if isinstance(node.func, ast.Attribute):
            name = node.func.attr
            args = [node.func.value, *node.args]
        else:
            assert isinstance(node.func, ast.Name)
            name = node.func.id
            args = list(node.args)
        shapes = [self.shape(a) for a in args]
        keywords = {k.arg: literal_value(k.value) for k in node.keywords}
        if len(shapes) < (2 if name in BINARY_CALLS else 1):
            raise _reject(f"{name} takes {2 if name in BINARY_CALLS else 1} tensor arguments")
        first = _tensor(shapes[0])
        if name in SAME_SHAPE:
            return first
        if name in REDUCTIONS:
            position = 2 if name == "norm" else 1  # norm(x, p, dim)
            dim = keywords.get(
                "dim", literal_value(args[position]) if len(args) > position else None
            )
            keepdim = bool(keywords.get("keepdim", False))
            return reduce_shape(first, dim, keepdim)
        if name in ("dot", "trace"):
            return ()
        if name == "outer":
            return (math.prod(first), math.prod(_tensor(shapes[1])))
        if name == "matmul":
            return matmul_shape(first, _tensor(shapes[1]))
        if name == "det":
            if len(first) < 2 or first[-1] != first[-2]:
                raise _reject(f"det needs square matrices; got {format_shape(first)}")
            return first[:-2]
        if name == "diag":
            offset = int(literal_value(args[1]) if len(args) > 1 else 0)
            if len(first) == 1:
                side = first[0] + abs(offset)
                return (side, side)
            if len(first) == 2:
                rows, cols = first
                return (max(0, min(rows + min(offset, 0), cols - max(offset, 0))),)
        raise ShapeUnknown(name)


def _tensor(shape: Shape | None) -> Shape:
    if shape is None:
        raise ShapeUnknown("a number where a tensor is needed")
    return shape


def literal_value(node: ast.expr) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
        value = node.operand.value
        return -value if isinstance(node.op, ast.USub) else value  # type: ignore[operator]
    raise ShapeUnknown("a non-literal argument")


def broadcast(left: Shape | None, right: Shape | None) -> Shape | None:
    """numpy's broadcasting of two shapes (None is a number)."""
    if left is None or right is None:
        return right if left is None else left
    result = shape_rules.broadcast(left, right)
    if result is None:
        raise _reject(f"shapes {format_shape(left)} and {format_shape(right)} do not broadcast")
    return result


def matmul_shape(left: Shape, right: Shape) -> Shape:
    """torch.matmul's result shape."""
    if not left or not right:
        raise _reject("@ needs tensors of at least one dimension")
    inner = shape_rules.matmul_inner(right)
    result = shape_rules.matmul(left, right) if left[-1] == inner else None
    if result is None:
        raise _reject(f"{format_shape(left)} @ {format_shape(right)} do not fit together")
    return result


def reduce_shape(shape: Shape, dim: object, keepdim: bool) -> Shape:
    if dim is None:
        return tuple(1 for _ in shape) if keepdim else ()
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise ShapeUnknown("dim")
    if not shape or not -len(shape) <= dim < len(shape):
        raise _reject(f"dim={dim} is out of range for shape {format_shape(shape)}")
    axis = dim % len(shape)
    if keepdim:
        return (*shape[:axis], 1, *shape[axis + 1 :])
    return (*shape[:axis], *shape[axis + 1 :])


def index_shape(shape: Shape, index: ast.expr) -> Shape:
    """The shape after integer indexing and slicing with literal bounds."""
    parts = index.elts if isinstance(index, ast.Tuple) else [index]
    if len(parts) > len(shape):
        raise _reject(f"{len(parts)} indices for a tensor of shape {format_shape(shape)}")
    result: list[int] = []
    for size, part in zip(shape, parts, strict=False):
        if isinstance(part, ast.Slice):
            bounds = [
                None if b is None else literal_value(b) for b in (part.lower, part.upper, part.step)
            ]
            if bounds[2] is not None and bounds[2] <= 0:  # type: ignore[operator]
                raise _reject("slice steps must be positive")
            result.append(len(range(*slice(*bounds).indices(size))))  # type: ignore[arg-type]
        else:
            position = literal_value(part)
            if not isinstance(position, int) or not -size <= position < size:
                raise _reject(f"index {position} is out of range for a dimension of {size}")
    return (*result, *shape[len(parts) :])
