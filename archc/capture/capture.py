"""``trace``: torch.export, then lowering, then shapes and input specs on the GraphModule."""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import traceback
from typing import Any, Optional

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn
from torch.export import Dim

from ..errors import TraceError
from ..meta import preserved_buffers, record_shapes
from .check import assert_ranges, check_against_model
from .inputs import input_specs
from .lower import Lowering


def trace(model: nn.Module, args: Any = (), kwargs: Optional[dict] = None, *,
          dynamic_shapes: Any = None) -> fx.GraphModule:
    """Capture ``model`` called as ``model(*args, **kwargs)`` into a GraphModule for archc.

    Args:
        model: any ``nn.Module``; it is not modified (its parameters are shared, not copied).
        args: the positional inputs, one tensor or a tuple (batch size 2 or more is best: a
            size of 1 cannot be told apart from a broadcast and is captured as static).
        kwargs: keyword inputs, as transformers models take them (``input_ids=...``).
        dynamic_shapes: as in ``torch.export.export``; by default every tensor input's dim 0,
            and dim 1 of integer inputs of rank 2 (token ids), are ``Dim.AUTO``.

    The returned GraphModule takes the tensor inputs (by position, or by keyword under their
    argument names) and returns what the model returns, mappings (``ModelOutput``) as dicts.
    Every node has ``archc.shape``; ``gm.meta["archc.inputs"]`` says how to draw fresh inputs,
    at other batch sizes and sequence lengths too.

    Raises:
        TraceError: naming the user's source line, when ``forward`` branches on tensor values or
            does something ``torch.export`` cannot capture.

    Example:
        >>> gm = archc.trace(net, (torch.randn(2, 3, 64, 64),))
        >>> gm(torch.randn(5, 3, 64, 64)).shape[0]
        5
    """
    if not isinstance(model, nn.Module):
        raise TraceError(f"trace() needs an nn.Module, got {type(model).__name__}.\n  fix: pass the model instance")
    args = (args,) if isinstance(args, torch.Tensor) else tuple(args)
    kwargs = _without_cache(model, dict(kwargs or {}))
    export_args, export_kwargs = args, kwargs
    if dynamic_shapes is None:
        dynamic_shapes = default_dynamic_shapes(model, args, kwargs)
        export_args, export_kwargs = _batch_of_two(args), _batch_of_two(kwargs)
    _check_input_dtypes(model, (args, kwargs))
    modes = {m: m.training for m in model.modules()}
    try:
        with preserved_buffers(model), _torch_logs_quiet():
            model.eval()  # a deterministic graph; BatchNorm and Dropout become layers that follow train()
            exported = _export(model, export_args, export_kwargs, dynamic_shapes)
    finally:
        for m, training in modes.items():
            m.training = training
    flat_inputs, spec = pytree.tree_flatten((args, kwargs))
    gm = Lowering(exported, model, flat_inputs).run(type(model).__name__)
    gm.train(model.training)
    gm.meta["archc.inputs"] = input_specs(gm, exported, flat_inputs)
    record_shapes(gm, tuple(t for t in flat_inputs if isinstance(t, torch.Tensor)))
    assert_ranges(gm)
    check_against_model(gm, model, flat_inputs, spec)
    return gm


def _check_input_dtypes(model: nn.Module, inputs: Any) -> None:
    """Floating inputs of another dtype than the model's parameters would fail inside forward."""
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    for i, t in enumerate(t for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor)):
        if param is not None and t.is_floating_point() and t.dtype != param.dtype:
            raise TraceError(f"example input {i} is {t.dtype}, but {type(model).__name__}'s parameters are "
                             f"{param.dtype}\n  fix: return inputs of {param.dtype} from example_input() "
                             f"(and data()), e.g. x.to({param.dtype})")


@contextlib.contextmanager
def _torch_logs_quiet():
    """torch.export logs a traceback of every failed fake-tensor op as an error record; the
    failure reaches the user as one TraceError instead."""
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _batch_of_two(inputs: Any) -> Any:
    """An example batch of one, repeated to two: torch.export captures a size of 1 as static
    (it cannot be told from a broadcast), which would fix the batch size of the whole graph."""
    tensors = [t for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor) and t.dim() >= 1]
    if not tensors or any(t.shape[0] != 1 for t in tensors):
        return inputs
    return pytree.tree_map(lambda t: t.expand(2, *t.shape[1:]).clone()
                           if isinstance(t, torch.Tensor) and t.dim() >= 1 else t, inputs)


def _without_cache(model: nn.Module, kwargs: dict) -> dict:
    """``use_cache=False`` for a model that takes it (transformers' decoders): a key/value cache
    is inference state, not something a search trains or compaction shrinks."""
    try:
        takes = "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        takes = False
    return {**kwargs, "use_cache": False} if takes and "use_cache" not in kwargs else kwargs


def default_dynamic_shapes(model: nn.Module, args: tuple, kwargs: dict) -> dict:
    """``Dim.AUTO`` for every tensor's batch dim and for the sequence dim of token ids."""

    def spec(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return None
        dims = {0: Dim.AUTO} if value.dim() >= 1 else {}
        if value.dim() == 2 and not value.is_floating_point() and value.dtype != torch.bool:
            dims[1] = Dim.AUTO
        elif value.dim() >= 3 and value.dtype == torch.bool:
            dims[value.dim() - 1] = Dim.AUTO
        return dims

    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs)
    except TypeError as exc:
        raise TraceError(f"{type(model).__name__}.forward cannot take these inputs: {exc}\n"
                         "  fix: pass args=(...) and kwargs={...} as you would call the model") from exc
    return {name: pytree.tree_map(spec, value, is_leaf=lambda v: isinstance(v, torch.Tensor))
            for name, value in bound.arguments.items()}


def _export(model: nn.Module, args: tuple, kwargs: dict, dynamic_shapes: Any):
    try:
        try:
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=False)
        except RuntimeError as exc:
            if "which is not a known type" not in str(exc) or not _register_output_dataclasses(model, args, kwargs):
                raise
            return torch.export.export(model, args, kwargs, dynamic_shapes=dynamic_shapes, strict=False)
    except TraceError:
        raise
    except Exception as exc:  # any failure inside user code becomes an actionable error
        raise _trace_error(model, exc) from exc


def _register_output_dataclasses(model: nn.Module, args: tuple, kwargs: dict) -> bool:
    """Let torch.export flatten the dataclasses a model returns (``return Out(logits=...)``).
    Returns whether any was registered; runs the model once on the example to find them."""
    with torch.no_grad():
        output = model(*args, **kwargs)
    found = []

    def visit(value: Any) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            if type(value) not in found:
                found.append(type(value))
            for f in dataclasses.fields(value):
                visit(getattr(value, f.name))
        elif isinstance(value, (tuple, list)):
            for v in value:
                visit(v)
        elif isinstance(value, dict):
            for v in value.values():
                visit(v)

    visit(output)
    for cls in found:
        try:
            torch.export.register_dataclass(cls)
        except ValueError:  # registered already
            pass
    return bool(found)


def _trace_error(model: nn.Module, exc: Exception) -> TraceError:
    where = _user_frame(traceback.extract_tb(exc.__traceback__)) or "<unknown>"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = str(exc)
    if "data-dependent" in text or "GuardOnDataDependentSymNode" in type(exc).__name__:
        return TraceError(
            f"{type(model).__name__}.forward uses a tensor's *values* in Python control flow at {where}.\n"
            f"  {first}\n"
            "  A branch on tensor values has no static graph, so archc will not specialise it on the "
            "example input.\n  fix: rewrite it with torch.where / masking, or torch.cond.")
    return TraceError(
        f"could not capture {type(model).__name__} at {where}: {type(exc).__name__}: {first}\n"
        "  fix: check that the example inputs (example_input(), or the first batch of data()) have the shapes "
        "the model takes; otherwise make forward exportable by torch.export (non-strict): the line above is "
        "where it stopped.")


def _user_frame(frames) -> Optional[str]:
    """The innermost frame outside torch and archc: where the user's code is."""
    user = [f for f in frames if "/torch/" not in f.filename and "/archc/" not in f.filename
            and "<frozen" not in f.filename]
    if not user:
        return None
    f = user[-1]
    return f"{f.filename}:{f.lineno} ({f.line})" if f.line else f"{f.filename}:{f.lineno}"
