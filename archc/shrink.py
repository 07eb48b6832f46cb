"""Shrink a gated model while it trains: remove dead channels, slice the optimizer to match.

ShrinkNets' garbage collection, on any graph: the live model is compacted without folding
its gates (the ``DURING_TRAINING`` pipeline of :mod:`archc.compact`) and every optimizer state tensor (momentum,
Adam's moments) is sliced exactly like its parameter, so training goes on as if nothing
happened, only faster. Before removal, the optimizer state of closed gates is zeroed so a
closed gate stays closed (otherwise Adam's momentum could reopen it in the unshrunk model).

Example:
    >>> result, removed = shrink(gm, optimizer)   # same optimizer object, now over result.gm's parameters
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx as fx

from .compact import shrink_live
from .compact_passes import Compaction
from .filters import filters


def _finalise_closed_gates(gm: fx.GraphModule, optimizer: Optional[torch.optim.Optimizer]) -> None:
    if optimizer is None:
        return
    for gate in filters(gm):
        state = optimizer.state.get(gate.theta, {})
        closed = gate.theta.detach() <= 0
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.shape == gate.theta.shape:
                value[closed] = 0


def _slice(value: torch.Tensor, keeps: list) -> torch.Tensor:
    for d, keep in enumerate(keeps):
        if keep is not None:
            value = value.index_select(d, keep.to(value.device))
    return value.clone()


def slice_optimizer(optimizer: torch.optim.Optimizer, old: fx.GraphModule, new: fx.GraphModule,
                    slices: dict[str, list]) -> None:
    """Point ``optimizer`` at ``new``'s parameters, slicing each state tensor like its parameter
    (``slices``: parameter name -> indices kept per dim, from :class:`archc.compact_passes.Compaction`)."""
    old_names = {id(p): n for n, p in old.named_parameters()}
    new_params = dict(new.named_parameters())
    for group in optimizer.param_groups:
        fresh = []
        for p in group["params"]:
            name = old_names[id(p)]
            q = new_params[name]
            state = optimizer.state.pop(p, None)
            if state is not None:
                keeps = slices.get(name)
                optimizer.state[q] = {
                    k: _slice(v, keeps) if keeps and isinstance(v, torch.Tensor) and v.shape == p.shape else v
                    for k, v in state.items()
                }
            fresh.append(q)
        group["params"] = fresh


def shrink(
    gm: fx.GraphModule, optimizer: Optional[torch.optim.Optimizer] = None, *, threshold: float = 0.0,
    trials: int = 1,
) -> tuple[Compaction, int]:
    """Remove the dead channels of a gated ``gm``; returns the compaction (``.gm`` the new
    model, ``.param_slices`` what each parameter kept) and how many channels went.

    The result is verified against ``gm`` (with closed gates) like any compaction. The
    optimizer, if given, is updated in place to train the new model's parameters.
    """
    before = sum(f.size for f in filters(gm))
    _finalise_closed_gates(gm, optimizer)
    device = next(gm.parameters()).device
    result = shrink_live(gm.cpu(), threshold, trials=trials)
    result.gm.to(device)
    gm.to(device)
    result.gm.train(gm.training)
    if optimizer is not None:
        slice_optimizer(optimizer, gm, result.gm, result.param_slices)
    return result, before - sum(f.size for f in filters(result.gm))
