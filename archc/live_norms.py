"""Norms whose statistics span the open channels only: LayerNorm, RMSNorm and one-group
GroupNorm in a gated model.

A LayerNorm's mean and variance (an RMSNorm's mean square) mix every channel of the dim it
normalises, so removing a channel would change every other channel's output. During the
search a gated norm therefore computes its statistics over the channels whose gate is open
(``relu(theta) > 0``): closing a gate renormalises over the rest, and removing the closed
channels at compaction changes nothing. The compact model gets a plain norm over the
survivors (:func:`plain_norm`).

The gates reach the norm through the graph: ``norm(x, theta_a, theta_b, ...)``, one
``get_attr`` of each gate's ``theta`` whose group has channels in the normalised dim, and
``live_index[g, c]`` names the entry of gate ``g`` that channel ``c`` belongs to (the gate's
size for channels of other groups, which are always open).

Example:
    >>> norm = LiveLayerNorm.of(nn.LayerNorm(8), torch.arange(8)[None])
    >>> y = norm(torch.randn(2, 8), gate.theta)
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
from torch import nn

from .meta import tensor_shape

_RMS_NORM = getattr(nn, "RMSNorm", None)


def live_mask(thetas: tuple[torch.Tensor, ...], live_index: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """1.0 for each channel whose gates are all open, 0.0 for a closed one."""
    mask = None
    for theta, index in zip(thetas, live_index):
        open_ = torch.cat([theta.detach() > 0, theta.new_ones(1, dtype=torch.bool)])[index]
        mask = open_ if mask is None else mask & open_
    return mask.to(dtype)


class _Live:
    """What the live norms share: the ``live_index`` buffer and their construction."""

    live_index: torch.Tensor

    @classmethod
    def of(cls, norm: nn.Module, live_index: torch.Tensor) -> nn.Module:
        """The live form of ``norm`` (same parameters, same state_dict keys plus ``live_index``)."""
        live = cls.__new__(cls)
        live.__dict__.update({k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in norm.__dict__.items()})
        _register_live_index(live, live_index)
        return live


def _register_live_index(module: nn.Module, live_index: torch.Tensor) -> None:
    module.register_buffer("live_index", live_index.long().reshape(-1, live_index.shape[-1]).clone(),
                           persistent=False)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """The mean over ``dim`` of the channels where ``mask`` is 1 (of at least one channel, so a
    wholly closed group stays finite)."""
    return (values * mask).sum(dim, keepdim=True) / mask.sum().clamp_min(1)


class LiveLayerNorm(_Live, nn.LayerNorm):
    """LayerNorm over the last dim, with mean and variance taken over the open channels."""

    def forward(self, x: torch.Tensor, *thetas: torch.Tensor) -> torch.Tensor:
        mask = live_mask(thetas, self.live_index, x.dtype)
        centred = x - _masked_mean(x, mask)
        y = centred * torch.rsqrt(_masked_mean(centred.square(), mask) + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


if _RMS_NORM is not None:
    class LiveRMSNorm(_Live, _RMS_NORM):
        """RMSNorm over the last dim, with the mean square taken over the open channels."""

        def forward(self, x: torch.Tensor, *thetas: torch.Tensor) -> torch.Tensor:
            mask = live_mask(thetas, self.live_index, x.dtype)
            eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
            y = x * torch.rsqrt(_masked_mean(x.square(), mask) + eps)
            return y if self.weight is None else y * self.weight


class LiveGroupNorm(_Live, nn.GroupNorm):
    """GroupNorm with one group (PoolFormer's norm): mean and variance over the open channels
    (dim 1) at every position."""

    def forward(self, x: torch.Tensor, *thetas: torch.Tensor) -> torch.Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        mask = live_mask(thetas, self.live_index, x.dtype).view(shape)
        dims = tuple(range(1, x.dim()))
        count = (mask.sum() * math.prod(x.shape[2:])).clamp_min(1)
        centred = x - (x * mask).sum(dims, keepdim=True) / count
        y = centred * torch.rsqrt((centred.square() * mask).sum(dims, keepdim=True) / count + self.eps)
        if self.weight is not None:
            y = y * self.weight.view(shape)
        return y if self.bias is None else y + self.bias.view(shape)


class LiveReduction(nn.Module):
    """``torch.mean``, ``torch.var`` or ``torch.std`` over one channel dim, counting the open
    channels only: the statistics of a norm written by hand (``x.mean(1, keepdim=True)`` in
    ConvNeXt's channels-first LayerNorm, ``torch.var(x, -1)`` in timm's SimpleNorm). Its plain
    form, once every channel left is open, is the torch call itself (:meth:`plain_call`).

    Example:
        >>> live = LiveReduction("var", dim=-1, keepdim=True, correction=1, live_index=torch.arange(8)[None])
        >>> live(torch.randn(2, 8), gate.theta)
    """

    CALLS = {"mean": torch.mean, "var": torch.var, "std": torch.std}

    def __init__(self, op: str, dim: int, keepdim: bool, correction: float, live_index: torch.Tensor,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.op, self.dim, self.keepdim, self.correction, self.dtype = op, dim, keepdim, correction, dtype
        _register_live_index(self, live_index)

    def forward(self, x: torch.Tensor, *thetas: torch.Tensor) -> torch.Tensor:
        x = x if self.dtype is None else x.to(self.dtype)  # torch.mean(x, dtype=...) accumulates so
        shape = [1] * x.dim()
        shape[self.dim] = -1
        mask = live_mask(thetas, self.live_index, x.dtype).view(shape)
        out = _masked_mean(x, mask, self.dim)
        if self.op != "mean":  # the spread about the open channels' mean, as torch.var divides it
            spread = ((x - out).square() * mask).sum(self.dim, keepdim=True)
            out = spread / (mask.sum() - self.correction).clamp_min(1)
            out = out.sqrt() if self.op == "std" else out
        return out if self.keepdim else out.squeeze(self.dim)

    def plain_call(self) -> tuple:
        """``(function, args, kwargs)`` of the plain reduction, without the input."""
        if self.op != "mean":
            return self.CALLS[self.op], (self.dim,), {"correction": self.correction, "keepdim": self.keepdim}
        return torch.mean, (self.dim,), {"keepdim": self.keepdim, **({"dtype": self.dtype} if self.dtype else {})}

    def extra_repr(self) -> str:
        return f"{self.op}, dim={self.dim}, keepdim={self.keepdim}"


PLAIN_OF = {LiveLayerNorm: nn.LayerNorm, LiveGroupNorm: nn.GroupNorm}
if _RMS_NORM is not None:
    PLAIN_OF[LiveRMSNorm] = _RMS_NORM
LIVE_NORMS: tuple[type, ...] = tuple(PLAIN_OF)
LIVE_OF = {plain: live for live, plain in PLAIN_OF.items()}


def can_live(norm: nn.Module) -> bool:
    """Whether ``norm`` has a live form: a LayerNorm/RMSNorm over the last dim only, or a
    GroupNorm with one group."""
    if type(norm) is nn.GroupNorm:
        return norm.num_groups == 1
    return type(norm) in LIVE_OF and len(norm.normalized_shape) == 1


def live_dim(norm: nn.Module, rank: int) -> int:
    """The dim of the channels a (live) norm normalises: 1 for GroupNorm, a live reduction's
    own dim, else the last."""
    if isinstance(norm, LiveReduction):
        return norm.dim % rank
    return 1 if isinstance(norm, nn.GroupNorm) else rank - 1


def reduced_channel_dim(node) -> Optional[int]:
    """The one dim a plain ``torch.mean``/``var``/``std`` node reduces (non-negative), else None."""
    if node.op != "call_function" or node.target not in LiveReduction.CALLS.values() or len(node.args) < 2:
        return None
    dims = node.args[1]
    dims = [dims] if isinstance(dims, int) else list(dims) if isinstance(dims, (list, tuple)) else []
    shape = tensor_shape(node.args[0])
    rank = len(shape) if shape else 0
    return dims[0] % rank if len(dims) == 1 and rank else None


def live_reduction(node, live_index: torch.Tensor) -> LiveReduction:
    """The live form of the plain reduction ``node`` (see :func:`reduced_channel_dim`)."""
    op = next(name for name, fn in LiveReduction.CALLS.items() if fn is node.target)
    keepdim = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
    return LiveReduction(op, reduced_channel_dim(node), bool(keepdim), node.kwargs.get("correction", 1), live_index,
                         node.kwargs.get("dtype"))


def plain_norm(live: nn.Module) -> nn.Module:
    """The plain norm a live one becomes once every channel left is open."""
    plain = PLAIN_OF[type(live)].__new__(PLAIN_OF[type(live)])
    plain.__dict__.update({k: (copy.copy(v) if isinstance(v, (dict, set)) else v) for k, v in live.__dict__.items()})
    plain._buffers.pop("live_index", None)
    plain._non_persistent_buffers_set.discard("live_index")
    return plain
