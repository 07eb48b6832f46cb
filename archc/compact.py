"""Compaction: remove dead channels everywhere they appear, fold the gates, verify.

Example:
    >>> gated = archc.passes.insert_filters(archc.trace(model, (x,)))
    >>> ...train...
    >>> small = archc.compact(gated)          # raises CompactionError rather than differ
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from .analysis import Analysis
from .das import lower as das_lower
from .das import permute as das_permute
from .das.regularizers import search_parameters, threshold_search_params
from .depgraph import analyse
from .errors import CompactionError, node_error
from .filters import filter_sites, filters
from .fold import fold_filters, shrink_filters
from .groups import channel_groups
from .meta import VALUE, record_shapes, tensor_shape
from .rules import SHRINK, lookup
from .verify import assert_equivalent

log = logging.getLogger(__name__)


class CompactionContext:
    """What shrink rules read: which channels of each space survive."""

    def __init__(self, gm: fx.GraphModule, an: Analysis, dead: np.ndarray,
                 ranks: Optional[np.ndarray] = None) -> None:
        self.gm, self.an = gm, an
        self._dead_atom = np.isin(an.labels, dead)
        self._ranks = ranks  # per component: position in a reordered group (NaN: not reordered)
        self._node_map = {n.name: n for n in gm.graph.nodes}
        self._deps_memo: dict[str, Any] = {}
        # parameter name -> kept indices per dim (None: dim unchanged): to slice optimizer state
        self.param_slices: dict[str, list] = {}

    def note(self, name: str, keeps: list) -> None:
        """Record that parameter ``name`` kept indices ``keeps[d]`` along each dim ``d``."""
        self.param_slices[name] = [None if k is None else torch.as_tensor(k, dtype=torch.long) for k in keeps]

    def _key(self, node: fx.Node, dim: int):
        shape = tensor_shape(node)
        return (node.name, dim % len(shape)) if shape else None

    def keep(self, node: fx.Node, dim: int) -> Optional[np.ndarray]:
        """Indices of the surviving channels of ``node``'s dim in their new order, or None if
        all survive in place. The order is ascending unless a grouped conv reordered the group
        (:mod:`archc.das.permute`); only ops in ``archc.rules.PERMUTES`` ever see that."""
        key = self._key(node, dim)
        sp = self.an.spaces.get(key) if key else None
        if sp is None:
            return None
        atoms = slice(sp.base, sp.base + sp.size)
        dead = self._dead_atom[atoms]
        keep = np.flatnonzero(~dead) if dead.any() else None
        if self._ranks is None:
            return keep
        rank = self._ranks[self.an.labels[atoms]]
        if np.isnan(rank).all():
            return keep
        kept = np.arange(sp.size) if keep is None else keep
        order = kept[np.argsort(rank[kept], kind="stable")]
        return None if keep is None and np.array_equal(order, kept) else order

    def changed(self, node: fx.Node, dim: int) -> bool:
        return self.keep(node, dim) is not None

    def new_size(self, node: fx.Node, dim: int) -> int:
        keep = self.keep(node, dim)
        return tensor_shape(node)[dim] if keep is None else len(keep)

    def replace_module(self, node: fx.Node, new: nn.Module) -> None:
        owner, _, attr = node.target.rpartition(".")
        setattr(self.gm.get_submodule(owner) if owner else self.gm, attr, new)

    # -- sizes computed in the graph (x.size(1), C // heads ...) -----------------------
    def size_deps(self, node: Any) -> Any:
        """Spaces whose size a scalar node was computed from (a list for a shape tuple)."""
        if not isinstance(node, fx.Node):
            return set()
        if node.name not in self._deps_memo:
            self._deps_memo[node.name] = self._compute_deps(node)
        return self._deps_memo[node.name]

    def _compute_deps(self, node: fx.Node) -> Any:
        if node.op == "call_method" and node.target == "size" and tensor_shape(node.args[0]):
            x, rank = node.args[0], len(tensor_shape(node.args[0]))
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            per_dim = [{(x.name, d)} for d in range(rank)]
            return per_dim if dim is None else per_dim[dim % rank]
        if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
            x = node.args[0]
            return [{(x.name, d)} for d in range(len(tensor_shape(x)))]
        if node.op == "call_function" and node.target.__name__ == "getitem":
            src = self.size_deps(node.args[0])
            if isinstance(src, list):
                picked = src[node.args[1]]
                return picked if isinstance(picked, set) else list(picked)
        out: set = set()
        for n in node.all_input_nodes:
            if tensor_shape(n) is not None:
                out |= {(n.name, d) for d in range(len(tensor_shape(n)))}
            else:
                deps = self.size_deps(n)
                out |= set().union(*deps) if isinstance(deps, list) else deps
        return out

    def stale(self, node: Any) -> bool:
        deps = self.size_deps(node)
        flat = set().union(*deps) if isinstance(deps, list) else deps
        return any(self.keep(self._node_map[name], d) is not None for name, d in flat if name in self._node_map)

    def freeze_if_stale(self, value: Any, original: Any) -> Any:
        """``value`` unless it is a size computed from a dim that changed: then ``original``."""
        return original if isinstance(value, fx.Node) and self.stale(value) else value


def _apply_shrink_rules(work: fx.GraphModule, cc: CompactionContext) -> None:
    """Run each op's shrink rule; a module called at several places has one set of weights, so
    it is shrunk at its first call only (the analysis gave every call the same channels)."""
    shrunk_modules: set[str] = set()
    for node in list(work.graph.nodes):
        rule = lookup(SHRINK, node, work)
        if rule is None or (node.op == "call_module" and node.target in shrunk_modules):
            continue
        if node.op == "call_module":
            shrunk_modules.add(node.target)
        try:
            rule(node, cc)
        except Exception as exc:
            raise node_error(CompactionError, node, f"could not shrink this op: {exc}",
                             "report this model to archc; meanwhile keep this op's module as a "
                             "leaf with trace(..., leaf_modules=[...])") from exc


def compact(
    gm: fx.GraphModule,
    threshold: float = 0.0,
    *,
    rtol: float = 1e-4,
    inputs: Optional[tuple] = None,
    fold: bool = True,
    trials: int = 3,
    search_threshold: float = 0.0,
) -> fx.GraphModule:
    """A real smaller copy of the gated ``gm``, with every dead channel removed and no Filter left.

    A channel is dead when its gate ``relu(theta) <= threshold``; gates below the threshold
    are first set to zero, so the reference is the gated model with those gates closed.
    Each group keeps at least one channel. The result is checked against that reference
    on fresh random inputs and a :class:`CompactionError` is raised if it differs by more
    than ``rtol`` (relative to the output's largest magnitude). ``gm`` is not modified.

    Search parameters (kernel masks, channel selections, grouped connectivity) with
    ``|value| < search_threshold`` are zeroed first, then baked into the weights: kernels are
    cropped to their non-zero taps and connectivity patterns become grouped convolutions
    (``result.meta["archc.search_report"]`` says what each layer became).

    With ``fold=False`` the gates stay, shrunk to their surviving channels: this is how the
    search shrinks the model while it trains (``result.meta["archc.param_slices"]`` tells
    which indices of each parameter were kept, to slice optimizer state the same way).

    Example:
        >>> small = archc.compact(gated, threshold=1e-3)
    """
    with _thresholded(gm, threshold, search_threshold):
        work = copy.deepcopy(gm)
    infos = das_lower.bake(work) if fold else {}
    an = analyse(work)
    dead = _dead_components(work, an)
    if infos:
        groups = channel_groups(an)
        by_selection = das_lower.dead_by_selection(work, an, infos, groups)
        dead = _keep_one_per_group(groups, np.union1d(dead, np.array(sorted(by_selection), dtype=np.int64)))
    plan = das_permute.plan_permutations(work, an, infos, dead) if infos else das_permute.PermutationPlan()
    cc = CompactionContext(work, an, dead, ranks=plan.ranks)
    _apply_shrink_rules(work, cc)
    _freeze_stale_sizes(work, cc)
    das_lower.slice_grouped(work, infos, cc)
    (fold_filters if fold else shrink_filters)(work, cc)
    search_report = das_lower.lower(work, infos) if infos else {}
    for target, order in plan.report.items():
        search_report.setdefault(target, {})["channel_order"] = order
    work.delete_all_unused_submodules()
    work.graph.lint()
    work.recompile()
    work.meta.update({k: v for k, v in gm.meta.items() if k.startswith("archc.")})
    with _thresholded(gm, threshold, search_threshold):  # the reference: gm with those gates closed
        assert_equivalent(gm, work, rtol=rtol, inputs=inputs, trials=trials)
    record_shapes(work)
    work.meta["archc.param_slices"] = cc.param_slices
    work.meta["archc.search_report"] = search_report
    return work


@contextlib.contextmanager
def _thresholded(gm: fx.GraphModule, threshold: float, search_threshold: float) -> Iterator[None]:
    """``gm`` with gates at or below ``threshold`` and search parameters below
    ``search_threshold`` set to zero, restored on exit (cheaper than a deep copy)."""
    params = [gate.theta for gate in filters(gm)] + search_parameters(gm)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for gate in filters(gm):
                gate.theta[torch.relu(gate.theta) <= threshold] = 0.0
        threshold_search_params(gm, search_threshold)
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)


def _dead_components(gm: fx.GraphModule, an: Analysis) -> np.ndarray:
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


def _freeze_stale_sizes(gm: fx.GraphModule, cc: CompactionContext) -> None:
    """Sizes computed from a pruned dim keep the value they had in the gated model."""
    for node in list(gm.graph.nodes):
        if VALUE in node.meta and node.users and cc.stale(node):
            value = node.meta[VALUE]
            for user in list(node.users):
                user.args = fx.node.map_arg(user.args, lambda n: value if n is node else n)
                user.kwargs = fx.node.map_arg(user.kwargs, lambda n: value if n is node else n)
    for node in reversed(list(gm.graph.nodes)):
        if not node.users and VALUE in node.meta and node.op not in ("placeholder", "output"):
            gm.graph.erase_node(node)
