"""Named ``node.meta`` keys that archc analyses write and rewrites read.

``archc.shape``: a tuple for a tensor value, a list of tuples for a tuple of tensors,
``None`` for anything else. ``archc.dtype``: the tensor's dtype (or ``None``).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.fx as fx

SHAPE = "archc.shape"
DTYPE = "archc.dtype"
VALUE = "archc.value"  # the example value of a non-tensor node (sizes and arithmetic on them)


def record_value(node: fx.Node, value: Any) -> None:
    """Write the shape and dtype of ``value`` into ``node.meta``."""
    if isinstance(value, torch.Tensor):
        node.meta[SHAPE], node.meta[DTYPE] = tuple(value.shape), value.dtype
    elif isinstance(value, (tuple, list)) and value and all(isinstance(v, torch.Tensor) for v in value):
        node.meta[SHAPE] = [tuple(v.shape) for v in value]
        node.meta[DTYPE] = value[0].dtype
    else:
        node.meta[SHAPE], node.meta[DTYPE] = None, None
        if isinstance(value, (int, float, bool, torch.Size)) or (
            isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value)
        ):
            node.meta[VALUE] = tuple(value) if isinstance(value, torch.Size) else value


def tensor_shape(node: Any) -> Optional[tuple]:
    """The recorded shape of ``node`` if it is an fx node holding a single tensor."""
    if not isinstance(node, fx.Node):
        return None
    shape = node.meta.get(SHAPE)
    return shape if isinstance(shape, tuple) else None


class ShapeRecorder(fx.Interpreter):
    """Runs a GraphModule and records every node's shape: use after a rewrite.

    Example:
        >>> ShapeRecorder(gm).run(*example_inputs)   # mutates node.meta only
    """

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n.op != "output":
            record_value(n, value)
        return value


@contextlib.contextmanager
def preserved_buffers(module: torch.nn.Module) -> Iterator[None]:
    """Run code on ``module`` without leaving a trace in its buffers (BatchNorm statistics)."""
    saved = {name: b.detach().clone() for name, b in module.named_buffers()}
    try:
        yield
    finally:
        with torch.no_grad():
            for name, b in module.named_buffers():
                if name in saved and b.shape == saved[name].shape:
                    b.copy_(saved[name])


def record_shapes(gm: fx.GraphModule, inputs: Optional[Sequence[torch.Tensor]] = None) -> None:
    """Re-record shapes on ``gm`` by running it on ``inputs`` (default: random ones)."""
    from .capture.inputs import random_inputs  # capture imports this module

    inputs = random_inputs(gm) if inputs is None else inputs
    with torch.no_grad(), preserved_buffers(gm):
        ShapeRecorder(gm).run(*inputs)
