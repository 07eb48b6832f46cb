"""Element-wise ops: activations, dropout, casts, gates, and broadcasting arithmetic.

A *zero-preserving* op maps a zero channel to a zero channel (relu, gelu, multiply...), so
its coupling is a ``flow``; one that does not (sigmoid, exp, adding a constant) is coupled
without flow, so a gate goes after it when a later op needs the channel to be zero.
"""
from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..block_gates import BlockGate
from ..filters import Filter
from ..meta import tensor_shape
from . import NA, WEIGHTLESS, analyse_rule, declare, permutation_rule, shrink_rule
from ._util import arg, couple_same, expanded_dims, is_tensor, module

# the ops archc.capture lowers element-wise ATen ops to, and archc's own gate
ZERO_PRESERVING_MODULES = (nn.Dropout, nn.PReLU, Filter, BlockGate)
# aten.dropout: F.dropout in user code, kept with the mode it was captured in (a mask and a scale)
ZERO_PRESERVING_FUNCTIONS = (F.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu, F.mish,
                             F.elu, F.selu, F.celu, F.softshrink, F.hardshrink,
                             torch.tanh, torch.neg, torch.abs, torch.sqrt, torch.sin, torch.square,
                             torch.ops.aten.dropout.default)
OTHER_FUNCTIONS = (torch.sigmoid, F.hardsigmoid, torch.exp, torch.cos, F.softplus, torch.log, torch.rsqrt,
                   torch.erf, torch.reciprocal, F.logsigmoid)
CASTS = ("contiguous", "clone", "to", "type_as", "detach")  # tensor methods that keep every value


@analyse_rule(*ZERO_PRESERVING_MODULES, *ZERO_PRESERVING_FUNCTIONS, *CASTS)
def zero_preserving(node, ctx) -> None:
    couple_same(ctx, node.args[0], node, flow=True)
    if node.target == "type_as" and is_tensor(node.args[1]):  # only its dtype is read (Gemma's norm)
        for d in range(len(tensor_shape(node.args[1]))):
            ctx.handle(node.args[1], d)


@shrink_rule(nn.PReLU)
def shrink_prelu(node, cc) -> None:
    """A PReLU with one slope per channel keeps the slopes of the surviving channels."""
    m, keep = module(node), cc.keep(node, 1)
    if keep is None or m.num_parameters == 1:
        return
    new = nn.PReLU(len(keep), device=m.weight.device, dtype=m.weight.dtype)
    new.weight = nn.Parameter(m.weight.detach()[torch.as_tensor(keep, dtype=torch.long)].clone())
    cc.note(f"{node.target}.weight", [keep])
    cc.replace_module(node, new)


@analyse_rule(*OTHER_FUNCTIONS)
def not_zero_preserving(node, ctx) -> None:
    couple_same(ctx, node.args[0], node, flow=False)


@analyse_rule(torch.clamp, F.hardtanh)
def clamp(node, ctx) -> None:
    """Zero stays zero when the bounds are numbers around it (``hardtanh(x, 0.5, 2)`` maps 0 to 0.5)."""
    names = ("min_val", "max_val") if node.target is F.hardtanh else ("min", "max")
    defaults = (-1.0, 1.0) if node.target is F.hardtanh else (None, None)
    lo, hi = arg(node, 1, names[0], defaults[0]), arg(node, 2, names[1], defaults[1])
    if any(isinstance(b, fx.Node) and (tensor_shape(b) is None or math.prod(tensor_shape(b)) != 1) for b in (lo, hi)):
        return  # per-element tensor bounds: default-deny blocks every dim
    for b in (lo, hi):  # one-element tensor bounds (Gemma 4's clipped inputs) go with no dim
        for d in range(len(tensor_shape(b) or ()) if isinstance(b, fx.Node) else 0):
            ctx.handle(b, d)
    # zero stays zero only for number bounds around it; a tensor bound's value may change
    keeps_zero = all(not isinstance(b, fx.Node) for b in (lo, hi)) and (lo is None or lo <= 0) and (hi is None or hi >= 0)
    couple_same(ctx, node.args[0], node, flow=keeps_zero)


@analyse_rule(torch.pow)
def power(node, ctx) -> None:
    exponent = node.args[1]
    if is_tensor(exponent) or not is_tensor(node.args[0]):
        return  # default-deny blocks the dims
    couple_same(ctx, node.args[0], node, flow=isinstance(exponent, (int, float)) and exponent > 0)


def broadcast(node, ctx, operands, flow_from, summed: bool = False) -> None:
    """Couple each operand dim with the output dim it broadcasts to (aligned from the right).

    ``summed``: the operands are added, so along a dim where one of them is broadcast
    (``x - x.mean(1, keepdim=True)``) a zero channel of another comes out as that operand's
    value, not zero: no flow there."""
    out = tensor_shape(node)
    shapes = [tensor_shape(x) for x in operands]
    spread = {d for d in range(len(out)) if summed and any(
        d < len(out) - len(shape) or shape[d - len(out) + len(shape)] != out[d] for shape in shapes)}
    for i, (x, shape) in enumerate(zip(operands, shapes)):
        offset = len(out) - len(shape)
        for d, size in enumerate(shape):
            if size == out[d + offset]:
                ctx.couple(x, d, node, d + offset, flow=i in flow_from and d + offset not in spread)
            else:
                ctx.handle(x, d)  # a broadcast size-1 dim carries no channel
    for d in range(len(out)):
        ctx.handle(node, d)


def _operands(node):
    return [a for a in node.args[:2] if is_tensor(a)]


@analyse_rule(operator.add, operator.sub, torch.add, torch.sub)
def add(node, ctx) -> None:
    ops = _operands(node)
    scalars = [a for a in node.args[:2] if not is_tensor(a)]
    keeps_zero = all(s == 0 for s in scalars if isinstance(s, (int, float)))
    broadcast(node, ctx, ops, flow_from=set(range(len(ops))) if keeps_zero else set(), summed=True)


@analyse_rule(operator.mul, torch.mul)
def mul(node, ctx) -> None:
    ops = _operands(node)
    # Zero in one factor is enough: gate the largest (the main path), not the scale.
    main = max(range(len(ops)), key=lambda i: torch.Size(tensor_shape(ops[i])).numel())
    broadcast(node, ctx, ops, flow_from={main})


@analyse_rule(operator.truediv, torch.div)
def div(node, ctx) -> None:
    ops = _operands(node)
    numerator_is_tensor = is_tensor(node.args[0])
    broadcast(node, ctx, ops, flow_from={0} if numerator_is_tensor else set())
    denominator = node.args[1]
    if is_tensor(denominator) and denominator.op != "get_attr":
        # a closed channel reaching a computed denominator (x / x.sum(2)) divides zero by zero;
        # one value expanded along a dim is no channel of it, and F.normalize's clamped norm is never 0
        out = tensor_shape(node)
        shape = tensor_shape(denominator)
        for d, size in enumerate(shape):
            if size != 1 and size == out[d + len(out) - len(shape)] and d not in expanded_dims(denominator) \
                    and not _at_least_positive(denominator):
                ctx.block(denominator, d, "divides by this dim's values: a closed channel would divide by zero")


def _at_least_positive(node) -> bool:
    """Whether ``node`` is ``clamp(x, min=m)`` with a number ``m > 0`` (maybe expanded)."""
    if node.op == "call_method" and node.target in ("expand", "expand_as"):
        node = node.args[0]
    if node.op != "call_function" or node.target is not torch.clamp:
        return False
    low = arg(node, 1, "min")
    return isinstance(low, (int, float)) and low > 0


@analyse_rule(torch.where)
def where(node, ctx) -> None:
    broadcast(node, ctx, [a for a in node.args[:3] if is_tensor(a)], flow_from=set())


ELEMENTWISE = (*ZERO_PRESERVING_MODULES, *ZERO_PRESERVING_FUNCTIONS, *CASTS, *OTHER_FUNCTIONS, torch.clamp, F.hardtanh,
               torch.pow, operator.add, operator.sub, torch.add, torch.sub, operator.mul, torch.mul,
               operator.truediv, torch.div, torch.where)
permutation_rule(*ELEMENTWISE)
declare(*ELEMENTWISE, **WEIGHTLESS)  # PReLU's slopes apply to channels, they do not make them
declare(*(k for k in ELEMENTWISE if k is not nn.PReLU), shrink=NA)
declare(nn.Dropout, F.relu, F.leaky_relu, scale_commutes=True)  # relu(x * s) == relu(x) * s for s >= 0
