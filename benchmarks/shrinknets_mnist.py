"""ShrinkNets' convergence experiment on MNIST, run with ``archc.search``.

Model: 784 -> Linear(10000) -> ReLU -> Linear(10) (input flattened); archc gates the 10000
hidden units by itself (ShrinkNets' Filter, ``x * relu(theta)``, L1 penalty ``lam * sum relu(theta)``).
Adam (lr 1e-3), batch 256, lambda in 1e-1 .. 1e-5, 80/20 train/validation split of the 60k
training images (seed 0), the 10k test set for the final accuracy.

Measured, per lambda:
* hidden units alive after each epoch (``history[i]["widths"]``),
* validation accuracy after each epoch, test accuracy of ``archc.compact(result.model)``,
* wall seconds of each training epoch WITH shrinking at every epoch end (``shrink_every=0``,
  the shrink itself included) and, for ``--noshrink-lams``, WITHOUT shrinking
  (``shrink_every=-1``: gates close but the layer keeps its 10000 units; ``--noshrink-epochs``,
  default 6), right after its shrinking twin, to show the speed-up as the model shrinks.

The ShrinkNets paper trained 100 epochs; its batch-256 figures (see
/work/shared/seeds/NOTES.md) are printed beside ours, but ours come from ``--epochs`` epochs only.
Output: ``--out`` JSON (machine, command, settings, every figure), a PNG beside it
(hidden units vs epoch per lambda, log y; seconds per epoch) and a markdown table (.md).

Rerun (from the repository root; 20 epochs per lambda by default: ~12 min on an idle 2-core CPU,
about 4x longer while other processes load it):
    python benchmarks/shrinknets_mnist.py
    python benchmarks/shrinknets_mnist.py --lams 1e-3 --epochs 6 --out benchmarks/results/shrinknets_mnist_timing.json
    python benchmarks/shrinknets_mnist.py --quick     # smoke: 1 epoch, 2 lambdas, 10k samples,
                                                      # 2000 hidden units (10000 does not fit 60 s), < 60 s
"""
from __future__ import annotations

import argparse
import json
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

PAPER_UNITS_100 = {1e-1: 25, 1e-2: 54, 1e-3: 104, 1e-4: 172, 1e-5: 441}  # batch 256, 100 epochs
PAPER_1E5_TRAJECTORY = {1: 9836, 5: 8825, 10: 7292, 25: 4011, 50: 1125, 100: 441}  # lam 1e-5, batch 256


class ShrinkMLP(nn.Module):
    """784 -> hidden -> ReLU -> 10; the hidden layer is the one archc gates and shrinks."""

    def __init__(self, hidden: int = 10000) -> None:
        super().__init__()
        self.hidden = nn.Linear(784, hidden)
        self.out = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x.flatten(1))))


class LoadTrackingLoader(TensorLoader):
    """TensorLoader that records, for each full pass (= one training epoch), the CPU share of
    *other* processes while it ran: the machine may be shared, and that slows an epoch down."""

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.loads: list[float] = []

    def __iter__(self):
        with OtherLoad() as load:
            yield from super().__iter__()
        self.loads.append(round(load.share, 3))


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    return (output.argmax(dim=1) == target).float().mean().item()


def hidden_units(widths: dict) -> int:
    return int(widths["hidden"]) if "hidden" in widths else int(sum(widths.values()))


def run_one(lam: float, shrink: bool, data, args, epochs: int) -> dict:
    """One search; returns its figures (history, units per epoch, test accuracy, timings)."""
    train, val, test = data
    torch.manual_seed(args.seed)
    model = ShrinkMLP(args.hidden)
    t0 = time.perf_counter()
    loader = LoadTrackingLoader(train, args.batch_size, True, args.seed)
    with OtherLoad() as load:
        res = archc.search(model, loader,
                           TensorLoader(val, 1024), lam=lam, epochs=epochs, batch_size=args.batch_size,
                           lr=args.lr, regularizer="l1", shrink_every=0 if shrink else -1,
                           out=None, progress=False, seed=args.seed)
    train_wall = time.perf_counter() - t0
    small = archc.compact(res.model)
    test_loader = TensorLoader(test, 1024)
    test_acc = evaluate(small, test_loader, accuracy)
    gated_acc = evaluate(res.model, test_loader, accuracy)
    units = [hidden_units(h["widths"]) for h in res.history]
    row = {
        "lam": lam, "shrink": shrink, "epochs": len(res.history), "units_per_epoch": units,
        "epoch_seconds": [h["seconds"] for h in res.history],
        "val_accuracy_per_epoch": [h["val_metric"] for h in res.history],
        "train_loss_per_epoch": [h["train_loss"] for h in res.history],
        "final_units": units[-1], "compact_hidden": small.get_submodule("hidden").out_features
        if hasattr(small, "hidden") else None,
        "compact_params": n_params(small), "initial_params": n_params(model),
        "test_accuracy": test_acc, "gated_test_accuracy": gated_acc,
        "other_load_per_epoch": loader.loads[-len(res.history):], "search_wall_s": train_wall,
        "other_load_share": round(load.share, 3), "history": res.history,
    }
    tag = "shrink" if shrink else "no-shrink"
    print(f"lam={lam:g} {tag}: units/epoch {units}, test acc {test_acc:.4f}, "
          f"epoch s {[round(s, 1) for s in row['epoch_seconds']]}, other load {load.share:.2f}", flush=True)
    return row


def warm_up(hidden: int, batch_size: int, steps: int = 10) -> None:
    """A few Adam steps of the full-width model, so that the first timed epoch carries no
    one-off process start costs (allocator growth, kernel selection): measured 10-25% otherwise."""
    model, x = ShrinkMLP(hidden), torch.rand(batch_size, 1, 28, 28)
    opt, y = torch.optim.Adam(model.parameters()), torch.randint(0, 10, (batch_size,))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def render_md(p: dict) -> str:
    s, runs, ns = p["settings"], p["runs"], p["no_shrink"]
    e = s["epochs"]
    shown = sorted({i for i in (1, 2, 3, 5, 10, 15, 20, 25, 50, 100) if i <= e} | {e})  # epochs in the table
    lines = [f"### ShrinkNets convergence, MNIST, 784-{s['hidden']}-10 (archc.search)", "",
             f"Command: `{p['command']}`", "",
             f"**{e} epoch(s) per lambda here; the paper's figures are after 100 epochs** (batch 256, "
             f"Adam lr {s['lr']:g}; ours: batch {s['batch_size']}, train {s['n_train']} / val {s['n_val']} / "
             f"test {s['n_test']}). Machine: {p['machine']['cpu']}, {p['machine']['cpu_count']} CPUs, "
             f"torch {p['machine']['torch']}.", "",
             "| lambda | " + " | ".join(f"units ep {i}" for i in shown)
             + " | paper units @100 ep | val acc (last) | test acc (compact) | compact params | train s (sum of epochs) |",
             "|---" * (len(shown) + 6) + "|"]
    for r in runs:
        paper = PAPER_UNITS_100.get(r["lam"], "")
        lines.append(f"| {r['lam']:g} | " + " | ".join(str(r["units_per_epoch"][i - 1]) for i in shown)
                     + f" | {paper} | {100 * r['val_accuracy_per_epoch'][-1]:.2f}% | {100 * r['test_accuracy']:.2f}% | "
                       f"{r['compact_params']:,} | {sum(r['epoch_seconds']):.0f} |")
    lines += ["", f"Paper, lambda 1e-5, batch 256: units after epochs "
              + ", ".join(f"{k}: {v}" for k, v in PAPER_1E5_TRAJECTORY.items()) + ".", ""]
    for n in ns:
        w = next((r for r in runs if r["lam"] == n["lam"]), None)
        if w is None:
            continue
        lines += [f"Seconds per training epoch, lambda {n['lam']:g}, with shrinking at each epoch end "
                  f"(shrink included) vs without (gates close, layer stays {s['hidden']} wide; "
                  f"{n['epochs']} epochs):", "",
                  "| epoch | units (shrink) | s with shrink | s without | speed-up | other load (with / without) |",
                  "|---|---|---|---|---|---|"]
        for i, (a, b) in enumerate(zip(w["epoch_seconds"], n["epoch_seconds"])):
            la, lb = (x["other_load_per_epoch"][i] if i < len(x.get("other_load_per_epoch", [])) else float("nan")
                      for x in (w, n))
            lines.append(f"| {i + 1} | {w['units_per_epoch'][i]} | {a:.1f} | {b:.1f} | {b / a:.2f}x | "
                         f"{la:.0%} / {lb:.0%} |")
        k = n["epochs"]
        lines += ["", f"After {k} epoch(s), without shrinking: units alive {n['units_per_epoch'][-1]}, val acc "
                  f"{100 * n['val_accuracy_per_epoch'][-1]:.2f}%, test acc {100 * n['test_accuracy']:.2f}%; with "
                  f"shrinking: units {w['units_per_epoch'][k - 1]}, "
                  f"val acc {100 * w['val_accuracy_per_epoch'][k - 1]:.2f}%. "
                  f"Training time of those {k} epochs: {sum(n['epoch_seconds']):.0f} s without vs "
                  f"{sum(w['epoch_seconds'][:k]):.0f} s with shrinking.", ""]
    loads = [r["other_load_share"] for r in runs + ns]
    lines += [f"Other processes used {min(loads):.0%}..{max(loads):.0%} of the CPUs during the runs "
              "(shared machine: timings are indicative).", ""]
    return "\n".join(lines)


def plot(p: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.8))
    h = p["settings"]["hidden"]
    for r in p["runs"]:
        line, = ax.plot(range(0, r["epochs"] + 1), [h] + r["units_per_epoch"], "o-", label=f"λ={r['lam']:g}")
        if r["lam"] in PAPER_UNITS_100:
            ax.plot([100], [PAPER_UNITS_100[r["lam"]]], "*", ms=11, color=line.get_color())
        bx.plot(range(1, r["epochs"] + 1), r["epoch_seconds"], "o-", color=line.get_color(),
                label=f"λ={r['lam']:g}, shrink")
    ax.plot([0, *PAPER_1E5_TRAJECTORY], [10000, *PAPER_1E5_TRAJECTORY.values()], "k:", lw=1,
            label="paper λ=1e-5 (batch 256)")
    for n in p["no_shrink"]:
        bx.plot(range(1, n["epochs"] + 1), n["epoch_seconds"], "s--k", label=f"λ={n['lam']:g}, no shrink")
    ax.set(xscale="symlog", yscale="log", xlabel="epoch (symlog; stars: paper after 100 epochs)",
           ylabel="hidden units alive", title=f"MNIST 784-{h}-10: hidden units vs epoch")
    bx.set(xlabel="epoch", ylabel="train seconds per epoch", title="epoch wall time", ylim=(0, None))
    ax.legend(fontsize=8), bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_argument(ap)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--noshrink-epochs", type=int, default=6, help="epochs of the runs without shrinking")
    ap.add_argument("--lams", default="1e-1,1e-2,1e-3,1e-4,1e-5", help="comma-separated lambdas")
    ap.add_argument("--noshrink-lams", default="1e-3", help="lambdas also run without shrinking ('' for none)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--hidden", type=int, default=None, help="hidden units (default 10000; 2000 with --quick)")
    ap.add_argument("--limit", type=int, default=None, help="use only this many training (and test) samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 epoch, lambdas 1e-1 and 1e-3, 10k samples, 2000 hidden (< 60 s)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/shrinknets_mnist[_quick].json)")
    ap.add_argument("--render", type=Path, default=None, help="only redraw the PNG and .md of this JSON")
    args = ap.parse_args(argv)
    if args.render:
        payload = json.loads(args.render.read_text())
        for r in payload["runs"] + payload["no_shrink"]:
            r["lam"] = float(r["lam"])
        plot(payload, args.render.with_suffix(".png"))
        args.render.with_suffix(".md").write_text(render_md(payload))
        return payload
    if args.quick:
        args.epochs = args.noshrink_epochs = 1
        args.lams, args.limit, args.noshrink_lams = "1e-1,1e-3", args.limit or 10000, "1e-1"
        args.hidden = args.hidden or 2000
    args.hidden = args.hidden or 10000
    out = args.out or RESULTS / ("shrinknets_mnist_quick.json" if args.quick else "shrinknets_mnist.json")
    torch.set_num_threads(args.threads)
    lams = [float(x) for x in args.lams.split(",") if x]
    noshrink = [float(x) for x in args.noshrink_lams.split(",") if x]
    data = mnist_datasets(args.data, seed=args.seed, limit=args.limit, standardise=args.standardise)
    payload = mnist_payload(
        "shrinknets_convergence_mnist", args, data, settings={"lams": lams, "noshrink_lams": noshrink},
        paper={"units_after_100_epochs_batch256": {f"{k:g}": v for k, v in PAPER_UNITS_100.items()},
               "lam1e-5_batch256_units_by_epoch": PAPER_1E5_TRAJECTORY, "epochs": 100},
        note=f"{args.epochs} epoch(s) per lambda here; the paper's figures are after 100 epochs.", runs=[], no_shrink=[])
    warm_up(args.hidden, args.batch_size)
    t0 = time.perf_counter()
    for lam in lams + [x for x in noshrink if x not in lams]:
        if lam in lams:
            payload["runs"].append(run_one(lam, True, data, args, args.epochs))
            write_json(out, payload)
        if lam in noshrink:  # right after its shrinking twin, so both see similar machine load
            payload["no_shrink"].append(run_one(lam, False, data, args, args.noshrink_epochs))
            write_json(out, payload)
    plot(payload, out.with_suffix(".png"))
    finish_report(payload, out, render_md(payload), t0)
    return payload


if __name__ == "__main__":
    main()
