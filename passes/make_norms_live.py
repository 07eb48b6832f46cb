"""Pass: LayerNorm/RMSNorm over gated channels take their statistics over open channels only."""
from __future__ import annotations

import torch
import torch.fx as fx

from archc.analysis import SpaceKey
from archc.groups import ChannelGroup
from archc.live_norms import LIVE_OF, can_live, live_dim
from archc.meta import DTYPE, SHAPE, tensor_shape


def norm_inputs(gm: fx.GraphModule) -> dict[fx.Node, SpaceKey]:
    """Each norm with a live form -> the space of its normalised channels (its input's last dim,
    dim 1 for a GroupNorm).

    Read before gates are inserted: a gate put in front of the norm keeps the channel layout.
    """
    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and can_live(gm.get_submodule(node.target)):
            x = node.args[0]
            out[node] = (x.name, live_dim(gm.get_submodule(node.target), len(tensor_shape(x))))
    return out


def make_norms_live(gm: fx.GraphModule, norms: dict[fx.Node, SpaceKey],
                    gated: list[tuple[str, ChannelGroup]]) -> fx.GraphModule:
    """Give each norm in ``norms`` whose channels a gate of ``gated`` (``(gate name, group)``)
    covers its live form, reading those gates' ``theta``; returns ``gm`` (mutated).

    Example:
        >>> norms = norm_inputs(gm)   # before the gates go in
        >>> make_norms_live(gm, norms, [("filter0", group0)])
    """
    for node, key in norms.items():
        covering = [(name, g) for name, g in gated if key in g.spaces]
        if not covering:
            continue
        index = torch.stack([torch.as_tensor(g.index_in(key)) for _, g in covering])
        owner, _, attr = node.target.rpartition(".")
        holder = gm.get_submodule(owner) if owner else gm
        setattr(holder, attr, LIVE_OF[type(getattr(holder, attr))].of(getattr(holder, attr), index))
        thetas = []
        with gm.graph.inserting_before(node):
            for name, g in covering:
                theta = gm.graph.get_attr(f"{name}.theta")
                theta.meta[SHAPE], theta.meta[DTYPE] = (g.size,), gm.get_submodule(name).theta.dtype
                thetas.append(theta)
        node.args = (node.args[0], *thetas)
    return gm
