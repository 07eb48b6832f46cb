"""Channel reorderings that make each connectivity pattern of a grouped conv contiguous.

A real grouped conv reads its input channels, and writes its output channels, in
contiguous blocks, one per group (and the per-pattern form reads slices instead of
gathers when its patterns' inputs are disjoint). The patterns a search learns (``P``, ``S``) pick
arbitrary channel sets. Rather than gather them at run time, archc reorders the whole
dependency group of those channels, the way it removes channels: the producer's weight
rows, its norm and bias, the gates, the columns of every other consumer.
:class:`archc.compact.CompactionContext` then returns each space's surviving indices in
the new order, and every shrink rule gathers by them.

A group is reordered only when all of these hold; otherwise the lowering gathers with
``index_select``, which is still exact, and the report says why:

* none of its channels is blocked (model inputs and outputs keep their order);
* every space holding one of its channels holds exactly that group (nothing concatenated,
  split or sliced), each channel once, or as one contiguous run in a flatten where the
  channel is the outer factor (a conv's output flattened into a linear layer);
* every op producing or reading those spaces is in ``permutes`` in archc's op registry (:mod:`archc.rules.registry`);
* no other grouped conv has reordered the same channels first (graph order decides).

Example:
    >>> plan = plan_permutations(gm, an, infos, dead)
    >>> cc = CompactionContext(gm, an, dead, ranks=plan.ranks)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch.fx as fx

from ..analysis import Analysis, SpaceKey
from ..rules import describe, permutes
from .grouped_lowering import disjoint, lowered_form

PERMUTED = "permuted"
IN_ORDER = "already in order"


@dataclass
class PermutationPlan:
    """Where each channel group's components go, and what happened at each grouped conv."""

    ranks: Optional[np.ndarray] = None  # per component: its position in the new order (NaN: unchanged)
    report: dict[str, dict[str, str]] = field(default_factory=dict)  # layer -> side -> outcome


def plan_permutations(gm: fx.GraphModule, an: Analysis, infos: dict, dead: np.ndarray) -> PermutationPlan:
    """Plan the reorderings for every grouped conv of ``infos`` (see :func:`archc.das.lower.bake`).

    Reads ``gm`` and ``an`` only; ``dead`` are the components compaction will remove.
    """
    n_components = int(an.labels.max()) + 1 if an.n_atoms else 0
    dead_mask = np.zeros(n_components, dtype=bool)
    dead_mask[dead] = True
    ranks = np.full(n_components, np.nan)
    nodes = {n.name: n for n in gm.graph.nodes}
    report: dict[str, dict[str, str]] = {}
    for target, info in infos.items():
        if info.grouped is None or len(info.calls) != 1:
            continue
        node = nodes[info.calls[0]]
        in_key, out_key = (node.args[0].name, 1), (node.name, 1)
        alive_in = np.flatnonzero(~dead_mask[an.labels_of(in_key)])
        alive_out = np.flatnonzero(~dead_mask[an.labels_of(out_key)])
        P, S = info.grouped
        form, pats = lowered_form(P[alive_in], S[:, alive_out])
        if form == "dense":
            continue
        ins, outs = [p[1] for p in pats], [p[2] for p in pats]
        entry = report[target] = {}
        if disjoint(ins):  # each pattern's inputs become one slice
            entry["inputs"] = _request(gm, an, ranks, in_key, alive_in[np.concatenate(ins)], nodes, dead_mask)
        if disjoint(outs) and sum(map(len, outs)) == len(alive_out):  # the outputs come out in place
            entry["outputs"] = _request(gm, an, ranks, out_key, alive_out[np.concatenate(outs)], nodes, dead_mask)
    return PermutationPlan(None if np.isnan(ranks).all() else ranks, report)


def _request(gm, an: Analysis, ranks: np.ndarray, key: SpaceKey, first: np.ndarray, nodes, dead: np.ndarray) -> str:
    """Put the atoms ``first`` of space ``key`` at the front of their group, in that order."""
    labels = an.labels_of(key)
    rest = np.setdiff1d(np.arange(len(labels)), first)
    order = labels[np.concatenate([first, rest]).astype(np.int64)]
    taken = not np.isnan(ranks[labels]).all()
    current = labels[np.argsort(ranks[labels], kind="stable")] if taken else labels
    if np.array_equal(order[~dead[order]], current[~dead[current]]):  # the survivors' order is right
        return IN_ORDER
    why = "another grouped conv already reordered these channels" if taken else _why_fixed(gm, an, labels, nodes)
    if why is not None:
        return f"gathered: {why}"
    ranks[order] = np.arange(len(order))
    return PERMUTED


def _why_fixed(gm, an: Analysis, labels: np.ndarray, nodes) -> Optional[str]:
    """Why the group of components ``labels`` must keep its order, or None if it may move."""
    if len(np.unique(labels)) != len(labels):
        return "some of these channels are tied together (a norm group or a conv group)"
    if set(labels.tolist()) & set(an.blocked_components()):
        return "some of these channels are fixed (a model input or output, or an op without a rule)"
    members = np.isin(an.labels, labels)
    for key, sp in an.spaces.items():
        inside = members[sp.base : sp.base + sp.size]
        if not inside.any():
            continue
        if not inside.all() or not _whole_blocks(an.labels[sp.base : sp.base + sp.size], len(labels)):
            return f"{key[0]} holds them together with other channels (a cat, split, slice or reshape)"
        node = nodes[key[0]]
        for op in (node, *node.users):
            if op is not node and _reads_size(op):
                continue  # a reorder leaves sizes alone
            if not permutes(op, gm):
                return f"{describe(op)} does not keep channels independent"
    return None


def _whole_blocks(space_labels: np.ndarray, n: int) -> bool:
    """Whether a space holds ``n`` distinct channels, each as one contiguous run of equal length:
    the channel dim itself, or a flatten with the channel as its outer factor (``c * HW + s``).
    Reordering the channels then moves whole runs, and the order inside a run is kept."""
    if len(space_labels) % n:
        return False
    runs = space_labels.reshape(n, -1)
    return bool((runs == runs[:, :1]).all()) and len(np.unique(runs[:, 0])) == n


def _reads_size(node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in ("size", "dim")
    return node.op == "call_function" and node.target is getattr and node.args[1] in ("shape", "ndim")
