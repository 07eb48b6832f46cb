"""Charts of layer widths: before vs after compaction, and over a search's epochs.

matplotlib runs with the Agg backend (no display needed); every chart is written atomically
(temp file, then ``os.replace``) and the function returns the path.

Example::

    plot_widths([{"name": "layer1.0.conv1", "width_before": 64, "width_after": 40}], "widths.png")
    plot_width_history([{"epoch": 0, "widths": {"conv1": 64}, "params": 1e6}], "history.png")
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Union

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

PathLike = Union[str, os.PathLike]
_MAX_NAME = 28
_MAX_LEGEND = 12


def _short(name: str, limit: int = _MAX_NAME) -> str:
    """``name`` cut to ``limit`` characters, keeping its informative end (``…0.conv1``)."""
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def _save(fig, path: PathLike) -> Path:
    """Save ``fig`` atomically to ``path`` (format from its suffix, PNG by default) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex}{path.suffix or '.png'}")
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", format=(path.suffix[1:] or "png"))
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def plot_widths(layers: list[dict], path: PathLike) -> Path:
    """Horizontal grouped bars of ``width_before`` vs ``width_after`` per layer; returns ``path``.

    The figure grows with the layer count, so 50+ layers stay readable; long names are cut.
    Example: ``plot_widths([{"name": "fc", "width_before": 128, "width_after": 32}], "w.png")``.
    """
    names = [_short(str(layer["name"])) for layer in layers]
    before = [float(layer["width_before"]) for layer in layers]
    after = [float(layer["width_after"]) for layer in layers]
    n = max(len(layers), 1)
    fig, ax = plt.subplots(figsize=(8, 1.5 + 0.28 * n))
    rows = range(len(layers))
    ax.barh([r - 0.2 for r in rows], before, height=0.4, color="#b0b7c3", label="before")
    ax.barh([r + 0.2 for r in rows], after, height=0.4, color="#2a6fdb", label="after")
    ax.set_yticks(list(rows), names, fontsize=8 if n <= 60 else 6)
    ax.set_ylim(n - 0.5, -0.5)  # first layer on top
    ax.set_xlabel("width (channels)")
    kept = sum(after) / sum(before) if sum(before) else 1.0
    ax.set_title(f"Layer widths: {len(layers)} layers, {kept:.0%} of channels kept")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_width_history(log: list[dict], path: PathLike) -> Path:
    """Width of every layer over the epochs (top) and total parameters (bottom); returns ``path``.

    ``log`` holds search records ``{"epoch", "widths": {layer: width}, "params"}``; the legend
    is drawn only for at most 12 layers.
    Example: ``plot_width_history([{"epoch": 0, "widths": {"fc": 64}, "params": 9e3}], "h.png")``.
    """
    records = sorted(log, key=lambda r: r["epoch"])
    epochs = [r["epoch"] for r in records]
    layers = list(dict.fromkeys(name for r in records for name in r.get("widths", {})))
    few = len(layers) <= _MAX_LEGEND
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for name in layers:
        top.plot(epochs, [r.get("widths", {}).get(name, float("nan")) for r in records],
                 marker="." if len(epochs) < 30 else None, linewidth=1.2 if few else 0.8,
                 alpha=1.0 if few else 0.7, label=_short(name))
    top.set_ylabel("width (channels)")
    top.set_title(f"Layer widths during search ({len(layers)} layers)")
    top.grid(alpha=0.3)
    if layers and few:
        top.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    bottom.plot(epochs, [r.get("params", float("nan")) for r in records], color="black", marker=".")
    bottom.set_ylabel("parameters")
    bottom.set_xlabel("epoch")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.grid(alpha=0.3)
    bottom.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    return _save(fig, path)


def plot_pareto(rows: list[dict], front: list[dict], baseline: dict, size_kind: str, path: PathLike) -> Path:
    """Metric against size for every complete trial of ``archc tune``, the Pareto ``front``
    joined and the dense ``baseline`` starred (log size axis); returns ``path``."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["metric"] is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["size"] for r in done], [r["metric"] for r in done], color="0.6", label="trials")
    ax.plot([r["size"] for r in front], [r["metric"] for r in front], "o-", color="C0", label="Pareto front")
    ax.scatter([baseline[size_kind]], [baseline["metric"]], marker="*", s=180, color="C3", label="dense baseline")
    ax.set_xlabel(f"{size_kind} of the compact model")
    ax.set_ylabel("validation metric")
    ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
