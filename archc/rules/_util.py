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


def norm_dims(dims: Any, rank: int) -> list[int]:
    if dims is None:
        return list(range(rank))
    if isinstance(dims, int):
        dims = [dims]
    return sorted(d % rank for d in dims)
