"""The ShrinkNets Filter gate: ``x * relu(theta)`` along one channel dim.

One ``Filter`` serves one channel group: its ``theta`` has one entry per group channel, and
it is called at every *site* where the group's channels are produced (a residual stream
has one site per branch). A site names the channel dim and maps each channel of the tensor
there to a ``theta`` entry; channels of the tensor that belong to another group map to the
extra last entry, which is always 1.

Example:
    >>> f = archc.Filter(8)
    >>> site = f.add_site(dim=1, index=torch.arange(8))
    >>> y = f(torch.randn(2, 8, 4, 4), site)
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.fx as fx
from torch import nn


class Filter(nn.Module):
    """Per-channel gate ``x * relu(theta)``; a channel with ``theta <= 0`` carries nothing."""

    def __init__(self, size: int, init: str = "uniform") -> None:
        super().__init__()
        if init == "uniform":  # ShrinkNets: theta ~ U(0, 1]
            theta = 1.0 - torch.rand(size)
        elif init == "ones":
            theta = torch.ones(size)
        else:
            raise ValueError(f"Filter init must be 'uniform' or 'ones', got {init!r}")
        self.theta = nn.Parameter(theta)
        self.dims: list[int] = []
        self._whole: list[bool] = []  # per site: its index is arange(size), every channel in order

    @property
    def size(self) -> int:
        return self.theta.numel()

    def add_site(self, dim: int, index: torch.Tensor) -> int:
        """Register a call site gating ``dim``; ``index[c]`` is channel c's theta entry (or ``size``)."""
        site = len(self.dims)
        self.dims.append(dim)
        self.register_buffer(f"index{site}", index.long().clone())
        self._whole.append(self._is_whole(index))
        return site

    def _is_whole(self, index: torch.Tensor) -> bool:
        return index.numel() == self.size and torch.equal(index.long().cpu(), torch.arange(self.size))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._whole = [self._is_whole(getattr(self, f"index{site}")) for site in range(len(self.dims))]

    def scale(self) -> torch.Tensor:
        """``relu(theta)`` with a trailing 1 for channels outside this group."""
        return torch.cat([torch.relu(self.theta), self.theta.new_ones(1)])

    def site_scale(self, site: int) -> torch.Tensor:
        """The factor applied to each channel of the tensor at ``site``."""
        if self._whole[site]:  # the common case, on the hot path: no concatenation, no gather
            return torch.relu(self.theta)
        return self.scale()[getattr(self, f"index{site}")]

    def alive(self) -> torch.Tensor:
        """Boolean mask of the group channels that still carry something."""
        return self.theta.detach() > 0

    def forward(self, x: torch.Tensor, site: int = 0) -> torch.Tensor:
        dim = self.dims[site] % x.dim()
        shape = [1] * x.dim()
        shape[dim] = -1
        return x * self.site_scale(site).view(shape)

    def extra_repr(self) -> str:
        return f"size={self.size}, sites={len(self.dims)}, alive={int(self.alive().sum())}"


def filters(gm: nn.Module) -> Iterator[Filter]:
    """Every distinct Filter in ``gm`` (each once, even when called at several sites)."""
    seen: set[int] = set()
    for m in gm.modules():
        if isinstance(m, Filter) and id(m) not in seen:
            seen.add(id(m))
            yield m


def site_number(node: fx.Node) -> int:
    """Which site of its Filter the call ``node`` (``filter(x, site)``) is."""
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("site", 0)


def filter_sites(gm: fx.GraphModule) -> Iterator[tuple[fx.Node, Filter, int]]:
    """``(node, filter, site)`` for every Filter call in the graph."""
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if isinstance(mod, Filter):
                yield node, mod, site_number(node)


def gates_by_space(gm: fx.GraphModule) -> dict[tuple[str, int], Filter]:
    """The gate of each gated space: ``(name of the node it gates, dim) -> Filter``."""
    return {(node.args[0].name, gate.dims[site] % len(node.meta["archc.shape"])): gate
            for node, gate, site in filter_sites(gm)}
