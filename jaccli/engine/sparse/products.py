"""Rules for sums of products: matrix products, convolutions and pooling windows, with their
backward, by their structure: a constant factor's exact zeros are zeros of the result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from jaccli.engine.sparse import dependencies as deps
from jaccli.engine.sparse.call import Call, Found, groups_of
from jaccli.engine.sparse.dependencies import Dependencies

PRODUCT_OPERANDS = {
    "mm": ("self", "mat2", None),
    "bmm": ("self", "mat2", None),
    "addmm": ("mat1", "mat2", "self"),
    "_addmm_activation": ("mat1", "mat2", "self"),
    "baddbmm": ("batch1", "batch2", "self"),
    "addbmm": ("batch1", "batch2", "self"),
    "mv": ("self", "vec", None),
    "addmv": ("mat", "vec", "self"),
    "dot": ("self", "tensor", None),
    "vdot": ("self", "other", None),
    "addr": ("vec1", "vec2", "self"),
    "_sparse_mm": ("sparse", "dense", None),
    "_sparse_addmm": ("mat1", "mat2", "self"),
}
"""Each product's factors A and B and the term it adds, by argument name."""


def product(call: Call) -> Found:
    """mm, bmm, mv, dot and their `add…` forms: C[i, j] depends on A[i, l] where B[l, j]
    can be non-zero and on B[l, j] where A[i, l] can (for every l), and on the added term."""
    name = call.name.rstrip("_")
    first_name, second_name, added_name = PRODUCT_OPERANDS[name]
    first, second = call.arguments[first_name], call.arguments[second_name]
    if first.dim() == 3:  # batches of m×k times k×n
        batch, m, k = first.shape
        n = second.shape[-1]
    elif name == "addr":  # u vᵀ: m×1 times 1×n
        batch, m, k, n = 1, first.numel(), 1, second.numel()
    else:  # a matrix or a row (a vector on the left) times a matrix or a column
        batch, m, k = 1, (first.shape[0] if first.dim() == 2 else 1), first.shape[-1]
        n = second.shape[-1] if second.dim() == 2 else 1
    rows = _batched_product(call, first, second, (batch, m, k, n))
    if rows is not None and name == "addbmm":  # the batches' products summed
        rows = deps.group_union(rows, np.tile(np.arange(m * n, dtype=np.int64), batch), m * n)
    parts = [rows]
    if added_name is not None and call.argument("beta", 1) != 0:
        parts.append(call.read(call.arguments[added_name], call.outputs[0].shape))
    return [deps.union(parts)] + [None] * (len(call.outputs) - 1)


def _batched_product(
    call: Call, first: torch.Tensor, second: torch.Tensor, shape: tuple[int, int, int, int]
) -> Dependencies | None:
    """Dependencies of C = A B (batches of m×k times k×n), rows in C's (b, i, j) order."""
    batch, m, k, n = shape
    rows = batch * m * n
    parts = []
    for tensor, partner, from_first in ((second, first, False), (first, second, True)):
        own = call.read(tensor)
        if own is None:
            continue
        nonzero = call.nonzero_positions(partner)
        if from_first:  # C[b,i,j] ← A[b,i,s] where B[b,s,j] may be non-zero
            b, s, j = _nonzero_positions(nonzero, (batch, k, n))
            out = (b * m * n + j)[:, None] + (np.arange(m, dtype=np.int64) * n)[None, :]
            source = (b * m * k + s)[:, None] + (np.arange(m, dtype=np.int64) * k)[None, :]
        else:  # C[b,i,j] ← B[b,s,j] where A[b,i,s] may be non-zero
            b, i, s = _nonzero_positions(nonzero, (batch, m, k))
            out = ((b * m + i) * n)[:, None] + np.arange(n, dtype=np.int64)[None, :]
            source = ((b * k + s) * n)[:, None] + np.arange(n, dtype=np.int64)[None, :]
        call.tracer.require_entries(out.size, f"{call.op_name}'s product")
        source = source.reshape(-1)
        call.tracer.require_entries(deps.entries_bound(source, own), call.op_name)
        parts.append(deps.combine((out.reshape(-1), source), rows, own))
    return deps.union(parts)


def _nonzero_positions(
    positions: np.ndarray | None, shape: tuple[int, int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (batch, row, column) of each flat position (of every element for None)."""
    if positions is None:
        grid = np.indices(shape, dtype=np.int64).reshape(3, -1)
        return grid[0], grid[1], grid[2]
    b, i, j = np.unravel_index(positions, shape)
    return b.astype(np.int64), i.astype(np.int64), j.astype(np.int64)


def _convolution_triples(
    call: Call,
    input_shape: Sequence[int],
    weight: torch.Tensor,
    output_shape: Sequence[int],
    weight_nonzero: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output, input, weight) flat positions of every product a convolution sums, for the
    weights that may be non-zero (all for None)."""
    transposed = bool(call.arguments["transposed"])
    groups = int(call.arguments["groups"])
    spatial = len(input_shape) - 2
    stride = _per_dim(call.arguments["stride"], spatial)
    padding = _per_dim(call.arguments["padding"], spatial)
    dilation = _per_dim(call.arguments["dilation"], spatial)
    kernel = tuple(weight.shape[2:])
    taps = int(np.prod(kernel))
    batch, in_channels = input_shape[0], input_shape[1]
    out_channels = output_shape[1]
    in_sizes, out_sizes = tuple(input_shape[2:]), tuple(output_shape[2:])
    # A kernel offset joins position o of the strided side with p = o·s − pad + k·d of the
    # other: the output is the strided side of a convolution, the input of a transposed one.
    strided, other = (in_sizes, out_sizes) if transposed else (out_sizes, in_sizes)
    positions = None if weight_nonzero is None else np.flatnonzero(weight_nonzero)
    first, second, offset = _nonzero_positions(positions, (weight.shape[0], weight.shape[1], taps))
    in_per_group, out_per_group = in_channels // groups, out_channels // groups
    if transposed:
        in_channel = first
        out_channel = (first // in_per_group) * out_per_group + second
    else:
        out_channel = first
        in_channel = (first // out_per_group) * in_per_group + second
    weight_flat = (first * weight.shape[1] + second) * taps + offset
    in_count, out_count = int(np.prod(in_sizes)), int(np.prod(out_sizes))
    images = np.arange(batch, dtype=np.int64)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k, (strided_at, other_at) in enumerate(
        _spatial_pairs(strided, other, kernel, stride, padding, dilation)
    ):
        here = offset == k
        count = int(here.sum())
        if not count or not len(strided_at):
            continue
        out_at, in_at = (other_at, strided_at) if transposed else (strided_at, other_at)
        call.tracer.require_entries(batch * count * len(out_at), "a convolution")
        o = (images[:, None] * out_channels + out_channel[here][None, :]) * out_count
        i = (images[:, None] * in_channels + in_channel[here][None, :]) * in_count
        w = np.broadcast_to(weight_flat[here][None, :, None], (batch, count, len(out_at)))
        found.append(
            (
                (o[:, :, None] + out_at[None, None, :]).reshape(-1),
                (i[:, :, None] + in_at[None, None, :]).reshape(-1),
                w.reshape(-1),
            )
        )
    if not found:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    outs, ins, weights = (np.concatenate(part) for part in zip(*found, strict=True))
    return outs, ins, weights


def _summed_products(
    call: Call,
    rows: int,
    targets: np.ndarray,
    factors: tuple[tuple[Any, np.ndarray], tuple[Any, np.ndarray]],
) -> Dependencies | None:
    """Dependencies of T[t] = Σ A[a]·B[b] over the triples (t, a, b): each factor's elements
    where the other may be non-zero."""
    parts = []
    for (tensor, positions), (partner, partner_positions) in (factors, factors[::-1]):
        own = call.read(tensor) if isinstance(tensor, torch.Tensor) else None
        if own is None:
            continue
        nonzero = call.may_be_nonzero(partner)
        kept = slice(None) if nonzero is None else nonzero[partner_positions]
        at, source = targets[kept], positions[kept]
        call.tracer.require_entries(deps.entries_bound(source, own), call.op_name)
        parts.append(deps.combine((at, source), rows, own))
    return deps.union(parts)


def _channel_sums(call: Call, grad: torch.Tensor) -> Dependencies | None:
    """Dependencies of the per-channel sums of a batch of images (dim 1): a bias's gradient."""
    rows = call.read(grad)
    if rows is None:
        return None
    groups, count = groups_of(tuple(grad.shape), [d for d in range(grad.dim()) if d != 1])
    return deps.group_union(rows, groups, count)


def convolution(call: Call) -> Found:
    """Each output element depends on the input elements its kernel covers where the weight
    may be non-zero, on those weights where the input may be non-zero, and on its bias."""
    source, weight = call.arguments["input"], call.arguments["weight"]
    output = call.outputs[0]
    full = call.read(weight) is not None
    outs, ins, weights = _convolution_triples(
        call, source.shape, weight, output.shape, None if full else call.may_be_nonzero(weight)
    )
    parts = [_summed_products(call, output.numel(), outs, ((source, ins), (weight, weights)))]
    bias = call.argument("bias")
    if isinstance(bias, torch.Tensor):
        channels = groups_of(tuple(output.shape), [d for d in range(output.dim()) if d != 1])[0]
        from_bias = call.read(bias)
        if from_bias is not None:
            parts.append(deps.take_rows(from_bias, channels))
    return [deps.union(parts)]


def convolution_backward(call: Call) -> Found:
    """The gradients of a convolution, for the Hessian: grad_input[i] sums grad_out[o]·w over
    the same (o, i, w) products as the convolution, grad_weight[w] sums grad_out[o]·x[i], and
    grad_bias sums grad_out per channel."""
    grad, source, weight = (call.arguments[n] for n in ("grad_output", "input", "weight"))
    wanted = list(call.arguments["output_mask"])
    full = wanted[1] or call.read(weight) is not None
    outs, ins, weights = _convolution_triples(
        call, source.shape, weight, grad.shape, None if full else call.may_be_nonzero(weight)
    )
    found: Found = []
    if wanted[0]:
        factors = ((grad, outs), (weight, weights))
        found.append(_summed_products(call, source.numel(), ins, factors))
    if wanted[1]:
        factors = ((grad, outs), (source, ins))
        found.append(_summed_products(call, weight.numel(), weights, factors))
    if wanted[2]:
        found.append(_channel_sums(call, grad))
    return found


def _per_dim(values: Sequence[int], count: int) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    return values * count if len(values) == 1 else values


def _spatial_pairs(
    strided: Sequence[int],
    other: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each kernel offset (flat, row-major), the flat positions (o, p) it joins."""
    per_dim = []
    for size, other_size, taps, s, pad, d in zip(
        strided, other, kernel, stride, padding, dilation, strict=True
    ):
        offsets = []
        o = np.arange(size, dtype=np.int64)
        for k in range(taps):
            p = o * s - pad + k * d
            valid = (p >= 0) & (p < other_size)
            offsets.append((o[valid], p[valid]))
        per_dim.append(offsets)
    pairs = []
    for combination in np.ndindex(*kernel):
        strided_flat = np.zeros(1, dtype=np.int64)
        other_flat = np.zeros(1, dtype=np.int64)
        for dim, k in enumerate(combination):
            o, p = per_dim[dim][k]
            strided_flat = (strided_flat[:, None] * strided[dim] + o[None, :]).reshape(-1)
            other_flat = (other_flat[:, None] * other[dim] + p[None, :]).reshape(-1)
        pairs.append((strided_flat, other_flat))
    return pairs


def _window_pairs(
    call: Call, input_shape: Sequence[int], output_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """(output, input) flat positions of every pooling window's elements, over the last
    len(kernel_size) dims, each plane (the dims before) on its own."""
    kernel = tuple(int(k) for k in call.arguments["kernel_size"])
    spatial = len(kernel)
    stride = _per_dim(call.arguments.get("stride") or kernel, spatial)
    padding = _per_dim(call.argument("padding", [0]), spatial)
    dilation = _per_dim(call.argument("dilation", [1]), spatial)
    in_sizes, out_sizes = tuple(input_shape[-spatial:]), tuple(output_shape[-spatial:])
    pairs = _spatial_pairs(out_sizes, in_sizes, kernel, stride, padding, dilation)
    outs = np.concatenate([o for o, _ in pairs])
    ins = np.concatenate([i for _, i in pairs])
    planes = np.arange(int(np.prod(input_shape[:-spatial])), dtype=np.int64)
    in_count, out_count = int(np.prod(in_sizes)), int(np.prod(out_sizes))
    call.tracer.require_entries(len(planes) * len(outs), "a pooling window")
    return (
        (planes[:, None] * out_count + outs[None, :]).reshape(-1),
        (planes[:, None] * in_count + ins[None, :]).reshape(-1),
    )


def pooling(call: Call) -> Found:
    """max_pool, avg_pool: each output element depends on its window (for max_pool, every
    element of it: which one is the largest changes from point to point)."""
    source, output = call.arguments["self"], call.outputs[0]
    rows = call.read(source)
    if rows is None:
        return [None] * len(call.outputs)
    outs, ins = _window_pairs(call, source.shape, output.shape)
    call.tracer.require_entries(deps.entries_bound(ins, rows), call.op_name)
    return [deps.combine((outs, ins), output.numel(), rows)] + [None] * (len(call.outputs) - 1)


def pooling_backward(call: Call) -> Found:
    """The gradient of a pooling: each input element's from the windows it lies in."""
    grad, source = call.arguments["grad_output"], call.arguments["self"]
    rows = call.read(grad)
    if rows is None:
        return [None]
    outs, ins = _window_pairs(call, source.shape, grad.shape)
    call.tracer.require_entries(deps.entries_bound(outs, rows), call.op_name)
    return [deps.combine((ins, outs), source.numel(), rows)]
