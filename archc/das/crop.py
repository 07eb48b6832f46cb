"""Crop all-zero border taps off convolution kernels; every output stays the same (up to float rounding).

After a differentiable filter-size search a kernel often has whole zero rows/columns along its
borders: a 5x5 whose outer ring is zero is really a 3x3. :func:`crop_kernels` replaces each such
``nn.Conv1d/2d/3d`` (zero padding, not transposed) with a smaller conv holding the smallest window
of taps that contains every non-zero one, and moves the padding so that every output position
reads the same input samples as before, for any input size. Symmetric non-negative padding stays
on the conv; anything else becomes an ``F.pad`` before it (negative pads crop the input; a
crop on one side and growth on another become two ``F.pad`` calls, growth first).
Stride, dilation, groups, bias and node names are unchanged. An all-zero kernel keeps one tap.

Example:
    >>> conv = nn.Conv2d(3, 8, 5, padding=2)
    >>> with torch.no_grad():
    ...     conv.weight[:, :, 0, :] = 0; conv.weight[:, :, :, 0] = 0   # top row, left column
    >>> gm = archc.trace(nn.Sequential(conv), (torch.randn(2, 3, 16, 16),))
    >>> crop_kernels(gm)
    {'0': ((5, 5), (4, 4))}
    >>> print(gm.code)   # pad = torch.nn.functional.pad(input_1, (1, 2, 1, 2)); _0 = getattr(self, "0")(pad)
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..meta import DTYPE, SHAPE
from .grouped_lowering import conv_like

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

Window = list[tuple[int, int]]  # per spatial dim: first and last kept tap (inclusive)
Pads = list[tuple[int, int]]  # per spatial dim: padding before and after


def _window(weight: torch.Tensor) -> Window:
    """The smallest window holding every non-zero tap (the centre tap if there is none)."""
    nonzero = weight.detach().ne(0)  # NaN counts as non-zero
    window = []
    for d, k in enumerate(weight.shape[2:]):
        live = nonzero.movedim(d + 2, 0).reshape(k, -1).any(1).nonzero().flatten().tolist()
        window.append((live[0], live[-1]) if live else ((k - 1) // 2, (k - 1) // 2))
    return window


def _explicit_padding(conv: nn.Module) -> Pads:
    """(before, after) per spatial dim, as PyTorch applies it, 'same' and 'valid' included."""
    if conv.padding == "valid":
        return [(0, 0)] * len(conv.kernel_size)
    if conv.padding == "same":  # ATen pads total//2 before, the rest after
        totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in conv.padding]


def _new_padding(conv: nn.Module, window: Window) -> Pads:
    """Padding that keeps each output reading the same input samples with the cropped kernel."""
    pads = _explicit_padding(conv)
    return [(before - t0 * d, after - (k - 1 - t1) * d)
            for (before, after), (t0, t1), d, k in zip(pads, window, conv.dilation, conv.kernel_size)]


def _cropped_conv(conv: nn.Module, window: Window, padding: tuple[int, ...]) -> nn.Module:
    """A fresh conv of the same type, device and dtype holding the window's taps."""
    index = (slice(None), slice(None), *(slice(t0, t1 + 1) for t0, t1 in window))
    new = conv_like(conv, conv.weight.detach()[index], None if conv.bias is None else conv.bias.detach(),
                    groups=conv.groups, padding=padding)
    new.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        new.bias.requires_grad_(conv.bias.requires_grad)
    return new.train(conv.training)


def _croppable(gm: fx.GraphModule, target: str, conv: nn.Module) -> bool:
    """A plain zero-padded conv whose parameters nothing but its own calls touch."""
    if type(conv) not in _CONVS or conv.padding_mode != "zeros":
        return False
    return not any(n.op == "get_attr" and str(n.target).startswith(target + ".") for n in gm.graph.nodes)


def _set_module(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def _pad_node(gm: fx.GraphModule, before: fx.Node, x, pads: Pads) -> fx.Node:
    """``F.pad(x, pads)`` inserted before ``before``, with its shape recorded."""
    flat = tuple(p for pair in reversed(pads) for p in pair)  # F.pad: last dim first
    with gm.graph.inserting_before(before):
        pad = gm.graph.call_function(F.pad, (x, flat))
    shape: Optional[tuple] = x.meta.get(SHAPE) if isinstance(x, fx.Node) else None
    if isinstance(shape, tuple):
        lead = len(shape) - len(pads)
        pad.meta[SHAPE] = (*shape[:lead], *(s + b + a for s, (b, a) in zip(shape[lead:], pads)))
        pad.meta[DTYPE] = x.meta.get(DTYPE)
    return pad


def _insert_pad(gm: fx.GraphModule, node: fx.Node, pads: Pads) -> None:
    """Pad the input of the conv call ``node``: grow first, then crop.

    ATen crops before it pads, so one ``F.pad(x, (2, -2))`` fails on inputs shorter than the
    crop even when the result would not be; growing first is exact for every input size.
    """
    x = node.args[0] if node.args else node.kwargs["input"]
    grow = [(max(b, 0), max(a, 0)) for b, a in pads]
    shrink = [(min(b, 0), min(a, 0)) for b, a in pads]
    for part in (grow, shrink):
        if any(b or a for b, a in part):
            x = _pad_node(gm, node, x, part)
    if node.args:
        node.args = (x, *node.args[1:])
    else:
        node.kwargs = {**node.kwargs, "input": x}


def _crop_one(gm: fx.GraphModule, target: str, calls: list[fx.Node]) -> Optional[tuple]:
    """Crop the conv at ``target`` (called by ``calls``); (old size, new size) or None if kept."""
    conv = gm.get_submodule(target)
    if not _croppable(gm, target, conv):
        return None
    window = _window(conv.weight)
    old = tuple(conv.kernel_size)
    new = tuple(t1 - t0 + 1 for t0, t1 in window)
    if new == old:
        return None
    pads = _new_padding(conv, window)
    if all(b == a >= 0 for b, a in pads):
        _set_module(gm, target, _cropped_conv(conv, window, tuple(b for b, _ in pads)))
    else:
        _set_module(gm, target, _cropped_conv(conv, window, (0,) * len(pads)))
        for node in calls:
            _insert_pad(gm, node, pads)
    return old, new


def crop_kernels(gm: fx.GraphModule) -> dict[str, tuple]:
    """Crop zero border taps off every plain zero-padded conv in ``gm`` (mutated in place).

    Returns ``{target: (old kernel_size, new kernel_size)}`` for each conv that shrank.
    Transposed convs, other padding modes, conv subclasses and convs whose parameters the graph
    reads directly (``get_attr``) are left alone.
    """
    calls: dict[str, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    cropped = {}
    for target, nodes in calls.items():
        sizes = _crop_one(gm, target, nodes)
        if sizes is not None:
            cropped[target] = sizes
    gm.graph.lint()
    gm.recompile()
    return cropped
