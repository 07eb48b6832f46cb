"""Does a compact DAS model fine-tune like the searched model it equals? One search, three fine-tunings.

After 3 low-lr epochs the 30-epoch PilotNet baseline's test RMSE falls 13-19%, the compact
model's only 4-10% (benchmarks/README.md, "DAS steering: 30 epochs"). Folding the gates changes
how Adam sees the weights (a gate g < 1 folded into a layer makes each of its steps 1/g times
larger relative to the weight), so the compact model might fine-tune worse than the searched
model it equals. This runs the search of ``das_steering.py`` (channels, params-weighted,
``--target params=0.1``), then fine-tunes three copies for 3 epochs with a fresh Adam:
  compact, lr 1e-4      what das_steering.py's "+ft3" rows do
  compact, lr 3e-5      a smaller step for the folded weights
  gated, lr 1e-4        the searched model itself (gates in place), every architecture
                        parameter frozen: the parameterisation the search trained
and records each one's train and test RMSE (and per-epoch training loss), beside the surviving
gates' values per Filter and the two models' largest output difference in training mode.
``--grouped`` runs the grouped+channels search instead (P and S baked into the weights at t=1e-3).

Run (from the repository root; about 11 min per seed at one torch thread on a 2-core CPU):
    python benchmarks/das_finetune_check.py --seed 0 --out benchmarks/results/das_finetune_check_seed0.json  # and 2
    python benchmarks/das_finetune_check.py --grouped --seed 0 \
        --out benchmarks/results/das_finetune_check_grouped_seed0.json  # and 1
The baseline to compare with is the seed's "Baseline" rows in results/das_steering.e30_*.json.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import das_steering  # noqa: E402
from _common import archc, command_line, git_state, machine_info, n_params, write_json  # noqa: E402
from steering_data import make_dataset  # noqa: E402

from archc.budget import architecture_parameters  # noqa: E402
from archc.compact import FINAL, compaction  # noqa: E402
from archc.filters import Filter  # noqa: E402


def gate_values(model: torch.nn.Module) -> dict[str, dict]:
    """Per Filter: how many channels are open, and the min/median/max of relu(theta) over them."""
    out = {}
    for name, f in model.named_modules():
        if isinstance(f, Filter):
            g = torch.relu(f.theta.detach())
            g = g[g > 0]
            out[name] = {"open": len(g), **({"min": float(g.min()), "median": float(g.median()), "max": float(g.max())}
                                            if len(g) else {})}
    return out


# the flags of das_steering.py's steered grouped+channels runs (its --group-lam/--exclusive-lam defaults differ)
GROUPED = {"patterns": 4, "group_lam": 3e-5, "exclusive_lam": 3e-4}


@torch.no_grad()
def train_mode_difference(gated: torch.nn.Module, small: torch.nn.Module, train) -> float:
    """Largest output difference of the two models in training mode (BatchNorm on batch
    statistics) on one batch; compaction verifies them in eval mode only. The running
    statistics that this forward pass updates are restored afterwards."""
    x = train.tensors[0][:32]
    saved = [copy.deepcopy(m.state_dict()) for m in (gated, small)]
    gated.train(), small.train()
    diff = float((gated(x) - small(x)).abs().max())
    for m, state in zip((gated, small), saved):
        m.load_state_dict(state)
    return diff


def finetune(model: torch.nn.Module, train, test, lr: float, epochs: int) -> dict:
    history = das_steering.train_plain(model, train, epochs, 32, lr)
    return {"lr": lr, "epochs": epochs, "epoch_train_loss": [h["train_loss"] for h in history],
            "train_rmse": das_steering.rmse(model, train),
            "test_rmse": das_steering.rmse(model, test)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--target-reach", type=float, default=0.8)
    ap.add_argument("--finetune", type=int, default=3)
    ap.add_argument("--grouped", action="store_true", help="the grouped+channels search (patterns 4, group_lam 3e-5, "
                    "exclusive_lam 3e-4, compacted at t=1e-3) instead of the channel search")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    das_steering.SEED, das_steering.BN, das_steering.INIT = args.seed, True, "default"  # das_steering's defaults
    train, test = make_dataset(4000, seed=0), make_dataset(1000, seed=1)
    t0 = time.perf_counter()
    res = archc.search(das_steering.new_pilotnet, train, test, loss=F.mse_loss, metric=F.mse_loss, progress=False,
                       epochs=args.epochs, batch_size=32, lr=1e-3, arch_lr=1e-2, seed=args.seed, regularizer="l1",
                       lam=1e-5, gate_weighting="params", target="params=0.1", target_reach=args.target_reach,
                       **(GROUPED if args.grouped else {}))
    payload = {"machine": machine_info(1), "code": git_state(), "command": command_line(), "settings": vars(args),
               "search_seconds": time.perf_counter() - t0, "gates": gate_values(res.model)}
    small = compaction(copy.deepcopy(res.model), FINAL, threshold=0.0, search_threshold=1e-3 if args.grouped else 0.0).gm
    payload["train_mode_max_abs_diff"] = train_mode_difference(res.model, small, train)
    payload["before"] = {"params": n_params(small),
                         "gated_test_rmse": das_steering.rmse(res.model, test),
                         "compact_train_rmse": das_steering.rmse(small, train),
                         "compact_test_rmse": das_steering.rmse(small, test)}
    frozen = copy.deepcopy(res.model)
    for p in architecture_parameters(frozen):
        p.requires_grad_(False)  # Adam skips them: no gradient
    payload["finetuned"] = {
        "compact_lr1e-4": finetune(copy.deepcopy(small), train, test, 1e-4, args.finetune),
        "compact_lr3e-5": finetune(copy.deepcopy(small), train, test, 3e-5, args.finetune),
        "gated_frozen_lr1e-4": finetune(frozen, train, test, 1e-4, args.finetune)}
    write_json(args.out, payload)
    print(payload["before"], *payload["finetuned"].items(), sep="\n")


if __name__ == "__main__":
    main()
