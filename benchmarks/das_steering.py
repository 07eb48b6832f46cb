"""Differentiable architecture search (Shin, Packer & Song 2018), Table 1, on a steering stand-in.

PilotNet (Bojarski et al. 2016: input x*2-1; conv 24,36,48 5x5 stride 2; conv 64,64 3x3; FC 100,
50, 10, 1; ELU; BatchNorm after each conv unless --no-bn) is trained plainly (Adam) as the baseline,
then searched with ``archc.search`` on the same data, epochs, batch size, seed and initial weights:
  channels   ShrinkNets gates, regularizer l1 (lam)
  kernels    filter sizes, kernel_lam > 0, regularizer none (the first three convs choose heights and
             widths in 1..5, the next two in 1..3: archc's default candidates)
  grouped    patterns=4 (group_lam, exclusive_lam) with gates (l1, lam), compacted at t = 1e-4, 1e-3, 1e-2
  ch+kernels gates and filter sizes together
Each row is the COMPACT model (``archc.compact(res.model, threshold=0, search_threshold=t)``); a
"+ftN" row is that compact model after N epochs of plain training (the paper's optional last step,
"resume training of the network for a short period"), fresh Adam at --finetune-lr. Each row is
then evaluated (train/test RMSE), counted (``archc.flops.count``, which includes the 0/1 scatter conv
of the "patterns" form), exported with ``export_onnx`` and timed in onnxruntime
(CPU provider, batch 1, median of 50 runs after 10 warm-up; 2 threads as asked, and 1 thread).
Data: the procedural stand-in of ``steering_data.py`` (Udacity is not available here).

Search parameters (alphas, P, S, gate thetas) get their own Adam lr (--arch-lr, 1e-2, archc.search's
arch_lr): at the weights' 1e-3 an alpha starting at 1 needs >= 1000 steps to reach zero (this budget:
1250 steps).
Training uses --threads torch threads (default 1: on this shared 2-core machine two
threads ran 2-8x slower than one).

Run (from the repository root; about 25 + 8 + 5 min at one thread on a 2-core CPU):
    python benchmarks/das_steering.py
    python benchmarks/das_steering.py --no-baseline --only kernels channels+kernels --kernel-weighting area --kernel-lam 1e-2 \
        --out benchmarks/results/das_steering.kernels_area.json
    python benchmarks/das_steering.py --no-baseline --only grouped+channels --group-lam 1e-4 --exclusive-lam 1e-3 \
        --out benchmarks/results/das_steering.grouped_lam1e-4.json
    python benchmarks/das_steering.py --no-baseline --only channels --lam 1e-5 --out benchmarks/results/das_steering.channels_lam1e-5.json
    python benchmarks/das_steering.py --no-baseline --only grouped+channels --lam 1e-5 --group-lam 3e-5 --exclusive-lam 3e-4 \
        --out benchmarks/results/das_steering.grouped_lam1e-5.json
    python benchmarks/das_steering.py --no-baseline --only grouped+channels --lam 1e-6 --group-lam 3e-5 --exclusive-lam 3e-4 \
        --out benchmarks/results/das_steering.grouped_lam1e-6.json
    python benchmarks/das_steering.py --no-baseline --only grouped+channels --lam 1e-6 --group-lam 3e-5 --exclusive-lam 3e-4 \
        --patterns-init partition --out benchmarks/results/das_steering.grouped_partition.json
    python benchmarks/das_steering.py --no-baseline --only grouped+channels --lam 0 --group-lam 3e-5 --exclusive-lam 3e-4 \
        --patterns-init partition --out benchmarks/results/das_steering.grouped_partition_nogates.json
    python benchmarks/das_steering.py --seed 1 --only grouped+channels --lam 0 --group-lam 3e-5 --exclusive-lam 3e-4 \
        --patterns-init partition --out benchmarks/results/das_steering.grouped_partition_nogates_seed1.json  # and --seed 2
    python benchmarks/das_steering.py --no-baseline --only channels --lam 1e-5 --gate-weighting params \
        --out benchmarks/results/das_steering.channels_params_lam1e-5.json  # and --lam 5e-5 (..._lam5e-5.json)
    python benchmarks/das_steering.py --epochs 30 --only channels --lam 1e-5 \
        --out benchmarks/results/das_steering.e30_channels_lam1e-5.json  # its own 30-epoch baseline
    python benchmarks/das_steering.py --epochs 30 --no-baseline --only channels --lam 1e-5 --gate-weighting params \
        --out benchmarks/results/das_steering.e30_channels_params_lam1e-5.json  # and --lam 5e-5, --lam 3e-6 (..._seed0)
    python benchmarks/das_steering.py --seed 1 --epochs 30 --only channels --lam 1e-5 \
        --out benchmarks/results/das_steering.e30_channels_lam1e-5_seed1.json  # then --no-baseline --gate-weighting
        # params, at --lam 1e-5 and 3e-6 (das_steering.e30_channels_params_lam1e-5_seed1.json, ..._lam3e-6_seed1.json)
    python benchmarks/das_steering.py --seed 0 --epochs 30 --no-baseline --only channels --lam 1e-5 --gate-weighting params \
        --target params=0.1 --out benchmarks/results/das_steering.e30_channels_params_target0.1_seed0.json  # and --seed 1
    python benchmarks/das_steering.py --seed 2 --epochs 30 --only channels grouped+channels --lam 1e-5 --gate-weighting params \
        --group-lam 3e-5 --exclusive-lam 3e-4 --target params=0.1 \
        --out benchmarks/results/das_steering.e30_params_target0.1_seed2.json  # and --seed 3; with their own baselines
    python benchmarks/das_steering.py --seed 2 --epochs 30 --no-baseline --only grouped+channels --lam 1e-5 \
        --gate-weighting params --group-lam 3e-5 --exclusive-lam 3e-4 --target params=0.1 \
        --out benchmarks/results/das_steering.e30_grouped_target0.1_frozen_seed2.json  # and --seed 3 (after e5742da)
    python benchmarks/das_steering.py --seed 0 --epochs 30 --no-baseline --only channels --lam 1e-5 --gate-weighting params \
        --target params=0.1 --target-reach 0.3 \
        --out benchmarks/results/das_steering.e30_channels_params_target0.1_reach0.3_seed0.json  # seeds 1-3; and 0.8
    python benchmarks/das_steering.py --seed 2 --epochs 30 --no-baseline --only grouped+channels --lam 1e-5 \
        --gate-weighting params --group-lam 3e-5 --exclusive-lam 3e-4 --target params=0.1 --target-reach 0.8 \
        --out benchmarks/results/das_steering.e30_grouped_target0.1_reach0.8_seed2.json  # and --seed 3
    python benchmarks/das_steering.py --report     # das_steering.md/.png: main run + the follow-ups
    python benchmarks/das_steering.py --quick      # smoke test, < 90 s -> das_steering.quick.*
Output: benchmarks/results/das_steering.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (RESULTS, OtherLoad, archc, command_line, error_record, git_state, machine_info, n_params,  # noqa: E402
                     write_json)
from das_report import PAPER, arch_text, write_report  # noqa: E402
from steering_data import baseline_rmse, make_dataset  # noqa: E402

from archc.budget import DEFAULT_REACH  # noqa: E402
from archc.compact import FINAL, compaction  # noqa: E402
from archc.export import export_onnx  # noqa: E402



class PilotNet(nn.Module):
    def __init__(self, bn: bool = False) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 24, 5, 2), nn.Conv2d(24, 36, 5, 2), nn.Conv2d(36, 48, 5, 2)
        self.conv4, self.conv5 = nn.Conv2d(48, 64, 3), nn.Conv2d(64, 64, 3)
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) if bn else nn.Identity() for c in (24, 36, 48, 64, 64))
        self.fc1, self.fc2, self.fc3, self.fc4 = nn.Linear(1152, 100), nn.Linear(100, 50), nn.Linear(50, 10), nn.Linear(10, 1)
        if INIT == "he":  # He init: PyTorch's default shrinks the signal ~3x per layer, a long plateau without BN
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                    nn.init.zeros_(m.bias)
            nn.init.normal_(self.fc4.weight, std=0.01)  # start near predicting 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2.0 - 1.0
        for conv, norm in zip((self.conv1, self.conv2, self.conv3, self.conv4, self.conv5), self.norms):
            x = F.elu(norm(conv(x)))
        x = F.elu(self.fc1(x.flatten(1)))
        return self.fc4(F.elu(self.fc3(F.elu(self.fc2(x)))))


BN = True
INIT = "default"  # "he": He init + small fc4 (used with --no-bn: default init plateaus long without BN)
SEED = 0  # --seed: the initial weights, the search's seed and the fine-tuning's shuffling


def new_pilotnet() -> PilotNet:
    torch.manual_seed(SEED)  # every run of one invocation starts from the same weights
    return PilotNet(BN)


@torch.no_grad()
def rmse(model: nn.Module, ds, batch: int = 250) -> float:
    model.eval()
    x, y = ds.tensors
    se = sum(float((model(x[i:i + batch]) - y[i:i + batch]).pow(2).sum()) for i in range(0, len(y), batch))
    return (se / len(y)) ** 0.5


def train_plain(model: nn.Module, train, epochs: int, batch: int, lr: float) -> list[dict]:
    opt, gen, history = torch.optim.Adam(model.parameters(), lr=lr), torch.Generator().manual_seed(SEED), []
    loader = torch.utils.data.DataLoader(train, batch_size=batch, shuffle=True, generator=gen)
    for epoch in range(epochs):
        model.train()
        t0, losses = time.perf_counter(), []
        for x, y in loader:
            loss = F.mse_loss(model(x), y)
            opt.zero_grad(set_to_none=True), loss.backward(), opt.step()
            losses.append(loss.item())
        history.append({"epoch": epoch + 1, "seconds": time.perf_counter() - t0, "train_loss": float(np.mean(losses))})
    return history


def ort_latency_ms(path: Path, threads: int, runs: int = 50, warmup: int = 10) -> dict:
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, 66, 200), dtype=np.float32)}
    with OtherLoad() as load:
        times = [(sess.run(None, feed), time.perf_counter())[1] for _ in range(warmup + runs + 1)]
    times = np.diff(times)[warmup:] * 1e3  # time between the ends of consecutive runs
    return {"median_ms": float(np.median(times)), "min_ms": float(times.min()), "other_load": round(load.share, 3)}


def architecture(gm, report: dict) -> dict:
    """Per conv: kernel size (from the search report, else the module), compact form, params."""
    mods = dict(gm.named_modules())
    convs = {}
    for name in ("conv1", "conv2", "conv3", "conv4", "conv5"):
        entry, own = report.get(name, {}), [m for n, m in mods.items() if n == name or n.startswith(name + "_")]
        kernel = entry["kernel"][1] if "kernel" in entry else (list(own[0].kernel_size) if own else None)
        convs[name] = {"kernel": kernel, "form": entry.get("grouped", "dense"),
                       "params": sum(n_params(m) for m in own if isinstance(m, nn.Conv2d))}
    return {"convs": convs, "linear_in": {n: m.in_features for n, m in mods.items() if isinstance(m, nn.Linear)}}


def measure(name: str, model: nn.Module, train, test, args, extra: dict, report: Optional[dict] = None) -> dict:
    """One row; ``report`` is what compaction made of each searched layer (its search_report)."""
    x = train.tensors[0][:2]
    gm = model if isinstance(model, torch.fx.GraphModule) else archc.trace(model, (x,))
    report = report or {}
    row = {"model": name, **extra, "flops": archc.flops.count(gm), "params": n_params(gm),
           "train_rmse": rmse(gm, train), "test_rmse": rmse(gm, test), "arch": architecture(gm, report),
           "search_report": report}
    onnx_path = Path(args.onnx_dir) / "model.onnx"  # a temporary directory
    res = export_onnx(gm, (x,), onnx_path)
    row["onnx_max_abs_err"] = res.max_abs_err
    row["ort_2t"], row["ort_1t"] = ort_latency_ms(onnx_path, 2), ort_latency_ms(onnx_path, 1)
    print(f"  {name}: {row['flops'] / 1e6:.1f}M FLOPs, {row['params']:,} params, train {row['train_rmse']:.4f}, "
          f"test {row['test_rmse']:.4f}, ORT {row['ort_2t']['median_ms']:.2f} ms; " + arch_text(row), flush=True)
    return row


def searches(args) -> list[dict]:
    s = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "arch_lr": args.arch_lr, "seed": args.seed}
    ts = [1e-3] if args.quick else [1e-4, 1e-3, 1e-2]
    s["gate_weighting"] = args.gate_weighting  # on every search with gates; "kernels" has none
    # archc's budget controller steers the gates' lam
    steer = {"target": args.target, "target_reach": args.target_reach} if args.target else {}
    rows = [{"name": "DAS channels", "t": [0.0], "settings": {**s, "regularizer": "l1", "lam": args.lam, **steer}},
            {"name": "DAS kernels", "t": [1e-3, 1e-2, 3e-2], "settings": {**s, "regularizer": "none", "kernel_lam": args.kernel_lam,
                                                                     "kernel_weighting": args.kernel_weighting}},
            {"name": "DAS grouped+channels", "t": ts, "settings": {**s, "regularizer": "l1", "lam": args.lam, "patterns": args.patterns,
                                                                  "patterns_init": args.patterns_init,
                                                                  "patterns_form": args.patterns_form,
                                                                  "purity_lam": args.purity_lam,
                                                                  "connections_lam": args.connections_lam,
                                                                  "group_lam": args.group_lam, "exclusive_lam": args.exclusive_lam, **steer}},
            {"name": "DAS channels+kernels", "t": [1e-2], "settings": {**s, "regularizer": "l1", "lam": args.lam,
                                                                      "kernel_lam": args.kernel_lam,
                                                                      "kernel_weighting": args.kernel_weighting}}]
    return [r for r in rows if not args.only or r["name"].removeprefix("DAS ") in args.only]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag, kind, default in (("--train", int, 4000), ("--test", int, 1000), ("--epochs", int, 10),
                                ("--batch-size", int, 32), ("--lr", float, 1e-3), ("--arch-lr", float, 1e-2),
                                ("--lam", float, 5e-5), ("--kernel-lam", float, 3e-3), ("--group-lam", float, 3e-4),
                                ("--exclusive-lam", float, 3e-3)):
        ap.add_argument(flag, type=kind, default=default)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="initial weights, search seed and shuffling (not the data)")
    ap.add_argument("--patterns", type=int, default=4, help="connectivity patterns per conv (grouped search)")
    ap.add_argument("--patterns-init", default="random", choices=["random", "partition"], help="initial P and S")
    ap.add_argument("--patterns-form", default="lasso", choices=["lasso", "assign"],
                    help="grouped search: free P and S with the paper's lassos, or sparsemax assignments")
    ap.add_argument("--purity-lam", type=float, default=1e-3, help="assign form: one pattern per channel")
    ap.add_argument("--connections-lam", type=float, default=1e-2, help="assign form: share of connections kept")
    ap.add_argument("--finetune", type=int, default=3, help="also train each compact model this many epochs and measure again")
    ap.add_argument("--finetune-lr", type=float, default=1e-4, help="Adam lr of the fine-tuning (a fresh optimizer)")
    ap.add_argument("--kernel-weighting", default="uniform", choices=["uniform", "area"],
                    help="L1 weight of each filter size's alpha (area: a prior favouring small windows)")
    ap.add_argument("--gate-weighting", default="uniform", choices=["uniform", "params", "flops"],
                    help="L1 weight of each gate (params/flops: what its channel carries, archc.gate_costs)")
    ap.add_argument("--target", default=None, help="steer the gates of the channel and grouped searches to a size, e.g. params=0.1 "
                    "(archc.search's target; P and S are cut further at compaction)")
    ap.add_argument("--target-reach", type=float, default=DEFAULT_REACH,
                    help="share of the epochs by which --target is reached (archc.search's target_reach)")
    ap.add_argument("--no-bn", action="store_true", help="no BatchNorm (then He init)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the baseline row (for sweeps)")
    ap.add_argument("--only", nargs="*", choices=["channels", "kernels", "grouped+channels", "channels+kernels"],
                    help="run only these searches")
    ap.add_argument("--quick", action="store_true", help="smoke test: 256/128 examples, 1 epoch")
    ap.add_argument("--out", default=None)
    ap.add_argument("--report", action="store_true", help="only rebuild the .md/.png from --out's JSON and its follow-ups")
    args = ap.parse_args()
    if args.quick:
        args.train, args.test, args.epochs, args.finetune = 256, 128, 1, min(args.finetune, 1)
    stem = "das_steering.quick" if args.quick else "das_steering"
    out = Path(args.out) if args.out else RESULTS / f"{stem}.json"
    followups = lambda: [json.loads(p.read_text()) for p in sorted(out.parent.glob(out.stem + ".*.json"))  # noqa: E731
                         if ".quick" not in p.name]
    if args.report:
        return write_report(json.loads(out.read_text()), out, followups())
    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()  # the ONNX files
    args.onnx_dir = tmp.name
    global BN, INIT, SEED
    BN, INIT, SEED = not args.no_bn, ("he" if args.no_bn else "default"), args.seed
    wall0 = time.perf_counter()
    payload = {"machine": machine_info(args.threads), "code": git_state(), "command": command_line(),
               "settings": {k: v for k, v in vars(args).items() if k != "onnx_dir"},
               "rows": [], "errors": [], "paper": PAPER}
    t0 = time.perf_counter()
    train, test = make_dataset(args.train, seed=0), make_dataset(args.test, seed=1)
    payload["data"] = {"train": args.train, "test": args.test, "seconds": time.perf_counter() - t0,
                       "test_rmse_predict": baseline_rmse(train, test)}
    print(f"data {args.train}/{args.test} in {payload['data']['seconds']:.1f}s; {payload['data']['test_rmse_predict']}", flush=True)
    if not args.no_baseline:
        model = new_pilotnet()
        with OtherLoad() as load:
            t0 = time.perf_counter()
            hist = train_plain(model, train, args.epochs, args.batch_size, args.lr)
        payload["rows"].append(measure("Baseline", model, train, test, args, {
            "train_seconds": time.perf_counter() - t0, "other_load": round(load.share, 3), "history": hist}))
        if args.finetune:  # the same extra epochs as the compact models get, for a fair comparison
            ft = train_plain(model, train, args.finetune, args.batch_size, args.finetune_lr)
            payload["rows"].append(measure(f"Baseline +ft{args.finetune}", model, train, test, args, {"finetune_history": ft}))
    for spec in searches(args):
        try:
            with OtherLoad() as load:
                t0 = time.perf_counter()
                res = archc.search(new_pilotnet, train, test, loss=F.mse_loss, metric=F.mse_loss, progress=False,
                                   **spec["settings"])
                secs = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - record it and go on with the other rows
            payload["errors"].append({"row": spec["name"], **error_record("search", exc)})
            print(f"  {spec['name']}: search FAILED: {exc!r}", flush=True)
            continue
        for t in spec["t"]:
            name = f"{spec['name']} t={t:g}" if t else spec["name"]
            try:
                result = compaction(res.model, FINAL, threshold=0.0, search_threshold=t)
                small = result.gm
                extra = {"t": t, "settings": spec["settings"], "train_seconds": secs, "other_load": round(load.share, 3),
                         "history": res.history}
                payload["rows"].append(measure(name, small, train, test, args, extra, result.search_report))
                if args.finetune:  # the paper's optional step: resume training the compact model briefly
                    t0 = time.perf_counter()
                    ft = train_plain(small, train, args.finetune, args.batch_size, args.finetune_lr)
                    extra = {**extra, "finetune_seconds": time.perf_counter() - t0, "finetune_history": ft}
                    payload["rows"].append(measure(f"{name} +ft{args.finetune}", small, train, test, args, extra,
                                                   result.search_report))
            except Exception as exc:  # noqa: BLE001
                payload["errors"].append({"row": name, **error_record("compact/measure", exc)})
                print(f"  {name}: FAILED: {exc!r}", flush=True)
        write_json(out, payload)
    payload["wall_seconds"] = time.perf_counter() - wall0
    write_json(out, payload)
    if out.name.startswith("das_steering.") and ".quick" not in out.name:  # a follow-up: part of the main report
        print("follow-up written; rebuild the main report with --report")
    else:
        write_report(payload, out, followups())
    print(f"wall {payload['wall_seconds']:.0f}s -> {out}")


if __name__ == "__main__":
    main()
