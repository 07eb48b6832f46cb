"""Run the per-op rules over a graph: ``analyse``, ``dependency_graph``.

Example:
    >>> gm = archc.trace(model, (x,))
    >>> g = archc.dependency_graph(gm)          # networkx graph over (node, dim) spaces
    >>> g.nodes["conv1", 1]["size"]
    64
"""
from __future__ import annotations

import logging
import os

import networkx as nx
import numpy as np
import torch.fx as fx
from torch import nn

from .analysis import Analysis
from .capture.install import resolve
from .meta import tensor_shape
from .rules import describe, fact, layer_fact

log = logging.getLogger(__name__)


def strict_rules() -> bool:
    """Whether a rule that raises is an error (tests set ``ARCHC_STRICT_RULES=1``) rather than
    an op that blocks its channels: a crashing rule is a bug, and strict mode keeps it visible."""
    return os.environ.get("ARCHC_STRICT_RULES") == "1"


def analyse(gm: fx.GraphModule) -> Analysis:
    """Apply every op's rule to ``gm`` (not mutated) and compute the channel components.

    A reshape into attention heads keeps whole heads prunable; where those heads come out
    blocked anyway, the analysis runs again with that reshape keeping its largest factor
    (the head dim), until no such reshape is left (a few runs at most).
    """
    fallback: frozenset = frozenset()
    for _ in range(len(gm.graph.nodes) + 1):
        ctx = _analyse_once(gm, fallback)
        blocked = ctx.blocked_components()
        stuck = {name for name, key in ctx.head_factors.items()
                 if all(int(c) in blocked for c in ctx.labels_of(key))}
        if not stuck:
            return ctx
        fallback |= stuck
    return ctx


def _analyse_once(gm: fx.GraphModule, largest_factor_at: frozenset) -> Analysis:
    ctx = Analysis(gm, largest_factor_at=largest_factor_at)
    for node in gm.graph.nodes:
        if not _touches_tensors(node):
            continue  # arithmetic on sizes: compaction re-derives or freezes these values
        ctx.begin(node)
        rule = fact(node, gm, "analyse")
        reason = None
        if rule is None:
            reason = f"no channel rule for {describe(node)}"
        else:
            try:
                rule(node, ctx)
            except Exception as exc:  # a rule that cannot read this call must not guess
                if strict_rules():
                    raise
                log.debug("rule for %s failed", node.format_node(), exc_info=True)
                reason = f"the rule for {describe(node)} could not read this call ({exc})"
                ctx._handled.clear()
        if reason:
            ctx.unknown_ops[node.name] = reason
        _deny_unhandled(ctx, node, reason or f"{describe(node)} does not say how this dim is used")
    _couple_shared_modules(ctx, gm)
    _couple_shared_parameters(ctx, gm)
    ctx.finish()
    return ctx


def _couple_shared_modules(ctx: Analysis, gm: fx.GraphModule) -> None:
    """A module called at several places has one set of weights: its channels go together."""
    from .filters import Filter

    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(node.target)
        stateless = next(m.parameters(), None) is None and next(m.buffers(), None) is None
        if not stateless and not isinstance(m, Filter):  # a reused ReLU shares nothing
            calls.setdefault(node.target, []).append(node)
    for nodes in calls.values():
        first = nodes[0]
        for other in nodes[1:]:
            for a, b in ((first, other), (first.args[0], other.args[0])):
                sa, sb = tensor_shape(a), tensor_shape(b)
                if sa is None or sb is None or len(sa) != len(sb):
                    ctx.block_all(a, "module called at several places with different shapes")
                    continue
                for d in range(len(sa)):
                    if sa[d] == sb[d]:
                        ctx.couple(a, d, b, d)
                    else:
                        ctx.block(a, d, "module called at several places"), ctx.block(b, d, "module called at several places")


def _couple_shared_parameters(ctx: Analysis, gm: fx.GraphModule) -> None:
    """A parameter that several layers hold (an embedding tied to the output layer) stays one
    parameter: each of its dims is one set of channels in every layer that holds it, so the
    spaces it makes or is read through are coupled. A dim some holder cannot slice (the
    embedding's vocabulary rows) keeps its channels whole everywhere."""
    for target, holders in shared_parameters(gm).items():
        rank = gm.get_parameter(target).dim()
        for pdim in range(rank):
            spaces = [_space_of_parameter_dim(gm, node, name, pdim) for node, name in holders]
            mapped = [sp for sp in spaces if sp is not None]
            for (a, da), (b, db) in zip(mapped, mapped[1:]):
                ctx.couple(a, da, b, db)
            if len(mapped) < len(spaces):
                for node, d in mapped:
                    ctx.block(node, d, f"{target} is shared by layers that cannot all remove dim {pdim} of it")


def shared_parameters(gm: fx.GraphModule) -> dict[str, list[tuple[fx.Node, str]]]:
    """Parameter (by its first name) -> every ``(node, attribute)`` holding it, where more
    than one layer or direct read does; gates are not layers."""
    from .filters import Filter

    names = {id(p): name for name, p in gm.named_parameters()}
    holders: dict[str, list[tuple[fx.Node, str]]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and not isinstance(gm.get_submodule(node.target), Filter):
            for attr, p in gm.get_submodule(node.target).named_parameters(recurse=False):
                holders.setdefault(names[id(p)], []).append((node, attr))
        elif node.op == "get_attr" and isinstance(p := resolve(gm, node.target), nn.Parameter) and id(p) in names:
            if not isinstance(gm.get_submodule(node.target.rpartition(".")[0]), Filter):
                holders.setdefault(names[id(p)], []).append((node, ""))
    return {t: h for t, h in holders.items() if len({(n.target, a) for n, a in h}) > 1}


def _space_of_parameter_dim(gm, node: fx.Node, attr: str, pdim: int):
    """The ``(node, dim)`` whose channels index ``pdim`` of the parameter ``node`` holds as
    ``attr`` (a direct read: the node's own dim), or None when no rule slices that dim."""
    if node.op == "get_attr":
        return node, pdim
    layer = gm.get_submodule(node.target)
    channel_dim = layer_fact(layer, "channel_dim")
    if channel_dim is None:
        return None
    if (attr, pdim) in (layer_fact(layer, "makes") or ()):
        return node, channel_dim(len(tensor_shape(node)))
    reads = layer_fact(layer, "reads")
    x = node.args[0] if node.args else None
    if reads is not None and (attr, pdim) in reads(layer) and tensor_shape(x) is not None:
        return x, channel_dim(len(tensor_shape(x)))
    return None


def _touches_tensors(node: fx.Node) -> bool:
    return tensor_shape(node) is not None or node.op == "output" or any(
        tensor_shape(n) is not None for n in node.all_input_nodes
    )


def _deny_unhandled(ctx: Analysis, node: fx.Node, reason: str) -> None:
    """Block every dim of ``node``'s inputs and output that its rule did not describe."""
    for inp in node.all_input_nodes:
        for d in ctx.unhandled(inp):
            ctx.block(inp, d, reason)
    if node.name not in ctx.described_by_producer and node.op != "output":
        for d in ctx.unhandled(node):
            ctx.block(node, d, reason)


def dependency_graph(gm: fx.GraphModule) -> nx.Graph:
    """A networkx graph whose nodes are channel spaces ``(node name, dim)``.

    Node attributes: ``size``, ``blocked`` (number of atoms that can never be removed),
    ``producer`` and ``consumed`` flags. Two spaces are joined when some of their channels
    must be removed together; the edge's ``pairs`` counts the coupled channel pairs and
    ``flow`` tells whether a zero channel stays zero from one to the other.
    """
    an = analyse(gm)
    g = nx.Graph()
    space_of_atom = _space_of_atom(an)
    keys = list(an.spaces)
    blocked = np.zeros(an.n_atoms, dtype=bool)
    blocked[list(an.blocked)] = True
    for i, (key, sp) in enumerate(an.spaces.items()):
        g.add_node(key, size=sp.size, blocked=int(blocked[sp.base : sp.base + sp.size].sum()),
                   producer=key in an.producers, consumed=key in an.consumed)
    flows = set(an.flows)
    for a, b in an.edges:
        sa, sb = space_of_atom[a], space_of_atom[b]
        for i, j in set(zip(sa.tolist(), sb.tolist())):
            if i == j:
                continue
            ka, kb = keys[i], keys[j]
            data = g.get_edge_data(ka, kb, {"pairs": 0})
            g.add_edge(ka, kb, pairs=data["pairs"] + int(((sa == i) & (sb == j)).sum()),
                       flow=(ka, kb) in flows or (kb, ka) in flows)
    return g


def _space_of_atom(an: Analysis) -> np.ndarray:
    sizes = np.fromiter((sp.size for sp in an.spaces.values()), dtype=np.int64, count=len(an.spaces))
    return np.repeat(np.arange(len(sizes)), sizes)
