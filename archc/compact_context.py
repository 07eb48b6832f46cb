"""What shrink rules read during a compaction: which channels of each space survive.

Example:
    >>> cc = CompactionContext(gm, analyse(gm), dead)
    >>> cc.keep(conv_node, 1)        # surviving output channels of that conv, or None
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from .analysis import Analysis
from .meta import tensor_shape


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
        (:mod:`archc.das.permute`); only ops whose ``permutes`` fact holds ever see that."""
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
