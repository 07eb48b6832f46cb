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
from collections import Counter

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from .das.grouped_lowering import lowered_form
from .das.params import Connectivity, parametrized_layers
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


def _entry_cost(gm: fx.GraphModule, node: fx.Node, dim: int, kind: str, counted: set, blocks: dict):
    """The cost of one channel of ``node``'s output along ``dim``: what makes it, what reads it.
    ``counted`` holds the (module, role) pairs already charged to this group: a module called at
    several places has one set of weights, so for "params" it is charged once. ``blocks``:
    :func:`grouped_blocks`."""
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
        per_channel = rule(m)[role]
        if call.target in blocks:  # a grouped-conv search: only the weights its blocks keep
            per_channel = blocks[call.target][1 - role] + (role == 0 and m.bias is not None)
        total = total + per_channel * _uses(call, m, kind)
    return total


def grouped_blocks(gm: fx.GraphModule) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per conv that compaction will lower to blocks (a grouped-conv search whose patterns keep
    fewer weights than the dense conv, at one call site: a shared conv is baked dense), the
    weights each input channel and each output channel keeps in its blocks."""
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    blocks = {}
    for target, m, searched in parametrized_layers(gm, Connectivity):
        if calls[target] != 1:
            continue
        P, S = (f.detach().cpu() for f in searched.factors())
        form, patterns = lowered_form(P, S)
        if form == "dense":
            continue
        taps = math.prod(m.kernel_size)
        per_in, per_out = np.zeros(P.shape[0]), np.zeros(S.shape[1])
        for _, ins, outs in patterns:  # overlapping patterns keep a connection once per pattern
            per_in[ins] += len(outs) * taps
            per_out[outs] += len(ins) * taps
        blocks[target] = (per_in, per_out)
    return blocks


def connectivity_savings(gm: fx.GraphModule, kind: str) -> float:
    """The parameters (or FLOPs per example) that lowering grouped-conv searches to blocks
    saves: ``gm``'s dense count less this is what compaction will leave."""
    saved = 0.0
    nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    for target, (per_in, _) in grouped_blocks(gm).items():
        m = gm.get_submodule(target)
        cut = m.in_channels * m.out_channels * math.prod(m.kernel_size) - per_in.sum()
        saved += cut if kind == "params" else cut * _uses(nodes[target], m, kind)
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
    gate_at, blocks = gates_by_space(gm), grouped_blocks(gm)
    costs: dict[Filter, torch.Tensor] = {}
    for group in channel_groups(analyse(gm)):
        gate = next((gate_at[k] for k in group.spaces if k in gate_at), None)
        if not group.prunable or gate is None or gate.size != group.size:
            continue
        cost, counted = np.zeros(group.size + 1), set()
        for key in group.spaces:
            per_entry = _entry_cost(gm, nodes[key[0]], key[1], kind, counted, blocks)
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
