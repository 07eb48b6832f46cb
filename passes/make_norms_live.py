"""Pass: norms over gated channels take their statistics over open channels only.

Two kinds of statistics become live (:mod:`archc.live_norms`): norm layers (LayerNorm,
RMSNorm, one-group GroupNorm) and the reductions of a norm written by hand (``torch.mean``,
``var`` or ``std`` over one channel dim).
"""
from __future__ import annotations

import torch
import torch.fx as fx

from archc.analysis import SpaceKey
from archc.groups import ChannelGroup
from archc.live_norms import LIVE_OF, can_live, live_dim, live_reduction, reduced_channel_dim
from archc.meta import DTYPE, SHAPE, tensor_shape


def norm_inputs(gm: fx.GraphModule) -> dict[fx.Node, SpaceKey]:
    """Each norm with a live form, and each mean/var/std over one dim -> the space of the
    channels whose statistics it takes (a norm's input's last dim, dim 1 for a GroupNorm).

    Read before gates are inserted: a gate put in front of the norm keeps the channel layout.
    """
    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and can_live(gm.get_submodule(node.target)):
            x = node.args[0]
            out[node] = (x.name, live_dim(gm.get_submodule(node.target), len(tensor_shape(x))))
        elif (dim := reduced_channel_dim(node)) is not None:
            out[node] = (node.args[0].name, dim)
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
        if node.op == "call_module":
            owner, _, attr = node.target.rpartition(".")
            holder = gm.get_submodule(owner) if owner else gm
            setattr(holder, attr, LIVE_OF[type(getattr(holder, attr))].of(getattr(holder, attr), index))
        else:
            node = _call_live_reduction(gm, node, index)
        thetas = []
        with gm.graph.inserting_before(node):
            for name, g in covering:
                theta = gm.graph.get_attr(f"{name}.theta")
                theta.meta[SHAPE], theta.meta[DTYPE] = (g.size,), gm.get_submodule(name).theta.dtype
                thetas.append(theta)
        node.args = (node.args[0], *thetas)
    return gm


def _call_live_reduction(gm: fx.GraphModule, node: fx.Node, index: torch.Tensor) -> fx.Node:
    """Replace the reduction ``node`` by a call of its live form, a new submodule."""
    name, k = f"{node.name}_live", 0
    while hasattr(gm, name):
        k += 1
        name = f"{node.name}_live{k}"
    gm.add_submodule(name, live_reduction(node, index))
    with gm.graph.inserting_before(node):
        call = gm.graph.call_module(name, (node.args[0],))
    call.meta = dict(node.meta)
    node.replace_all_uses_with(call)
    gm.graph.erase_node(node)
    return call
