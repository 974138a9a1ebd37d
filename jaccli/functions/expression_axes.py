"""Separable axes of an expression, read off its syntax tree (NOTE [separable axes]).

For every node the walk keeps, for each input the node depends on, the axes of that input that
still run along an axis of the node one to one: slice i of the node along that axis depends on
slice i of the input alone. Elementwise operations keep every axis; a reduction or softmax over
`dim=k` keeps the others; `@` keeps a's rows and b's columns. An operation the walk does not
know keeps none, so an axis is reported only where the tree shows it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping

from jaccli.functions.expression_shapes import REDUCTIONS, SAME_SHAPE, ShapeWalk, literal_value
from jaccli.functions.model import AxisPair, ShapeUnknown
from jaccli.spec import Shape

AxisMap = dict[str, dict[int, int]]
"""For each input a node depends on: input axis → node axis, for the axes it keeps."""
ALONG_ONE_DIM = frozenset({"softmax", "log_softmax", "cumsum"})


def separable_axes(body: ast.expr, shapes: Mapping[str, Shape]) -> dict[str, tuple[AxisPair, ...]]:
    """For each input, the (input_axis, output_axis) pairs the expression is separable along."""
    try:
        kept = _AxisWalk(shapes).axes(body)
    except ShapeUnknown:
        return {}
    return {name: tuple(sorted(axes.items())) for name, axes in kept.items() if axes}


class _AxisWalk:
    def __init__(self, shapes: Mapping[str, Shape]) -> None:
        self.shapes = shapes

    def shape(self, node: ast.expr) -> Shape | None:
        return ShapeWalk(self.shapes).shape(node)

    def axes(self, node: ast.expr) -> AxisMap:
        if isinstance(node, ast.Constant):
            return {}
        if isinstance(node, ast.Name):
            return {node.id: {a: a for a in range(len(self.shapes[node.id]))}}
        if isinstance(node, ast.UnaryOp):
            return self.axes(node.operand)
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.MatMult):
                return self._matmul(node.left, node.right)
            return self._broadcast(node, [node.left, node.right])
        if isinstance(node, ast.Call):
            return self._call(node)
        return _depends_only(self._all_names(node))

    def _all_names(self, node: ast.AST) -> AxisMap:
        return {n.id: {} for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in self.shapes}

    def _broadcast(self, node: ast.expr, operands: list[ast.expr]) -> AxisMap:
        """Operands aligned on their last axes: an input's axis is kept if every operand that
        depends on the input keeps it at the same result axis, of the result's size."""
        result = self.shape(node) or ()
        maps = []
        for operand in operands:
            shape = self.shape(operand) or ()
            shift = len(result) - len(shape)
            maps.append(
                {
                    name: {a: n + shift for a, n in axes.items() if shape[n] == result[n + shift]}
                    for name, axes in self.axes(operand).items()
                }
            )
        return _intersect(maps)

    def _matmul(self, left: ast.expr, right: ast.expr) -> AxisMap:
        """2-D @ 2-D keeps a's rows (axis 0) and b's columns (axis 1); 2-D @ 1-D a's rows;
        1-D @ 2-D b's columns (as axis 0). Anything else keeps no axis."""
        a, b = self.shape(left) or (), self.shape(right) or ()
        rows: dict[int, int] = {0: 0} if len(a) == 2 else {}
        columns: dict[int, int] = {1: 1 if len(a) == 2 else 0} if len(b) == 2 else {}
        if len(a) not in (1, 2) or len(b) not in (1, 2):
            rows, columns = {}, {}
        kept_left = {
            name: {ax: rows[n] for ax, n in axes.items() if n in rows}
            for name, axes in self.axes(left).items()
        }
        kept_right = {
            name: {ax: columns[n] for ax, n in axes.items() if n in columns}
            for name, axes in self.axes(right).items()
        }
        return _intersect([kept_left, kept_right])

    def _call(self, node: ast.Call) -> AxisMap:
        if isinstance(node.func, ast.Attribute):
            name, args = node.func.attr, [node.func.value, *node.args]
        else:
            assert isinstance(node.func, ast.Name)
            name, args = node.func.id, list(node.args)
        if not args:
            return {}
        keywords = {k.arg: k.value for k in node.keywords}
        if name in SAME_SHAPE and name not in ALONG_ONE_DIM:
            return _intersect([self.axes(args[0]), *(self._all_names(a) for a in args[1:])])
        if name in REDUCTIONS or name in ALONG_ONE_DIM:
            position = 2 if name == "norm" else 1
            dim_node = keywords.get("dim", args[position] if len(args) > position else None)
            shape = self.shape(args[0]) or ()
            if dim_node is None or not shape:
                return _depends_only(self._all_names(node))
            dim = literal_value(dim_node)
            if not isinstance(dim, int) or isinstance(dim, bool):
                return _depends_only(self._all_names(node))
            axis = dim % len(shape)
            keepdim = bool(literal_value(keywords["keepdim"])) if "keepdim" in keywords else False
            keeps_axis = name in ALONG_ONE_DIM or keepdim

            def moved(n: int) -> int:
                return n if keeps_axis or n < axis else n - 1

            return {
                input_name: {a: moved(n) for a, n in axes.items() if n != axis}
                for input_name, axes in self.axes(args[0]).items()
            }
        return _depends_only(self._all_names(node))


def _depends_only(names: AxisMap) -> AxisMap:
    return {name: {} for name in names}


def _intersect(maps: list[AxisMap]) -> AxisMap:
    """Each input's axes kept by every map that depends on it, at the same node axis."""
    result: AxisMap = {}
    for axis_map in maps:
        for name, axes in axis_map.items():
            if name not in result:
                result[name] = dict(axes)
            else:
                result[name] = {a: n for a, n in result[name].items() if axes.get(a) == n}
    return result
