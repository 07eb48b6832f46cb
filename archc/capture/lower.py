"""Rewrite an exported ATen graph into archc's dialect, one op at a time (see :mod:`.ops`).

The result is a fresh GraphModule whose placeholders are the model's tensor inputs, whose
layers are ``torch.nn`` modules at the paths of the user's modules, and whose output has the
structure the model returns (a ``ModelOutput`` or other mapping becomes a plain dict).
In-place ops on tensors nothing else aliases become their functional form; a write into a
view (``x[:, 0] = y``) stays an ATen call, which the channel analysis blocks.

It reads the exported program's own (lifted) graph: a placeholder for a parameter, buffer or
constant becomes a ``get_attr`` of the tensor at its path in the model. Unlifting with
``ExportedProgram.module()`` would do the same, but takes time quadratic in the children of one
module (a ``Sequential`` of 2500 blocks: most of a minute).

Example: ``gm = Lowering(exported, model, flat_inputs).run(type(model).__name__)``.
"""
from __future__ import annotations

import operator
from typing import Any, Optional

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn
from torch.export import ExportedProgram

from ..errors import TraceError, node_error
from .install import install_layer, install_tensor, layer_name, module_paths, resolve, same_layer
from .modules import MODULE_LOWERINGS
from .ops import LOWERINGS, is_whole_slice, slice_args

_COPIED_META = ("stack_trace", "nn_module_stack", "val")


# ops whose schema promises a fresh tensor but which return a view of an input in eager: an
# einsum that only permutes, a type_as to the same type
_MAY_RETURN_A_VIEW = (torch.ops.aten.einsum.default, torch.ops.aten.type_as.default)


def is_view_op(target: Any) -> bool:
    """An ATen op whose result may alias its input (view, slice, transpose, split... and the ops
    that do so in eager against their schema)."""
    if target in _MAY_RETURN_A_VIEW:
        return True
    schema = getattr(target, "_schema", None)
    return schema is not None and not schema.is_mutable and any(r.alias_info is not None for r in schema.returns)


def functional_variant(target: Any) -> Optional[Any]:
    """``aten.add_.Tensor`` -> ``aten.add.Tensor``; None for ops that do not write their input."""
    schema = getattr(target, "_schema", None)
    if schema is None or not schema.arguments or schema.arguments[0].alias_info is None:
        return None
    if not schema.arguments[0].alias_info.is_write or schema.name.endswith("_out"):
        return None
    name = schema.name.split("::")[-1]
    packet = getattr(torch.ops.aten, name[:-1], None) if name.endswith("_") else None
    return getattr(packet, target._overloadname, None) if packet is not None else None


class Lowering:
    """State of one rewrite: the new graph, the new root module, old-node -> new-value map."""

    DROP = object()  # a lowering's answer for "this op disappears"

    def __init__(self, exported: ExportedProgram, model: nn.Module, flat_inputs: list) -> None:
        self.old, self.model = exported.graph_module, model
        self.out_spec = exported.call_spec.out_spec
        self.lifted, self.tensors = lifted_tensors(exported)
        self._inputs = iter(flat_inputs)
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.env: dict[fx.Node, Any] = {}
        self._layers: dict[str, nn.Module] = {}
        self._current: Optional[fx.Node] = None
        self._device: Optional[fx.Node] = None
        self._order = {n: i for i, n in enumerate(self.old.graph.nodes)}

    # -- what lowerings read ---------------------------------------------------------------
    def tensor(self, node: Any) -> Optional[torch.Tensor]:
        """The parameter or buffer behind a get_attr node of the new graph (None stays None)."""
        return None if node is None else self._attr(node.target)

    def _attr(self, path: str) -> Any:
        return self.tensors[path] if path in self.tensors else resolve(self.old, path)

    def are_parameters(self, *nodes: Any) -> bool:
        """Whether each of ``nodes`` is None or a parameter read straight from the model."""
        return all(n is None or (isinstance(n, fx.Node) and n.op == "get_attr"
                                 and isinstance(self._attr(n.target), nn.Parameter)) for n in nodes)

    def running_module(self, node: fx.Node) -> Optional[nn.Module]:
        """The user's innermost module that was running when ``node`` was captured."""
        paths = module_paths(node)
        try:
            return self.model.get_submodule(paths[-1]) if paths else self.model
        except AttributeError:
            return None

    def example_shape(self, node: fx.Node) -> tuple:
        """The captured (possibly symbolic) shape of the old node ``node``."""
        return tuple(node.meta["val"].shape)

    # -- what lowerings emit ----------------------------------------------------------------
    def call_function(self, target: Any, args: tuple, kwargs: dict) -> fx.Node:
        return self._stamp(self._create("call_function", target, args, kwargs))

    def call_method(self, name: str, args: tuple, kwargs: dict) -> fx.Node:
        return self._stamp(self._create("call_method", name, args, kwargs))

    def call_layer(self, node: fx.Node, layer: nn.Module, by: fx.Node, *inputs: Any) -> fx.Node:
        """Call ``layer``, installed under the name of the module that owns the parameter ``by``
        when that module ran the op, or when a module it sits in ran it and the owner is that
        kind of layer (``attn`` calling ``F.linear(x, self.qkv.weight)`` names it ``attn.qkv``);
        the same layer again when it is called twice with the same settings. Otherwise it is
        named after the module that ran it (a tied weight is named after one owner)."""
        owner = by.target.rpartition(".")[0]
        ran = module_paths(node)
        if not ran or owner in ran or (ran[-1] and owner.startswith(ran[-1] + ".") and self._is_a(owner, layer)):
            return self._call_installed(layer_name(owner, layer), layer, inputs)
        return self._call_installed(layer_name(ran[-1], layer), layer, inputs)

    def _is_a(self, path: str, layer: nn.Module) -> bool:
        try:
            return type(self.model.get_submodule(path)) is type(layer)
        except AttributeError:
            return False

    def call_new_layer(self, node: fx.Node, layer: nn.Module, *inputs: Any) -> fx.Node:
        """Call a layer without tensors (dropout), named after the user's module that ran the op."""
        ran = module_paths(node)
        return self._call_installed(layer_name(ran[-1] if ran else "", layer), layer, inputs)

    def _call_installed(self, name: str, layer: nn.Module, inputs: tuple) -> fx.Node:
        base, i = name, 0
        while name in self._layers and not same_layer(self._layers[name], layer):
            i += 1
            name = f"{base}_{i}"
        if name not in self._layers:
            self._layers[name] = layer
            install_layer(self.root, name, layer)
        return self._stamp(self._create("call_module", name, inputs, {}, name.replace(".", "_")))

    def _create(self, op: str, target: Any, args: tuple, kwargs: dict, name: Optional[str] = None) -> fx.Node:
        """A node named like the captured one it replaces (``cumsum``, not ``cumsum_default``);
        a layer's call is named after the layer, as ``torch.fx.symbolic_trace`` names it."""
        return self.graph.create_node(op, target, tuple(args), dict(kwargs), name=name or self._current.name)

    def _stamp(self, new: fx.Node) -> fx.Node:
        for key in _COPIED_META:
            if key in self._current.meta:
                new.meta[key] = self._current.meta[key]
        return new

    # -- the rewrite ------------------------------------------------------------------------
    def run(self, name: str) -> fx.GraphModule:
        nodes = list(self.old.graph.nodes)
        inputs = [n for n in nodes if n.op == "placeholder" and n.name not in self.lifted]
        first = set(inputs)
        for node in inputs + [n for n in nodes if n not in first]:  # placeholders before get_attrs
            self._current = node
            if node.op == "output":
                self._output(node, self.out_spec)
            else:
                self.env[node] = self._lower(node)
        self._install_attrs()
        gm = fx.GraphModule(self.root, self.graph, name)
        gm.graph.eliminate_dead_code()  # what a raised pattern (a hand-written norm) left unread
        gm.graph.lint()
        gm.recompile()
        return gm

    def _lower(self, node: fx.Node) -> Any:
        if node.op == "placeholder" and node.name in self.lifted:
            return self._stamp(self.graph.get_attr(self.lifted[node.name]))
        if node.op == "placeholder":  # a non-tensor input was specialised: its example value
            value = next(self._inputs)
            return self._stamp(self.graph.placeholder(node.name)) if isinstance(value, torch.Tensor) else value
        if node.op == "get_attr":
            return self._stamp(self.graph.get_attr(node.target))
        if node.op == "call_module":
            raise node_error(TraceError, node, "torch.export left a module call archc cannot lower",
                             "report this model to archc with the node above")
        args = fx.node.map_arg(node.args, self.env.__getitem__)
        kwargs = self._portable(fx.node.map_arg(node.kwargs, self.env.__getitem__))
        target, mutated = node.target, None
        functional = functional_variant(target)
        if functional is not None:
            mutated = node.args[0]
            if not self._can_functionalise(node, mutated):
                return self._keep(node)
            target = functional
        packet = getattr(target, "overloadpacket", None)
        lowering = LOWERINGS.get(packet)
        if packet in MODULE_LOWERINGS:
            args = tuple(self._uncast(a) for a in args)
        value = lowering(self, node, *args, **kwargs) if lowering is not None else None
        if value is None:
            value = self.call_function(target, args, kwargs)
        if value is Lowering.DROP:
            return None
        if mutated is not None:
            self.env[mutated] = value  # later readers of the written tensor see the new value
        return value

    def _uncast(self, value: Any) -> Any:
        """A parameter cast to its own dtype (``self.weight.to(x.dtype)``, DeepSeek-ViT's norms)
        is the parameter, when a layer reads it: the raised layer casts as its module does.
        Elsewhere (Gemma's ``1.0 + self.weight.float()``) the cast stays: after ``.half()`` it
        still computes in float32."""
        if isinstance(value, fx.Node) and value.op == "call_method" and value.target == "to" \
                and not value.kwargs and self.are_parameters(value.args[0]) \
                and self.tensor(value.args[0]).dtype == value.args[1]:
            return value.args[0]
        return value

    def _portable(self, kwargs: dict) -> dict:
        """A tensor created in forward goes where the inputs are, not to the capture's device."""
        if not isinstance(kwargs.get("device"), torch.device):
            return kwargs
        if self._device is None:
            first = next((n for n in self.graph.nodes if n.op == "placeholder"), None)
            if first is None:
                return kwargs
            self._device = self._create("call_function", getattr, (first, "device"), {}, "device")
        return {**kwargs, "device": self._device}

    def _can_functionalise(self, node: fx.Node, mutated: Any) -> bool:
        """A write into a tensor that nothing aliases yet: no view of it (or of an earlier
        in-place result on it) was taken before this write, and it is no input, parameter or
        view itself. Views taken after it read the written value in both forms (ResNeSt's
        ``relu_`` followed by a reshape). A write into the sole alias of a tensor is a write into
        that tensor (GhostNetV2's ``out = cat(...)[:, :n]; out += shortcut`` with all n channels)."""
        if not isinstance(mutated, fx.Node):
            return False
        root = _alias_root(mutated)
        while _is_sole_alias(root):
            root = _alias_root(root.args[0])
        if root.op in ("get_attr", "placeholder") or is_view_op(root.target) or _is_piece_of_view(root):
            return False
        return not _has_views(root, before=self._order[node], order=self._order)

    def _keep(self, node: fx.Node) -> Any:
        if node.op == "call_function" and node.args and isinstance(node.args[0], fx.Node) \
                and self.lifted.get(node.args[0].name, "").endswith("num_batches_tracked"):
            return None  # the raised BatchNorm counts its own batches
        args = fx.node.map_arg(node.args, self.env.__getitem__)
        kwargs = fx.node.map_arg(node.kwargs, self.env.__getitem__)
        return self.call_function(node.target, args, kwargs)

    def _output(self, node: fx.Node, out_spec: pytree.TreeSpec) -> None:
        leaves = [self.env[x] if isinstance(x, fx.Node) else x for x in node.args[0]]
        self.graph.output(plain_structure(leaves, out_spec))

    def _install_attrs(self) -> None:
        """Give the new root the tensors its remaining get_attr nodes read; drop unused ones."""
        for n in list(self.graph.nodes):
            if n.op != "get_attr":
                continue
            if not n.users:
                self.graph.erase_node(n)
                continue
            n.target = install_tensor(self.root, n.target, self._attr(n.target))


def lifted_tensors(exported: ExportedProgram) -> tuple[dict[str, str], dict[str, Any]]:
    """``({placeholder: path}, {path: tensor})`` for the parameters, buffers and constants
    torch.export lifted into placeholders. The tensors are the model's own (not copies).
    Mutations stay in the graph as in-place ops (torch.export's training IR); an exported
    program that returns them as extra outputs instead is refused, not guessed at."""
    signature = exported.graph_signature
    lifted, tensors = {}, {}
    for spec in signature.input_specs:
        kind = spec.kind.name
        if kind == "USER_INPUT":
            continue
        if kind not in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR", "CUSTOM_OBJ"):
            raise TraceError(f"torch.export gave {spec.arg.name} the input kind {kind}, which archc "
                             "does not lower\n  fix: report this model to archc")
        held = exported.state_dict if kind in ("PARAMETER", "BUFFER") and spec.persistent is not False \
            else exported.constants
        lifted[spec.arg.name], tensors[spec.target] = spec.target, held[spec.target]
    kinds = {s.kind.name for s in signature.output_specs} - {"USER_OUTPUT"}
    if kinds:
        raise TraceError(f"torch.export returned {', '.join(sorted(kinds))} outputs, which archc does not "
                         "lower\n  fix: report this model to archc")
    return lifted, tensors


def plain_structure(leaves: list, spec: pytree.TreeSpec) -> Any:
    """The model's output structure over ``leaves``: tuples and lists stay, and any mapping
    (``dict``, transformers' ``ModelOutput``) or dataclass becomes a dict; other containers
    become tuples."""
    if spec.is_leaf():
        return leaves[0]
    children, start = [], 0
    for child in spec.children() if hasattr(spec, "children") else spec.children_specs:
        children.append(plain_structure(leaves[start:start + child.num_leaves], child))
        start += child.num_leaves
    if spec.type in (tuple, list):
        return spec.type(children)
    keys = spec.context
    if isinstance(keys, list) and keys and isinstance(keys[0], list):  # register_dataclass: [fields, None fields]
        keys = keys[0]
    if isinstance(keys, (list, tuple)) and len(keys) == len(children) and all(isinstance(k, str) for k in keys):
        return dict(zip(keys, children))
    return tuple(children)


def _alias_root(node: fx.Node) -> fx.Node:
    """The tensor an in-place result is: ``y.add_(1).mul_(2)`` is still ``y``."""
    while functional_variant(node.target) is not None and isinstance(node.args[0], fx.Node):
        node = node.args[0]
    return node


def _has_views(root: fx.Node, before: int, order: dict[fx.Node, int]) -> bool:
    """Whether a view of ``root``, or of an in-place result on it, is taken before the node at
    position ``before`` (in ``order``)."""
    family, todo = {root}, [root]
    while todo:
        for user in todo.pop().users:
            if user in family:
                continue
            if (functional_variant(user.target) is not None and user.args[0] in family) or _is_sole_alias(user):
                family.add(user)
                todo.append(user)
                continue
            if (is_view_op(user.target) or _is_piece_of_view(user)) and order[user] < before:
                return True
    return False


def _is_sole_alias(node: fx.Node) -> bool:
    """``aten.alias(x)``, or a slice of all of ``x`` (``x[:, :n]`` of its n channels), that is the
    only reader of ``x``: the same tensor under another name."""
    source = node.args[0] if node.args else None
    if not (isinstance(source, fx.Node) and len(source.users) == 1):
        return False
    if node.target is torch.ops.aten.alias.default:
        return True
    if node.target is not torch.ops.aten.slice.Tensor:
        return False
    dim, start, end, step = slice_args(*node.args[1:])
    size = source.meta["val"].shape[dim] if "val" in source.meta else None
    return is_whole_slice(start, end, step, size)


def _is_piece_of_view(node: fx.Node) -> bool:
    return node.target is operator.getitem and isinstance(node.args[0], fx.Node) and is_view_op(node.args[0].target)
