"""FLOPs per example from recorded shapes: 2 x multiply-accumulates of convs, linears and matmuls.

Element-wise ops, norms and pooling are not counted (they are a small share of every model
archc targets); the figure is per example, the traced batch divided out.

Example:
    >>> archc.flops.count(archc.trace(model, (x,)))
"""
from __future__ import annotations

import math
import operator
from typing import Callable

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .meta import tensor_shape


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


def _conv(node: fx.Node, m: nn.Module) -> int:
    out = tensor_shape(node)
    per_output = (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, nn.modules.conv._ConvTransposeNd):  # every input pixel scatters a kernel
        return 2 * _numel(tensor_shape(node.args[0])) * (m.out_channels // m.groups) * math.prod(m.kernel_size)
    return 2 * _numel(out) * per_output


def _linear(node: fx.Node, m: nn.Linear) -> int:
    return 2 * _numel(tensor_shape(node)) * m.in_features


def _matmul(node: fx.Node) -> int:
    return 2 * _numel(tensor_shape(node)) * tensor_shape(node.args[0])[-1]


def _functional_conv(node: fx.Node) -> int:
    """``F.conv2d(x, w, ...)``: every output element costs one weight slice of MACs."""
    weight = tensor_shape(node.args[1])
    return 2 * _numel(tensor_shape(node)) * (_numel(weight[1:]) if weight else 0)


def _attention(node: fx.Node) -> int:
    q, k = tensor_shape(node.args[0]), tensor_shape(node.args[1])
    return 2 * _numel(q) * k[-2] + 2 * _numel(tensor_shape(node)) * k[-2]


MODULE_FLOPS: dict[type, Callable] = {
    nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Conv3d: _conv, nn.ConvTranspose1d: _conv,
    nn.ConvTranspose2d: _conv, nn.ConvTranspose3d: _conv, nn.Linear: _linear,
}
FUNCTION_FLOPS: dict = {
    operator.matmul: _matmul, torch.matmul: _matmul, torch.bmm: _matmul, "matmul": _matmul,
    "bmm": _matmul, F.scaled_dot_product_attention: _attention,
    F.conv1d: _functional_conv, F.conv2d: _functional_conv, F.conv3d: _functional_conv,
    torch.conv1d: _functional_conv, torch.conv2d: _functional_conv, torch.conv3d: _functional_conv,
}


def node_flops(node: fx.Node, gm: fx.GraphModule) -> int:
    """FLOPs of one node for the whole traced batch (0 for ops that are not counted)."""
    if tensor_shape(node) is None:
        return 0
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        for cls in type(m).__mro__:
            if cls in MODULE_FLOPS:
                return MODULE_FLOPS[cls](node, m)
        return 0
    if node.op in ("call_function", "call_method"):
        fn = FUNCTION_FLOPS.get(node.target)
        return fn(node) if fn else 0
    return 0


def count(gm: fx.GraphModule) -> int:
    """FLOPs per example of a traced (shape-annotated) GraphModule."""
    batch = 1
    for node in gm.graph.nodes:
        if node.op == "placeholder" and tensor_shape(node):
            batch = tensor_shape(node)[0] or 1
            break
    return sum(node_flops(n, gm) for n in gm.graph.nodes) // batch
