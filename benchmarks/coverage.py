"""Model coverage: does archc capture, gate, compact and export real models exactly? And Torch-Pruning?

For every model of ``benchmarks/coverage_models.py`` (one per timm architecture family, every
torchvision classification/segmentation model, ~45 transformers model types from tiny
configs; all built from scratch, no weights), one row:

* **capture** -- ``archc.trace`` as a user calls the model (``args`` or ``kwargs``): ok or the
  error's first line; graph nodes; seconds. ``graph err``: the captured graph against the
  model itself at the three input shapes below (float64), as a check of the capture.
* **prunable share** -- ``archc.report(gm)``: channels of prunable groups / channels of all
  groups (``Report.prunable_channels / Report.total_channels``); the gate sizes of
  ``insert_filters`` are recorded beside it (``gate_channels``).
* **compact** -- ``insert_filters``, 30% of every gate's channels closed at random (seed 0, as
  tests/conftest.py::kill_channels), ``archc.compact``: ``ok``, ``refused`` (it raised
  CompactionError: its own verification failed, nothing wrong was returned) or ``error``.
* **exact** -- the compact model against the gated one, float64, at the example shape and at
  the larger and smaller shapes of ``shape_variants`` (batch 3/6/2 for images; batch and
  sequence length for text): every ``max_relative_error < 1e-6`` (per-channel relative, see
  archc/verify.py). A crash of the compact model counts as not exact. Where the gated graph
  itself cannot run in float64 (it casts to float32, e.g. CLIP's ``pixel_values.to(weight.dtype)``)
  the comparison is made in float32 with ``< 1e-4`` (compact's own rtol), and the row says so.
  **wrong model** = compact returned a model that is NOT exact at some shape (or crashes where
  the gated model runs): the failure that matters most, listed apart, with its kind: ``crash``,
  ``large`` (error >= 1e-4) or ``rounding-level`` (1e-6 <= error < 1e-4: float32 rounding left in
  the float64 run). A rounding-level row is judged again with no float32 in the way: the gated
  model cast to float64 is compacted (folding in float64) and compared; if that compaction is
  exact, the rewrite is, and the row counts as exact, with its float32 error kept
  (``float32_rounding``, listed in its own section).
* **params** -- parameters of the compact model / of the original model.
* **ONNX** -- ``archc.export_onnx(small, example)`` succeeds (its own onnxruntime check included).
* **compile s** -- trace + insert_filters + compact (compact's verification included).
* **Torch-Pruning** -- its documented default on a fresh copy of the same model:
  ``MetaPruner(model, example, importance=MagnitudeImportance(p=2), pruning_ratio=0.3,
  ignored_layers=[final classifier])`` + ``step()``: ok (or the error), parameter ratio,
  whether the pruned model still runs on the example and keeps its output shapes, seconds
  (pruner construction + step). transformers base models have no classifier: nothing is ignored.

Each model runs in its own subprocess (``torch.set_num_threads(1)``), ``--jobs`` at a time,
archc under ``--timeout`` seconds and Torch-Pruning under ``--tp-timeout`` (``signal.alarm``
inside, a hard kill of the process past both). The two parts of one model run one after the
other in that subprocess, so seconds are comparable; with ``--jobs 2`` on 2 cores two models
share the machine, and the machine may be shared with other work (load average recorded).

Output: ``--out`` (JSON: machine, versions, command, date, every row) and a Markdown table
beside it (``.md``) with the summary on top. Both are rewritten after every model.

Rerun (from the repository root; ~60-90 minutes on 2 cores with --jobs 2):
    python benchmarks/coverage.py
    python benchmarks/coverage.py --only transformers --no-torch-pruning   # ~3 minutes
    python benchmarks/coverage.py --models timm:resnet10t,transformers:llama --out /tmp/c.json
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import coverage_models as cm  # noqa: E402

cm.vision_imports()

RESULTS = REPO / "benchmarks" / "results"
EXACT = 1e-6
ROUNDING = 1e-4  # a "wrong model" below this is float32 rounding (folded weights, float32 constants)
FRACTION = 0.3


# ------------------------------------------------------------------------------------ worker

class _Timeout(BaseException):
    """Raised by SIGALRM; a BaseException so that no ``except Exception`` in a library eats it."""


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout()


def first_line(exc: BaseException) -> str:
    """``Type: first line`` (with the next line when the first ends in ``:``), temp paths removed."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    text = re.sub(r"/tmp/\w+/(\.?model\.onnx[\w.]*)", r"\1", text)
    return f"{type(exc).__name__}: {text}"[:300]


def error_record(stage: str, exc: BaseException) -> dict:
    return {"stage": stage, "type": type(exc).__name__, "first_line": first_line(exc),
            "message": str(exc)[:2000], "traceback": "".join(traceback.format_exception(exc))[-4000:]}


def _tensors(args: tuple, kwargs: dict) -> tuple:
    import torch
    import torch.utils._pytree as pytree

    return tuple(t for t in pytree.tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))


def _tensor_outputs(module, n_args: int, names: list):
    """``module`` as a module taking the graph's positional inputs (args, then kwargs by name) and
    returning only the tensors of its output, flattened (a transformers cache object is not a
    tensor and the graph does not return it)."""
    import torch
    import torch.utils._pytree as pytree

    class Call(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, *xs):
            out = self.inner(*xs[:n_args], **dict(zip(names, xs[n_args:])))
            return tuple(t for t in pytree.tree_flatten(out)[0] if isinstance(t, torch.Tensor))

    return Call()


def _non_tensor_outputs(model, args: tuple, kwargs: dict) -> list[str]:
    import torch
    import torch.utils._pytree as pytree

    with torch.no_grad():
        leaves = pytree.tree_flatten(model(*args, **kwargs))[0]
    return [type(x).__name__ for x in leaves if not isinstance(x, torch.Tensor) and x is not None]


def _ok(err: Any, dtype: str) -> bool:
    return isinstance(err, float) and err < (EXACT if dtype == "float64" else ROUNDING)


def compare(reference, candidate, xs: tuple, who: str = "compact model",
            float32_fallback: bool = False) -> tuple[Any, str, Optional[str]]:
    """``(error or crash message, dtype, which one crashed)`` of ``candidate`` against ``reference``.

    In float64 (both models cast, archc.verify.max_relative_error), so that float32 rounding does
    not hide or fake a difference. A graph that casts to float32 itself (``x.to(torch.float32)``
    captured from ``pixel_values.to(self.weight.dtype)``) cannot run in float64: when the
    reference cannot either (or with ``float32_fallback``, when only the candidate cannot), the
    comparison is made in float32 (exact there: < ROUNDING, compact's own rtol).
    """
    import torch

    from archc.verify import max_relative_error

    try:
        return max_relative_error(reference, candidate, xs, dtype=torch.float64), "float64", None
    except Exception as exc64:  # noqa: BLE001 - which of the two crashed, and is it float64's fault?
        try:
            max_relative_error(reference, reference, xs, dtype=torch.float64)
            reference_runs_64 = True
        except Exception:  # noqa: BLE001
            reference_runs_64 = False
        if reference_runs_64 and not float32_fallback:
            return f"{who} crashed (float64): {first_line(exc64)}", "float64", "candidate"
        try:
            return max_relative_error(reference, candidate, xs), "float32", None
        except Exception as exc32:  # noqa: BLE001
            try:
                max_relative_error(reference, reference, xs)
            except Exception as ref_exc:  # noqa: BLE001
                return first_line(ref_exc), "float32", "reference"
            return f"{who} crashed: {first_line(exc32)}", "float32", "candidate"


def _judge_in_float64(rec: dict, gated, inputs: list) -> None:
    """A float32 compaction off by rounding only: the same compaction of the gated model cast to
    float64 (folding in float64) tells a rewrite that is exact (it matches to < EXACT) from one
    that is slightly wrong. An exact rewrite counts as exact; its float32 error stays recorded
    (``float32_rounding``)."""
    import copy

    import archc

    try:
        gated64 = copy.deepcopy(gated).double()
        small64 = archc.compact(gated64)
        rec["exact_err_f64"] = [compare(gated64, small64, xs)[0] for xs in inputs]
    except Exception as exc:  # noqa: BLE001
        rec["exact_err_f64"] = first_line(exc)
        return
    if all(_ok(e, "float64") for e in rec["exact_err_f64"]):
        rec.update(exact=True, wrong_model=False, float32_rounding=rec.pop("max_err"))
        rec.pop("wrong_kind")
        rec["max_err"] = max(rec["exact_err_f64"])


def run_archc(case: dict, rec: dict, save, state: dict) -> None:
    import torch

    import archc
    from archc.capture.inputs import random_inputs, shape_variants

    t = time.perf_counter()
    model, args, kwargs, info = cm.build(case)
    rec.update(info, params=cm.n_params(model), build_s=time.perf_counter() - t)
    save()
    t = time.perf_counter()
    try:
        gm = archc.trace(model, args=args, kwargs=kwargs)
    except Exception as exc:  # noqa: BLE001
        rec.update(captured=False, error=error_record("trace", exc))
        return
    rec.update(captured=True, trace_s=time.perf_counter() - t, nodes=len(gm.graph.nodes))
    example = _tensors(args, kwargs)
    variants = shape_variants(gm)
    inputs = [random_inputs(gm, seed=1, sizes=v) for v in variants]
    rec["shapes"] = [[list(x.shape) for x in xs] for xs in inputs]
    save()

    # the captured graph against the model (not part of the compile time)
    graph_err, graph_dtype = [], []
    want, got = _tensor_outputs(model, len(args), list(kwargs)), _tensor_outputs(gm, len(example), [])
    rec["non_tensor_outputs"] = _non_tensor_outputs(model, args, kwargs)  # not in the graph's outputs
    for xs in inputs:
        err, dtype, _ = compare(want, got, xs, who="graph", float32_fallback=True)
        graph_err.append(err)
        graph_dtype.append(dtype)
    rec["graph_dtype"] = graph_dtype
    rec["graph_err"] = graph_err
    try:
        rep = archc.report(gm)
        rec.update(prunable_channels=rep.prunable_channels, total_channels=rep.total_channels,
                   groups=len(rep.groups))
    except Exception as exc:  # noqa: BLE001
        rec["report_error"] = first_line(exc)
    save()

    t = time.perf_counter()
    try:
        gated = archc.passes.insert_filters(gm)
    except Exception as exc:  # noqa: BLE001
        rec.update(compact="error", error=error_record("insert_filters", exc))
        return
    rec["gate_s"] = time.perf_counter() - t
    gates = list(archc.filters(gated))
    rec.update(gates=len(gates), gate_channels=sum(g.size for g in gates))
    gen = torch.Generator().manual_seed(0)
    closed = 0
    for gate in gates:
        with torch.no_grad():
            mask = torch.rand(gate.size, generator=gen) < FRACTION
            gate.theta[mask] = 0.0
        closed += int(mask.sum())
    rec["closed_channels"] = closed
    t = time.perf_counter()
    try:
        small = archc.compact(gated)
    except archc.CompactionError as exc:
        rec.update(compact="refused", compact_s=time.perf_counter() - t, error=error_record("compact", exc))
        return
    except Exception as exc:  # noqa: BLE001
        rec.update(compact="error", compact_s=time.perf_counter() - t, error=error_record("compact", exc))
        return
    rec.update(compact="ok", compact_s=time.perf_counter() - t,
               compile_s=rec["trace_s"] + rec["gate_s"] + (time.perf_counter() - t),
               param_ratio=cm.n_params(small) / max(rec["params"], 1), compact_nodes=len(small.graph.nodes))
    save()

    errs, dtypes, reference_fails = [], [], 0
    for xs in inputs:
        err, dtype, failed = compare(gated, small, xs)
        reference_fails += failed == "reference"
        errs.append(err if failed != "reference" else f"gated model crashed: {err}")
        dtypes.append(dtype)
    rec.update(exact_err=errs, exact_dtype=dtypes)
    rec["max_err"] = max((e for e in errs if isinstance(e, float)), default=None)
    rec["exact"] = all(_ok(e, d) for e, d in zip(errs, dtypes))
    rec["wrong_model"] = not rec["exact"] and not reference_fails
    if rec["wrong_model"]:  # how wrong: float rounding left in a float64 run, or really different
        crash = any(isinstance(e, str) for e in errs)
        rec["wrong_kind"] = "crash" if crash else ("rounding-level" if rec["max_err"] < ROUNDING else "large")
        save()
        if rec["wrong_kind"] == "rounding-level":
            _judge_in_float64(rec, gated, inputs)
    save()

    state.update(small=small, example=example)


def run_onnx(case: dict, rec: dict, save, state: dict) -> None:  # noqa: ARG001
    import archc

    if "small" not in state:
        return
    t = time.perf_counter()
    rec["onnx"] = "running"
    save()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = archc.export_onnx(state["small"], state["example"], Path(tmp) / "model.onnx")
            rec.update(onnx="ok", onnx_rel_err=res.max_rel_err)
        except Exception as exc:  # noqa: BLE001
            rec.update(onnx="error", onnx_error=first_line(exc))
    rec["onnx_s"] = time.perf_counter() - t


def _outputs_shapes(out) -> list:
    import torch
    import torch.utils._pytree as pytree

    return [list(t.shape) for t in pytree.tree_flatten(out)[0] if isinstance(t, torch.Tensor)]


def run_torch_pruning(case: dict, rec: dict, save, state: dict) -> None:  # noqa: ARG001
    import torch
    import torch_pruning as tp

    model, args, kwargs, _ = cm.build(case)
    example = kwargs if kwargs else (args[0] if len(args) == 1 else args)
    before = cm.n_params(model)
    with torch.no_grad():
        want = _outputs_shapes(model(*args, **kwargs))
    rec["tp_status"] = "running"
    save()
    t = time.perf_counter()
    try:
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=FRACTION, ignored_layers=cm.classifier_layers(case, model))
        pruner.step()
    except Exception as exc:  # noqa: BLE001
        rec.update(tp_status="error", tp_s=time.perf_counter() - t, tp_error=first_line(exc))
        return
    rec.update(tp_status="ok", tp_s=time.perf_counter() - t, tp_param_ratio=cm.n_params(model) / max(before, 1))
    try:
        with torch.no_grad():
            got = _outputs_shapes(model.eval()(*args, **kwargs))
        rec.update(tp_runs=True, tp_same_shape=got == want)
    except Exception as exc:  # noqa: BLE001
        rec.update(tp_runs=False, tp_run_error=first_line(exc))


def worker(case: dict, out: Path, timeout: int, onnx_timeout: int, tp_timeout: int, torch_pruning: bool) -> None:
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rec: dict[str, Any] = {}

    def save() -> None:
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec, default=str))
        os.replace(tmp, out)

    signal.signal(signal.SIGALRM, _alarm)
    state: dict = {}
    parts = [("archc", run_archc, timeout), ("onnx", run_onnx, onnx_timeout)]
    parts += [("tp", run_torch_pruning, tp_timeout)] if torch_pruning else []
    for name, fn, limit in parts:
        signal.alarm(limit)
        t = time.perf_counter()
        try:
            fn(case, rec, save, state)
        except _Timeout:
            rec[f"{name}_timeout"] = limit
            if name == "archc":
                stage = ("exactness check" if rec.get("compact") == "ok" else "compact" if "gate_s" in rec
                         else "insert_filters/report" if rec.get("captured") else "build/trace")
                rec.setdefault("error", {"stage": "timeout", "type": "Timeout",
                                         "first_line": f"Timeout: over {limit} s in {stage}"})
            elif name == "onnx":
                rec.update(onnx="timeout", onnx_error=f"Timeout: export + check over {limit} s")
            else:
                rec["tp_status"] = "timeout"
                rec["tp_error"] = f"over {limit} s"
        except Exception as exc:  # noqa: BLE001 - a build failure
            if name == "archc":
                rec["error"] = error_record("build", exc)
            elif name == "onnx":
                rec.update(onnx="error", onnx_error=first_line(exc))
            else:
                rec.update(tp_status="error", tp_error=first_line(exc))
        finally:
            signal.alarm(0)
        rec[f"{name}_wall_s"] = time.perf_counter() - t
        save()


# ------------------------------------------------------------------------------- orchestrator

def versions() -> dict:
    import platform

    import torch
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__}
    try:
        info["cpu"] = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                           if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    for mod in ("timm", "transformers", "torchvision", "torch_pruning", "onnxruntime", "onnx"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001
            info[mod] = None
    try:
        from importlib.metadata import version
        info["torch_pruning"] = version("torch-pruning")  # its __version__ lags the package's
    except Exception:  # noqa: BLE001
        pass
    info["archc_commit"] = archc_state()
    return info


def archc_state() -> str:
    """archc's commit, ``+dirty`` when archc/ or passes/ has uncommitted changes (archc is being
    edited while this runs: each row says which code it measured)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "archc", "passes"], cwd=REPO,
                               capture_output=True, text=True, timeout=30).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


def run_case(case: dict, args, tmpdir: Path) -> dict:
    row = {k: case[k] for k in ("id", "library", "family", "model") if k in case}
    for k in ("kind", "members", "kwargs", "full_params", "config"):
        if case.get(k):
            row[k] = case[k]
    if case.get("skip"):
        row.update(skipped=case["skip"], params=case.get("params"))
        return row
    row["archc_commit"] = archc_state()
    out = tmpdir / (case["id"].replace(":", "__").replace("/", "_") + ".json")
    log = out.with_suffix(".log")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(case), "--worker-out", str(out),
           "--timeout", str(args.timeout), "--onnx-timeout", str(args.onnx_timeout),
           "--tp-timeout", str(args.tp_timeout)]
    if args.no_torch_pruning:
        cmd.append("--no-torch-pruning")
    hard = args.timeout + args.onnx_timeout + (0 if args.no_torch_pruning else args.tp_timeout) + 120
    t = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
        try:
            rc = proc.wait(timeout=hard)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = "killed"
    row["wall_s"] = time.perf_counter() - t
    if out.exists():
        row.update(json.loads(out.read_text()))
    if rc != 0:
        row["worker_exit"] = rc
        tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        why = f"worker exit {rc}: {' | '.join(tail)[:300]}"
        if row.get("tp_status") == "running":
            row.update(tp_status="crashed", tp_error=why)
        elif row.get("onnx") == "running":
            row.update(onnx="crashed", onnx_error=why)
        elif "error" not in row and (row.get("compact") != "ok" or "exact" not in row):
            row["error"] = {"stage": "worker", "type": "WorkerDied", "first_line": why}
    return row


# --------------------------------------------------------------------------------- summaries

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
        bad = [e for e, d in zip(row.get("exact_err", []), row.get("exact_dtype", [])) if not _ok(e, d)]
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
            "graph_matches_model": sum(all(_ok(e, d) for e, d in zip(r.get("graph_err", [None]),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("timm", "torchvision", "transformers"))
    ap.add_argument("--limit", type=int, help="first N models of each library")
    ap.add_argument("--models", help="comma-separated ids (timm:resnet18, torchvision:resnet18, transformers:llama) "
                                     "or model names")
    ap.add_argument("--no-torch-pruning", action="store_true")
    ap.add_argument("--jobs", type=int, default=2, help="models at a time (each in a 1-thread subprocess)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds for archc's part of one model")
    ap.add_argument("--onnx-timeout", type=int, default=120, help="seconds for the ONNX export + check")
    ap.add_argument("--tp-timeout", type=int, default=60, help="seconds for Torch-Pruning's part")
    ap.add_argument("--out", type=Path, default=RESULTS / "coverage.json")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows already in --out (same ids) and run only the missing models")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(json.loads(args.worker), args.worker_out, args.timeout, args.onnx_timeout, args.tp_timeout,
               not args.no_torch_pruning)
        return

    started = time.perf_counter()
    libraries = (args.only,) if args.only else ("timm", "torchvision", "transformers")
    if args.models:
        want = [w.strip() for w in args.models.split(",") if w.strip()]
        if all(":" in w for w in want):  # build only the lists these ids come from
            libraries = tuple(lib for lib in libraries if any(w.split(":")[0] == lib for w in want))
        cases = [c for c in cm.all_cases(libraries) if c["id"] in want or c["model"] in want]
    else:
        cases = cm.all_cases(libraries)
    if args.limit:
        per = Counter()
        kept = []
        for c in cases:
            per[c["library"]] += 1
            if per[c["library"]] <= args.limit:
                kept.append(c)
        cases = kept
    machine = versions()
    try:
        machine["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    command = " ".join(["python", *sys.argv])
    now = _dt.datetime.now().isoformat(timespec="seconds")
    payload = {"experiment": "coverage", "command": command, "date": now, "machine": machine,
               "settings": {"jobs": args.jobs, "threads_per_job": 1, "timeout_s": args.timeout,
                            "onnx_timeout_s": args.onnx_timeout, "tp_timeout_s": args.tp_timeout, "torch_pruning": not args.no_torch_pruning,
                            "fraction_closed": FRACTION, "exact_below": EXACT, "max_params": cm.MAX_PARAMS,
                            "image_batch": cm.BATCH},
               "rows": []}
    order = {c["id"]: i for i, c in enumerate(cases)}
    previous_s = 0.0
    if args.resume and args.out.exists():  # keep the rows already there, run the others
        old = json.loads(args.out.read_text())
        payload["rows"] = [r for r in old.get("rows", []) if r["id"] in order]
        done = {r["id"] for r in payload["rows"]}
        cases = [c for c in cases if c["id"] not in done]
        previous_s = old.get("total_wall_s", 0.0)
        payload.update(command=old["command"], date=old["date"], machine=old["machine"])
        payload["resumed"] = old.get("resumed", []) + [{"date": now, "command": command, "kept_rows": len(done),
                                                         "machine": machine}]
    print(f"{len(cases)} models, {args.jobs} at a time -> {args.out}", flush=True)
    with tempfile.TemporaryDirectory(prefix="archc_coverage_") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        futures = {pool.submit(run_case, c, args, Path(tmp)): c for c in cases}
        for i, fut in enumerate(as_completed(futures), 1):
            c = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 - the orchestrator itself failed on this case
                row = {k: c[k] for k in ("id", "library", "family", "model")}
                row["error"] = error_record("orchestrator", exc)
            payload["rows"].append(row)
            payload["rows"].sort(key=lambda r: order[r["id"]])
            payload["total_wall_s"] = previous_s + time.perf_counter() - started
            write(payload, args.out)
            status = row.get("skipped") or (
                f"captured={row.get('captured')} compact={row.get('compact')} exact={row.get('exact')} "
                f"tp={row.get('tp_status')} {row.get('wall_s', 0):.0f}s")
            print(f"[{i}/{len(cases)}] {c['id']}: {status} {cause(row) or ''}"[:300], flush=True)
    payload["total_wall_s"] = previous_s + time.perf_counter() - started
    write(payload, args.out)
    print(markdown(payload).split("## Every model")[0])
    print(f"wrote {args.out} and {args.out.with_suffix('.md')} in {payload['total_wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    main()
