"""The search loop: log and checkpoint every epoch, shrink as it goes, resume with nothing lost."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import archc
from archc.cli.main import app
from archc.checkpoint import load_checkpoint
from archc.search import SearchConfig, Task, run_search
from archc.userfile import load_user_file

TINY = Path(__file__).with_name("tiny_task.py")
REQUIRED = {"epoch", "seconds", "train_loss", "val_metric", "params", "widths"}


def _task() -> Task:
    spec = load_user_file(TINY)
    train, val = spec.data()
    return Task(model_fn=spec.model, train=train, val=val, example_inputs=spec.example_inputs(),
                model_file=str(TINY), model_sha256=spec.sha256)


def _cfg(out, **kw) -> SearchConfig:
    base = dict(lam=3e-2, epochs=3, batch_size=32, lr=1e-2, out=str(out))
    return SearchConfig(**{**base, **kw})


def test_search_writes_a_log_line_and_a_checkpoint_per_epoch_and_shrinks(tmp_path):
    result = run_search(_task(), _cfg(tmp_path), progress=False)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and all(REQUIRED <= set(r) for r in lines)
    assert lines[-1]["params"] < lines[0]["params"] or lines[0]["removed"] > 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 3
    small = archc.compact(result.model)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in _task().model_fn().parameters())


class _Interrupt(KeyboardInterrupt):  # a kill: not an error of the loss to report
    pass


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path):
    straight = run_search(_task(), _cfg(tmp_path / "a"), progress=False)
    calls = iter(range(10**6))

    def dies_in_epoch_two(output, target):  # the 14th training step of 10 per epoch
        if next(calls) == 13:
            raise _Interrupt
        return torch.nn.functional.cross_entropy(output, target)

    with pytest.raises(_Interrupt):
        run_search(Task(**{**_task().__dict__, "loss_fn": dies_in_epoch_two}), _cfg(tmp_path / "b"), progress=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["epoch"] == 1
    resumed = run_search(_task(), _cfg(tmp_path / "b", resume=True), progress=False)
    assert len(resumed.history) == len(straight.history) == 3
    for mine, theirs in zip(resumed.history, straight.history):
        assert {k: v for k, v in mine.items() if k != "seconds"} == {k: v for k, v in theirs.items() if k != "seconds"}
    for (name, p), (_, q) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items()):
        assert torch.equal(p, q), name
    logged = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in logged] == [1, 2, 3]


def test_group_lasso_search_runs_and_closes_gates(tmp_path):
    result = run_search(_task(), _cfg(tmp_path, regularizer="sparse_group_lasso", lam=3.0, epochs=2), progress=False)
    assert sum(r["removed"] for r in result.history) > 0
    assert result.history[-1]["params"] < sum(p.numel() for p in _task().model_fn().parameters())


def test_cli_search_then_compact_writes_every_output(tmp_path):
    runner = CliRunner()
    model_py = tmp_path / "tiny.py"
    model_py.write_text(TINY.read_text() + "\n\ndef test_data():  # held out: here the training set\n"
                        "    return data()[0]\n")
    res = runner.invoke(app, ["search", str(model_py), "--lam", "0.03", "--epochs", "2", "--batch-size", "32",
                              "--lr", "0.01", "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "Learned widths" in res.output
    res = runner.invoke(app, ["compact", str(tmp_path / "run" / "checkpoint.pt"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.py", "weights.safetensors", "model.onnx", "report.json", "report.md",
            "widths.png", "width_history.png"} <= files
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert {"params_before", "params_after", "flops_before", "flops_after", "metric", "layers"} <= set(report)
    assert report["params_after"] <= report["params_before"]
    assert all({"name", "width_before", "width_after"} <= set(r) for r in report["layers"])
    assert 0 <= report["test_metric"] <= 1 and report["epoch"] == 2
    assert f"test metric {report['test_metric']:.4f}" in res.output
    assert "test metric of the compact model" in (tmp_path / "out" / "report.md").read_text()


def test_cli_refuses_a_malicious_checkpoint_without_a_traceback(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"format": "archc-checkpoint/1", "x": Evil()}, tmp_path / "evil.pt")
    res = CliRunner().invoke(app, ["compact", str(tmp_path / "evil.pt")])
    assert res.exit_code == 2 and "refused" in res.output and "Traceback" not in res.output


def test_cli_search_on_a_file_without_data_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\ndef model():\n    return torch.nn.Linear(2, 2)\n")
    res = CliRunner().invoke(app, ["search", str(bad), "--no-progress"])
    assert res.exit_code == 2 and "data" in res.output and "Traceback" not in res.output
    assert "(train, val)" in res.output  # the hint names what search and compact accept


def test_search_parameters_can_have_their_own_learning_rate_and_resume(tmp_path):
    first = run_search(_task(), _cfg(tmp_path, epochs=1, arch_lr=0.05, select_lam=1e-3), progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    lrs = [g["lr"] for g in state["optimizer_state"]["param_groups"]]
    assert lrs == [1e-2, 0.05]
    resumed = run_search(_task(), _cfg(tmp_path, epochs=2, arch_lr=0.05, select_lam=1e-3, resume=True), progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2] and first.history[0] == resumed.history[0]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_python_api_takes_an_optimizer_by_name(tmp_path, optimizer):
    spec = load_user_file(TINY)
    train, val = spec.data()
    result = archc.search(spec.model, train, val, optimizer=optimizer, lam=3e-2, epochs=1,
                          batch_size=64, lr=1e-2, out=str(tmp_path), progress=False)
    assert len(result.history) == 1 and result.history[0]["train_loss"] > 0
    states = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer_state"]["state"].values()
    want = {"sgd": "momentum_buffer", "adam": "exp_avg"}[optimizer]  # the named optimizer really ran
    assert states and all(want in st for st in states)
    with pytest.raises(archc.errors.ConfigError, match="optimizer"):
        archc.search(spec.model, train, val, optimizer="lbfgs", epochs=1, out=str(tmp_path / "x"), progress=False)


def test_cli_das_search_reports_kernels_and_patterns_per_layer(tmp_path):
    runner = CliRunner()
    model_py = tmp_path / "tiny_conv.py"
    shutil.copy(TINY.with_name("tiny_conv_task.py"), model_py)
    res = runner.invoke(app, ["search", str(model_py), "--epochs", "1", "--batch-size", "32", "--lr", "0.01",
                              "--kernel-lam", "1e-3", "--kernel-weighting", "area", "--patterns", "2",
                              "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compact", str(tmp_path / "run" / "checkpoint.pt"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    layers = report["search_layers"]
    assert {"0", "3"} <= set(layers)
    assert {"patterns", "patterns_init", "kernel_lam", "kernel_weighting"} <= set(report["search"])
    widths = {r["name"]: r["width_after"] for r in report["layers"]}
    assert all(widths[name] == r["width"] for name, r in layers.items())  # renamed by lowering, still reported
    assert all(r["grouped"] in ("grouped", "patterns", "dense") and r["patterns"]["n_patterns"] <= 2 for r in layers.values())
    assert all(len(r["kernel"]) == 2 for r in layers.values())
    assert "| channel order |" in (tmp_path / "out" / "report.md").read_text()
    bad = runner.invoke(app, ["search", str(model_py), "--kernel-weighting", "volume", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "kernel_weighting" in bad.output and "Traceback" not in bad.output


def test_gate_costs_follow_the_gates_through_every_shrink_and_weigh_the_penalty(tmp_path):
    from archc.search_run import SearchRun
    from archc.sparsity import gate_l1

    run = SearchRun.fresh(_task(), _cfg(tmp_path, gate_weighting="flops"))
    for closed in (0, 10):  # a shrink that removes nothing still builds new gates
        with torch.no_grad():
            next(archc.filters(run.model)).theta[:closed] = 0.0
        assert run.shrink_now() == closed
        assert set(run.gate_weights) == set(archc.filters(run.model))  # not the gates of the model before
        assert [len(c) for c in run.gate_weights.values()] == [f.size for f in run.gate_weights]
    # the search's size penalty is the weighted one, at strength lam
    want = run.cfg.lam * archc.gate_costs.weighted_gate_l1(run.gate_weights)
    assert torch.allclose(run.penalty(), want) and not torch.allclose(want, run.cfg.lam * gate_l1(run.model))


def test_best_pt_holds_the_epoch_with_the_best_validation_metric_and_compacts(tmp_path):
    result = run_search(_task(), _cfg(tmp_path / "run", epochs=4), progress=False)
    metrics = [r["val_metric"] for r in result.history]
    best_epoch = max(i for i, m in enumerate(metrics, 1) if m == max(metrics))
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == best_epoch
    res = CliRunner().invoke(app, ["compact", str(tmp_path / "run" / "best.pt"), "-o", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["metric"] == pytest.approx(metrics[best_epoch - 1], abs=1e-6)  # the compact model is that epoch's
    low = run_search(_task(), _cfg(tmp_path / "low", epochs=3, best_by="min"), progress=False)
    worst = [r["val_metric"] for r in low.history]
    assert load_checkpoint(tmp_path / "low" / "best.pt")["epoch"] == max(
        i for i, m in enumerate(worst, 1) if m == min(worst))


def test_cli_assignment_search_ends_in_grouped_convs_that_compact_exactly(tmp_path):
    """``--patterns-form assign``: the sparsemax assignments become exact, pure partitions
    within a few epochs, so the searched conv compacts to a grouped form, not the dense one."""
    runner = CliRunner()
    model_py = tmp_path / "tiny_conv.py"
    shutil.copy(TINY.with_name("tiny_conv_task.py"), model_py)
    res = runner.invoke(app, ["search", str(model_py), "--epochs", "4", "--batch-size", "32", "--lr", "0.01",
                              "--arch-lr", "0.05", "--lam", "0", "--patterns", "2", "--patterns-form", "assign",
                              "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compact", str(tmp_path / "run" / "checkpoint.pt"), "-o", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["search"]["patterns_form"] == "assign" and "purity_lam" in report["search"]
    assert "group_lam" not in report["search"]  # the lasso form's settings do not apply
    assert report["search_layers"]["3"]["grouped"] in ("grouped", "patterns"), report["search_layers"]["3"]
