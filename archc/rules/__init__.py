"""Per-op channel rules, registered in one table of op facts (:mod:`archc.rules.registry`).

``analyse_rule`` tells an :class:`archc.analysis.Analysis` how the op's dims relate;
``shrink_rule`` rewrites the op once channels are removed (slicing weights, fixing size
arguments). An op with no analysis rule makes every channel it touches unprunable; an op
with no shrink rule needs none (its output shape follows its inputs). ``permutation_rule``
says the op treats its channels independently and its shrink rule gathers them by index, so
a group of channels may be reordered through it (see :mod:`archc.das.permute`).
"""
from __future__ import annotations

from typing import Any, Callable

import torch.fx as fx

from .registry import NA, REGISTRY, WEIGHTLESS, declare, fact, facts_of, layer_fact  # noqa: F401


def analyse_rule(*keys: Any, **facts: Any) -> Callable:
    """Register an analysis rule for each of ``keys`` (a layer type, a function, a method name),
    with any other ``facts`` of those ops (see :mod:`archc.rules.registry`)."""

    def deco(fn: Callable) -> Callable:
        declare(*keys, analyse=fn, **facts)
        return fn

    return deco


def shrink_rule(*keys: Any) -> Callable:
    """Register a compaction rule for each of ``keys``."""

    def deco(fn: Callable) -> Callable:
        declare(*keys, shrink=fn)
        return fn

    return deco


def _always(node: fx.Node) -> bool:
    return True


def permutation_rule(*keys: Any, when: Callable[[fx.Node], bool] = _always) -> None:
    """Declare that the ops ``keys`` commute with any reordering of their channels (if ``when``)."""
    declare(*keys, permutes=when)


def permutes(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node``'s op lets the channels it touches be reordered."""
    rule = fact(node, gm, "permutes")
    return rule is not None and rule(node)


def describe(node: fx.Node) -> str:
    """A short name of the op for reports: module type, function or method name."""
    if node.op == "call_module":
        return f"{node.target} ({type(node.graph.owning_module.get_submodule(node.target)).__name__})"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{node.name} ({target})"


from . import contract, indexing, io, layers, norms, pointwise, shapes, weights  # noqa: E402,F401  (register)
