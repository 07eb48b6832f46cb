"""ShrinkNets §3.2 random search on MNIST: archc's search against fixed-size networks and fixed + L2.

The paper's protocol (NOTES.md), at the budget two shared cores allow:

* models: the MLP 784-500-500-500-10 its public code started from (the paper's text names an
  upper bound of 5000 units per layer: at 54M weights one run would take hours here), and LeNet-5
  with the paper's upper bound of 50/50/5000 channels/units;
* cells, each ``--runs`` runs with parameters drawn at random (numpy, ``--seed``):
  * ``shrinknets``: ``archc.search`` from the upper bound, L1 on the gates with
    lambda = 10^-U(2,5), shrinking at every epoch end; the best validation epoch's checkpoint
    (``best.pt``) is compacted (``archc.compact``) and measured on the test set;
  * ``fixed``: a plain network, each layer's width log-uniform in [lower, upper];
  * ``fixed_l2``: the same with Adam's L2 weight decay 10^-U(2,5);
* Adam lr 1e-3 (the default), batch 256, an 80/20 train/validation split of the 60k training
  images; every run is evaluated on the 10k test images at its best validation epoch.

Output: ``results/shrinknets_random_search.{json,md,png}``: per run its parameters, size and
accuracies; per cell the median test accuracy and size, beside the paper's medians; a figure
of the test accuracy distributions and of accuracy against size. The JSON is rewritten after
every run, and ``--resume`` skips the runs it holds.

Rerun (from the repository root):
    python benchmarks/shrinknets_random_search.py --models mlp --runs 10 --epochs 30 --threads 1
    python benchmarks/shrinknets_random_search.py --models lenet5 --runs 4 --epochs 10 --threads 1
    python benchmarks/shrinknets_random_search.py --models mlp --runs 10 --epochs 100 --standardise \
        --out benchmarks/results/shrinknets_random_search_mlp_e100_std.json
    python benchmarks/shrinknets_random_search.py --models mlp --cells fixed --runs 20 --epochs 100 --standardise \
        --init authors --out benchmarks/results/shrinknets_random_search_mlp_e100_authors_fixed.json
    python benchmarks/shrinknets_random_search.py --report results/a.json results/b.json   # one table and figure
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, OtherLoad, archc, mnist_payload, n_params, write_json  # noqa: E402
from mnist import TensorLoader, add_data_argument, mnist_datasets  # noqa: E402
from mnist_mlp_lenet import (MODELS, OUTPUT, PAPER, TESSERA, accuracy, authors_init, layer_sizes,  # noqa: E402
                             nonzero, nonzero_weights)

from archc.budget import DEFAULT_REACH  # noqa: E402
from archc.checkpoint import load_checkpoint  # noqa: E402
from archc.rebuild import gated_from_checkpoint  # noqa: E402
from archc.search import evaluate  # noqa: E402

CELLS = ("shrinknets", "fixed", "fixed_l2")
INITS = {"torch": "torch's default init", "authors": "the authors' init (Xavier normal, gain sqrt 2)"}
PAPER_SIZE = {"mlp": ("hidden_units_total", 341), "lenet5": ("params", 88_000)}  # ShrinkNets' median sizes
WIDTHS = {"mlp": [(10, 500)] * 3, "lenet5": [(4, 50), (4, 50), (10, 5000)]}  # (lower, upper) per layer


def draw(cell: str, name: str, rng: np.random.Generator) -> dict:
    """One run's random parameters: lambda, or widths (and weight decay)."""
    if cell == "shrinknets":
        return {"lam": float(10 ** -rng.uniform(2, 5))}
    widths = [int(round(float(np.exp(rng.uniform(np.log(lo), np.log(hi)))))) for lo, hi in WIDTHS[name]]
    return {"widths": widths, "weight_decay": float(10 ** -rng.uniform(2, 5)) if cell == "fixed_l2" else 0.0}


def build(name: str, args, widths=None) -> torch.nn.Module:
    """The model at ``widths`` (its upper bound when None), initialised as ``--init`` says."""
    model = MODELS[name]() if widths is None else (
        MODELS[name](*widths) if name == "lenet5" else MODELS[name](tuple(widths)))
    return authors_init(model) if args.init == "authors" else model


def run_shrinknets(name: str, params: dict, data: tuple, args) -> dict:
    train, val, test = data
    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as out:
        res = archc.search(build(name, args), TensorLoader(train, args.batch_size, True, args.seed), TensorLoader(val, 1024),
                           lam=params["lam"], epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                           regularizer="l1", shrink_every=0, out=out, progress=False, seed=args.seed)
        example = (train.tensors[0][:2],)
        best = gated_from_checkpoint(load_checkpoint(Path(out) / "best.pt"), lambda: build(name, args), example)
    small = archc.compact(best)
    history = [h["val_metric"] for h in res.history]
    return {"val_per_epoch": history, "best_epoch": _best_epoch(history), "model": small}


def run_fixed(name: str, params: dict, data: tuple, args) -> dict:
    """A plain network trained with Adam; its test accuracy is read at every epoch."""
    train, val, test = data
    torch.manual_seed(args.seed)
    model = build(name, args, params["widths"])
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=params["weight_decay"])
    loader, vals, tests, states = TensorLoader(train, args.batch_size, True, args.seed), [], [], []
    for _ in range(args.epochs):
        model.train()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        vals.append(evaluate(model, TensorLoader(val, 1024), accuracy))
        tests.append(evaluate(model, TensorLoader(test, 1024), accuracy))
    best = _best_epoch(vals)
    return {"val_per_epoch": vals, "test_per_epoch": tests, "best_epoch": best, "model": model, "test": tests[best - 1]}


def _best_epoch(history: list[float]) -> int:
    """1-based; ties go to the later epoch (archc's best.pt rule, search.best_record)."""
    top = max(history)
    return max(i + 1 for i, v in enumerate(history) if v == top)


def one_run(cell: str, name: str, index: int, params: dict, data: tuple, args) -> dict:
    started = time.perf_counter()
    with OtherLoad() as load:
        out = (run_shrinknets if cell == "shrinknets" else run_fixed)(name, params, data, args)
    model = out.pop("model")
    test = out.pop("test", None)
    if test is None:
        test = evaluate(model, TensorLoader(data[2], 1024), accuracy)
    sizes = layer_sizes(model)
    hidden = {k: v[1] for k, v in sizes.items() if k != OUTPUT[name]}
    row = {"cell": cell, "model": name, "run": index, **params, **out, "test_accuracy": test,
           "hidden_units": hidden, "hidden_units_total": sum(hidden.values()), "params": n_params(model),
           "nonzero_weights": nonzero(model)["weights"], "wall_s": time.perf_counter() - started,
           "other_load_share": round(load.share, 3)}
    print(f"{name} {cell} #{index}: {params} -> {hidden} params {row['params']:,} best epoch {row['best_epoch']} "
          f"test {test:.4f} ({row['wall_s']:.0f} s)", flush=True)
    return row


def summary(runs: list[dict]) -> list[dict]:
    rows = []
    for name in MODELS:
        for cell in CELLS:
            mine = [r for r in runs if r["model"] == name and r["cell"] == cell]
            if mine:
                rows.append({"model": name, "cell": cell, "runs": len(mine),
                             "median_test": statistics.median(r["test_accuracy"] for r in mine),
                             "median_units": statistics.median(r["hidden_units_total"] for r in mine),
                             "median_params": statistics.median(r["params"] for r in mine),
                             "best_test": max(r["test_accuracy"] for r in mine),
                             "median_epoch": statistics.median(r["best_epoch"] for r in mine),
                             "paper": PAPER[name][cell]})
    return rows


def render_md(payload: dict) -> str:
    s, runs = payload["settings"], payload["runs"]
    lines = ["### ShrinkNets §3.2 random search on MNIST: archc against fixed-size networks", "",
             f"Command: `{payload['command']}`", "",
             f"{s['epochs']} epochs per run (the paper: 100 MLP / 200 LeNet-5), Adam lr {s['lr']:g}, batch "
             f"{s['batch_size']}, train {s['n_train']} / validation {s['n_val']} / test {s['n_test']}, inputs "
             f"{'standardised by the training split' if s.get('standardise') else 'in [0, 1]'}, "
             f"{INITS[s.get('init', 'torch')]}; every run is "
             "measured on the test set at its best validation epoch. Machine: "
             f"{payload['machine']['cpu']}, {payload['machine']['cpu_count']} CPUs, {s['threads']} torch thread(s), "
             f"torch {payload['machine']['torch']}.", "",
             "| model | cell | runs | median test accuracy | best | median hidden units | median parameters "
             "| median best epoch | paper median (50 runs) |", "|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for r in summary(runs):
        lines.append(f"| {r['model']} | {r['cell']} | {r['runs']} | {100 * r['median_test']:.2f}% | "
                     f"{100 * r['best_test']:.2f}% | {r['median_units']:.0f} | {r['median_params']:,.0f} | "
                     f"{r['median_epoch']:.0f} | {r['paper']} |")
    lines += ["", *(_at_paper_size(runs, name) for name in MODELS if any(r["model"] == name for r in runs))]
    sparse = [r for r in runs if r["cell"] == "shrinknets" and r["nonzero_weights"] <= 60000]
    best_sparse = max(sparse, key=lambda r: r["test_accuracy"], default=None)
    lines += ["", f"Tessera & Rosman (MNIST): {TESSERA}. Here, the best ShrinkNets run with at most 60,000 "
              "non-zero weights: " + (f"{100 * best_sparse['test_accuracy']:.2f}% ({best_sparse['model']}, "
                                      f"{best_sparse['nonzero_weights']:,} weights)" if best_sparse else "none"), "",
              "| model | cell | run | lambda / widths | weight decay | hidden units | parameters | best epoch "
              "| test accuracy | wall s |", "|---|---|--:|---|--:|---|--:|--:|--:|--:|"]
    for r in runs:
        what = f"{r['lam']:.2e}" if "lam" in r else "/".join(map(str, r["widths"]))
        units = "/".join(str(v) for v in r["hidden_units"].values())
        lines.append(f"| {r['model']} | {r['cell']} | {r['run']} | {what} | {r.get('weight_decay', 0):.1e} | {units} | "
                     f"{r['params']:,} | {r['best_epoch']} | {100 * r['test_accuracy']:.2f}% | {r['wall_s']:.0f} |")
    loads = [r["other_load_share"] for r in runs if r["other_load_share"] is not None] or [0.0]
    lines += ["", f"Other processes used {min(loads):.0%}..{max(loads):.0%} of the CPUs during the runs.", ""]
    return "\n".join(lines)


def _at_paper_size(runs: list[dict], name: str) -> str:
    """The ShrinkNets runs no larger than the paper's median ShrinkNets size, and their median."""
    key, size = PAPER_SIZE[name]
    small = [r for r in runs if r["model"] == name and r["cell"] == "shrinknets" and r[key] <= size]
    told = f"{100 * statistics.median(r['test_accuracy'] for r in small):.2f}% median test accuracy" if small else "none"
    return f"{name}: ShrinkNets runs with at most the paper's median size ({size:,} {key}): {len(small)}, {told}."


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in MODELS if any(r["model"] == n for r in runs)]
    fig, axes = plt.subplots(2, len(names), figsize=(5.5 * len(names), 8), squeeze=False)
    for col, name in enumerate(names):
        mine = [[100 * r["test_accuracy"] for r in runs if r["model"] == name and r["cell"] == c] for c in CELLS]
        axes[0][col].boxplot([m or [float("nan")] for m in mine])
        axes[0][col].set_xticks(range(1, len(CELLS) + 1), CELLS)
        axes[0][col].set_title(f"{name}: test accuracy at the best validation epoch")
        axes[0][col].set_ylabel("test accuracy (%)")
        for cell, marker in zip(CELLS, "o^s"):
            pts = [(r["params"], 100 * r["test_accuracy"]) for r in runs if r["model"] == name and r["cell"] == cell]
            if pts:
                axes[1][col].scatter(*zip(*pts), marker=marker, label=cell)
        axes[1][col].set_xscale("log")
        axes[1][col].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # labels on decades only
        axes[1][col].set_xlabel("parameters (compact model for shrinknets)")
        axes[1][col].set_ylabel("test accuracy (%)")
        axes[1][col].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_argument(ap)
    ap.add_argument("--models", default="mlp", help="comma-separated: mlp, lenet5")
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--runs", type=int, default=10, help="runs per cell")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="data split, initialisation and the random draws")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", choices=("torch", "authors"), default="torch",
                    help="torch's default init, or ShrinkNets' code's (Xavier normal, gain sqrt 2), as the tune model files")
    ap.add_argument("--limit", type=int, default=None, help="only this many samples (smoke runs)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default results/shrinknets_random_search_<models>.json)")
    ap.add_argument("--resume", action="store_true", help="keep the runs the JSON holds; do the rest")
    ap.add_argument("--report", nargs="*", type=Path,
                    help="only rebuild the table and figure from these JSONs (FILE:CELL,CELL takes only those cells)")
    ap.add_argument("--report-out", type=Path, default=RESULTS / "shrinknets_random_search.md",
                    help="where --report writes its table (the figure goes beside it)")
    ap.add_argument("--tune-trials", type=Path, default=None,
                    help="with --report: an archc tune study's trials.json, whose trials are the ShrinkNets cell")
    ap.add_argument("--tune-model", default="mlp", help="the model (mlp or lenet5) of --tune-trials")
    return ap.parse_args(argv)


def report(paths: list[Path], out: Path, tune_trials: Optional[Path] = None, tune_model: str = "mlp") -> None:
    """One table and figure over several JSONs (the MLP and LeNet-5 runs ran as two processes).
    With ``tune_trials`` (an ``archc tune`` study's trials.json), its complete trials are the
    ShrinkNets cell of ``tune_model`` in place of the JSONs' own; the merged runs go to a JSON
    beside the table."""
    payloads, runs = [], []
    for path in paths:  # "file.json:fixed,fixed_l2" takes only those cells of the file
        name, _, cells = str(path).partition(":")
        payloads.append(json.loads(Path(name).read_text()))
        runs += [r for r in payloads[-1]["runs"] if not cells or r["cell"] in cells.split(",")]
    commands = [p["command"] for p in payloads]
    if tune_trials is not None:
        study = json.loads(tune_trials.read_text())
        runs = [r for r in runs if (r["model"], r["cell"]) != (tune_model, "shrinknets")] + tune_runs(study, tune_model)
        commands.append(tune_command(study["settings"]))
    merged = {**payloads[0], "runs": runs, "command": " ; ".join(commands),
              "settings": {**payloads[0]["settings"],
                           "epochs": ", ".join(f"{p['settings']['models']} {p['settings']['epochs']}" for p in payloads)}}
    if tune_trials is not None:
        write_json(out.with_suffix(".json"), merged)
    out.write_text(render_md(merged))
    plot(merged["runs"], out.with_suffix(".png"))
    print(out.read_text())


def tune_runs(study: dict, name: str) -> list[dict]:
    """An ``archc tune`` study's complete trials as rows of the ShrinkNets cell: the compact
    model of each trial's best validation epoch, measured on ``test_data()`` by archc itself."""
    rows = []
    for t in study["trials"]:
        if t["state"] != "COMPLETE":
            continue
        folder = Path(t["folder"])
        hidden = {k: v for k, v in t["widths"].items() if k != OUTPUT[name]}
        seconds = [json.loads(line)["seconds"] for line in (folder / "log.jsonl").read_text().splitlines()]
        rows.append({"cell": "shrinknets", "model": name, "run": t["trial"], "lam": t["lam"], "best_epoch": t["epoch"],
                     "test_accuracy": t["test_metric"], "hidden_units": hidden,
                     "hidden_units_total": sum(hidden.values()), "params": t["size"],
                     "nonzero_weights": trial_nonzero_weights(folder),
                     "wall_s": sum(seconds), "other_load_share": None})
    return rows


def trial_nonzero_weights(folder: Path) -> int:
    """The non-zero weights of a tune trial's compact model (its ``compact/weights.safetensors``)."""
    return nonzero_weights(load_file(str(folder / "compact" / "weights.safetensors")).values())


def tune_command(settings: dict) -> str:
    """The ``archc tune`` command line of a study's settings (trials.json)."""
    ranges = " ".join(f"--{k.replace('_', '-')} " + (f"{v[0]:g}" if v[0] == v[1] else f"{v[0]:g},{v[1]:g}")
                      for k, v in settings.items() if k.endswith("_range"))
    return (f"archc tune {settings['model_file']} --sampler {settings['sampler']} {ranges} --pick {settings['pick']} "
            f"--epochs {settings['epochs']} --trials {settings['trials']} --workers {settings['workers']} "
            f"--objective {settings['objective']} --out {settings['out']}"
            + (f" --seed {settings['seed']}" if settings.get("seed") else "")
            + (f" --target {settings['target']}" if settings.get("target") else "")
            + (f" --target-reach {settings['target_reach']:g}" if settings.get("target_reach", DEFAULT_REACH) != DEFAULT_REACH else ""))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.report is not None:
        return report(args.report or sorted(RESULTS.glob("shrinknets_random_search_*.json")), args.report_out,
                      args.tune_trials, args.tune_model)
    torch.set_num_threads(args.threads)
    # strong weight decay leaves denormal weights (below 1.2e-38), which the CPU handles many times
    # slower (a fixed + L2 run at decay 1e-2 ran for 25 min without ending); flushed to zero instead
    torch.set_flush_denormal(True)
    models = [m for m in args.models.split(",") if m]
    out = args.out or RESULTS / f"shrinknets_random_search_{'_'.join(models)}.json"
    data = mnist_datasets(args.data, seed=args.seed, limit=args.limit, standardise=args.standardise)
    payload = mnist_payload("shrinknets_random_search", args, data, runs=[],
                            paper={**PAPER, "tessera_rosman": TESSERA, "epochs": {"mlp": 100, "lenet5": 200}, "runs": 50})
    if args.resume and out.exists():
        payload["runs"] = json.loads(out.read_text())["runs"]
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    for name in models:
        for index in range(args.runs):
            for cell in [c for c in args.cells.split(",") if c]:
                params = draw(cell, name, rng)  # drawn even when the run is kept: the same draws on resume
                if any(r["model"] == name and r["cell"] == cell and r["run"] == index for r in payload["runs"]):
                    continue
                payload["runs"].append(one_run(cell, name, index, params, data, args))
                write_json(out, payload)
    payload["total_wall_s"] = time.perf_counter() - started
    write_json(out, payload)
    out.with_suffix(".md").write_text(render_md(payload))
    plot(payload["runs"], out.with_suffix(".png"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
