"""Small helpers shared by the rule files."""
from __future__ import annotations

from typing import Any

import torch.fx as fx
from torch import nn

from ..meta import tensor_shape


def module(node: fx.Node) -> nn.Module:
    return node.graph.owning_module.get_submodule(node.target)


def is_tensor(x: Any) -> bool:
    return tensor_shape(x) is not None


def arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Positional-or-keyword argument ``name`` of a call node."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def couple_same(ctx, a: fx.Node, b: fx.Node, flow: bool, skip=()) -> None:
    """Couple every dim of ``a`` with the same dim of ``b`` (same rank), except ``skip``."""
    for d in range(len(tensor_shape(a))):
        if d not in skip:
            ctx.couple(a, d, b, d, flow=flow)


def live_statistics(ctx, x: fx.Node, dim: int) -> None:
    """``x``'s dim ``dim`` feeds statistics that count open channels only (a live norm or
    reduction). Of activations, removed channels must still be zero there (``consume``); of
    weights (weight standardisation), the statistics read the gates and the weights of a closed
    channel stay nonzero, so nothing asks for a gate on them."""
    if ctx.from_parameters(x):
        ctx.handle(x, dim)
    else:
        ctx.consume(x, dim)


def norm_dims(dims: Any, rank: int) -> list[int]:
    if dims is None:
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted(d % rank for d in dims)


def expanded_dims(node: Any) -> set[int]:
    """The dims of ``node`` that an ``expand``/``expand_as`` broadcast from size 1: along them
    every index holds a copy of one value (``repeat_kv``'s key/value copies, an expanded norm)."""
    if not isinstance(node, fx.Node) or node.op != "call_method" or node.target not in ("expand", "expand_as"):
        return set()
    src, out = tensor_shape(node.args[0]), tensor_shape(node)
    offset = len(out) - len(src)
    return {d for d in range(len(out)) if out[d] > 1 and (d < offset or src[d - offset] == 1)}
