"""What ``archc tune`` writes: every trial as a table, the Pareto front as a table and a plot.

``DIR/trials.md`` and ``DIR/trials.json`` list every trial (settings, the epoch scored, metric,
test metric when the model file has ``test_data()``, size, state, folder) and the medians over
the complete trials; ``DIR/pareto.md`` the trials no other trial beats on both the metric and
the size; ``DIR/pareto.png`` plots the metric against the size, the front joined, the dense baseline
marked.

Example:
    >>> write_tune_report(study, cfg, baseline)      # after archc.tune.tune(cfg)
"""
from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path

from .checkpoint import atomic_write_bytes
from .plots import plot_pareto
from .tune import PICKS


def trial_rows(study, size_kind: str) -> list[dict]:
    """One row per trial: its number, state, settings, metric, size and folder."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        rows.append({"trial": t.number, "state": t.state.name, **t.params, "epoch": t.user_attrs.get("epoch"),
                     "metric": t.user_attrs.get("metric"), "test_metric": t.user_attrs.get("test_metric"),
                     "size": t.user_attrs.get(size_kind),
                     "target_met": t.user_attrs.get("target_met"), "folder": t.user_attrs.get("folder"),
                     "note": t.user_attrs.get("note", t.user_attrs.get("diverged", "")),  # "diverged": older studies
                     "widths": t.user_attrs.get("widths"), "code": t.user_attrs.get("code")})
    return rows


def code_versions(rows: list[dict]) -> dict:
    """The trial numbers that ran at each program (:func:`archc.provenance.code_label`);
    ``"unrecorded"`` for trials of a study older than the record."""
    versions: dict = {}
    for r in rows:
        versions.setdefault(r["code"] or "unrecorded", []).append(r["trial"])
    return versions


def _numbers(numbers: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def code_line(versions: dict) -> str:
    """Which code the trials ran: one program, or a warning naming each and its trials."""
    if len(versions) <= 1:
        return f"Code: archc {next(iter(versions), 'unrecorded')} (every trial)."
    each = "; ".join(f"{label}: trials {_numbers(numbers)}" for label, numbers in versions.items())
    return (f"**The trials ran at {len(versions)} versions of archc** ({each}). The study was resumed "
            "after a change: figures of different versions may not compare. Compare within one, or "
            "start a new study (--study-name or --out).")


def medians(rows: list[dict]) -> dict:
    """The median metric, test metric and size over the complete trials: a random search's
    figure (ShrinkNets §3.2 compares methods by the median test accuracy over its runs). The
    test median is over the trials that have one (``tested``): a study resumed after
    ``test_data()`` was added holds trials without."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["metric"] is not None]
    tested = [r["test_metric"] for r in done if r["test_metric"] is not None]
    return {"trials": len(done), "tested": len(tested), "test_metric": statistics.median(tested) if tested else None,
            **{key: statistics.median(r[key] for r in done) if done else None for key in ("metric", "size")}}


def pareto_front(rows: list[dict]) -> list[dict]:
    """Complete rows that no other complete row beats on both metric (higher) and size (lower)."""
    done = [r for r in rows if r["state"] == "COMPLETE" and r["metric"] is not None]
    front = [r for r in done if not any(o["metric"] >= r["metric"] and o["size"] <= r["size"]
                                        and (o["metric"], -o["size"]) != (r["metric"], -r["size"]) for o in done)]
    return sorted(front, key=lambda r: r["size"])


def _table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def median_line(m: dict, size_kind: str) -> str:
    """``medians(rows)`` as one sentence (trials.md and the CLI's summary)."""
    if not m["trials"]:
        return "No trial has completed yet."
    test = ""
    if m["test_metric"] is not None:
        test = f", test {m['test_metric']:.4f}" + (f" (of the {m['tested']} with one)" if m["tested"] < m["trials"] else "")
    return (f"Medians over the {m['trials']} complete trials: metric {m['metric']:.4f}{test}, "
            f"{m['size']:,.0f} {size_kind}.")


def _steered(target) -> str:
    return f", steered to {target} (archc search --target)," if target else ""


def write_tune_report(study, cfg, baseline: dict) -> dict:
    """Write trials.json/.md, pareto.md and pareto.png into ``cfg.out``; return the summary."""
    size_kind = cfg.size_kind or "params"
    rows = trial_rows(study, size_kind)
    front = pareto_front(rows)
    out = Path(cfg.out)
    tested = any(r["test_metric"] is not None for r in rows)
    columns = ["trial", "state", *sorted({k for r in rows for k in ("lam", "lr", "width_multiplier") if k in r}),
               "epoch", "metric", *(["test_metric"] if tested else []), "size",
               *(["target_met"] if cfg.target else []), "folder", "note"]
    versions = code_versions(rows)
    if len(versions) > 1:
        columns.insert(columns.index("folder"), "code")
    summary = {"settings": asdict(cfg), "objective": cfg.objective, "size": size_kind, "pick": cfg.pick, "baseline": baseline,
               "medians": medians(rows), "trials": rows, "pareto": [r["trial"] for r in front],
               "code_versions": versions}
    atomic_write_bytes(out / "trials.json", lambda f: f.write(json.dumps(summary, indent=2).encode()))
    header = (f"# archc tune: {cfg.model_file}\n\nObjective: {cfg.objective} ({cfg.sampler} sampler); each trial "
              f"searched {cfg.epochs} epochs{_steered(cfg.target)} and its {PICKS[cfg.pick][1]} was compacted. "
              f"Size: {size_kind}.\n\n"
              f"Dense baseline (no penalty, lr {baseline['lr']:.3g}"
              + (f", archc {baseline['code']}" if baseline.get("code") else "") + f"): metric {baseline['metric']:.4f}"
              + (f", test {baseline['test_metric']:.4f}" if baseline.get("test_metric") is not None else "")
              + f", {baseline[size_kind]:,} {size_kind}.\n\n{median_line(summary['medians'], size_kind)}\n\n"
              f"{code_line(versions)}\n\n")
    atomic_write_bytes(out / "trials.md", lambda f: f.write((header + _table(rows, columns) + "\n").encode()))
    pareto = header + "## Pareto front\n\n" + _table(front, columns) + "\n\n![pareto](pareto.png)\n"
    atomic_write_bytes(out / "pareto.md", lambda f: f.write(pareto.encode()))
    plot_pareto(rows, front, baseline, size_kind, out / "pareto.png")
    return summary
