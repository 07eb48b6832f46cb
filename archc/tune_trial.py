"""One trial of ``archc tune``: draw settings, search, compact, score; and the dense baseline.

Example:
    >>> metric, params = run_trial(trial, cfg)      # called by optuna
    >>> baseline = dense_baseline(cfg)             # trained once per study folder
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .budget import TargetNotBelowStart
from .checkpoint import atomic_write_bytes
from .outputs import compact_checkpoint
from .provenance import current_label
from .search import best_record, met_target, run_search, task_from_spec
from .search_config import SearchConfig
from .search_guard import DivergedError
from .tune import PICKS, check_held
from .userfile import load_user_file


def suggest_settings(trial, cfg, accepts_width: bool) -> dict:
    """The search settings this trial tries: λ and lr log-uniform, the width when the model takes one."""
    settings = {"lam": trial.suggest_float("lam", *cfg.lam_range, log=True),
                "lr": trial.suggest_float("lr", *cfg.lr_range, log=True)}
    if accepts_width:
        settings["width_multiplier"] = trial.suggest_float("width_multiplier", *cfg.width_range)
    return settings


def run_trial(trial, cfg):
    """Search and compact with the trial's settings in ``out/trials/NNNN``; return the objectives."""
    check_held(trial.study, cfg)  # again: a worker with other settings may have opened a shared study
    spec = load_user_file(cfg.model_file)
    task = task_from_spec(spec)
    settings = suggest_settings(trial, cfg, spec.accepts_width())
    folder = Path(cfg.out) / "trials" / f"{trial.number:04d}"
    trial.set_user_attr("folder", str(folder))
    trial.set_user_attr("worker_pid", os.getpid())
    trial.set_user_attr("torch_threads", torch.get_num_threads())  # for reading its timings
    trial.set_user_attr("code", current_label())  # a study resumed after a change holds two programs
    search = SearchConfig(**settings, epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed,
                          target=cfg.target, target_reach=cfg.target_reach, out=str(folder), overwrite=True)
    history = _search(trial, task, search, cfg)
    # the file this trial searched with, loaded once, not the search's copy of it
    report = compact_checkpoint(folder / PICKS[cfg.pick][0], folder / "compact", model_file=spec, overwrite=True)
    for key in ("params", "flops"):
        trial.set_user_attr(key, report[f"{key}_after"])
    for key in ("metric", "test_metric", "epoch"):
        trial.set_user_attr(key, report[key])
    trial.set_user_attr("widths", {layer["name"]: layer["width_after"] for layer in report["layers"]})
    if cfg.target:  # a search can end above its target (too few epochs): say so beside its size
        scored = next(r for r in history if r["epoch"] == report["epoch"])
        trial.set_user_attr("target_met", met_target(scored))
    if cfg.size_kind is None:
        return report["metric"]
    return report["metric"], report[f"{cfg.size_kind}_after"]


def _search(trial, task, search: SearchConfig, cfg) -> list[dict]:
    """The trial's search; its history. A bad region of the settings prunes the trial (a
    diverging search, a drawn width that starts at or below the target), not the study."""
    import optuna

    def report_epoch(record: dict) -> None:
        if cfg.size_kind is None:  # optuna prunes single-objective studies only
            trial.report(record["val_metric"], record["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"metric {record['val_metric']:.4f} after epoch {record['epoch']}")

    try:
        return run_search(task, search, progress=False, on_epoch=report_epoch).history
    except (DivergedError, TargetNotBelowStart) as exc:  # pruned even where best.pt holds an
        # earlier good epoch: a setting that diverges is not one to recommend
        note = str(exc).splitlines()[0]
        trial.set_user_attr("note", note)
        raise optuna.TrialPruned(note) from None


def dense_baseline(cfg) -> dict:
    """The model trained the same way without the penalty (``out/dense``), scored at the epoch
    ``cfg.pick`` names like every trial; measured once and kept."""
    path = Path(cfg.out) / "dense" / "baseline.json"
    spec = load_user_file(cfg.model_file)
    if path.exists():  # kept unless it was scored at another epoch, or test_data() came since
        kept = json.loads(path.read_text())
        if kept.get("pick", "last") == cfg.pick and (spec.test_data_fn is None or "test_metric" in kept):
            return kept
    task = task_from_spec(spec)
    search = SearchConfig(lam=0.0, regularizer="none", lr=(cfg.lr_range[0] * cfg.lr_range[1]) ** 0.5,
                          epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, out=str(path.parent),
                          overwrite=True, shrink_every=-1)
    result = run_search(task, search, progress=False)
    record = best_record(result.history, search.best_by) if cfg.pick == "best" else result.history[-1]
    baseline = {"metric": record["val_metric"], "epoch": record["epoch"], "pick": cfg.pick,
                "params": sum(p.numel() for p in task.model_fn().parameters()),
                "flops": result.flops_before, "lr": search.lr, "code": current_label()}
    if spec.test_data_fn is not None:  # its held-out metric, measured as the trials' are
        report = compact_checkpoint(path.parent / PICKS[cfg.pick][0], path.parent / "compact",
                                    model_file=spec, overwrite=True)
        baseline["test_metric"] = report["test_metric"]
    atomic_write_bytes(path, lambda f: f.write(json.dumps(baseline, indent=2).encode()))
    return baseline
