"""A search steered to a size: `--target params=0.5` / `flops=0.5` ends within ±3% of it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import archc
from archc.budget import (BudgetController, BudgetSteering, Target, architecture_parameters, close_to, model_size,
                          parse_target, reopen_past_target)
from archc.das.regularizers import alpha_l1, grouped_penalty
from archc.cli.main import app
from archc.errors import ConfigError
from archc.gate_costs import channel_costs
from archc.search import best_record

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits.py"


@pytest.mark.parametrize("text, want", [
    ("params=0.5", Target("params", 0.5, True)), ("flops=0.25", Target("flops", 0.25, True)),
    ("params=120k", Target("params", 120e3, False)), ("flops=1.5M", Target("flops", 1.5e6, False)),
    ("params=2G", Target("params", 2e9, False)), ("params=5000", Target("params", 5000, False)),
    ("latency=2ms", Target("latency", 2.0, False)), ("latency=0.5", Target("latency", 0.5, True)),
])
def test_targets_parse_as_fractions_or_counts(text, want):
    assert parse_target(text) == want


@pytest.mark.parametrize("text", ["params", "latency=2", "size=0.5", "params=2ms", "params=-1", "params=0", "params=abc",
                                  "params=nan", "params=1"])
def test_bad_targets_are_refused_with_the_form_to_use(text):
    with pytest.raises(ConfigError, match=r"fix: pass (e.g. )?(--target|a fraction)"):
        parse_target(text)


def test_a_target_at_or_above_the_starting_size_is_refused():
    with pytest.raises(ConfigError, match="not below the model's starting params"):
        BudgetController(Target("params", 5000, False), start=4000.0, lam=1e-3)


def test_a_target_needs_the_l1_gate_penalty():
    with pytest.raises(ConfigError, match="--regularizer l1"):
        archc.SearchConfig(target="params=0.5", regularizer="group_lasso")


def test_the_controller_raises_lam_behind_the_schedule_and_lowers_it_ahead():
    control = BudgetController(Target("params", 0.5, True), start=1000.0, lam=1e-3)
    assert control.scheduled(0.0) == 1000 and control.scheduled(0.3) == 750 and control.scheduled(0.9) == 500
    assert control.update(900.0, 0.3) > 1e-3  # behind: 900 > 750
    for _ in range(1000):
        control.update(1000.0, 1.0)
    assert control.lam == pytest.approx(1e-1)  # bounded: 100x the lam given
    for _ in range(2000):
        control.update(100.0, 0.0)
    assert control.lam == pytest.approx(1e-5)


def _gated():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 3))
    return archc.passes.insert_filters(archc.trace(net, (torch.randn(2, 8),)))


def test_closing_smallest_gates_meets_a_size_and_reopening_never_undershoots_it():
    gm = _gated()
    costs, base = channel_costs(gm, "params"), model_size(gm, "params")
    goal = 0.6 * base
    predicted = close_to(costs, base, goal, threshold=0.0, tolerance=0.03)
    assert goal * 0.97 <= predicted <= goal  # within the tolerance below it
    closed = {g: (g.theta <= 0) for g in costs}
    smallest_open = min(float(g.theta[~c].min()) for g, c in closed.items() if (~c).any())
    assert all(float(g.theta[c].max()) < smallest_open for g, c in closed.items() if c.any())
    with torch.no_grad():  # the L1 closed far more than the schedule wants: some reopen
        for g in costs:
            g.theta[: g.size // 2] = -1.0
    reopened = reopen_past_target(costs, base, goal, threshold=0.0)
    kept_closed = sum(float(costs[g][g.theta <= 0].sum()) for g in costs)
    assert reopened > 0 and base - kept_closed >= goal


@pytest.mark.parametrize("kind", ["params", "flops"])
def test_digits_search_lands_within_3_percent_of_the_target(tmp_path, kind):
    res = CliRunner().invoke(app, ["search", str(DIGITS), "--lr", "3e-3", "--epochs", "4", "--target", f"{kind}=0.5",
                                   "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    last = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][-1]
    assert last["budget"]["met"] and abs(last["budget"]["ratio_to_target"] - 1) <= 0.03, last["budget"]
    assert last["val_metric"] > 0.8
    if kind == "params":
        return
    res = CliRunner().invoke(app, ["compact", str(tmp_path / "run" / "checkpoint.pt"), "-o", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    achieved = report["flops_after"] / report["flops_before"]  # measured on the compact model itself
    assert abs(achieved / 0.5 - 1) <= 0.03 and report["target"]["achieved"] == report["flops_after"]
    assert "- target: flops" in (tmp_path / "c" / "report.md").read_text()


@pytest.mark.parametrize("shrink_every", ["0", "11"])  # at each epoch's end; after 11 steps (the digits' epoch)
def test_an_earlier_reach_meets_the_target_earlier_and_the_size_then_stays(tmp_path, shrink_every):
    """--target-reach 0.25 of 4 epochs: the schedule ends with the first epoch (the default, 0.6,
    ends in the third), and the compact size does not move after it."""
    res = CliRunner().invoke(app, ["search", str(DIGITS), "--lr", "3e-3", "--epochs", "4", "--target", "params=0.5",
                                   "--target-reach", "0.25", "--shrink-every", shrink_every,
                                   "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[0]["budget"]["met"], log[0]["budget"]
    assert len({r["params"] for r in log}) == 1
    assert abs(log[-1]["budget"]["ratio_to_target"] - 1) <= 0.03, log[-1]["budget"]


@pytest.mark.parametrize("reach", [0.0, 1.5, float("nan")])
def test_a_reach_outside_0_to_1_is_refused_with_the_range(reach):
    with pytest.raises(ConfigError, match=r"target_reach must be a finite number in \(0, 1\]"):
        archc.SearchConfig(target="params=0.5", target_reach=reach)


def test_a_resumed_target_search_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    from archc.search import Task, run_search
    from archc.search_config import SearchConfig
    from test_search import _Interrupt, _task

    settings = dict(lam=1e-3, epochs=4, batch_size=32, lr=1e-2, target="params=0.4")
    straight = run_search(_task(), SearchConfig(**settings, out=str(tmp_path / "a")), progress=False)
    calls = iter(range(10**6))

    def killed_in_epoch_three(output, target):  # 10 steps per epoch
        if next(calls) == 25:
            raise _Interrupt
        return torch.nn.functional.cross_entropy(output, target)

    with pytest.raises(_Interrupt):
        run_search(Task(**{**_task().__dict__, "loss_fn": killed_in_epoch_three}),
                   SearchConfig(**settings, out=str(tmp_path / "b")), progress=False)
    resumed = run_search(_task(), SearchConfig(**settings, out=str(tmp_path / "b"), resume=True), progress=False)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed.history) == strip(straight.history)
    assert straight.history[-1]["budget"]["met"]




def test_a_latency_target_is_steered_through_measured_latency(tmp_path):
    """A model whose run time is its matmuls (the digits CNN's is onnxruntime's fixed cost per
    op: pruning it barely changes its latency). The search meets the target as it last measured
    it (onnxruntime, this machine): never above it by more than 3%; within 3% in 4 of 5 runs here
    and up to 22% below it when a measurement on the shared machine was off, so only a bound from
    below of 0.6 is asserted. compact measures the compact model again and reports it."""
    model_py = Path(__file__).with_name("wide_task.py")
    res = CliRunner().invoke(app, ["search", str(model_py), "--epochs", "4", "--batch-size", "64",
                                   "--target", "latency=0.5", "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    budget = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][-1]["budget"]
    assert budget["kind"] == "latency" and budget["met"] and len(budget["line"]) >= 2
    assert 0.6 <= budget["ratio_to_target"] <= 1.03, budget
    assert budget["target"] == pytest.approx(0.5 * budget["start_ms"])
    res = CliRunner().invoke(app, ["compact", str(tmp_path / "run" / "checkpoint.pt"), "-o", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    target = json.loads((tmp_path / "c" / "report.json").read_text())["target"]
    # measured again in a new onnxruntime session: reported, not bounded (a fresh clone's CI run
    # measured 2.0x the search's last figure on the same model; the search's bound is above)
    assert target["kind"] == "latency" and target["achieved"] > 0 and target["predicted_during_search"] > 0
    assert " ms" in (tmp_path / "c" / "report.md").read_text()


def test_best_pt_of_a_steered_search_is_at_the_target_once_one_epoch_is():
    history = [{"epoch": 1, "val_metric": 0.9, "budget": {"met": False}},  # the best, but over the target
               {"epoch": 2, "val_metric": 0.8, "budget": {"met": True}},
               {"epoch": 3, "val_metric": 0.85, "budget": {"met": True}},
               {"epoch": 4, "val_metric": 0.85, "budget": {"met": True}}]
    assert best_record(history, "max")["epoch"] == 4  # the best at the target, ties to the later
    assert best_record(history[:1], "max")["epoch"] == 1  # none at the target yet: the best so far
    assert best_record([dict(r, budget=None) for r in history], "max")["epoch"] == 1  # no target


def test_at_the_target_no_penalty_moves_the_architecture_only_the_weights_train():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, padding=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1))
    x = torch.randn(4, 3, 9, 9)
    gm = archc.passes.insert_grouped(archc.passes.insert_kernel_masks(archc.passes.insert_filters(archc.trace(model, (x,)))), 2)
    steer = BudgetSteering(parse_target("params=0.99"), gm, lam=1e-3)  # within 3% already: met at the next check
    steer.after_shrink(gm)
    assert steer.control.met
    arch = architecture_parameters(gm)
    assert len(arch) >= 6  # two gates' thetas, two alphas, P and S of the grouped conv
    before = [p.detach().clone() for p in arch]
    weights = [p for p in gm.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in weights]
    opt = torch.optim.Adam(gm.parameters(), lr=1e-2)
    loss = gm(x).pow(2).mean() + grouped_penalty(gm, 1.0, 1.0) + alpha_l1(gm, "uniform")
    opt.zero_grad(), loss.backward(), opt.step()
    assert all(torch.equal(p, b) for p, b in zip(arch, before))  # kernel, grouped penalties shrink nothing
    assert all(not torch.equal(p, s) for p, s in zip(weights, start))
