"""Search on real data, dense vs archc vs Torch-Pruning, for two transformers:

* ``--task vit_mnist``: a Hugging Face ViT on MNIST (``examples/vit_mnist.py``), test accuracy;
* ``--task lm_stdlib``: a byte-level Llama-architecture language model on Python's own
  standard library source (``examples/lm_stdlib.py``), test bits per byte (lower is better).

Every variant gets the same number of training epochs in total (``--epochs + --finetune``):

* **dense**: the model of the model file trained for all of them;
* **archc, lam = L**: ``archc.search`` for ``--epochs`` (L1 on the gates, the model shrinking
  at each epoch end: residual stream, whole heads, MLP widths), ``archc.compact``, then
  ``--finetune`` epochs of the compact model without penalty (gates learn at ``--arch-lr``);
* **Torch-Pruning**: the dense model after ``--epochs``, pruned by
  ``MetaPruner(GroupMagnitudeImportance(p=2), num_heads=..., prune_num_heads=True,
  prune_head_dims=False)`` (its recipe for attention) to the parameter count of each archc
  variant (its ratio found by bisection), then the same ``--finetune`` epochs.

Reported: the score against parameters, a table (.md), a plot (.png) and every figure with
the machine, the archc commit and the command (.json), in ``results/transformer_search_<task>.*``.

Rerun (from the repository root; each about 10-15 minutes on 2 idle cores):
    python benchmarks/transformer_search.py --task vit_mnist
    python benchmarks/transformer_search.py --task lm_stdlib
    python benchmarks/transformer_search.py --lams 1e-3 --epochs 1 --finetune 1 --out /tmp/ts.json   # smoke
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, finish_report, git_state, import_shim, machine_info, command_line, n_params  # noqa: E402
from mnist import TensorLoader  # noqa: E402

import_shim()
import archc  # noqa: E402
from archc.model_io import cross_entropy, logits_of  # noqa: E402


def _model_file(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _attention_heads(model: torch.nn.Module) -> dict:
    """Torch-Pruning's ``num_heads``: each q/k/v projection -> its number of heads."""
    heads = {}
    for m in model.modules():
        if hasattr(m, "q_proj") and hasattr(m, "k_proj"):
            cfg = model.config
            kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
            heads.update({m.q_proj: cfg.num_attention_heads, m.k_proj: kv, m.v_proj: kv})
    return heads


@dataclass
class Benchmark:
    """One task: its model file, held-out data, loss, score and what Torch-Pruning needs."""

    name: str
    file: Any
    test: Any
    loss: Callable
    score: Callable[[torch.nn.Module, Any], float]  # on the test set
    score_name: str
    example: torch.Tensor
    head_layer: str  # the output layer Torch-Pruning leaves alone


def _accuracy(model, data) -> float:
    hits = sum(int((logits_of(model(x)).argmax(-1) == y).sum()) for x, y in TensorLoader(data, 500))
    return hits / len(data)


def _bits_per_byte(loss: Callable) -> Callable:
    def score(model, data) -> float:
        nats = sum(float(loss(model(x), y)) * len(x) for x, y in TensorLoader(data, 256))
        return nats / len(data) / math.log(2)

    return score


def benchmark(name: str) -> Benchmark:
    file = _model_file(name)
    if name == "vit_mnist":
        from mnist import mnist_datasets
        return Benchmark(name, file, mnist_datasets(seed=0)[2], cross_entropy, _accuracy, "test accuracy",
                         torch.randn(2, 1, 28, 28), "classifier")
    test_text = file.stdlib_bytes()[2]
    return Benchmark(name, file, file.windows(test_text, file.CONTEXT), file.loss, _bits_per_byte(file.loss),
                     "test bits per byte", torch.randint(0, 256, (2, file.CONTEXT)), "lm_head")


def train(model: torch.nn.Module, data, epochs: int, args, loss: Callable) -> torch.nn.Module:
    """Plain Adam training with the loss the search uses (no penalty)."""
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    loader = TensorLoader(data, args.batch, shuffle=True, seed=args.seed)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def score(bench: Benchmark, model: torch.nn.Module) -> float:
    return bench.score(model.eval(), bench.test)


def tp_prune(bench: Benchmark, dense: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """Torch-Pruning's recipe for attention (``num_heads``, whole heads) on a copy of ``dense``."""
    import torch_pruning as tp

    model = copy.deepcopy(dense).eval()
    pruner = tp.pruner.MetaPruner(
        model, bench.example, importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, head_pruning_ratio=ratio, num_heads=_attention_heads(model), prune_num_heads=True,
        prune_head_dims=False, ignored_layers=[model.get_submodule(bench.head_layer)],
        output_transform=lambda out: out.logits.sum())
    pruner.step()
    return model


def tp_to_params(bench: Benchmark, dense: torch.nn.Module, target: int) -> tuple[torch.nn.Module, float]:
    """The Torch-Pruning ratio whose pruned model has about ``target`` parameters (bisection)."""
    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        if n_params(tp_prune(bench, dense, mid)) > target:
            lo = mid
        else:
            hi = mid
    return tp_prune(bench, dense, hi), hi


def _row(variant: str, model, bench: Benchmark, started: float, total: int, **extra) -> dict:
    row = {"variant": variant, "params": n_params(model), "score": score(bench, model), "epochs": total,
           "wall_s": time.perf_counter() - started, **extra}
    print({k: v for k, v in row.items() if k != "widths"}, flush=True)
    return row


@contextlib.contextmanager
def _time_limit(seconds: float):
    """Raise TimeoutError in the main thread after ``seconds`` (Torch-Pruning hangs on some LLMs)."""
    def expire(signum, frame):  # noqa: ARG001
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(args) -> dict:
    bench = benchmark(args.task)
    train_set, val_set = bench.file.data()
    total = args.epochs + args.finetune
    started, git = time.perf_counter(), git_state()  # the code this run imports
    rows = [_row("dense", train(bench.file.model(), train_set, total, args, bench.loss), bench, started, total)]
    for lam in args.lams:
        t = time.perf_counter()
        result = archc.search(bench.file.model, train_set, val_set, lam=lam, epochs=args.epochs, lr=args.lr,
                              arch_lr=args.arch_lr, batch_size=args.batch, seed=args.seed, loss=bench.loss,
                              progress=False)
        small = archc.compact(result.model)
        searched = {"params": n_params(small), "score": score(bench, small)}
        rows.append(_row(f"archc lam={lam:g}", train(small, train_set, args.finetune, args, bench.loss), bench, t,
                         total, lam=lam, before_finetune=searched, widths=result.history[-1].get("widths")))
    half_trained = train(bench.file.model(), train_set, args.epochs, args, bench.loss)
    for archc_row in [r for r in rows if "lam" in r]:
        t = time.perf_counter()
        try:
            with _time_limit(args.tp_timeout):
                pruned, ratio = tp_to_params(bench, half_trained, archc_row["params"])
        except TimeoutError:
            rows.append({"variant": f"Torch-Pruning to {archc_row['variant']}",
                         "error": f"did not finish in {args.tp_timeout:g} s", "wall_s": time.perf_counter() - t})
            print(rows[-1], flush=True)
            break  # the same pruner on the same model: the other budgets would hang alike
        before = {"params": n_params(pruned), "score": score(bench, pruned)}
        rows.append(_row(f"Torch-Pruning to {archc_row['variant']}", train(pruned, train_set, args.finetune, args,
                                                                          bench.loss),
                         bench, t, total, tp_ratio=ratio, before_finetune=before))
    return {"experiment": "transformer_search", "task": args.task, "score_name": bench.score_name,
            "command": command_line(), "git": git, "machine": machine_info(torch.get_num_threads()),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "data": {"train": len(train_set), "val": len(val_set), "test": len(bench.test)}, "rows": rows}


def markdown(payload: dict) -> str:
    rows, dense, name = payload["rows"], payload["rows"][0], payload["score_name"]
    lines = [f"# {payload['task']}: dense vs archc vs Torch-Pruning", "",
             f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']['cpu']} "
             f"({payload['machine']['cpu_count']} CPUs), torch {payload['machine']['torch']}; "
             f"archc at {payload['git'].get('commit', '?')[:7]}; load average {payload['machine'].get('loadavg_start')}  ",
             f"Data: {payload['data']['train']} training, {payload['data']['test']} test examples; "
             f"{dense['epochs']} epochs for every variant", "",
             f"| variant | parameters | of dense | {name} | before fine-tuning | seconds |",
             "|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | - | - | {r['error']} | | {r['wall_s']:.0f} |")
            continue
        before = r.get("before_finetune", {}).get("score")
        lines.append(f"| {r['variant']} | {r['params']:,} | {r['params'] / dense['params']:.2f} | "
                     f"{r['score']:.4f} | {'' if before is None else f'{before:.4f}'} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for prefix, marker in (("dense", "s"), ("archc", "o"), ("Torch-Pruning", "^")):
        pts = [(r["params"], r["score"]) for r in payload["rows"] if r["variant"].startswith(prefix) and "score" in r]
        if not pts:
            continue
        ax.plot(*zip(*sorted(pts)), marker=marker, label=prefix, linestyle="-" if len(pts) > 1 else "")
    ax.set_xlabel("parameters")
    ax.set_ylabel(payload["score_name"])
    ax.set_title(f"{payload['task']}: {payload['score_name']} against size (same epochs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lams", type=lambda s: [float(v) for v in s.split(",")], default=[3e-4, 1e-3, 3e-3])
    ap.add_argument("--epochs", type=int, default=3, help="search epochs (dense: plus --finetune)")
    ap.add_argument("--finetune", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--arch-lr", type=float, default=1e-2, help="learning rate of the gates (archc)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tp-timeout", type=float, default=120.0, help="seconds for Torch-Pruning's pruning")
    ap.add_argument("--task", choices=("vit_mnist", "lm_stdlib"), default="vit_mnist",
                    help="the model file in examples/ (and its data)")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/transformer_search_<task>.json")
    args = ap.parse_args()
    args.out = args.out or REPO / "benchmarks" / "results" / f"transformer_search_{args.task}.json"
    started = time.perf_counter()
    payload = run(args)
    plot(payload, args.out.with_suffix(".png"))
    finish_report(payload, args.out, markdown(payload), started)


if __name__ == "__main__":
    main()
