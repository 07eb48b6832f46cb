"""Ops that move channels around without computing: reshape, permute, cat, split, indexing.

A reshape that splits one dim into factors (channels into attention heads) or merges
several (flatten into a linear layer) keeps one factor prunable: a channel of the merged dim
lives and dies with its index along that factor, the other factors are blocked.

* Splitting the last dim into ``(..., heads, head_dim)``, or merging it back, keeps the
  *heads* factor (the one just outside the innermost): whole attention heads are pruned.
  Where that factor turns out unprunable (``analyse`` finds its channels blocked), the
  reshape falls back to the rule below; ``gm.meta["archc.split_channels"] = "largest"`` asks
  for the fallback everywhere (the head dim pruned uniformly across heads).
* Merging the copies an ``expand`` made (``repeat_kv``: ``(kv_heads, n_rep)`` into query
  heads) keeps the key/value heads factor, so a key/value head goes with its query heads; with
  ``gm.meta["archc.grouped_queries"] = "query"`` it keeps the copies factor instead: query
  head ``r`` of every group goes at once and the key/value heads stay (``n_rep`` shrinks).
* Otherwise the *largest* factor is kept; a merge skips factors already blocked.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx

from ..filters import Filter
from ..meta import tensor_shape
from . import NA, WEIGHTLESS, analyse_rule, declare, permutation_rule, shrink_rule
from ._util import arg, couple_same, expanded_dims, is_tensor, module
from .indexing import index_tensor, shrink_index

RESHAPES = ("view", "reshape", torch.flatten, torch.squeeze, torch.unsqueeze)
SIZED_RESHAPES = ("view", "reshape", "expand")


def align_reshape(src: tuple, dst: tuple) -> list[tuple[list[int], list[int]]]:
    """Pair runs of ``src`` dims with runs of ``dst`` dims of equal product (size-1 dims alone)."""
    groups, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        if i < len(src) and src[i] == 1:
            groups.append(([i], []))
            i += 1
        elif j < len(dst) and dst[j] == 1:
            groups.append(([], [j]))
            j += 1
        else:
            ins, outs, p, q = [i], [j], src[i], dst[j]
            i, j = i + 1, j + 1
            while p != q:
                if p < q:
                    p, i = p * src[i], i + 1
                    ins.append(i - 1)
                else:
                    q, j = q * dst[j], j + 1
                    outs.append(j - 1)
            groups.append((ins, outs))
    return groups


def _largest(dims: list[int], shape: tuple, prefer_last: bool) -> int:
    order = dims[::-1] if prefer_last else dims
    return max(order, key=lambda d: shape[d])


def _kept_factor(ctx, node, x, dims: list[int], shape: tuple, split: bool, single_is_last: bool) -> int:
    """Which of the factors ``dims`` (of ``node`` for a split, of ``x`` for a merge) the
    channels of the single dim follow; ``single_is_last``: that dim is its tensor's last
    (channels-last, as a linear layer's output is)."""
    heads = dims[-2] if len(dims) >= 2 else None
    if single_is_last and heads is not None and shape[dims[-1]] > 1 and shape[heads] > 1 and ctx.prefers_heads(node):
        ctx.head_factors[node.name] = ((node if split else x).name, heads)
        return heads
    if not split:
        copies = [d for d in dims if d in expanded_dims(_ungated(x))]
        if copies and len(copies) < len(dims):  # repeat_kv: key/value heads or their copies
            wanted = copies if ctx.grouped_queries == "query" else [d for d in dims if d not in copies]
            free = [d for d in wanted if not ctx.is_blocked(x, d)]
            if free:
                return _largest(free, shape, prefer_last=False)
        free = [d for d in dims if not ctx.is_blocked(x, d)]
        if free:
            return _largest(free, shape, prefer_last=False)
    return _largest(dims, shape, prefer_last=split)


def _ungated(x):
    """``x`` before the gates on it: a gate on the copies (``grouped_queries="query"``) keeps
    their layout."""
    while isinstance(x, fx.Node) and x.op == "call_module" and isinstance(module(x), Filter):
        x = x.args[0]
    return x


@analyse_rule(*RESHAPES, **WEIGHTLESS)
def reshape(node, ctx) -> None:
    x = node.args[0]
    src, dst = tensor_shape(x), tensor_shape(node)
    for ins, outs in align_reshape(src, dst):
        if not ins or not outs:
            for d in ins:
                ctx.handle(x, d)
            for d in outs:
                ctx.handle(node, d)
        elif len(ins) == 1 and len(outs) == 1:
            ctx.couple(x, ins[0], node, outs[0], flow=True)
        elif len(ins) == 1:  # split one dim into factors
            keep = _kept_factor(ctx, node, x, outs, dst, split=True, single_is_last=ins[0] == len(src) - 1)
            factor = np.unravel_index(np.arange(src[ins[0]]), [dst[d] for d in outs])[outs.index(keep)]
            ctx.couple(x, ins[0], node, keep, None, factor, flow=True)
            for d in outs:
                if d != keep:
                    ctx.block(node, d, "a reshape splits channels here; another factor is the prunable one")
        elif len(outs) == 1:  # merge factors into one dim
            keep = _kept_factor(ctx, node, x, ins, src, split=False, single_is_last=outs[0] == len(dst) - 1)
            factor = np.unravel_index(np.arange(dst[outs[0]]), [src[d] for d in ins])[ins.index(keep)]
            ctx.couple(x, keep, node, outs[0], factor, None, flow=True)
            for d in ins:
                if d != keep:
                    ctx.block(x, d, "a reshape merges this dim with another; only that one is prunable")
        else:
            for d in ins:
                ctx.block(x, d, "a reshape regroups dims in a way archc does not prune through")
            for d in outs:
                ctx.block(node, d, "a reshape regroups dims in a way archc does not prune through")


@analyse_rule("reshape_as", shrink=NA, **WEIGHTLESS)
def reshape_as(node, ctx) -> None:
    """``x.reshape_as(other)``: a reshape whose sizes are ``other``'s, which therefore keeps
    the same channels as the result (its values are not read: no flow)."""
    reshape(node, ctx)
    couple_same(ctx, node.args[1], node, flow=False)


def _size_args(node) -> tuple[list, bool]:
    """The explicit sizes of view/reshape/expand and whether they were passed as one sequence."""
    rest = list(node.args[1:]) or [node.kwargs.get("shape", node.kwargs.get("size"))]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list)):
        return list(rest[0]), True
    return rest, False


@shrink_rule(*SIZED_RESHAPES)
def shrink_sized(node, cc) -> None:
    sizes, packed = _size_args(node)
    out = tensor_shape(node)
    new = []
    for d, s in enumerate(sizes):
        if isinstance(s, int) and s == -1:
            new.append(s)
        elif cc.changed(node, d):
            new.append(_rescaled(node, s, cc.new_size(node, d), out[d]))
        else:
            new.append(cc.freeze_if_stale(s, out[d]))
    node.args = (node.args[0], tuple(new)) if packed else (node.args[0], *new)
    node.kwargs = {}


def _rescaled(node, size, new: int, old: int):
    """The new size of a pruned dim. A size computed at run time (the batch merged with channels,
    ``x.view(B * heads, ...)``) stays computed, ``size * new // old``: exact, since every batch
    element loses the same channels; a constant would freeze the example's batch size."""
    if not isinstance(size, fx.Node):
        return new
    with node.graph.inserting_before(node):
        scaled = node.graph.call_function(operator.mul, (size, new))
        return node.graph.call_function(operator.floordiv, (scaled, old))


@analyse_rule(torch.unflatten, permutes=NA, **WEIGHTLESS)
def unflatten(node, ctx) -> None:
    reshape(node, ctx)


@shrink_rule(torch.unflatten)
def shrink_unflatten(node, cc) -> None:
    x, dim, sizes = node.args[0], arg(node, 1, "dim"), list(arg(node, 2, "sizes"))
    dim = dim % len(tensor_shape(x))
    sizes = [cc.new_size(node, dim + i) if s != -1 and cc.changed(node, dim + i) else s
             for i, s in enumerate(sizes)]
    node.args, node.kwargs = (x, dim, tuple(sizes)), {}


def _permutation(node) -> list[int]:
    """Which input dim each output dim of ``permute``/``transpose``/``t`` comes from."""
    rank = len(tensor_shape(node))
    perm = list(range(rank))
    if node.target is torch.permute:
        return [d % rank for d in node.args[1]]
    if node.target is torch.transpose:
        a, b = node.args[1] % rank, node.args[2] % rank
        perm[a], perm[b] = perm[b], perm[a]
    elif rank >= 2:  # torch.t
        perm[-2:] = perm[-1:-3:-1]
    return perm


@analyse_rule(torch.permute, torch.transpose, torch.t, shrink=NA, permutes=NA, **WEIGHTLESS)
def permute(node, ctx) -> None:
    x = node.args[0]
    for out_dim, in_dim in enumerate(_permutation(node)):
        ctx.couple(x, in_dim, node, out_dim, flow=True)


@analyse_rule(getattr, shrink=NA, permutes=NA, **WEIGHTLESS)
def attribute(node, ctx) -> None:
    """``x.device`` (where capture puts tensors created in forward): reads no channel."""
    x, name = node.args
    if name in ("shape", "dtype", "device") and is_tensor(x):
        for d in range(len(tensor_shape(x))):
            ctx.handle(x, d)


@analyse_rule("size", shrink=NA, permutes=NA, **WEIGHTLESS)
def shape_query(node, ctx) -> None:
    x = node.args[0]
    for d in range(len(tensor_shape(x))):
        ctx.handle(x, d)


@analyse_rule(torch.cat, shrink=NA, permutes=NA, **WEIGHTLESS)
def cat(node, ctx) -> None:
    tensors = arg(node, 0, "tensors")
    out = tensor_shape(node)
    dim = arg(node, 1, "dim", 0) % len(out)
    offset = 0
    for t in tensors:
        n = tensor_shape(t)[dim]
        ctx.couple(t, dim, node, dim, None, np.arange(offset, offset + n), flow=True)
        couple_same(ctx, t, node, flow=True, skip=(dim,))
        offset += n


@analyse_rule(torch.stack, shrink=NA, permutes=NA, **WEIGHTLESS)
def stack(node, ctx) -> None:
    tensors = arg(node, 0, "tensors")
    out = tensor_shape(node)
    dim = arg(node, 1, "dim", 0) % len(out)
    ctx.block(node, dim, "dim created by torch.stack")
    for t in tensors:
        for d in range(len(tensor_shape(t))):
            ctx.couple(t, d, node, d if d < dim else d + 1, flow=True)


@analyse_rule(operator.getitem, permutes=NA, **WEIGHTLESS)
def getitem(node, ctx) -> None:
    src = node.args[0]
    if is_tensor(src):
        index_tensor(node, ctx)
    # else: a piece of split/chunk/unbind, described by that op's rule


@shrink_rule(operator.getitem)
def shrink_getitem(node, cc) -> None:
    if is_tensor(node.args[0]):
        shrink_index(node, cc)


# reshapes whose size arguments only count channels; archc.das.permute still requires every
# reordered channel to stay one contiguous run (the channel as the outer factor of a flatten)
permutation_rule(*RESHAPES, "reshape_as")
declare(torch.flatten, torch.squeeze, torch.unsqueeze, shrink=NA)  # no sizes to fix
