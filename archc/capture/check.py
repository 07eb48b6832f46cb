"""The captured graph against the user's model, on fresh inputs at every shape variant.

Compaction checks the compact model against the gated *graph*; this check ties that graph to
the model itself, so neither a lowering mistake nor a branch that torch.export fixed at the
example's size (``if x.shape[0] > 4``) can reach a compact model. A variant the model itself
cannot run is dropped from the graph's variants (``gm.meta["archc.shape_variants"]``).

Example: ``check_against_model(gm, model, flat_inputs, spec)`` raises TraceError on a miss.
"""
from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn

from ..errors import TraceError
from ..meta import preserved_buffers
from .inputs import VARIANTS, random_inputs, variant_candidates

RTOL = 1e-4  # as compaction's own check
ROUNDING = 1e-2  # a float32 miss below this is judged again in float64


def check_against_model(gm: fx.GraphModule, model: nn.Module, flat_inputs: list, spec: pytree.TreeSpec) -> None:
    """Raise :class:`TraceError` unless ``gm`` computes what ``model`` does at every variant:
    the example's shape, and for a larger and a smaller size the first the model takes."""
    modes = {m: m.training for m in [*model.modules(), *gm.modules()]}
    kept = []
    try:
        for m in modes:
            m.training = False
        with torch.no_grad(), preserved_buffers(model), preserved_buffers(gm):
            for i, role in enumerate(variant_candidates(gm)):
                sizes = next((c for c in role if _matches(gm, model, flat_inputs, spec, c, first=i == 0)), None)
                if sizes is not None and sizes not in kept:
                    kept.append(sizes)
    finally:
        for m, training in modes.items():
            m.training = training
    gm.meta[VARIANTS] = kept


def _matches(gm: fx.GraphModule, model: nn.Module, flat_inputs: list, spec: pytree.TreeSpec,
             sizes: dict, first: bool) -> bool:
    """Whether the model runs at ``sizes`` (it must at the example's); raises where it runs and
    the graph differs."""
    tensors = random_inputs(gm, seed=11, sizes=sizes)
    with torch.random.fork_rng(devices=[]):  # the same random draws for both (MC dropout)
        torch.manual_seed(0)
        want = _run_model(model, flat_inputs, spec, tensors, required=first)
        if want is None:
            return False  # the model itself does not take this size
        torch.manual_seed(0)
        got = pytree.tree_leaves(gm(*tensors))
    err = _largest_error(got, want)
    if len(got) != len(want) or (err > RTOL and not _same_in_float64(gm, model, flat_inputs, spec, tensors, err)):
        raise _miss(gm, model, tensors, err, first=first)
    return True


def _same_in_float64(gm: fx.GraphModule, model: nn.Module, flat_inputs: list, spec: pytree.TreeSpec,
                     tensors: tuple, err: float) -> bool:
    """Whether a float32 miss below ``ROUNDING`` is rounding only: float64 copies of the graph
    and the model agree. A deep model can turn a last-bit difference in one weight (the graph
    computes weight standardisation with means, the model with batch_norm) into 1e-4 at its
    output; a wrong lowering or a kept branch differs in float64 as much."""
    floating = [p for p in model.parameters() if p.is_floating_point()]
    if err >= ROUNDING or not floating or any(p.dtype != torch.float32 for p in floating):
        return False
    wide = tuple(t.double() if t.is_floating_point() else t for t in tensors)
    model64, gm64 = copy.deepcopy(model).double(), copy.deepcopy(gm).double()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        want = _run_model(model64, flat_inputs, spec, wide, required=False)
        torch.manual_seed(0)
        try:
            got = pytree.tree_leaves(gm64(*wide))
        except Exception:  # noqa: BLE001 - a graph that fixed a float32 dtype: the miss stands
            return False
    if want is None or len(got) != len(want):
        return False
    return _largest_error(got, want) <= RTOL


def _largest_error(got: list, want: list) -> float:
    from ..verify import relative_error  # verify imports capture

    return max((_capture_error(g, w, relative_error) for g, w in zip(got, want)), default=0.0)


def _capture_error(got: torch.Tensor, want: torch.Tensor, relative_error) -> float:
    """The model may itself output NaN or inf: the graph must put the same ones in the same
    places (unlike compaction's check, where a non-finite value never passes)."""
    if not isinstance(got, torch.Tensor) or got.shape != want.shape:
        return float("inf")
    finite = torch.isfinite(want)
    same_specials = torch.equal(finite, torch.isfinite(got)) and torch.equal(
        got[~finite].nan_to_num(), want[~finite].nan_to_num())
    if not same_specials:
        return float("inf")
    return relative_error(got.where(finite, 0.0), want.where(finite, 0.0))


def _run_model(model: nn.Module, flat_inputs: list, spec: pytree.TreeSpec, tensors: tuple, required: bool) -> Any:
    fresh = iter(tensors)
    leaves = [next(fresh) if isinstance(v, torch.Tensor) else v for v in flat_inputs]
    args, kwargs = pytree.tree_unflatten(leaves, spec)
    try:
        out = model(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a size the model cannot take is not archc's to check
        if required:
            raise TraceError(f"{type(model).__name__} failed on fresh inputs shaped like the example: "
                             f"{type(exc).__name__}: {exc}\n  fix: check that forward runs on random "
                             "inputs of the example's shapes and dtypes") from exc
        return None
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _miss(gm: fx.GraphModule, model: nn.Module, tensors: tuple, err: float, first: bool) -> TraceError:
    shapes = ", ".join(str(tuple(t.shape)) for t in tensors)
    if first:
        return TraceError(
            f"the graph captured from {type(model).__name__} differs from the model on fresh inputs "
            f"of the example's shapes ({shapes}; relative error {err:.2e}).\n"
            "  This is a bug in archc's lowering of one of the model's ops.\n"
            "  fix: report the model; nothing was compacted")
    return TraceError(
        f"the graph captured from {type(model).__name__} differs from the model at input shape {shapes} "
        f"(relative error {err:.2e}): forward branches on a size, and torch.export kept the branch the "
        "example took.\n  fix: trace with an example of the sizes you will use, or fix that dim with "
        "dynamic_shapes=... so archc does not claim other sizes")


def assert_ranges(gm: fx.GraphModule) -> None:
    """Asserts at the top of ``gm`` for every dynamic size torch.export bounded: a branch on a
    size (``if x.shape[0] > 4``) was captured for the example's side of it only, so outside its
    range the graph refuses to run instead of computing the other branch's result wrongly."""
    bounded = {s: e for s, e in (gm.meta.get("archc.symbols") or {}).items()
               if e["max"] is not None or e["min"] > 2}
    if not bounded:
        return
    placeholders = {n.name: n for n in gm.graph.nodes if n.op == "placeholder"}
    last = list(placeholders.values())[-1]
    for spec in gm.meta["archc.inputs"]:
        for d, symbol in spec["dims"].items():
            entry = bounded.pop(symbol, None)
            if entry is not None:
                with gm.graph.inserting_after(last):
                    last = _assert_in_range(gm.graph, placeholders[spec["name"]], int(d), entry, last)
    gm.recompile()


def _assert_in_range(graph: fx.Graph, x: fx.Node, dim: int, entry: dict, after: fx.Node) -> fx.Node:
    # torch.export's ranges start at 2 only because it captures a size of 1 as static
    low, high = (1 if entry["min"] <= 2 else entry["min"]), entry["max"]
    message = (f"archc captured this model for {x.name}.size({dim}) in [{low}, {high or 'inf'}]: forward "
               "branches on this size; trace again with an example of the size you use")
    size = graph.call_function(getattr, (x, "shape"))
    with graph.inserting_after(size):
        value = graph.call_function(operator.getitem, (size, dim))
    with graph.inserting_after(value):
        ok = graph.call_function(operator.ge, (value, low))
    node = ok
    if high is not None:
        with graph.inserting_after(ok):
            below = graph.call_function(operator.le, (value, high))
        with graph.inserting_after(below):
            node = graph.call_function(operator.and_, (ok, below))
    with graph.inserting_after(node):
        return graph.call_function(torch._assert, (node, message))
