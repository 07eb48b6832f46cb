"""Pass: a training view of a gated model in which a gate scales weights, not activations,
where that touches less memory.

A gate right after the layer making its channels (a conv, linear or batch norm whose output
only the gate reads) scales the parameters that make them (the registry's ``makes``: a batch
norm's 2C affine values). Otherwise a gate's ``x * g`` that reaches only layers reading each
channel through one weight slice
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

from archc.filters import Filter, site_number
from archc.meta import tensor_shape
from archc.rules import fact, layer_fact

Scaled = tuple[fx.Node, tuple[tuple[str, int], ...]]  # a layer call, and its parameters' dims the gate scales


def gates_on_weights(gated: fx.GraphModule, batch: int) -> fx.GraphModule:
    """A view of ``gated`` (not mutated) where each gate whose layers' parameters are smaller
    than its tensor at ``batch`` samples scales those parameters instead: the parameters
    making its channels (the layer right before it) or else those reading them."""
    moves: dict[fx.Node, tuple[str, list[Scaled]]] = {}
    taken: set[fx.Node] = set()  # a layer takes one gate: its rows or its columns
    for node in gated.graph.nodes:
        if node.op == "call_module" and isinstance(gated.get_submodule(node.target), Filter):
            for side, layers in (("producer", _producer(gated, node)), ("readers", _weight_readers(gated, node))):
                if layers and taken.isdisjoint(n for n, _ in layers) and _parameters_are_smaller(gated, node, layers, batch):
                    moves[node] = (side, layers)
                    taken.update(n for n, _ in layers)
                    break
    if not moves:
        return gated
    graph = fx.Graph()
    graph._codegen = copy.deepcopy(gated.graph._codegen)
    copies: dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(gated.graph, copies))
    for site, (side, layers) in moves.items():
        _move(graph, copies[site], side, [(copies[layer], dims) for layer, dims in layers])
    graph.lint()
    view = fx.GraphModule(gated, graph, type(gated).__name__)
    view.meta = dict(gated.meta)
    return view


def _producer(gm: fx.GraphModule, site: fx.Node) -> Optional[list[Scaled]]:
    """The layer whose output only the gate reads, with the parameter dims making its channels."""
    x = site.args[0]
    if x.op != "call_module" or len(x.users) != 1 or len(x.args) != 1 or x.kwargs:
        return None
    layer, rank = gm.get_submodule(x.target), _rank(x)
    base = _base_type(layer)
    if base not in _PRODUCERS or (base not in _LAYERS and parametrize.is_parametrized(layer)) or rank is None:
        return None
    if _channel_dim(gm, site) != layer_fact(layer, "channel_dim")(rank):
        return None
    makes = tuple(layer_fact(layer, "makes"))
    if any(name == "weight" and getattr(layer, name) is None for name, _ in makes):
        return None  # a norm without affine parameters: nothing to carry the gate
    return [(x, makes)]


def _weight_readers(gm: fx.GraphModule, site: fx.Node) -> Optional[list[Scaled]]:
    """The layers that read the gated tensor of ``site`` through one weight slice per channel,
    or None when anything else reads it (an add, a norm, the output)."""
    rank, dim = _rank(site.args[0]), _channel_dim(gm, site)
    if dim is None:
        return None
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
            readers.append((user, (("weight", wdim),)))
    return readers


def _channel_dim(gm: fx.GraphModule, site: fx.Node) -> Optional[int]:
    """The dim the gate ``site`` scales, counted from the front; None without a known rank."""
    rank = _rank(site.args[0])
    gate: Filter = gm.get_submodule(site.target)
    return None if rank is None else gate.dims[site_number(site)] % rank


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


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYERS = (nn.Linear, *_CONVS)  # their forward is one call on self.weight and self.bias
_PRODUCERS = (*_LAYERS, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _base_type(layer: nn.Module) -> type:
    """The layer's class; for a parametrized layer (a searched conv's weight), the class it wraps:
    its ``weight`` is then the computed one, which the scaled call reads as forward does."""
    return type(layer).__bases__[0] if parametrize.is_parametrized(layer) else type(layer)


def _parameters_are_smaller(gm: fx.GraphModule, site: fx.Node, layers: list[Scaled], batch: int) -> bool:
    per_sample = 1
    for size in tensor_shape(site.args[0])[1:]:
        per_sample *= int(size)
    values = [getattr(gm.get_submodule(layer.target), name) for layer, dims in layers for name, _ in dims]
    return sum(v.numel() for v in values if v is not None) < per_sample * batch


def _move(graph: fx.Graph, site: fx.Node, side: str, layers: list[Scaled]) -> None:
    """Take the gate ``site`` out of the activations and into the layers' parameters."""
    gate_name, number = site.target, site_number(site)
    with graph.inserting_before(layers[0][0] if side == "producer" else site):
        scale = graph.call_function(_site_scale, (graph.get_attr(gate_name), number))
    site.replace_all_uses_with(site.args[0])
    graph.erase_node(site)
    for layer, dims in layers:
        with graph.inserting_before(layer):
            call = graph.call_function(scaled_call, (graph.get_attr(layer.target), layer.args[0], scale, dims))
        call.meta = dict(layer.meta)
        layer.replace_all_uses_with(call)
        graph.erase_node(layer)


def _site_scale(gate: Filter, site: int) -> torch.Tensor:
    return gate.site_scale(site)


def scaled_call(layer: nn.Module, x: torch.Tensor, scale: torch.Tensor, dims: tuple) -> torch.Tensor:
    """``layer(x)`` with each parameter ``name`` of ``dims`` (``(name, dim)`` pairs) multiplied
    by ``scale`` along ``dim``: the layer's output channels times the gate (its ``makes``), or
    the layer applied to its input channels times the gate (its ``reads``)."""
    params = {}
    for name, dim in dims:
        value = getattr(layer, name)
        if value is not None:
            shape = [1] * value.dim()
            shape[dim] = -1
            params[name] = value * scale.view(shape)
    if isinstance(layer, (nn.Linear, *_CONVS)):
        weight, bias = params.get("weight", layer.weight), params.get("bias", layer.bias)
        return F.linear(x, weight, bias) if isinstance(layer, nn.Linear) else layer._conv_forward(x, weight, bias)
    return torch.func.functional_call(layer, params, (x,))  # a batch norm: running statistics as its own
