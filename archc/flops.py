"""FLOPs per example from recorded shapes: 2 x multiply-accumulates of convs, linears and matmuls.

Element-wise ops, norms and pooling are not counted (they are a small share of every model
archc targets); the figure is per example, the traced batch divided out.

Example:
    >>> archc.flops.count(archc.trace(model, (x,)))
"""
from __future__ import annotations

import torch.fx as fx

from .meta import tensor_shape
from .rules import fact


def node_flops(node: fx.Node, gm: fx.GraphModule) -> int:
    """FLOPs of one node for the whole traced batch (0 for ops that are not counted)."""
    if tensor_shape(node) is None:
        return 0
    flops = fact(node, gm, "flops")
    if flops is None:
        return 0
    return flops(node, gm.get_submodule(node.target) if node.op == "call_module" else None)


def count(gm: fx.GraphModule) -> int:
    """FLOPs per example of a traced (shape-annotated) GraphModule."""
    batch = 1
    for node in gm.graph.nodes:
        if node.op == "placeholder" and tensor_shape(node):
            batch = tensor_shape(node)[0] or 1
            break
    return sum(node_flops(n, gm) for n in gm.graph.nodes) // batch
