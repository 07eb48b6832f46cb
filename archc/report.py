"""What archc found in a model: groups, their sizes and layers, what cannot be pruned and why.

Example:
    >>> rep = archc.report(archc.trace(model, (x,)))
    >>> rep.prunable_channels, rep.params, rep.flops
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Optional

import torch.fx as fx

from . import flops as _flops
from .depgraph import analyse
from .filters import Filter
from .groups import channel_groups


@dataclass
class GroupRow:
    """One channel group as shown to a user."""

    id: int
    size: int
    prunable: bool
    layers: list[str]
    reason: Optional[str] = None


@dataclass
class Report:
    """Summary of a traced model's channel structure."""

    params: int
    flops: int
    groups: list[GroupRow]
    unprunable: list[tuple[str, str]]

    @property
    def prunable_channels(self) -> int:
        return sum(g.size for g in self.groups if g.prunable)

    @property
    def total_channels(self) -> int:
        return sum(g.size for g in self.groups)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(prunable_channels=self.prunable_channels, total_channels=self.total_channels)
        return out


def _layer_names(gm: fx.GraphModule, names: list[str]) -> list[str]:
    """Module paths (``layer1.0.conv1``) for module calls and parameters, op names otherwise."""
    nodes = {n.name: n for n in gm.graph.nodes}
    layers = []
    for name in names:
        node = nodes[name]
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), Filter):
            continue
        if node.op in ("call_module", "get_attr"):
            layers.append(node.target)
        layers += [u.target for u in node.users if u.op == "call_module"  # consumers (conv inputs)
                   and not isinstance(gm.get_submodule(u.target), Filter)]
    return list(dict.fromkeys(layers)) or names


def report(gm: fx.GraphModule) -> Report:
    """Groups, unprunable channels with reasons, parameters and FLOPs of a traced model."""
    an = analyse(gm)
    groups = channel_groups(an)
    rows = [GroupRow(g.id, g.size, g.prunable, _layer_names(gm, g.layers()), g.reason) for g in groups]
    reasons = Counter(g.reason for g in groups if not g.prunable)
    unprunable = [(f"{n} group(s)", r) for r, n in reasons.most_common()]
    unprunable += [(name, why) for name, why in an.unknown_ops.items()]
    params = sum(p.numel() for p in gm.parameters())
    return Report(params=params, flops=_flops.count(gm), groups=rows, unprunable=unprunable)
