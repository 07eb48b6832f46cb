"""Search throughput: the time of one training step of archc's search against the same model
trained without gates, in one process, alternating blocks of steps (the machine may be shared).

archc's step is ``SearchRun.train_step``: the gated, captured model's forward (gates on the
weights of the layers that read them where those are smaller than the activations at this batch:
``archc.passes.gates_on_weights``), the loss with archc's checks, the L1 gate penalty, backward
and Adam. The plain step is the user's own
``nn.Module`` with the same loss and Adam. Reported: the median step time of each and their
ratio (issue 9 asks for at most 1.05), and the same archc step with every gate multiplying its
activations (the gated model itself as the trainer), to show what the view saves.

    python benchmarks/search_throughput.py                 # ResNet-50 (128 px, batch 8) and the 10,000-unit MLP
    python benchmarks/search_throughput.py --rounds 3 --steps 3 --models mlp
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from _common import RESULTS, command_line, finish_report, git_state, import_shim, machine_info

import archc  # noqa: E402
from archc.search import Task  # noqa: E402
from archc.passes.gates_on_weights import scaled_call  # noqa: E402
from archc.search_run import SearchRun  # noqa: E402


def resnet50() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    import_shim()
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet50(num_classes=100), torch.randn(8, 3, 128, 128), torch.randint(0, 100, (8,))


def mlp10k() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 10000), nn.ReLU(), nn.Linear(10000, 10))
    return net, torch.randn(256, 784), torch.randint(0, 10, (256,))


MODELS = {"resnet50": resnet50, "mlp": mlp10k}


def _plain_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _block(step, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure(name: str, rounds: int, steps: int) -> dict:
    model, x, y = MODELS[name]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    task = Task(model_fn=lambda: MODELS[name]()[0], train=None, val=None, example_inputs=(x,))
    run = SearchRun.fresh(task, archc.SearchConfig(lam=1e-4, lr=1e-4, device="cpu"))
    run.train_step((x, y))  # builds the trainer: gates on weights where cheaper at this batch
    view = run.trainer

    def archc_step(trainer):
        run.trainer = trainer
        run.train_step((x, y))

    variants = {"gated": lambda: archc_step(view), "on_activations": lambda: archc_step(run.model),
                "plain": lambda: _plain_step(model, opt, x, y)}
    for step in variants.values():
        step()  # warm-up: allocations, first-call work
    timings = {label: [] for label in variants}
    for r in range(rounds):  # alternate which goes first
        order = list(variants.items())
        for label, step in (order if r % 2 == 0 else order[::-1]):
            timings[label] += _block(step, steps)
    median = {label: statistics.median(t) for label, t in timings.items()}
    moved = sum(n.target is scaled_call for n in view.graph.nodes)
    return {"model": name, "batch": tuple(x.shape), "gates": len(list(archc.filters(run.model))), "on_weights": moved,
            "gated_step_s": median["gated"], "on_activations_step_s": median["on_activations"],
            "plain_step_s": median["plain"], "ratio": median["gated"] / median["plain"],
            "ratio_on_activations": median["on_activations"] / median["plain"], "steps_each": len(timings["gated"]),
            **{f"{label}_all_s": t for label, t in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: a busy neighbour cannot stall a worker thread)")
    parser.add_argument("--out", default=str(RESULTS / "search_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    rows = [measure(name, args.rounds, args.steps) for name in args.models]
    payload = {"experiment": "search_throughput", "command": command_line(), "machine": machine_info(args.threads),
               "code": git_state(), "rows": rows}
    lines = ["### Search step time with gates against the same model without (archc SearchRun.train_step)", "",
             f"Command: `{payload['command']}`", "",
             "| model | input batch | gates | layers taking a gate on their weights | archc step (s) | plain step (s) "
             "| ratio | archc step, every gate on activations (s) | its ratio |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['batch']} | {r['gates']} | {r['on_weights']} | {r['gated_step_s']:.4f} | {r['plain_step_s']:.4f} | "
              f"{r['ratio']:.3f} | {r['on_activations_step_s']:.4f} | {r['ratio_on_activations']:.3f} |" for r in rows]
    finish_report(payload, Path(args.out), "\n".join(lines) + "\n", started)


if __name__ == "__main__":
    main()
