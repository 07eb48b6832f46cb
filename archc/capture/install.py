"""Where lowered layers and tensors go in the new root module: at the user's paths.

Example: ``install_layer(root, "layer1.0.conv1", nn.Conv2d(...))`` creates the containers on the way.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..errors import TraceError


def resolve(root: nn.Module, path: str) -> Any:
    obj: Any = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def module_paths(node: fx.Node) -> list[str]:
    """The user's modules that were running when ``node`` was captured, outermost first."""
    return [path for path, _ in (node.meta.get("nn_module_stack") or {}).values() if path]


def layer_name(path: str, layer: nn.Module) -> str:
    return path or type(layer).__name__.lower()


def same_layer(a: nn.Module, b: nn.Module) -> bool:
    """Two lowerings of one user module called twice: same type, settings and tensors."""
    if type(a) is not type(b) or a.extra_repr() != b.extra_repr():
        return False
    ta = {k: id(v) for k, v in [*a._parameters.items(), *a._buffers.items()]}
    tb = {k: id(v) for k, v in [*b._parameters.items(), *b._buffers.items()]}
    return ta == tb


def plain_containers(root: nn.Module, path: str) -> bool:
    """Whether every existing module on the way to ``path`` is a plain ``nn.Module`` container."""
    owner = root
    for part in path.split(".")[:-1]:
        owner = owner._modules.get(part)
        if owner is None:
            return True
        if type(owner) is not nn.Module:
            return False
    return True


def parent_of(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    """The module that holds ``path``'s last component, creating empty containers on the way."""
    parts = path.split(".")
    owner = root
    for part in parts[:-1]:
        child = owner._modules.get(part)
        if child is None:
            child = nn.Module()
            owner.add_module(part, child)
        owner = child
    return owner, parts[-1]


def install_layer(root: nn.Module, path: str, layer: nn.Module) -> None:
    owner, name = parent_of(root, path)
    existing = owner._modules.get(name)
    if existing is not None:  # a container made earlier for this layer's children
        if existing._parameters or existing._buffers:
            raise TraceError(f"archc could not place layer {path!r}: a tensor is stored there already")
        for child_name, child in existing._modules.items():
            layer.add_module(child_name, child)
    owner.add_module(name, layer)


def install_tensor(root: nn.Module, path: str, tensor: Any) -> str:
    """Register ``tensor`` at ``path`` (or a free variant of it) and return where it went. A
    tensor whose owner became a layer (``self.gamma`` beside ``F.linear(x, self.weight)``) goes
    beside it instead (``owner_gamma``): inside, it would read as one of the layer's weights."""
    try:
        if resolve(root, path) is tensor:  # a layer's own weight, read directly too (tied)
            return path
    except AttributeError:
        pass
    base, i = path, 0
    if not plain_containers(root, path):
        base = path = path.replace(".", "_")
    while True:
        owner, name = parent_of(root, path)
        held = owner._parameters.get(name, owner._buffers.get(name))
        if held is tensor:
            return path
        if held is None and name not in owner._modules and not hasattr(owner, name):
            if isinstance(tensor, nn.Parameter):
                owner.register_parameter(name, tensor)
            elif isinstance(tensor, torch.Tensor):
                owner.register_buffer(name, tensor)
            else:
                setattr(owner, name, tensor)
            return path
        i += 1
        path = f"{base}_{i}"
