"""Pass: add one ShrinkNets Filter gate per prunable channel group (mutates ``gm``)."""
from __future__ import annotations

import torch
import torch.fx as fx

from archc.depgraph import analyse
from archc.errors import ConfigError
from archc.filters import Filter
from archc.groups import channel_groups, gate_sites
from archc.meta import DTYPE, SHAPE

from .make_norms_live import make_norms_live, norm_inputs


def insert_filters(gm: fx.GraphModule, init: str = "uniform", *, split_channels: str = "heads",
                   grouped_queries: str = "kv") -> fx.GraphModule:
    """Gate every prunable channel group of ``gm`` with an ``archc.Filter``; returns ``gm``.

    Each group gets one Filter (``theta`` of the group's size) called at every place the
    group's channels are made and later mixed: after a producing layer, or after a norm or
    activation that does not map zero to zero. So ``theta[i] <= 0`` makes channel ``i`` zero
    everywhere it is read, and removing it changes no output. A LayerNorm/RMSNorm over gated
    channels takes its statistics over the open ones (:mod:`archc.live_norms`). Mutates ``gm``
    in place.

    Attention is pruned by whole heads; ``split_channels="largest"`` prunes the head dim
    uniformly across heads instead (recorded in ``gm.meta["archc.split_channels"]``, which
    every later analysis of ``gm`` reads). With grouped-query attention a key/value head goes
    with its query heads; ``grouped_queries="query"`` prunes query heads while every key/value
    head stays: query head ``r`` of each group goes at once, so the groups stay equal
    (``gm.meta["archc.grouped_queries"]``).

    Example:
        >>> gm = archc.passes.insert_filters(archc.trace(model, (x,)))
        >>> sum(f.size for f in archc.filters(gm))
    """
    if split_channels not in ("heads", "largest"):
        raise ConfigError(f"split_channels must be 'heads' or 'largest', got {split_channels!r}\n"
                          "  fix: insert_filters(gm, split_channels='heads')")
    if grouped_queries not in ("kv", "query"):
        raise ConfigError(f"grouped_queries must be 'kv' or 'query', got {grouped_queries!r}\n"
                          "  fix: insert_filters(gm, grouped_queries='query')")
    gm.meta["archc.split_channels"] = split_channels
    gm.meta["archc.grouped_queries"] = grouped_queries
    an = analyse(gm)
    sites = gate_sites(an)
    norms = norm_inputs(gm)
    gated = []
    nodes = {n.name: n for n in gm.graph.nodes}
    taken = {name for name, _ in gm.named_children()}
    for group in channel_groups(an):
        group_sites = [s for s in group.spaces if s in sites]
        if not group.prunable or not group_sites:
            continue
        gate, name = Filter(group.size, init=init), _free_name(taken, f"filter{group.id}")
        gm.add_submodule(name, gate)
        for key in group_sites:
            _gate_site(gm, nodes[key[0]], key[1], gate, name, torch.as_tensor(group.index_in(key)))
        gated.append((name, group))
    make_norms_live(gm, norms, gated)
    gm.graph.lint()
    gm.recompile()
    return gm


def _gate_site(gm, node: fx.Node, dim: int, gate: Filter, name: str, index: torch.Tensor) -> None:
    site = gate.add_site(dim, index)
    with gm.graph.inserting_after(node):
        call = gm.graph.call_module(name, (node, site))
    node.replace_all_uses_with(call, delete_user_cb=lambda user: user is not call)
    call.meta[SHAPE], call.meta[DTYPE] = node.meta.get(SHAPE), node.meta.get(DTYPE)


def _free_name(taken: set[str], base: str) -> str:
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    taken.add(name)
    return name
