"""ATen ops that take parameters, lowered to the ``torch.nn`` layer that computes them.

``aten.conv2d(x, w, b, ...)`` whose ``w`` and ``b`` are parameters becomes a call of an
``nn.Conv2d`` holding those very parameters, named after the module that owned them. The
layer is built from the op's own arguments, not copied from the user's module, so a fused
layer (timm's ``BatchNormAct2d`` calls ``F.batch_norm`` and then an activation) becomes a
plain ``nn.BatchNorm2d`` followed by the activation. An op whose weight is computed (weight
norm, a weight shared through arithmetic) returns ``None``: it stays an ATen call.

Example: ``LOWERINGS[torch.ops.aten.linear](cx, node, x, w, b)`` adds ``nn.Linear`` at ``w``'s owner.
"""
from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, Optional

import torch
from torch import nn

from .norm_patterns import weight_standardisation

aten = torch.ops.aten
_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSES = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_BATCH_NORMS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_INSTANCE_NORMS = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}


def _with_tensors(layer: nn.Module, **tensors: Optional[torch.Tensor]) -> nn.Module:
    """``layer`` (built on the meta device) holding the given parameters and buffers."""
    for name, t in tensors.items():
        if name in layer._parameters or isinstance(t, nn.Parameter):
            layer._parameters[name] = t
        else:
            layer._buffers[name] = t
    return layer


def _conv(dims: int) -> Callable:
    def lower(cx, node, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        if not cx.are_parameters(weight, bias):
            return None
        w = cx.tensor(weight)
        layer = _CONVS[dims](w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=stride,
                             padding=padding, dilation=dilation, groups=groups, bias=bias is not None,
                             device="meta")
        return cx.call_layer(node, _with_tensors(layer, weight=w, bias=cx.tensor(bias)), weight, x)

    return lower


def _conv_transpose(dims: int) -> Callable:
    def lower(cx, node, x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
              dilation=1):
        if not cx.are_parameters(weight, bias):
            return None
        w = cx.tensor(weight)
        layer = _CONV_TRANSPOSES[dims](w.shape[0], w.shape[1] * groups, tuple(w.shape[2:]), stride=stride,
                                       padding=padding, output_padding=output_padding, groups=groups,
                                       bias=bias is not None, dilation=dilation, device="meta")
        return cx.call_layer(node, _with_tensors(layer, weight=w, bias=cx.tensor(bias)), weight, x)

    return lower


def _linear(cx, node, x, weight, bias=None):
    """``nn.Linear``; a bias computed in forward (BEiT's ``cat((q_bias, zeros, v_bias))``) is
    added after a Linear without one, so its pieces keep their own parameters and buffers."""
    if not cx.are_parameters(weight):
        return None
    computed = bias is not None and not cx.are_parameters(bias)
    w = cx.tensor(weight)
    layer = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None and not computed, device="meta")
    out = cx.call_layer(node, _with_tensors(layer, weight=w, bias=None if computed else cx.tensor(bias)), weight, x)
    return cx.call_function(operator.add, (out, bias), {}) if computed else out


def _batch_norm(cx, node, x, weight, bias, mean, var, training, momentum, eps, *_):
    """A BatchNorm layer when a BatchNorm module (timm's BatchNormAct2d too) ran the op and
    follows the model's train/eval mode: then the layer switches as the user's did. A frozen
    BatchNorm (``bn.eval()`` in a training model) or ``F.batch_norm`` in user code stays the
    ATen call, whose mode was fixed at capture. A batch_norm of a conv's weight is weight
    standardisation (:func:`.norm_patterns.weight_standardisation`)."""
    owner = cx.running_module(node)
    if not isinstance(owner, nn.modules.batchnorm._BatchNorm) or owner.training != cx.model.training:
        return weight_standardisation(cx, x, weight, bias, mean, var, training, eps)
    if not cx.are_parameters(weight, bias) or (mean is None) != (var is None):
        return None
    shape = cx.example_shape(node)
    layer = _BATCH_NORMS[len(shape)](shape[1], eps=eps, momentum=owner.momentum, affine=weight is not None,
                                     track_running_stats=mean is not None, device="meta")
    layer = _with_tensors(layer, weight=cx.tensor(weight), bias=cx.tensor(bias), running_mean=cx.tensor(mean),
                          running_var=cx.tensor(var),
                          num_batches_tracked=owner.num_batches_tracked if mean is not None else None)
    if weight is None and mean is None:
        return cx.call_new_layer(node, layer, x)
    return cx.call_layer(node, layer, weight if weight is not None else mean, x)


def _instance_norm(cx, node, x, weight, bias, mean, var, use_input_stats, momentum, eps, *_):
    if not cx.are_parameters(weight, bias) or mean is not None or not use_input_stats:
        return None
    shape = cx.example_shape(node)
    layer = _INSTANCE_NORMS[len(shape)](shape[1], eps=eps, momentum=momentum, affine=weight is not None,
                                        device="meta")
    if weight is None:
        return cx.call_new_layer(node, layer, x)
    layer = _with_tensors(layer, weight=cx.tensor(weight), bias=cx.tensor(bias))
    return cx.call_layer(node, layer, weight, x)


def _layer_norm(cx, node, x, normalized_shape, weight=None, bias=None, eps=1e-5, *_):
    """``nn.LayerNorm``; without a weight (a norm followed by its own modulation) one with
    ``elementwise_affine=False``, so that it gets a live form too."""
    if not cx.are_parameters(weight, bias) or (weight is None and bias is not None):
        return None
    if weight is None:
        return cx.call_new_layer(node, nn.LayerNorm(list(normalized_shape), eps=eps, elementwise_affine=False), x)
    layer = nn.LayerNorm(list(normalized_shape), eps=eps, bias=bias is not None, device="meta")
    return cx.call_layer(node, _with_tensors(layer, weight=cx.tensor(weight), bias=cx.tensor(bias)), weight, x)


def _rms_norm(cx, node, x, normalized_shape, weight=None, eps=None):
    if not cx.are_parameters(weight) or not hasattr(nn, "RMSNorm"):
        return None
    if weight is None:
        return cx.call_new_layer(node, nn.RMSNorm(list(normalized_shape), eps=eps, elementwise_affine=False), x)
    layer = nn.RMSNorm(list(normalized_shape), eps=eps, device="meta")
    return cx.call_layer(node, _with_tensors(layer, weight=cx.tensor(weight)), weight, x)


def _group_norm(cx, node, x, num_groups, weight=None, bias=None, eps=1e-5, *_):
    """``nn.GroupNorm``, also without a bias (timm's ``GroupNorm1NoBias``) where this torch's
    GroupNorm takes ``bias=False``."""
    if weight is None or not cx.are_parameters(weight, bias):
        return None
    if bias is None and "bias" not in inspect.signature(nn.GroupNorm).parameters:
        return None
    layer = nn.GroupNorm(num_groups, cx.tensor(weight).shape[0], eps=eps, device="meta",
                         **({} if bias is not None else {"bias": False}))
    return cx.call_layer(node, _with_tensors(layer, weight=cx.tensor(weight), bias=cx.tensor(bias)), weight, x)


def _embedding(cx, node, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    if not cx.are_parameters(weight):
        return None
    w = cx.tensor(weight)
    layer = nn.Embedding(w.shape[0], w.shape[1], padding_idx=None if padding_idx < 0 else padding_idx,
                         scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, device="meta")
    return cx.call_layer(node, _with_tensors(layer, weight=w), weight, indices)


def _prelu(cx, node, x, weight):
    if not cx.are_parameters(weight):
        return None
    w = cx.tensor(weight)
    layer = nn.PReLU(w.numel(), device="meta")
    return cx.call_layer(node, _with_tensors(layer, weight=w), weight, x)


def _dropout(cx, node, x, p, train=None):
    """An ``nn.Dropout`` that ran the op becomes one, so that ``train()``/``eval()`` switch it;
    ``F.dropout`` in user code keeps the flag it was captured with (MC dropout stays on)."""
    if type(cx.running_module(node)) is not nn.Dropout:
        return None
    return cx.call_new_layer(node, nn.Dropout(p), x)


MODULE_LOWERINGS: dict[Any, Callable] = {
    aten.conv1d: _conv(1), aten.conv2d: _conv(2), aten.conv3d: _conv(3),
    aten.conv_transpose1d: _conv_transpose(1), aten.conv_transpose2d: _conv_transpose(2),
    aten.conv_transpose3d: _conv_transpose(3),
    aten.linear: _linear, aten.batch_norm: _batch_norm, aten.instance_norm: _instance_norm,
    aten.layer_norm: _layer_norm, aten.rms_norm: _rms_norm, aten.group_norm: _group_norm,
    aten.embedding: _embedding, aten.prelu: _prelu, aten.dropout: _dropout,
}
