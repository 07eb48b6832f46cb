"""What happens to the Filter gates at compaction: folded away, or shrunk to their survivors.

Folding (the final compact model): a gate right after a layer that is linear in its output
channel (conv, linear, an affine norm, an embedding, a parameter) is multiplied into that
layer's weights (a layer called at several places only when every call feeds the same gate
with the same scale, and then once). Anywhere else it becomes a plain multiply by a constant buffer: still
exact, still no Filter. Shrinking (during training): each gate keeps only the entries of
its surviving channels, so the search goes on with a smaller gated model.
"""
from __future__ import annotations

from collections import Counter
import torch
import torch.fx as fx
from torch import nn

from .filters import Filter, site_number
from .meta import DTYPE, SHAPE, tensor_shape
from .rules import layer_fact
from .rules.weights import scale_out_channels


def fold_filters(gm: fx.GraphModule, cc, unscaled: frozenset = frozenset()) -> None:
    """Replace every Filter call in ``gm`` by folded weights or a constant multiply (mutates);
    the layers at the paths in ``unscaled`` (holders of a tied parameter) take no gate."""
    calls = Counter(n.target for n in gm.graph.nodes if n.op in ("call_module", "get_attr"))
    # (module called at several places, gate) -> whether its shared weights took the gate
    shared_ok: dict[tuple[str, str], bool] = {}
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), Filter):
            continue
        x, dim, rank, scale = _site(gm, node, cc)
        replacement = x
        if calls[x.target] > 1:
            key = (x.target, node.target)
            if key not in shared_ok:  # decided, and folded, at the gate's first site after the module
                shared_ok[key] = _same_gate_after_every_call(gm, x.target, cc) and (
                    bool((scale == 1).all()) or _fold_into_producer(gm, x, dim, rank, scale))
            if not shared_ok[key]:
                replacement = _constant_multiply(gm, node, x, dim, rank, scale)
        elif not bool((scale == 1).all()) and (x.target in unscaled or not _fold_into_producer(gm, x, dim, rank, scale)):
            replacement = _constant_multiply(gm, node, x, dim, rank, scale)
        node.replace_all_uses_with(replacement)
        gm.graph.erase_node(node)


def _site(gm: fx.GraphModule, node: fx.Node, cc) -> tuple[fx.Node, int, int, torch.Tensor]:
    """A Filter call's input, gated dim, input rank and per-channel scale of its surviving channels."""
    gate: Filter = gm.get_submodule(node.target)
    site = site_number(node)
    x, rank = node.args[0], len(tensor_shape(node.args[0]))
    dim = gate.dims[site] % rank
    scale = gate.site_scale(site).detach()
    keep = cc.keep(node, dim)  # the gate's own space: x may be a node made by an earlier fold
    if keep is not None:
        scale = scale[torch.as_tensor(keep, dtype=torch.long)]
    return x, dim, rank, scale


def _same_gate_after_every_call(gm: fx.GraphModule, target, cc) -> bool:
    """Whether every call of the module ``target`` feeds only a site of one gate, with one scale:
    then its shared weights can carry the gate once for all calls."""
    calls = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == target]
    users = [next(iter(c.users)) for c in calls if len(c.users) == 1]
    if len(users) != len(calls) or any(u.op != "call_module" or not isinstance(gm.get_submodule(u.target), Filter)
                                       for u in users):
        return False
    scales = [_site(gm, u, cc)[3] for u in users]
    return len({u.target for u in users}) == 1 and all(torch.equal(scales[0], s) for s in scales[1:])


def _fold_into_producer(gm, x: fx.Node, dim: int, rank: int, scale: torch.Tensor) -> bool:
    if len(x.users) != 1:
        return False
    if x.op == "get_attr":
        owner, _, attr = x.target.rpartition(".")
        holder = gm.get_submodule(owner) if owner else gm
        scale_out_channels(getattr(holder, attr).data, dim, scale)
        return True
    if x.op != "call_module":
        return False
    m = gm.get_submodule(x.target)
    folder = layer_fact(m, "fold")
    return folder is not None and folder(m, dim, rank, scale)


def _constant_multiply(gm, node: fx.Node, x: fx.Node, dim: int, rank: int, scale: torch.Tensor) -> fx.Node:
    shape = [1] * rank
    shape[dim] = -1
    name = f"{x.name}_scale_dim{dim}"  # one buffer per gated tensor and dim: a gate may have several sites
    gm.register_buffer(name, scale.view(shape).clone())
    with gm.graph.inserting_before(node):
        const = gm.graph.get_attr(name)
        mul = gm.graph.call_function(torch.mul, (x, const))
    mul.meta[SHAPE], mul.meta[DTYPE] = x.meta.get(SHAPE), x.meta.get(DTYPE)
    return mul


def shrink_filters(gm: fx.GraphModule, cc) -> None:
    """Keep each Filter's surviving entries only, remapping every site's index (mutates)."""
    sites: dict[str, list[tuple[fx.Node, int]]] = {}
    thetas: dict[str, list[fx.Node]] = {}  # gate -> its theta read by live norms (get_attr nodes)
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), Filter):
            sites.setdefault(node.target, []).append((node, site_number(node)))
        elif node.op == "get_attr" and node.target.endswith(".theta"):
            thetas.setdefault(node.target.rpartition(".")[0], []).append(node)
    for name, calls in sites.items():
        gate: Filter = gm.get_submodule(name)
        kept_index = {}
        for node, site in calls:
            x = node.args[0]
            index = getattr(gate, f"index{site}")
            keep = cc.keep(node, gate.dims[site] % len(tensor_shape(x)))
            kept_index[site] = index if keep is None else index[torch.as_tensor(keep, dtype=torch.long)]
        alive = torch.unique(torch.cat(list(kept_index.values())))
        alive = alive[alive < gate.size]
        lookup = torch.full((gate.size + 1,), -1, dtype=torch.long)
        lookup[alive] = torch.arange(len(alive))
        lookup[gate.size] = len(alive)
        new = Filter(len(alive))
        new.theta = nn.Parameter(gate.theta.detach()[alive].clone(), requires_grad=gate.theta.requires_grad)
        for site in range(len(gate.dims)):
            index = kept_index.get(site, getattr(gate, f"index{site}"))
            new.add_site(gate.dims[site], lookup[index])
        cc.note(f"{name}.theta", [alive])
        cc.replace_module(calls[0][0], new)
        _remap_live_norms(gm, thetas.get(name, []), lookup)


def _remap_live_norms(gm: fx.GraphModule, thetas: list[fx.Node], lookup: torch.Tensor) -> None:
    """Live norms reading a gate's ``theta`` (the nodes ``thetas``) index its entries anew
    (``lookup``: old entry -> new)."""
    for node in thetas:
        for user in node.users:
            norm = gm.get_submodule(user.target)
            row = user.args.index(node) - 1
            norm.live_index[row] = lookup[norm.live_index[row]]
