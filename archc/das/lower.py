"""Compaction of the search parameters: bake, drop unread channels, crop kernels, lower groups.

Order inside ``archc.compact`` (``fold=True``):

1. ``bake``: every parametrized layer gets a plain weight ``W * mask * beta``; P and S of a
   grouped search are kept aside (``W * (P @ S)`` is produced by lowering instead).
2. ``dead_by_selection``: a channel that every consumer reads with a zero weight column
   (beta = 0 everywhere) is dead for its producer too, and goes with its whole group.
3. after the channel compaction, ``lower``: a channel dropped by only some consumers is
   removed from just those (gathering the kept input channels); kernels are cropped to
   their non-zero taps; P/S become real grouped convolutions (or an exact pattern form).

Example:
    >>> infos = bake(gm)             # before the channel analysis
    >>> report = lower(gm, infos, cc)  # after shrinking and folding
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from ..meta import tensor_shape
from .crop import crop_kernels
from .grouped_lowering import Emitter, describe_patterns, lower_grouped_conv
from .params import ChannelSelect, Connectivity, KernelMask


@dataclass
class SearchInfo:
    """What search parameters one layer had, kept across baking."""

    kernel: Optional[tuple] = None          # the kernel size before cropping
    select: bool = False
    grouped: Optional[tuple] = None          # (P, S), thresholded
    calls: list[str] = field(default_factory=list)


def bake(gm: fx.GraphModule) -> dict[str, SearchInfo]:
    """Replace every search parametrization by a plain weight (mutates); returns what each layer had."""
    calls: dict[str, list[str]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node.name)
    infos = {}
    for target, names in calls.items():
        m = gm.get_submodule(target)
        if not parametrize.is_parametrized(m, "weight"):
            continue
        plist = m.parametrizations.weight
        info = SearchInfo(calls=names)
        w = plist.original.detach()
        for p in plist:
            if isinstance(p, Connectivity) and len(names) == 1:
                info.grouped = tuple(f.detach().clone() for f in p.factors())
                continue
            w = p(w).detach()
            info.kernel = tuple(m.kernel_size) if isinstance(p, KernelMask) else info.kernel
            info.select |= isinstance(p, ChannelSelect)
        owner, _, attr = target.rpartition(".")
        setattr(gm.get_submodule(owner) if owner else gm, attr, _plain_copy(m, w))
        infos[target] = info
    return infos


def _plain_copy(m: nn.Module, weight: torch.Tensor) -> nn.Module:
    """``m`` as its plain class with ``weight``. (``remove_parametrizations`` would edit the
    parametrized *class*, which deep copies share: it would break the reference model.)"""
    base = type(m).__bases__[0]
    plain = base.__new__(base)
    plain.__dict__.update({k: (v.copy() if isinstance(v, dict) else v) for k, v in m.__dict__.items()})
    plain._modules.pop("parametrizations", None)
    plain._parameters["weight"] = nn.Parameter(weight.clone())
    return plain


def _input_dim(m: nn.Module) -> int:
    return -1 if isinstance(m, nn.Linear) else 1


def _zero_columns(m: nn.Module) -> torch.Tensor:
    w = m.weight.detach()
    dims = [d for d in range(w.dim()) if d != 1]
    return (w.abs().sum(dim=dims) == 0) if w.dim() > 1 else torch.zeros(0, dtype=torch.bool)


def _unread_inputs(m: nn.Module, info: SearchInfo) -> torch.Tensor:
    """Input channels this layer reads with zero weight: a zero column of the baked weight,
    or (grouped search) a row of P outside every pattern that reaches an output."""
    unread = _zero_columns(m) if info.select else torch.zeros(m.weight.shape[1], dtype=torch.bool)
    if info.grouped is not None:
        P, S = info.grouped
        unread |= ~(P[:, S.abs().sum(1) > 0] != 0).any(1)
    return unread


def _searches_inputs(gm: fx.GraphModule, node: fx.Node, info: Optional[SearchInfo]) -> bool:
    """Whether ``node`` calls a layer whose input channels were searched (by beta, or by P and S)."""
    if info is None or not (info.select or info.grouped is not None):
        return False
    return getattr(gm.get_submodule(node.target), "groups", 1) == 1


def dead_by_selection(gm: fx.GraphModule, an, infos: dict[str, SearchInfo], groups: list) -> set[int]:
    """Components of prunable ``groups`` (``channel_groups(an)``) that every consumer reads with
    an all-zero weight column.
    A component outside every group (a size-1 flatten that no rule could align with a channel)
    has no producer to shrink with it: its readers keep it, reading zeros."""
    nodes = {n.name: n for n in gm.graph.nodes}
    read, consumed = set(), set()
    for key in an.consumed:
        labels = an.labels_of(key)
        for name in an.consumers.get(key, ()):
            node = nodes[name]
            reads = np.ones(len(labels), dtype=bool)
            info = infos.get(node.target) if node.op == "call_module" else None
            if _searches_inputs(gm, node, info):
                reads = ~_unread_inputs(gm.get_submodule(node.target), info).numpy()
            read |= set(labels[reads].tolist())
            consumed |= set(labels.tolist())
    removable = {int(c) for g in groups if g.prunable for c in g.components}
    return (consumed - read) & removable


def _drop_unread_inputs(gm: fx.GraphModule, node: fx.Node, info: SearchInfo) -> int:
    """Remove, from this consumer only, the input channels it reads with zero weights."""
    m = gm.get_submodule(node.target)
    zero = _unread_inputs(m, info)
    if not zero.any() or getattr(m, "groups", 1) != 1:
        return 0
    keep = (~zero).nonzero().flatten()
    if not len(keep):  # it reads nothing: one (zero-weight) input keeps the layer's output shape
        keep, zero = keep.new_zeros(1), torch.cat([zero.new_zeros(1), zero[1:]])
    x = node.args[0]
    dim = _input_dim(m) % len(tensor_shape(x))
    node.args = (Emitter(gm, node).select(x, keep.tolist(), "_inputs", dim), *node.args[1:])
    m.weight = nn.Parameter(m.weight.detach()[:, keep].clone())
    if isinstance(m, nn.Linear):
        m.in_features = len(keep)
    else:
        m.in_channels = len(keep)
    if info.grouped is not None:
        info.grouped = (info.grouped[0][keep], info.grouped[1])
    return int(zero.sum())


def slice_grouped(gm: fx.GraphModule, infos: dict[str, SearchInfo], cc) -> None:
    """Channels removed by compaction leave P (rows) and S (columns) too: call before folding."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for info in infos.values():
        if info.grouped is not None and len(info.calls) == 1:
            node = nodes[info.calls[0]]
            ki, ko = cc.keep(node.args[0], 1), cc.keep(node, 1)
            P, S = info.grouped
            info.grouped = (P if ki is None else P[torch.as_tensor(ki)], S if ko is None else S[:, torch.as_tensor(ko)])


def lower(gm: fx.GraphModule, infos: dict[str, SearchInfo]) -> dict[str, dict]:
    """After channel compaction and folding: per-consumer drops, kernel crops, grouped convs."""
    report: dict[str, dict] = {}
    nodes = {n.name: n for n in gm.graph.nodes}
    for target, info in infos.items():
        node = nodes.get(info.calls[0]) if len(info.calls) == 1 else None
        entry = report.setdefault(target, {})
        if node is not None and _searches_inputs(gm, node, info):
            entry["inputs_dropped_here"] = _drop_unread_inputs(gm, node, info)
    cropped = crop_kernels(gm)
    for target, info in infos.items():
        if info.kernel is not None:
            report[target]["kernel"] = [list(info.kernel), list(cropped.get(target, (info.kernel, info.kernel))[1])]
        node = nodes.get(info.calls[0]) if len(info.calls) == 1 else None
        if info.grouped is not None and node is not None:
            report[target]["patterns"] = describe_patterns(*info.grouped)
            report[target]["width"] = gm.get_submodule(node.target).out_channels  # the module is renamed below
            report[target]["grouped"] = lower_grouped_conv(gm, node, *info.grouped)
    gm.graph.lint()
    gm.recompile()
    return report
