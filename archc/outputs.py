"""``archc compact checkpoint.pt -o DIR``: from a search checkpoint to a deployable folder.

DIR receives ``model.py`` (plain PyTorch, no archc needed) with ``weights.safetensors``,
``model.onnx`` (verified in onnxruntime), ``report.json``, ``report.md``, and two plots:
``widths.png`` (per layer, before and after) and ``width_history.png`` (over training).

Example:
    >>> summary = compact_checkpoint("runs/digits/checkpoint.pt", "runs/digits/compact")
    >>> summary["params_after"] < summary["params_before"]
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
import torch.fx as fx
from torch import nn

from . import flops as _flops
from .checkpoint import atomic_write_bytes, load_checkpoint
from .compact import FINAL, _thresholded, compaction
from .errors import UserFileError
from .export import export_onnx
from .rebuild import build_gated, search_options
from .model_io import accuracy, call_inputs, positional_inputs, run_model
from .search import _loader, _split, evaluate
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


def _spec_for(state: dict, model_file: Optional[Union[str, Path]]) -> UserSpec:
    path = Path(model_file or state["model_file"])
    spec = load_user_file(path)
    if model_file is None and spec.sha256 != state["model_sha256"]:
        raise UserFileError(
            f"{path} changed since the search that wrote this checkpoint.\n"
            "  fix: restore the file, or pass --model with the file the search ran on"
        )
    return spec


def _train_val(spec: UserSpec, batch_size: int, seed: int) -> tuple[Any, Any]:
    data = spec.data()
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise UserFileError(f"{spec.path}: `data()` must return (train, val).\n  fix: return two datasets or loaders")
    gen = torch.Generator().manual_seed(seed)
    return _loader(data[0], batch_size, True, gen), _loader(data[1], batch_size, False, gen)


def _finetune(model: nn.Module, train: Any, spec: UserSpec, epochs: int, lr: float) -> None:
    opt = spec.optimizer_fn(model.parameters()) if spec.optimizer_fn else torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in train:
            inputs, target = _split(batch, torch.device("cpu"))
            opt.zero_grad(set_to_none=True)
            spec.loss_fn(run_model(model, inputs), target).backward()
            opt.step()
    model.eval()


def compact_checkpoint(
    checkpoint: Union[str, Path], out_dir: Union[str, Path], *, model_file: Optional[Union[str, Path]] = None,
    threshold: float = 0.0, finetune: int = 0,
) -> dict:
    """Rebuild the searched model, compact it, optionally fine-tune, and write DIR. Returns report.json.

    Everything is written into a staging folder beside DIR and moved into DIR only once every
    check passed (the compact model, model.py, and model.onnx against the gated model), so a
    failure leaves DIR as it was. Example: ``compact_checkpoint("run/checkpoint.pt", "run/compact")``.
    """
    state = load_checkpoint(checkpoint)
    spec = _spec_for(state, model_file)
    settings = state["settings"]
    inputs = spec.example_inputs()
    original = spec.model()
    gated = build_gated(spec.model, inputs, state["kept"], search=search_options(settings))
    gated.load_state_dict(state["model_state"])
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
    with _staging(Path(out_dir)) as stage, _thresholded(gated, threshold, search_threshold):
        write_model_dir(small, stage, flat_inputs, model_name=f"{type(original).__name__} ({spec.path.name})")
        onnx = export_onnx(small, flat_inputs, stage / "model.onnx", reference=reference)
        report = _report(original, small, inputs, evaluate(small, val, spec.metric_fn or accuracy), onnx,
                         result.search_report)
        report.update({"threshold": threshold, "finetune_epochs": finetune, "checkpoint": str(checkpoint),
                       "search": {k: settings[k] for k in _search_keys(settings) if k in settings}})
        _write_reports(stage, report, list(state["history"]))
    return report


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh folder beside ``out``; on success its files replace their namesakes in ``out``
    (other files there are kept), on failure nothing in ``out`` changes. Always removed."""
    stage = out.parent / f".{out.name}.staging-{uuid.uuid4().hex[:12]}"
    stage.mkdir(parents=True)
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for path in sorted(stage.iterdir()):
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _report(original: nn.Module, small: fx.GraphModule, inputs: Union[tuple, dict], metric: float, onnx: Any,
            lowered: dict) -> dict:
    """The sizes, FLOPs, metric, widths and checks of report.json."""
    before, after = layer_widths(original), layer_widths(small)
    # ``lowered``: what compaction made of each searched layer (renamed layers report their width)
    return {
        "params_before": sum(p.numel() for p in original.parameters()),
        "params_after": sum(p.numel() for p in small.parameters()),
        "flops_before": _flops.count(trace(original, *call_inputs(inputs))), "flops_after": _flops.count(small),
        "metric": metric,
        "layers": [{"name": n, "width_before": w, "width_after": after.get(n, lowered.get(n, {}).get("width", w))}
                   for n, w in before.items()],
        "onnx_providers": onnx.providers, "onnx_max_rel_err": onnx.max_rel_err,
        "verified": small.meta.get("archc.verified", {}),
        "search_layers": lowered,
    }


def _search_keys(settings: dict) -> list[str]:
    """The settings worth a line in the report: the basics, plus each search that was on."""
    options = search_options(settings)
    searched = {"kernel": ["kernel_lam", "kernel_weighting"], "select": ["select_lam", "sparsemax"],
                "patterns": ["patterns", "patterns_init", "group_lam", "exclusive_lam"]}
    extra = [k for option, keys in searched.items() if options[option] for k in keys]
    basics = ["lam", "epochs", "regularizer", "gate_weighting", "lr", "batch_size", "seed"]
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


def _search_row(name: str, r: dict) -> str:
    """One searched layer of report.md: its kernel crop, grouped form, patterns and channel order."""
    kernel = " -> ".join("x".join(map(str, k)) for k in r["kernel"]) if "kernel" in r else "-"
    pats = r.get("patterns")
    sizes = ", ".join(f"{i}x{o}" for i, o in zip(pats["in_sizes"], pats["out_sizes"])) if pats else "-"
    order = "; ".join(f"{side}: {what}" for side, what in r.get("channel_order", {}).items()) or "-"
    return f"| {name} | {kernel} | {r.get('grouped', '-')} | {sizes} | {order} | {r.get('inputs_dropped_here', '-')} |"
