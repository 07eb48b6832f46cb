"""One registry of op facts: everything archc knows about an op, in one entry per op.

An op is a key of archc's graph dialect (what :mod:`archc.capture` lowers ATen ops to): a
layer type (``nn.Conv2d``), a function (``torch.cat``, ``operator.add``), a tensor method name
(``"view"``), a node kind (``"placeholder"``), or an ATen op kept as it is. Its entry states:

=============  ==================================================================================
analyse        ``rule(node, ctx)``: how the op's dims relate (:mod:`archc.analysis`)
shrink         ``rule(node, cc)``: the rewrite once channels are removed
permutes       ``when(node) -> bool``: channels may be reordered through the op
fold           ``fold(layer, dim, rank, scale) -> bool``: take a gate into the layer's weights
makes          ``[(parameter name, dim)]``: the parameters that make each output channel
reads          ``reads(layer) -> [(parameter name, dim)]``: the parameter dims each input channel
               (on the input's ``channel_dim``) is read through
cost           ``cost(layer) -> (made, read)``: parameters making one output channel, reading one input
flops          ``flops(node, layer) -> int``: floating-point operations for the traced batch
channel_dim    ``channel_dim(rank) -> int``: the output dim the layer's channels are on
scale_commutes ``True``: a scale ``s >= 0`` per input channel passes through the op unchanged,
               ``op(x * s) == op(x) * s`` (ReLU, pooling, dropout), so a gate may act after it
=============  ==================================================================================

Every fact is stated, either as a value or as :data:`NA` (does not apply: no rule means the
op's channels are blocked, no shrink rule means its output follows its inputs, no permutes
means the channel order is kept, no flops means it is not counted). ``tests/test_registry.py``
fails on a fact left unsaid (:data:`MISSING`).

Example:
    >>> fact(node, gm, "fold")      # the fold rule of node's op, or None
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Optional

import torch
import torch.fx as fx
from torch import nn


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NA = _Marker("NA")            # stated: this fact does not apply to the op
MISSING = _Marker("MISSING")  # nobody stated it: a bug the registry test reports


@dataclass
class OpFacts:
    analyse: Any = MISSING
    shrink: Any = MISSING
    permutes: Any = MISSING
    fold: Any = MISSING
    makes: Any = MISSING
    reads: Any = MISSING
    cost: Any = MISSING
    flops: Any = MISSING
    channel_dim: Any = MISSING
    scale_commutes: Any = MISSING

    def get(self, name: str) -> Any:
        """The fact ``name``, or None when it is NA or unstated."""
        value = getattr(self, name)
        return None if value is NA or value is MISSING else value


FACT_NAMES = tuple(f.name for f in fields(OpFacts))
# ops without parameters: nothing to fold, nothing made from weights, not counted
WEIGHTLESS = dict(fold=NA, makes=NA, reads=NA, cost=NA, flops=NA, channel_dim=NA, scale_commutes=NA)
REGISTRY: dict[Any, OpFacts] = {}


def declare(*keys: Any, **facts: Any) -> None:
    """State ``facts`` (names from :data:`FACT_NAMES`) of each op in ``keys``."""
    unknown = set(facts) - set(FACT_NAMES)
    if unknown:
        raise TypeError(f"unknown op facts {sorted(unknown)}; known: {FACT_NAMES}")
    for key in keys:
        entry = REGISTRY.setdefault(key, OpFacts())
        for name, value in facts.items():
            setattr(entry, name, value)


def key_candidates(node: fx.Node, gm: fx.GraphModule) -> list:
    """Keys to try, most specific first: a layer's types along its MRO, else the target."""
    if node.op == "call_module":
        return list(type(gm.get_submodule(node.target)).__mro__)
    if node.op == "call_method":
        return [node.target, node.target.rstrip("_")]  # in-place variants share an entry
    if node.op == "call_function":
        # a library's own op (transformers' grouped_mm_fallback) by its qualified name, so that
        # archc need not import the library to state its facts
        qualified = node.target.name() if isinstance(node.target, torch._ops.OpOverload) else None
        return [node.target, qualified] if qualified else [node.target]
    return [node.op]  # placeholder, get_attr, output


def facts_of(node: fx.Node, gm: fx.GraphModule) -> Optional[OpFacts]:
    """The registry entry of ``node``'s op, or None for an op archc does not know."""
    for key in key_candidates(node, gm):
        try:
            if key in REGISTRY:
                return REGISTRY[key]
        except TypeError:  # an unhashable target
            return None
    return None


def fact(node: fx.Node, gm: fx.GraphModule, name: str) -> Optional[Callable]:
    """The fact ``name`` of ``node``'s op, or None (unknown op, or the fact does not apply)."""
    entry = facts_of(node, gm)
    return None if entry is None else entry.get(name)


def layer_fact(layer: nn.Module, name: str) -> Any:
    """The fact ``name`` of a layer's type (or a base type: a searched layer subclasses its own)."""
    entry = next((REGISTRY[t] for t in type(layer).__mro__ if t in REGISTRY), None)
    return None if entry is None else entry.get(name)
