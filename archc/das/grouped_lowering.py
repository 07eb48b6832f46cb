"""Lower a conv with learned grouped connectivity (``P``, ``S``) into a compact, exact computation.

The DAS grouped-convolution search (Shin, Packer & Song) scales a conv's weight by
``(P @ S)[i, o]``. After thresholding, column ``k`` of ``P`` is a pattern: input set
``I_k = nonzero(P[:, k])``, assigned by row ``k`` of ``S`` to outputs ``O_k = nonzero(S[k])``.
By linearity the conv is the sum over patterns of a conv from ``x[:, I_k]`` to outputs
``O_k`` with weight ``W[O_k][:, I_k] * P[I_k, k] * S[k, O_k]``. :func:`lower_grouped_conv`
emits one of three exact forms:

* ``"grouped"``: disjoint equal-size input sets, disjoint equal-size output sets covering
  every output: gather inputs, one ``groups=p`` conv, restore the output order.
* ``"patterns"``: one small conv per pattern, combined by a fixed 0/1 1x1 conv (plus bias),
  or by a permutation when the output sets partition the outputs.
* ``"dense"``: no pattern survives, or the compact form has no fewer weights.

Example:
    >>> gm = archc.trace(model, (x,))
    >>> node = next(n for n in gm.graph.nodes if n.target == "conv")
    >>> lower_grouped_conv(gm, node, P * (P.abs() >= t), S * (S.abs() >= t))
    'grouped'
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from archc.errors import CompactionError, node_error
from archc.meta import DTYPE, SHAPE

_CONVS = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}
LOWERABLE_CONVS = tuple(_CONVS)  # the convs a grouped-conv search can be inserted on


def surviving_patterns(P: torch.Tensor, S: torch.Tensor) -> list[tuple[int, list[int], list[int]]]:
    """``(k, I_k, O_k)`` for every pattern with a non-empty input and output set."""
    out = []
    for k in range(P.shape[1]):
        ins = torch.nonzero(P[:, k]).flatten().tolist()
        outs = torch.nonzero(S[k]).flatten().tolist()
        if ins and outs:
            out.append((k, ins, outs))
    return out


def disjoint(sets: list[list[int]]) -> bool:
    return sum(len(s) for s in sets) == len({i for s in sets for i in s})


def describe_patterns(P: torch.Tensor, S: torch.Tensor) -> dict:
    """A summary of the surviving patterns of thresholded ``P``, ``S`` (for reports).

    Example: ``describe_patterns(P, S)["n_patterns"]``.
    """
    pats = surviving_patterns(P.detach(), S.detach())
    ins, outs = [p[1] for p in pats], [p[2] for p in pats]
    covered = {o for s in outs for o in s}
    return {
        "n_patterns": len(pats), "patterns": [p[0] for p in pats],
        "in_sizes": [len(s) for s in ins], "out_sizes": [len(s) for s in outs],
        "inputs_disjoint": disjoint(ins), "outputs_disjoint": disjoint(outs),
        "outputs_covered": len(covered), "covers_outputs": len(covered) == S.shape[1],
        "unused_inputs": P.shape[0] - len({i for s in ins for i in s}),
    }


def _is_grouped(pats, c_out: int) -> bool:
    ins, outs = [p[1] for p in pats], [p[2] for p in pats]
    return (disjoint(ins) and disjoint(outs) and len({len(s) for s in ins}) == 1
            and len({len(s) for s in outs}) == 1 and sum(map(len, outs)) == c_out)


def lowered_form(P: torch.Tensor, S: torch.Tensor) -> tuple[str, list]:
    """The form :func:`lower_grouped_conv` emits for thresholded ``P``, ``S``, and the patterns."""
    pats = surviving_patterns(P, S)
    if not pats or sum(len(i) * len(o) for _, i, o in pats) >= P.shape[0] * S.shape[1]:
        return "dense", pats
    return ("grouped" if _is_grouped(pats, S.shape[1]) else "patterns"), pats


def _block(W, P, S, k: int, ins: list[int], outs: list[int]) -> torch.Tensor:
    """Pattern ``k``'s weight ``W[O_k][:, I_k] * P[I_k, k] * S[k, O_k]``."""
    i, o = torch.as_tensor(ins), torch.as_tensor(outs)
    scale = S[k, o][:, None] * P[i, k][None, :]
    return W[o][:, i] * scale.view(*scale.shape, *([1] * (W.dim() - 2)))


def conv_like(conv: nn.Module, weight: torch.Tensor, bias: Optional[torch.Tensor], *,
              groups: int = 1, padding=None) -> nn.Module:
    """A conv of ``conv``'s type, stride, dilation and padding mode holding ``weight`` and
    ``bias``; its channels and kernel size come from ``weight``, its padding from ``conv``
    unless given."""
    new = type(conv)(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=conv.stride,
                     padding=conv.padding if padding is None else padding, dilation=conv.dilation,
                     groups=groups, bias=bias is not None, padding_mode=conv.padding_mode,
                     device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def _exists(gm: fx.GraphModule, name: str) -> bool:
    parent, _, attr = name.rpartition(".")
    try:
        return hasattr(gm.get_submodule(parent) if parent else gm, attr)
    except AttributeError:
        return False


def _free_name(gm: fx.GraphModule, base: str) -> str:
    name, i = base, 1
    while _exists(gm, name):
        name, i = f"{base}{i}", i + 1
    return name


def _add_tensor(gm: fx.GraphModule, base: str, value: torch.Tensor, param: bool = False) -> str:
    """Register ``value`` as a buffer (or parameter) under a free name derived from ``base``."""
    name = _free_name(gm, base)
    parent, _, attr = name.rpartition(".")
    holder = gm.get_submodule(parent) if parent else gm
    if param:
        holder.register_parameter(attr, nn.Parameter(value.detach().clone()))
    else:
        holder.register_buffer(attr, value.detach().clone())
    return name


class Emitter:
    """Inserts nodes before a layer's call ``node``, recording each one's shape and dtype;
    new modules and tensors are named after the layer."""

    def __init__(self, gm: fx.GraphModule, node: fx.Node) -> None:
        self.gm, self.node, self.base = gm, node, str(node.target)
        self.dtype = node.meta.get(DTYPE)

    def _emit(self, op: str, target, args, shape) -> fx.Node:
        with self.gm.graph.inserting_before(self.node):
            new = self.gm.graph.create_node(op, target, args)
        new.meta[SHAPE], new.meta[DTYPE] = (tuple(shape) if shape is not None else None), self.dtype
        return new

    def const(self, suffix: str, value: torch.Tensor, param: bool = False) -> fx.Node:
        node = self._emit("get_attr", _add_tensor(self.gm, self.base + suffix, value, param), (), value.shape)
        node.meta[DTYPE] = value.dtype
        return node

    def select(self, x: fx.Node, idx: list[int], suffix: str, dim: int = 1) -> fx.Node:
        """``x`` at indices ``idx`` of ``dim``: nothing for the identity, a slice for a
        contiguous run, else a gather."""
        shape = list(x.meta[SHAPE])
        if idx == list(range(shape[dim])):
            return x
        shape[dim] = len(idx)
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return self._emit("call_function", torch.narrow, (x, dim, idx[0], len(idx)), shape)
        index = self.const(suffix, torch.as_tensor(idx, dtype=torch.long))
        return self._emit("call_function", torch.index_select, (x, dim, index), shape)

    def module(self, suffix: str, module: nn.Module, x: fx.Node, channels: int) -> fx.Node:
        name = _free_name(self.gm, self.base + suffix)
        self.gm.add_submodule(name, module)
        return self._emit("call_module", name, (x,), self._out_shape(channels))

    def call(self, fn, args, channels: int) -> fx.Node:
        return self._emit("call_function", fn, args, self._out_shape(channels))

    def _out_shape(self, channels: int) -> tuple:
        shape = self.node.meta[SHAPE]
        return (shape[0], channels, *shape[2:])


def _grouped(em: Emitter, conv, W, P, S, pats) -> fx.Node:
    ins = [i for _, s, _ in pats for i in s]
    outs = [o for _, _, s in pats for o in s]
    weight = torch.cat([_block(W, P, S, k, i, o) for k, i, o in pats])
    bias = None if conv.bias is None else conv.bias.detach()[torch.as_tensor(outs)]
    grouped = conv_like(conv, weight, bias, groups=len(pats))
    y = em.module("_grouped", grouped, em.select(em.node.args[0], ins, "_grouped_in"), len(outs))
    inverse = torch.empty(len(outs), dtype=torch.long)
    inverse[torch.as_tensor(outs)] = torch.arange(len(outs))
    return em.select(y, inverse.tolist(), "_grouped_out")


def _patterns(em: Emitter, conv, W, P, S, pats, c_out: int) -> fx.Node:
    x, ys, outs = em.node.args[0], [], [o for _, _, s in pats for o in s]
    for n, (k, i, o) in enumerate(pats):
        small = conv_like(conv, _block(W, P, S, k, i, o), None)
        ys.append(em.module(f"_pattern{n}", small, em.select(x, i, f"_pattern{n}_in"), len(o)))
    y = ys[0] if len(ys) == 1 else em.call(torch.cat, (ys, 1), len(outs))
    if sorted(outs) == list(range(c_out)):  # outputs partitioned: a permutation, bias added
        inverse = torch.empty(c_out, dtype=torch.long)
        inverse[torch.as_tensor(outs)] = torch.arange(c_out)
        y = em.select(y, inverse.tolist(), "_patterns_out")
        if conv.bias is None:
            return y
        b = em.const("_patterns_bias", conv.bias.detach().view(1, c_out, *[1] * (W.dim() - 2)), param=True)
        return em.call(torch.add, (y, b), c_out)
    scatter = torch.zeros(c_out, len(outs), *[1] * (W.dim() - 2), dtype=W.dtype, device=W.device)
    scatter[torch.as_tensor(outs), torch.arange(len(outs))] = 1.0
    matrix = em.const("_patterns_scatter", scatter)
    bias = None if conv.bias is None else em.const("_patterns_bias", conv.bias.detach(), param=True)
    return em.call(_CONVS[type(conv)], (y, matrix, bias), c_out)


def _check(gm: fx.GraphModule, node: fx.Node, P: torch.Tensor, S: torch.Tensor) -> nn.Module:
    conv = gm.get_submodule(node.target) if node.op == "call_module" else None
    if type(conv) not in _CONVS or conv.groups != 1:
        raise node_error(CompactionError, node, "lower_grouped_conv needs a call of a plain "
                         "nn.Conv1d/nn.Conv2d with groups=1", "pass the node of such a conv")
    if tuple(P.shape) != (conv.in_channels, S.shape[0]) or S.shape[1] != conv.out_channels:
        raise node_error(CompactionError, node, f"P {tuple(P.shape)} and S {tuple(S.shape)} do not "
                         f"fit a conv {conv.in_channels}->{conv.out_channels}",
                         "pass P of shape (c_in, p) and S of shape (p, c_out)")
    return conv


def lower_grouped_conv(gm: fx.GraphModule, node: fx.Node, P: torch.Tensor, S: torch.Tensor) -> str:
    """Replace the call ``node`` of a conv (unmasked weight ``W``) by an exact compact form.

    ``P`` (c_in x p) and ``S`` (p x c_out) are already thresholded: the result computes the
    conv with weight ``W[o, i] * (P @ S)[i, o]``. Mutates ``gm`` (new modules and buffers are
    named after ``node.target``; the old conv is removed when nothing else calls it) and
    returns the form used: ``"grouped"``, ``"patterns"`` or ``"dense"``.

    Example: ``lower_grouped_conv(gm, node, P * (P.abs() > 0.05), S * (S.abs() > 0.05))``.
    """
    conv = _check(gm, node, P, S)
    W = conv.weight.detach()
    P, S = P.detach().to(W), S.detach().to(W)
    form, pats = lowered_form(P, S)
    em, target = Emitter(gm, node), str(node.target)
    if form == "dense":
        mask = (P @ S).T.reshape(*W.shape[:2], *[1] * (W.dim() - 2))
        bias = None if conv.bias is None else conv.bias.detach()
        new = em.module("_dense", conv_like(conv, W * mask, bias),
                        node.args[0], W.shape[0])
    elif form == "grouped":
        new = _grouped(em, conv, W, P, S, pats)
    else:
        new = _patterns(em, conv, W, P, S, pats, W.shape[0])
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    if not any(n.op in ("call_module", "get_attr") and (n.target == target or str(n.target).startswith(target + "."))
               for n in gm.graph.nodes):
        gm.delete_submodule(target)
    gm.graph.lint()
    gm.recompile()
    return form
