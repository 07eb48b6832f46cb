"""User code and data inside the search loop: every failure named, checked before it costs.

The model file's functions are wrapped when they are loaded (:mod:`archc.userfile`); here the
calls made while training are: the model's forward, ``loss``, ``metric``, ``optimizer`` and
iterating the data. A failure becomes a :class:`SearchError` naming the function, the epoch
and step, and what to fix. Cheap checks run before the first step.

Example:
    >>> with user_code("loss(output, target)", "epoch 2, step 14", "return a scalar tensor"):
    ...     value = loss_fn(output, target)
"""
from __future__ import annotations

import collections.abc
import contextlib
import math
from typing import Any, Callable, Iterator, Optional

import torch

from .errors import ArchcError, UserFileError
from .model_io import cross_entropy, logits_of

# A message torch raises for a common data mistake -> the fix to show with it.
_KNOWN = (
    ("Expected more than 1 value per channel when training",
     "a batch of 1 reached BatchNorm while training: use a batch size whose last batch is not 1, "
     "or pass drop_last=True to your DataLoader"),
    ("out of bounds", "a target is outside [0, number of classes): give class indices below the "
                      "model's output width, or define loss() in model.py"),
    ("expected scalar type", "inputs and model differ in dtype: convert the data with .float()"),
    ("should be the same", "inputs and model differ in dtype or device: convert the data with .float()"),
)


class SearchError(UserFileError):
    """User code or data failed inside the search loop, or the training diverged."""


class DivergedError(SearchError):
    """The loss or the parameters became NaN or inf (the last good checkpoint is kept)."""


@contextlib.contextmanager
def user_code(what: str, where: str, fix: str) -> Iterator[None]:
    """Turn any exception raised by the user's ``what`` into a SearchError naming ``where``."""
    try:
        yield
    except ArchcError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever user code raises
        message = str(err).strip().splitlines()[0] if str(err).strip() else ""
        hint = next((h for pattern, h in _KNOWN if pattern in str(err)), fix)
        raise SearchError(f"{what} raised {type(err).__name__}: {message} ({where})\n  fix: {hint}") from err


def user_batches(data: Any, name: str, where: Callable[[], str]) -> Iterator[Any]:
    """Iterate ``data``, naming ``name`` when iterating it raises."""
    iterator = None
    with user_code(f"iterating the {name}", where(), "make data() return datasets or loaders that iterate "
                   "without error"):
        iterator = iter(data)
    while True:
        with user_code(f"iterating the {name}", where(), "make data() return datasets or loaders that iterate "
                       "without error"):
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


def check_reiterable(data: Any, name: str) -> None:
    """Refuse data that can be iterated only once (a generator): the second epoch would be empty."""
    if isinstance(data, collections.abc.Iterator):  # not iter(data): that would start a loader's workers
        raise SearchError(f"the {name} is a one-shot iterator ({type(data).__name__}): it would be empty "
                          "from the second epoch on\n  fix: return a Dataset, a DataLoader or a list of "
                          "batches from data()")
    size = length(data)
    if size == 0:
        raise SearchError(f"the {name} is empty\n  fix: make data() return a non-empty {name}")


def length(data: Any) -> Optional[int]:
    """``len(data)``, or None for a stream (an IterableDataset, or a loader over one)."""
    try:
        return len(data)
    except TypeError:
        return None


def check_first_batch(inputs: tuple, model: torch.nn.Module, where: str) -> None:
    """Inputs whose dtype the model cannot take, or that hold NaN/inf, are refused before training."""
    param = next(iter(model.parameters()), None)
    for i, x in enumerate(_tensors(inputs)):
        if param is not None and x.is_floating_point() and x.dtype != param.dtype:
            raise SearchError(f"input {i} of the first training batch is {x.dtype}, the model's parameters are "
                              f"{param.dtype} ({where})\n  fix: convert the data in data() with .to({param.dtype})")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise SearchError(f"input {i} of the first training batch holds NaN or inf ({where})\n"
                              "  fix: clean the data in data()")


def check_class_targets(loss_fn: Callable, output: Any, target: Any, where: str) -> None:
    """With the default loss, targets must be class indices below the output width."""
    if loss_fn is not cross_entropy:
        return
    logits = logits_of(output)
    read = ("the model's output" if isinstance(output, torch.Tensor) else
            f"the scores the default loss reads from the model's {type(output).__name__} output "
            "(its 'logits', else its first element)")
    fix = "  fix: give targets as class indices (a long tensor of shape (N,)), or define loss() in model.py"
    if not isinstance(target, torch.Tensor) or not isinstance(logits, torch.Tensor):
        raise SearchError(f"the default loss (cross-entropy) needs tensor scores and targets, got "
                          f"{type(logits).__name__} from {read} and {type(target).__name__} ({where})\n{fix}")
    per_token = logits.dim() > 2 and logits.shape[:-1] == target.shape
    if target.is_floating_point() or not (per_token or target.shape == logits.shape[:1]):
        raise SearchError(f"targets of shape {tuple(target.shape)} and dtype {target.dtype} do not fit the "
                          f"default loss over {read}, of shape {tuple(logits.shape)} ({where})\n{fix}")
    classes = logits.shape[-1] if per_token else logits.shape[1]
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= classes:
        raise SearchError(f"targets range over [{low}, {high}], but {read} has {classes} classes ({where})\n{fix}")


def check_finite_loss(loss: float, inputs: tuple, where: str, kept: str, first_step: bool = False) -> None:
    """A NaN or inf loss stops the search, naming the likely cause; the last checkpoint stays."""
    if math.isfinite(loss):
        return
    bad_inputs = any(x.is_floating_point() and not bool(torch.isfinite(x).all()) for x in _tensors(inputs))
    if bad_inputs:
        cause, fix = "this batch's inputs hold NaN or inf", "clean the data in data()"
    elif first_step:
        cause, fix = "before any training, so the loss itself", "check loss(output, target) and the targets"
    else:
        cause, fix = "the training diverged (learning rate or penalty too large?)", "lower --lr or --lam and start again"
    raise DivergedError(f"the training loss became {loss} ({where}): {cause}. {kept}\n  fix: {fix}")


def check_finite_parameters(model: torch.nn.Module, where: str, kept: str) -> None:
    """Parameters that went NaN or inf are not checkpointed."""
    bad = [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise DivergedError(f"parameters {', '.join(bad[:3])} became NaN or inf ({where}). {kept}\n"
                          "  fix: lower --lr or --lam and start again")


def _tensors(inputs: Any) -> list:
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    if isinstance(inputs, dict):
        return [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    return [t for x in inputs for t in _tensors(x)] if isinstance(inputs, (tuple, list)) else []
