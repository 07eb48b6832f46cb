"""How each captured ATen op is written in archc's graph dialect: one table, op -> lowering.

``torch.export`` gives a closed set of ATen ops. archc's channel rules, folding and emission
read a torch-level dialect instead: ``nn.Conv2d`` and friends as module calls (so the emitted
``model.py`` has real layers, and BatchNorm and Dropout follow ``train()``/``eval()``),
``F.*``/``torch.*`` functions and tensor methods for the rest. Each entry of :data:`LOWERINGS`
maps an ATen op (its overload packet, so every overload shares the entry) to a function
``lower(cx, node, *args, **kwargs)`` that emits the replacement through ``cx`` (a
:class:`archc.capture.lower.Lowering`) and returns the new value, or ``None`` to keep the ATen
call as it is. An op without an entry is kept as an ATen call: it runs and emits correctly,
and the channel analysis blocks every dim it touches (it has no rule there).

In-place variants (``relu_``, ``add_``) share the entry of their functional op; the lowering
driver rewrites the mutation (:func:`archc.capture.lower.functional_variant`).
"""
from __future__ import annotations

import operator
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .modules import MODULE_LOWERINGS
from .norm_patterns import rms_norm_by_hand

aten = torch.ops.aten
LOWERINGS: dict[Any, Callable] = dict(MODULE_LOWERINGS)

_INT64_MAX = 2**63 - 1


def _function(target: Callable, arity: Optional[int] = None) -> Callable:
    """The ATen op is ``target`` with the same arguments (the first ``arity`` of them)."""

    def lower(cx, node, *args, **kwargs):
        return cx.call_function(target, args[:arity] if arity is not None else args, kwargs)

    return lower


def _method(name: str, arity: Optional[int] = None) -> Callable:
    """The ATen op is the tensor method ``name`` with the same positional arguments."""

    def lower(cx, node, *args, **kwargs):
        return cx.call_method(name, args[:arity] if arity is not None else args, {})

    return lower


def _identity(cx, node, x, *args, **kwargs):
    return x


def _binary(op: Callable, torch_op: Callable) -> Callable:
    """``a op b``; with an ``alpha`` other than 1 the torch function that takes it."""

    def lower(cx, node, a, b, alpha=1, **kwargs):
        if alpha != 1:
            return cx.call_function(torch_op, (a, b), {"alpha": alpha})
        return cx.call_function(op, (a, b), {})

    return lower


def _elu(cx, node, x, alpha=1.0, scale=1.0, input_scale=1.0):
    """``F.elu(x, alpha)``; the scaled form (no torch function has it) stays an ATen call."""
    if scale != 1 or input_scale != 1:
        return None
    return cx.call_function(F.elu, (x, alpha), {})


def _div(cx, node, a, b, rounding_mode=None, **kwargs):
    if rounding_mode is not None:
        return cx.call_function(torch.div, (a, b), {"rounding_mode": rounding_mode})
    return cx.call_function(operator.truediv, (a, b), {})


def _rsub(cx, node, x, other, alpha=1):
    if alpha != 1:
        return None
    return cx.call_function(operator.sub, (other, x), {})


def _rank(node) -> int:
    return len(node.args[0].meta["val"].shape)


def slice_args(dim=0, start=None, end=None, step=1) -> tuple:
    """``aten.slice``'s arguments with their defaults: ``slice_args(*node.args[1:])``."""
    return dim, start, end, step


def is_whole_slice(start, end, step, size=None) -> bool:
    """Whether ``x[start:end:step]`` along a dim of ``size`` (when known) is all of it."""
    whole_end = end is None or (isinstance(end, int) and (end >= _INT64_MAX or isinstance(size, int) and end >= size))
    return start in (None, 0) and step in (None, 1) and whole_end


def _slice(cx, node, x, dim=0, start=None, end=None, step=1):
    dim %= _rank(node)
    if is_whole_slice(start, end, step):
        return x
    start = None if start == 0 else start
    end = None if isinstance(end, int) and end >= _INT64_MAX else end
    items = (slice(None),) * dim + (slice(start, end, None if step == 1 else step),)
    return cx.call_function(operator.getitem, (x, items), {})


def _select(cx, node, x, dim, index):
    dim %= _rank(node)
    return cx.call_function(operator.getitem, (x, (slice(None),) * dim + (index,)), {})


def _gather(cx, node, x, indices):
    """``x[:, idx]``: ``aten.index`` with one integer index tensor (Mixtral gathers each expert's
    tokens, Falcon its key and value heads). Several, or a boolean mask, stay the ATen call."""
    given = [(d, t) for d, t in enumerate(indices) if t is not None]
    if len(given) != 1 or given[0][1].meta["val"].dtype == torch.bool:
        return None
    dim, index = given[0]
    return cx.call_function(operator.getitem, (x, (slice(None),) * dim + (index,)), {})


def _reduction(target: Callable) -> Callable:
    """``mean``/``sum``/``amax`` over dims: the dtype argument is kept only when given."""

    def lower(cx, node, x, dim=None, keepdim=False, dtype=None):
        kwargs = {"dtype": dtype} if dtype is not None else {}
        if dim is None or dim == [] or dim == ():
            if keepdim:  # every dim, kept as size 1
                return cx.call_function(target, (x, list(range(_rank(node))), True), kwargs)
            return cx.call_function(target, (x,), kwargs)
        return cx.call_function(target, (x, dim, keepdim), kwargs)

    return lower


def _spread(target: Callable) -> Callable:
    """``var``/``std`` over the given dims with an explicit correction (``unbiased`` is 1 or 0);
    over every dim it stays the ATen call."""

    def lower(cx, node, x, *args, correction=None, keepdim=False):
        overload = node.target._overloadname
        if overload == "dim":  # (x, dim, unbiased=True, keepdim=False)
            dim, unbiased, keepdim = (list(args) + [None, True, False][len(args):])[:3]
            correction = 1 if unbiased else 0
        elif overload == "correction":  # (x, dim=None, *, correction=None, keepdim=False)
            dim = args[0] if args else None
            correction = 1 if correction is None else correction
        else:
            return None
        if dim is None or dim == [] or dim == ():
            return None
        return cx.call_function(target, (x, dim), {"correction": correction, "keepdim": keepdim})

    return lower


def _vector_norm(cx, node, x, ord=2, dim=None, keepdim=False, *, dtype=None):
    """``torch.linalg.vector_norm`` over given dims (ConvNeXt-V2's GRN: the L2 norm over space)."""
    if dim is None or dtype is not None:
        return None
    return cx.call_function(torch.linalg.vector_norm, (x,), {"ord": ord, "dim": dim, "keepdim": keepdim})


def _addcmul(cx, node, x, a, b, *, value=1):
    """``x + value * a * b``: a product and a sum, which the channel rules read."""
    product = cx.call_function(operator.mul, (a, b), {})
    if value != 1:
        product = cx.call_function(operator.mul, (product, value), {})
    return cx.call_function(operator.add, (x, product), {})


def _repeat_interleave(cx, node, x, repeats, dim=None, *, output_size=None):
    """``torch.repeat_interleave`` of a tensor by a number along a dim (GCViT's global query)."""
    if not isinstance(repeats, int) or dim is None:
        return None
    return cx.call_function(torch.repeat_interleave, (x, repeats, dim), {})


def _softmax(target: Callable) -> Callable:
    def lower(cx, node, x, dim, dtype_or_half=None):
        if isinstance(dtype_or_half, torch.dtype):
            return cx.call_function(target, (x, dim), {"dtype": dtype_or_half})
        return cx.call_function(target, (x, dim), {})

    return lower


def _to(cx, node, x, *args, **kwargs):
    """Casts keep only the dtype: a device fixed at capture would pin the model to it. A copy
    (``_to_copy``, ``copy=True``) stays a copy, so a later in-place write cannot reach ``x``."""
    dtype = kwargs.get("dtype") or next((a for a in args if isinstance(a, torch.dtype)), None)
    copy = node.target.overloadpacket is aten._to_copy or kwargs.get("copy") or (len(args) > 2 and args[2] is True)
    if dtype is None:
        return cx.call_method("clone", (x,), {}) if copy else x
    return cx.call_method("to", (x, dtype), {"copy": True} if copy else {})


def _interpolate(mode: str) -> Callable:
    def lower(cx, node, x, output_size, *rest):
        align = [r for r in rest if isinstance(r, bool)]
        scales = [r for r in rest if isinstance(r, (list, tuple))]
        kwargs: dict[str, Any] = {"mode": mode}
        if output_size is not None:
            kwargs["size"] = output_size
        elif scales:
            kwargs["scale_factor"] = scales[0]
        if align:
            kwargs["align_corners"] = align[0]
        return cx.call_function(F.interpolate, (x,), kwargs)

    return lower


def _constant_pad(cx, node, x, pad, value=0):
    return cx.call_function(F.pad, (x, pad, "constant", value), {})


def _sdpa(cx, node, q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
          enable_gqa=False):
    kwargs = {"scale": scale} if scale is not None else {}
    if enable_gqa:
        kwargs["enable_gqa"] = True
    return cx.call_function(F.scaled_dot_product_attention, (q, k, v, attn_mask, dropout_p, is_causal), kwargs)


def _addmm(cx, node, bias, x, weight, beta=1, alpha=1):
    """``bias + x @ weight`` (GPT-2's Conv1D): a product and a sum, which the channel rules read."""
    if beta != 1 or alpha != 1:
        return None
    return cx.call_function(operator.add, (cx.call_function(torch.matmul, (x, weight), {}), bias), {})


def _mul(cx, node, a, b):
    """A product; the last one of a hand-written RMSNorm raises the whole norm to ``nn.RMSNorm``."""
    return rms_norm_by_hand(cx, node) or cx.call_function(operator.mul, (a, b), {})


def _reversed_dims(cx, node, x):
    """``x.T`` (every dim reversed; Falcon's ``input @ self.weight.T``): ``torch.t`` for a matrix,
    a permute otherwise, both of which the channel rules read."""
    rank = len(cx.example_shape(node))
    if rank <= 2:
        return cx.call_function(torch.t, (x,), {})
    return cx.call_function(torch.permute, (x, tuple(reversed(range(rank)))), {})


def _last_two_swapped(cx, node, x):
    """``x.mT``: the last two dims transposed."""
    return cx.call_function(torch.transpose, (x, -2, -1), {})


def _moved_dims(cx, node, x, source, destination):
    """``x.movedim(source, destination)``: the permute it is (source dims land at their
    destinations, the others keep their order)."""
    rank = len(cx.example_shape(node))
    sources, destinations = ([d % rank for d in ([dims] if isinstance(dims, int) else dims)]
                             for dims in (source, destination))
    order: list = [None] * rank
    for s, d in zip(sources, destinations):
        order[d] = s
    rest = iter(d for d in range(rank) if d not in sources)
    return cx.call_function(torch.permute, (x, tuple(d if d is not None else next(rest) for d in order)), {})


def _drop(cx, node, *args, **kwargs):
    """torch.export's dtype and device asserts: a device fixed at capture would pin the model
    to it. Asserts on sizes (``_assert_scalar``) stay in the graph."""
    return cx.DROP


def _register(table: dict[Callable, Callable]) -> None:
    for op, lowering in table.items():
        LOWERINGS[op] = lowering


_register({
    # element-wise: activations and math
    aten.relu: _function(F.relu), aten.gelu: _function(F.gelu), aten.silu: _function(F.silu),
    aten.hardswish: _function(F.hardswish), aten.hardsigmoid: _function(F.hardsigmoid),
    aten.hardtanh: _function(F.hardtanh), aten.leaky_relu: _function(F.leaky_relu),
    aten.mish: _function(F.mish), aten.softplus: _function(F.softplus), aten.relu6: _function(F.relu6),
    aten.elu: _elu, aten.selu: _function(F.selu), aten.celu: _function(F.celu),
    aten.softshrink: _function(F.softshrink), aten.hardshrink: _function(F.hardshrink),
    aten.log_sigmoid: _function(F.logsigmoid),
    aten.sigmoid: _function(torch.sigmoid), aten.tanh: _function(torch.tanh),
    aten.exp: _function(torch.exp), aten.log: _function(torch.log), aten.sqrt: _function(torch.sqrt),
    aten.rsqrt: _function(torch.rsqrt), aten.abs: _function(torch.abs), aten.neg: _function(torch.neg),
    aten.erf: _function(torch.erf), aten.sin: _function(torch.sin), aten.cos: _function(torch.cos),
    aten.reciprocal: _function(torch.reciprocal), aten.square: _function(torch.square),
    aten.pow: _function(torch.pow), aten.clamp: _function(torch.clamp), aten.clip: _function(torch.clamp),
    aten.where: _function(torch.where),
    # arithmetic
    aten.add: _binary(operator.add, torch.add), aten.sub: _binary(operator.sub, torch.sub),
    aten.mul: _mul, aten.div: _div, aten.rsub: _rsub,
    # moving data without computing
    aten.view: _method("view"), aten._unsafe_view: _method("view"), aten.reshape: _method("reshape"),
    aten.flatten: _function(torch.flatten), aten.unflatten: _function(torch.unflatten),
    aten.squeeze: _function(torch.squeeze), aten.unsqueeze: _function(torch.unsqueeze),
    aten.permute: _function(torch.permute), aten.transpose: _function(torch.transpose),
    aten.swapaxes: _function(torch.transpose), aten.swapdims: _function(torch.transpose),
    aten.movedim: _moved_dims, aten.moveaxis: _moved_dims,
    aten.t: _function(torch.t), aten.numpy_T: _reversed_dims,
    aten.mT: _last_two_swapped, aten.expand: _method("expand", 2),
    aten.contiguous: _method("contiguous", 1), aten.clone: _method("clone", 1), aten.alias: _identity,
    aten.detach: _method("detach", 1),  # not the identity: it stops gradients (straight-through estimators)
    aten.lift_fresh_copy: _method("clone", 1),  # a constant made in forward: a fresh copy each call
    aten.to: _to, aten._to_copy: _to, aten.type_as: _method("type_as"),
    aten.cat: _function(torch.cat), aten.concat: _function(torch.cat), aten.stack: _function(torch.stack),
    aten.split: _function(torch.split), aten.split_with_sizes: _function(torch.split),
    aten.chunk: _function(torch.chunk), aten.unbind: _function(torch.unbind),
    aten.slice: _slice, aten.select: _select, aten.index: _gather,
    aten.sym_size: _method("size"),
    # reductions, softmax, contractions
    aten.mean: _reduction(torch.mean), aten.sum: _reduction(torch.sum), aten.amax: _reduction(torch.amax),
    aten.amin: _reduction(torch.amin), aten.var: _spread(torch.var), aten.std: _spread(torch.std),
    aten.softmax: _softmax(F.softmax), aten._softmax: _softmax(F.softmax),
    aten.log_softmax: _softmax(F.log_softmax), aten._log_softmax: _softmax(F.log_softmax),
    aten.matmul: _function(torch.matmul), aten.mm: _function(torch.matmul), aten.bmm: _function(torch.bmm),
    aten.addmm: _addmm, aten.addcmul: _addcmul, aten.linalg_vector_norm: _vector_norm,
    aten.reshape_as: _method("reshape_as", 2), aten.repeat_interleave: _repeat_interleave, aten.repeat: _method("repeat", 2),
    aten.clamp_min: _function(torch.clamp, 2), aten.expand_as: _method("expand_as", 2),
    aten.roll: _function(torch.roll),
    aten.scaled_dot_product_attention: _sdpa,
    # pooling, resizing, padding
    aten.adaptive_avg_pool1d: _function(F.adaptive_avg_pool1d),
    aten.adaptive_avg_pool2d: _function(F.adaptive_avg_pool2d),
    aten.adaptive_avg_pool3d: _function(F.adaptive_avg_pool3d),
    aten.max_pool1d: _function(F.max_pool1d), aten.max_pool2d: _function(F.max_pool2d),
    aten.max_pool3d: _function(F.max_pool3d), aten.avg_pool1d: _function(F.avg_pool1d),
    aten.avg_pool2d: _function(F.avg_pool2d), aten.avg_pool3d: _function(F.avg_pool3d),
    aten.upsample_nearest1d: _interpolate("nearest"), aten.upsample_nearest2d: _interpolate("nearest"),
    aten.upsample_nearest3d: _interpolate("nearest"), aten.upsample_linear1d: _interpolate("linear"),
    aten.upsample_bilinear2d: _interpolate("bilinear"), aten.upsample_bicubic2d: _interpolate("bicubic"),
    aten.upsample_trilinear3d: _interpolate("trilinear"),
    aten.pad: _function(F.pad), aten.constant_pad_nd: _constant_pad,
    # capture-time checks
    aten._assert_tensor_metadata: _drop,
})
