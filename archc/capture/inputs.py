"""What a captured model's inputs look like, so fresh ones can be drawn at other shapes.

``gm.meta["archc.inputs"]`` holds one spec per tensor input: its name, example shape, dtype,
value range (integers), and for each dynamic dim the symbol torch.export gave it
(``{"dims": {0: "s0"}}``); ``gm.meta["archc.symbols"]`` gives each symbol's example value and
range. Inputs sharing a symbol (token ids and their attention mask) are drawn with one size.

Example:
    >>> for sizes in shape_variants(gm):
    ...     out = gm(*random_inputs(gm, seed=0, sizes=sizes))
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.fx as fx

_SYMBOLS = "archc.symbols"
VARIANTS = "archc.shape_variants"  # the variants the user's model itself ran at (capture.check)


def input_specs(gm: fx.GraphModule, exported: Any, flat_inputs: list) -> list[dict]:
    """One spec per tensor input of ``gm``, with its dynamic dims; sets ``gm.meta[archc.symbols]``."""
    tensors = [t for t in flat_inputs if isinstance(t, torch.Tensor)]
    user_inputs = _user_input_names(exported)
    placeholders = [n for n in exported.graph_module.graph.nodes if n.op == "placeholder"
                    and isinstance(n.meta.get("val"), torch.Tensor) and n.name in user_inputs]
    names = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    symbols: dict[str, dict] = {}
    specs = []
    params_dtype = _floating_params_dtype(gm)
    for name, t, ph in zip(names, tensors, placeholders):
        spec: dict[str, Any] = {"name": name, "shape": tuple(t.shape), "dtype": t.dtype, "dims": {}}
        if t.is_floating_point() and t.dtype == params_dtype:
            spec["follows_params"] = True  # drawn at the parameters' dtype: gm.double() takes doubles
        if not t.is_floating_point() and t.numel():
            spec["low"], spec["high"] = int(t.min()), int(t.max())
        for d, size in enumerate(ph.meta["val"].shape):
            if isinstance(size, torch.SymInt):
                expr = size.node.expr
                spec["dims"][d] = str(expr)
                for sym in expr.free_symbols:
                    _record_symbol(symbols, exported, sym, t.shape[d] if expr == sym else None)
        specs.append(spec)
    gm.meta[_SYMBOLS] = symbols
    return specs


def _floating_params_dtype(gm: fx.GraphModule) -> Optional[torch.dtype]:
    """The dtype of ``gm``'s first floating-point parameter, or None."""
    return next((p.dtype for p in gm.parameters() if p.is_floating_point()), None)


def _user_input_names(exported: Any) -> set:
    return {s.arg.name for s in exported.graph_signature.input_specs if s.kind.name == "USER_INPUT"}


def _record_symbol(symbols: dict, exported: Any, sym: Any, example: Optional[int]) -> None:
    entry = symbols.setdefault(str(sym), {"example": None, "min": 2, "max": None})
    if example is not None:
        entry["example"] = int(example)
    ranges = exported.range_constraints.get(sym)
    if ranges is not None:
        entry["min"] = max(int(ranges.lower), 1)
        entry["max"] = _finite(ranges.upper)


def _finite(bound: Any) -> Optional[int]:
    try:
        return int(bound)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None  # torch's int_oo: no upper bound


def shape_variants(gm: fx.GraphModule, count: int = 3) -> list[dict[str, int]]:
    """Symbol sizes to verify at: the example's, one more, and about half (down to 1, below
    torch.export's range, which starts at 2 only because size 1 broadcasts; an example of 1
    gets 2 and 3), each capped at the symbol's upper bound (a maximum sequence length). After
    capture, the variants the model itself ran at (``gm.meta[VARIANTS]``).

    Any size other than the example's shows a size frozen into the graph, so the variants stay
    as small as that allows: each check runs the whole model at them."""
    if VARIANTS in gm.meta:
        return list(gm.meta[VARIANTS][:count])
    variants: list[dict[str, int]] = []
    for role in variant_candidates(gm):
        if role[0] not in variants:
            variants.append(role[0])
    return variants[:count]


def variant_candidates(gm: fx.GraphModule) -> list[list[dict[str, int]]]:
    """``[[example], [larger...], [smaller...]]``: for each role, sizes to try in turn until
    the model takes one (a model may need a multiple of its example's length)."""
    symbols = gm.meta.get(_SYMBOLS) or {}
    if not symbols:
        return [[{}]]
    roles = [[{s: e["example"] for s, e in symbols.items()}]]
    for role in ("larger", "smaller"):
        per_symbol = {s: _candidates(e, role) for s, e in symbols.items()}
        roles.append([{s: sizes[k] for s, sizes in per_symbol.items()} for k in range(3)])
    return roles


def _candidates(entry: dict, role: str) -> list[int]:
    example, top = entry["example"], entry["max"]
    if role == "larger":
        sizes = [example + 1, example + 2, 2 * example + 1]
    elif example > 1:
        sizes = [max(1, example // 2), example - 1, 1]
    else:  # nothing smaller than 1: another larger size
        sizes = [example + 2, example + 3, 2 * example + 2]
    return [s if top is None else min(s, top) for s in sizes]


def _shape(spec: dict, sizes: Optional[dict]) -> list[int]:
    shape = list(spec["shape"])
    if not sizes:
        return shape
    for d, expr in spec.get("dims", {}).items():
        shape[int(d)] = _evaluate(expr, sizes, shape[int(d)])
    return shape


def _evaluate(expr: str, sizes: dict, default: int) -> int:
    if expr in sizes:
        return int(sizes[expr])
    import sympy

    parsed = sympy.sympify(expr)
    values = {s: sizes.get(str(s)) for s in parsed.free_symbols}
    if any(v is None for v in values.values()):
        return default
    return int(parsed.subs(values))


def random_inputs(gm: fx.GraphModule, batch: Optional[int] = None, seed: int = 0,
                  sizes: Optional[dict[str, int]] = None) -> tuple:
    """Fresh random inputs shaped like the example inputs ``gm`` was traced with.

    Float inputs are standard normal; integer inputs are drawn from the example's range.
    ``sizes`` gives dynamic symbols other values (see :func:`shape_variants`); ``batch``
    replaces dimension 0.
    """
    specs = gm.meta.get("archc.inputs")
    if specs is None:
        raise ValueError("this GraphModule was not made by archc.trace: pass example inputs explicitly")
    gen = torch.Generator().manual_seed(seed)
    params_dtype = _floating_params_dtype(gm)
    out = []
    for spec in specs:
        shape = _shape(spec, sizes)
        if batch is not None and shape:
            shape[0] = batch
        if spec["dtype"].is_floating_point:
            dtype = params_dtype if spec.get("follows_params") and params_dtype is not None else spec["dtype"]
            out.append(torch.randn(shape, generator=gen, dtype=dtype))
        elif spec["dtype"] == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            low, high = spec.get("low", 0), spec.get("high", 1)
            out.append(torch.randint(low, high + 1, shape, generator=gen, dtype=spec["dtype"]))
    return tuple(out)
