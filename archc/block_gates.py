"""Depth gates: one scalar gate per residual branch, ``skip + branch * relu(theta)``.

ShrinkNets learns widths and names a dynamic number of layers as future work. A block gate
is the same idea one level up. It scales a whole residual branch (a ResNet block's convs,
a transformer's attention or MLP), and an L1 penalty on it (``--depth-lam``) closes the
branches the task can do without. Compaction removes a closed branch together with every
layer only it used: the add becomes its skip input. An open gate becomes a constant factor.

A residual branch is an ``add(skip, branch)`` of two same-shaped tensors. ``skip`` must be an
ancestor of ``branch``, and the path between them must hold a layer with parameters. A
projection shortcut (both inputs computed from the block's input) is not a residual branch:
removing one of its sides would change what the block computes for every input.

Example:
    >>> gated = archc.passes.insert_block_gates(archc.passes.insert_filters(gm))
    >>> [g.theta.item() for g in block_gates(gated)]
"""
from __future__ import annotations

import operator
from typing import Iterator

import torch
import torch.fx as fx
from torch import nn

from .meta import tensor_shape

_ADDS = (operator.add, torch.add)
_CASTS = ("to", "contiguous", "clone", "type_as", "detach")


class BlockGate(nn.Module):
    """``x * relu(theta)`` with one ``theta`` for the whole tensor: the gate of a residual branch."""

    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.relu(self.theta)

    def extra_repr(self) -> str:
        return f"open={bool(self.theta.detach() > 0)}"


def block_gates(gm: nn.Module) -> list[BlockGate]:
    return [m for m in gm.modules() if isinstance(m, BlockGate)]


def block_gate_sites(gm: fx.GraphModule) -> Iterator[tuple[fx.Node, BlockGate]]:
    """``(node, gate)`` for every block-gate call in the graph."""
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), BlockGate):
            yield node, gm.get_submodule(node.target)


def _ancestors(node: fx.Node) -> set[fx.Node]:
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        for parent in n.all_input_nodes:
            if parent not in seen:
                seen.add(parent)
                todo.append(parent)
    return seen


def _through_casts(node: fx.Node) -> fx.Node:
    """The tensor ``node`` copies: a skip input is often the block input cast to its own dtype
    (``residual.to(x.dtype)``), which is the same values."""
    while node.op in ("call_method", "call_function") and str(getattr(node.target, "__name__", node.target)) in _CASTS \
            and len(node.all_input_nodes) == 1:
        node = node.all_input_nodes[0]
    return node


def _has_layer(gm: fx.GraphModule, nodes: set[fx.Node]) -> bool:
    return any(n.op == "call_module" and any(True for _ in gm.get_submodule(n.target).parameters())
               for n in nodes)


def residual_branches(gm: fx.GraphModule) -> list[tuple[fx.Node, fx.Node]]:
    """``(add node, branch node)`` of every residual add whose branch holds a layer."""
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _ADDS or len(node.args) != 2:
            continue
        a, b = node.args
        if not (isinstance(a, fx.Node) and isinstance(b, fx.Node)) or tensor_shape(a) != tensor_shape(b):
            continue
        for skip, branch in ((a, b), (b, a)):
            source, above = _through_casts(skip), _ancestors(branch)
            if source in above and _has_layer(gm, above - _ancestors(source) - {source} | {branch}):
                found.append((node, branch))
                break
    return found
