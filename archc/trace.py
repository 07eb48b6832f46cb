"""Trace any ``nn.Module`` into a ``torch.fx.GraphModule`` with shapes on every node.

Plain ``torch.fx.symbolic_trace`` gives up as soon as ``forward`` branches on a tensor's
shape (``if x.shape[-1] > 16``), takes ``len(x)`` or ``int(x.size(1))``. archc's tracer
runs the example input alongside the symbolic trace, so every proxy also carries its
concrete value. A branch whose condition depends only on shapes is evaluated on the
example input (and recorded in ``gm.meta["archc.specialised"]``); a branch on tensor
*values* has no static graph and is refused with its source line.

Example:
    >>> gm = archc.trace(model, (torch.randn(2, 3, 32, 32),))
    >>> gm.graph.find_nodes(op="placeholder")[0].meta["archc.shape"]
    (2, 3, 32, 32)
"""
from __future__ import annotations

import contextlib
import operator
import traceback
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

import torch
import torch.fx as fx
from torch import nn

from .errors import TraceError
from .meta import preserved_buffers, record_value

try:  # lets concrete evaluation call modules without re-entering the tracer's patches
    from torch.fx._symbolic_trace import _maybe_revert_all_patches as _unpatched
except ImportError:  # pragma: no cover - older torch
    _unpatched = contextlib.nullcontext

# Ops whose result depends only on the *shape* of their tensor argument.
_SHAPE_METHODS = {"size", "dim", "numel", "ndimension", "nelement"}
_SHAPE_ATTRS = {"shape", "ndim"}


def _user_frame(tb_frames: Iterable[traceback.FrameSummary]) -> Optional[str]:
    """The innermost frame outside torch and archc: where the user's code is."""
    user = [f for f in tb_frames if "/torch/" not in f.filename and "/archc/" not in f.filename]
    if not user:
        return None
    f = user[-1]
    return f"{f.filename}:{f.lineno} ({f.line})" if f.line else f"{f.filename}:{f.lineno}"


class _ConcreteProxy(fx.Proxy):
    """A proxy that can answer ``len``/``int``/``float`` when its value depends only on shapes."""

    def __len__(self) -> int:
        return len(self.tracer.concretise(self, "len()"))

    def __int__(self) -> int:
        return int(self.tracer.concretise(self, "int()"))

    def __index__(self) -> int:
        return operator.index(self.tracer.concretise(self, "an index"))

    def __float__(self) -> float:
        return float(self.tracer.concretise(self, "float()"))


class ConcreteTracer(fx.Tracer):
    """fx tracer that evaluates every node on example inputs while it records the graph."""

    def __init__(
        self,
        example_inputs: Sequence[Any],
        leaf_modules: Sequence[type] = (),
        autowrap_functions: Sequence[Callable] = (),
    ) -> None:
        super().__init__(autowrap_functions=tuple(autowrap_functions), param_shapes_constant=True)
        self.record_stack_traces = True
        self._examples = list(example_inputs)
        self._leaf_types = tuple(leaf_modules)
        self.values: dict[fx.Node, Any] = {}
        self.shape_only: set[fx.Node] = set()
        self.specialised: list[str] = []

    # -- graph construction --------------------------------------------------------------
    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        from .filters import Filter  # archc's own modules are leaves too

        if isinstance(m, self._leaf_types) or isinstance(m, Filter):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        if kind != "output":
            self.values[node] = self._evaluate(node)
            if self._is_shape_only(node):
                self.shape_only.add(node)
        return node

    def _evaluate(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            index = sum(1 for n in self.values if n.op == "placeholder")
            if index >= len(self._examples):
                raise TraceError(
                    f"forward takes more inputs than the {len(self._examples)} example input(s) given.\n"
                    f"  fix: pass one example tensor per forward argument (missing: '{node.target}')"
                )
            return self._examples[index]
        args = fx.node.map_arg(node.args, self.values.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, self.values.__getitem__)
        with torch.no_grad(), _unpatched():
            if node.op == "get_attr":
                return _get_qualified(self.root, node.target)
            if node.op == "call_function":
                return node.target(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            return self.root.get_submodule(node.target)(*args, **kwargs)

    def _is_shape_only(self, node: fx.Node) -> bool:
        if node.op == "call_method" and node.target in _SHAPE_METHODS:
            return True
        if node.op == "call_function" and node.target is getattr and node.args[1] in _SHAPE_ATTRS:
            return True
        inputs = node.all_input_nodes
        return (
            node.op == "call_function"
            and bool(inputs)
            and all(n in self.shape_only for n in inputs)
            and not isinstance(self.values[node], torch.Tensor)
        )

    # -- control flow on proxies ----------------------------------------------------------
    def concretise(self, proxy: fx.Proxy, use: str) -> Any:
        """The example value of ``proxy`` for a Python-level ``use``, if it depends on shapes only."""
        node = proxy.node
        value = self.values[node]
        shape_dependent = node in self.shape_only or (use == "len()" and isinstance(value, torch.Tensor))
        where = _user_frame(traceback.extract_stack()) or "<unknown>"
        if not shape_dependent:
            raise TraceError(
                f"forward uses a tensor's *values* for {use} at {where}.\n"
                f"  node: {node.format_node()}\n"
                "  A branch on tensor values has no static graph, so archc will not specialise it on "
                "the example input.\n"
                "  fix: rewrite it with torch.where / masking, or pass the module that contains it in "
                "trace(..., leaf_modules=[...]) (its channels then stay unprunable)."
            )
        self.specialised.append(f"{use} = {value!r} at {where}")
        return value

    def to_bool(self, obj: fx.Proxy) -> bool:
        return bool(self.concretise(obj, "a branch condition"))

    def iter(self, obj: fx.Proxy) -> Iterator:
        value = self.values[obj.node]
        if not isinstance(value, (tuple, list, torch.Size)):
            value = self.concretise(obj, "len()")
        return iter([obj[i] for i in range(len(value))])


def _get_qualified(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def trace(
    model: nn.Module,
    example_inputs: Sequence[torch.Tensor] | torch.Tensor,
    *,
    leaf_modules: Sequence[type] = (),
    autowrap_functions: Sequence[Callable] = (),
) -> fx.GraphModule:
    """Trace ``model`` into a GraphModule with ``archc.shape``/``archc.dtype`` on every node.

    Args:
        model: any ``nn.Module``; it is not modified.
        example_inputs: one tensor per ``forward`` argument (batch size > 1 is best).
        leaf_modules: module types kept as opaque calls (their channels become unprunable).
        autowrap_functions: free functions recorded as single calls instead of traced through.

    Raises:
        TraceError: naming the source line, when ``forward`` branches on tensor values or
            cannot be traced for another reason.

    Example:
        >>> gm = archc.trace(torchvision_like_resnet(), (torch.randn(2, 3, 64, 64),))
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(model, nn.Module):
        raise TraceError(f"trace() needs an nn.Module, got {type(model).__name__}.\n  fix: pass the model instance")
    tracer = ConcreteTracer(example_inputs, leaf_modules, autowrap_functions)
    try:
        with preserved_buffers(model):  # tracing runs the example: leave BatchNorm stats alone
            graph = tracer.trace(model)
    except TraceError:
        raise
    except Exception as exc:  # any failure inside user code becomes an actionable error
        where = _user_frame(traceback.extract_tb(exc.__traceback__)) or "<unknown>"
        scope = next(reversed(tracer.module_stack), "") if tracer.module_stack else ""
        raise TraceError(
            f"could not trace {type(model).__name__} at {where}: {type(exc).__name__}: {exc}\n"
            f"  module: {scope or '(top level)'}\n"
            "  fix: pass that module's type in trace(..., leaf_modules=[...]) to keep it opaque "
            "(its channels stay unprunable), or a helper function in autowrap_functions=[...]."
        ) from exc
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    for node in gm.graph.nodes:
        if node in tracer.values:
            record_value(node, tracer.values[node])
    gm.meta["archc.specialised"] = list(tracer.specialised)
    gm.meta["archc.inputs"] = [_input_spec(t) for t in example_inputs]
    return gm


def _input_spec(t: torch.Tensor) -> dict:
    """Enough about an example input to draw fresh random inputs like it later."""
    spec = {"shape": tuple(t.shape), "dtype": t.dtype}
    if not t.is_floating_point() and t.numel():
        spec["low"], spec["high"] = int(t.min()), int(t.max())
    return spec
