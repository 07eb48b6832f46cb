"""How archc calls a user's model: inputs as a tuple (positional) or a dict (keywords), and
what the default loss and metric read from an output that is a tensor, a tuple or a mapping.

Example:
    >>> args, kwargs = call_inputs({"input_ids": ids, "attention_mask": mask})
    >>> gm = archc.trace(model, args, kwargs)
    >>> out = run_model(gm, ({"input_ids": ids, "attention_mask": mask},))
    >>> loss = cross_entropy(out, labels)        # reads out["logits"]
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F


def call_inputs(example: Any) -> tuple[tuple, dict]:
    """``(args, kwargs)`` for an example that is a tensor, a tuple of inputs or a dict of them."""
    if isinstance(example, Mapping):
        return (), dict(example)
    if isinstance(example, torch.Tensor):
        return (example,), {}
    return tuple(example), {}


def run_model(model: torch.nn.Module, inputs: tuple) -> Any:
    """``model(*inputs)``, or ``model(**inputs[0])`` when a batch's inputs are one dict."""
    if len(inputs) == 1 and isinstance(inputs[0], Mapping):
        return model(**inputs[0])
    return model(*inputs)


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` (a tensor, or a dict or tuple of them) on ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


def logits_of(output: Any) -> torch.Tensor:
    """The scores in a model's output: the tensor itself, ``output["logits"]`` of a mapping
    (transformers' ``ModelOutput``), or the first element of a tuple."""
    if isinstance(output, Mapping):
        if "logits" in output:
            return output["logits"]
        output = next(iter(output.values()))
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def cross_entropy(output: Any, target: torch.Tensor) -> torch.Tensor:
    """The default loss: cross-entropy of the output's logits (see :func:`logits_of`)."""
    logits = logits_of(output)
    if logits.dim() > 2 and logits.shape[:-1] == target.shape:  # per-token scores (B, T, V)
        return F.cross_entropy(logits.flatten(0, -2), target.flatten())
    return F.cross_entropy(logits, target)


def accuracy(output: Any, target: torch.Tensor) -> float:
    """Top-1 accuracy of the output's logits against class indices ``target``.

    Example: ``accuracy(torch.tensor([[0.1, 0.9]]), torch.tensor([1])) == 1.0``.
    """
    logits = logits_of(output)
    dim = -1 if logits.dim() > 2 and logits.shape[:-1] == target.shape else 1
    return (logits.argmax(dim=dim) == target).float().mean().item()


def positional_inputs(gm: torch.fx.GraphModule, example: Any) -> tuple:
    """``example`` as the positional tensors a captured graph takes (keyword inputs in the order
    of ``gm``'s placeholders, which are named after them)."""
    args, kwargs = call_inputs(example)
    if not kwargs:
        return args
    names = [spec["name"] for spec in gm.meta.get("archc.inputs", [])]
    return tuple(kwargs[n] for n in names if n in kwargs)
