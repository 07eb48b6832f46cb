"""The search: train a gated model with a sparsity penalty, shrinking it as channels die.

Example:
    >>> result = archc.search(model, train_set, val_set, lam=1e-3, epochs=5, out="runs/a")
    >>> result.history[-1]["widths"]
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.fx as fx
from torch.utils.data import DataLoader, Dataset

from . import gate_costs, sparsity
from .checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from .errors import ConfigError, UserFileError
from .filters import filter_sites, filters
from .model_io import accuracy, cross_entropy, run_model, to_device
from .das import regularizers as das_reg
from .das.params import GroupedConnectivity
from .rebuild import build_gated, search_options
from .search_display import SearchDisplay
from .shrink import shrink

REGULARIZERS = ("l1", "group_lasso", "sparse_group_lasso", "none")
OPTIMIZERS = ("adam", "sgd")
_LASSOS = ("group_lasso", "sparse_group_lasso")


@dataclass
class SearchConfig:
    """Settings of one search (all plain data: they go into the checkpoint)."""

    lam: float = 1e-4              # strength of the size penalty
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    arch_lr: Optional[float] = None  # learning rate of gates and search parameters (default: lr)
    optimizer: str = "adam"        # adam | sgd, when the task brings no optimizer
    momentum: float = 0.9
    weight_decay: float = 0.0
    regularizer: str = "l1"        # l1 on gates (ShrinkNets) | group_lasso | sparse_group_lasso | none
    gate_weighting: str = "uniform"  # l1 per gate: uniform (ShrinkNets) | params | flops each channel carries
    alpha: float = 0.5             # L1 share of the sparse group lasso
    density_lam: float = 0.0       # extra penalty on the mean |weight| per layer (Tessera & Rosman)
    shrink_every: int = 0          # optimizer steps between shrinks; 0: each epoch; -1: never
    threshold: float = 0.0         # a gate at or below this is closed
    kernel_lam: float = 0.0        # > 0: search filter sizes (L1 on the KernelMask alphas)
    kernel_weighting: str = "uniform"  # uniform L1 (the paper) | area: each alpha weighted by its window's area
    select_lam: float = 0.0        # > 0: search input channels (L1 on the ChannelSelect betas)
    sparsemax: bool = False        # betas through sparsemax
    patterns: int = 0              # > 0: search grouped convolutions with this many patterns
    patterns_init: str = "random"  # random (dense on average) | partition (starts near a grouped conv)
    group_lam: float = 1e-6        # group lasso on P columns and S rows
    exclusive_lam: float = 3e-6    # exclusive lasso on P rows and S columns
    search_threshold: float = 1e-3 # search parameters below this count as zero (the paper's t)
    device: str = "auto"
    seed: int = 0
    out: Optional[str] = None
    resume: bool = False

    def __post_init__(self) -> None:
        choices = {"regularizer": REGULARIZERS, "optimizer": OPTIMIZERS, "gate_weighting": gate_costs.WEIGHTINGS,
                   "kernel_weighting": das_reg.KERNEL_WEIGHTINGS, "patterns_init": GroupedConnectivity.INITS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}: "
                                  f"pass one of those names")
        for name in ("epochs", "batch_size", "lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha (the L1 share of the sparse group lasso) must be in [0, 1], got {self.alpha}")


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


def _loader(data: Any, batch_size: int, shuffle: bool, gen: torch.Generator) -> Any:
    if isinstance(data, Dataset):
        return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=gen)
    return data


def _split(batch: Any, device: torch.device) -> tuple[tuple, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise UserFileError("each batch must be (inputs..., target).\n  fix: make data() yield (x, y) pairs")
    return tuple(to_device(t, device) for t in batch[:-1]), batch[-1].to(device)


class _Run:
    """The state of one search; methods are the steps of the loop."""

    def __init__(self, task: Task, cfg: SearchConfig, display: SearchDisplay) -> None:
        self.task, self.cfg, self.display = task, cfg, display
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if cfg.device == "auto" else cfg.device))
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.history: list[dict] = []
        self.epoch, self.step = 0, 0
        self.out = Path(cfg.out) if cfg.out else None
        torch.manual_seed(cfg.seed)
        state = self._resume_state()
        self.model = build_gated(task.model_fn, task.example_inputs, state["kept"] if state else None,
                                 gate_init="ones" if cfg.regularizer != "l1" else "uniform",
                                 search=search_options(asdict(cfg)))
        self.kept = state["kept"] if state else {n: torch.arange(f.size) for n, f in self._named_filters()}
        self.labels = state["labels"] if state else _gate_labels(self.model)
        if state:
            self.model.load_state_dict(state["model_state"])
        self.initial_widths = state["initial_widths"] if state else self.widths()
        self.model.to(self.device)
        self.optimizer = self._make_optimizer()
        if state:
            self.optimizer.load_state_dict(state["optimizer_state"])
            torch.set_rng_state(state["rng"]), self.gen.set_state(state["loader_rng"])
            self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])

    def _resume_state(self) -> Optional[dict]:
        if not (self.cfg.resume and self.out and (self.out / "checkpoint.pt").exists()):
            return None
        state = load_checkpoint(self.out / "checkpoint.pt")
        if self.task.model_sha256 and state["model_sha256"] != self.task.model_sha256:
            raise UserFileError(f"{self.task.model_file} changed since the checkpoint in {self.out} was "
                                "written.\n  fix: restore the file, or start a new search with another --out")
        return state

    def _named_filters(self):
        return [(n, m) for n, m in self.model.named_modules() if m in set(filters(self.model))]

    def _make_optimizer(self):
        params = list(self.model.parameters())
        if self.cfg.regularizer != "l1":
            for f in filters(self.model):  # gates only book-keep; the weights' prox decides
                f.theta.requires_grad_(False)
            params = [p for p in params if p.requires_grad]
        if self.task.optimizer_fn is not None:
            opt = self.task.optimizer_fn(params)
        else:
            groups = self._param_groups(params)
            if self.cfg.optimizer == "sgd":
                opt = torch.optim.SGD(groups, lr=self.cfg.lr, momentum=self.cfg.momentum, weight_decay=self.cfg.weight_decay)
            else:
                opt = torch.optim.Adam(groups, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.groups = sparsity.channel_weight_groups(self.model) if self.cfg.regularizer in _LASSOS else []
        self.gate_weights = self._gate_weights()
        return opt

    def _gate_weights(self) -> Optional[dict]:
        """Each gate's per-channel weight for a weighted L1, recomputed whenever the model shrinks."""
        if self.cfg.gate_weighting == "uniform" or self.cfg.regularizer != "l1":
            return None
        return gate_costs.gate_weights(gate_costs.channel_costs(self.model, self.cfg.gate_weighting))

    def _param_groups(self, params: list) -> list:
        """Weights at ``lr``; gates and search parameters at ``arch_lr`` when it is set."""
        if self.cfg.arch_lr is None:
            return [{"params": params}]
        arch = {id(p) for p in [f.theta for f in filters(self.model)] + das_reg.search_parameters(self.model)}
        return [{"params": [p for p in params if id(p) not in arch]},
                {"params": [p for p in params if id(p) in arch], "lr": self.cfg.arch_lr}]

    def penalty(self) -> torch.Tensor:
        cfg = self.cfg
        total = torch.zeros((), device=self.device)
        if cfg.regularizer == "l1":
            weighted = self.gate_weights is not None
            size = gate_costs.weighted_gate_l1(self.gate_weights) if weighted else sparsity.gate_l1(self.model)
            total = total + cfg.lam * size
        if cfg.density_lam:
            total = total + cfg.density_lam * sparsity.density_penalty(self.model)
        if cfg.kernel_lam:
            total = total + cfg.kernel_lam * das_reg.alpha_l1(self.model, cfg.kernel_weighting)
        if cfg.select_lam:
            total = total + cfg.select_lam * das_reg.beta_l1(self.model)
        if cfg.patterns:
            total = total + das_reg.grouped_penalty(self.model, cfg.group_lam, cfg.exclusive_lam)
        return total

    def train_step(self, batch) -> float:
        inputs, target = _split(batch, self.device)
        loss = self.task.loss_fn(run_model(self.model, inputs), target)
        total = loss + self.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.groups:
            alpha = self.cfg.alpha if self.cfg.regularizer == "sparse_group_lasso" else 0.0
            sparsity.proximal_step(self.groups, self.cfg.lam, alpha, self.optimizer.param_groups[0]["lr"])
        self.step += 1
        return float(loss.detach())

    def shrink_now(self) -> int:
        if self.groups:
            sparsity.close_gates_of_zero_groups(self.groups)
        result, removed = shrink(self.model, self.optimizer, threshold=self.cfg.threshold)
        self.model, slices = result.gm, result.param_slices
        for name in self.kept:
            if f"{name}.theta" in slices:
                self.kept[name] = self.kept[name][slices[f"{name}.theta"][0]]
        if self.groups:
            self.groups = sparsity.channel_weight_groups(self.model)
        self.gate_weights = self._gate_weights()  # new gates: weights of the old ones would train nothing
        return removed

    def widths(self) -> dict[str, int]:
        # a group keeps at least one channel through compaction, so it never reads as 0 wide
        alive = {n: max(1, int((f.theta.detach() > self.cfg.threshold).sum())) for n, f in self._named_filters()}
        return {self.labels[n]: alive[n] for n in alive}

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _gate_labels(gm: fx.GraphModule) -> dict[str, str]:
    """Name each gate after the first layer whose channels it gates."""
    labels: dict[str, str] = {}
    for node, gate, site in filter_sites(gm):
        x = node.args[0]
        for _ in range(3):  # past a norm or activation, to the conv/linear that makes the channels
            module = gm.get_submodule(x.target) if x.op == "call_module" else None
            if module is None or any(hasattr(module, a) for a in ("out_channels", "out_features", "embedding_dim")):
                break
            if not x.args or not isinstance(x.args[0], fx.Node):
                break
            x = x.args[0]
        label = x.target if x.op in ("call_module", "get_attr") else x.name
        labels.setdefault(node.target, str(label))
    return labels


def run_search(task: Task, cfg: SearchConfig, *, console=None, progress: bool = True) -> SearchResult:
    """Run (or resume) a search; writes ``log.jsonl`` and ``checkpoint.pt`` to ``cfg.out``."""
    with SearchDisplay(console, progress) as display:
        run = _Run(task, cfg, display)
        train = _loader(task.train, cfg.batch_size, True, run.gen)
        val = _loader(task.val, cfg.batch_size, False, run.gen)
        for epoch in range(run.epoch, cfg.epochs):
            record = _train_epoch(run, train, val, epoch)
            run.history.append(record)
            run.epoch = epoch + 1
            _save(run)
    return SearchResult(run.model, run.history, run.out / "checkpoint.pt" if run.out else None,
                        run.initial_widths)


def _train_epoch(run: _Run, train, val, epoch: int) -> dict:
    cfg = run.cfg
    run.display.start_epoch(epoch, cfg.epochs, len(train), run.params(), run.widths())
    run.model.train()
    start, losses, removed = time.perf_counter(), [], 0
    for batch in train:
        losses.append(run.train_step(batch))
        if cfg.shrink_every > 0 and run.step % cfg.shrink_every == 0:
            removed += run.shrink_now()
        run.display.step(losses[-1], run.params(), run.widths())
    if cfg.shrink_every == 0:
        removed += run.shrink_now()
    seconds = time.perf_counter() - start
    record = {"epoch": epoch + 1, "seconds": seconds, "train_loss": sum(losses) / max(len(losses), 1),
              "val_metric": evaluate(run.model, val, run.task.metric_fn or accuracy, run.device),
              "params": run.params(), "removed": removed, "widths": run.widths(),
              "density": _mean(sparsity.density(run.model))}
    run.display.end_epoch(record)
    return record


def _mean(values: dict) -> float:
    return sum(values.values()) / len(values) if values else 0.0


@torch.no_grad()
def evaluate(model: torch.nn.Module, data, metric_fn: Callable, device=torch.device("cpu")) -> float:
    """Batch-size-weighted mean of ``metric_fn(output, target)`` over ``data`` (eval mode)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in data:
        inputs, target = _split(batch, device)
        n = len(target)
        total += float(metric_fn(run_model(model, inputs), target)) * n
        count += n
    model.train(was)
    return total / max(count, 1)


def _save(run: _Run) -> None:
    if run.out is None:
        return
    state = {
        "epoch": run.epoch, "step": run.step, "settings": asdict(run.cfg),
        "model_state": run.model.state_dict(), "kept": run.kept, "labels": run.labels,
        "initial_widths": run.initial_widths,
        "optimizer_state": run.optimizer.state_dict(), "rng": torch.get_rng_state(),
        "loader_rng": run.gen.get_state(), "history": run.history,
        "model_file": run.task.model_file, "model_sha256": run.task.model_sha256,
        "example_shapes": example_shapes(run.task.example_inputs),
    }
    save_checkpoint(run.out / "checkpoint.pt", state)
    lines = "".join(json.dumps(r) + "\n" for r in run.history)
    atomic_write_bytes(run.out / "log.jsonl", lambda f: f.write(lines.encode()))


def example_shapes(example: Union[tuple, dict]) -> Any:
    """The shapes of an example's tensors, as plain lists (a dict for keyword inputs)."""
    if isinstance(example, dict):
        return {k: list(v.shape) for k, v in example.items() if isinstance(v, torch.Tensor)}
    return [list(t.shape) for t in example]


def file_sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
