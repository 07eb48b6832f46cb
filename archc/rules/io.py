"""Graph inputs, outputs and parameters used directly in the graph."""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import nn

from ..meta import tensor_shape
from . import NA, WEIGHTLESS, analyse_rule, permutation_rule, shrink_rule


@analyse_rule("placeholder", "output", shrink=NA, permutes=NA, **WEIGHTLESS)
def model_boundary(node, ctx) -> None:
    """Channels the model takes in or gives out are the user's: never pruned."""
    if node.op == "placeholder":
        ctx.block_all(node, "comes from the model's input")
        return
    for x in node.all_input_nodes:
        if tensor_shape(x) is not None:
            ctx.block_all(x, "reaches the model's output")


# a tensor read directly is itself what makes its channels: archc.fold and archc.sparsity
# scale and read it as it is, so there is no layer to look facts up for
@analyse_rule("get_attr", **WEIGHTLESS)
def parameter(node, ctx) -> None:
    for d in range(len(tensor_shape(node) or ())):
        ctx.produce(node, d)  # a parameter used directly: class token, position embedding, scale


@shrink_rule("get_attr")
def shrink_parameter(node, cc) -> None:
    value = cc.gm.get_parameter(node.target) if _is_param(cc.gm, node.target) else None
    if value is None:
        value = _get(cc.gm, node.target)
    if not isinstance(value, torch.Tensor):
        return
    new = value.detach()
    keeps = [cc.keep(node, d) for d in range(new.dim())]
    for d, keep in enumerate(keeps):
        if keep is not None:
            new = new.index_select(d, torch.as_tensor(keep, dtype=torch.long))
    if new.shape == value.shape:
        return
    cc.note(node.target, keeps)
    owner_name, _, attr = node.target.rpartition(".")
    owner = cc.gm.get_submodule(owner_name) if owner_name else cc.gm
    if isinstance(value, nn.Parameter):
        setattr(owner, attr, nn.Parameter(new.clone(), requires_grad=value.requires_grad))
    else:
        setattr(owner, attr, new.clone())


def _is_param(gm: fx.GraphModule, target: str) -> bool:
    return target in dict(gm.named_parameters(remove_duplicate=False))


def _get(gm: fx.GraphModule, target: str):
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


permutation_rule("get_attr")  # its shrink rule gathers each dim by index
