"""onnxruntime latency of original vs archc-compacted models, beside their FLOPs and params ratios.

For each model: trace, gate (insert_filters), then for 30%, 50% and 70%: close that share of
every gate's channels at random (fixed seed) and ``archc.compact``. The original model and
each compact model are exported with ``archc.export.export_onnx`` (checked against PyTorch)
and timed in onnxruntime (CPU provider with ``intra_op_num_threads = --threads``; CUDA too
when a GPU and CUDAExecutionProvider are available): 10 warm-up runs each, then ``--runs``
rounds that time one inference of every variant in turn (interleaved, so a busy neighbour
slows all variants alike); median and p90 in ms. FLOPs per example come from
``archc.report(gm).flops`` when archc has it, else from a small fx Interpreter counting
2 x MACs of convs, linears and matmuls.

Models: ResNet-50 at (1, 3, 224, 224) (and batch 8 with --batch8, the default), and the
tests/zoo.py resnet, mobilenetv2, vit and convnext at their zoo inputs (batch 2).

Rerun (from the repository root, about 10 minutes on 2 cores):
    python benchmarks/onnx_speed.py
    python benchmarks/onnx_speed.py --quick           # two zoo models, 50% only, 10 runs
"""
from __future__ import annotations

import argparse
import copy
import operator
import statistics
import sys
import tempfile
from collections import Counter
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, OtherLoad, archc, command_line, error_record,  # noqa: E402
                     kill_fraction, machine_info, n_params, wait_quiet, write_json, zoo)
from models import resnet50  # noqa: E402

ZOO_MODELS = ("resnet", "mobilenetv2", "vit", "convnext")
FRACTIONS = (0.3, 0.5, 0.7)
WARMUP = 10


class _MacCounter(fx.Interpreter):
    """Runs a GraphModule and adds up 2 x MACs of conv/linear modules and matmuls."""

    flops = 0

    def call_module(self, target, args, kwargs):
        out = super().call_module(target, args, kwargs)
        m = self.module.get_submodule(target)
        if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed:
            self.flops += 2 * out.numel() * (m.in_channels // m.groups) * int(np.prod(m.kernel_size))
        elif isinstance(m, nn.Linear):
            self.flops += 2 * out.numel() * m.in_features
        return out

    def call_function(self, target, args, kwargs):
        out = super().call_function(target, args, kwargs)
        if target in (operator.matmul, torch.matmul, torch.bmm):
            self.flops += 2 * out.numel() * args[0].shape[-1]
        return out


def flops_per_example(gm: fx.GraphModule, inputs: tuple) -> tuple[int, str]:
    """(FLOPs per example, how they were counted)."""
    report = getattr(archc, "report", None)
    if report is not None:
        try:
            return int(report(gm).flops), "archc.report"
        except Exception:  # noqa: BLE001 - fall back to the benchmark's own counter
            pass
    counter = _MacCounter(gm)
    with torch.no_grad():
        counter.run(*inputs)
    return counter.flops // max(inputs[0].shape[0], 1), "benchmark fx counter"


def variants(model: nn.Module, inputs: tuple, fractions, seed: int) -> list[dict[str, Any]]:
    """The original model and one compact model per fraction, with FLOPs and params."""
    gm = archc.trace(model, inputs)
    flops, how = flops_per_example(gm, inputs)
    out = [{"fraction": 0.0, "module": model, "params": n_params(model), "flops": flops,
            "flops_counter": how}]
    gated = archc.passes.insert_filters(copy.deepcopy(gm))
    for frac in fractions:
        g = copy.deepcopy(gated)
        kill_fraction(g, frac, seed)
        t0 = time.perf_counter()
        small = archc.compact(g)
        f, how = flops_per_example(small, inputs)
        out.append({"fraction": frac, "module": small, "params": n_params(small), "flops": f,
                    "flops_counter": how, "compact_s": time.perf_counter() - t0})
    return out


def _op_counts(path: Path) -> dict[str, int]:
    """How many nodes of each op type the exported ONNX graph has."""
    import onnx

    return dict(Counter(n.op_type for n in onnx.load(str(path)).graph.node).most_common())


def sessions(path: Path, threads: int) -> dict[str, Any]:
    """One onnxruntime session per usable provider: CPU always, CUDA when there is a GPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.log_severity_level = 3
    out = {"cpu": ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])}
    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        cuda = ort.InferenceSession(str(path), opts, providers=["CUDAExecutionProvider"])
        if "CUDAExecutionProvider" in cuda.get_providers():
            out["cuda"] = cuda
    return out


def latency(sess_list: list, feed_list: list, runs: int) -> list[list[float]]:
    """Milliseconds per run of each session, measured in interleaved rounds after warm-up."""
    for sess, feed in zip(sess_list, feed_list):
        for _ in range(WARMUP):
            sess.run(None, feed)
    times: list[list[float]] = [[] for _ in sess_list]
    for _ in range(runs):
        for i, (sess, feed) in enumerate(zip(sess_list, feed_list)):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times[i].append((time.perf_counter() - t0) * 1e3)
    return times


def measure(name: str, make: Callable, batches: list[int], args, tmp: Path) -> list[dict]:
    """Rows (one per variant x batch x provider) for one model."""
    from archc.export import export_onnx

    model, inputs = make()
    vs = variants(model, inputs, args.fractions, args.seed)
    for v in vs:
        v["onnx"] = tmp / f"{name}_{int(v['fraction'] * 100)}.onnx"
        export_onnx(v.pop("module"), inputs, v["onnx"])
        v["onnx_ops"] = _op_counts(v["onnx"])
        v["sessions"] = sessions(v["onnx"], args.threads)
    rows = []
    for batch in batches:
        x = torch.randn(batch, *inputs[0].shape[1:], generator=torch.Generator().manual_seed(1))
        for provider in vs[0]["sessions"]:
            sess = [v["sessions"][provider] for v in vs]
            feeds = [{s.get_inputs()[0].name: x.numpy()} for s in sess]
            times, share = _least_contended(sess, feeds, args)
            rows += [_row(name, batch, provider, v, t, vs[0], share) for v, t in zip(vs, times)]
    return rows


def _least_contended(sess: list, feeds: list, args) -> tuple[list[list[float]], float]:
    """Latencies from the attempt that other processes disturbed least (retried if contended)."""
    best: tuple[list[list[float]], float] | None = None
    for _ in range(1 + args.retries):
        wait_quiet(args.max_other, args.max_wait)
        with OtherLoad() as load:
            times = latency(sess, feeds, args.runs)
        if best is None or load.share < best[1]:
            best = (times, load.share)
        if load.share <= args.max_other:
            break
    return best


def _row(name, batch, provider, v, times, base, load) -> dict[str, Any]:
    med = statistics.median(times)
    return {"model": name, "batch": batch, "provider": provider, "removed": v["fraction"],
            "params": v["params"], "flops": v["flops"], "flops_counter": v["flops_counter"],
            "params_ratio": v["params"] / base["params"], "flops_ratio": v["flops"] / base["flops"],
            "median_ms": med, "p90_ms": float(np.percentile(times, 90)), "runs": len(times),
            "compact_s": v.get("compact_s"), "onnx_ops": v["onnx_ops"], "other_load": round(load, 3), "times_ms": times}


def add_latency_ratios(rows: list[dict]) -> None:
    base = {(r["model"], r["batch"], r["provider"]): r["median_ms"] for r in rows if r["removed"] == 0}
    for r in rows:
        r["latency_ratio"] = r["median_ms"] / base[(r["model"], r["batch"], r["provider"])]


def print_table(rows: list[dict], errors: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="onnxruntime latency: original vs archc-compacted (ms)")
    cols = ("model", "batch", "prov", "removed", "params", "params x", "GFLOPs", "FLOPs x",
            "median", "p90", "latency x", "other")
    for col in cols:
        table.add_column(col, justify="left" if col in ("model", "prov") else "right")
    for r in rows:
        table.add_row(r["model"], str(r["batch"]), r["provider"], f"{r['removed']:.0%}",
                      f"{r['params'] / 1e6:.3f}M", f"{r['params_ratio']:.3f}",
                      f"{r['flops'] / 1e9:.4f}", f"{r['flops_ratio']:.3f}",
                      f"{r['median_ms']:.3f}", f"{r['p90_ms']:.3f}",
                      f"{r['latency_ratio']:.3f}", f"{r['other_load']:.0%}")
    console = Console(width=200)
    console.print(table)
    console.print("x = ratio to the original model; GFLOPs per example; other = share of the "
                  "CPUs used by other processes during the timing (above ~5%: contended)")
    for e in errors:
        console.print(f"[red]{e['model']} failed in {e['stage']}:[/red]\n{e['traceback']}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    keys = sorted({(r["model"], r["batch"], r["provider"]) for r in rows})
    for model, batch, prov in keys:
        pts = sorted((r["flops_ratio"], r["latency_ratio"]) for r in rows
                     if (r["model"], r["batch"], r["provider"]) == (model, batch, prov))
        ax.plot(*zip(*pts), "o-", label=f"{model} b{batch} {prov}")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="latency = FLOPs")
    ax.set(xlim=(0, 1.05), ylim=(0, None), xlabel="FLOPs ratio (compact / original)",
           ylabel="latency ratio (median)", title="onnxruntime latency vs FLOPs after compaction")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cases(args) -> list[tuple[str, Callable, list[int]]]:
    """(name, factory, batches) of every model to measure."""
    out = []
    if not args.quick:
        batches = [1, 8] if args.batch8 else [1]
        out.append(("resnet50", lambda: (resnet50(), (torch.randn(1, 3, 224, 224),)), batches))
    names = ("resnet", "mobilenetv2") if args.quick else ZOO_MODELS
    out += [(n, zoo()[n], [zoo()[n]()[1][0].shape[0]]) for n in names]
    return [c for c in out if not args.only or c[0] in args.only]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=50, help="timed runs per variant (after 10 warm-up)")
    p.add_argument("--threads", type=int, default=2, help="onnxruntime intra_op_num_threads")
    p.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch8", action=argparse.BooleanOptionalAction, default=True,
                   help="also time ResNet-50 at batch 8")
    p.add_argument("--only", nargs="+", help="only these models (e.g. resnet50 vit)")
    p.add_argument("--max-other", type=float, default=0.1,
                   help="wait until other processes use at most this share of the CPUs")
    p.add_argument("--max-wait", type=float, default=10.0, help="seconds to wait for that")
    p.add_argument("--retries", type=int, default=1, help="extra timings of a contended model")
    p.add_argument("--quick", action="store_true", help="two zoo models, 50%% only, 10 runs")
    p.add_argument("--out", type=Path, default=RESULTS / "onnx_speed.json")
    args = p.parse_args(argv)
    if args.quick:
        args.fractions, args.runs = [0.5], min(args.runs, 10)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    payload: dict[str, Any] = {"machine": machine_info(args.threads), "command": command_line(),
                               "settings": {k: str(v) for k, v in vars(args).items()}}
    rows: list[dict] = []
    errors: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, batches in cases(args):
            try:
                new = measure(name, make, batches, args, Path(tmp))
            except Exception as exc:  # noqa: BLE001 - record and go on with the next model
                errors.append({"model": name, **error_record("measure", exc)})
                print(f"{name}: FAILED ({type(exc).__name__})", flush=True)
                continue
            add_latency_ratios(new)
            rows += new
            write_json(args.out, {**payload, "results": rows, "errors": errors, "partial": True})
            print(f"{name}: " + ", ".join(f"{r['removed']:.0%} b{r['batch']} {r['provider']} "
                                          f"{r['median_ms']:.2f}ms" for r in new), flush=True)
    payload.update(results=rows, errors=errors)
    write_json(args.out, payload)
    plot(rows, args.out.with_suffix(".png"))
    print_table(rows, errors)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
