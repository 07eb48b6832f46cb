"""Channel-dependency analysis: which channels of which tensors must live or die together.

Every dimension of every tensor-valued node is a *space* (``(node name, dim)``) holding one
*atom* per index. Per-op rules (``archc.rules``) state how the dims of an op's inputs and
output relate:

* ``couple``: atoms that must be kept or removed together (an index mapping);
* ``flow``: a coupling through which a zero channel stays zero (relu, add, cat, reshape...);
* ``consume``: the op mixes this dim's channels (conv input, linear input, a contraction),
  so a removed channel must carry exactly zero there;
* ``block``: atoms that can never be removed, with the reason (model inputs and outputs,
  spatial dims, LayerNorm statistics, ops without a rule...).

A rule must account for every dim of its node's inputs and output; what it leaves out is
blocked (default-deny), so an op archc does not understand can make channels unprunable
but never produce a wrong model. Connected components of atoms are computed in one
vectorised pass (scipy), so analysis cost grows about linearly with the graph.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch.fx as fx
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .meta import tensor_shape

SpaceKey = tuple[str, int]


@dataclass
class Space:
    """One dimension of one node's tensor value; its atoms are ``base .. base + size - 1``."""

    key: SpaceKey
    size: int
    base: int

    @property
    def atoms(self) -> np.ndarray:
        return np.arange(self.base, self.base + self.size)


@dataclass
class Analysis:
    """Everything the rules said about a graph, and the components derived from it."""

    gm: fx.GraphModule
    spaces: dict[SpaceKey, Space] = field(default_factory=dict)
    edges: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    flows: list[tuple[SpaceKey, SpaceKey]] = field(default_factory=list)
    consumed: set[SpaceKey] = field(default_factory=set)
    consumers: dict[SpaceKey, list[str]] = field(default_factory=dict)  # who mixes each space
    producers: set[SpaceKey] = field(default_factory=set)
    blocked: dict[int, str] = field(default_factory=dict)  # first reason per blocked atom
    unknown_ops: dict[str, str] = field(default_factory=dict)  # node name -> why
    labels: Optional[np.ndarray] = None  # component id of each atom
    n_atoms: int = 0
    described_by_producer: set[str] = field(default_factory=set)  # getitem nodes of a split
    largest_factor_at: frozenset = frozenset()  # reshapes told not to keep the heads factor
    head_factors: dict[str, SpaceKey] = field(default_factory=dict)  # reshape -> the heads space it kept
    _handled: set[SpaceKey] = field(default_factory=set)
    current: Optional[fx.Node] = None

    # -- spaces ------------------------------------------------------------------------
    def space(self, node: fx.Node, dim: int) -> Space:
        """The space of ``node``'s dim ``dim`` (negative dims allowed); created on first use."""
        shape = tensor_shape(node)
        if shape is None:
            raise KeyError(f"{node.name} has no tensor shape")
        dim = dim % len(shape) if shape else 0
        key = (node.name, dim)
        if key not in self.spaces:
            self.spaces[key] = Space(key, shape[dim], self.n_atoms)
            self.n_atoms += shape[dim]
        self._handled.add(key)
        return self.spaces[key]

    def _atoms(self, node: fx.Node, dim: int, index) -> np.ndarray:
        sp = self.space(node, dim)
        return sp.atoms if index is None else sp.base + np.asarray(index, dtype=np.int64)

    # -- what rules say ----------------------------------------------------------------
    def couple(self, a: fx.Node, da: int, b: fx.Node, db: int, ia=None, ib=None, flow: bool = False) -> None:
        """Atoms ``ia`` of ``a``'s dim ``da`` live and die with atoms ``ib`` of ``b``'s dim ``db``.

        ``flow=True`` when ``b`` is computed from ``a`` and a zero channel of ``a`` gives a zero
        channel of ``b`` (so a gate before it is enough).
        """
        xa, xb = self._atoms(a, da, ia), self._atoms(b, db, ib)
        if xa.shape != xb.shape:
            raise ValueError(f"coupling of {a.name}:{da} and {b.name}:{db} has mismatched sizes")
        self.edges.append((xa, xb))
        if flow:
            self.flows.append((self.space(a, da).key, self.space(b, db).key))

    def block(self, node: fx.Node, dim: int, reason: str, index=None) -> None:
        """These atoms can never be removed (``reason`` is shown in the report)."""
        for atom in self._atoms(node, dim, index).tolist():
            self.blocked.setdefault(atom, reason)

    def block_all(self, node: fx.Node, reason: str) -> None:
        shape = tensor_shape(node)
        for d in range(len(shape or ())):
            self.block(node, d, reason)

    def consume(self, node: fx.Node, dim: int) -> None:
        """The current op mixes the channels of this dim: removed ones must carry zero here."""
        key = self.space(node, dim).key
        self.consumed.add(key)
        self.consumers.setdefault(key, []).append(self.current.name)

    def produce(self, node: fx.Node, dim: int) -> None:
        """Channels of this dim are created here from parameters: a gate can be put on them."""
        self.producers.add(self.space(node, dim).key)

    def prefers_heads(self, node: fx.Node) -> bool:
        """Whether a reshape of channels into (heads, head_dim) keeps whole heads here."""
        return self.gm.meta.get("archc.split_channels", "heads") == "heads" and node.name not in self.largest_factor_at

    @property
    def grouped_queries(self) -> str:
        """How grouped-query attention is pruned: ``"kv"`` (a key/value head with its query
        heads) or ``"query"`` (the same query head of every key/value group)."""
        return self.gm.meta.get("archc.grouped_queries", "kv")

    @functools.cached_property
    def _from_parameters(self) -> frozenset:
        found: set[str] = set()
        for n in self.gm.graph.nodes:
            inputs = n.all_input_nodes
            if n.op == "get_attr" or (n.op.startswith("call") and inputs and all(i.name in found for i in inputs)):
                found.add(n.name)
        return frozenset(found)

    def from_parameters(self, node: fx.Node) -> bool:
        """Whether ``node`` is computed from parameters and buffers alone (a weight made in
        forward, as weight standardisation makes it), whatever the model's inputs."""
        return node.name in self._from_parameters

    @functools.cached_property
    def gated(self) -> bool:
        """Whether the graph already holds gates (then a plain norm's statistics count every channel)."""
        from .filters import Filter

        return any(isinstance(m, Filter) for m in self.gm.modules())

    def is_blocked(self, node: fx.Node, dim: int) -> bool:
        """Whether every atom of this space was blocked so far (by the rules already run)."""
        return all(a in self.blocked for a in self._atoms(node, dim, None).tolist())

    def handle(self, node: fx.Node, dim: int) -> None:
        """This dim is accounted for by the current rule without coupling it to anything."""
        self.space(node, dim)

    # -- bookkeeping done by the driver ------------------------------------------------
    def begin(self, node: fx.Node) -> None:
        self.current = node
        self._handled = set()

    def unhandled(self, node: fx.Node) -> list[int]:
        """Dims of ``node`` the current rule did not describe."""
        shape = tensor_shape(node)
        return [d for d in range(len(shape or ())) if (node.name, d) not in self._handled]

    def finish(self) -> None:
        """Compute connected components of atoms."""
        if self.edges:
            src = np.concatenate([a for a, _ in self.edges])
            dst = np.concatenate([b for _, b in self.edges])
        else:
            src = dst = np.zeros(0, dtype=np.int64)
        adj = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(self.n_atoms, self.n_atoms))
        _, self.labels = connected_components(adj, directed=False)

    # -- queries -----------------------------------------------------------------------
    def labels_of(self, key: SpaceKey) -> np.ndarray:
        sp = self.spaces[key]
        return self.labels[sp.base : sp.base + sp.size]

    def blocked_components(self) -> dict[int, str]:
        """Component id -> the first reason one of its atoms is blocked."""
        out: dict[int, str] = {}
        for atom, reason in self.blocked.items():
            out.setdefault(int(self.labels[atom]), reason)
        return out
