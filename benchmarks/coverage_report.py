"""The coverage table: the summary per library and the markdown report of ``coverage.py``'s rows.

Example:
    >>> from coverage_report import write
    >>> write(payload, Path("benchmarks/results/coverage.json"))   # .json and .md
"""
from __future__ import annotations

import json
import os
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Optional

EXACT = 1e-6
ROUNDING = 1e-4  # a "wrong model" below this is float32 rounding (folded weights, float32 constants)
FRACTION = 0.3


def is_exact(err: Any, dtype: str) -> bool:
    """Whether a comparison error counts as exact: below EXACT in float64, ROUNDING in float32."""
    return isinstance(err, float) and err < (EXACT if dtype == "float64" else ROUNDING)


def _pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100 * n / d:.0f}%)" if d else "-"


def _med(xs: list) -> Optional[float]:
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def cause(row: dict) -> Optional[str]:
    """Where archc failed this model, for grouping: ``stage: first line`` (None when all is well)."""
    if row.get("skipped"):
        return None
    err = row.get("error")
    if err:
        return f"{err.get('stage')}: {err.get('first_line')}"
    if row.get("compact") == "ok" and not row.get("exact"):
        bad = [e for e, d in zip(row.get("exact_err", []), row.get("exact_dtype", [])) if not is_exact(e, d)]
        crash = next((e for e in bad if isinstance(e, str)), None)
        if crash:
            return f"not exact: {crash}"
        return f"not exact ({row.get('wrong_kind')}: error < {ROUNDING:g}, also when compacted in float64)"
    return None


def summary(rows: list[dict], tp: bool) -> dict:
    out = {}
    for lib in ("timm", "torchvision", "transformers", "all"):
        rs = [r for r in rows if lib in ("all", r["library"])]
        if not rs:
            continue
        run = [r for r in rs if not r.get("skipped")]
        s = {
            "models": len(rs), "skipped": len(rs) - len(run), "tested": len(run),
            "captured": sum(bool(r.get("captured")) for r in run),
            "graph_matches_model": sum(all(is_exact(e, d) for e, d in zip(r.get("graph_err", [None]),
                                                                     r.get("graph_dtype", ["float64"])))
                                       for r in run if r.get("captured")),
            "compact_ok": sum(r.get("compact") == "ok" for r in run),
            "refused": sum(r.get("compact") == "refused" for r in run),
            "exact": sum(bool(r.get("exact")) for r in run),
            "wrong_model": sum(bool(r.get("wrong_model")) for r in run),
            "wrong_models": [r["id"] for r in run if r.get("wrong_model")],
            "wrong_rounding_level": sum(r.get("wrong_kind") == "rounding-level" for r in run),
            "float32_rounding": sum(r.get("float32_rounding") is not None for r in run),
            "onnx_ok": sum(r.get("onnx") == "ok" for r in run),
            "timeouts": sum(bool(r.get("archc_timeout")) for r in run),
            "median_param_ratio": _med([r.get("param_ratio") for r in run if r.get("exact")]),
            "median_prunable_share": _med([r["prunable_channels"] / r["total_channels"] for r in run
                                           if r.get("total_channels")]),
            "median_compile_s": _med([r.get("compile_s") for r in run]),
        }
        fams = defaultdict(list)
        for r in run:
            fams[r["family"]].append(bool(r.get("exact")))
        s["families"] = len(fams)
        s["families_exact"] = sum(all(v) for v in fams.values())
        if tp:
            s["tp_ok"] = sum(r.get("tp_status") == "ok" for r in run)
            s["tp_runs"] = sum(bool(r.get("tp_runs")) for r in run)
            s["tp_runs_same_shape"] = sum(bool(r.get("tp_runs")) and bool(r.get("tp_same_shape")) for r in run)
            s["tp_timeouts"] = sum(r.get("tp_status") == "timeout" for r in run)
            s["tp_median_param_ratio"] = _med([r.get("tp_param_ratio") for r in run if r.get("tp_runs")])
            s["tp_median_s"] = _med([r.get("tp_s") for r in run if r.get("tp_status") == "ok"])
        out[lib] = s
    return out


def _f(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _err_cell(errs: list, dtypes: Optional[list] = None) -> str:
    if not errs:
        return "-"
    nums = [e for e in errs if isinstance(e, float)]
    bad = [e for e in errs if not isinstance(e, float)]
    f32 = " (float32)" if dtypes and "float32" in dtypes else ""
    return (f"{max(nums):.1e}" if nums else "") + (" + crash" if bad else "") + f32


def _params_cell(n: Optional[int]) -> str:
    return "-" if not n else (f"{n / 1e6:.1f}" if n >= 1e6 else f"{n / 1e6:.3f}")


def _errs(errs: Any) -> str:
    if not isinstance(errs, list):
        return str(errs)
    return ", ".join(e if isinstance(e, str) else format(e, ".2g") for e in errs)


def markdown(payload: dict) -> str:
    rows, tp = payload["rows"], payload["settings"]["torch_pruning"]
    summ = payload["summary"]
    m = payload["machine"]
    lines = [
        "# archc model coverage", "",
        f"Command: `{payload['command']}`  ",
        f"Date: {payload['date']}; wall time {payload.get('total_wall_s', 0) / 60:.1f} min; "
        f"{payload['settings']['jobs']} model(s) at a time, 1 torch thread each  ",
        f"Machine: {m.get('cpu', '?')} ({m['cpu_count']} CPUs), {m['platform']}, Python {m['python']}; "
        f"torch {m['torch']}, timm {m.get('timm')}, transformers {m.get('transformers')}, "
        f"torchvision {m.get('torchvision')}, torch-pruning {m.get('torch_pruning')}, onnxruntime "
        f"{m.get('onnxruntime')}; archc at {m.get('archc_commit')}; load average "
        f"{m.get('loadavg_start')} -> {m.get('loadavg_end')}  ",
        *[f"Resumed {r['date']} (`{r['command']}`), {r['kept_rows']} rows kept from before  "
          for r in payload.get("resumed", [])],
        "archc code measured (commit, +dirty = uncommitted archc/ changes), rows: "
        + ", ".join(f"{k} x{v}" for k, v in Counter(r.get("archc_commit", "?") for r in rows
                                                    if not r.get("skipped")).most_common()), "",
        f"Per model: trace as the user calls it; insert_filters; close {FRACTION:.0%} of every gate's channels "
        "(seed 0); compact; compare compact vs gated in float64 at three input shapes "
        f"(exact = max per-channel relative error < {EXACT:g} at all of them; where the float32 compact "
        "model misses that by float32 rounding only (< 1e-4), the gated model cast to float64 is compacted and "
        "compared instead, so that folding adds no rounding: exact if that one is; such rows are counted "
        "apart as `float32 rounding`). "
        "**wrong model** = compact returned a model that is not exact (or crashes) at some shape; "
        "`refused` = compact raised CompactionError (its self-check caught it). "
        "Prunable share = channels of prunable groups / channels of all groups (archc.report). "
        "Param ratio = compact / original parameters (median over exact models). "
        "Torch-Pruning: MetaPruner, MagnitudeImportance(p=2), pruning_ratio 0.3, final classifier "
        "ignored, on a fresh copy; `runs` = the pruned model still runs on the example; "
        "`same shape` = and its outputs keep their shapes.", "",
        "## Summary", "",
        "| library | models | skipped | captured | graph = model | compact ok | refused | exact (3 shapes) "
        "| (of which float32 rounding) "
        "| **wrong model** | ONNX ok | timeouts | families exact | median prunable share | median param ratio "
        "| median compile s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for lib, s in summ.items():
        t = s["tested"]
        lines.append(
            f"| {lib} | {s['models']} | {s['skipped']} | {_pct(s['captured'], t)} | "
            f"{_pct(s['graph_matches_model'], s['captured'])} | {_pct(s['compact_ok'], t)} | {s['refused']} | "
            f"{_pct(s['exact'], t)} | {s['float32_rounding']} | **{s['wrong_model']}** ({s['wrong_rounding_level']} rounding-level) | {_pct(s['onnx_ok'], t)} | {s['timeouts']} | "
            f"{_pct(s['families_exact'], s['families'])} | {_f(s['median_prunable_share'])} | "
            f"{_f(s['median_param_ratio'])} | {_f(s['median_compile_s'], '.1f')} |")
    if tp:
        lines += ["", "Torch-Pruning on the same models:", "",
                  "| library | tested | step() ok | pruned model runs | runs, same output shapes | timeouts "
                  "| median param ratio (runs) | median s |",
                  "|---|--:|--:|--:|--:|--:|--:|--:|"]
        for lib, s in summ.items():
            t = s["tested"]
            lines.append(f"| {lib} | {t} | {_pct(s['tp_ok'], t)} | {_pct(s['tp_runs'], t)} | "
                         f"{_pct(s['tp_runs_same_shape'], t)} | {s['tp_timeouts']} | "
                         f"{_f(s['tp_median_param_ratio'])} | {_f(s['tp_median_s'], '.1f')} |")
    lines += ["", "Targets: >=95% of timm families and >=90% of transformers model types captured and exact: "
              + ", ".join(f"{lib} {_pct(summ[lib]['families_exact'], summ[lib]['families'])}"
                          for lib in ("timm", "transformers") if lib in summ), ""]
    wrong = [r for r in rows if r.get("wrong_model")]
    lines += ["## Wrong models (compact returned a model that is not exact)", ""]
    lines += [f"Rounding-level = largest error under {ROUNDING:g}: float32 rounding left in the float64 comparison "
              "(folded float32 weights, float32 constants in the graph), not a wrong rewrite; `large` and `crash` "
              "are real.", ""]
    lines += [f"* `{r['id']}`: {cause(r)} (errors per shape: {_errs(r.get('exact_err'))}; "
              f"compacted in float64: {_errs(r.get('exact_err_f64'))})"
              for r in sorted(wrong, key=lambda r: r.get('wrong_kind') == 'rounding-level')] or ["None."]
    rounded = [r for r in rows if r.get("float32_rounding") is not None]
    lines += ["", f"## Exact rewrites whose float32 compact model is off by rounding (> {EXACT:g})", "",
              "Compacted again from the gated model cast to float64, these match it; the float32 error comes "
              "from storing folded weights (BatchNorm, affine, gate folds) in float32.", ""]
    lines += [f"* `{r['id']}`: float32 {_errs(r.get('exact_err'))}; compacted in float64 "
              f"{_errs(r.get('exact_err_f64'))}" for r in rounded] or ["None."]
    groups = defaultdict(list)
    for r in rows:
        c = cause(r)
        if c:
            groups[c].append(r["id"])
    lines += ["", "## archc failures by cause", ""]
    for c, ids in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"* **{len(ids)}** -- `{c}`: {', '.join(ids)}")
    if not groups:
        lines.append("None.")
    ogroups = defaultdict(list)
    for r in rows:
        if r.get("compact") == "ok" and r.get("onnx") != "ok":
            ogroups[f"{r.get('onnx')}: {r.get('onnx_error', '')}"].append(r["id"])
    lines += ["", "## ONNX export failures of compact models by cause", ""]
    for c, ids in sorted(ogroups.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"* **{len(ids)}** -- `{c[:250]}`: {', '.join(ids)}")
    if not ogroups:
        lines.append("None.")
    if tp:
        tgroups = defaultdict(list)
        for r in rows:
            if r.get("skipped"):
                continue
            if r.get("tp_status") not in ("ok", None):
                tgroups[f"{r.get('tp_status')}: {r.get('tp_error', '')}"].append(r["id"])
            elif r.get("tp_status") == "ok" and not r.get("tp_runs"):
                tgroups[f"pruned model fails: {r.get('tp_run_error', '')}"].append(r["id"])
        lines += ["", "## Torch-Pruning failures by cause", ""]
        for c, ids in sorted(tgroups.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"* **{len(ids)}** -- `{c[:200]}`: {', '.join(ids)}")
    lines += ["", "## Every model", "",
              "| library | family | model | input | params M | captured | nodes | trace s | graph err | prunable "
              "| compact | exact (max err) | param ratio | ONNX | compile s"
              + (" | TP | TP ratio | TP s" if tp else "") + " | note |",
              "|---|---|---|---|--:|---|--:|--:|--:|--:|---|---|--:|---|--:" + ("|---|--:|--:" if tp else "") + "|---|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['library']} | {r['family']} | {r['model']} | - | {_params_cell(r.get('params'))} "
                         f"| - | | | | | | | | | " + ("| | | " if tp else "") + f"| {r['skipped']} |")
            continue
        inp = r.get("input") or "-"
        if isinstance(inp, list):
            inp = "x".join(map(str, inp))
        share = (f"{r['prunable_channels'] / r['total_channels']:.0%}" if r.get("total_channels") else "-")
        wrong = "**WRONG, rounding-level**" if r.get("wrong_kind") == "rounding-level" else "**WRONG**"
        exact = ("yes" if r.get("exact") else (wrong if r.get("wrong_model") else "no")) \
            if r.get("compact") == "ok" else "-"
        note = cause(r) or ""
        if r.get("kwargs"):
            note = f"built with {r['kwargs']}; " + note
        if tp:
            tps = r.get("tp_status", "-")
            if tps == "ok":
                tps = "ok" if r.get("tp_runs") and r.get("tp_same_shape") else (
                    "ok, shape changed" if r.get("tp_runs") else "ok, pruned model fails")
        cells = [r["library"], r["family"], r["model"], inp, _params_cell(r.get("params")),
                 "yes" if r.get("captured") else "**no**", str(r.get("nodes", "-")), _f(r.get("trace_s"), ".1f"),
                 _err_cell(r.get("graph_err"), r.get("graph_dtype")), share, r.get("compact", "-"),
                 f"{exact} ({_err_cell(r.get('exact_err'), r.get('exact_dtype'))})" if r.get("compact") == "ok" else "-",
                 _f(r.get("param_ratio")), r.get("onnx", "-"), _f(r.get("compile_s"), ".1f")]
        if tp:
            cells += [tps, _f(r.get("tp_param_ratio")), _f(r.get("tp_s"), ".1f")]
        cells.append(note.replace("|", "\\|")[:160])
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write(payload: dict, out: Path) -> None:
    payload["summary"] = summary(payload["rows"], payload["settings"]["torch_pruning"])
    try:
        payload["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, out)
    out.with_suffix(".md").write_text(markdown(payload))


def merge_rows(run: dict, table_path: Path, command: str, keep_tp: bool) -> None:
    """Put ``run``'s rows into the table at ``table_path`` (rows of the same id replaced); with
    ``keep_tp`` each replaced row keeps the table's Torch-Pruning columns (``tp_*``)."""
    table = json.loads(table_path.read_text())
    new = {r["id"]: r for r in run["rows"]}
    for i, old in enumerate(table["rows"]):
        row = new.pop(old["id"], None)
        if row is None:
            continue
        if keep_tp:
            row.update({k: v for k, v in old.items() if k.startswith("tp_")})
        table["rows"][i] = row
    table["rows"] += list(new.values())
    table.setdefault("resumed", []).append({
        "date": run["date"], "command": f"{command} (rows merged into this file"
        + ("; Torch-Pruning columns kept from before)" if keep_tp else ")"),
        "kept_rows": len(table["rows"]) - len(run["rows"]), "machine": run["machine"]})
    write(table, table_path)
