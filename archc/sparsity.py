"""Sparsity regularizers and their proximal steps.

* ``gate_l1(gm)``: ShrinkNets' ``sum(relu(theta))`` over every Filter gate.
* ``channel_weight_groups(gm)``: for each prunable channel, every parameter entry that
  *makes* it (conv/linear output rows and biases, norm scales and shifts, direct
  parameters), found through the dependency graph, so a residual stream's channel is one
  group across all its branches.
* ``sparse_group_lasso(groups, lam, alpha)``: Alvarez & Salzmann's
  ``lam * ((1 - alpha) * sqrt(P) * sum_n ||theta_n||_2 + alpha * ||theta||_1)`` (``alpha=0``
  is the group lasso), usable as a plain penalty with any optimizer...
* ``Proximal(optimizer, groups, lam, alpha)``: ...or applied exactly by its closed-form
  proximal step after each optimizer step: soft-threshold every weight by ``t * alpha *
  lam``, then scale each group by ``max(0, 1 - t * (1 - alpha) * lam * sqrt(P) / ||g||)``,
  with ``t`` the learning rate. A group at exactly zero is a dead channel.
* ``density(model)`` / ``density_penalty(model)``: fraction of non-zero weights per layer
  (Tessera & Rosman) and a smooth surrogate, the mean absolute weight of each layer.

Example:
    >>> groups = archc.sparsity.channel_weight_groups(gated)
    >>> opt = archc.sparsity.Proximal(torch.optim.SGD(gated.parameters(), lr=0.1), groups, lam=1e-4)
    >>> loss = task_loss + 1e-4 * archc.sparsity.gate_l1(gated); loss.backward(); opt.step()
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.fx as fx
from torch import nn

from .depgraph import analyse
from .filters import Filter, filters, gates_by_space
from .groups import channel_groups
from .rules import layer_fact

@dataclass
class WeightGroup:
    """The parameter entries that make each channel of one channel group.

    ``slices`` holds ``(parameter, dim, channel)``: entry ``i`` of ``parameter`` along ``dim``
    belongs to group channel ``channel[i]`` (``size`` for entries of other groups).
    """

    size: int
    slices: list[tuple[nn.Parameter, int, torch.Tensor]]
    gate: Optional[Filter] = None  # the Filter of the same channels, in a gated model

    @property
    def params_per_channel(self) -> int:
        """``P``: how many parameters one channel of the group has."""
        return sum(p.numel() // p.shape[d] * int((c == 0).sum()) for p, d, c in self.slices)

    def sq_norms(self) -> torch.Tensor:
        """Squared L2 norm of each channel's entries, differentiable."""
        out = self.slices[0][0].new_zeros(self.size + 1)
        for p, d, c in self.slices:
            out = out.index_add(0, c.to(p.device), _per_entry(p.pow(2), d))
        return out[: self.size]

    def l1(self) -> torch.Tensor:
        total = self.slices[0][0].new_zeros(())
        for p, d, c in self.slices:
            mask = (c < self.size).to(p.device)
            total = total + _per_entry(p.abs(), d)[mask].sum()
        return total


def _per_entry(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum ``t`` over every dim but ``dim`` (``sum(dim=[])`` would reduce everything)."""
    others = [i for i in range(t.dim()) if i != dim]
    return t.sum(dim=others) if others else t


def gate_l1(gm: nn.Module) -> torch.Tensor:
    """ShrinkNets' size penalty: the sum of ``relu(theta)`` over every Filter gate."""
    terms = [torch.relu(f.theta).sum() for f in filters(gm)]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def channel_weight_groups(gm: fx.GraphModule) -> list[WeightGroup]:
    """One WeightGroup per prunable channel group of ``gm`` (gated or not)."""
    an = analyse(gm)
    nodes = {n.name: n for n in gm.graph.nodes}
    gate_at = gates_by_space(gm)
    out = []
    for group in channel_groups(an):
        if not group.prunable:
            continue
        slices = []
        for key in group.spaces:
            node, channel = nodes[key[0]], torch.as_tensor(group.index_in(key))
            for p, d in _producing_params(gm, node, key[1]):
                slices.append((p, d, channel))
        if slices:
            gate = next((gate_at[k] for k in group.spaces if k in gate_at), None)
            out.append(WeightGroup(group.size, slices, gate))
    return out


def _producing_params(gm: fx.GraphModule, node: fx.Node, dim: int) -> list[tuple[nn.Parameter, int]]:
    if node.op == "get_attr":
        value = gm.get_parameter(node.target) if node.target in dict(gm.named_parameters()) else None
        return [(value, dim)] if value is not None else []
    if node.op != "call_module":
        return []
    m = gm.get_submodule(node.target)
    channel_dim, makes = layer_fact(m, "channel_dim"), layer_fact(m, "makes")
    shape = node.meta["archc.shape"]
    if channel_dim is None or makes is None or dim != channel_dim(len(shape)):
        return []
    # a grouped transposed conv's weight is (in, out / groups, ...): not one slice per channel
    return [(p, d) for name, d in makes if isinstance(p := getattr(m, name, None), nn.Parameter)
            and p.shape[d] == shape[dim]]


def sparse_group_lasso(groups: list[WeightGroup], lam: float, alpha: float = 0.0) -> torch.Tensor:
    """``lam * sum_g ((1-alpha) * sqrt(P_g) * sum_n ||theta_n|| + alpha * ||theta_g||_1)``."""
    total = torch.zeros(())
    for g in groups:
        norms = g.sq_norms().clamp_min(1e-24).sqrt().sum()
        total = total + (1 - alpha) * math.sqrt(g.params_per_channel) * norms + alpha * g.l1()
    return lam * total


@torch.no_grad()
def proximal_step(groups: list[WeightGroup], lam: float, alpha: float, step: float) -> None:
    """Apply the sparse-group-lasso proximal operator in place (soft threshold, then group shrink)."""
    for g in groups:
        if alpha > 0:
            for p, d, c in g.slices:
                shape = [1] * p.dim()
                shape[d] = -1
                mask = (c < g.size).view(shape).to(p.device)
                shrunk = p.sign() * (p.abs() - step * alpha * lam).clamp_min(0)
                p.copy_(torch.where(mask, shrunk, p))
        norms = g.sq_norms().sqrt()
        factor = (1 - step * (1 - alpha) * lam * math.sqrt(g.params_per_channel) / norms.clamp_min(1e-12))
        factor = torch.cat([factor.clamp_min(0), factor.new_ones(1)])
        for p, d, c in g.slices:
            shape = [1] * p.dim()
            shape[d] = -1
            p.mul_(factor[c.to(p.device)].view(shape))


class Proximal:
    """Wrap any torch optimizer: after each ``step()``, apply the sparse-group-lasso prox.

    The step size ``t`` is the learning rate of the first parameter group.

    Example:
        >>> opt = Proximal(torch.optim.SGD(model.parameters(), lr=0.1), groups, lam=1e-4, alpha=0.5)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, groups: list[WeightGroup], lam: float,
                 alpha: float = 0.0) -> None:
        self.optimizer, self.groups, self.lam, self.alpha = optimizer, groups, lam, alpha

    def step(self, closure=None):
        loss = self.optimizer.step(closure)
        proximal_step(self.groups, self.lam, self.alpha, self.optimizer.param_groups[0]["lr"])
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


def dead_channels(group: WeightGroup) -> torch.Tensor:
    """Channels whose every producing weight is exactly zero."""
    return group.sq_norms().detach() == 0


@torch.no_grad()
def close_gates_of_zero_groups(groups: list[WeightGroup]) -> int:
    """Close the gate of every channel whose producing weights the prox set to zero."""
    closed = 0
    for g in groups:
        if g.gate is not None and g.gate.size == g.size:
            dead = dead_channels(g) & (g.gate.theta > 0)
            g.gate.theta[dead] = 0.0
            closed += int(dead.sum())
    return closed


def _weights(model: nn.Module):
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, nn.Parameter) and w.dim() > 1:
            yield name, w


def density(model: nn.Module) -> dict[str, float]:
    """Fraction of non-zero weights of each conv/linear layer."""
    return {name: float((w != 0).float().mean()) for name, w in _weights(model)}


def density_penalty(model: nn.Module) -> torch.Tensor:
    """Sum over layers of the mean absolute weight: a smooth surrogate for density."""
    terms = [w.abs().mean() for _, w in _weights(model)]
    return torch.stack(terms).sum() if terms else torch.zeros(())
