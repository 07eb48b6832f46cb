"""Per-op channel rules, in tables keyed by op (module type, function, or method name).

``ANALYSE[key](node, ctx)`` tells an :class:`archc.analysis.Analysis` how the op's dims
relate; ``SHRINK[key](node, cc)`` rewrites the op once channels are removed (slicing
weights, fixing size arguments). An op with no analysis rule makes every channel it touches
unprunable; an op with no shrink rule needs none (its output shape follows its inputs).
``PERMUTES[key](node)`` says the op treats its channels independently and its shrink rule
gathers them by index, so a group of channels may be reordered through it (see
:mod:`archc.das.permute`); an op missing there keeps the channel order it had.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch.fx as fx

ANALYSE: dict[Any, Callable] = {}
SHRINK: dict[Any, Callable] = {}
PERMUTES: dict[Any, Callable[[fx.Node], bool]] = {}


def analyse_rule(*keys: Any) -> Callable:
    """Register an analysis rule for each of ``keys`` (a module type, a function, a method name)."""

    def deco(fn: Callable) -> Callable:
        for k in keys:
            ANALYSE[k] = fn
        return fn

    return deco


def shrink_rule(*keys: Any) -> Callable:
    """Register a compaction rule for each of ``keys``."""

    def deco(fn: Callable) -> Callable:
        for k in keys:
            SHRINK[k] = fn
        return fn

    return deco


def _always(node: fx.Node) -> bool:
    return True


def permutation_rule(*keys: Any, when: Callable[[fx.Node], bool] = _always) -> None:
    """Declare that the ops ``keys`` commute with any reordering of their channels (if ``when``)."""
    for k in keys:
        PERMUTES[k] = when


def permutes(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node``'s op lets the channels it touches be reordered."""
    rule = lookup(PERMUTES, node, gm)
    return rule is not None and rule(node)


def rule_key_candidates(node: fx.Node, gm: fx.GraphModule) -> list:
    """Keys to try, most specific first: module types along the MRO, else the target."""
    if node.op == "call_module":
        return list(type(gm.get_submodule(node.target)).__mro__)
    if node.op == "call_method":
        return [node.target, node.target.rstrip("_")]  # in-place variants share a rule
    if node.op == "call_function":
        return [node.target]
    return [node.op]  # placeholder, get_attr, output


def lookup(table: dict, node: fx.Node, gm: fx.GraphModule) -> Optional[Callable]:
    for key in rule_key_candidates(node, gm):
        try:
            if key in table:
                return table[key]
        except TypeError:  # unhashable target
            return None
    return None


def describe(node: fx.Node) -> str:
    """A short name of the op for reports: module type, function or method name."""
    if node.op == "call_module":
        return f"{node.target} ({type(node.graph.owning_module.get_submodule(node.target)).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{node.name} ({target})"


from . import contract, indexing, io, layers, pointwise, shapes  # noqa: E402,F401  (register the rules)
