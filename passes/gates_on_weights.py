"""Pass: a training view of a gated model in which a gate scales weights, not activations,
where that touches less memory.

A gate's ``x * g`` that reaches only layers reading each channel through one weight slice
(a conv or linear layer), directly or through ops a per-channel scale ``g >= 0`` passes
through unchanged (the registry's ``scale_commutes``: ReLU, pooling, dropout), computes what
those layers compute with that weight slice multiplied by ``g``. In most of a network the
weight is the smaller tensor at training batch sizes (a 3x3 conv of 64 channels has 37k
weights; its input at batch 8 and 32x32 has 524k values), and forward and backward each pass
over the gated tensor once more, so the search steps faster. The function is the same, and so
are the gradients, up to float rounding.

The view shares every parameter, buffer and gate with the gated model (nothing is copied);
the gated model stays the one archc analyses, shrinks, checkpoints and compacts. Build a new
view after the gated model changes (a shrink).

Example:
    >>> trainer = gates_on_weights(gated, batch=128)
    >>> F.cross_entropy(trainer(x), y).backward()   # gradients reach gated's parameters
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from archc.filters import Filter
from archc.meta import tensor_shape
from archc.rules import fact, layer_fact

Reader = tuple[fx.Node, int]  # a layer call reading the gated channels, and its weight's dim for them


def gates_on_weights(gated: fx.GraphModule, batch: int) -> fx.GraphModule:
    """A view of ``gated`` (not mutated) where every gate whose readers' weights are smaller
    than its tensor at ``batch`` samples scales those weights instead."""
    moves = {}
    for node in gated.graph.nodes:
        if node.op == "call_module" and isinstance(gated.get_submodule(node.target), Filter):
            readers = _weight_readers(gated, node)
            if readers and _weights_are_smaller(gated, node, readers, batch):
                moves[node] = readers
    if not moves:
        return gated
    graph = fx.Graph()
    graph._codegen = copy.deepcopy(gated.graph._codegen)
    copies: dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(gated.graph, copies))
    for site, readers in moves.items():
        _move(graph, copies[site], [(copies[layer], wdim) for layer, wdim in readers])
    graph.lint()
    view = fx.GraphModule(gated, graph, type(gated).__name__)
    view.meta = gated.meta
    return view


def _weight_readers(gm: fx.GraphModule, site: fx.Node) -> Optional[list[Reader]]:
    """The layers that read the gated tensor of ``site`` through one weight slice per channel,
    or None when anything else reads it (an add, a norm, the output)."""
    gate: Filter = gm.get_submodule(site.target)
    try:
        rank = len(tensor_shape(site.args[0]))
    except (KeyError, TypeError):
        return None
    dim = gate.dims[site.args[1] if len(site.args) > 1 else 0] % rank
    readers, frontier = [], [site]
    while frontier:
        node = frontier.pop()
        for user in node.users:
            if user.args[:1] != (node,) or node in user.args[1:] or node in user.kwargs.values():
                return None
            if fact(user, gm, "scale_commutes") is True and _rank(user) == rank:
                frontier.append(user)
                continue
            wdim = _read_dim(gm, user, dim, rank)
            if wdim is None:
                return None
            readers.append((user, wdim))
    return readers


def _rank(node: fx.Node) -> Optional[int]:
    try:
        return len(tensor_shape(node))
    except (KeyError, TypeError):
        return None


def _read_dim(gm: fx.GraphModule, node: fx.Node, dim: int, rank: int) -> Optional[int]:
    """The weight dim through which the layer ``node`` reads channel ``dim`` of its only input."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    layer = gm.get_submodule(node.target)
    if _base_type(layer) not in _LAYERS:
        return None
    reads, channel_dim = layer_fact(layer, "reads"), layer_fact(layer, "channel_dim")
    if reads is None or channel_dim is None or channel_dim(rank) != dim:
        return None
    read = reads(layer)
    return read[0][1] if len(read) == 1 and read[0][0] == "weight" else None


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)  # their forward is one call on self.weight


def _base_type(layer: nn.Module) -> type:
    """The layer's class; for a parametrized layer (a searched conv's weight), the class it wraps:
    its ``weight`` is then the computed one, which the scaled call reads as forward does."""
    return type(layer).__bases__[0] if parametrize.is_parametrized(layer) else type(layer)


def _weights_are_smaller(gm: fx.GraphModule, site: fx.Node, readers: list[Reader], batch: int) -> bool:
    shape = tensor_shape(site.args[0])
    per_sample = 1
    for size in shape[1:]:
        per_sample *= int(size)
    weights = sum(gm.get_submodule(layer.target).weight.numel() for layer, _ in readers)
    return weights < per_sample * batch


def _move(graph: fx.Graph, site: fx.Node, readers: list[Reader]) -> None:
    """Take the gate ``site`` out of the activations and into each reader's weight."""
    gate_name, number = site.target, site.args[1] if len(site.args) > 1 else 0
    site.replace_all_uses_with(site.args[0])
    with graph.inserting_before(site):
        scale = graph.call_function(_site_scale, (graph.get_attr(gate_name), number))
    graph.erase_node(site)
    for layer, wdim in readers:
        with graph.inserting_before(layer):
            call = graph.call_function(scaled_weight_call, (graph.get_attr(layer.target), layer.args[0], scale, wdim))
        call.meta = dict(layer.meta)
        layer.replace_all_uses_with(call)
        graph.erase_node(layer)


def _site_scale(gate: Filter, site: int) -> torch.Tensor:
    return gate.site_scale(site)


def scaled_weight_call(layer: nn.Module, x: torch.Tensor, scale: torch.Tensor, wdim: int) -> torch.Tensor:
    """``layer(x * scale)`` on channels read through ``layer.weight``'s dim ``wdim``, computed
    as ``layer`` with ``weight * scale`` along ``wdim`` (a linear layer or a conv of :data:`_LAYERS`)."""
    shape = [1] * layer.weight.dim()
    shape[wdim] = -1
    weight = layer.weight * scale.view(shape)
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, layer.bias)
    return layer._conv_forward(x, weight, layer.bias)
