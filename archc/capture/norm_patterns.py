"""Norms written out by hand, recognised and raised to the ``torch.nn`` layer they compute.

Llama, Qwen2, Mistral, T5 and most decoder models write RMSNorm as arithmetic::

    variance = x.pow(2).mean(-1, keepdim=True)
    return self.weight * (x * torch.rsqrt(variance + eps))

which torch.export captures as six ATen ops. Left so, the mean over channels blocks the
hidden dim; raised to ``nn.RMSNorm`` it gets the same live-channel treatment as any norm.
Only the exact form is recognised (a cast to the tensor's own dtype may sit in between); the
captured graph is checked against the model afterwards, as every capture is.

Weight standardisation (timm's ``StdConv2d`` and ``ScaledStdConv2d``: NF-Nets, BiT) is a norm
of a conv's weight, written as ``batch_norm(w.reshape(1, out, -1), gain, training=True)``. It is
rewritten as means over the kernel and then over input channels, so that the mean over input
channels becomes live (:mod:`archc.live_norms`) when a gate covers them.

Example: ``rms_norm_by_hand(cx, node)`` returns the ``nn.RMSNorm`` call, or None.
"""
from __future__ import annotations

import operator
from typing import Optional

import torch
import torch.fx as fx
from torch import nn

aten = torch.ops.aten


def _skip_casts(x):
    """``x`` without the ``.to(dtype)`` casts that change nothing (the dtype it already has)."""
    while isinstance(x, fx.Node) and x.op == "call_function" and x.target in (aten.to.dtype, aten._to_copy.default):
        source, dtype = x.args[0], x.meta["val"].dtype
        if not isinstance(source, fx.Node) or source.meta["val"].dtype != dtype:
            break
        x = source
    return x


def _is(x, op) -> bool:
    return isinstance(x, fx.Node) and x.op == "call_function" and x.target == op


def _mean_square_root(r, x) -> Optional[float]:
    """The eps of ``r = rsqrt(mean(x ** 2, [-1], keepdim=True) + eps)``, else None."""
    if not _is(r, aten.rsqrt.default) or not _is(r.args[0], aten.add.Tensor):
        return None
    mean, eps = r.args[0].args[:2]
    if not isinstance(eps, float) or not _is(mean, aten.mean.dim) or list(mean.args[1]) not in ([-1], [x.meta["val"].dim() - 1]):
        return None
    if not (len(mean.args) > 2 and mean.args[2]) or not _is(mean.args[0], aten.pow.Tensor_Scalar):
        return None
    square = mean.args[0]
    return eps if square.args[1] == 2 and _skip_casts(square.args[0]) is x else None


def rms_norm_by_hand(cx, node: fx.Node) -> Optional[fx.Node]:
    """``weight * (x * rsqrt(mean(x**2, -1, keepdim) + eps))`` (``node`` is the outer product)."""
    if not hasattr(nn, "RMSNorm") or not _is(node, aten.mul.Tensor) or len(node.args) != 2:
        return None
    for weight, normed in (node.args, node.args[::-1]):
        normed = _skip_casts(normed)
        if not (isinstance(weight, fx.Node) and cx.are_parameters(cx.env[weight]) and _is(normed, aten.mul.Tensor)):
            continue  # (``weight`` is a node of the captured graph; are_parameters reads the new one)
        w = cx.tensor(cx.env[weight])
        for x, r in (normed.args, normed.args[::-1]):
            x = _skip_casts(x)
            eps = _mean_square_root(r, x) if isinstance(x, fx.Node) else None
            if eps is None or w.dim() != 1 or x.meta["val"].shape[-1] != w.shape[0]:
                continue
            layer = nn.RMSNorm(w.shape[0], eps=eps, device="meta")
            layer._parameters["weight"] = w
            return cx.call_layer(node, layer, cx.env[weight], cx.env[x])
    return None


def weight_standardisation(cx, x, weight, bias, mean, var, training, eps) -> Optional[fx.Node]:
    """``batch_norm(w.reshape(1, out, -1), weight, bias, training=True)`` on a parameter ``w``:
    each output channel's weights shifted and scaled by their mean and (biased) variance over
    the fan-in, then by ``weight`` and ``bias``; as means the channel rules read, or None.

    Removing a closed input channel leaves the live statistics as they were, where the
    batch_norm form would count its weights in every output channel's mean."""
    if not training or mean is not None or var is not None or not _is_method(x, ("reshape", "view")):
        return None
    w = x.args[0]
    if not (isinstance(w, fx.Node) and cx.are_parameters(w)):
        return None
    shape = tuple(cx.tensor(w).shape)
    if len(shape) < 2 or list(x.args[1]) != [1, shape[0], -1]:
        return None
    kernel = list(range(2, len(shape)))

    def mean_over_fan_in(t: fx.Node) -> fx.Node:  # over the kernel, then over input channels
        if kernel:
            t = cx.call_function(torch.mean, (t, kernel), {"keepdim": True})
        return cx.call_function(torch.mean, (t, 1), {"keepdim": True})

    # as ATen's batch_norm does it on the CPU, so that a deep NF-Net's output does not move:
    # statistics accumulated in float64, then w * alpha + beta in the weight's dtype
    exact = cx.call_method("to", (w, torch.float64), {})
    centre = mean_over_fan_in(exact)
    variance = mean_over_fan_in(cx.call_function(torch.square, (cx.call_function(operator.sub, (exact, centre), {}),), {}))
    inv_std = cx.call_function(torch.rsqrt, (cx.call_function(operator.add, (variance, eps), {}),), {})
    alpha = cx.call_method("type_as", (inv_std, w), {})
    per_channel = [shape[0]] + [1] * (len(shape) - 1)
    if weight is not None:
        alpha = cx.call_function(operator.mul, (alpha, cx.call_method("reshape", (weight, per_channel), {})), {})
    shift = cx.call_function(operator.mul, (cx.call_method("type_as", (centre, w), {}), alpha), {})
    scaled = cx.call_function(operator.mul, (w, alpha), {})
    if bias is None:
        out = cx.call_function(operator.sub, (scaled, shift), {})
    else:
        beta = cx.call_function(operator.sub, (cx.call_method("reshape", (bias, per_channel), {}), shift), {})
        out = cx.call_function(operator.add, (scaled, beta), {})
    return cx.call_method("reshape", (out, [1, shape[0], -1]), {})


def _is_method(x, names: tuple) -> bool:
    return isinstance(x, fx.Node) and x.op == "call_method" and x.target in names
