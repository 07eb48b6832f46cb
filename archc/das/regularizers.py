"""Penalties on the search parameters, in the same framework as the gate penalties.

* ``alpha_l1``, ``beta_l1``: L1 on filter-size and input-channel parameters (the paper's
  gamma-weighted terms), pushing them to exact zeros.
* ``grouped_penalty``: on P and S, the group lasso (L2,1: a sum of L2 norms) over P's
  columns and S's rows, so whole patterns switch off; and the exclusive lasso (L1,2: a sum of
  squared L1 norms) over P's rows and S's columns, so each input channel joins few patterns
  and each output channel uses one.
* ``assignment_penalty``: for ``PatternAssignment`` (P and S from sparsemax): an impurity
  term, ``1 - ||row||^2`` per channel, zero once the channel sits in one pattern (the exclusive
  lasso's aim), and the share of the conv's connections its patterns keep once they are pure
  (without it, every channel would settle in one shared pattern: the dense conv). Both count
  every channel the conv has, a closed one too, so the penalty moves when a shrink removes some.
* ``threshold_search_params(gm, t)``: the paper's last step, clamping every search
  parameter smaller than ``t`` in magnitude to zero (an assignment's P and S are exactly
  sparse already and are left alone).

Example:
    >>> loss = task + 1e-4 * alpha_l1(gm) + grouped_penalty(gm, group=1e-5, exclusive=3e-6)
"""
from __future__ import annotations

import torch
from torch import nn

from .params import channel_selects, grouped_connectivities, kernel_masks, pattern_assignments


def _total(terms) -> torch.Tensor:
    terms = list(terms)
    return torch.stack(terms).sum() if terms else torch.zeros(())


KERNEL_WEIGHTINGS = ("uniform", "area")


def alpha_l1(gm: nn.Module, weighting: str = "uniform") -> torch.Tensor:
    """L1 on the filter-size alphas; ``weighting="area"`` weights each alpha by its window's
    share of the full kernel, so a large window costs more than a small one (a FLOPs prior)."""
    if weighting not in KERNEL_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {KERNEL_WEIGHTINGS}, got {weighting!r}")
    return _total((m.alpha.abs() * (m.window_areas() if weighting == "area" else 1.0)).sum()
                  for m in kernel_masks(gm))


def beta_l1(gm: nn.Module) -> torch.Tensor:
    return _total(m.beta.abs().sum() for m in channel_selects(gm))


def group_lasso(matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of the L2 norms of the slices along ``dim`` (dim=0: of each column)."""
    return matrix.norm(dim=dim).sum()


def exclusive_lasso(matrix: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of the squared L1 norms of the slices along ``dim``."""
    return matrix.abs().sum(dim=dim).pow(2).sum()


def grouped_penalty(gm: nn.Module, group: float, exclusive: float) -> torch.Tensor:
    """``group * (GL(P cols) + GL(S rows)) + exclusive * (EL(P rows) + EL(S cols))``."""
    terms = []
    for g in grouped_connectivities(gm):
        terms.append(group * (group_lasso(g.P, 0) + group_lasso(g.S, 1))
                     + exclusive * (exclusive_lasso(g.P, 1) + exclusive_lasso(g.S, 0)))
    return _total(terms)


def impurity(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """Sum over the channels (rows of ``PatternAssignment.distributions()``) of
    ``1 - ||distribution||^2``: 0 when each sits in one pattern, largest when spread evenly."""
    return (1 - inputs.pow(2).sum(1)).sum() + (1 - outputs.pow(2).sum(1)).sum()


def connection_share(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """``sum_k |inputs in k| * |outputs in k| / (in * out)``, counting a channel's probability
    mass: the share of weights the conv keeps once every channel sits in one pattern."""
    return (inputs.sum(0) * outputs.sum(0)).sum() / (len(inputs) * len(outputs))


def assignment_penalty(gm: nn.Module, purity: float, connections: float) -> torch.Tensor:
    """``purity * impurity + connections * connection_share``, summed over the assignments."""
    terms = []
    for m in pattern_assignments(gm):
        inputs, outputs = m.distributions()
        terms.append(purity * impurity(inputs, outputs) + connections * connection_share(inputs, outputs))
    return _total(terms)


def _thresholdable(gm: nn.Module) -> list[nn.Parameter]:
    """Every alpha, beta, P and S of ``gm``: the values the paper's threshold applies to."""
    params = [m.alpha for m in kernel_masks(gm)] + [m.beta for m in channel_selects(gm)]
    for g in grouped_connectivities(gm):
        params += [g.P, g.S]
    return params


def search_parameters(gm: nn.Module) -> list[nn.Parameter]:
    """Every alpha, beta, P and S of ``gm``, and the logits of every pattern assignment."""
    return _thresholdable(gm) + [t for m in pattern_assignments(gm) for t in (m.input_logits, m.output_logits)]


@torch.no_grad()
def threshold_search_params(gm: nn.Module, t: float) -> int:
    """Set every alpha, beta, P and S entry with ``|value| < t`` to zero; returns how many."""
    zeroed = 0
    for p in _thresholdable(gm):
        small = (p.abs() < t) & (p != 0)
        zeroed += int(small.sum())
        p[small] = 0.0
    return zeroed
