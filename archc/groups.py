"""Channel groups: the channels that must be kept or removed together, and where to gate them.

A *component* is one set of atoms that lives or dies as a unit (one channel of a residual
stream across every tensor it appears in). Components that touch the same spaces the same
number of times form a *group*, whose size is its number of components: one Filter gates a
group, with one ``theta`` entry per component.

Example:
    >>> for g in archc.channel_groups(gm):
    ...     print(g.id, g.size, g.prunable, g.layers()[:3])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch.fx as fx

from .analysis import Analysis, SpaceKey
from .depgraph import _space_of_atom, analyse


@dataclass
class ChannelGroup:
    """Channels that must be kept or removed together.

    ``components[i]`` is the component id of group channel ``i``; ``spaces`` lists every
    ``(node name, dim)`` the group's channels appear in; ``index_in(space)`` maps each
    channel of that space to its group channel (``size`` for channels of other groups).
    """

    id: int
    components: np.ndarray
    spaces: list[SpaceKey]
    producers: list[SpaceKey]
    prunable: bool
    reason: Optional[str]
    _analysis: Analysis = field(repr=False)
    _position: np.ndarray = field(repr=False)  # component id -> group channel, -1 elsewhere

    @property
    def size(self) -> int:
        return len(self.components)

    def index_in(self, key: SpaceKey) -> np.ndarray:
        pos = self._position[self._analysis.labels_of(key)]
        return np.where(pos >= 0, pos, self.size)

    def layers(self) -> list[str]:
        """Names of the graph nodes this group's channels pass through, in graph order."""
        seen: dict[str, None] = {}
        for name, _ in self.spaces:
            seen.setdefault(name, None)
        return list(seen)


def channel_groups(gm_or_analysis: Union[fx.GraphModule, Analysis]) -> list[ChannelGroup]:
    """The coupled channel groups of a traced graph (prunable ones and the rest, with reasons)."""
    an = gm_or_analysis if isinstance(gm_or_analysis, Analysis) else analyse(gm_or_analysis)
    space_of_atom = _space_of_atom(an)
    keys = list(an.spaces)
    producer_ids = [i for i, k in enumerate(keys) if k in an.producers]
    comps = np.unique(an.labels[np.isin(space_of_atom, producer_ids)])
    if not len(comps):
        return []
    member = np.isin(an.labels, comps)
    lab, sp = an.labels[member], space_of_atom[member]
    # signature of a component: which spaces it touches, and how often (hashed, vectorised)
    pair, count = np.unique(lab.astype(np.int64) * len(keys) + sp, return_counts=True)
    pair_lab, pair_sp = pair // len(keys), pair % len(keys)
    rng = np.random.default_rng(0)
    r1, r2 = rng.integers(1, 2**62, size=(2, len(keys)), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, pair_lab[1:] != pair_lab[:-1]])
    h1 = np.add.reduceat(r1[pair_sp] * count, starts)
    h2 = np.add.reduceat(r2[pair_sp] * (count + 7), starts)
    comp_ids = pair_lab[starts]
    blocked = an.blocked_components()
    is_blocked = np.array([c in blocked for c in comp_ids.tolist()])
    _, which = np.unique(np.stack([h1, h2, is_blocked]), axis=1, return_inverse=True)
    first_atom = np.full(an.labels.max() + 1, an.n_atoms)
    np.minimum.at(first_atom, an.labels, np.arange(an.n_atoms))
    groups = []
    for g in np.unique(which):
        members = comp_ids[which == g]
        members = members[np.argsort(first_atom[members], kind="stable")]
        group = _make_group(an, keys, pair_lab, pair_sp, members, blocked)
        if not _lone_parameter_dim(an, group):
            groups.append(group)
    groups.sort(key=lambda grp: first_atom[grp.components[0]])
    for i, grp in enumerate(groups):
        grp.id = i
    return groups


def _make_group(an, keys, pair_lab, pair_sp, members, blocked) -> ChannelGroup:
    spaces_idx = np.unique(pair_sp[pair_lab == members[0]])
    spaces = [keys[i] for i in sorted(spaces_idx, key=lambda i: an.spaces[keys[i]].base)]
    position = np.full(an.labels.max() + 1, -1)
    position[members] = np.arange(len(members))
    reason = blocked.get(int(members[0]))
    return ChannelGroup(
        id=-1, components=members, spaces=spaces,
        producers=[k for k in spaces if k in an.producers],
        prunable=reason is None, reason=reason, _analysis=an, _position=position,
    )


def _lone_parameter_dim(an: Analysis, group: ChannelGroup) -> bool:
    """A dim of a parameter coupled to nothing (a broadcast size-1 dim): not a channel group."""
    if len(group.spaces) != 1:
        return False
    name = group.spaces[0][0]
    return any(n.name == name and n.op == "get_attr" for n in an.gm.graph.nodes)


def gate_sites(an: Analysis) -> set[SpaceKey]:
    """Spaces where a gate must go so that removed channels are zero wherever they are mixed.

    A space *needs zero* if an op mixes its channels (a conv or linear input, a contraction)
    or if it flows into a space that needs zero. A gate goes on each such space that nothing
    flows into: the output of a producer or of an op that does not map zero to zero
    (a norm, a bias, a sigmoid).
    """
    flow_in: dict[SpaceKey, list[SpaceKey]] = {}
    for src, dst in an.flows:
        flow_in.setdefault(dst, []).append(src)
    need, stack = set(an.consumed), list(an.consumed)
    while stack:
        for src in flow_in.get(stack.pop(), ()):
            if src not in need:
                need.add(src)
                stack.append(src)
    return {s for s in need if s not in flow_in}
