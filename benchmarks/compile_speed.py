"""How long archc takes to compile a model, stage by stage, beside Torch-Pruning on the same models.

archc, per model (the existing pipeline):

* trace    -- ``archc.trace(model, args, kwargs)`` (torch.export, non-strict, lowered to nn layers),
  ending with the graph's check against the model at every shape variant (``trace_check``
  under ``--trace-split``)
* analyse  -- ``archc.analyse(gm)`` + ``archc.channel_groups(an)``
* gate     -- ``archc.passes.insert_filters(gm)`` (it runs its own analysis)
* compact  -- ``archc.compact(gated)`` after closing 30% of every gate's channels at random
  (fixed seed); it includes compact's own verification on random inputs, reported as is
  (``verify_in_compact``: the same check timed again on its own). "w/o checks" is archc without
  these two checks: what it spends on running the models, against what it spends on the graph.

Torch-Pruning (``import torch_pruning as tp``), its default use, on a fresh deep copy of the same
model: ``tp.pruner.MagnitudePruner(model, example_inputs, importance=
tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.3, ignored_layers=[final classifier])``
(the constructor builds TP's DependencyGraph: "build") then ``pruner.step()`` ("prune"). The
final classifier is the last Linear/Conv called in forward. The pruned model is then run once on
the example (not timed) to say whether it still works; TP verifies nothing itself.
For the Llama model TP also runs with the settings of its own LLM example
(``examples/LLMs/prune_llm.py``: ``num_heads`` per q/k/v projection, ``prune_num_heads=True``,
``prune_head_dims=False``, ``head_pruning_ratio=0.3``, ``round_to=4``), and both runs go to a
subprocess killed after ``--tp-timeout`` s (TP is reported to hang on grouped-query attention,
Torch-Pruning issues #516 and #527); the timeout starts when the child has imported and warmed up.

Models: every tests/zoo.py model (TP where it works), torchvision ResNet-50 and DenseNet-121 at
(1, 3, 224, 224), a 24-block Llama-architecture ``LlamaForCausalLM`` (hidden 256, 8 query / 2
key-value heads, MLP 512, vocabulary 1000) called with ``input_ids`` (2, 16) and an all-ones
``attention_mask``, and, for archc only, generated deep residual chains of about 100, 300, 1000,
3000 and 10000 fx graph nodes (input (1, 3, 16, 16)), with the log-log slope of time vs nodes
(1.0 = linear).

Timing: one process, ``torch.set_num_threads(--threads)`` (default 1), archc and TP alternating
within each repeat, so a busy neighbour slows both alike; read the archc/TP *ratios*. Each figure
is the median of ``--repeats`` samples (1 for graphs of more than ``--big-nodes`` nodes); every
sample records the share of the CPUs other processes used meanwhile. Output: two rich tables,
``--out`` (JSON: machine, command, every sample) and a PNG of time vs nodes beside it.

Rerun (from the repository root, about 10 minutes on 2 cores):
    python benchmarks/compile_speed.py
    python benchmarks/compile_speed.py --quick        # zoo + chains up to 1000 nodes (CI smoke)
"""
from __future__ import annotations

import argparse
import copy
import inspect
import json
import queue
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, OtherLoad, archc, command_line, error_record, fit_loglog,  # noqa: E402
                     git_state, import_shim, kill_fraction, machine_info, n_params, timed,
                     wait_quiet, write_json, zoo)
from models import chain_blocks_for, deep_chain, llama, torchvision_model  # noqa: E402

from archc.verify import assert_equivalent  # noqa: E402

STAGES = ("trace", "analyse", "gate", "compact")
# not a stage: the same check compact ends with, timed again on its own (part of "compact")
VERIFY = "verify_in_compact"
TP_STAGES = ("tp_build", "tp_prune")
SPLIT = ("trace_export", "trace_lower_tensor", "trace_check", "trace_rest")  # --trace-split
CHAIN_SIZES = (100, 300, 1000, 3000, 10000)
CHAIN_INPUT = (1, 3, 16, 16)
IMAGENET_INPUT = (1, 3, 224, 224)
TP_CHILD_TAG = "TPRESULT "
TP_READY_TAG = "TPREADY"

# a case: (kind, name, make() -> (model, args, kwargs), TP variants, run TP in a subprocess)
Case = tuple[str, str, Callable[[], tuple], tuple[str, ...], bool]


class TraceSplit:
    """``--trace-split``: where ``archc.trace`` spends its time, by timing (monkeypatching) three of
    archc's internals while it runs: ``archc.capture.capture._export`` (torch.export with
    archc's dynamic shapes), the lowering's ``tensor()`` lookup (one per parameter read) and
    ``check_against_model`` (the captured graph run against the model at every shape variant);
    the rest of trace is archc's other lowering work. Empty where those names are gone."""

    def __init__(self) -> None:
        import archc.capture.capture as capture
        import archc.capture.lower as lower

        self.seconds = {"trace_export": 0.0, "trace_lower_tensor": 0.0, "trace_check": 0.0}
        owners = [c for c in vars(lower).values() if isinstance(c, type) and "tensor" in vars(c)]
        timed_in_capture = (("_export", "trace_export"), ("check_against_model", "trace_check"))
        self.patches = [(capture, name, key) for name, key in timed_in_capture if hasattr(capture, name)] \
            + [(c, "tensor", "trace_lower_tensor") for c in owners[:1]]

    def __enter__(self) -> "TraceSplit":
        self.saved = []
        for owner, name, key in self.patches:
            fn = getattr(owner, name)
            self.saved.append((owner, name, fn))

            def wrapper(*a, _fn=fn, _key=key, **k):
                t0 = time.perf_counter()
                try:
                    return _fn(*a, **k)
                finally:
                    self.seconds[_key] += time.perf_counter() - t0
            setattr(owner, name, wrapper)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, fn in self.saved:
            setattr(owner, name, fn)


def pipeline(model: nn.Module, args: tuple, kwargs: dict, fraction: float, seed: int,
             out: Optional[dict[str, Any]] = None, split: bool = False) -> dict[str, Any]:
    """One full trace -> analyse -> gate -> compact run; seconds per stage and graph sizes
    (written into ``out`` as they come, so a failing stage leaves the earlier ones there)."""
    out = {} if out is None else out
    if split:
        with TraceSplit() as parts:
            gm, out["trace"] = timed(archc.trace, model, args, kwargs)
        out.update(parts.seconds)
        out["trace_rest"] = out["trace"] - sum(parts.seconds.values())
    else:
        gm, out["trace"] = timed(archc.trace, model, args, kwargs)
    out["nodes"] = len(gm.graph.nodes)
    (_, groups), out["analyse"] = timed(lambda: (an := archc.analyse(gm), archc.channel_groups(an)))
    out["groups"] = len(groups)
    gated, out["gate"] = timed(archc.passes.insert_filters, gm)
    out["gated_nodes"] = len(gated.graph.nodes)
    out["channels"] = sum(f.size for f in archc.filters(gated))
    out["killed"] = kill_fraction(gated, fraction, seed)
    small, out["compact"] = timed(archc.compact, gated)
    out["compact_nodes"] = len(small.graph.nodes)
    out["params"], out["params_after"] = n_params(model), n_params(small)
    _, out[VERIFY] = timed(assert_equivalent, gated, small)
    return out


# ---------------------------------------------------------------- Torch-Pruning


def _main_tensor(out: Any) -> Optional[torch.Tensor]:
    """The tensor a model's output stands for: itself, ``logits`` of a ModelOutput, or the first."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        return _main_tensor(out["logits"] if "logits" in out else next(iter(out.values()), None))
    if isinstance(out, (list, tuple)) and out:
        return _main_tensor(out[0])
    return None


def final_layer(model: nn.Module, args: tuple, kwargs: dict) -> tuple[str, nn.Module]:
    """The last Linear/Conv/ConvTranspose called in forward (the classifier TP must be told to leave alone)."""
    names = {m: n for n, m in model.named_modules()}
    called: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, i, o: called.append(m)) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    try:
        with torch.no_grad():
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    return names[called[-1]], called[-1]


def _tp_inputs(model: nn.Module, args: tuple, kwargs: dict) -> tuple[Any, dict, dict]:
    """TP's ``example_inputs`` (a dict is called as ``model(**d)``), extra pruner options (a
    ``forward_fn`` when there are both positional and keyword inputs) and the kwargs to run with.

    A transformers decoder is called with ``use_cache=False``: its key/value cache object is not
    a tensor and TP's tracer fails on it (``'tuple' object has no attribute 'grad_fn'``).
    archc.trace passes the same flag itself.
    """
    try:
        takes = "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        takes = False
    if takes and kwargs and "use_cache" not in kwargs:
        kwargs = {**kwargs, "use_cache": False}
    if kwargs and args:
        return args, {"forward_fn": lambda m, _: m(*args, **kwargs)}, kwargs
    return (kwargs or args), {}, kwargs


def _tp_variant_options(model: nn.Module, variant: str, fraction: float) -> dict[str, Any]:
    """Extra MagnitudePruner options of a variant ("default": none)."""
    if variant == "default":
        return {}
    if variant == "llm_recipe":  # Torch-Pruning's examples/LLMs/prune_llm.py
        cfg = model.config
        heads: dict[nn.Module, int] = {}
        for name, m in model.named_modules():
            if name.endswith("self_attn") and hasattr(m, "q_proj"):
                heads[m.q_proj] = cfg.num_attention_heads
                heads[m.k_proj] = cfg.num_key_value_heads
                heads[m.v_proj] = cfg.num_key_value_heads
        return dict(num_heads=heads, prune_num_heads=True, prune_head_dims=False,
                    head_pruning_ratio=fraction, round_to=4)
    raise KeyError(variant)


def tp_prune(model: nn.Module, args: tuple, kwargs: dict, variant: str,
             fraction: float) -> dict[str, Any]:
    """Torch-Pruning's default use on ``model`` (pruned in place: pass a copy); seconds per stage.

    A failure is recorded with its stage ("build", "prune", or "run": the pruned model no longer
    runs on the example or changed its output's shape); build/prune seconds are kept when known.
    """
    import torch_pruning as tp

    out: dict[str, Any] = {"variant": variant, "params": n_params(model)}
    example, call, run_kwargs = _tp_inputs(model, args, kwargs)
    stage = "setup"
    try:
        with torch.no_grad():
            ref = _main_tensor(model(*args, **run_kwargs))
        out["ignored"], head = final_layer(model, args, run_kwargs)
        options = {**call, **_tp_variant_options(model, variant, fraction)}
        stage = "build"
        pruner, out["tp_build"] = timed(
            tp.pruner.MagnitudePruner, model, example,
            importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=fraction,
            ignored_layers=[head], **options)
        stage = "prune"
        _, out["tp_prune"] = timed(pruner.step)
        out["params_after"] = n_params(model)
        stage = "run"
        with torch.no_grad():
            got = _main_tensor(model(*args, **run_kwargs))
        if ref is not None and (got is None or got.shape != ref.shape):
            raise RuntimeError(f"output shape changed: {tuple(ref.shape)} -> "
                               f"{None if got is None else tuple(got.shape)}")
        out["runs"] = True
    except Exception as exc:  # noqa: BLE001 - TP's failures are results here
        out["runs"] = False
        out["error"] = error_record(stage, exc)
    return out


def tp_warmup() -> None:
    """TP's imports and lazy inits, on the zoo's small ResNet (not timed)."""
    model, inputs = zoo()["resnet"]()
    tp_prune(model, inputs, {}, "default", 0.3)


def tp_in_subprocess(name: str, variant: str, args) -> dict[str, Any]:
    """``tp_prune`` of case ``name`` in a child process, killed ``--tp-timeout`` s after it is
    ready (imported, model built, TP warmed up); its own other-load figure comes back with it."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--tp-child", name, "--tp-variant",
           variant, "--threads", str(args.threads), "--fraction", str(args.fraction)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    t0, ready, result = time.monotonic(), None, None
    deadline = t0 + args.tp_startup_timeout
    while result is None:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        if line.startswith(TP_READY_TAG) and ready is None:
            ready = time.monotonic()
            deadline = ready + args.tp_timeout
        elif line.startswith(TP_CHILD_TAG):
            result = json.loads(line[len(TP_CHILD_TAG):])
    if result is None:
        timed_out = proc.poll() is None
        proc.kill()
        proc.wait()
        waited = time.monotonic() - (ready or t0)
        what = ("timed out" if ready else "did not start") if timed_out else "died"
        result = {"variant": variant, "runs": False, "timed_out": timed_out and ready is not None,
                  "error": {"stage": "build/prune" if ready else "startup", "type": what,
                            "message": f"{what} after {waited:.0f} s (limit {args.tp_timeout:.0f} s"
                                       f" after start-up), exit code {proc.returncode}",
                            "traceback": ""}}
        result["waited_s"] = round(waited, 1)
    else:
        proc.wait()
    result["subprocess"] = True
    return result


def tp_child(args) -> None:
    """Entry point of the subprocess: build the case, warm TP up, say ready, time, print JSON."""
    torch.set_num_threads(args.threads)
    case = {c[1]: c for c in cases(args, everything=True)}[args.tp_child]
    model, m_args, m_kwargs = case[2]()
    tp_warmup()
    print(TP_READY_TAG, flush=True)
    with OtherLoad() as load:
        res = tp_prune(model, m_args, m_kwargs, args.tp_variant, args.fraction)
    res["other_load"] = round(load.share, 3)
    print(TP_CHILD_TAG + json.dumps(res, default=str), flush=True)


# ---------------------------------------------------------------- benchmark loop


def bench(case: Case, repeats: int, args) -> dict[str, Any]:
    """archc and TP alternating, ``repeats`` times; medians. A failure is recorded, not raised
    (archc failing does not stop TP, and the other way round)."""
    kind, name, make, variants, subproc = case
    variants = () if args.no_tp else variants
    row: dict[str, Any] = {"name": name, "kind": kind, "samples": [],
                           "tp": {v: {"samples": []} for v in variants}}
    try:
        model, m_args, m_kwargs = make()
    except Exception as exc:  # noqa: BLE001 - record and go on with the next model
        row["error"] = error_record("build", exc)
        return row
    row["input"] = {"args": [list(t.shape) for t in m_args],
                    "kwargs": {k: list(v.shape) for k, v in m_kwargs.items()}}
    clean, tries, want, limit = 0, 0, repeats, repeats + args.retries
    while clean < want and tries < limit:
        tries += 1
        ok = True
        if "error" not in row:
            wait_quiet(args.max_other, args.max_wait)
            sample: dict[str, Any] = {}
            try:
                with OtherLoad() as load:
                    pipeline(model, m_args, m_kwargs, args.fraction, args.seed, sample,
                             split=args.trace_split)
                sample["other_load"] = round(load.share, 3)
                row["samples"].append(sample)
                ok = sample["other_load"] <= args.max_other
                if sample["nodes"] > args.big_nodes:  # one clean run is enough for the biggest
                    want, limit = 1, min(limit, 2)
            except Exception as exc:  # noqa: BLE001 - deterministic: not repeated
                stage = next((s for s in STAGES if s not in sample), "verify")
                row["error"] = {**error_record(stage, exc), "partial": sample}
        for v in variants:
            tp_row = row["tp"][v]
            if tp_row["samples"] and ("tp_prune" not in tp_row["samples"][-1]):
                continue  # failed before timing, or timed out: deterministic, not repeated
            wait_quiet(args.max_other, args.max_wait)
            if subproc:
                tp_sample = tp_in_subprocess(name, v, args)
            else:
                fresh = copy.deepcopy(model)
                with OtherLoad() as load:
                    tp_sample = tp_prune(fresh, m_args, m_kwargs, v, args.fraction)
                tp_sample["other_load"] = round(load.share, 3)
                del fresh
            tp_row["samples"].append(tp_sample)
            if "tp_prune" in tp_sample:
                ok &= tp_sample["other_load"] <= args.max_other
        clean += ok
        if "error" in row and all(not row["tp"][v]["samples"]
                                  or "tp_prune" not in row["tp"][v]["samples"][-1] for v in variants):
            break  # nothing left that a repeat would time
    if row["samples"]:
        _summarise(row, args.max_other)
    for v in variants:
        _summarise_tp(row, row["tp"][v], args.max_other)
    return row


def _summarise(row: dict[str, Any], max_other: float) -> None:
    """Medians over the uncontended samples (over all of them when none was)."""
    timings = (*STAGES, VERIFY, "other_load", *SPLIT)
    keys = [k for k in row["samples"][0] if k not in timings]
    row.update({k: row["samples"][0][k] for k in keys})
    use = [x for x in row["samples"] if x["other_load"] <= max_other] or row["samples"]
    row["contended"] = use is row["samples"] and any(x["other_load"] > max_other for x in use)
    for s in [t for t in timings if t in row["samples"][0]]:
        row[s] = statistics.median(x[s] for x in use)
    row["total"] = sum(row[s] for s in STAGES)
    row["total_min"] = min(sum(x[s] for s in STAGES) for x in use)
    # without both checks on random inputs: compact's, and (timed under --trace-split) trace's
    row["total_without_verify"] = row["total"] - row[VERIFY] - row.get("trace_check", 0.0)
    row["repeats"] = len(use)


def _summarise_tp(row: dict[str, Any], tp_row: dict[str, Any], max_other: float) -> None:
    """TP medians over the timed samples; the ratios archc/TP; what went wrong, if anything."""
    samples = tp_row["samples"]
    if not samples:
        return
    last = samples[-1]
    tp_row.update({k: last[k] for k in ("runs", "ignored", "params", "params_after", "error",
                                        "timed_out", "waited_s", "subprocess") if k in last})
    timed_ = [x for x in samples if "tp_prune" in x]
    if timed_:
        use = [x for x in timed_ if x["other_load"] <= max_other] or timed_
        tp_row["contended"] = use is timed_ and any(x["other_load"] > max_other for x in use)
        for s in (*TP_STAGES, "other_load"):
            tp_row[s] = statistics.median(x[s] for x in use)
        tp_row["total"] = tp_row["tp_build"] + tp_row["tp_prune"]
        tp_row["repeats"] = len(use)
        if "total" in row:
            tp_row["ratio"] = row["total"] / tp_row["total"]
            tp_row["ratio_without_verify"] = row["total_without_verify"] / tp_row["total"]
    tp_row["status"] = tp_status(tp_row)


def tp_status(tp_row: dict[str, Any]) -> str:
    if tp_row.get("timed_out"):
        return f"timed out after {tp_row['waited_s']:.0f} s"
    err = tp_row.get("error")
    if err is None:
        return "ok"
    if err["stage"] == "run":
        return f"pruned model fails to run ({err['type']})"
    return f"failed in {err['stage']} ({err['type']})"


def archc_status(row: dict[str, Any]) -> str:
    err = row.get("error")
    return "verified" if err is None else f"failed in {err['stage']} ({err['type']})"


def cases(args, everything: bool = False) -> list[Case]:
    """Everything to measure (``everything``: regardless of --quick, for the TP child)."""
    def with_kwargs(f: Callable[[], tuple]) -> Callable[[], tuple]:
        return lambda: (*f(), {})

    quick = args.quick and not everything
    out: list[Case] = [("zoo", n, with_kwargs(f), ("default",), False) for n, f in zoo().items()]
    if not quick:
        for tv in ("resnet50", "densenet121"):
            out.append(("full", tv, lambda tv=tv: (torchvision_model(tv), (torch.randn(*IMAGENET_INPUT),), {}),
                        ("default",), False))
        out.append(("full", "llama24", lambda: ((m := llama(24))[0], (), m[1]),
                    ("default", "llm_recipe"), True))
    sizes = [n for n in args.chain_sizes if not quick or n <= 1000]
    for n in sizes:
        blocks = chain_blocks_for(n)
        out.append(("chain", f"chain{blocks}",
                    lambda b=blocks: (deep_chain(b), (torch.randn(*CHAIN_INPUT),), {}), (), False))
    return out


def growth(rows: list[dict]) -> Optional[dict[str, Any]]:
    """Log-log fit of each stage's time (and the total) against nodes over the chains."""
    ok = [r for r in rows if r["kind"] == "chain" and "total" in r]
    if len(ok) < 2:
        return None
    nodes = [r["nodes"] for r in ok]
    stages = (*STAGES, "total", *(s for s in SPLIT if all(s in r for r in ok)))
    fit = {s: fit_loglog(nodes, [max(r[s], 1e-6) for r in ok]) for s in stages}
    fit["seconds_per_node"] = {r["name"]: r["total"] / r["nodes"] for r in ok}
    fit["nodes"] = nodes
    return fit


# ---------------------------------------------------------------- output


def print_table(rows: list[dict], fit: Optional[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=220)
    table = Table(title="archc compile time per stage (seconds, median)")
    split = [s for s in SPLIT if any(s in r for r in rows)]
    for col in ("model", "kind", "nodes", "runs", *STAGES, *split, "total", "ms/node", "other"):
        table.add_column(col, justify="left" if col in ("model", "kind") else "right")
    for r in rows:
        if "total" not in r:
            table.add_row(r["name"], r["kind"], "", "", f"[red]{r['error']['type']}[/red]")
            continue
        table.add_row(r["name"], r["kind"], str(r["nodes"]), str(r["repeats"]),
                      *(f"{r[s]:.3f}" for s in STAGES),
                      *(f"{r[s]:.3f}" if s in r else "" for s in split), f"{r['total']:.3f}",
                      f"{1e3 * r['total'] / r['nodes']:.2f}",
                      f"{r['other_load']:.0%}" + ("!" if r["contended"] else ""))
    console.print(table)
    if fit:
        slopes = ", ".join(f"{s} {fit[s]['slope']:.2f}" for s in (*STAGES, "total", *SPLIT)
                           if s in fit)
        console.print(f"chain growth, log-log slope of seconds vs nodes: {slopes}")

    table = Table(title="archc vs Torch-Pruning (seconds, median; same process, alternating)")
    for col in ("model", "TP variant", "archc", "archc w/o checks", "TP build", "TP prune",
                "TP total", "archc/TP", "w/o checks /TP", "params kept archc", "params kept TP",
                "archc result", "TP result", "other archc/TP"):
        table.add_column(col, justify="left" if col in ("model", "TP variant", "archc result",
                                                        "TP result") else "right")
    for r in rows:
        for v, t in r.get("tp", {}).items():
            if not t.get("samples"):
                continue
            f = (lambda k, d=t: f"{d[k]:.3f}" if k in d else "")
            keep = (lambda d: f"{d['params_after'] / d['params']:.2f}" if "params_after" in d else "")
            table.add_row(r["name"], v, f("total", r), f("total_without_verify", r),
                          f("tp_build"), f("tp_prune"), f("total"),
                          f"{t['ratio']:.2f}" if "ratio" in t else "",
                          f"{t['ratio_without_verify']:.2f}" if "ratio_without_verify" in t else "",
                          keep(r), keep(t), archc_status(r), t["status"],
                          (f"{r['other_load']:.0%}" if "other_load" in r else "") + " / "
                          + (f"{t['other_load']:.0%}" if "other_load" in t else ""))
    console.print(table)
    console.print("other = median share of the CPUs used by other processes meanwhile "
                  "(! = every sample was contended: the figure may be inflated); "
                  "archc includes its verification (w/o checks: without compact's check and, under "
                  "--trace-split, trace's check against the model); "
                  "TP verifies nothing")
    for r in rows:
        if "error" in r:
            console.print(f"[red]{r['name']} failed in {r['error']['stage']}:[/red]\n"
                          f"{r['error']['traceback']}")


def plot(rows: list[dict], fit: Optional[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    chains = [r for r in rows if r["kind"] == "chain" and "total" in r]
    for stage in (*STAGES, "total"):
        ax.plot([r["nodes"] for r in chains], [max(r[stage], 1e-4) for r in chains], "o-",
                label=f"archc chain {stage}" + (f" (slope {fit[stage]['slope']:.2f})" if fit else ""),
                lw=2.5 if stage == "total" else 1)
    others = [r for r in rows if r["kind"] != "chain" and "total" in r]
    ax.scatter([r["nodes"] for r in others], [r["total"] for r in others], c="k", marker="x",
               label="archc total (zoo / full models)", zorder=3)
    tp_pts = [(r["nodes"], t["total"]) for r in others for v, t in r["tp"].items()
              if v == "default" and "total" in t]
    ax.scatter([p[0] for p in tp_pts], [p[1] for p in tp_pts], facecolors="none",
               edgecolors="tab:red", marker="o", label="Torch-Pruning total (build + prune)", zorder=3)
    for r in others:
        if r["kind"] == "full":
            ax.annotate(r["name"], (r["nodes"], r["total"]))
    ax.set(xscale="log", yscale="log", xlabel="archc fx graph nodes", ylabel="seconds",
           title="compile time vs graph size: archc and Torch-Pruning")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="samples per model (median taken)")
    p.add_argument("--big-nodes", type=int, default=2000,
                   help="graphs with more nodes than this are run once")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--fraction", type=float, default=0.3,
                   help="share of channels killed (archc) / pruning_ratio (TP)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chain-sizes", type=int, nargs="+", default=list(CHAIN_SIZES),
                   help="approximate fx node counts of the deep chains")
    p.add_argument("--only", nargs="+", help="only the cases with these names (e.g. resnet50)")
    p.add_argument("--max-other", type=float, default=0.1,
                   help="a sample during which other processes used more than this share of "
                        "the CPUs is contended: it is retried, and left out of the median")
    p.add_argument("--max-wait", type=float, default=10.0,
                   help="seconds to wait for the machine to be quiet before each sample")
    p.add_argument("--wait-start", type=float, default=0.0,
                   help="seconds to wait, at most, for 5 quiet seconds (other processes under "
                        "--max-other) before starting; the wait and the load are recorded")
    p.add_argument("--retries", type=int, default=1, help="extra samples allowed per model")
    p.add_argument("--tp-timeout", type=float, default=120.0,
                   help="seconds TP may take in a subprocess (Llama) before it is killed")
    p.add_argument("--tp-startup-timeout", type=float, default=300.0,
                   help="seconds the TP subprocess may take to import, build and warm up")
    p.add_argument("--quick", action="store_true", help="zoo + chains up to 1000 nodes only")
    p.add_argument("--trace-split", action="store_true",
                   help="also time trace's parts: torch.export, the lowering's parameter "
                        "lookups, the rest (see TraceSplit); table and growth fit include them")
    p.add_argument("--no-tp", action="store_true", help="archc only")
    p.add_argument("--out", type=Path, default=RESULTS / "compile_speed.json")
    p.add_argument("--tp-child", help=argparse.SUPPRESS)
    p.add_argument("--tp-variant", default="default", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _dist_version(name: str) -> Optional[str]:
    """The installed distribution's version (torch_pruning 1.6.1 reports __version__ 1.6.0)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.tp_child:
        return tp_child(args)
    import_shim()  # before anything imports torchvision / transformers
    torch.set_num_threads(args.threads)
    import torch_pruning as tp

    t_wait = time.monotonic()
    share = wait_quiet(args.max_other, args.wait_start, window=5.0) if args.wait_start > 0 else None
    payload: dict[str, Any] = {
        "machine": {**machine_info(args.threads), "torch_pruning": tp.__version__,
                    "torch_pruning_dist": _dist_version("torch-pruning")},
        "command": command_line(), "git": git_state(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "start_wait": {"waited_s": round(time.monotonic() - t_wait, 1), "other_share_at_start": share}}
    for mod in ("transformers", "torchvision", "timm"):
        try:
            payload["machine"][mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    model, inputs = zoo()["resnet"]()
    pipeline(model, inputs, {}, args.fraction, args.seed)  # warm-up: imports, lazy inits
    if not args.no_tp:
        tp_warmup()
    rows = []
    started = time.perf_counter()
    for case in cases(args):
        if args.only and case[1] not in args.only:
            continue
        row = bench(case, args.repeats, args)
        rows.append(row)
        write_json(args.out, {**payload, "results": rows, "partial": True})  # survive a kill
        status = f"{row['total']:.2f}s" if "total" in row else f"FAILED ({row['error']['type']})"
        tps = "  ".join(f"TP {v}: " + (f"{t['total']:.2f}s " if "total" in t else "") + t["status"]
                        for v, t in row["tp"].items() if "status" in t)
        print(f"{row['kind']:5s} {row['name']:14s} {row.get('nodes', '?')!s:>6s} nodes  "
              f"archc {status}  {tps}", flush=True)
    fit = growth(rows)
    payload.update(results=rows, chain_growth=fit, wall_s=round(time.perf_counter() - started, 1))
    write_json(args.out, payload)
    plot(rows, fit, args.out.with_suffix(".png"))
    print_table(rows, fit)
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
