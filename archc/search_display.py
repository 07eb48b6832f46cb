"""The search's live display: a rich progress bar with loss, metric, parameters and widths."""
from __future__ import annotations

import time
from typing import Callable, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def widths_text(widths: dict[str, int], limit: int = 6) -> str:
    items = [f"{k}:{v}" for k, v in list(widths.items())[:limit]]
    more = len(widths) - limit
    return " ".join(items) + (f" +{more}" if more > 0 else "")


class SearchDisplay:
    """Progress over the batches of each epoch; silent when ``enabled`` is False."""

    def __init__(self, console: Optional[Console], enabled: bool = True) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.lines = enabled and not self.console.is_terminal  # logs and CI: one line per epoch
        enabled = enabled and not self.lines
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("metric {task.fields[metric]}"),
            TextColumn("params {task.fields[params]}"), TextColumn("[dim]{task.fields[widths]}"),
            TimeElapsedColumn(), console=self.console, transient=False, disable=not enabled,
        )
        self.task = None
        self.last_sizes = 0.0

    def __enter__(self) -> "SearchDisplay":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, batches: int, params: int, widths: dict) -> None:
        fields = dict(epoch=f"{epoch + 1}/{epochs}", loss=float("nan"), metric="-",
                      params=f"{params:,}", widths=widths_text(widths))
        self.task = self.progress.add_task("", total=batches, **fields)

    def step(self, loss: float, sizes: Callable[[], tuple[int, dict]]) -> None:
        """One training step. ``sizes()`` (the parameters and widths) is read only when the live
        bar redraws, at most every quarter second: it syncs every gate, so it stays off the hot path."""
        if not self.progress.live.is_started:
            return
        now = time.monotonic()
        if now - self.last_sizes < 0.25:
            self.progress.update(self.task, advance=1, loss=loss)
            return
        self.last_sizes = now
        params, widths = sizes()
        self.progress.update(self.task, advance=1, loss=loss, params=f"{params:,}", widths=widths_text(widths))

    def end_epoch(self, record: dict) -> None:
        if self.lines:
            self.console.print(
                f"epoch {record['epoch']}: loss {record['train_loss']:.4f}  metric {record['val_metric']:.4f}  "
                f"params {record['params']:,}  {record['seconds']:.2f}s  {widths_text(record['widths'])}",
                highlight=False, soft_wrap=True)
            return
        self.progress.update(self.task, metric=f"{record['val_metric']:.4f}", loss=record["train_loss"],
                             params=f"{record['params']:,}", widths=widths_text(record["widths"]))
