"""Rich rendering of an ``archc.Report`` for the terminal.

Example::

    from rich.console import Console
    render_report(archc.report(gm), Console())
"""
from __future__ import annotations

from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

MAX_LAYERS = 3


def human(n: int) -> str:
    """``1234567`` -> ``"1.23M"``; small numbers stay exact. Example: ``human(2048) == "2.05K"``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def layer_list(layers: Sequence[str], limit: int = MAX_LAYERS) -> str:
    """The first ``limit`` names, then ``+N more``. Example: ``layer_list(["a", "b"]) == "a, b"``."""
    shown = ", ".join(layers[:limit])
    extra = len(layers) - limit
    return f"{shown}, +{extra} more" if extra > 0 else shown


def summary_line(rep: Any) -> str:
    """One line: params, FLOPs, groups, prunable channels out of all grouped channels."""
    total = sum(g.size for g in rep.groups)
    prunable = sum(g.size for g in rep.groups if g.prunable)
    flops = human(rep.flops) if rep.flops else "unknown"
    pct = f" ({100 * prunable / total:.0f}%)" if total else ""
    return (f"[bold]{human(rep.params)}[/bold] params, [bold]{flops}[/bold] FLOPs, "
            f"[bold]{len(rep.groups)}[/bold] channel groups, "
            f"[bold]{prunable}[/bold] / {total} channels prunable{pct}")


def groups_table(rep: Any) -> Table:
    """A table of channel groups: id, size, prunable, layers, reason."""
    table = Table(title="Channel groups", title_justify="left", header_style="bold")
    table.add_column("id", justify="right")
    table.add_column("size", justify="right")
    table.add_column("prunable", justify="center")
    table.add_column("layers")
    table.add_column("reason")
    for g in rep.groups:
        mark = "[green]✓[/green]" if g.prunable else "[red]✗[/red]"
        table.add_row(str(g.id), str(g.size), mark, escape(layer_list(list(g.layers))),
                      escape(g.reason or ""))
    return table


def unprunable_table(rep: Any) -> Table:
    """A table of what blocks pruning: node (or op) and reason."""
    table = Table(title="Why channels are not prunable", title_justify="left", header_style="bold")
    table.add_column("node / op")
    table.add_column("reason")
    for where, reason in rep.unprunable:
        table.add_row(escape(str(where)), escape(str(reason)))
    return table


def render_report(rep: Any, console: Console) -> None:
    """Print the summary line, the groups table and (if any) the unprunable table."""
    console.print(summary_line(rep))
    if rep.groups:
        console.print(groups_table(rep))
    if rep.unprunable:
        console.print(unprunable_table(rep))


def widths_table(before: dict, after: dict, title: str = "Widths") -> Table:
    """Layer | before | after | kept, one row per layer."""
    table = Table(title=title)
    for col, justify in (("layer", "left"), ("before", "right"), ("after", "right"), ("kept", "right")):
        table.add_column(col, justify=justify)
    for name, b in before.items():
        a = after.get(name, b)
        table.add_row(escape(str(name)), str(b), str(a), f"{a / b:.0%}" if b else "-")
    return table


def compact_summary(report: dict, out_dir: Any) -> str:
    """Params and FLOPs before/after, the metric, and where the files went."""
    p0, p1 = report["params_before"], report["params_after"]
    f0, f1 = report["flops_before"], report["flops_after"]
    return (f"params {human(p0)} -> [bold]{human(p1)}[/bold] ({p1 / max(p0, 1):.0%}), "
            f"FLOPs {human(f0)} -> [bold]{human(f1)}[/bold] ({f1 / max(f0, 1):.0%}), "
            f"validation metric [bold]{report['metric']:.4f}[/bold]"
            + (f", test metric [bold]{report['test_metric']:.4f}[/bold]" if report.get("test_metric") is not None
               else "")
            + f"\nwrote {escape(str(out_dir))}: model.py, weights.safetensors, model.onnx, report.json, "
            "report.md, widths.png, width_history.png")
