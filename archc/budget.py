"""Steer a search to a size: ``--target params=0.5`` or ``--target flops=120k``.

The size of the model the search would compact to is predicted at every step from the gates
(the size after the last shrink, less what each closed channel carries, by
:func:`archc.gate_costs.channel_costs`). The size follows a schedule from the start down to
the target, reached after ``reach`` of the training (``SearchConfig.target_reach``, 60% by
default):

- a controller raises the penalty's strength λ while the predicted size is above the
  schedule and lowers it while below (multiplicative dual ascent on ``size <= schedule``,
  within a factor 100 of the λ given);
- before every shrink, if the gates alone are behind the schedule, the open channels with the
  smallest gates are closed until it is met (the L1 penalty has ranked them: with Adam, a
  gate moves at most about one learning rate per step, whatever λ, so λ alone cannot keep
  time); closed channels past the schedule are opened again, so no shrink undershoots it;
- once the target is met the gates are frozen and the penalty is off: the rest of the search
  trains the weights at that size.

Example:
    >>> target = parse_target("flops=0.5")          # half the starting FLOPs
    >>> target = parse_target("params=120k")        # 120,000 parameters
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional
import torch

from . import flops as flops_count
from .block_gates import block_gates
from .das import regularizers as das_reg
from .errors import ConfigError
from .filters import filters

KINDS = ("params", "flops", "latency")
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ms": 1}


@dataclass(frozen=True)
class Target:
    """``kind`` (params or flops) and ``value``: a fraction of the starting model when
    ``relative``, else an absolute count."""

    kind: str
    value: float
    relative: bool

    def absolute(self, start: float) -> float:
        return self.value * start if self.relative else self.value

    @property
    def text(self) -> str:
        """One spelling per target (``params=60k`` and ``params=60000`` are one), parsed back alike."""
        unit = "ms" if self.kind == "latency" and not self.relative else ""
        return f"{self.kind}={self.value:g}{unit}"


class TargetNotBelowStart(ConfigError):
    """The model starts at or below its target: nothing to steer (a tune trial whose drawn width
    starts small is pruned, not the study stopped)."""


# The share of the training by which a target is met, unless the search says otherwise
# (``SearchConfig.target_reach``): the rest trains the weights at that size.
DEFAULT_REACH = 0.6


def parse_target(text: str) -> Target:
    """``KIND=VALUE``: a fraction (``flops=0.5``), a count with an optional k/M/G suffix
    (``params=120k``), or milliseconds for latency (``latency=2ms``)."""
    match = re.fullmatch(r"\s*(\w+)\s*=\s*([0-9.eE+-]+)\s*(ms|[kKmMgG]?)\s*", text or "")
    if not match or match.group(1) not in KINDS:
        raise ConfigError(f"target {text!r} is not KIND=VALUE with KIND one of {KINDS}\n"
                          "  fix: pass --target params=0.5 (half the parameters) or --target flops=120k")
    kind, number, suffix = match.groups()
    try:
        value = float(number) * _SUFFIX[suffix.lower()]
    except ValueError:
        raise ConfigError(f"target {text!r}: {number!r} is not a number\n  fix: pass e.g. --target params=0.5") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"target {text!r} must be positive\n  fix: pass e.g. --target params=0.5")
    if (match.group(1) == "latency") != (suffix == "ms") and not (match.group(1) == "latency" and value < 1
                                                                  and not suffix):
        raise ConfigError(f"target {text!r}: latency takes a fraction of the start or milliseconds, and only "
                          "latency takes ms\n  fix: pass e.g. --target latency=0.5 or latency=2ms")
    if value == 1 and not suffix:
        raise ConfigError(f"target {text!r} is the whole model (a fraction of 1)\n"
                          "  fix: pass a fraction below 1 (params=0.5) or a count with a suffix (params=1k)")
    return Target(kind, value, relative=value < 1 and not suffix)


def format_size(kind: str, value: float) -> str:
    """A target or achieved size for a person: ``"2.13 ms"`` for latency, ``"120,449"`` otherwise."""
    return f"{value:.3g} ms" if kind == "latency" else f"{value:,.0f}"


def model_size(model: torch.nn.Module, kind: str) -> float:
    """Parameters (gates and search parameters left out: compaction folds them) or FLOPs per
    example, less what compaction will cut from the convs of a grouped-conv search
    (``gate_costs.connectivity_savings``)."""
    from .gate_costs import connectivity_savings

    if kind == "flops":
        return float(flops_count.count(model)) - connectivity_savings(model, kind)
    search = {id(p) for p in architecture_parameters(model)}
    dense = float(sum(p.numel() for p in model.parameters() if id(p) not in search))
    return dense - connectivity_savings(model, kind)


class BudgetController:
    """λ steered so that the predicted compact size follows a schedule down to the target."""

    def __init__(self, target: Target, start: float, lam: float, reach: float = DEFAULT_REACH,
                 tolerance: float = 0.03, rate: float = 0.05) -> None:
        self.kind, self.start, self.goal = target.kind, start, target.absolute(start)
        if self.goal >= start:
            raise TargetNotBelowStart(f"target {target.text} is not below the model's starting "
                              f"{target.kind} ({start:,.0f})\n  fix: pass a fraction below 1 or a smaller count")
        self.lam, self.reach, self.tolerance, self.rate = lam, reach, tolerance, rate
        self.lam0 = lam  # the λ given: the controller stays within a factor 100 of it
        self.met = False

    def scheduled(self, progress: float) -> float:
        """The size the search should have reached at ``progress`` (the share of training done)."""
        done = min(1.0, progress / self.reach)
        return self.start - (self.start - self.goal) * done

    def update(self, predicted: float, progress: float) -> float:
        """Adjust λ by how far ``predicted`` is above (raise) or below (lower) the schedule."""
        if self.met:
            return 0.0
        span = max(self.start - self.goal, 1.0)
        error = (predicted - self.scheduled(progress)) / span
        raised = self.lam * math.exp(self.rate * max(min(error * 10, 5.0), -5.0))
        self.lam = min(max(raised, self.lam0 / 100), self.lam0 * 100)
        return self.lam

    def reached(self, size: float) -> bool:
        return size <= self.goal * (1 + self.tolerance)

    def report(self, size: float) -> dict:
        return {"kind": self.kind, "target": self.goal, "start": self.start, "achieved": size,
                "ratio_to_target": size / self.goal, "met": self.met}


def architecture_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What decides the compact architecture: gate and block-gate thetas, α, β, P and S."""
    gates = [f.theta for f in filters(model)] + [g.theta for g in block_gates(model)]
    return gates + das_reg.search_parameters(model)


def predicted_size(base: float, costs: dict, threshold: float) -> float:
    """``base`` less the cost of every channel whose gate is at or below ``threshold``: summed on
    the gates' device, read back once (one sync per step on a GPU, not one per gate)."""
    saved = [(cost.to(gate.theta.device) * (gate.theta.detach() <= threshold)).sum() for gate, cost in costs.items()]
    return base - (float(torch.stack(saved).sum()) if saved else 0.0)


@torch.no_grad()
def close_to(costs: dict, predicted: float, goal: float, threshold: float, tolerance: float) -> float:
    """Close open channels, smallest gate first, until the predicted size is at most ``goal``;
    a channel that would take it below ``goal * (1 - tolerance)`` is skipped. Returns the new
    predicted size."""
    floor = goal * (1 - tolerance)
    candidates = sorted(((float(gate.theta[i]), gate, i) for gate in costs
                         for i in torch.nonzero(gate.theta.detach().cpu() > threshold).flatten().tolist()),
                        key=lambda item: item[0])
    for _, gate, i in candidates:
        if predicted <= goal:
            break
        cost = float(costs[gate][i])
        if predicted - cost >= floor:
            gate.theta[i] = threshold - 1e-3
            predicted -= cost
    return predicted


@torch.no_grad()
def reopen_past_target(costs: dict, base: float, goal: float, threshold: float, tolerance: float = 0.0) -> int:
    """Of the closed channels, keep closed (most negative θ first) only as many as keep ``base``
    at or above ``goal * (1 - tolerance)``; open the others again (θ a little above
    ``threshold``). Returns how many."""
    goal = goal * (1 - tolerance)
    closed = sorted(((float(gate.theta[i]), gate, i) for gate in costs
                     for i in torch.nonzero(gate.theta.detach().cpu() <= threshold).flatten().tolist()),
                    key=lambda item: item[0])
    size, reopened = base, 0
    for _, gate, i in closed:
        cost = float(costs[gate][i])
        if size - cost >= goal:
            size -= cost
            continue
        gate.theta[i] = threshold + 1e-3
        reopened += 1
    return reopened


class BudgetSteering:
    """A search's size target at work: the controller, and the costs it predicts sizes with.

    Example: ``steer = BudgetSteering(parse_target("params=0.5"), gated, lam=1e-3)``; each step
    ``lam = steer.lam_at(progress)``; around every shrink ``steer.before_shrink()`` and
    ``steer.after_shrink(new_model)``."""

    def __init__(self, target: Target, model: torch.nn.Module, lam: float, threshold: float = 0.0,
                 saved: Optional[dict] = None, reach: float = DEFAULT_REACH) -> None:
        start = saved["start"] if saved else model_size(model, target.kind)
        self.control = BudgetController(target, start, saved.get("lam0", lam) if saved else lam, reach=reach)
        if saved:
            self.control.lam = saved["lam"]
        self.threshold = threshold
        self.refresh(model)
        if saved and saved["met"]:
            self._meet(model)

    def refresh(self, model: torch.nn.Module) -> None:
        from .gate_costs import channel_costs

        self.base = model_size(model, self.control.kind)
        self.costs = {gate: cost.to(gate.theta.device) for gate, cost in channel_costs(model, self.control.kind).items()}
        self.last_predicted = self.base

    def predicted(self) -> float:
        return predicted_size(self.base, self.costs, self.threshold)

    def lam_at(self, progress: float) -> float:
        self.last_predicted = self.predicted()
        return self.control.update(self.last_predicted, progress)

    def wants_shrink(self) -> bool:
        """The closed channels (as of the last step's penalty) would meet the target: shrink now,
        not at the epoch's end."""
        return not self.control.met and self.control.reached(self.last_predicted)

    def before_shrink(self, progress: float) -> None:
        """Keep up with the schedule at ``progress``: where the gates lag, close the smallest; the
        L1 may run ahead of it, but never past the target: closed channels beyond it reopen."""
        if self.control.met:
            return
        scheduled = max(self.control.scheduled(progress), self.control.goal)
        if self.predicted() > scheduled * (1 + self.control.tolerance):
            close_to(self.costs, self.predicted(), scheduled, self.threshold, self.control.tolerance)
        reopen_past_target(self.costs, self.base, self.control.goal, self.threshold, self.control.tolerance)

    def overdue(self, progress: float) -> bool:
        """The schedule says the target is due by now, and it is not met."""
        return not self.control.met and progress >= self.control.reach

    def after_shrink(self, model: torch.nn.Module) -> None:
        self.refresh(model)
        if self.control.met or self.control.reached(self.base):
            self._meet(model)  # the shrink built new gates: freeze those

    def _meet(self, model: torch.nn.Module) -> None:
        """Target met: the architecture stays where it is and the weights train on at this size.
        The gates' penalty goes off; the gates, block gates and every search parameter (α, β,
        P, S) freeze, so the penalties that act on them (kernel, selection, grouped) shrink
        nothing past the target either."""
        self.control.met = True
        for p in architecture_parameters(model):
            p.requires_grad_(False)

    def state(self) -> dict:
        return {"start": self.control.start, "lam": self.control.lam, "lam0": self.control.lam0,
                "met": self.control.met, **self.control.report(self.base)}
