"""ShrinkNets' MNIST models searched with ``archc.search``: a 3-hidden-layer MLP and LeNet-5.

* MLP 784-500-500-500-10 (ReLU), the upper bound ShrinkNets' random search started from;
* LeNet-5 as in ShrinkNets: conv5(1->50)-ReLU-maxpool2-conv5(50->50)-ReLU-maxpool2-flatten-
  fc(800->5000)-ReLU-fc(5000->10), no padding.

archc gates every hidden unit / conv channel itself (L1 on ShrinkNets gates), Adam lr 1e-3,
batch 256, 80/20 train/validation split of the 60k training images (seed 0), shrinking at each
epoch end. After the last epoch the model is compacted (``archc.compact``) and measured on the
10k test set: test accuracy, units/channels per layer, parameters and non-zero weights.

Compared with (see /work/shared/seeds/NOTES.md): ShrinkNets' medians over 50 random-search runs
(100 epochs MLP / 200 LeNet-5, best-validation epoch): MLP 98.30% at 341 hidden units, LeNet-5
99.34% at 88k params; fixed-size medians 98.19% (1628 units) and 99.21% (65k params); Tessera &
Rosman 97.86% at ~60k active weights. Ours: the final epoch of a few epochs (``--*-epochs``), one run.

Rerun (from the repository root; ~10-15 min on an idle 2-core CPU: MLP 20 epochs, LeNet-5 15 epochs):
    python benchmarks/mnist_mlp_lenet.py
    python benchmarks/mnist_mlp_lenet.py --quick     # 1 epoch each, 10k samples, < 60 s
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, OtherLoad, archc, finish_report, mnist_payload, n_params, write_json  # noqa: E402
from mnist import TensorLoader, add_data_argument, mnist_datasets  # noqa: E402

from archc.search import evaluate  # noqa: E402

PAPER = {  # median test accuracy and size, MNIST (ShrinkNets Table; NOTES.md)
    "mlp": {"shrinknets": "98.30% (341 units)", "fixed": "98.19% (1628 units)", "fixed_l2": "98.00% (1838 units)"},
    "lenet5": {"shrinknets": "99.34% (88k params)", "fixed": "99.21% (65k params)", "fixed_l2": "99.25% (161k params)"},
}
TESSERA = "97.86% at ~60,000 active weights"


class MLP(nn.Module):
    def __init__(self, hidden=(500, 500, 500)) -> None:
        super().__init__()
        sizes = [784, *hidden]
        self.fc1, self.fc2, self.fc3 = (nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        x = torch.relu(self.fc2(x))
        return self.out(torch.relu(self.fc3(x)))


class LeNet5(nn.Module):
    def __init__(self, c1: int = 50, c2: int = 50, fc: int = 5000) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, c1, 5), nn.Conv2d(c1, c2, 5)
        self.fc1, self.fc2 = nn.Linear(c2 * 4 * 4, fc), nn.Linear(fc, 10)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


MODELS = {"mlp": MLP, "lenet5": LeNet5}
OUTPUT = {"mlp": "out", "lenet5": "fc2"}  # the output layer: its 10 units are not searched


def authors_init(model: torch.nn.Module) -> torch.nn.Module:
    """The weights as ShrinkNets' code initialised them: Xavier normal with gain sqrt(2) (biases
    as torch leaves them); the gates archc inserts start in (0, 1] as theirs did. Seeded by a
    generator of its own: archc calls ``model()`` again to rebuild and to count, and every call
    must give the same network without resetting the caller's random state."""
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.xavier_normal_(p, gain=math.sqrt(2), generator=gen)
    return model


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    return (output.argmax(dim=1) == target).float().mean().item()


def layer_sizes(model: nn.Module) -> dict[str, list[int]]:
    """``{layer: [in, out]}`` of every Linear / Conv2d (features or channels)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            out[name] = [m.in_features, m.out_features]
        elif isinstance(m, nn.Conv2d):
            out[name] = [m.in_channels, m.out_channels]
    return out


def nonzero(model: nn.Module) -> dict[str, int]:
    return {"weights": nonzero_weights(model.parameters()),
            "params": sum(int((p != 0).sum()) for p in model.parameters())}


def nonzero_weights(tensors) -> int:
    """Non-zero entries of the weights (tensors of two or more dims: biases do not count)."""
    return sum(int((w != 0).sum()) for w in tensors if w.dim() > 1)


def run_one(name: str, lam: float, epochs: int, data, args) -> dict:
    train, val, test = data
    torch.manual_seed(args.seed)
    model = MODELS[name]()
    t0 = time.perf_counter()
    with OtherLoad() as load:
        # optimizer: archc.search defaults to Adam (passing optimizer="adam" raises, see mnist.md)
        res = archc.search(model, TensorLoader(train, args.batch_size, True, args.seed), TensorLoader(val, 1024),
                           lam=lam, epochs=epochs, batch_size=args.batch_size, lr=args.lr, regularizer="l1",
                           shrink_every=0, out=None, progress=False, seed=args.seed)
    wall = time.perf_counter() - t0
    small = archc.compact(res.model)
    sizes = layer_sizes(small)
    hidden = {k: v[1] for k, v in sizes.items() if k != OUTPUT[name]}
    row = {
        "model": name, "lam": lam, "epochs": epochs, "initial_sizes": layer_sizes(model),
        "compact_sizes": sizes, "hidden_units": hidden, "hidden_units_total": sum(hidden.values()),
        "initial_params": n_params(model), "compact_params": n_params(small), "nonzero": nonzero(small),
        "test_accuracy": evaluate(small, TensorLoader(test, 1024), accuracy),
        "val_accuracy_per_epoch": [h["val_metric"] for h in res.history],
        "widths_per_epoch": [h["widths"] for h in res.history],
        "epoch_seconds": [h["seconds"] for h in res.history],
        "search_wall_s": wall, "other_load_share": round(load.share, 3), "history": res.history,
    }
    print(f"{name} lam={lam:g}: {hidden} params {row['compact_params']:,} test {row['test_accuracy']:.4f} "
          f"epoch s {[round(s, 1) for s in row['epoch_seconds']]} other load {load.share:.2f}", flush=True)
    return row


def render_md(p: dict) -> str:
    s = p["settings"]
    lines = ["### MNIST MLP 784-500-500-500-10 and LeNet-5 (archc.search)", "", f"Command: `{p['command']}`", "",
             f"Adam lr {s['lr']:g}, batch {s['batch_size']}, train {s['n_train']} / val {s['n_val']} / test "
             f"{s['n_test']}, shrink at each epoch end, final epoch evaluated (no best-epoch selection). "
             f"**Epochs here: MLP {s['mlp_epochs']}, LeNet-5 {s['lenet_epochs']}; the paper's medians are "
             "after 100 (MLP) / 200 (LeNet-5) epochs, best validation epoch, 50 random-search runs.** Machine: "
             f"{p['machine']['cpu']}, {p['machine']['cpu_count']} CPUs, torch {p['machine']['torch']}.", "",
             "| model | lambda | epochs | hidden units / channels (compact) | params (start -> compact) "
             "| non-zero weights | val acc (last) | test acc | paper ShrinkNets median | paper fixed-size median "
             "| search wall s |", "|---" * 11 + "|"]
    for r in p["runs"]:
        units = ", ".join(f"{k} {v}" for k, v in r["hidden_units"].items())
        lines.append(
            f"| {r['model']} | {r['lam']:g} | {r['epochs']} | {units} (total {r['hidden_units_total']}) | "
            f"{r['initial_params']:,} -> {r['compact_params']:,} | {r['nonzero']['weights']:,} | "
            f"{100 * r['val_accuracy_per_epoch'][-1]:.2f}% | {100 * r['test_accuracy']:.2f}% | "
            f"{PAPER[r['model']]['shrinknets']} | {PAPER[r['model']]['fixed']} | {r['search_wall_s']:.0f} |")
    lines += ["", f"Tessera & Rosman (MNIST): {TESSERA}.", ""]
    for r in p["runs"]:
        per = "; ".join(f"ep {i + 1}: " + "/".join(str(v) for v in w.values()) + f" ({t:.0f} s)"
                        for i, (w, t) in enumerate(zip(r["widths_per_epoch"], r["epoch_seconds"])))
        layers = "/".join(r["widths_per_epoch"][0])
        lines.append(f"- {r['model']} lambda {r['lam']:g}, widths per epoch ({layers}): {per}")
    loads = [r["other_load_share"] for r in p["runs"]]
    lines += ["", f"Other processes used {min(loads):.0%}..{max(loads):.0%} of the CPUs during the runs "
              "(shared machine: timings are indicative).", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_argument(ap)
    ap.add_argument("--models", default="mlp,lenet5")
    ap.add_argument("--mlp-lams", default="1e-3,1e-4")
    ap.add_argument("--lenet-lams", default="1e-3")
    ap.add_argument("--mlp-epochs", type=int, default=20)
    ap.add_argument("--lenet-epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--limit", type=int, default=None, help="use only this many training (and test) samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true", help="1 epoch each, one lambda each, 10k samples (< 60 s)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/mnist_mlp_lenet[_quick].json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.mlp_epochs = args.lenet_epochs = 1
        args.mlp_lams, args.lenet_lams, args.limit = "1e-3", "1e-3", args.limit or 10000
    out = args.out or RESULTS / ("mnist_mlp_lenet_quick.json" if args.quick else "mnist_mlp_lenet.json")
    torch.set_num_threads(args.threads)
    data = mnist_datasets(args.data, seed=args.seed, limit=args.limit, standardise=args.standardise)
    plan = {"mlp": ([float(x) for x in args.mlp_lams.split(",") if x], args.mlp_epochs),
            "lenet5": ([float(x) for x in args.lenet_lams.split(",") if x], args.lenet_epochs)}
    payload = mnist_payload("shrinknets_mnist_mlp_lenet5", args, data, runs=[],
                            paper={**PAPER, "tessera_rosman": TESSERA, "epochs": {"mlp": 100, "lenet5": 200},
                                   "selection": "best validation epoch, median of 50"})
    t0 = time.perf_counter()
    for name in [m for m in args.models.split(",") if m]:
        lams, epochs = plan[name]
        for lam in lams:
            payload["runs"].append(run_one(name, lam, epochs, data, args))
            write_json(out, payload)
    finish_report(payload, out, render_md(payload), t0)
    return payload


if __name__ == "__main__":
    main()
