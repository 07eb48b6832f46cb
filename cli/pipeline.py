"""``archc search`` and ``archc compact``: the two steps of the main job.

The search's options are generated from :class:`archc.SearchConfig`'s fields (their help and
defaults live there), so that a setting is declared once. An option left out is not passed on:
a resumed search then keeps its checkpoint's value, and one given again must agree with it.
"""
from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from archc import distributed
from archc.budget import format_size
from archc.out_dirs import BEST
from archc.outputs import compact_checkpoint
from archc.search import best_record, run_search, task_from_file
from archc.search_config import SearchConfig, cli_fields, default_of

from .main import MODEL_PY, command, err, out
from .render import compact_summary, widths_table


def _setting_parameters() -> list[inspect.Parameter]:
    """One ``--option`` per SearchConfig field, defaulting to None ("not given")."""
    hints = typing.get_type_hints(SearchConfig)
    params = []
    for f in cli_fields():
        kind = hints[f.name]
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)  # Optional[X] -> X
        flag = "--" + f.name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        default = default_of(f)
        shown = "" if default is None else f" Default: {default}."
        option = typer.Option(None, *decls, help=f.metadata["help"] + shown, show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option,
                                        annotation=Optional[kind]))
    return params


def search_cmd(model_py: Path, out_dir: Optional[Path], resume: bool, overwrite: bool, progress: bool,
               **settings: Any) -> None:
    """Train the model with gates and a sparsity penalty, shrinking it as channels die."""
    out_dir = out_dir or Path("runs") / model_py.stem
    given = {k: v for k, v in settings.items() if v is not None}
    cfg = SearchConfig(**given, out=str(out_dir), resume=resume, overwrite=overwrite)
    result = run_search(task_from_file(model_py), cfg, console=err, progress=progress, given=given)
    if not distributed.is_main():
        return  # process 0 reports for a distributed search
    last = result.history[-1] if result.history else None
    out.print(widths_table(result.initial_widths, last["widths"] if last else result.initial_widths,
                           title="Learned widths"))
    if last:
        out.print(f"validation metric {last['val_metric']:.4f}, {last['params']:,} parameters after "
                  f"{last['epoch']} epochs; checkpoint: {result.checkpoint}")
        best = best_record(result.history, cfg.best_by)
        if best is not last:
            out.print(f"best validation metric {best['val_metric']:.4f} at epoch {best['epoch']} "
                      f"({best['params']:,} parameters): {result.checkpoint.parent / BEST}")
    if last and last.get("budget"):
        b = last["budget"]
        target, achieved = format_size(b["kind"], b["target"]), format_size(b["kind"], b["achieved"])
        out.print(f"target {b['kind']} {target}: {achieved} ({b['ratio_to_target']:.3f} of it"
                  f"{', met' if b['met'] else ', not met yet: more epochs, or a larger --lr, get there'})")
    out.print(f"next: [bold]archc compact {result.checkpoint} -o {out_dir / 'compact'}[/bold]")


search_cmd.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    inspect.Parameter("model_py", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=MODEL_PY, annotation=Path),
    *_setting_parameters(),
    inspect.Parameter("out_dir", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path], default=typer.Option(
        None, "--out", help="Output folder (default: runs/<model file name>).")),
    inspect.Parameter("resume", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, help="Continue the search whose checkpoint is in --out, with the settings it started with.")),
    inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        False, help="Start a new search in an --out that holds a checkpoint (it is replaced).")),
    inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
        True, help="Show the live progress bar.")),
])
command("search")(search_cmd)


@command("compact")
def compact_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint.pt written by `archc search`.", show_default=False),
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="Output folder (default: beside the checkpoint)."),
    model: Optional[Path] = typer.Option(None, help="The model file (default: the copy the search left "
                                         "beside the checkpoint)."),
    threshold: float = typer.Option(0.0, help="Also remove channels whose gate is at or below this."),
    finetune: int = typer.Option(0, help="Fine-tune the compact model for this many epochs."),
    overwrite: bool = typer.Option(False, help="Write into an --out that holds other files (archc's files "
                                   "there are replaced, the others kept)."),
) -> None:
    """Compile a search checkpoint into a real smaller model: model.py, weights, ONNX, report, plots."""
    out_dir = out_dir or checkpoint.parent / "compact"
    report = compact_checkpoint(checkpoint, out_dir, model_file=model, threshold=threshold, finetune=finetune,
                                overwrite=overwrite)
    if report["model_file_differs_from_search"]:
        err.print(f"[yellow]warning:[/yellow] {model} is not the file the search ran on (its SHA-256 differs); "
                  "its model had the same layers, so the checkpoint loaded", highlight=False)
    before = {r["name"]: r["width_before"] for r in report["layers"]}
    after = {r["name"]: r["width_after"] for r in report["layers"]}
    out.print(widths_table(before, after, title="Layer widths"))
    out.print(compact_summary(report, out_dir))
