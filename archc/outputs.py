"""``archc compact checkpoint.pt -o DIR``: from a search checkpoint to a deployable folder.

DIR receives ``model.py`` (plain PyTorch, no archc needed) with ``weights.safetensors``,
``model.onnx`` (verified in onnxruntime), ``report.json``, ``report.md`` (with the metric on the
model file's ``test_data()`` when it defines one), and two plots:
``widths.png`` (per layer, before and after) and ``width_history.png`` (over training).

Example:
    >>> summary = compact_checkpoint("runs/digits/checkpoint.pt", "runs/digits/compact")
    >>> summary["params_after"] < summary["params_before"]
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Union

import torch
import torch.fx as fx
from torch import nn

from . import flops as _flops
from .checkpoint import CheckpointError, atomic_write_bytes, load_checkpoint
from .compact import FINAL, _thresholded, compaction
from .errors import ConfigError, UserFileError
from .budget import format_size
from .export import export_onnx
from .out_dirs import check_compact_out, staged_output
from .rebuild import gated_from_checkpoint, search_options
from .model_io import accuracy, call_inputs, positional_inputs, run_model
from .search import evaluate, file_sha256, loader, scaled_model_fn
from .search_run import split_batch
from .capture import trace
from .userfile import UserSpec, load_user_file

_WIDTH_ATTRS = ("out_channels", "out_features", "embedding_dim")


def layer_widths(model: nn.Module) -> dict[str, int]:
    """Output width of every conv, linear and embedding layer, by module path."""
    widths = {}
    for name, m in model.named_modules():
        attr = next((a for a in _WIDTH_ATTRS if hasattr(m, a)), None)
        if attr:
            widths[name] = getattr(m, attr)
    return widths


def _spec_for(checkpoint: Path, state: dict, model_file: Optional[Union[str, Path, UserSpec]],
              ) -> tuple[UserSpec, bool]:
    """The model file to rebuild from, and whether it differs from the one the search ran on.

    ``model_file`` may be a file the caller loaded already (``archc tune``): it is not run again.
    Without it, the copy the search left beside the checkpoint: a checkpoint names its file
    (``model_file``), but only a file of that name in its own folder is imported."""
    if model_file is not None:
        spec = model_file if isinstance(model_file, UserSpec) else load_user_file(model_file)
        # archc.search runs record no file: nothing to compare
        return spec, state["model_sha256"] != "0" * 64 and spec.sha256 != state["model_sha256"]
    beside = checkpoint.parent / Path(state["model_file"]).name
    if not beside.is_file():
        raise CheckpointError(f"{checkpoint}: the model file {beside.name} is not beside the checkpoint\n"
                              "  fix: pass --model with the file the search ran on")
    if file_sha256(beside) != state["model_sha256"]:
        raise UserFileError(f"{beside} changed since the search that wrote this checkpoint.\n"
                            "  fix: restore the file, or pass --model with the file the search ran on")
    return load_user_file(beside), False


def _train_val(spec: UserSpec, batch_size: int, seed: int) -> tuple[Any, Any]:
    train, val = spec.train_val()
    return loader(train, batch_size, True, seed), loader(val, batch_size, False)


def _finetune(model: nn.Module, train: Any, spec: UserSpec, epochs: int, lr: float) -> None:
    opt = spec.optimizer_fn(model.parameters()) if spec.optimizer_fn else torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in train:
            inputs, target = split_batch(batch, torch.device("cpu"))
            opt.zero_grad(set_to_none=True)
            spec.loss_fn(run_model(model, inputs), target).backward()
            opt.step()
    model.eval()


def compact_checkpoint(
    checkpoint: Union[str, Path], out_dir: Union[str, Path], *,
    model_file: Optional[Union[str, Path, UserSpec]] = None,
    threshold: float = 0.0, finetune: int = 0, overwrite: bool = False,
) -> dict:
    """Rebuild the searched model, compact it, optionally fine-tune, and write DIR. Returns report.json.

    Everything is written into a staging folder beside DIR and moved into DIR only once every
    check passed (the compact model, model.py, and model.onnx against the gated model), so a
    failure leaves DIR as it was. DIR must be new, empty or a previous compact output unless
    ``overwrite``. Example: ``compact_checkpoint("run/checkpoint.pt", "run/compact")``.
    """
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    if not (math.isfinite(threshold) and threshold >= 0) or finetune < 0:
        raise ConfigError(f"--threshold must be a finite number >= 0 and --finetune a count >= 0, got "
                          f"{threshold!r} and {finetune!r}\n  fix: pass e.g. --threshold 0.01 --finetune 2")
    check_compact_out(out_dir, overwrite)  # before any work
    state = load_checkpoint(checkpoint)
    spec, changed = _spec_for(checkpoint, state, model_file)
    settings = state["settings"]
    inputs = spec.example_inputs()
    model_fn = scaled_model_fn(spec.model, settings.get("width_multiplier"))
    original = model_fn()
    gated = gated_from_checkpoint(state, model_fn, inputs)
    flat_inputs = positional_inputs(gated, inputs)  # keyword inputs as the graph's placeholders
    search_threshold = settings.get("search_threshold", 0.0)
    result = compaction(gated, FINAL, threshold, search_threshold=search_threshold)
    small = result.gm
    train, val = _train_val(spec, settings["batch_size"], settings["seed"])
    if finetune:
        _finetune(small, train, spec, finetune, settings["lr"])
    small.eval()
    from .emit import write_model_dir  # heavy imports only when writing

    # model.onnx is checked against the gated model with the gates compaction closed, unless
    # fine-tuning changed the compact model (then against the compact model itself).
    reference = None if finetune else gated
    # the search recorded the starting model's FLOPs; older checkpoints need one more trace
    flops_before = state.get("flops_before") or _flops.count(trace(original, *call_inputs(inputs)))
    with staged_output(out_dir, overwrite) as stage, _thresholded(gated, threshold, search_threshold):
        write_model_dir(small, stage, flat_inputs, model_name=f"{type(original).__name__} ({spec.path.name})")
        onnx = export_onnx(small, flat_inputs, stage / "model.onnx", reference=reference)
        report = _report(original, small, flops_before, evaluate(small, val, spec.metric_fn or accuracy), onnx,
                         result.search_report)
        report.update({"epoch": state["epoch"], "test_metric": _test_metric(small, spec, settings["batch_size"])})
        if state.get("budget"):
            report["target"] = _target_report(state["budget"], report, small, flat_inputs)
        report["blocks_removed"] = result.removed_blocks
        report.update({"threshold": threshold, "finetune_epochs": finetune, "checkpoint": str(checkpoint),
                       "model_file": str(spec.path), "model_file_differs_from_search": changed,
                       "search": {k: settings[k] for k in _search_keys(settings) if k in settings}})
        _write_reports(stage, report, list(state["history"]))
    return report


def _test_metric(small: nn.Module, spec: UserSpec, batch_size: int) -> Optional[float]:
    """The compact model's metric on the file's held-out ``test_data()``; None when it has none."""
    test = spec.test_set()
    if test is None:
        return None
    return evaluate(small, loader(test, batch_size, False), spec.metric_fn or accuracy, split="test")


def _report(original: nn.Module, small: fx.GraphModule, flops_before: int, metric: float, onnx: Any,
            lowered: dict) -> dict:
    """The sizes, FLOPs, metric, widths and checks of report.json."""
    before, after = layer_widths(original), layer_widths(small)
    # ``lowered``: what compaction made of each searched layer (renamed layers report their width)
    return {
        "params_before": sum(p.numel() for p in original.parameters()),
        "params_after": sum(p.numel() for p in small.parameters()),
        "flops_before": flops_before, "flops_after": _flops.count(small),
        "metric": metric,
        "layers": [{"name": n, "width_before": w, "width_after": after.get(n, lowered.get(n, {}).get("width", w))}
                   for n, w in before.items()],
        "onnx_providers": onnx.providers, "onnx_max_rel_err": onnx.max_rel_err,
        "verified": small.meta.get("archc.verified", {}),
        "search_layers": lowered,
    }


def _target_report(budget: dict, report: dict, small: nn.Module, inputs: tuple) -> dict:
    """The search's size target against what the compact model measures (its latency measured
    here, in onnxruntime, for a latency target)."""
    if budget["kind"] == "latency":
        from .latency import measure_latency

        achieved = measure_latency(small, inputs)
    else:
        achieved = report[f"{budget['kind']}_after"]
    return {"kind": budget["kind"], "target": budget["target"], "achieved": achieved,
            "ratio_to_target": achieved / budget["target"], "met_during_search": budget["met"],
            "predicted_during_search": budget["achieved"]}


_PATTERN_LAMS = {"lasso": ["group_lam", "exclusive_lam"], "assign": ["purity_lam", "connections_lam"]}


def _search_keys(settings: dict) -> list[str]:
    """The settings worth a line in the report: the basics, plus each search that was on."""
    options = search_options(settings)
    searched = {"kernel": ["kernel_lam", "kernel_weighting"], "select": ["select_lam", "sparsemax"],
                "patterns": ["patterns", "patterns_init", "patterns_form"] + _PATTERN_LAMS[options["patterns_form"]]}
    extra = [k for option, keys in searched.items() if options[option] for k in keys]
    basics = ["lam", "epochs", "regularizer", "gate_weighting", "lr", "batch_size", "seed", "target", "depth_lam"]
    return basics + extra + (["search_threshold"] if extra else [])


def _write_reports(out: Path, report: dict, history: list[dict]) -> None:
    from .plots import plot_width_history, plot_widths

    atomic_write_bytes(out / "report.json", lambda f: f.write(json.dumps(report, indent=2).encode()))
    atomic_write_bytes(out / "report.md", lambda f: f.write(report_markdown(report).encode()))
    plot_widths(report["layers"], out / "widths.png")
    if history:
        plot_width_history(history, out / "width_history.png")


def report_markdown(report: dict) -> str:
    """A human-readable summary of report.json."""
    ratio = report["params_after"] / max(report["params_before"], 1)
    lines = [
        "# archc compact report", "",
        f"- parameters: {report['params_before']:,} -> {report['params_after']:,} ({ratio:.1%})",
        f"- FLOPs per example: {report['flops_before']:,} -> {report['flops_after']:,}",
        f"- validation metric of the compact model: {report['metric']:.4f}"
        + (f" (after {report['finetune_epochs']} fine-tuning epochs)" if report["finetune_epochs"] else ""),
        *([f"- test metric of the compact model (`test_data()`): {report['test_metric']:.4f}"]
          if report.get("test_metric") is not None else []),
        *([_target_line(report["target"])] if report.get("target") else []),
        *([f"- residual branches removed: {len(report['blocks_removed'])}"] if report.get("blocks_removed") else []),
        f"- search: {report['search']}", "",
        "| layer | width before | width after |", "|---|---:|---:|",
    ]
    lines += [f"| {r['name']} | {r['width_before']} | {r['width_after']} |" for r in report["layers"]]
    if report.get("search_layers"):
        lines += ["", "| layer | kernel before -> after | grouped form | patterns (inputs x outputs) | channel order "
                  "| inputs dropped here |", "|---|---|---|---|---|---:|"]
        lines += [_search_row(name, r) for name, r in report["search_layers"].items()]
    lines += ["", "![widths](widths.png)", "", "![width over training](width_history.png)", ""]
    return "\n".join(lines)


def _target_line(target: dict) -> str:
    kind = target["kind"]
    return (f"- target: {kind} {format_size(kind, target['target'])}; "
            f"achieved {format_size(kind, target['achieved'])} "
            f"({target['ratio_to_target']:.3f} of the target)")


def _search_row(name: str, r: dict) -> str:
    """One searched layer of report.md: its kernel crop, grouped form, patterns and channel order."""
    kernel = " -> ".join("x".join(map(str, k)) for k in r["kernel"]) if "kernel" in r else "-"
    pats = r.get("patterns")
    sizes = ", ".join(f"{i}x{o}" for i, o in zip(pats["in_sizes"], pats["out_sizes"])) if pats else "-"
    order = "; ".join(f"{side}: {what}" for side, what in r.get("channel_order", {}).items()) or "-"
    return f"| {name} | {kernel} | {r.get('grouped', '-')} | {sizes} | {order} | {r.get('inputs_dropped_here', '-')} |"
