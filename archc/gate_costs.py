"""What each gated channel costs, so the size penalty can charge expensive channels more.

ShrinkNets' penalty ``lam * sum(relu(theta))`` charges every channel the same, but a channel
of a conv that feeds a large linear layer carries a hundred times the parameters of a channel
of the first conv. ``channel_costs(gm, "params")`` gives, for every gate, the number of
parameters that leave the model with each of its channels (the rows that make it, the norm
entries, and the columns of every layer that reads it; a layer whose input and output are the
same channels counts its diagonal entry twice); ``"flops"`` weights each of those
entries by how many times it is used per example. ``gate_weights`` divides the costs by their
mean, and ``weighted_gate_l1`` is the penalty ``sum(weight * relu(theta))``, so ``lam`` keeps
the scale it has with uniform weights. This resource-weighted L1 follows MorphNet (Gordon et al. 2018); it is not in the
seed papers.

Example:
    >>> weights = archc.gate_costs.gate_weights(archc.gate_costs.channel_costs(gated, "params"))
    >>> loss = task_loss + 1e-4 * archc.gate_costs.weighted_gate_l1(weights)
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from .das.params import Connectivity
from .depgraph import analyse
from .errors import ConfigError
from .filters import Filter, gates_by_space
from .groups import channel_groups
from .capture.install import resolve
from .rules import layer_fact
from .meta import tensor_shape

WEIGHTINGS = ("uniform", "params", "flops")


def _channel_dim(m: nn.Module, rank: int) -> int:
    channel_dim = layer_fact(m, "channel_dim")
    return channel_dim(rank) if channel_dim is not None else 1


def _uses(node: fx.Node, m: nn.Module, kind: str) -> float:
    """How often each weight of ``m`` is applied per example: 1 for "params", the number of
    output positions (times 2 for multiply and add) for "flops"."""
    if kind == "params":
        return 1.0
    shape = tensor_shape(node)
    channel = _channel_dim(m, len(shape))
    return 2.0 * math.prod(s for i, s in enumerate(shape) if i not in (0, channel))


def _entry_cost(gm: fx.GraphModule, node: fx.Node, dim: int, kind: str, counted: set):
    """The cost of one channel of ``node``'s output along ``dim``: what makes it, what reads it.
    ``counted`` holds the (module, role) pairs already charged to this group: a module called at
    several places has one set of weights, so for "params" it is charged once."""
    rank = len(tensor_shape(node))
    if node.op == "get_attr":  # a parameter used directly (class token, position embedding)
        return _direct_parameter_cost(gm, node, dim, kind, counted)
    calls = [(node, 0)] if node.op == "call_module" else []  # role 0: makes the channel
    calls += [(u, 1) for u in node.users if u.op == "call_module" and u.args[:1] == (node,)]  # 1: reads it
    total = 0.0
    for call, role in calls:
        m = gm.get_submodule(call.target)
        rule = layer_fact(m, "cost")
        if rule is None or dim != _channel_dim(m, rank) or (kind == "params" and (id(m), role) in counted):
            continue
        counted.add((id(m), role))
        kept = kept_connections(m)
        per_channel = rule(m)[role] if kept is None else _grouped_cost(m, kept, role)
        total = total + per_channel * _uses(call, m, kind)
    return total


def kept_connections(m: nn.Module):
    """``(in, out)`` booleans: which connections a grouped-conv search (P @ S) keeps, or None
    for a layer without one. A settled assignment keeps only its patterns' blocks."""
    if not parametrize.is_parametrized(m, "weight"):
        return None
    found = [p for p in m.parametrizations.weight if isinstance(p, Connectivity)]
    return (found[0].connectivity().detach() != 0).cpu().numpy() if found else None


def _grouped_cost(m: nn.Module, kept, role: int):
    """Per channel, the weights a grouped-conv search keeps: an output's column of connections
    (and its bias), an input's row."""
    taps = math.prod(m.kernel_size)
    if role == 0:
        return kept.sum(0) * taps + (m.bias is not None)
    return kept.sum(1) * taps


def connectivity_savings(gm: fx.GraphModule, kind: str) -> float:
    """The parameters (or FLOPs per example) the grouped-conv searches' cut connections save:
    ``gm``'s dense count less this is what compaction will leave."""
    saved = 0.0
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = gm.get_submodule(node.target)
        kept = kept_connections(m)
        if kept is None:
            continue
        cut = float((~kept).sum()) * math.prod(m.kernel_size)
        saved += cut if kind == "params" else cut * _uses(node, m, kind)
    return saved


def _direct_parameter_cost(gm: fx.GraphModule, node: fx.Node, dim: int, kind: str, counted: set) -> float:
    """Its entries along the other dims, for "params" (once per parameter); no FLOPs."""
    value = resolve(gm, node.target)
    if kind != "params" or not isinstance(value, nn.Parameter) or (id(value), 0) in counted:
        return 0.0
    counted.add((id(value), 0))
    return value.numel() / value.shape[dim]


def channel_costs(gm: fx.GraphModule, kind: str = "params") -> dict[Filter, torch.Tensor]:
    """Per gate of the gated ``gm``, the cost of each of its channels (one entry per theta)."""
    if kind not in WEIGHTINGS[1:]:
        raise ConfigError(f"kind must be one of {WEIGHTINGS[1:]}, got {kind!r}")
    nodes = {n.name: n for n in gm.graph.nodes}
    gate_at = gates_by_space(gm)
    costs: dict[Filter, torch.Tensor] = {}
    for group in channel_groups(analyse(gm)):
        gate = next((gate_at[k] for k in group.spaces if k in gate_at), None)
        if not group.prunable or gate is None or gate.size != group.size:
            continue
        cost, counted = np.zeros(group.size + 1), set()
        for key in group.spaces:
            per_entry = _entry_cost(gm, nodes[key[0]], key[1], kind, counted)
            if np.any(per_entry):
                np.add.at(cost, group.index_in(key), per_entry)
        costs[gate] = torch.as_tensor(cost[: group.size], dtype=torch.float32)
    return costs


def gate_weights(costs: dict[Filter, torch.Tensor]) -> dict[Filter, torch.Tensor]:
    """``cost / mean_cost`` per gate, on each gate's device: computed once per model, so the
    per-step penalty is a plain weighted sum."""
    if not costs:
        return {}
    mean = torch.cat(list(costs.values())).mean().clamp_min(1e-12)
    return {g: (c / mean).to(g.theta.device) for g, c in costs.items()}


def weighted_gate_l1(weights: dict[Filter, torch.Tensor]) -> torch.Tensor:
    """``sum(weight * relu(theta))`` over the gates in ``weights`` (from :func:`gate_weights`)."""
    terms = [(w * torch.relu(g.theta)).sum() for g, w in weights.items()]
    return torch.stack(terms).sum() if terms else torch.zeros(())
