"""`archc tune`: an optuna study of searches, its Pareto front, resuming it, and workers sharing
one study through a real PostgreSQL server the test starts."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archc.cli.main import app
from archc.errors import ConfigError
from archc.provenance import current_label
from archc.tune import TuneConfig, open_study, storage_url
from archc.tune_report import pareto_front
from postgres import can_run_server, postgres_server

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits.py"
WIDE = '''
import sys
sys.path.insert(0, {tests!r})
from tiny_task import data, example_input
import torch
from torch import nn


def model(width_multiplier=1.0):
    torch.manual_seed(1)
    width = max(2, round(32 * width_multiplier))
    return nn.Sequential(nn.Linear(8, width), nn.ReLU(), nn.Linear(width, 3))
'''


def _wide_model_file(tmp_path: Path) -> Path:
    path = tmp_path / "wide.py"
    path.write_text(WIDE.format(tests=str(ROOT / "tests")))
    return path


def test_pareto_front_keeps_only_trials_nothing_beats():
    rows = [{"trial": i, "state": "COMPLETE", "metric": m, "size": s}
            for i, (m, s) in enumerate([(0.9, 100), (0.8, 50), (0.85, 120), (0.7, 40), (0.8, 60)])]
    assert [r["trial"] for r in pareto_front(rows)] == [3, 1, 0]


def test_tune_digits_writes_the_front_and_a_second_call_resumes(tmp_path, monkeypatch):
    out = tmp_path / "study"
    args = ["tune", str(DIGITS), "--trials", "6", "--epochs", "1", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert {"pareto.png", "pareto.md", "trials.md", "trials.json"} <= {p.name for p in out.iterdir()}
    summary = json.loads((out / "trials.json").read_text())
    assert len(summary["trials"]) == 6 and all(r["state"] == "COMPLETE" for r in summary["trials"])
    assert summary["pareto"] and summary["baseline"]["params"] > max(r["size"] for r in summary["trials"])
    assert all((Path(r["folder"]) / "compact" / "model.py").exists() for r in summary["trials"])
    assert "dense baseline" in (out / "pareto.md").read_text().lower()
    assert summary["code_versions"] == {current_label(): list(range(6))}
    assert f"Code: archc {current_label()} (every trial)." in (out / "trials.md").read_text()
    # the resumed study runs other code: each trial keeps the code it ran, and the report says so
    monkeypatch.setattr("archc.tune_trial.current_label", lambda: "0.0.9+1234567")
    res = CliRunner().invoke(app, [*args[:3], "7", *args[4:]])
    assert res.exit_code == 0, res.output
    again = json.loads((out / "trials.json").read_text())
    assert [r["lam"] for r in again["trials"][:6]] == [r["lam"] for r in summary["trials"]]  # kept, not redone
    assert len(again["trials"]) == 7 and again["trials"][6]["lam"] not in [r["lam"] for r in summary["trials"]]
    assert again["code_versions"] == {current_label(): list(range(6)), "0.0.9+1234567": [6]}
    assert "ran at 2 versions of archc" in res.output and "0.0.9+1234567: trials 6" in res.output
    assert "| code |" in (out / "trials.md").read_text()


def test_tune_searches_the_width_when_the_model_takes_one(tmp_path):
    res = CliRunner().invoke(app, ["tune", str(_wide_model_file(tmp_path)), "--trials", "2", "--epochs", "1",
                                   "--batch-size", "32", "--objective", "metric", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "s" / "trials.json").read_text())["trials"]
    assert all(0.5 <= r["width_multiplier"] <= 2.0 for r in rows)


TESTED = '''
import sys
sys.path.insert(0, {tests!r})
from tiny_task import data, example_input, model


def test_data():  # the validation set again: its metric must equal the validation metric
    return data()[1]


def metric(output, target):  # the error rate: it falls as the model learns, so the best
    return (output.argmax(1) != target).float().mean().item()  # epoch comes before the last
'''


def test_tune_scores_each_trials_best_epoch_and_its_test_set(tmp_path):
    model_py, out = tmp_path / "tested.py", tmp_path / "study"
    model_py.write_text(TESTED.format(tests=str(ROOT / "tests")))
    res = CliRunner().invoke(app, ["tune", str(model_py), "--trials", "3", "--epochs", "4", "--batch-size", "32",
                                   "--sampler", "random", "--lam-range", "1e-3,3e-2", "--lr-range", "3e-3",
                                   "--pick", "best", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "trials.json").read_text())
    rows = summary["trials"]
    assert all(r["lr"] == 3e-3 and 1e-3 <= r["lam"] <= 3e-2 for r in rows)  # lr fixed, λ in its range
    for r in rows:
        history = [json.loads(line) for line in (Path(r["folder"]) / "log.jsonl").read_text().splitlines()]
        best = max(h["val_metric"] for h in history)
        assert r["epoch"] == max(h["epoch"] for h in history if h["val_metric"] == best)  # ties: the later
        assert r["metric"] == pytest.approx(best, abs=1e-6)  # the compact model of that epoch
        assert r["test_metric"] == pytest.approx(r["metric"], abs=1e-6)  # test_data() is the validation set
    assert min(r["epoch"] for r in rows) < 4  # some best epoch is not the last: --pick best mattered
    assert summary["medians"]["test_metric"] == pytest.approx(statistics.median(r["test_metric"] for r in rows))
    assert summary["baseline"]["test_metric"] == pytest.approx(summary["baseline"]["metric"], abs=1e-6)
    assert "| test_metric |" in (out / "trials.md").read_text() and "Medians over the 3 complete trials" in res.output
    again = CliRunner().invoke(app, ["tune", str(model_py), "--trials", "3", "--pick", "last", "--out", str(out)])
    assert again.exit_code == 2 and "--pick best" in again.output  # a study keeps the epoch it scores


def test_tune_steers_every_trial_to_the_target_and_keeps_it(tmp_path):
    out, model_py = tmp_path / "study", _wide_model_file(tmp_path)
    args = ["tune", str(model_py), "--trials", "2", "--epochs", "4", "--batch-size", "32", "--lr-range", "1e-2",
            "--width-range", "1", "--target-reach", "0.25", "--target", "params=0.5", "--out", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "trials.json").read_text())
    start = summary["baseline"]["params"]  # the dense model is the starting model (width 1)
    assert all(abs(r["size"] / (0.5 * start) - 1) <= 0.03 for r in summary["trials"]), (start, summary["trials"])
    for r in summary["trials"]:  # --target-reach 0.25 of 4 epochs: met in the first
        first = json.loads((Path(r["folder"]) / "log.jsonl").read_text().splitlines()[0])
        assert first["budget"]["met"], first["budget"]
    other_reach = CliRunner().invoke(app, [*args[:-6], "--target", "params=0.5", "--out", str(out)])
    assert other_reach.exit_code == 2 and "fix: pass --target-reach 0.25" in other_reach.output
    assert "steered to params=0.5" in (out / "trials.md").read_text()
    again = CliRunner().invoke(app, [*args[:-4], "--target", "params=0.3", "--out", str(out)])
    assert again.exit_code == 2 and "fix: pass --target params=0.5" in again.output  # one budget per study
    same = CliRunner().invoke(app, [*args[:-4], "--target", "params = 0.50", "--out", str(out)])
    assert same.exit_code == 0, same.output  # another spelling of the same target resumes
    assert all(r["target_met"] for r in json.loads((out / "trials.json").read_text())["trials"])


def test_a_trial_whose_drawn_width_starts_below_the_target_is_pruned_not_the_study(tmp_path):
    out = tmp_path / "study"  # widths 0.5-0.6 of 32 units: about 200 parameters, under 300
    res = CliRunner().invoke(app, ["tune", str(_wide_model_file(tmp_path)), "--trials", "2", "--epochs", "1",
                                   "--batch-size", "32", "--width-range", "0.5,0.6", "--target", "params=300",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "trials.json").read_text())["trials"]
    assert [r["state"] for r in rows] == ["PRUNED"] * 2 and all("not below" in r["note"] for r in rows)


def test_workers_on_one_machine_share_its_cores(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # else it decides, as a user's setting
    out = tmp_path / "study"
    res = CliRunner().invoke(app, ["tune", str(_wide_model_file(tmp_path)), "--trials", "2", "--epochs", "1",
                                   "--batch-size", "32", "--workers", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    default = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env={
        k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, capture_output=True, text=True).stdout
    trials = open_study(TuneConfig(model_file="m.py", out=str(out))).get_trials(deepcopy=False)
    assert len(trials) >= 2 and {t.user_attrs["torch_threads"] for t in trials} == {max(1, int(default) // 2)}


def test_a_worker_stops_when_the_trials_left_are_running_elsewhere(tmp_path):
    import optuna

    from archc.tune import _optimize

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.ask()  # another worker's trial, still running
    _optimize(study, TuneConfig(model_file="m.py", out=str(tmp_path), trials=2), lambda trial, cfg: (0.9, 10.0), False)
    states = [t.state for t in study.get_trials(deepcopy=False)]  # before: it ran until 2 were complete
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1 and len(states) == 2


def test_trials_of_a_killed_worker_are_marked_failed_with_a_note():
    import optuna

    from archc.tune import fail_orphaned_trials

    study = optuna.create_study(directions=["maximize", "minimize"])
    killed, alive = study.ask(), study.ask()
    killed.set_user_attr("worker_pid", 4242)
    alive.set_user_attr("worker_pid", 4343)
    assert fail_orphaned_trials(study, {4242: -15}) == 1
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.RUNNING]
    assert trials[0].user_attrs["note"] == "worker process 4242 exited with code -15"


def test_a_study_from_before_a_setting_held_its_default(tmp_path):
    import optuna

    cfg = TuneConfig(model_file=str(DIGITS), out=str(tmp_path), target="params=0.5")
    old = optuna.create_study(storage=storage_url(cfg), study_name="archc", directions=["maximize", "minimize"])
    old.add_trial(optuna.trial.create_trial(values=[0.9, 100.0]))  # a trial without a target
    with pytest.raises(ConfigError, match="steers each trial to no target size, not params=0.5"):
        open_study(cfg)


@pytest.mark.parametrize("flags, says", [
    (["--objective", "accuracy"], "objective must be one of"),
    (["--lam-range", "1e-2,1e-5"], "low first"),
    (["--lr-range", "fast"], "--lr-range takes LO,HI or one number"),
    (["--pick", "worst"], "pick must be one of"),
    (["--target", "size=5"], "fix: pass --target params=0.5"),
    (["--target-reach", "0"], "target_reach must be a finite number in (0, 1]"),
])
def test_bad_tune_settings_are_refused(tmp_path, flags, says):
    res = CliRunner().invoke(app, ["tune", str(DIGITS), *flags, "--out", str(tmp_path)])
    assert res.exit_code == 2 and says in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("reach", [True, 0.0, 1.5, float("nan")])
def test_tune_config_refuses_a_reach_a_search_refuses(reach):
    with pytest.raises(ConfigError, match=r"target_reach must be a finite number in \(0, 1\]"):
        TuneConfig(model_file="m.py", out="out", target_reach=reach)


@pytest.mark.skipif(not can_run_server(), reason="PostgreSQL's server programs (or, as root, a postgres user) "
                                                  "are not on this machine: apt-get install postgresql")
def test_two_workers_share_one_study_in_postgresql(tmp_path):
    model_py = _wide_model_file(tmp_path)
    with postgres_server() as url:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, "-m", "archc", "tune", str(model_py), "--trials", "4", "--epochs",
                                   "1", "--batch-size", "32", "--storage", url, "--study-name", "shared",
                                   "--out", str(tmp_path / f"machine{i}")],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(2)]
        outputs = [p.communicate(timeout=600)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        study = open_study(TuneConfig(model_file=str(model_py), out=str(tmp_path), storage=url, study_name="shared"))
        assert "+psycopg" in storage_url(TuneConfig(model_file="m.py", out=str(tmp_path), storage=url))
        done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    assert len(done) >= 4
    assert len({t.user_attrs["worker_pid"] for t in done}) == 2  # both processes ran trials of one study
    folders = {Path(t.user_attrs["folder"]).parent.parent.name for t in done}
    assert folders == {"machine0", "machine1"}


def test_a_code_label_names_the_version_commit_and_uncommitted_edits():
    from archc.provenance import code_label

    assert code_label({"version": "0.1.0"}) == "0.1.0"  # installed, no checkout
    assert code_label({"version": "0.1.0", "commit": "765de9522501", "uncommitted": []}) == "0.1.0+765de95"
    assert code_label({"version": "0.1.0", "commit": "765de9522501", "uncommitted": [" M archc/x.py"]}) \
        == "0.1.0+765de95.dirty"
