"""``archc tune``: an optuna study over λ, the learning rate and the width (see archc/tune.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from archc.budget import DEFAULT_REACH
from archc.errors import ConfigError
from archc.tune import TuneConfig, tune
from archc.tune_report import code_line, median_line, write_tune_report
from archc.tune_trial import dense_baseline

from .main import MODEL_PY, command, out


@command("tune")
def tune_cmd(
    model_py: Path = MODEL_PY,
    trials: int = typer.Option(12, help="Finished trials the study should hold (a rerun adds the missing ones)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Study folder (default: runs/tune-<model file name>)."),
    storage: Optional[str] = typer.Option(None, help="Database URL shared by workers on many machines, e.g. "
                                          "postgresql://user@host/db (default: a journal file in --out)."),
    workers: int = typer.Option(1, help="Worker processes on this machine."),
    objective: str = typer.Option("metric,params", help="metric,params | metric,flops (a Pareto front) or "
                                  "metric (one objective: hopeless trials are pruned)."),
    sampler: str = typer.Option("tpe", help="tpe (Bayesian) or random (as in the papers)."),
    epochs: int = typer.Option(3, help="Epochs of each trial's search."),
    batch_size: int = typer.Option(128, help="Batch size of each search."),
    study_name: str = typer.Option("archc", help="Name of the study in the storage."),
    seed: int = typer.Option(0, help="Seed of the sampler and of each search."),
    lam_range: str = typer.Option("1e-5,1e-1", help="λ's range LO,HI, drawn log-uniform (one number fixes it)."),
    lr_range: str = typer.Option("1e-4,1e-2", help="The learning rate's range LO,HI (one number fixes it)."),
    width_range: str = typer.Option("0.5,2.0", help="The width multiplier's range, when model() takes one "
                                    "(one number fixes it)."),
    target: Optional[str] = typer.Option(None, help="Steer every trial's search to this size, e.g. params=60k "
                                         "(a fraction is of each trial's starting model): the best metric at that budget."),
    target_reach: float = typer.Option(DEFAULT_REACH, help="With --target: the share of each trial's epochs by which "
                                       "the target is reached."),
    pick: str = typer.Option("last", help="The epoch each trial scores: last, or best (the best validation "
                             "epoch, as the papers' random searches)."),
) -> None:
    """Search λ, the learning rate and the width with optuna: the metric against the size."""
    out_dir = out_dir or Path("runs") / f"tune-{model_py.stem}"
    ranges = {name: parse_range(name, text) for name, text in
              (("lam_range", lam_range), ("lr_range", lr_range), ("width_range", width_range))}
    cfg = TuneConfig(model_file=str(model_py), out=str(out_dir), trials=trials, epochs=epochs, objective=objective,
                     sampler=sampler, storage=storage, study_name=study_name, workers=workers,
                     batch_size=batch_size, seed=seed, pick=pick, target=target,
                     target_reach=target_reach, **ranges)
    study = tune(cfg)
    summary = write_tune_report(study, cfg, dense_baseline(cfg))
    tested = summary["medians"]["test_metric"] is not None
    table = Table(title=f"Pareto front ({summary['size']}), dense: {summary['baseline']['metric']:.4f} at "
                        f"{summary['baseline'][summary['size']]:,}")
    for column in ("trial", "lam", "lr", "metric", *(["test"] if tested else []), summary["size"], "folder"):
        table.add_column(column)
    by_number = {r["trial"]: r for r in summary["trials"]}
    for row in (by_number[n] for n in summary["pareto"]):  # smallest first
        table.add_row(str(row["trial"]), f"{row['lam']:.3g}", f"{row['lr']:.3g}", f"{row['metric']:.4f}",
                      *([_number(row["test_metric"])] if tested else []), f"{row['size']:,}", str(row["folder"]))
    out.print(table)
    out.print(median_line(summary["medians"], summary["size"]))
    if len(summary["code_versions"]) > 1:
        out.print("[yellow]warning:[/yellow] " + code_line(summary["code_versions"]).replace("**", ""))
    out.print(f"wrote {out_dir}: pareto.png, pareto.md, trials.md, trials.json; "
              f"{len(summary['trials'])} trials in the study")


def parse_range(name: str, text: str) -> tuple[float, float]:
    """``"1e-5,1e-2"`` -> (1e-5, 1e-2); one number ``"1e-3"`` fixes the setting: (1e-3, 1e-3)."""
    flag = "--" + name.replace("_", "-")
    try:
        bounds = tuple(float(part) for part in text.split(","))
    except ValueError:
        bounds = ()
    if len(bounds) not in (1, 2):
        raise ConfigError(f"{flag} takes LO,HI or one number, got {text!r}\n  fix: pass {flag} 1e-5,1e-2")
    return (bounds[0], bounds[-1])


def _number(value) -> str:
    return "-" if value is None else f"{value:.4f}"  # a trial from before test_data() existed has none
