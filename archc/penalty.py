"""The size penalty of a search: a list of terms, each on when its setting asks for it.

Example:
    >>> terms = penalty_terms(cfg)                    # chosen once per search
    >>> total = penalty(terms, model, cfg, gate_weights, device)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from . import gate_costs, sparsity
from .block_gates import block_gates
from .das import regularizers as das_reg
from .search_config import SearchConfig


def _gate_l1(model, cfg: SearchConfig, gate_weights: Optional[dict], lam: float) -> torch.Tensor:
    size = gate_costs.weighted_gate_l1(gate_weights) if gate_weights is not None else sparsity.gate_l1(model)
    return lam * size


@dataclass(frozen=True)
class Term:
    """One penalty term: ``value(model, cfg, gate_weights, lam)`` when ``applies(cfg)`` (``lam``:
    the gate penalty's strength now, which a size target steers away from ``cfg.lam``)."""

    name: str
    applies: Callable[[SearchConfig], bool]
    value: Callable[..., torch.Tensor]


TERMS = (
    # ShrinkNets: L1 on the gates (group lassos act by proximal steps on the weights instead)
    Term("gate_l1", lambda c: c.regularizer == "l1", _gate_l1),
    # Tessera & Rosman: mean |weight| per layer
    Term("density", lambda c: c.density_lam > 0,
         lambda m, c, _w, _l: c.density_lam * sparsity.density_penalty(m)),
    # Shin et al.: L1 on the filter-size masks' alphas
    Term("kernel_l1", lambda c: c.kernel_lam > 0,
         lambda m, c, _w, _l: c.kernel_lam * das_reg.alpha_l1(m, c.kernel_weighting)),
    # Shin et al.: L1 on the input-channel selection betas
    Term("select_l1", lambda c: c.select_lam > 0, lambda m, c, _w, _l: c.select_lam * das_reg.beta_l1(m)),
    # depth: L1 on the block gates, one per residual branch
    Term("depth_l1", lambda c: c.depth_lam > 0,
         lambda m, c, _w, _l: c.depth_lam * sum(torch.relu(g.theta).sum() for g in block_gates(m))),
    # Shin et al.: group and exclusive lasso on the grouped-conv connectivity P, S
    Term("grouped", lambda c: c.patterns > 0 and c.patterns_form == "lasso",
         lambda m, c, _w, _l: das_reg.grouped_penalty(m, c.group_lam, c.exclusive_lam)),
    # grouped convs by assignment: each channel in one pattern, few connections kept
    Term("assignment", lambda c: c.patterns > 0 and c.patterns_form == "assign",
         lambda m, c, _w, _l: das_reg.assignment_penalty(m, c.purity_lam, c.connections_lam)),
)


def penalty_terms(cfg: SearchConfig) -> list[Term]:
    """The terms ``cfg`` switches on, in a fixed order."""
    return [t for t in TERMS if t.applies(cfg)]


def penalty(terms: list[Term], model, cfg: SearchConfig, gate_weights: Optional[dict],
            device: torch.device, lam: Optional[float] = None) -> torch.Tensor:
    """The sum of ``terms`` on ``model`` (a zero tensor when there are none)."""
    total = torch.zeros((), device=device)
    for term in terms:
        total = total + term.value(model, cfg, gate_weights, cfg.lam if lam is None else lam)
    return total
