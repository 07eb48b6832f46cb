"""``archc search`` and ``archc compact``: the two steps of the main job."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from archc.errors import UserFileError
from archc.outputs import compact_checkpoint
from archc.search import SearchConfig, Task, run_search
from archc.userfile import load_user_file

from .main import MODEL_PY, command, err, out
from .render import compact_summary, widths_table


def _task(model_py: Path) -> Task:
    spec = load_user_file(model_py)
    data = spec.data()
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise UserFileError(f"{model_py}: `data()` must return (train, val): two datasets or data loaders.\n"
                            "  fix: `def data(): return train_set, val_set`")
    return Task(model_fn=spec.model, train=data[0], val=data[1], example_inputs=spec.example_inputs(),
                loss_fn=spec.loss_fn, metric_fn=spec.metric_fn, optimizer_fn=spec.optimizer_fn,
                model_file=str(model_py), model_sha256=spec.sha256)


@command("search")
def search_cmd(
    model_py: Path = MODEL_PY,
    lam: float = typer.Option(1e-4, help="Strength of the size penalty (bigger: smaller model)."),
    epochs: int = typer.Option(10, help="Training epochs."),
    batch_size: int = typer.Option(128, help="Batch size (when data() returns datasets)."),
    lr: float = typer.Option(1e-3, help="Learning rate (and proximal step size)."),
    arch_lr: Optional[float] = typer.Option(None, help="Learning rate of gates and search parameters (default: --lr)."),
    optimizer: str = typer.Option("adam", help="adam or sgd, unless model.py defines optimizer(params)."),
    regularizer: str = typer.Option("l1", help="l1 (gates, ShrinkNets), group_lasso, sparse_group_lasso, or none."),
    gate_weighting: str = typer.Option("uniform", help="L1 weight of each gate: uniform (ShrinkNets), or the "
                                       "params or flops its channel carries (prunes dear channels first)."),
    alpha: float = typer.Option(0.5, help="L1 share of the sparse group lasso."),
    density_lam: float = typer.Option(0.0, help="Extra penalty on the mean |weight| per layer."),
    shrink_every: int = typer.Option(0, help="Steps between shrinks; 0: every epoch; -1: never."),
    threshold: float = typer.Option(0.0, help="A gate at or below this counts as closed."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ..."),
    seed: int = typer.Option(0, help="Random seed."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: runs/<model file name>)."),
    kernel_lam: float = typer.Option(0.0, help="> 0: also search filter sizes (L1 on alpha)."),
    kernel_weighting: str = typer.Option("uniform", help="L1 weight of each filter size's alpha: uniform "
                                         "(the paper) or area (favours small windows)."),
    select_lam: float = typer.Option(0.0, help="> 0: also search input channels per layer (L1 on beta)."),
    sparsemax: bool = typer.Option(False, help="Input-channel betas through sparsemax."),
    patterns: int = typer.Option(0, help="> 0: also search grouped convolutions with this many patterns."),
    patterns_init: str = typer.Option("random", help="random (dense on average) or partition (each channel "
                                      "starts mostly in one pattern: near a grouped conv)."),
    group_lam: float = typer.Option(1e-6, help="Group lasso on P columns and S rows."),
    exclusive_lam: float = typer.Option(3e-6, help="Exclusive lasso on P rows and S columns."),
    search_threshold: float = typer.Option(1e-3, help="Search parameters below this count as zero."),
    resume: bool = typer.Option(False, help="Continue the search whose checkpoint is in --out."),
    progress: bool = typer.Option(True, help="Show the live progress bar."),
) -> None:
    """Train the model with gates and a sparsity penalty, shrinking it as channels die."""
    out_dir = out_dir or Path("runs") / model_py.stem
    cfg = SearchConfig(lam=lam, epochs=epochs, batch_size=batch_size, lr=lr, arch_lr=arch_lr, optimizer=optimizer,
                       regularizer=regularizer, gate_weighting=gate_weighting, alpha=alpha, density_lam=density_lam,
                       shrink_every=shrink_every, threshold=threshold, device=device, seed=seed,
                       out=str(out_dir), resume=resume, kernel_lam=kernel_lam,
                       kernel_weighting=kernel_weighting, select_lam=select_lam,
                       sparsemax=sparsemax, patterns=patterns, patterns_init=patterns_init, group_lam=group_lam,
                       exclusive_lam=exclusive_lam, search_threshold=search_threshold)
    result = run_search(_task(model_py), cfg, console=err, progress=progress)
    last = result.history[-1] if result.history else None
    out.print(widths_table(result.initial_widths, last["widths"] if last else result.initial_widths,
                           title="Learned widths"))
    if last:
        out.print(f"validation metric {last['val_metric']:.4f}, {last['params']:,} parameters after "
                  f"{last['epoch']} epochs; checkpoint: {result.checkpoint}")
    out.print(f"next: [bold]archc compact {result.checkpoint} -o {out_dir / 'compact'}[/bold]")


@command("compact")
def compact_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint.pt written by `archc search`.", show_default=False),
    out_dir: Optional[Path] = typer.Option(None, "-o", "--out", help="Output folder (default: beside the checkpoint)."),
    model: Optional[Path] = typer.Option(None, help="The model file, if it moved since the search."),
    threshold: float = typer.Option(0.0, help="Also remove channels whose gate is at or below this."),
    finetune: int = typer.Option(0, help="Fine-tune the compact model for this many epochs."),
) -> None:
    """Compile a search checkpoint into a real smaller model: model.py, weights, ONNX, report, plots."""
    out_dir = out_dir or checkpoint.parent / "compact"
    report = compact_checkpoint(checkpoint, out_dir, model_file=model, threshold=threshold, finetune=finetune)
    before = {r["name"]: r["width_before"] for r in report["layers"]}
    after = {r["name"]: r["width_after"] for r in report["layers"]}
    out.print(widths_table(before, after, title="Layer widths"))
    out.print(compact_summary(report, out_dir))
