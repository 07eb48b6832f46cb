"""The passes of a compaction, each ``pass_(c: Compaction) -> Compaction``.

A :class:`Compaction` carries the working copy of the gated model and what each pass found
(the channel analysis, the dead channels, the channel order, the searched layers), so a pass
reads its inputs from the passes before it and hands its result to the ones after; the two
pipelines in :mod:`archc.compact` are lists of these passes.

Example:
    >>> c = Compaction(copy.deepcopy(gated))
    >>> for p in (analyse_channels, find_dead_channels, shrink_ops, fold_gates, tidy):
    ...     c = p(c)
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.fx as fx

from .analysis import Analysis
from .block_gates import block_gate_sites
from .compact_context import CompactionContext
from .das import lower as das_lower
from .das import permute as das_permute
from .depgraph import analyse, shared_parameters
from .errors import CompactionError, node_error
from .filters import filter_sites
from .fold import fold_filters, shrink_filters
from .groups import channel_groups
from .live_norms import LIVE_NORMS, LiveReduction, live_mask, plain_norm
from .meta import VALUE, tensor_shape
from .rules import fact


@dataclass
class Compaction:
    """A compaction in progress, then its result: ``gm`` is the compact model once every pass ran."""

    gm: fx.GraphModule
    searched: dict = field(default_factory=dict)        # bake_search_params: layer -> what was searched
    analysis: Optional[Analysis] = None                  # analyse_channels
    dead: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # find_dead_channels
    plan: das_permute.PermutationPlan = field(default_factory=das_permute.PermutationPlan)  # plan_channel_order
    context: Optional[CompactionContext] = None          # shrink_ops: the surviving channels
    search_report: dict = field(default_factory=dict)    # lower_grouped_convs: what each layer became
    tied: list = field(default_factory=list)              # analyse_channels: (layer or get_attr target, attribute) holding one parameter
    removed_blocks: list = field(default_factory=list)    # remove_closed_blocks: the closed block gates

    @property
    def param_slices(self) -> dict[str, list]:
        """Parameter name -> the indices it kept along each dim (to slice optimizer state alike)."""
        return self.context.param_slices if self.context is not None else {}


def remove_closed_blocks(c: Compaction) -> Compaction:
    """A residual branch whose block gate is closed goes, with every layer only it used (its add
    becomes the skip input); an open block gate becomes a constant factor."""
    graph = c.gm.graph
    for node, gate in list(block_gate_sites(c.gm)):
        value = float(torch.relu(gate.theta.detach()))
        if value > 0:
            with graph.inserting_after(node):
                scaled = graph.call_function(operator.mul, (node.args[0], value))
            scaled.meta = dict(node.meta)
            node.replace_all_uses_with(scaled)
        else:
            for add in list(node.users):
                add.replace_all_uses_with(next(a for a in add.args if a is not node))
                graph.erase_node(add)
            c.removed_blocks.append(str(node.target))
        graph.erase_node(node)
    graph.eliminate_dead_code()
    c.gm.recompile()
    return c


def bake_search_params(c: Compaction) -> Compaction:
    """Bake kernel masks, input selections and connectivity into the searched layers' weights."""
    c.searched = das_lower.bake(c.gm)
    return c


def analyse_channels(c: Compaction) -> Compaction:
    c.analysis = analyse(c.gm)
    c.tied = [[(n.target, attr) for n, attr in holders] for holders in shared_parameters(c.gm).values()]
    return c


def find_dead_channels(c: Compaction) -> Compaction:
    """Channels of closed gates, and inputs no searched layer selects; one kept per group."""
    c.dead = _closed_gate_channels(c.gm, c.analysis)
    if c.searched:
        groups = channel_groups(c.analysis)
        by_selection = das_lower.dead_by_selection(c.gm, c.analysis, c.searched, groups)
        c.dead = _keep_one_per_group(groups, np.union1d(c.dead, np.array(sorted(by_selection), dtype=np.int64)))
    return c


def plan_channel_order(c: Compaction) -> Compaction:
    """Where grouped convs need their channels reordered (only when a search made them)."""
    if c.searched:
        c.plan = das_permute.plan_permutations(c.gm, c.analysis, c.searched, c.dead)
    return c


def shrink_ops(c: Compaction) -> Compaction:
    """Each op's shrink rule; a layer called at several places is shrunk at its first call."""
    c.context = CompactionContext(c.gm, c.analysis, c.dead, ranks=c.plan.ranks)
    shrunk: set[str] = set()
    for node in list(c.gm.graph.nodes):
        rule = fact(node, c.gm, "shrink")
        if rule is None or (node.op == "call_module" and node.target in shrunk):
            continue
        if node.op == "call_module":
            shrunk.add(node.target)
        try:
            rule(node, c.context)
        except Exception as exc:
            raise node_error(CompactionError, node, f"could not shrink this op: {exc}",
                             "report this model to archc with the node above") from exc
    return c


def freeze_stale_sizes(c: Compaction) -> Compaction:
    """Sizes computed from a pruned dim keep the value they had in the gated model."""
    gm, cc = c.gm, c.context
    for node in list(gm.graph.nodes):
        if VALUE in node.meta and node.users and cc.stale(node):
            value = node.meta[VALUE]
            for user in list(node.users):
                user.args = fx.node.map_arg(user.args, lambda n: value if n is node else n)
                user.kwargs = fx.node.map_arg(user.kwargs, lambda n: value if n is node else n)
    for node in reversed(list(gm.graph.nodes)):
        if not node.users and VALUE in node.meta and node.op not in ("placeholder", "output"):
            gm.graph.erase_node(node)
    return c


def slice_grouped_convs(c: Compaction) -> Compaction:
    das_lower.slice_grouped(c.gm, c.searched, c.context)
    return c


def fold_gates(c: Compaction) -> Compaction:
    """Multiply each gate into the layer that makes its channels (or a constant): no gate left.
    A tied parameter takes no gate: its other holders read it unscaled."""
    fold_filters(c.gm, c.context, unscaled=frozenset(target for holders in c.tied for target, _ in holders))
    return c


def retie_parameters(c: Compaction) -> Compaction:
    """A parameter several layers held is one parameter again: each holder sliced it alike."""
    for holders in c.tied:
        paths = [f"{target}.{attr}" if attr else target for target, attr in holders]
        owners = [(c.gm.get_submodule(p.rpartition(".")[0]), p.rpartition(".")[2]) for p in paths]
        values = [getattr(owner, attr) for owner, attr in owners]
        if any(v.shape != values[0].shape or not torch.equal(v, values[0]) for v in values[1:]):
            raise CompactionError(f"the tied parameter held at {paths} came out different in its holders; "
                                  "this is a gap in archc's rules.\n  fix: report this model to archc")
        for owner, attr in owners[1:]:
            setattr(owner, attr, values[0])
    return c


def shrink_gates(c: Compaction) -> Compaction:
    """Keep each gate, with its surviving entries only: the search trains on."""
    shrink_filters(c.gm, c.context)
    return c


def plain_norms(c: Compaction) -> Compaction:
    """Live norms become plain ones, and live reductions the torch call they were: every
    channel left is open, so their statistics agree."""
    gm = c.gm
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), (*LIVE_NORMS, LiveReduction)):
            continue
        owner, _, attr = node.target.rpartition(".")
        holder = gm.get_submodule(owner) if owner else gm
        live = getattr(holder, attr)
        thetas = tuple(gm.get_parameter(t.target) for t in node.args[1:])
        open_ = live_mask(thetas, live.live_index, torch.float32)
        if not (bool(open_.all()) or not bool(open_.any())):  # all closed: a kept channel of zeros
            raise node_error(CompactionError, node, "a closed channel of this norm's statistics was kept",
                             "report this model to archc with the node above")
        thetas, node.args = node.args[1:], node.args[:1]
        if isinstance(live, LiveReduction):
            _plain_reduction(gm, node, live)
            delattr(holder, attr)
        else:
            setattr(holder, attr, plain_norm(live))
        for theta in thetas:
            if not theta.users:
                gm.graph.erase_node(theta)
    return c


def _plain_reduction(gm: fx.GraphModule, node: fx.Node, live: LiveReduction) -> None:
    function, args, kwargs = live.plain_call()
    with gm.graph.inserting_before(node):
        plain = gm.graph.call_function(function, (node.args[0], *args), kwargs)
    plain.meta = dict(node.meta)
    node.replace_all_uses_with(plain)
    gm.graph.erase_node(node)


def lower_grouped_convs(c: Compaction) -> Compaction:
    """Searched connectivity patterns become grouped convs (or an exact per-pattern form)."""
    if c.searched:
        c.search_report = das_lower.lower(c.gm, c.searched)
    for target, order in c.plan.report.items():
        c.search_report.setdefault(target, {})["channel_order"] = order
    return c


def tidy(c: Compaction) -> Compaction:
    c.gm.delete_all_unused_submodules()
    c.gm.graph.lint()
    c.gm.recompile()
    return c


def _closed_gate_channels(gm: fx.GraphModule, an: Analysis) -> np.ndarray:
    """Components whose gate is closed, keeping the strongest channel of a fully closed gate."""
    blocked = an.blocked_components()
    dead: set[int] = set()
    for node, gate, site in filter_sites(gm):
        x = node.args[0]
        key = (x.name, gate.dims[site] % len(tensor_shape(x)))
        index = getattr(gate, f"index{site}").numpy()
        labels = an.labels_of(key)
        theta = gate.theta.detach().numpy()
        closed = np.r_[theta <= 0, False][index]
        if (theta <= 0).all():  # keep at least one channel per group
            closed &= index != int(np.argmax(theta))
        dead.update(int(c) for c in labels[closed] if int(c) not in blocked)
    return np.array(sorted(dead), dtype=np.int64)


def _keep_one_per_group(groups: list, dead: np.ndarray) -> np.ndarray:
    """No group may lose every channel: revive the first channel of a fully dead group."""
    revive = [g.components[0] for g in groups if np.isin(g.components, dead).all()]
    return np.setdiff1d(dead, np.array(revive, dtype=np.int64))
