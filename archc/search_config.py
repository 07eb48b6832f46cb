"""The settings of one search, their valid ranges, and how a resumed search keeps them.

Each field carries its command-line help (``metadata["help"]``): ``archc search`` builds its
options from these fields, so a setting is declared once.

Example:
    >>> cfg = SearchConfig(lam=3e-2, epochs=5)
    >>> cfg = resumed_config(saved=ckpt["settings"], given={"epochs": 8})   # extends the run
"""
from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Optional

import torch

from .das.params import GROUPED_FORMS, Connectivity
from .budget import DEFAULT_REACH
from .das.regularizers import KERNEL_WEIGHTINGS
from .errors import ConfigError
from .gate_costs import WEIGHTINGS as GATE_WEIGHTINGS

REGULARIZERS = ("l1", "group_lasso", "sparse_group_lasso", "none")
OPTIMIZERS = ("adam", "sgd")
# Settings a resumed search may change: how long it runs and where, not what it optimises.
MAY_CHANGE_ON_RESUME = ("epochs", "device", "out", "resume", "overwrite")


def _setting(default: Any, help: str, cli: bool = True) -> Any:
    return field(default=default, metadata={"help": help, "cli": cli})


@dataclass
class SearchConfig:
    """Settings of one search (all plain data: they go into the checkpoint)."""

    lam: float = _setting(1e-4, "Strength of the size penalty (bigger: smaller model).")
    epochs: int = _setting(10, "Training epochs (a resumed search may raise it).")
    batch_size: int = _setting(128, "Batch size (when data() returns datasets).")
    lr: float = _setting(1e-3, "Learning rate (and proximal step size).")
    arch_lr: Optional[float] = _setting(None, "Learning rate of gates and search parameters (default: --lr).")
    optimizer: str = _setting("adam", "adam or sgd, unless model.py defines optimizer(params).")
    momentum: float = _setting(0.9, "Momentum of sgd.")
    weight_decay: float = _setting(0.0, "Weight decay of the built-in optimizer.")
    regularizer: str = _setting("l1", "l1 (gates, ShrinkNets), group_lasso, sparse_group_lasso, or none.")
    gate_weighting: str = _setting("uniform", "L1 weight of each gate: uniform (ShrinkNets), or the params or "
                                   "flops its channel carries (prunes dear channels first).")
    alpha: float = _setting(0.5, "L1 share of the sparse group lasso.")
    density_lam: float = _setting(0.0, "Extra penalty on the mean |weight| per layer (Tessera & Rosman).")
    shrink_every: int = _setting(0, "Optimizer steps between shrinks; 0: every epoch; -1: never.")
    threshold: float = _setting(0.0, "A gate at or below this counts as closed.")
    kernel_lam: float = _setting(0.0, "> 0: also search filter sizes (L1 on the KernelMask alphas).")
    kernel_weighting: str = _setting("uniform", "L1 weight of each filter size's alpha: uniform (the paper) "
                                     "or area (favours small windows).")
    select_lam: float = _setting(0.0, "> 0: also search input channels per layer (L1 on the betas).")
    sparsemax: bool = _setting(False, "Input-channel betas through sparsemax.")
    patterns: int = _setting(0, "> 0: also search grouped convolutions with this many patterns.")
    depth_lam: float = _setting(0.0, "> 0: also search depth: one gate per residual branch, L1 on the gates; a "
                                "closed branch is removed with its layers.")
    patterns_init: str = _setting("random", "random (dense on average) or partition (each channel starts "
                                  "mostly in one pattern: near a grouped conv).")
    patterns_form: str = _setting("lasso", "lasso (free P and S, Shin et al.'s group and exclusive lasso) or assign "
                                  "(each channel's sparsemax distribution over the patterns: exact grouped convs).")
    group_lam: float = _setting(1e-6, "Group lasso on P columns and S rows (lasso form).")
    exclusive_lam: float = _setting(3e-6, "Exclusive lasso on P rows and S columns (lasso form).")
    purity_lam: float = _setting(1e-3, "assign form: pushes every channel into one pattern "
                                 "(1 - ||distribution||^2).")
    connections_lam: float = _setting(1e-2, "assign form: the share of each conv's connections its patterns keep.")
    search_threshold: float = _setting(1e-3, "Search parameters below this count as zero (the paper's t; the "
                                       "assign form's zeros are exact and need none).")
    best_by: str = _setting("max", "best.pt holds the epoch with the best validation metric: max (accuracy) "
                            "or min (a loss or an error).")
    device: str = _setting("auto", "auto (CUDA when present), cpu, cuda, cuda:1 ...")
    seed: int = _setting(0, "Random seed.")
    width_multiplier: Optional[float] = _setting(None, "Passed to model(width_multiplier=...) when the model "
                                                 "file's model() takes it (archc tune searches it).")
    target: Optional[str] = _setting(None, "Steer λ to a size: params=0.5 or flops=0.5 (a fraction of the "
                                     "starting model), or params=120k (a count; k/M/G).")
    target_reach: float = _setting(DEFAULT_REACH, "Share of the training by which --target is reached; the weights then "
                                   "train on at that size for the rest (1: at the last epoch's end, untrained at it).")
    out: Optional[str] = _setting(None, "Output folder.", cli=False)
    resume: bool = _setting(False, "Continue the search whose checkpoint is in --out.", cli=False)
    overwrite: bool = _setting(False, "Start over in an --out that holds a checkpoint.", cli=False)

    def __post_init__(self) -> None:
        _check_choices(self)
        _check_numbers(self)  # the device is checked when a search starts: a checkpoint may move machines
        if self.target is not None:
            from .budget import parse_target

            parse_target(self.target)
            if self.regularizer != "l1":
                raise ConfigError(f"target steers the L1 gate penalty, but regularizer is {self.regularizer!r}\n"
                                  "  fix: pass --regularizer l1 with --target")


def _check_choices(cfg: SearchConfig) -> None:
    choices = {"regularizer": REGULARIZERS, "optimizer": OPTIMIZERS, "gate_weighting": GATE_WEIGHTINGS,
               "kernel_weighting": KERNEL_WEIGHTINGS, "patterns_init": Connectivity.INITS,
               "patterns_form": tuple(GROUPED_FORMS),
               "best_by": ("max", "min")}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ConfigError(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}: "
                              f"pass one of those names")


# name -> (test, the valid range in words)
_RANGES = {
    "lam": (lambda v: v >= 0, ">= 0"), "density_lam": (lambda v: v >= 0, ">= 0"),
    "kernel_lam": (lambda v: v >= 0, ">= 0"), "select_lam": (lambda v: v >= 0, ">= 0"),
    "group_lam": (lambda v: v >= 0, ">= 0"), "purity_lam": (lambda v: v >= 0, ">= 0"),
    "connections_lam": (lambda v: v >= 0, ">= 0"), "depth_lam": (lambda v: v >= 0, ">= 0"), "exclusive_lam": (lambda v: v >= 0, ">= 0"),
    "epochs": (lambda v: v > 0, "> 0"), "batch_size": (lambda v: v > 0, "> 0"),
    "lr": (lambda v: v > 0, "> 0"), "arch_lr": (lambda v: v is None or v > 0, "> 0 (or unset)"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"), "weight_decay": (lambda v: v >= 0, ">= 0"),
    "alpha": (lambda v: 0 <= v <= 1, "in [0, 1]"), "shrink_every": (lambda v: v >= -1, ">= -1"),
    "threshold": (lambda v: v >= 0, ">= 0"), "patterns": (lambda v: v >= 0, ">= 0"),
    "search_threshold": (lambda v: v >= 0, ">= 0"), "target_reach": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "width_multiplier": (lambda v: v is None or v > 0, "> 0 (or unset)"),
}


def _check_numbers(cfg: SearchConfig) -> None:
    for name in _RANGES:
        check_number(name, getattr(cfg, name))


def check_number(name: str, value) -> None:
    """A ConfigError unless ``value`` is a finite number in the range of search setting ``name``
    (also used by ``archc tune`` for the settings it passes on to each search)."""
    ok, valid = _RANGES[name]
    finite = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)
                               and math.isfinite(value))
    if not finite or not ok(value):
        raise ConfigError(f"{name} must be a finite number {valid}, got {value!r}\n"
                          f"  fix: pass --{name.replace('_', '-')} with a value {valid}")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; any other name must exist on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {name!r} is not a device torch knows ({str(exc).splitlines()[0]})\n"
                          "  fix: pass --device auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: this machine has no CUDA device (or this torch has no CUDA)\n"
                          "  fix: pass --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)\n"
                          "  fix: pass --device cuda:N with N below that count")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: archc searches on cpu or cuda\n  fix: pass --device cpu or cuda")
    return device


def cli_fields() -> list:
    """The fields ``archc search`` offers as options (the rest have options of their own)."""
    return [f for f in fields(SearchConfig) if f.metadata.get("cli", True)]


def default_of(f) -> Any:
    return None if f.default is MISSING else f.default


def config_from(settings: dict, where: str = "settings") -> SearchConfig:
    """``SearchConfig(**settings)``, with unknown names reported as a ConfigError naming ``where``."""
    known = {f.name for f in fields(SearchConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}\n"
                          f"  fix: use the fields of archc.SearchConfig: {', '.join(sorted(known))}")
    return SearchConfig(**settings)


def resumed_config(saved: dict, given: dict) -> SearchConfig:
    """The settings of a resumed search: the checkpoint's, with ``given`` settings allowed only
    where they agree (or in :data:`MAY_CHANGE_ON_RESUME`). Raises ConfigError naming the flag."""
    saved_cfg = config_from(saved, "the checkpoint's settings")
    for name, value in given.items():
        if name in MAY_CHANGE_ON_RESUME or value == getattr(saved_cfg, name):
            continue
        flag = "--" + name.replace("_", "-")
        raise ConfigError(
            f"{flag} {value!r} differs from the checkpoint's {getattr(saved_cfg, name)!r}: a resumed search "
            "keeps the settings it started with\n"
            f"  fix: drop {flag} (only {', '.join('--' + n for n in MAY_CHANGE_ON_RESUME[:2])} may change), "
            "or start a new search with --overwrite or another --out")
    return SearchConfig(**{**asdict(saved_cfg), **given})
