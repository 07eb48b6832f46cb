"""``archc tune``: an optuna study over the search's settings, the metric against the size.

Each trial is one search (``archc search``) and its compaction (``archc compact``) in
``DIR/trials/NNNN``; it returns the compact model's metric and its parameters (or FLOPs). The
search space is λ (log-uniform), the learning rate (log-uniform) and, when the model file's
``model()`` takes ``width_multiplier``, the starting width; a range of one value fixes that
setting. TPE by default, random search as in the papers (ShrinkNets §3.2, Tessera & Rosman) on
request. Each trial scores its last epoch, or with ``pick="best"`` its best validation epoch
(the papers' protocol); a model file with ``test_data()`` also gets each trial's held-out
metric. With ``target`` (``"params=60k"``) every trial's search is steered to that size, as
``archc search --target``: the study then compares metrics at one budget. A single objective
(``--objective metric``) lets optuna's median pruner stop hopeless trials after an epoch;
optuna does not prune multi-objective studies.

The study lives in ``--storage``: by default a journal file in DIR (rerunning the command
resumes it), or a database URL that workers on many machines share
(``postgresql://user@host/db``). ``--workers K`` runs K processes on this machine.

Example:
    >>> study = tune(TuneConfig(model_file="examples/digits.py", out="runs/tune", trials=6))
    >>> [t.values for t in study.best_trials]
"""
from __future__ import annotations

import importlib.util
import multiprocessing
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from .budget import DEFAULT_REACH
from .errors import ArchcError, ConfigError
from .out_dirs import BEST, CHECKPOINT, ensure_writable_dir
from .search_config import check_number

OBJECTIVES = ("metric", "metric,params", "metric,flops")
SAMPLERS = ("tpe", "random")
# which epoch of a trial's search is compacted and scored: its checkpoint, and the words for it
PICKS = {"last": (CHECKPOINT, "last epoch"), "best": (BEST, "best validation epoch")}
RANGE_EXAMPLES = {"lam_range": "1e-5,1e-2", "lr_range": "1e-4,1e-2", "width_range": "0.5,2"}


@dataclass
class TuneConfig:
    """Settings of a study (the search's own settings are drawn per trial or fixed here)."""

    model_file: str
    out: str
    trials: int = 12               # complete (or pruned) trials the study should hold in all
    epochs: int = 3                # of each trial's search
    objective: str = "metric,params"
    sampler: str = "tpe"
    storage: Optional[str] = None  # None: a journal file in out
    study_name: str = "archc"
    workers: int = 1
    lam_range: tuple = (1e-5, 1e-1)  # each range is drawn log-uniform (the width: uniform);
    lr_range: tuple = (1e-4, 1e-2)   # a range (lo, lo) fixes that setting
    width_range: tuple = (0.5, 2.0)
    batch_size: int = 128
    seed: int = 0
    pick: str = "last"             # best: the best validation epoch (best.pt), as the papers' protocol
    target: Optional[str] = None   # every trial's search steered to this size ("params=60k"): a study
                                   # of the best metric at one budget
    target_reach: float = DEFAULT_REACH  # the share of each trial's epochs by which it reaches the target

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}\n"
                              "  fix: pass --objective metric,params (or metric,flops, or metric)")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}\n  fix: pass --sampler tpe")
        if self.pick not in PICKS:
            raise ConfigError(f"pick must be one of {PICKS}, got {self.pick!r}\n  fix: pass --pick best "
                              "(the best validation epoch) or --pick last")
        for name in ("lam_range", "lr_range", "width_range"):
            _check_range(name, getattr(self, name))
        if self.target is not None:  # a ConfigError naming the right form before any trial runs;
            from .budget import parse_target  # one spelling, so a resumed study compares it as a value

            self.target = parse_target(self.target).text
        check_number("target_reach", self.target_reach)
        for name in ("trials", "epochs", "workers", "batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be a positive whole number, got {getattr(self, name)!r}\n"
                                  f"  fix: pass --{name.replace('_', '-')} 1 or more")

    @property
    def size_kind(self) -> Optional[str]:
        return self.objective.split(",")[1] if "," in self.objective else None


def _check_range(name: str, bounds: Any) -> None:
    """A search range is two positive finite numbers, low first (equal numbers fix the setting)."""
    ok = (isinstance(bounds, (tuple, list)) and len(bounds) == 2
          and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 < b < float("inf") for b in bounds)
          and bounds[0] <= bounds[1])
    if not ok:
        raise ConfigError(f"{name} must be two positive numbers, low first, got {bounds!r} (λ = 0 is the "
                          f"dense baseline every study trains)\n  fix: pass --{name.replace('_', '-')} "
                          f"{RANGE_EXAMPLES[name]} (or one number to fix it)")


def storage_url(cfg: TuneConfig) -> Any:
    """The study's storage: ``cfg.storage`` (a database URL), or a journal file in ``cfg.out``."""
    import optuna

    if cfg.storage:
        return _with_driver(cfg.storage)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(Path(cfg.out) / "study.journal")))


def _with_driver(url: str) -> str:
    """A plain ``postgresql://`` URL names the driver that is installed (SQLAlchemy 2.1 assumes
    psycopg 3; ``pip install archc[test]`` brings psycopg2)."""
    if not url.startswith("postgresql://"):
        return url
    for module, dialect in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{dialect}://" + url[len("postgresql://"):]
    raise ConfigError("a PostgreSQL storage needs a driver: neither psycopg nor psycopg2 is installed\n"
                      "  fix: pip install psycopg2-binary")


def open_study(cfg: TuneConfig, worker: int = 0):
    """Create the study, or load it when the storage holds one of that name (resume). The
    sampler's seed moves on with the trials already held and the worker's number, so neither a
    resumed study nor a second worker draws the first trial's settings again."""
    import optuna

    directions = ["maximize"] + (["minimize"] if cfg.size_kind else [])
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2) if not cfg.size_kind else optuna.pruners.NopPruner()
    try:
        study = _create_or_load(lambda: optuna.create_study(
            storage=storage_url(cfg), study_name=cfg.study_name, directions=directions, pruner=pruner,
            load_if_exists=True))
    except ConfigError:
        raise
    except ValueError as exc:  # e.g. the stored study has other directions
        raise ConfigError(f"the study {cfg.study_name!r} in {cfg.storage or cfg.out} does not fit these settings "
                          f"({exc})\n  fix: keep --objective as it was, or pass another --study-name") from None
    check_held(study, cfg)
    seed = cfg.seed + 1000 * worker + len(study.get_trials(deepcopy=False))
    if cfg.storage:  # workers on other machines start alike: each process draws its own points
        seed += 7919 * os.getpid()
    study.sampler = (optuna.samplers.RandomSampler(seed=seed) if cfg.sampler == "random"
                     else optuna.samplers.TPESampler(seed=seed))
    return study


# settings every trial of a study shares: (what the study does with it, how to say its value)
HELD = {"pick": ("scores", lambda v: f"each trial's {PICKS[v][1]}"),
        "target": ("steers each trial to", lambda v: v or "no target size"),
        "target_reach": ("reaches a target by", lambda v: f"a share {v:g} of each trial's epochs")}


def check_held(study, cfg: TuneConfig) -> None:
    """A study scores every trial alike: a resumed (or shared) study keeps its ``pick`` and its
    ``target`` (trials scored at other epochs or steered to other sizes do not compare). A study
    whose trials predate a setting held its default."""
    for name, (verb, say) in HELD.items():
        if name not in study.user_attrs:
            older = study.get_trials(deepcopy=False)
            study.set_user_attr(name, TuneConfig.__dataclass_fields__[name].default if older else getattr(cfg, name))
        held = study.user_attrs[name]
        if held != getattr(cfg, name):
            flag = "--" + name.replace("_", "-")
            fix = f"pass {flag} {held}" if held is not None else f"drop {flag}"
            raise ConfigError(f"the study {cfg.study_name!r} in {cfg.storage or cfg.out} {verb} {say(held)}, "
                              f"not {say(getattr(cfg, name))}\n  fix: {fix}, "
                              "or another --study-name (or --out) for a new study")


def _create_or_load(create, attempts: int = 6):
    """``create()``, again after a pause when another worker is creating the same database
    tables at that moment (the loser of that race gets an integrity error from SQLAlchemy)."""
    for attempt in range(attempts):
        try:
            return create()
        except ImportError as exc:
            raise ConfigError(f"no database driver for the --storage URL is installed ({exc})\n"
                              "  fix: install the driver (pip install psycopg2-binary for PostgreSQL)") from None
        except Exception as exc:  # noqa: BLE001 - only SQLAlchemy's errors are retried
            if not type(exc).__module__.startswith("sqlalchemy"):
                raise
            if attempt == attempts - 1:
                raise ConfigError(f"cannot open the study's storage ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:200]})\n  fix: check the --storage URL "
                                  "(postgresql://user@host/db) and that its server is running") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def tune(cfg: TuneConfig, *, progress: bool = False):
    """Run the study until it holds ``cfg.trials`` finished trials; returns it."""
    import optuna
    import torch

    from .tune_trial import run_trial

    ensure_writable_dir(Path(cfg.out), "--out")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(cfg)
    extra = [multiprocessing.get_context("spawn").Process(target=_worker, args=(asdict(cfg), worker))
             for worker in range(1, cfg.workers)]
    for proc in extra:
        proc.start()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads_per_worker(cfg.workers))
        _optimize(study, cfg, run_trial, progress)
    finally:
        torch.set_num_threads(threads)
        for proc in extra:
            proc.join()
    failed = {proc.pid: proc.exitcode for proc in extra if proc.exitcode != 0}
    if failed:
        fail_orphaned_trials(study, failed)
        raise ArchcError(f"{len(failed)} of the {cfg.workers} worker processes failed (exit codes "
                         f"{list(failed.values())}); their trials are marked failed in the study\n"
                         "  fix: run with --workers 1 to see the error")
    return study


def fail_orphaned_trials(study, exit_codes: dict) -> int:
    """Mark failed, with a note, the trials that worker processes (pid -> exit code) left
    running: a worker killed by a signal records nothing itself (optuna fails a trial only on
    an exception), and a trial left running would read as in progress forever. Returns how many."""
    import optuna

    storage = study._storage  # optuna has no public handle to change another worker's trial
    orphaned = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if t.user_attrs.get("worker_pid") in exit_codes]
    for trial in orphaned:
        pid = trial.user_attrs["worker_pid"]
        storage.set_trial_user_attr(trial._trial_id, "note", f"worker process {pid} exited with code {exit_codes[pid]}")
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    return len(orphaned)


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes on this machine: the threads one process
    would use, shared out (two workers that each used both cores of a 2-core machine ran 4x
    slower than with one thread each), unless OMP_NUM_THREADS says how many."""
    import torch

    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() // workers)  # torch's default: the physical cores


def _optimize(study, cfg: TuneConfig, run_trial, progress: bool) -> None:
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    if len(study.get_trials(deepcopy=False, states=finished)) >= cfg.trials:
        return
    # trials other workers are running count too: a worker whose trial ends while the last one
    # needed is still running stops, and does not start one more the study does not need
    stop = optuna.study.MaxTrialsCallback(cfg.trials, states=finished + (optuna.trial.TrialState.RUNNING,))
    study.optimize(lambda trial: run_trial(trial, cfg), callbacks=[stop], show_progress_bar=False,
                   catch=())


def _worker(cfg_dict: dict, worker: int) -> None:
    """One extra worker process on this machine: the same study, through the same storage."""
    import torch

    from .tune_trial import run_trial

    cfg = TuneConfig(**cfg_dict)
    torch.set_num_threads(threads_per_worker(cfg.workers))  # OMP_NUM_THREADS set here would come too late
    _optimize(open_study(cfg, worker), cfg, run_trial, False)
