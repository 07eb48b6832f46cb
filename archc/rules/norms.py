"""Norms whose statistics span channels: LayerNorm, RMSNorm (plain and live), functional norms.

A plain LayerNorm/RMSNorm over the last dim mixes that dim's channels through its statistics
(``consume``), like a linear layer does: its input's removed channels must carry zero, and
the gated model computes the statistics over open channels only (:mod:`archc.live_norms`,
made by ``insert_filters``), so removing the closed ones changes nothing. A norm over several
dims, a norm without a live form, and a plain norm in a model already gated (whose
statistics still count every channel) keep their normalised dims whole.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..live_norms import LIVE_NORMS, LiveReduction, can_live, live_dim
from ..meta import tensor_shape
from . import NA, WEIGHTLESS, analyse_rule, shrink_rule
from ._util import couple_same, live_statistics, module
from .layers import FUNCTIONAL_NORMS, STAT_NORMS, _index, _with_sliced_affine


def _block_statistics(ctx, node, x, normalised: set[int], name: str) -> None:
    reason = f"{name} statistics span this dim: removing channels would change them"
    for d in normalised:
        ctx.block(x, d, reason)
        ctx.block(node, d, reason)
    couple_same(ctx, x, node, flow=False, skip=normalised)


def _live_channels(ctx, node, m) -> None:
    """The normalised channels (``live_dim``) go with the output's and the statistics mix them;
    a GroupNorm's positions stay whole."""
    x = node.args[0]
    rank = len(tensor_shape(x))
    dim = live_dim(m, rank)
    ctx.couple(x, dim, node, dim)  # a zero channel comes out as the bias, not zero
    ctx.consume(x, dim)
    positions = set(range(2, rank)) if isinstance(m, nn.GroupNorm) else set()
    _block_statistics(ctx, node, x, positions, type(m).__name__)


@analyse_rule(*STAT_NORMS, permutes=NA)
def statistics_norm(node, ctx) -> None:
    m, x = module(node), node.args[0]
    rank = len(tensor_shape(x))
    if can_live(m) and not ctx.gated:
        _live_channels(ctx, node, m)
    else:
        _block_statistics(ctx, node, x, set(range(rank - len(m.normalized_shape), rank)), type(m).__name__)


@analyse_rule(*LIVE_NORMS, permutes=NA)
def live_norm(node, ctx) -> None:
    _live_channels(ctx, node, module(node))
    for theta in node.args[1:]:
        ctx.handle(theta, 0)  # a gate's parameter: read for its open entries, not a channel


@analyse_rule(nn.GroupNorm, permutes=NA)
def group_norm(node, ctx) -> None:
    """Statistics are per norm group: whole norm groups can go, single channels cannot; with
    one group the norm has a live form (its channels go like a LayerNorm's)."""
    m, x = module(node), node.args[0]
    if can_live(m) and not ctx.gated:
        _live_channels(ctx, node, m)
        return
    per = m.num_channels // m.num_groups
    ctx.couple(x, 1, node, 1)
    ctx.couple(node, 1, node, 1, np.arange(m.num_channels), np.arange(m.num_channels) // per * per)
    ctx.couple(x, 0, node, 0)
    _block_statistics(ctx, node, x, set(range(2, len(tensor_shape(x)))), "GroupNorm")


@shrink_rule(*STAT_NORMS, *LIVE_NORMS)
def shrink_statistics_norm(node, cc) -> None:
    m = module(node)
    dim = live_dim(m, len(tensor_shape(node)))
    keep = cc.keep(node, dim)
    if keep is None:
        return
    k = _index(keep, m.live_index.shape[1] if isinstance(m, LIVE_NORMS) else m.normalized_shape[0])
    new = _with_sliced_affine(node, cc, k)
    if isinstance(m, nn.GroupNorm):
        new.num_channels = len(k)
    else:
        new.normalized_shape = (len(k),)
    if isinstance(m, LIVE_NORMS):
        new.live_index = m.live_index[:, k].clone()
    cc.replace_module(node, new)


@analyse_rule(*FUNCTIONAL_NORMS, shrink=NA, permutes=NA, **WEIGHTLESS)
def functional_norm(node, ctx) -> None:
    """A norm without its own affine parameters (captured as an ATen call)."""
    x = node.args[0]
    rank = len(tensor_shape(x))
    if node.target is torch.ops.aten.group_norm.default:
        normalised = set(range(1, rank))
    else:
        normalised = set(range(rank - len(node.args[1]), rank))
    _block_statistics(ctx, node, x, normalised, node.target.__name__)


@analyse_rule(LiveReduction, permutes=NA, **WEIGHTLESS)
def live_reduction(node, ctx) -> None:
    """Statistics over the open channels of one dim; the other dims go with the output's."""
    m, x = module(node), node.args[0]
    rank = len(tensor_shape(x))
    dim, out = m.dim % rank, 0
    live_statistics(ctx, x, dim)
    for d in range(rank):
        if d != dim:
            ctx.couple(x, d, node, out, flow=True)
        elif m.keepdim:
            ctx.handle(node, out)
        out += d != dim or m.keepdim
    for theta in node.args[1:]:
        ctx.handle(theta, 0)


@shrink_rule(LiveReduction)
def shrink_live_reduction(node, cc) -> None:
    m = module(node)
    keep = cc.keep(node.args[0], m.dim % len(tensor_shape(node.args[0])))
    if keep is None:
        return
    index = m.live_index[:, _index(keep, m.live_index.shape[1])]
    cc.replace_module(node, LiveReduction(m.op, m.dim, m.keepdim, m.correction, index, m.dtype))
