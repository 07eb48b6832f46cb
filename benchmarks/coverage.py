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
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import coverage_models as cm  # noqa: E402
from coverage_report import EXACT, FRACTION, ROUNDING, cause, is_exact, markdown, merge_rows, write  # noqa: E402

cm.vision_imports()

RESULTS = REPO / "benchmarks" / "results"


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
    if all(is_exact(e, "float64") for e in rec["exact_err_f64"]):
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
    rec["exact"] = all(is_exact(e, d) for e, d in zip(errs, dtypes))
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
    ap.add_argument("--merge-into", type=Path,
                    help="after the run, put its rows into this table (same ids replaced; with "
                         "--no-torch-pruning the table's Torch-Pruning columns are kept)")
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
    if args.merge_into:
        merge_rows(payload, args.merge_into, command, keep_tp=args.no_torch_pruning)
        print(f"merged {len(payload['rows'])} rows into {args.merge_into}")


if __name__ == "__main__":
    main()
