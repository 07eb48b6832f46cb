"""Layers with parameters: convolutions, linear, norms, embeddings; and pooling/resizing."""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..meta import tensor_shape
from . import NA, WEIGHTLESS, analyse_rule, declare, permutation_rule, shrink_rule
from ._util import arg, couple_same, module

CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
STAT_NORMS = (nn.LayerNorm,) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
POOLS = (F.interpolate, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
         F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)
aten = torch.ops.aten
FUNCTIONAL_NORMS = (aten.layer_norm.default, aten.group_norm.default, aten.rms_norm.default)


def _block_spatial(ctx, node, what: str) -> None:
    for d in range(2, len(tensor_shape(node))):
        ctx.block(node, d, f"spatial dim of {what}")


@analyse_rule(*CONVS)
def conv(node, ctx) -> None:
    m, x = module(node), node.args[0]
    ctx.couple(x, 0, node, 0)
    _block_spatial(ctx, x, type(m).__name__)
    _block_spatial(ctx, node, type(m).__name__)
    ctx.consume(x, 1)
    ctx.produce(node, 1)
    if m.groups > 1:
        _couple_whole_groups(ctx, x, node, m.in_channels, m.out_channels, m.groups)


def _couple_whole_groups(ctx, x, node, c_in: int, c_out: int, groups: int) -> None:
    """A grouped conv's inputs and outputs are removed together, whole groups at a time."""
    in_per, out_per = c_in // groups, c_out // groups
    ctx.couple(x, 1, node, 1, np.arange(c_in), np.arange(c_in) // in_per * out_per)
    ctx.couple(node, 1, node, 1, np.arange(c_out), np.arange(c_out) // out_per * out_per)


def _groups_left(kept_out: int, c_out: int, groups: int) -> int:
    """How many groups a grouped conv keeps when ``kept_out`` of its ``c_out`` outputs stay."""
    return kept_out // (c_out // groups)


_ATEN_CONVS = (aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.conv1d.padding,
               aten.conv2d.padding, aten.conv3d.padding)


@analyse_rule(*_ATEN_CONVS)
def computed_weight_conv(node, ctx) -> None:
    """A conv whose weight is computed in forward (weight standardisation): its output channels
    are made here (a gate after it stays a multiply: the weight it would fold into is computed).
    Ungrouped, its input channels go with the weight's dim 1. Grouped (NF-Nets), whole groups go,
    inputs with their outputs, as for ``nn.Conv2d``; the weight's dim 1, one group's inputs, stays
    whole, so each output's statistics over it are unchanged."""
    x, w = node.args[:2]
    groups = arg(node, 6, "groups", 1)
    if not isinstance(groups, int):
        return  # groups computed in forward (a per-sample conv over the batch): default-deny
    ctx.couple(x, 0, node, 0)
    _block_spatial(ctx, x, "conv")
    _block_spatial(ctx, node, "conv")
    for d in range(2, len(tensor_shape(w))):
        ctx.block(w, d, "kernel dim of a computed weight")
    ctx.consume(x, 1)
    if groups == 1:
        ctx.couple(x, 1, w, 1)
    else:
        ctx.block(w, 1, "one group's inputs in a grouped conv's computed weight (whole groups go instead)")
        _couple_whole_groups(ctx, x, node, tensor_shape(x)[1], tensor_shape(node)[1], groups)
    ctx.couple(w, 0, node, 1)
    ctx.produce(node, 1)
    bias = arg(node, 2, "bias")
    if bias is not None:
        ctx.couple(bias, 0, node, 1)


@shrink_rule(*_ATEN_CONVS)
def shrink_computed_weight_conv(node, cc) -> None:
    """The weight and bias are sliced where they are made; a grouped conv that lost whole groups
    is told how many are left."""
    groups = arg(node, 6, "groups", 1)
    if not isinstance(groups, int) or groups == 1 or not cc.changed(node, 1):
        return
    left = _groups_left(cc.new_size(node, 1), tensor_shape(node)[1], groups)
    if len(node.args) > 6:
        node.args = (*node.args[:6], left, *node.args[7:])
    else:
        node.kwargs = {**node.kwargs, "groups": left}


def _param(t: torch.Tensor, like: nn.Parameter) -> nn.Parameter:
    """``t`` as a parameter like ``like``; ``t`` is a slice by an index tensor, a fresh copy
    already (advanced indexing never returns a view), so it is not copied again."""
    return nn.Parameter(t.detach(), requires_grad=like.requires_grad)


def _copy_sharing(m: nn.Module, *replaced: str) -> nn.Module:
    """A deep copy of ``m`` that shares, rather than copies, its own tensors named ``replaced``:
    the caller gives the copy sliced ones at once (a copy of every weight, only to be dropped)."""
    own = {**m._parameters, **m._buffers}
    return copy.deepcopy(m, {id(t): t for name in replaced if (t := own.get(name)) is not None})


def _set_weight(new: nn.Module, target: str, cc, slicer, keeps: list, ki=None, ko=None) -> None:
    """Give ``new`` its sliced weight; on a searched layer, slice the original and the search
    parameters instead (and record every slice for the optimizer)."""
    if parametrize.is_parametrized(new, "weight"):
        plist = new.parametrizations.weight
        plist.original = _param(slicer(plist.original), plist.original)
        cc.note(f"{target}.parametrizations.weight.original", keeps)
        for i, p in enumerate(plist):
            for name, k in p.select(ki, ko).items():
                cc.note(f"{target}.parametrizations.weight.{i}.{name}", k)
    else:
        new.weight = _param(slicer(new.weight), new.weight)
        cc.note(f"{target}.weight", keeps)


def _index(keep, size: int) -> torch.Tensor:
    return torch.as_tensor(np.arange(size) if keep is None else keep, dtype=torch.long)


def _replace_sliced(node, cc, slicer, keeps: list, ki, ko, **sizes) -> None:
    """Replace ``node``'s layer by a copy with its weight sliced by ``slicer`` (``keeps`` per
    weight dim, for the optimizer), its bias by ``ko``, and the size attributes ``sizes``."""
    m = module(node)
    new = _copy_sharing(m, "weight", "bias")
    _set_weight(new, node.target, cc, slicer, keeps, ki, ko)
    if m.bias is not None:
        new.bias = _param(m.bias[ko], m.bias)
        cc.note(f"{node.target}.bias", [ko])
    for name, value in sizes.items():
        setattr(new, name, value)
    cc.replace_module(node, new)


@shrink_rule(*CONVS)
def shrink_conv(node, cc) -> None:
    m, x = module(node), node.args[0]
    keep_in, keep_out = cc.keep(x, 1), cc.keep(node, 1)
    if keep_in is None and keep_out is None:
        return
    ki, ko = _index(keep_in, m.in_channels), _index(keep_out, m.out_channels)
    transposed = isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d))
    sizes = {"in_channels": len(ki), "out_channels": len(ko)}
    if m.groups == 1:
        first, second = (ki, ko) if transposed else (ko, ki)
        _replace_sliced(node, cc, lambda w: w[first][:, second], [first, second], ki, ko, **sizes)
    else:  # whole groups go: per-group slices of the weight are unchanged
        first = ki if transposed else ko
        _replace_sliced(node, cc, lambda w: w[first], [first, None], ki, ko,
                        groups=_groups_left(len(ko), m.out_channels, m.groups), **sizes)


@analyse_rule(nn.Linear)
def linear(node, ctx) -> None:
    m, x = module(node), node.args[0]
    rank = len(tensor_shape(x))
    couple_same(ctx, x, node, flow=m.bias is None, skip=(rank - 1,))
    ctx.consume(x, -1)
    ctx.produce(node, -1)


@shrink_rule(nn.Linear)
def shrink_linear(node, cc) -> None:
    m, x = module(node), node.args[0]
    keep_in, keep_out = cc.keep(x, -1), cc.keep(node, -1)
    if keep_in is None and keep_out is None:
        return
    ki, ko = _index(keep_in, m.in_features), _index(keep_out, m.out_features)
    _replace_sliced(node, cc, lambda w: w[ko][:, ki], [ko, ki], ki, ko, in_features=len(ki), out_features=len(ko))


@analyse_rule(*BATCH_NORMS)
def batch_norm(node, ctx) -> None:
    couple_same(ctx, node.args[0], node, flow=False)  # per-channel statistics and affine


def _with_sliced_affine(node, cc, k: torch.Tensor) -> nn.Module:
    """A copy of ``node``'s norm with its per-channel weight and bias (if any) kept at ``k``."""
    m = module(node)
    new = _copy_sharing(m, "weight", "bias")
    for name in ("weight", "bias"):
        if getattr(m, name, None) is not None:
            setattr(new, name, _param(getattr(m, name)[k], getattr(m, name)))
            cc.note(f"{node.target}.{name}", [k])
    return new


@shrink_rule(*BATCH_NORMS)
def shrink_batch_norm(node, cc) -> None:
    m, keep = module(node), cc.keep(node, 1)
    if keep is None:
        return
    k = _index(keep, m.num_features)
    new = _with_sliced_affine(node, cc, k)
    for name in ("running_mean", "running_var"):
        if getattr(m, name, None) is not None:
            setattr(new, name, getattr(m, name)[k])  # a slice by an index tensor: a copy already
    new.num_features = len(k)
    cc.replace_module(node, new)


@shrink_rule(nn.GroupNorm)
def shrink_group_norm(node, cc) -> None:
    m, keep = module(node), cc.keep(node, 1)
    if keep is None:
        return
    k = _index(keep, m.num_channels)
    new = _with_sliced_affine(node, cc, k)
    new.num_groups = len(k) // (m.num_channels // m.num_groups)
    new.num_channels = len(k)
    cc.replace_module(node, new)


@analyse_rule(nn.Embedding)
def embedding(node, ctx) -> None:
    x = node.args[0]
    couple_same(ctx, x, node, flow=False)
    ctx.produce(node, -1)


@shrink_rule(nn.Embedding)
def shrink_embedding(node, cc) -> None:
    m, keep = module(node), cc.keep(node, -1)
    if keep is None:
        return
    new = _copy_sharing(m, "weight")
    new.weight = _param(m.weight[:, _index(keep, m.embedding_dim)], m.weight)
    cc.note(f"{node.target}.weight", [None, keep])
    new.embedding_dim = len(keep)
    cc.replace_module(node, new)


@analyse_rule(*POOLS, shrink=NA, **WEIGHTLESS)
def pool(node, ctx) -> None:
    x = node.args[0]
    what = getattr(node.target, "__name__", str(node.target))
    _block_spatial(ctx, x, what)
    _block_spatial(ctx, node, what)
    ctx.couple(x, 0, node, 0, flow=True)
    ctx.couple(x, 1, node, 1, flow=True)  # max/avg/resize of a zero channel is zero


@analyse_rule(F.pad, shrink=NA, **WEIGHTLESS)
def pad(node, ctx) -> None:
    x, widths = node.args[0], node.args[1]
    rank = len(tensor_shape(x))
    padded = {rank - 1 - i // 2 for i, w in enumerate(widths) if not (isinstance(w, int) and w == 0)}  # (0, 0): untouched
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
    for d in padded:
        ctx.block(x, d, "padded dim")
        ctx.block(node, d, "padded dim")
    if mode == "constant" and value is not None and not math.isfinite(value):
        # timm's "same" max pool pads with -inf: a gate after the pad would give -inf * 0 = NaN
        for d in set(range(rank)) - padded:
            ctx.block(x, d, f"padded with {value}: a closed gate on it would multiply {value} by 0")
    couple_same(ctx, x, node, flow=mode == "constant" and not value, skip=padded)


def _channelwise_conv(node) -> bool:
    """A plain or depthwise conv: reordering channels reorders its weight's rows and columns."""
    m = module(node)
    return m.groups == 1 or m.groups == m.in_channels == m.out_channels


permutation_rule(*CONVS, when=_channelwise_conv)
permutation_rule(nn.Linear, *BATCH_NORMS, nn.Embedding, *POOLS, F.pad)
declare(*POOLS, scale_commutes=True)  # each channel is pooled (or resampled) on its own, linearly or by max
