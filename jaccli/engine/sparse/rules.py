"""The sparsity rules: for one call of an aten op, which input elements each element of its
outputs depends on, given what each element of its operands depends on (the tracer applies
them, NOTE [dependencies live with storages]). The table, by kind of op:

| ops                                              | rule                                     |
|--------------------------------------------------|------------------------------------------|
| views (slice, select, view, expand, permute, …)  | none needed: they read their storage     |
| moves (cat, stack, roll, flip, pads, index,      | the op applied to element ids: exact     |
|   gather, index_select, tril, copy_, repeat, …)  | (moves.py; checked with shifted ids)     |
| index_put, index_add, scatter, put (and _ forms) | each written element from its sources    |
|                                                  | (and its old value where summed)         |
| backward of moves (pads, upsampling, unfold,     | from everywhere the move copied to       |
|   embedding; col2im)                             |                                          |
| pointwise (torch's pointwise tag), clone, casts  | union over the broadcast operands        |
| mul by a constant                                | and none where the constant is exactly 0 |
| where, masked_fill                               | the chosen branch for a constant         |
|                                                  | condition, else both                     |
| floor, ceil, round, trunc, sign, x // y          | none: their derivative is 0              |
| reductions (sum, mean, prod, amax, norm, var, …) | union over what they reduce              |
| losses (mse, l1, huber, bce, …)                  | pointwise, or everything when reduced    |
| softmax, log_softmax, layer_norm (and backward)  | union along the dims they normalize      |
| cumsum, cumprod, logcumsumexp, cummax, cummin    | union over each prefix: a triangle       |
| sort, topk                                       | the element chosen: at this point only   |
| mm, bmm, mv, dot, addmm, baddbmm, addr, …        | structural product: a constant factor's  |
|   (a constant factor may be torch.sparse)        | exact zeros are zeros (products.py)      |
| convolution (1-D to 3-D, strided, dilated,       | structural pattern, likewise             |
|   grouped, transposed) and its backward          |                                          |
| max_pool, avg_pool (2-D, 3-D) and backward       | union over each window                   |
| factories and *_like (zeros_like, randn_like…)   | none                                     |
| anything on a torch.sparse tensor built from the | every element depends on everything the  |
|   inputs (tracer.py)                             | operands do: a superset, noted           |
| anything else                                    | every output element depends on every    |
|                                                  | operand element: a superset, named in a  |
|                                                  | note                                     |

Integer and boolean outputs depend on nothing (they have no derivative); when an index,
mask or condition that a value of the inputs chose (argsort, x > 0, nonzero) selects
elements, the pattern holds at this point only, and says so. A custom autograd.Function is
handled in pattern.py (NOTE [custom autograd Functions]).
"""

from __future__ import annotations

import numpy as np
import torch

from jaccli.engine.sparse import dependencies as deps
from jaccli.engine.sparse.call import (
    Call,
    Found,
    Rule,
    differentiable,
    dims_of,
    everything,
    groups_of,
    within_groups,
)
from jaccli.engine.sparse.moves import move, scattered, unmove
from jaccli.engine.sparse.products import (
    convolution,
    convolution_backward,
    pooling,
    pooling_backward,
    product,
)


def nothing(call: Call) -> Found:
    """Outputs that depend on no input element: factories, `*_like`, zero derivatives."""
    return [None] * len(call.outputs)


def pointwise(call: Call) -> Found:
    """Each output element depends on the same element of every operand, broadcast."""
    found: Found = []
    for output in call.outputs:
        parts = [call.read(t, output.shape) for t in call.floating_operands()]
        found.append(deps.union(parts))
    return found


def multiply(call: Call) -> Found:
    """Pointwise, except that a constant factor's exact zeros take its partner's
    dependencies away there (the derivative c·dx is 0 where c is 0)."""
    output = call.outputs[0]
    factors = (call.arguments["self"], call.arguments["other"])
    parts = []
    for this, partner in (factors, factors[::-1]):
        if not isinstance(this, torch.Tensor):
            continue
        rows = call.read(this, output.shape)
        if rows is None:
            continue
        nonzero = call.may_be_nonzero(partner, output.shape)
        parts.append(rows if nonzero is None or nonzero.all() else deps.keep_rows(rows, nonzero))
    return [deps.union(parts)]


def where(call: Call) -> Found:
    """The chosen branch where the condition is a constant (exact everywhere); both branches
    where the inputs' values choose (each at some point)."""
    condition = call.arguments.get("condition", call.arguments.get("mask"))
    return pointwise(call) if call.varies(condition) else move(call)


def reduction(call: Call) -> Found:
    """Each output element depends on every element it reduces (`dim`, or all)."""
    source = call.arguments["self"]
    rows = call.read(source)
    if rows is None:
        return [None] * len(call.outputs)
    dims = dims_of(call.arguments.get("dim"), source.dim())
    groups, count = groups_of(tuple(source.shape), dims)
    reduced = deps.group_union(rows, groups, count)
    return [reduced if differentiable(o) else None for o in call.outputs]


def loss(call: Call) -> Found:
    """A loss: pointwise with reduction='none', else every element of its operands."""
    if call.argument("reduction", 1) == 0:
        return pointwise(call)
    shape = torch.broadcast_shapes(*(t.shape for t in call.floating_operands()))
    rows = deps.union([call.read(t, shape) for t in call.floating_operands()])
    if rows is None:
        return [None] * len(call.outputs)
    everything = deps.group_union(rows, np.zeros(rows.shape[0], dtype=np.int64), 1)
    return [everything] + [None] * (len(call.outputs) - 1)


def along_dim(call: Call) -> Found:
    """softmax and its kin: each element depends on its whole line along `dim`."""
    output = call.outputs[0]
    return [within_groups(call, output, dims_of(call.arguments["dim"], output.dim()))]


def layer_norm(call: Call) -> Found:
    """Each element depends on its whole normalized block (the last dims) and its weight and
    bias; the mean and 1/σ on their block."""
    source = call.arguments["input"]
    kept = source.dim() - len(call.arguments["normalized_shape"])
    dims = list(range(kept, source.dim()))
    output = call.outputs[0]
    normalized = within_groups(call, output, dims, operands=[source])
    affine = [
        call.read(t, output.shape)
        for t in (call.argument("weight"), call.argument("bias"))
        if isinstance(t, torch.Tensor)
    ]
    rows = call.read(source)
    statistic = None
    if rows is not None:
        groups, count = groups_of(tuple(source.shape), dims)
        statistic = deps.group_union(rows, groups, count)
    return [deps.union([normalized, *affine]), statistic, statistic][: len(call.outputs)]


def layer_norm_backward(call: Call) -> Found:
    """The gradients of layer_norm: the input's from its whole block (of the gradient, the
    input, the statistics and the weight), the weight's and bias's from every block."""
    grad, source = call.arguments["grad_out"], call.arguments["input"]
    kept = source.dim() - len(call.arguments["normalized_shape"])
    dims = list(range(kept, source.dim()))
    operands = [
        t
        for t in (
            grad,
            source,
            call.argument("weight"),
            call.arguments["mean"],
            call.arguments["rstd"],
        )
        if isinstance(t, torch.Tensor)
    ]
    block = within_groups(call, source, dims, operands=operands)
    across, count = groups_of(tuple(source.shape), list(range(kept)))
    found: Found = []
    wanted = list(call.arguments["output_mask"])
    if wanted[0]:
        found.append(block)
    if wanted[1]:
        found.append(None if block is None else deps.group_union(block, across, count))
    if wanted[2]:
        rows = call.read(grad, source.shape)
        found.append(None if rows is None else deps.group_union(rows, across, count))
    return found


def prefix(call: Call) -> Found:
    """cumsum and its kin: element i along `dim` depends on elements 0…i there."""
    source = call.arguments["self"]
    rows = call.read(source)
    if rows is None:
        return [None] * len(call.outputs)
    shape = tuple(source.shape) or (1,)
    dim = dims_of(call.arguments["dim"], len(shape))[0]
    length = shape[dim]
    lines = np.moveaxis(np.arange(source.numel(), dtype=np.int64).reshape(shape), dim, -1)
    lines = lines.reshape(-1, length)
    count = lines.shape[0] * length * (length + 1) // 2
    call.tracer.require_entries(count, f"{call.op_name}'s triangle")
    later, earlier = np.tril_indices(length)
    pairs = (lines[:, later].reshape(-1), lines[:, earlier].reshape(-1))
    call.tracer.require_entries(deps.entries_bound(pairs[1], rows), call.op_name)
    found = deps.combine(pairs, source.numel(), rows)
    return [found if differentiable(o) else None for o in call.outputs]


def sorted_values(call: Call) -> Found:
    """sort, topk: each value depends on the element it was taken from, which the values
    chose: exact at this point only."""
    source = call.arguments["self"]
    rows = call.read(source)
    if rows is None:
        return [None, None]
    call.tracer.note(
        f"{call.op_name} chooses elements by their values: the pattern holds at this point only",
        value_dependent=True,
    )
    if source.dim() == 0:
        return [rows, None]
    indices = call.outputs[1].cpu()
    dim = dims_of(call.argument("dim", -1), source.dim())[0]
    chosen = torch.arange(source.numel()).reshape(source.shape).gather(dim, indices)
    return [deps.take_rows(rows, chosen.reshape(-1).numpy()), None]


def trace(call: Call) -> Found:
    """The trace: the union over the diagonal."""
    source = call.arguments["self"]
    rows = call.read(source)
    if rows is None:
        return [None]
    columns = source.shape[1]
    diagonal = np.arange(min(source.shape), dtype=np.int64) * (columns + 1)
    on_it = deps.take_rows(rows, diagonal)
    return [deps.group_union(on_it, np.zeros(len(diagonal), dtype=np.int64), 1)]


def unknown(call: Call) -> Found:
    """An op without a rule: `everything`, and a note naming it."""
    found = everything(call)
    if any(rows is not None for rows in found):
        call.tracer.note(
            f"{call.op_name} has no sparsity rule: its outputs depend on all of its inputs' "
            "elements",
            exact=False,
        )
    return found


NOTHING = (
    "empty_like zeros_like ones_like full_like rand_like randn_like randint_like new_empty "
    "new_empty_strided new_zeros new_ones new_full bernoulli floor ceil round trunc sign sgn "
    "floor_divide div.Tensor_mode div.Scalar_mode div_.Tensor_mode div_.Scalar_mode "
    "_local_scalar_dense"
)
POINTWISE = (
    "_to_copy lift_fresh_copy _conj _neg_view native_dropout mse_loss_backward "
    "smooth_l1_loss_backward huber_loss_backward soft_margin_loss_backward "
    "binary_cross_entropy_backward elu_backward leaky_relu_backward hardtanh_backward "
    "softplus_backward log_sigmoid_forward log_sigmoid_backward mish_backward "
    "hardsigmoid_backward hardswish_backward hardswish _prelu_kernel relu6"
)
MOVES = (
    "cat stack block_diag roll flip rot90 constant_pad_nd reflection_pad1d reflection_pad2d "
    "reflection_pad3d replication_pad1d replication_pad2d replication_pad3d repeat "
    "repeat_interleave index index_select gather take masked_select masked_scatter "
    "index_fill fill zero copy slice_scatter select_scatter diagonal_scatter "
    "as_strided_scatter tril triu diag_embed diag _unsafe_view _unsafe_index slice_backward "
    "select_backward diagonal_backward unfold_backward embedding upsample_nearest1d "
    "upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d "
    "_upsample_nearest_exact3d pixel_shuffle pixel_unshuffle channel_shuffle "
    "native_channel_shuffle im2col narrow_copy clone contiguous alias_copy"
)
SCATTERED = (
    "index_put _index_put_impl _unsafe_index_put index_add index_copy index_reduce scatter "
    "scatter_add scatter_reduce put"
)
REDUCTIONS = "median nanmedian kthvalue mode"
LOSSES = (
    "mse_loss l1_loss smooth_l1_loss huber_loss soft_margin_loss binary_cross_entropy "
    "binary_cross_entropy_with_logits"
)
ALONG_DIM = "_softmax _log_softmax _softmax_backward_data _log_softmax_backward_data"
PREFIXES = "cumsum cumprod logcumsumexp cummax cummin"
POOLINGS = "max_pool2d_with_indices max_pool3d_with_indices avg_pool2d avg_pool3d"
UNMOVES = (
    "reflection_pad1d_backward reflection_pad2d_backward reflection_pad3d_backward "
    "replication_pad1d_backward replication_pad2d_backward replication_pad3d_backward "
    "upsample_nearest1d_backward upsample_nearest2d_backward upsample_nearest3d_backward "
    "_upsample_nearest_exact1d_backward _upsample_nearest_exact2d_backward "
    "_upsample_nearest_exact3d_backward unfold_backward embedding_dense_backward col2im"
)
PRODUCTS = (
    "mm bmm mv dot vdot addmm addmv baddbmm addbmm addr _addmm_activation _sparse_mm _sparse_addmm"
)

RULES: dict[str, Rule] = {
    **dict.fromkeys(NOTHING.split(), nothing),
    **dict.fromkeys(POINTWISE.split(), pointwise),
    **dict.fromkeys(MOVES.split(), move),
    **dict.fromkeys(SCATTERED.split(), scattered),
    **dict.fromkeys(REDUCTIONS.split(), reduction),
    **dict.fromkeys(LOSSES.split(), loss),
    **dict.fromkeys(ALONG_DIM.split(), along_dim),
    **dict.fromkeys(PREFIXES.split(), prefix),
    **dict.fromkeys(PRODUCTS.split(), product),
    "mul": multiply,
    "where": where,
    "masked_fill": where,
    "sort": sorted_values,
    "trace": trace,
    "topk": sorted_values,
    "native_layer_norm": layer_norm,
    "convolution": convolution,
    "convolution_backward": convolution_backward,
    "native_layer_norm_backward": layer_norm_backward,
    **dict.fromkeys(POOLINGS.split(), pooling),
    **dict.fromkeys((f"{name}_backward" for name in POOLINGS.split()), pooling_backward),
    **dict.fromkeys(UNMOVES.split(), unmove),
    "scatter.value": move,
}


def rule_for(func: torch._ops.OpOverload) -> Rule:
    """The rule of an op: by its name (an in-place form by its functional one's), else by
    torch's tags (pointwise, reduction, view_copy), else `unknown`."""
    name = func._schema.name.split("::")[-1]
    functional = name[:-1] if name.endswith("_") and not name.endswith("__") else name
    for key in (
        f"{name}.{func._overloadname}",
        f"{functional}.{func._overloadname}",
        name,
        functional,
    ):
        if key in RULES:
            return RULES[key]
    if torch.Tag.pointwise in func.tags:
        return pointwise
    if torch.Tag.reduction in func.tags:
        return reduction
    if torch.Tag.view_copy in func.tags:
        return move
    return unknown
