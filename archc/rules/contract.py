"""Contractions (matmul, attention), softmax and reductions."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ..live_norms import reduced_channel_dim
from ..meta import tensor_shape
from . import NA, WEIGHTLESS, analyse_rule, permutation_rule, shrink_rule
from ._util import arg, live_statistics, norm_dims


def _couple_batch(ctx, x, out, n_trailing: int, flow: bool) -> None:
    """Couple the leading (broadcast) dims of ``x`` with those of ``out``."""
    xs, os_ = tensor_shape(x), tensor_shape(out)
    lead_x, lead_o = len(xs) - n_trailing, len(os_) - n_trailing
    for d in range(lead_x):
        od = d + lead_o - lead_x
        if xs[d] == os_[od]:
            ctx.couple(x, d, out, od, flow=flow)
        else:
            ctx.handle(x, d)
    for d in range(lead_o):
        ctx.handle(out, d)


@analyse_rule(torch.matmul, torch.bmm, shrink=NA, permutes=NA, fold=NA, makes=NA, cost=NA, channel_dim=NA)
def matmul(node, ctx) -> None:
    a, b = node.args[:2]
    if len(tensor_shape(a)) < 2 or len(tensor_shape(b)) < 2:
        return  # vector products: default-deny
    # a zero head of the right factor (attention's values) is a zero head of the product: a
    # gate there folds into the layer that made it
    _couple_batch(ctx, a, node, 2, flow=False)
    _couple_batch(ctx, b, node, 2, flow=True)
    ctx.consume(a, -1)  # the contracted dim: zero in one factor is enough
    ctx.couple(a, -1, b, -2)
    ctx.couple(a, -2, node, -2, flow=True)
    ctx.couple(b, -1, node, -1, flow=True)


def einsum_terms(node) -> Optional[tuple[list[str], str]]:
    """``(operand terms, output term)`` of an explicit einsum (``"bhid,bhjd->bhij"``); None for
    what the channel rule does not read: an implicit output, ``...``, a letter twice in one term
    (a diagonal), a term that is not its operand's rank, or a letter whose sizes differ other
    than by broadcasting (1 against n)."""
    equation, operands = node.args[0].replace(" ", ""), node.args[1]
    if "->" not in equation or "." in equation:
        return None
    inputs, out = equation.split("->")
    terms = inputs.split(",")
    shapes = [tensor_shape(op) for op in operands] + [tensor_shape(node)]
    if len(terms) != len(operands) or any(s is None or len(t) != len(s) or len(set(t)) != len(t)
                                          for t, s in zip(terms + [out], shapes)):
        return None
    for letter in set(inputs) - {","}:
        sizes = {shape[term.index(letter)] for term, shape in zip(terms + [out], shapes) if letter in term}
        if len(sizes - {1}) > 1:
            return None
    return terms, out


@analyse_rule(torch.ops.aten.einsum.default, torch.einsum, shrink=NA, permutes=NA, fold=NA, makes=NA, cost=NA,
              channel_dim=NA)
def einsum(node, ctx) -> None:
    """Each letter is a dim. An output letter couples every operand's dim of that letter to the
    output's; a zero slice of one factor is a zero slice of the product, so the need for zeros
    flows into one factor only (the last that has the letter, as a matmul's values). A summed
    letter is contracted as a matmul's inner dim: the factors' dims go together, zero in the
    first is enough. A size-1 dim broadcast against others is coupled to nothing."""
    parsed = einsum_terms(node)
    if parsed is None:
        return  # default-deny: the report names the einsum
    terms, out = parsed
    operands, out_shape = node.args[1], tensor_shape(node)
    last = {letter: i for i, term in enumerate(terms) for letter in term}
    contracted: dict[str, tuple] = {}
    for i, (op, term) in enumerate(zip(operands, terms)):
        shape = tensor_shape(op)
        for d, letter in enumerate(term):
            if letter in out and shape[d] == out_shape[out.index(letter)]:
                ctx.couple(op, d, node, out.index(letter), flow=last[letter] == i)
            elif letter in out or shape[d] == 1:
                ctx.handle(op, d)  # broadcast
            elif letter in contracted:
                ctx.couple(*contracted[letter], op, d)
            else:
                contracted[letter] = (op, d)
                ctx.consume(op, d)
    for d in range(len(out_shape)):
        ctx.handle(node, d)


@analyse_rule("transformers::grouped_mm_fallback", shrink=NA, permutes=NA, fold=NA, makes=NA, reads=NA, cost=NA,
              flops=NA, channel_dim=NA, scale_commutes=NA)
def grouped_matmul(node, ctx) -> None:
    """transformers' mixture of experts: ``x (tokens, in)`` sorted by expert, times
    ``weight (experts, in, out)``, ``offs`` tokens per expert. Token ``t``'s row is
    ``x[t] @ weight[expert(t)]``: a matmul whose right factor each row picks by expert, so the
    in and out dims couple as a matmul's do; the experts dim is counted by ``offs``."""
    x, weight, offs = node.args[:3]
    ctx.couple(x, 0, node, 0, flow=True)
    ctx.consume(x, 1)  # the contracted dim: zero in one factor is enough
    ctx.couple(x, 1, weight, 1)
    ctx.couple(weight, 2, node, 1, flow=True)
    ctx.block(weight, 0, "the experts dim: offs counts each expert's tokens")
    ctx.block(offs, 0, "the experts dim: offs counts each expert's tokens")


@analyse_rule(F.scaled_dot_product_attention, permutes=NA, fold=NA, makes=NA, cost=NA, channel_dim=NA)
def attention(node, ctx) -> None:
    q, k, v = node.args[:3]
    for x in (q, k, v):
        _couple_batch(ctx, x, node, 2, flow=x is v)  # a zero value head gives a zero output head
    ctx.consume(q, -1)
    ctx.couple(q, -1, k, -1)
    ctx.couple(k, -2, v, -2)
    ctx.block(k, -2, "keys are mixed by the attention softmax")
    ctx.couple(q, -2, node, -2)
    ctx.couple(v, -1, node, -1, flow=True)
    _attention_mask(ctx, node, q, k)


def _attention_mask(ctx, node, q, k) -> None:
    """An additive mask or bias (T5's and Swin's per-head position bias) broadcasts over the
    scores ``(..., heads, queries, keys)``: its head dim goes with the heads."""
    mask = arg(node, 3, "attn_mask")
    if tensor_shape(mask) is None:
        return
    _couple_batch(ctx, mask, node, 2, flow=False)
    shape = tensor_shape(mask)
    for d, (other, od) in ((-2, (q, -2)), (-1, (k, -2))):
        if len(shape) < -d:
            continue
        if shape[d] == tensor_shape(other)[od]:
            ctx.couple(mask, d, other, od)
        else:
            ctx.handle(mask, d)  # broadcast


@shrink_rule(F.scaled_dot_product_attention)
def shrink_attention(node, cc) -> None:
    q = node.args[0]
    if cc.changed(q, -1) and arg(node, 6, "scale") is None:
        # the default scale is 1/sqrt(head dim): keep the original one
        node.kwargs = {**node.kwargs, "scale": 1.0 / math.sqrt(tensor_shape(q)[-1])}


@analyse_rule(F.softmax, F.log_softmax, shrink=NA, **WEIGHTLESS)
def softmax(node, ctx) -> None:
    x = node.args[0]
    rank = len(tensor_shape(x))
    dim = arg(node, 1, "dim")
    dim = dim % rank
    ctx.block(x, dim, "softmax normalises over this dim")
    ctx.block(node, dim, "softmax normalises over this dim")
    for d in range(rank):
        if d != dim:
            ctx.couple(x, d, node, d)


REDUCTIONS = {"sum": "consume", "mean": "block", "amax": "block", "amin": "block", "std": "block",
              "var": "block", "logsumexp": "block", "prod": "block", "norm": "block", "linalg_vector_norm": "block"}
_FLOW = {"sum", "mean", "amax", "amin", "std", "var", "norm", "linalg_vector_norm"}


@analyse_rule(torch.sum, torch.mean, torch.amax, torch.amin, torch.var, torch.std, torch.linalg.vector_norm,
              shrink=NA, **WEIGHTLESS)
def reduction(node, ctx) -> None:
    """A sum mixes the reduced channels (removed ones must be zero). A mean, variance or
    standard deviation over one channel dim is a hand-written norm's statistics: gating makes
    it live (:class:`archc.live_norms.LiveReduction`, counting open channels only); in a model
    already gated it counts every channel and blocks the dim, as any other reduction does."""
    x = node.args[0]
    name = node.target if isinstance(node.target, str) else node.target.__name__
    rank = len(tensor_shape(x))
    reduced = norm_dims(arg(node, 1, "dim"), rank)
    keepdim = arg(node, 2, "keepdim", False)
    live = reduced_channel_dim(node) is not None and not ctx.gated
    # a p-norm, p > 0 (F.normalize's), is unchanged by zero channels, as a sum is
    sums = REDUCTIONS[name] == "consume" or (name == "linalg_vector_norm" and arg(node, 1, "ord", 2) > 0)
    out = 0
    for d in range(rank):
        if d in reduced:
            if live:
                live_statistics(ctx, x, d)
            elif sums:
                ctx.consume(x, d)
            else:
                ctx.block(x, d, f"{name} over this dim would change if channels were removed")
            if keepdim:
                ctx.handle(node, out)
                out += 1
        else:
            ctx.couple(x, d, node, out, flow=name in _FLOW)
            out += 1


# softmax and reductions over *other* dims; a reordered summed dim sums the same terms
permutation_rule(F.softmax, F.log_softmax, torch.sum, torch.mean, torch.amax, torch.amin, torch.var, torch.std,
                 torch.linalg.vector_norm)
