"""The search: train a gated model with a sparsity penalty, shrinking it as channels die.

Each epoch ends with a log line (``log.jsonl``) and a checkpoint (``checkpoint.pt``) in
``cfg.out``, written atomically with Ctrl-C held until the write completes. A resumed search
takes its settings from the checkpoint. The model file is copied beside the checkpoint, so
``archc compact`` never runs a file the checkpoint merely names.

Example:
    >>> result = archc.search(model, train_set, val_set, lam=1e-3, epochs=5, out="runs/a")
    >>> result.history[-1]["widths"]
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.fx as fx
from torch.utils.data import DataLoader, Dataset, IterableDataset

from . import distributed, sparsity
from .block_gates import block_gates
from .checkpoint import atomic_write_bytes, interrupts_deferred, load_checkpoint, save_checkpoint
from .errors import ConfigError, UserFileError
from .model_io import accuracy, cross_entropy, run_model
from .out_dirs import BEST, CHECKPOINT, ensure_writable_dir, prepare_search_out, search_lock
from .distributed import GlobalBatchSampler
from .search_config import SearchConfig, resolve_device, resumed_config
from .search_display import SearchDisplay
from .search_guard import (SearchError, check_finite_parameters, check_reiterable, length, user_batches,
                           user_code)
from .search_run import SearchRun, split_batch
from .userfile import UserSpec, load_user_file

__all__ = ["SearchConfig", "SearchResult", "Task", "evaluate", "run_search"]


@dataclass
class Task:
    """What to search: a model factory, data, and how to score it."""

    model_fn: Callable[[], torch.nn.Module]
    train: Any
    val: Any
    example_inputs: Union[tuple, dict]  # positional inputs, or keyword inputs as a dict
    loss_fn: Callable = cross_entropy
    metric_fn: Optional[Callable] = None
    optimizer_fn: Optional[Callable] = None
    model_file: str = ""
    model_sha256: str = ""


@dataclass
class SearchResult:
    model: fx.GraphModule          # the shrunk gated model (compact it with archc.compact)
    history: list[dict] = field(default_factory=list)
    checkpoint: Optional[Path] = None
    initial_widths: dict[str, int] = field(default_factory=dict)
    flops_before: Optional[int] = None  # per example, of the model the search started from


def task_from_file(model_py: Union[str, Path]) -> Task:
    """The search task a model file defines (``archc search``); see :func:`task_from_spec`."""
    return task_from_spec(load_user_file(model_py))


def task_from_spec(spec: UserSpec) -> Task:
    """The search task of a loaded model file: ``model``, ``data() -> (train, val)``, its example,
    loss, metric and optimizer."""
    train, val = spec.train_val()
    return Task(model_fn=spec.model, train=train, val=val, example_inputs=spec.example_inputs(),
                loss_fn=spec.loss_fn, metric_fn=spec.metric_fn, optimizer_fn=spec.optimizer_fn,
                model_file=str(spec.path), model_sha256=spec.sha256)


def loader(data: Any, batch_size: int, shuffle: bool, seed: int = 0) -> Any:
    """Batches of ``data``: a Dataset through a DataLoader, anything else as it is. A shuffled
    Dataset takes its order from ``seed`` and the epoch (the sampler's ``set_epoch``), and this
    process's share of each global batch when several search together."""
    if isinstance(data, IterableDataset):  # no random order to draw: it streams
        return DataLoader(data, batch_size=batch_size)
    if isinstance(data, Dataset) and shuffle:
        return DataLoader(data, batch_sampler=GlobalBatchSampler(len(data), batch_size, seed))
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size)
    if shuffle and distributed.world_size() > 1:
        raise ConfigError(f"a distributed search shares out the samples of a Dataset, but data() returned "
                          f"{type(data).__name__} for training\n  fix: return torch.utils.data Datasets from data()")
    return data


def run_search(task: Task, cfg: SearchConfig, *, console=None, progress: bool = True,
               given: Optional[dict] = None, on_epoch: Optional[Callable[[dict], None]] = None) -> SearchResult:
    """Run (or, with ``cfg.resume``, resume) a search; writes ``log.jsonl`` and ``checkpoint.pt``
    to ``cfg.out``. ``given``: the settings the caller chose (default: all of ``cfg``); a resumed
    search refuses any that differ from its checkpoint's. ``on_epoch(record)`` is called after
    each epoch's checkpoint (``archc tune`` prunes trials there)."""
    distributed.process_group(resolve_device(cfg.device))  # every setting is checked before the folder is made
    writes = cfg.out and distributed.is_main()
    if writes:
        ensure_writable_dir(Path(cfg.out), "--out")
    with search_lock(Path(cfg.out)) if writes else contextlib.nullcontext():
        return _run(task, cfg, console, progress, asdict(cfg) if given is None else given, on_epoch)


def _run(task: Task, cfg: SearchConfig, console, progress: bool, given: dict, on_epoch) -> SearchResult:
    run = _start(task, cfg, given)
    cfg = run.cfg
    train, val = loader(task.train, cfg.batch_size, True, cfg.seed), loader(task.val, cfg.batch_size, False)
    with SearchDisplay(console, progress and distributed.is_main()) as display:
        for epoch in range(run.epoch, cfg.epochs):
            record = _train_epoch(run, display, train, val, epoch)
            run.history.append(record)
            run.epoch = epoch + 1
            check_finite_parameters(run.model, f"end of epoch {run.epoch}", run.kept_message())
            _save(run)
            if on_epoch is not None:
                on_epoch(record)
    return SearchResult(run.model, run.history, run.out / CHECKPOINT if run.out else None, run.initial_widths,
                        run.flops_before)


def _start(task: Task, cfg: SearchConfig, given: dict) -> SearchRun:
    """Check the output folder and the data, then build a fresh run or load the one to resume."""
    out = Path(cfg.out) if cfg.out else None
    if cfg.resume and out is None:
        raise ConfigError("resume needs the output folder of the search to resume\n  fix: pass --out DIR")
    if cfg.resume and cfg.overwrite:
        raise ConfigError("--resume continues the search in --out and --overwrite starts it over\n"
                          "  fix: pass one of them")
    if out is not None and distributed.is_main():
        prepare_search_out(out, resume=cfg.resume, overwrite=cfg.overwrite,
                           model_copy=Path(task.model_file).name if task.model_file else "")
    check_reiterable(task.train, "training set")
    check_reiterable(task.val, "validation set")
    if not cfg.resume:
        return SearchRun.fresh(_scaled(task, cfg), cfg)
    state = load_checkpoint(out / CHECKPOINT, for_resume=True)
    if task.model_sha256 and state["model_sha256"] != task.model_sha256:
        raise UserFileError(f"{task.model_file} changed since the checkpoint in {out} was "
                            "written.\n  fix: restore the file, or start a new search with --overwrite")
    # where this run writes comes from this call, never from the checkpoint (a copied folder)
    here = {"out": cfg.out, "resume": True, "overwrite": cfg.overwrite}
    cfg = resumed_config(state["settings"], {**given, **here})
    if cfg.epochs <= state["epoch"]:
        raise ConfigError(f"the search in {out} has run {state['epoch']} epochs already; --epochs {cfg.epochs} "
                          f"leaves nothing to train\n  fix: pass --epochs above {state['epoch']} to continue it")
    return SearchRun.resumed(_scaled(task, cfg), state, cfg)


def scaled_model_fn(model_fn: Callable, width_multiplier: Optional[float]) -> Callable:
    """``model_fn`` called with ``width_multiplier=`` when the settings give one."""
    if width_multiplier is None:
        return model_fn
    return functools.partial(model_fn, width_multiplier=width_multiplier)


def _scaled(task: Task, cfg: SearchConfig) -> Task:
    return replace(task, model_fn=scaled_model_fn(task.model_fn, cfg.width_multiplier))


def _copy_model_file(task: Task, out: Optional[Path]) -> None:
    """A copy of the model file beside the checkpoint: what ``archc compact`` imports."""
    if out is None or not task.model_file:
        return
    source, target = Path(task.model_file), out / Path(task.model_file).name
    content = source.read_bytes()
    if target.exists() and (target.resolve() == source.resolve() or target.read_bytes() == content):
        return
    atomic_write_bytes(target, lambda f: f.write(content))
    shutil.copymode(source, target)


def _train_epoch(run: SearchRun, display: SearchDisplay, train, val, epoch: int) -> dict:
    cfg = run.cfg
    display.start_epoch(epoch, cfg.epochs, length(train), run.params(), run.widths())
    if isinstance(getattr(train, "batch_sampler", None), GlobalBatchSampler):
        train.batch_sampler.set_epoch(epoch)
    run.model.train()
    start, losses, removed = time.perf_counter(), [], 0
    per_epoch = length(train) or run.steps_last_epoch  # a stream's first epoch: unknown (0)
    for i, batch in enumerate(user_batches(train, "training set", run.where)):
        run.progress = _share_done(epoch, i, per_epoch, cfg.epochs)
        losses.append(run.train_step(batch))
        run.progress = _share_done(epoch, i + 1, per_epoch, cfg.epochs)  # a shrink below follows this step
        due = cfg.shrink_every > 0 and run.step % cfg.shrink_every == 0
        if due or (run.steering and run.steering.wants_shrink()):
            removed += run.shrink_now()
        display.step(losses[-1], lambda: (run.params(), run.widths()))
    if not losses:
        raise SearchError(f"the training set yielded no batch in epoch {epoch + 1}\n"
                          "  fix: make data() return a non-empty, re-iterable training set")
    run.steps_last_epoch = len(losses)
    run.progress = (epoch + 1) / cfg.epochs  # this epoch's steps are done: a target due now is met now
    if cfg.shrink_every == 0:
        removed += run.shrink_now()
    seconds = time.perf_counter() - start
    record = {"epoch": epoch + 1, "seconds": seconds, "train_loss": distributed.average(sum(losses) / len(losses)),
              "val_metric": evaluate(run.model, val, run.task.metric_fn or accuracy, run.device),
              "params": run.params(), "removed": removed, "widths": run.widths(),
              "density": _mean(sparsity.density(run.model))}
    if run.steering:
        record["budget"] = run.steering.state()
    if cfg.depth_lam > 0:  # residual branches whose gate is still open
        record["blocks_open"] = sum(int(g.theta.detach() > cfg.threshold) for g in block_gates(run.model))
    display.end_epoch(record)
    return record


def _share_done(epoch: int, steps: int, per_epoch: int, epochs: int) -> float:
    """The share of the training done after ``steps`` steps of ``epoch`` (a stream's first epoch,
    of unknown length: its start)."""
    return (epoch + (min(steps / per_epoch, 1.0) if per_epoch else 0.0)) / epochs


def _mean(values: dict) -> float:
    return sum(values.values()) / len(values) if values else 0.0


_SPLIT_SOURCE = {"validation": "data()", "test": "test_data()"}  # the user's function each split comes from


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, metric_fn: Callable, device=torch.device("cpu"),
             split: str = "validation") -> float:
    """Batch-size-weighted mean of ``metric_fn(output, target)`` over ``data`` (eval mode);
    ``split`` (validation or test) names the set in errors."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    name = "the default metric (accuracy)" if metric_fn is accuracy else "metric(output, target)"
    source = _SPLIT_SOURCE[split]
    for i, batch in enumerate(user_batches(data, f"{split} set", lambda: "evaluating")):
        inputs, target = split_batch(batch, device)
        where = f"evaluating, {split} batch {i + 1}"
        with user_code("the model's forward", where, f"make {source}'s {split} batches look like the training ones"):
            output = run_model(model, inputs)
        with user_code(name, where, "make metric(output, target) return a number"):
            value = metric_fn(output, target)
        if not isinstance(value, (int, float, torch.Tensor)) or isinstance(value, torch.Tensor) and value.numel() != 1:
            raise SearchError(f"{name} returned {type(value).__name__}, not a number ({where})\n"
                              "  fix: return a float (or a one-element tensor) from metric(output, target)")
        value = float(value)
        n = len(target)
        total += value * n
        count += n
    model.train(was)
    if count == 0:
        raise SearchError(f"the {split} set yielded no batch, so there is no metric to report\n"
                          f"  fix: make {source} return a non-empty {split} set")
    return total / count


def _save(run: SearchRun) -> None:
    if run.out is None or not distributed.is_main():
        return
    state = {
        "epoch": run.epoch, "step": run.step, "settings": asdict(run.cfg),
        "model_state": run.model.state_dict(), "kept": run.kept, "labels": run.labels,
        "initial_widths": run.initial_widths, "flops_before": run.flops_before, "gate_sizes": run.gate_sizes,
        "budget": run.steering.state() if run.steering else None,
        "optimizer_state": run.optimizer.state_dict(), "rng": torch.get_rng_state(),
        "history": run.history, "steps_last_epoch": run.steps_last_epoch,
        "model_file": Path(run.task.model_file).name if run.task.model_file else "model.py",
        "model_sha256": run.task.model_sha256 or "0" * 64,
        "example_shapes": example_shapes(run.task.example_inputs),
    }
    lines = "".join(json.dumps(r) + "\n" for r in run.history)
    with interrupts_deferred():
        if not run.model_file_copied:  # with the run's first checkpoint: a failed start leaves no copy
            _copy_model_file(run.task, run.out)
            run.model_file_copied = True
        save_checkpoint(run.out / CHECKPOINT, state)
        if best_record(run.history, run.cfg.best_by) is run.history[-1]:
            save_checkpoint(run.out / BEST, state)
        atomic_write_bytes(run.out / "log.jsonl", lambda f: f.write(lines.encode()))


def met_target(record: dict) -> bool:
    """Whether the search was at its ``--target`` size at this epoch of its history (log.jsonl)."""
    return bool((record.get("budget") or {}).get("met"))


def best_record(history: list[dict], best_by: str) -> dict:
    """The epoch whose validation metric is best (``best.pt``); ties go to the later, smaller model.
    In a search steered to a size, once an epoch is at that size only such epochs count: a
    larger model from before the target was met is not the one asked for."""
    pool = [r for r in history if met_target(r)] or history
    best = (max if best_by == "max" else min)(r["val_metric"] for r in pool)
    return [r for r in pool if r["val_metric"] == best][-1]


def example_shapes(example: Union[tuple, dict]) -> Any:
    """The shapes of an example's tensors, as plain lists (a dict for keyword inputs)."""
    if isinstance(example, dict):
        return {k: list(v.shape) for k, v in example.items() if isinstance(v, torch.Tensor)}
    return [list(t.shape) for t in example]


def file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

