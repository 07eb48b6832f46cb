"""``archc.search``: the Python entry point of the search, for your own pipelines."""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional, Union

import torch

from .model_io import cross_entropy
from .search import SearchResult, Task, loader, run_search
from .search_config import config_from
from .search_guard import check_reiterable, user_code
from .search_run import split_batch


def search(
    model: Union[torch.nn.Module, Callable[[], torch.nn.Module]], train: Any, val: Any, *,
    example_inputs: Optional[Union[tuple, dict]] = None, loss: Callable = cross_entropy,
    metric: Optional[Callable] = None, optimizer: Union[str, Callable, None] = None,
    console=None, progress: bool = True, **settings: Any,
) -> SearchResult:
    """Learn the widths of ``model`` on ``train`` (datasets or loaders of ``(inputs..., target)``).

    ``settings`` are the fields of :class:`archc.SearchConfig` (``lam``, ``epochs``,
    ``batch_size``, ``lr``, ``regularizer``, ``shrink_every``, ``out``, ``resume`` ...). The
    returned model is the shrunk gated model; ``archc.compact(result.model)`` gives the real one.

    Example:
        >>> result = archc.search(net, train_ds, val_ds, lam=1e-3, epochs=3, out="runs/net")
        >>> small = archc.compact(result.model)
    """
    if isinstance(optimizer, str):  # "adam" / "sgd" name the built-in optimizer, a callable builds one
        settings["optimizer"], optimizer = optimizer, None
    cfg = config_from(settings, "archc.search")
    factory = model if not isinstance(model, torch.nn.Module) else (lambda: copy.deepcopy(model))
    if example_inputs is None:
        example_inputs = _first_inputs(train, cfg)
    task = Task(model_fn=factory, train=train, val=val, example_inputs=example_inputs if isinstance(example_inputs, dict) else tuple(example_inputs),
                loss_fn=loss, metric_fn=metric, optimizer_fn=optimizer)
    return run_search(task, cfg, console=console, progress=progress, given=settings)


def _first_inputs(train: Any, cfg) -> tuple:
    """The inputs of the training set's first batch (a one-shot iterator is refused first)."""
    check_reiterable(train, "training set")
    with user_code("iterating the training set", "reading an example batch", "pass example_inputs=..."):
        first = next(iter(loader(train, cfg.batch_size, False)), None)
    return tuple(split_batch(first, torch.device("cpu"))[0])
