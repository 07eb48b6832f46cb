"""Search on real data: a small Hugging Face ViT on MNIST, dense vs archc vs Torch-Pruning.

Every variant gets the same number of training epochs in total (``--epochs + --finetune``):

* **dense**: the model of ``examples/vit_mnist.py`` trained for all of them;
* **archc, lam = L**: ``archc.search`` for ``--epochs`` (L1 on the gates, the model shrinking
  at each epoch end: residual stream, whole heads, MLP widths), ``archc.compact``, then
  ``--finetune`` epochs of the compact model without penalty (gates learn at ``--arch-lr``);
* **Torch-Pruning**: the dense model after ``--epochs``, pruned by
  ``MetaPruner(GroupMagnitudeImportance(p=2), num_heads=..., prune_num_heads=True,
  prune_head_dims=False)`` (its recipe for attention) to the parameter count of each archc
  variant (its ratio found by bisection), then the same ``--finetune`` epochs.

Reported: test accuracy (10k MNIST test images) against parameters, a table (.md), a plot
(.png) and every figure with the machine and command (.json).

Rerun (from the repository root; about 15 minutes on 2 idle cores):
    python benchmarks/transformer_search.py
    python benchmarks/transformer_search.py --lams 1e-3 --epochs 1 --finetune 1 --out /tmp/ts.json   # smoke
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, finish_report, git_state, import_shim, machine_info, command_line, n_params  # noqa: E402
from mnist import TensorLoader  # noqa: E402

import_shim()
import archc  # noqa: E402
from archc.model_io import cross_entropy, logits_of  # noqa: E402


def _model_file():
    spec = importlib.util.spec_from_file_location("vit_mnist", REPO / "examples" / "vit_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train(model: torch.nn.Module, data, epochs: int, lr: float, batch: int, seed: int) -> torch.nn.Module:
    """Plain Adam training with the same loss archc's search uses (no penalty)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = TensorLoader(data, batch, shuffle=True, seed=seed)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def test_accuracy(model: torch.nn.Module, data) -> float:
    model.eval()
    hits = sum(int((logits_of(model(x)).argmax(-1) == y).sum()) for x, y in TensorLoader(data, 500))
    return hits / len(data)


def tp_prune(dense: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """Torch-Pruning's recipe for attention on a copy of ``dense``."""
    import torch_pruning as tp
    from transformers.models.vit.modeling_vit import ViTAttention

    model = copy.deepcopy(dense).eval()
    heads = {}
    for m in model.modules():
        if isinstance(m, ViTAttention):
            heads.update({layer: m.num_attention_heads for layer in (m.q_proj, m.k_proj, m.v_proj)})
    pruner = tp.pruner.MetaPruner(
        model, torch.randn(2, 1, 28, 28), importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio, head_pruning_ratio=ratio, num_heads=heads, prune_num_heads=True,
        prune_head_dims=False, ignored_layers=[model.classifier], output_transform=lambda out: out.logits.sum())
    pruner.step()
    return model


def tp_to_params(dense: torch.nn.Module, target: int) -> tuple[torch.nn.Module, float]:
    """The Torch-Pruning ratio whose pruned model has about ``target`` parameters (bisection)."""
    lo, hi = 0.0, 0.95
    for _ in range(12):
        mid = (lo + hi) / 2
        if n_params(tp_prune(dense, mid)) > target:
            lo = mid
        else:
            hi = mid
    return tp_prune(dense, hi), hi


def run(args) -> dict:
    vit = _model_file()
    train_set, val_set = vit.data()
    from mnist import mnist_datasets
    test_set = mnist_datasets(seed=0)[2]
    total = args.epochs + args.finetune
    rows, started, git = [], time.perf_counter(), git_state()  # the code this run imports
    dense = train(vit.model(), train_set, total, args.lr, args.batch, args.seed)
    rows.append({"variant": "dense", "params": n_params(dense), "test_acc": test_accuracy(dense, test_set),
                 "epochs": total, "wall_s": time.perf_counter() - started})
    print(rows[-1], flush=True)
    for lam in args.lams:
        t = time.perf_counter()
        result = archc.search(vit.model, train_set, val_set, lam=lam, epochs=args.epochs, lr=args.lr,
                              arch_lr=args.arch_lr, batch_size=args.batch, seed=args.seed, progress=False)
        small = archc.compact(result.model)
        searched = {"params": n_params(small), "test_acc": test_accuracy(small, test_set)}
        small = train(small, train_set, args.finetune, args.lr, args.batch, args.seed)
        rows.append({"variant": f"archc lam={lam:g}", "lam": lam, "params": n_params(small),
                     "test_acc": test_accuracy(small, test_set), "before_finetune": searched,
                     "widths": result.history[-1].get("widths"), "epochs": total, "wall_s": time.perf_counter() - t})
        print(rows[-1], flush=True)
    half_trained = train(vit.model(), train_set, args.epochs, args.lr, args.batch, args.seed)
    for archc_row in [r for r in rows if "lam" in r]:
        t = time.perf_counter()
        pruned, ratio = tp_to_params(half_trained, archc_row["params"])
        before = test_accuracy(pruned, test_set)
        pruned = train(pruned, train_set, args.finetune, args.lr, args.batch, args.seed)
        rows.append({"variant": f"Torch-Pruning to {archc_row['variant']}", "tp_ratio": ratio,
                     "params": n_params(pruned), "test_acc": test_accuracy(pruned, test_set),
                     "before_finetune": {"test_acc": before}, "epochs": total, "wall_s": time.perf_counter() - t})
        print(rows[-1], flush=True)
    return {"experiment": "transformer_search", "command": command_line(), "git": git,
            "machine": machine_info(torch.get_num_threads()),
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "data": {"train": len(train_set), "val": len(val_set), "test": len(test_set)}, "rows": rows}


def markdown(payload: dict) -> str:
    rows, dense = payload["rows"], payload["rows"][0]
    lines = ["# ViT on MNIST: dense vs archc vs Torch-Pruning", "",
             f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']['cpu']} "
             f"({payload['machine']['cpu_count']} CPUs), torch {payload['machine']['torch']}; "
             f"archc at {payload['git'].get('commit', '?')[:7]}  ",
             f"Data: MNIST, {payload['data']['train']} training images, {payload['data']['test']} test images; "
             f"{dense['epochs']} epochs for every variant", "",
             "| variant | parameters | of dense | test accuracy | before fine-tuning | seconds |",
             "|---|--:|--:|--:|--:|--:|"]
    for r in rows:
        before = r.get("before_finetune", {}).get("test_acc")
        lines.append(f"| {r['variant']} | {r['params']:,} | {r['params'] / dense['params']:.2f} | "
                     f"{r['test_acc']:.4f} | {'' if before is None else f'{before:.4f}'} | {r['wall_s']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(payload: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for prefix, marker in (("dense", "s"), ("archc", "o"), ("Torch-Pruning", "^")):
        pts = [(r["params"], r["test_acc"]) for r in payload["rows"] if r["variant"].startswith(prefix)]
        ax.plot(*zip(*sorted(pts)), marker=marker, label=prefix, linestyle="-" if len(pts) > 1 else "")
    ax.set_xlabel("parameters")
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title("ViT on MNIST: accuracy against size (same epochs)")
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
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "transformer_search.json")
    args = ap.parse_args()
    started = time.perf_counter()
    payload = run(args)
    plot(payload, args.out.with_suffix(".png"))
    finish_report(payload, args.out, markdown(payload), started)


if __name__ == "__main__":
    main()
