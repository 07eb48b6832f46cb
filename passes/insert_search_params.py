"""Passes: add the differentiable-architecture-search parameters to a graph's layers.

Each pass registers a weight parametrization on the layer modules of ``gm`` (mutating
them) and returns ``gm``; the graph itself is unchanged, so every channel rule still sees a
plain ``nn.Conv2d`` or ``nn.Linear``.

Example:
    >>> gm = archc.passes.insert_kernel_masks(archc.trace(model, (x,)))
    >>> [m.sizes[:3] for m in archc.kernel_masks(gm)]
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from archc.das.grouped_lowering import LOWERABLE_CONVS
from archc.das.params import GROUPED_FORMS, ChannelSelect, Connectivity, KernelMask

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _called_layers(gm: fx.GraphModule, types: tuple) -> Iterator[nn.Module]:
    seen: set[int] = set()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            if isinstance(m, types) and id(m) not in seen:
                seen.add(id(m))
                yield m


def _has(m: nn.Module, kind: type) -> bool:
    plist = getattr(getattr(m, "parametrizations", None), "weight", None)
    return any(isinstance(p, kind) for p in plist or ())


def insert_kernel_masks(gm: fx.GraphModule, sizes: Optional[Sequence[Sequence[int]]] = None) -> fx.GraphModule:
    """A KernelMask on every convolution with a kernel larger than 1 (mutates ``gm``).

    ``sizes``: the candidate sizes; by default every size up to the layer's own, heights and
    widths chosen independently (a 5x5 conv gets 25 candidates, 4x5 and 5x4 among them).
    """
    for conv in _called_layers(gm, _CONVS):
        if max(conv.kernel_size) > 1 and not _has(conv, KernelMask) and conv.padding_mode == "zeros":
            fitting = [s for s in sizes if all(a <= k for a, k in zip(s, conv.kernel_size))] if sizes else None
            parametrize.register_parametrization(conv, "weight", KernelMask(conv.kernel_size, fitting))
    return gm


def insert_channel_select(gm: fx.GraphModule, use_sparsemax: bool = False) -> fx.GraphModule:
    """A ChannelSelect on the input channels of every ungrouped conv and linear (mutates ``gm``)."""
    for layer in _called_layers(gm, (*_CONVS, nn.Linear)):
        if getattr(layer, "groups", 1) == 1 and not _has(layer, ChannelSelect):
            width = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels
            parametrize.register_parametrization(layer, "weight", ChannelSelect(width, use_sparsemax))
    return gm


def insert_grouped(gm: fx.GraphModule, patterns: int = 4, init: str = "random", form: str = "lasso") -> fx.GraphModule:
    """A grouped-conv search with ``patterns`` patterns on every ungrouped 1-d or 2-d conv (mutates ``gm``).

    ``form="lasso"``: free ``P`` and ``S`` (GroupedConnectivity, Shin et al.'s group and
    exclusive lasso); ``"assign"``: each channel's sparsemax distribution over the patterns
    (PatternAssignment). ``init="partition"`` starts each conv near a grouped conv (every
    channel mostly in one pattern); ``"random"`` starts it dense on average.
    """
    if form not in GROUPED_FORMS:
        raise ValueError(f"form must be one of {tuple(GROUPED_FORMS)}, got {form!r}")
    for conv in _called_layers(gm, LOWERABLE_CONVS):  # (compaction lowers 1-d and 2-d convs)
        if conv.groups == 1 and not _has(conv, Connectivity):
            grouped = GROUPED_FORMS[form](conv.in_channels, conv.out_channels, patterns, init)
            parametrize.register_parametrization(conv, "weight", grouped)
    return gm
