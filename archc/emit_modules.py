"""How ``model.py`` writes a ``torch.nn`` layer: the constructor call that rebuilds it, checked
to round-trip (same class, tensors, buffers and attributes), or an error saying why not.

Example:
    >>> leaf_constructor(nn.Linear(4, 16))
    'nn.Linear(in_features=4, out_features=16, bias=True)'
"""
from __future__ import annotations

import inspect
import math
import re
from typing import Any

import torch
from torch import nn

from archc.errors import ArchcError

_INIT_ONLY = {"init"}  # attributes that only seed random initialisation (PReLU)


def same_value(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        both = isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
        return both and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return type(a) is type(b) and bool(a == b)
    except Exception:  # noqa: BLE001 - values that cannot be compared count as different
        return False


def _mismatch(orig: nn.Module, built: nn.Module) -> str | None:
    """Why ``built`` is not a structural copy of ``orig`` (tensor names, shapes, attributes), or None."""
    if type(built) is not type(orig):
        return f"it builds a {type(built).__name__}"
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (orig, built)]
    if shapes[0] != shapes[1] or orig._parameters.keys() != built._parameters.keys():
        return f"tensors differ: {shapes[0]} vs {shapes[1]}"
    if orig._buffers.keys() != built._buffers.keys():
        return "buffer names differ"
    for name in orig._non_persistent_buffers_set:
        if not same_value(orig._buffers[name], built._buffers.get(name)):
            return f"non-persistent buffer {name!r} differs"
    a, b = ({k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"} for m in (orig, built))
    for key in sorted((a.keys() | b.keys()) - _INIT_ONLY):
        if not same_value(a.get(key), b.get(key)):
            return f"attribute {key}={a.get(key)!r} but the call gives {b.get(key)!r}"
    return None


def _build(text: str) -> nn.Module:
    try:
        return eval("nn." + text, {"nn": nn, "torch": torch, "inf": math.inf, "nan": math.nan})  # noqa: S307
    except Exception as e:  # noqa: BLE001
        raise ArchcError(f"its repr {text!r} is not a constructor call ({type(e).__name__}: {e})") from None


def leaf_constructor(module: nn.Module) -> str:
    """The ``nn.<Class>(...)`` call that rebuilds ``module``, verified to round-trip.

    Starts from the repr; constructor arguments it leaves out (``Hardswish(inplace=True)``
    prints as ``Hardswish()``) are added from the module's attributes.
    Example: ``leaf_constructor(nn.Linear(4, 16))`` -> ``"nn.Linear(in_features=4, out_features=16, bias=True)"``.
    Raises ArchcError when ``module`` is not a torch.nn class or cannot be rebuilt exactly.
    """
    cls = type(module)
    if getattr(nn, cls.__name__, None) is not cls:
        raise ArchcError(f"{cls.__module__}.{cls.__qualname__} is not a torch.nn class")
    bare = r"(\w+)=(?!True\b|False\b|None\b|inf\b|nan\b)([A-Za-z_]\w*)(?=[,)])"  # padding=same -> 'same'
    text = re.sub(bare, r"\1='\2'", repr(module))
    built = _build(text)
    if _mismatch(module, built) and "\n" not in text:
        given, params = set(re.findall(r"(\w+)=", text)), inspect.signature(cls.__init__).parameters
        extra = [f"{k}={v!r}" for k, v in vars(module).items()
                 if k in params and k not in given and not same_value(v, getattr(built, k, None))]
        if extra:
            text = text[:-1] + ("" if text.endswith("()") else ", ") + ", ".join(extra) + ")"
            built = _build(text)
    problem = _mismatch(module, built)
    if problem:
        raise ArchcError(f"{text!r} does not rebuild it: {problem}")
    return "nn." + text
