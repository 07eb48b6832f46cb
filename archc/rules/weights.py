"""What each layer's parameters do per channel: gate folding, the parameters that make a
channel, their cost in parameters and FLOPs, and the dim the channels are on.

These facts are declared for the same op keys as the layers' channel rules (:mod:`.layers`);
:mod:`archc.fold`, :mod:`archc.sparsity`, :mod:`archc.gate_costs` and :mod:`archc.flops` read
them through the one registry (:mod:`.registry`). FLOPs are 2 x multiply-accumulates of convs,
linears, matmuls and attention; element-wise ops, norms and pooling are not counted.
"""
from __future__ import annotations

import math

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..live_norms import LIVE_NORMS, LiveGroupNorm
from ..meta import tensor_shape
from .contract import einsum_terms
from .layers import BATCH_NORMS, CONVS, STAT_NORMS
from .registry import NA, declare

_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
aten = torch.ops.aten


def _numel(shape) -> int:
    return math.prod(shape) if shape else 1


# -- folding a gate's scale into the layer that makes its channels ---------------------------
def scale_out_channels(weight: torch.Tensor, dim: int, s: torch.Tensor) -> None:
    """Multiply ``weight``'s slices along ``dim`` by ``s`` (in place)."""
    shape = [1] * weight.dim()
    shape[dim] = -1
    weight.mul_(s.view(shape).to(weight.dtype))


def _scale_outputs(m: nn.Module, weight_dim: int, s: torch.Tensor) -> bool:
    scale_out_channels(m.weight.data, weight_dim, s)
    if m.bias is not None:
        m.bias.data.mul_(s)
    return True


def _fold_conv(m: nn.Module, dim: int, rank: int, s: torch.Tensor) -> bool:
    transposed = isinstance(m, _TRANSPOSED)
    if dim != 1 or (transposed and m.groups > 1):
        return False
    return _scale_outputs(m, 1 if transposed else 0, s)


def _fold_linear(m: nn.Linear, dim: int, rank: int, s: torch.Tensor) -> bool:
    return dim == rank - 1 and _scale_outputs(m, 0, s)


def _fold_affine(m: nn.Module, dim: int, rank: int, s: torch.Tensor) -> bool:
    if dim != 1 or getattr(m, "weight", None) is None:
        return False
    m.weight.data.mul_(s)
    if getattr(m, "bias", None) is not None:
        m.bias.data.mul_(s)
    return True


def _fold_last_affine(m: nn.Module, dim: int, rank: int, s: torch.Tensor) -> bool:
    """A LayerNorm/RMSNorm: its per-channel weight (and bias) along the last dim take the scale."""
    if dim != rank - 1 or getattr(m, "weight", None) is None:
        return False
    m.weight.data.mul_(s)
    if getattr(m, "bias", None) is not None:
        m.bias.data.mul_(s)
    return True


def _fold_embedding(m: nn.Embedding, dim: int, rank: int, s: torch.Tensor) -> bool:
    if dim != rank - 1:
        return False
    scale_out_channels(m.weight.data, 1, s)
    return True


# -- parameters per channel: (made, read) -----------------------------------------------------
def _conv_cost(m: nn.Module) -> tuple[float, float]:
    taps = math.prod(m.kernel_size)
    made = m.in_channels // m.groups * taps + (m.bias is not None)
    read = m.out_channels * taps if m.groups == 1 else 0.0  # grouped: whole groups, counted where made
    return made, read


def _linear_cost(m: nn.Linear) -> tuple[float, float]:
    return m.in_features + (m.bias is not None), m.out_features


def _affine_cost(m: nn.Module) -> tuple[float, float]:
    return float((getattr(m, "weight", None) is not None) + (getattr(m, "bias", None) is not None)), 0.0


def _embedding_cost(m: nn.Embedding) -> tuple[float, float]:
    return float(m.num_embeddings), 0.0


# -- FLOPs -----------------------------------------------------------------------------------
def _conv_flops(node: fx.Node, m: nn.Module) -> int:
    out = tensor_shape(node)
    per_output = (m.in_channels // m.groups) * math.prod(m.kernel_size)
    if isinstance(m, _TRANSPOSED):  # every input pixel scatters a kernel
        return 2 * _numel(tensor_shape(node.args[0])) * (m.out_channels // m.groups) * math.prod(m.kernel_size)
    return 2 * _numel(out) * per_output


def _linear_flops(node: fx.Node, m: nn.Linear) -> int:
    return 2 * _numel(tensor_shape(node)) * m.in_features


def _matmul_flops(node: fx.Node, m=None) -> int:
    return 2 * _numel(tensor_shape(node)) * tensor_shape(node.args[0])[-1]


def _einsum_flops(node: fx.Node, m=None) -> int:
    """A product over every letter's size, a multiply and an add each (one operand: a sum)."""
    terms = einsum_terms(node)
    if terms is None:
        return 0
    sizes = {}
    for term, op in zip(terms[0], node.args[1]):
        for letter, size in zip(term, tensor_shape(op)):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return (2 if len(terms[0]) > 1 else 1) * _numel(list(sizes.values()))


def _functional_conv_flops(node: fx.Node, m=None) -> int:
    """``conv(x, w, ...)`` with a computed ``w``: one weight slice of MACs per output element."""
    weight = tensor_shape(node.args[1])
    return 2 * _numel(tensor_shape(node)) * (_numel(weight[1:]) if weight else 0)


def _attention_flops(node: fx.Node, m=None) -> int:
    q, k = tensor_shape(node.args[0]), tensor_shape(node.args[1])
    return 2 * _numel(q) * k[-2] + 2 * _numel(tensor_shape(node)) * k[-2]


# -- the parameter dims an input channel is read through ---------------------------------------
def _conv_reads(m: nn.Module) -> list[tuple[str, int]]:
    """Each input channel reads one weight slice (a grouped conv's slices are per group)."""
    return [("weight", 0 if isinstance(m, _TRANSPOSED) else 1)] if m.groups == 1 else []


def _linear_reads(m: nn.Linear) -> list[tuple[str, int]]:
    return [("weight", 1)]


def _channels_at(dim: int):
    return lambda rank: dim


def _last(rank: int) -> int:
    return rank - 1


_MADE_BY_WEIGHT_AND_BIAS = [("weight", 0), ("bias", 0)]
declare(*[c for c in CONVS if c not in _TRANSPOSED], fold=_fold_conv, makes=_MADE_BY_WEIGHT_AND_BIAS,
        reads=_conv_reads, cost=_conv_cost, flops=_conv_flops, channel_dim=_channels_at(1))
declare(*_TRANSPOSED, fold=_fold_conv, makes=[("weight", 1), ("bias", 0)], reads=_conv_reads, cost=_conv_cost, flops=_conv_flops,
        channel_dim=_channels_at(1))
declare(nn.Linear, fold=_fold_linear, makes=_MADE_BY_WEIGHT_AND_BIAS, reads=_linear_reads, cost=_linear_cost, flops=_linear_flops,
        channel_dim=_last)
# per-channel layers: an input channel is the output channel its parameters make
declare(*BATCH_NORMS, nn.GroupNorm, LiveGroupNorm, fold=_fold_affine, makes=_MADE_BY_WEIGHT_AND_BIAS, reads=NA, cost=_affine_cost, flops=NA,
        channel_dim=_channels_at(1))
declare(nn.Embedding, fold=_fold_embedding, makes=[("weight", 1)], reads=NA, cost=_embedding_cost, flops=NA, channel_dim=_last)
# statistics over the last dim: pruned through their live form (archc.live_norms)
declare(*STAT_NORMS, *(n for n in LIVE_NORMS if n is not LiveGroupNorm), fold=_fold_last_affine, makes=_MADE_BY_WEIGHT_AND_BIAS, reads=NA, cost=_affine_cost,
        flops=NA, channel_dim=_last)
declare(torch.matmul, torch.bmm, reads=NA, flops=_matmul_flops)
declare(torch.ops.aten.einsum.default, torch.einsum, reads=NA, flops=_einsum_flops, scale_commutes=NA)
declare(F.scaled_dot_product_attention, reads=NA, flops=_attention_flops)
declare(*CONVS, nn.Linear, *BATCH_NORMS, nn.GroupNorm, nn.Embedding, *STAT_NORMS, *LIVE_NORMS, torch.matmul, torch.bmm,
        F.scaled_dot_product_attention, scale_commutes=NA)  # they mix channels, or normalise them
# convs whose weight is computed: captured convs with a weight norm (kept as ATen calls, with
# a channel rule in .layers) and the per-pattern convs of archc.das.grouped_lowering (no
# channel rule, so they block)
declare(F.conv1d, F.conv2d, F.conv3d, analyse=NA, shrink=NA)
declare(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.conv1d.padding,
        aten.conv2d.padding, aten.conv3d.padding, F.conv1d, F.conv2d, F.conv3d,
        permutes=NA, fold=NA, makes=NA, reads=NA, cost=NA, channel_dim=NA, flops=_functional_conv_flops,
        scale_commutes=NA)
