"""The state of one search and the steps of its loop: a fresh run, or one resumed from a checkpoint.

Example:
    >>> run = SearchRun.fresh(task, SearchConfig(lam=1e-3))
    >>> loss = run.train_step(next(iter(loader)))
    >>> run = SearchRun.resumed(task, load_checkpoint("runs/a/checkpoint.pt", for_resume=True), cfg)
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from . import distributed, flops, gate_costs, sparsity
from .checkpoint import CheckpointError
from .filters import filter_sites, filters
from .model_io import cross_entropy, positional_inputs, run_model, to_device
from .budget import BudgetSteering, architecture_parameters, parse_target
from .passes import gates_on_weights
from .penalty import penalty, penalty_terms
from .rebuild import build_gated, gated_from_checkpoint, search_options
from .search_config import SearchConfig, resolve_device
from .search_guard import (SearchError, check_class_targets, check_finite_loss, check_first_batch, user_code)
from .shrink import shrink

_LASSOS = ("group_lasso", "sparse_group_lasso")


def split_batch(batch: Any, device: torch.device) -> tuple[tuple, Any]:
    """``(inputs, target)`` of a batch ``(inputs..., target)``, on ``device``."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise SearchError(f"a batch is {type(batch).__name__}, not (inputs..., target)\n"
                          "  fix: make data() return datasets or loaders that yield (x, y) pairs")
    return tuple(to_device(t, device) for t in batch[:-1]), to_device(batch[-1], device)


class SearchRun:
    """One search's model, optimizer and counters. Build it with :meth:`fresh` or :meth:`resumed`."""

    def __init__(self, task, cfg: SearchConfig, model: fx.GraphModule, kept: dict, labels: dict,
                 flops_before: Optional[int], budget_state: Optional[dict] = None) -> None:
        self.task, self.cfg = task, cfg
        self.device = distributed.local_device(resolve_device(cfg.device))
        self.history: list[dict] = []
        self.epoch, self.step = 0, 0
        self.out = Path(cfg.out) if cfg.out else None
        self.model, self.kept, self.labels, self.flops_before = model, kept, labels, flops_before
        self.gate_sizes = {name: len(channels) for name, channels in kept.items()}  # replaced on resume
        self.initial_widths = self.widths()
        self.model.to(self.device)
        self.terms = penalty_terms(cfg)
        self.optimizer = self._make_optimizer()
        self.first_batch_checked = False
        self.progress = 0.0  # share of the training done; the loop sets it before each step
        self.steps_last_epoch = 0
        self.model_file_copied = False
        self.steering = self._steering(model, budget_state) if cfg.target else None
        # built at the first step, for its batch size; DDP last: the optimizer and a met target
        # freeze gates, and DDP must know which train
        self.trainer: Optional[torch.nn.Module] = None

    @classmethod
    def fresh(cls, task, cfg: SearchConfig) -> "SearchRun":
        """A new search: the model traced and gated, every channel open."""
        torch.manual_seed(cfg.seed)
        model = build_gated(task.model_fn, task.example_inputs,
                            gate_init="ones" if cfg.regularizer != "l1" else "uniform",
                            search=search_options(asdict(cfg)))
        kept = {n: torch.arange(f.size) for n, f in _named_filters(model)}
        return cls(task, cfg, model, kept, _gate_labels(model), flops.count(model))

    @classmethod
    def resumed(cls, task, state: dict, cfg: SearchConfig) -> "SearchRun":
        """The search of ``state`` (a checkpoint), continued exactly where it stopped."""
        torch.manual_seed(cfg.seed)
        model = gated_from_checkpoint(state, task.model_fn, task.example_inputs)
        run = cls(task, cfg, model, state["kept"], state["labels"], state.get("flops_before"), state.get("budget"))
        run.initial_widths = state["initial_widths"]
        run.gate_sizes = state.get("gate_sizes")
        try:
            run.optimizer.load_state_dict(state["optimizer_state"])
            torch.set_rng_state(state["rng"])
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"malformed checkpoint: its optimizer or random state does not fit this search "
                                  f"({str(exc).splitlines()[0]})\n  fix: resume from an intact checkpoint, or "
                                  "start over with --overwrite") from None
        run.epoch, run.step, run.history = state["epoch"], state["step"], list(state["history"])
        run.steps_last_epoch = state.get("steps_last_epoch", 0)
        return run

    def _steering(self, model: fx.GraphModule, saved: Optional[dict]) -> BudgetSteering:
        target = parse_target(self.cfg.target)
        if target.kind != "latency":
            return BudgetSteering(target, model, self.cfg.lam, self.cfg.threshold, saved, reach=self.cfg.target_reach)
        from .latency import LatencySteering

        inputs = positional_inputs(model, to_device(self.task.example_inputs, torch.device("cpu")))
        return LatencySteering(target, model, self.cfg.lam, self.cfg.threshold, saved, inputs=inputs,
                               reach=self.cfg.target_reach)

    def _trainer(self, inputs: tuple) -> torch.nn.Module:
        """What a training step runs: the gated model, with gates on weights where cheaper at
        this batch's size (:func:`archc.passes.gates_on_weights`), in DDP when several
        processes search. Built again when the model shrinks."""
        if self.trainer is None:
            first = next((t for t in pytree.tree_leaves(inputs) if isinstance(t, torch.Tensor) and t.dim()), None)
            batch = int(first.shape[0]) if first is not None else self.cfg.batch_size
            self.trainer = distributed.wrap(gates_on_weights(self.model, batch))
        return self.trainer

    def where(self) -> str:
        return f"epoch {self.epoch + 1}, step {self.step + 1}"

    def kept_message(self) -> str:
        if self.out is None or self.epoch == 0:
            return "No checkpoint was written."
        return f"The checkpoint of epoch {self.epoch} in {self.out} is kept."

    def _make_optimizer(self):
        params = list(self.model.parameters())
        if self.cfg.regularizer != "l1":
            for f in filters(self.model):  # gates only book-keep; the weights' prox decides
                f.theta.requires_grad_(False)
            params = [p for p in params if p.requires_grad]
        if self.task.optimizer_fn is not None:
            with user_code("optimizer(params)", "building the optimizer", "return a torch.optim.Optimizer"):
                opt = self.task.optimizer_fn(params)
            if not isinstance(opt, torch.optim.Optimizer):
                raise SearchError(f"optimizer(params) returned {type(opt).__name__}, not a torch.optim.Optimizer\n"
                                  "  fix: `def optimizer(params): return torch.optim.Adam(params, lr=1e-3)`")
        elif self.cfg.optimizer == "sgd":
            opt = torch.optim.SGD(self._param_groups(params), lr=self.cfg.lr, momentum=self.cfg.momentum,
                                  weight_decay=self.cfg.weight_decay)
        else:
            opt = torch.optim.Adam(self._param_groups(params), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
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
        arch = {id(p) for p in architecture_parameters(self.model)}
        return [{"params": [p for p in params if id(p) not in arch]},
                {"params": [p for p in params if id(p) in arch], "lr": self.cfg.arch_lr}]

    def penalty(self) -> torch.Tensor:
        lam = self.steering.lam_at(self.progress) if self.steering else None
        return penalty(self.terms, self.model, self.cfg, self.gate_weights, self.device, lam)

    def train_step(self, batch) -> float:
        where = self.where()
        inputs, target = distributed.agreed(lambda: self._checked_batch(batch, where))
        loss, value = distributed.agreed(lambda: self._checked_loss(inputs, target, where))
        total = loss + self.penalty()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        if self.groups:
            alpha = self.cfg.alpha if self.cfg.regularizer == "sparse_group_lasso" else 0.0
            sparsity.proximal_step(self.groups, self.cfg.lam, alpha, self.optimizer.param_groups[0]["lr"])
        self.step += 1
        return value

    def _checked_batch(self, batch, where: str) -> tuple:
        inputs, target = split_batch(batch, self.device)
        if not self.first_batch_checked:
            check_first_batch(inputs, self.model, where)
            self.first_batch_checked = True
        return inputs, target

    def _checked_loss(self, inputs: tuple, target: Any, where: str) -> tuple[torch.Tensor, float]:
        with user_code("the model's forward", where, "make data() yield inputs the model takes, "
                       "shaped like example_input()"):
            output = run_model(self._trainer(inputs), inputs)
        loss = self._loss(output, target, where)
        value = float(loss.detach())
        check_finite_loss(value, inputs, where, self.kept_message(), first_step=self.step == 0)
        return loss, value

    def _loss(self, output: Any, target: Any, where: str) -> torch.Tensor:
        check_class_targets(self.task.loss_fn, output, target, where)
        name = "the default loss (cross-entropy)" if self.task.loss_fn is cross_entropy else "loss(output, target)"
        with user_code(name, where, "make loss(output, target) return a scalar tensor for what the model "
                       "returns and data()'s targets"):
            loss = self.task.loss_fn(output, target)
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.requires_grad):
            raise SearchError(f"{name} returned {type(loss).__name__}"
                              f"{' of shape ' + str(tuple(loss.shape)) if isinstance(loss, torch.Tensor) else ''}, "
                              f"not a scalar tensor with a gradient ({where})\n"
                              "  fix: return a torch scalar computed from the output (e.g. loss.mean())")
        return loss.reshape(())

    def shrink_now(self) -> int:
        """Remove the closed channels. Past the point where a size target is due, shrink again
        (at most three times) while the target is missed: a measured latency moves the goal."""
        removed = self._shrink_once()
        for _ in range(3):
            if not (self.steering and self.steering.overdue(self.progress)):
                break
            removed += self._shrink_once()
        return removed

    def _shrink_once(self) -> int:
        if self.steering and self.steering.control.met:
            return 0  # the gates are frozen at the target: nothing can have closed
        if self.groups:
            sparsity.close_gates_of_zero_groups(self.groups)
        if self.steering:
            self.steering.before_shrink(self.progress)
        result, removed = shrink(self.model, self.optimizer, threshold=self.cfg.threshold)
        self.model, slices = result.gm, result.param_slices
        for name in self.kept:
            if f"{name}.theta" in slices:
                self.kept[name] = self.kept[name][slices[f"{name}.theta"][0]]
        if self.groups:
            self.groups = sparsity.channel_weight_groups(self.model)
        self.gate_weights = self._gate_weights()  # new gates: weights of the old ones would train nothing
        if self.steering:
            self.steering.after_shrink(self.model)
        distributed.check_lockstep(self.kept)
        self.trainer = None  # new parameters: a new view and DDP wrapper at the next step
        return removed

    def widths(self) -> dict[str, int]:
        # a group keeps at least one channel through compaction, so it never reads as 0 wide
        alive = {n: max(1, int((f.theta.detach() > self.cfg.threshold).sum())) for n, f in _named_filters(self.model)}
        return {self.labels[n]: alive[n] for n in alive}

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def _named_filters(model: fx.GraphModule) -> list:
    gates = set(filters(model))
    return [(n, m) for n, m in model.named_modules() if m in gates]


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

