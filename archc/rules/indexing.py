"""Indexing, slicing, splitting and expanding along dims."""
from __future__ import annotations

import operator

import numpy as np
import torch
import torch.fx as fx

from ..meta import DTYPE, SHAPE, tensor_shape
from . import NA, WEIGHTLESS, analyse_rule, shrink_rule
from ._util import arg, couple_same

SPLITS = (torch.split, torch.chunk)


def _expand_index(idx, rank: int) -> list:
    idx = list(idx) if isinstance(idx, tuple) else [idx]
    used = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if Ellipsis in idx:
        at = idx.index(Ellipsis)
        idx[at : at + 1] = [slice(None)] * (rank - used)
    return idx + [slice(None)] * (rank - used - sum(1 for i in idx if i is Ellipsis))


def _simple(item) -> bool:
    if isinstance(item, slice):
        return all(v is None or isinstance(v, int) for v in (item.start, item.stop, item.step))
    return item is None or isinstance(item, int)


def _gathered(items: list) -> bool:
    """One integer index tensor among simple items (``x[:, idx]``), which torch places where it
    stands; several index tensors, or a mask, are left to default-deny."""
    tensors = [i for i in items if isinstance(i, fx.Node)]
    return (len(tensors) == 1 and tensor_shape(tensors[0]) is not None
            and tensors[0].meta.get(DTYPE) != torch.bool
            and all(_simple(i) for i in items if not isinstance(i, fx.Node)))


def index_tensor(node, ctx) -> None:
    """``x[...]`` with ints, slices, None, Ellipsis and one index tensor; anything else is left
    to default-deny. The dim an index tensor gathers along is blocked: its order is computed."""
    x = node.args[0]
    shape = tensor_shape(x)
    items = _expand_index(node.args[1], len(shape))
    if not (all(_simple(i) for i in items) or _gathered(items)):
        return
    i = o = 0
    for item in items:
        if isinstance(item, fx.Node):
            ctx.block(x, i, "gathered by a computed index")
            for k in range(len(tensor_shape(item))):
                ctx.handle(item, k)
                ctx.handle(node, o + k)
            i, o = i + 1, o + len(tensor_shape(item))
        elif item is None:
            ctx.handle(node, o)
            o += 1
        elif isinstance(item, int):
            ctx.block(x, i, "read at a constant index", index=[item % shape[i]])
            i += 1
        else:
            start, stop, step = item.indices(shape[i])
            picked = np.arange(start, stop, step)
            if step != 1:
                ctx.block(x, i, "strided slicing")
                ctx.block(node, o, "strided slicing")
            else:
                ctx.couple(x, i, node, o, picked, None, flow=True)
                ctx.handle(x, i)
            i, o = i + 1, o + 1


def shrink_index(node, cc) -> None:
    x = node.args[0]
    items = _expand_index(node.args[1], len(tensor_shape(x)))
    new, i = [], 0
    for item in items:
        if item is None:
            new.append(None)
            continue
        keep = cc.keep(x, i)
        if isinstance(item, fx.Node):  # a gathered dim is blocked: kept whole
            new.append(item)
            i += 1
            continue
        if keep is not None and isinstance(item, int):
            item = int(np.searchsorted(keep, item % tensor_shape(x)[i]))
        elif keep is not None:
            start, stop, _ = item.indices(tensor_shape(x)[i])
            item = slice(int(np.searchsorted(keep, start)), int(np.searchsorted(keep, stop)))
        new.append(item)
        i += 1
    node.args = (x, tuple(new))


def _split_dim(node) -> int:
    name = getattr(node.target, "__name__", node.target)
    default_pos = 1 if name == "unbind" else 2
    return arg(node, default_pos, "dim", 0) % len(tensor_shape(node.args[0]))


def _piece_users(node) -> dict[int, list]:
    users: dict[int, list] = {}
    for u in node.users:
        if u.op != "call_function" or u.target is not operator.getitem or not isinstance(u.args[1], int):
            return {}
        users.setdefault(u.args[1], []).append(u)
    return users


@analyse_rule(*SPLITS, permutes=NA, **WEIGHTLESS)
def split(node, ctx) -> None:
    x, dim, pieces = node.args[0], _split_dim(node), node.meta[SHAPE]
    users = _piece_users(node)
    if not users and node.users:
        return  # pieces used as a whole: default-deny blocks x
    offset = 0
    for j, piece in enumerate(pieces):
        for u in users.get(j, []):
            ctx.couple(x, dim, u, dim, np.arange(offset, offset + piece[dim]), None, flow=True)
            couple_same(ctx, x, u, flow=True, skip=(dim,))
            ctx.described_by_producer.add(u.name)
        offset += piece[dim]
    for d in range(len(tensor_shape(x))):
        ctx.handle(x, d)


@shrink_rule(*SPLITS)
def shrink_split(node, cc) -> None:
    x, dim = node.args[0], _split_dim(node)
    keep = cc.keep(x, dim)
    if keep is None:
        return
    bounds = np.cumsum([0] + [p[dim] for p in node.meta[SHAPE]])
    sizes = [int(np.searchsorted(keep, hi) - np.searchsorted(keep, lo)) for lo, hi in zip(bounds, bounds[1:])]
    node.target = "split" if node.op == "call_method" else torch.split
    node.args, node.kwargs = (x, sizes, dim), {}


@analyse_rule(torch.unbind, shrink=NA, permutes=NA, **WEIGHTLESS)
def unbind(node, ctx) -> None:
    x, dim = node.args[0], _split_dim(node)
    users = _piece_users(node)
    ctx.block(x, dim, "dim taken apart by unbind")
    for us in users.values():
        for u in us:
            for d in range(len(tensor_shape(x))):
                if d != dim:
                    ctx.couple(x, d, u, d if d < dim else d - 1, flow=True)
            ctx.described_by_producer.add(u.name)


@analyse_rule("expand_as", shrink=NA, permutes=NA, **WEIGHTLESS)
def expand_as(node, ctx) -> None:
    """``x.expand_as(other)``: an expand to ``other``'s sizes, which keeps ``other``'s channels
    (its values are not read: no flow)."""
    expand(node, ctx)
    couple_same(ctx, node.args[1], node, flow=False)


@analyse_rule("expand", permutes=NA, **WEIGHTLESS)
def expand(node, ctx) -> None:
    x = node.args[0]
    src, out = tensor_shape(x), tensor_shape(node)
    offset = len(out) - len(src)
    for d, size in enumerate(src):
        if size == out[d + offset]:
            ctx.couple(x, d, node, d + offset, flow=True)
        else:
            ctx.handle(x, d)
    for d in range(len(out)):
        ctx.handle(node, d)


@analyse_rule(torch.repeat_interleave, shrink=NA, permutes=NA, **WEIGHTLESS)
def repeat_interleave(node, ctx) -> None:
    """Each index of the repeated dim becomes ``repeats`` consecutive ones: a source channel
    lives and dies with its copies (a number of repeats stays right after removals)."""
    x, repeats, dim = node.args[0], node.args[1], node.args[2]
    rank = len(tensor_shape(x))
    dim %= rank
    copies = np.arange(tensor_shape(x)[dim] * repeats)
    couple_same(ctx, x, node, flow=True, skip=(dim,))
    ctx.couple(x, dim, node, dim, ia=copies // repeats, ib=copies, flow=True)


@analyse_rule("repeat", shrink=NA, permutes=NA, **WEIGHTLESS)
def repeat(node, ctx) -> None:
    """``x.repeat(sizes)`` tiles ``x``: index ``j`` of a tiled dim is index ``j % n`` of ``x``'s,
    so a channel lives and dies with its tiles (the tile counts stay right after removals)."""
    x = node.args[0]
    src, out = tensor_shape(x), tensor_shape(node)
    offset = len(out) - len(src)
    for d in range(offset):
        ctx.handle(node, d)
    for d, size in enumerate(src):
        tiles = np.arange(out[d + offset])
        ctx.couple(x, d, node, d + offset, ia=tiles % size, ib=tiles, flow=True)


@analyse_rule(torch.roll, shrink=NA, permutes=NA, **WEIGHTLESS)
def roll(node, ctx) -> None:
    """A cyclic shift along given dims (Swin's shifted windows): those dims stay whole (the shift
    is relative to their size), the others go with the output's."""
    x, dims = node.args[0], arg(node, 2, "dims", ())
    dims = [dims] if isinstance(dims, int) else list(dims)
    rank = len(tensor_shape(x))
    if not dims:
        return  # rolled as one flat vector: default-deny blocks every dim
    shifted = {d % rank for d in dims}
    for d in shifted:
        ctx.block(x, d, "rolled along this dim")
        ctx.block(node, d, "rolled along this dim")
    couple_same(ctx, x, node, flow=True, skip=shifted)
