"""`torchrun --nproc-per-node 2 -m archc search`: the same widths as one process at the same
global batch, a metric within tolerance, one writer, and a resume on another number of processes."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from archc.checkpoint import load_checkpoint
from archc.distributed import GlobalBatchSampler

TINY = Path(__file__).with_name("tiny_task.py")
ARGS = ["--lam", "0.03", "--lr", "0.01", "--batch-size", "32", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _search(out: Path, processes: int, *extra: str) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                 "--master-port", str(_free_port())] if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*launcher, "-m", "archc", "search", str(TINY), *ARGS, "--out", str(out), *extra],
                          env=env, capture_output=True, text=True, timeout=600)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_global_batches_are_shared_out_the_same_way_for_any_number_of_processes(monkeypatch):
    one = list(GlobalBatchSampler(10, 4, seed=3))
    shares = []
    for r in range(2):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(r))
        shares.append(list(GlobalBatchSampler(10, 4, seed=3)))
    assert [a + b for a, b in zip(*shares)] == one  # each global batch split between the processes
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    sampler = GlobalBatchSampler(10, 4, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != one and sorted(sum(list(sampler), [])) == list(range(10))


def test_two_processes_match_one_and_resume_on_one(tmp_path):
    single = _search(tmp_path / "one", 1, "--epochs", "3")
    assert single.returncode == 0, single.stdout + single.stderr
    double = _search(tmp_path / "two", 2, "--epochs", "2")
    assert double.returncode == 0, double.stdout + double.stderr
    one, two = _log(tmp_path / "one"), _log(tmp_path / "two")
    assert [r["widths"] for r in two] == [r["widths"] for r in one[:2]]
    assert all(abs(a["val_metric"] - b["val_metric"]) <= 0.02 for a, b in zip(one, two))
    assert all(abs(a["train_loss"] - b["train_loss"]) <= 0.02 for a, b in zip(one, two))
    assert double.stdout.count("Learned widths") == 1  # process 0 alone reports (and writes)
    resumed = _search(tmp_path / "two", 1, "--epochs", "3", "--resume")  # on one process now
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert _log(tmp_path / "two")[-1]["widths"] == one[-1]["widths"]
    state = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert state["epoch"] == 3 and all(isinstance(v, torch.Tensor) for v in state["kept"].values())


def test_a_distributed_search_with_frozen_gates_trains(tmp_path):
    """Group lasso freezes the gates (the weights' prox decides): DDP must be built knowing that."""
    res = _search(tmp_path / "gl", 2, "--epochs", "1", "--regularizer", "group_lasso")
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_mistake_on_one_process_stops_every_process_cleanly(tmp_path):
    """Only process 1 meets the bad loss; process 0 must not wait for it in the gradient all-reduce."""
    model_py = tmp_path / "rank_loss.py"
    model_py.write_text(TINY.read_text() + '''

import os


def loss(output, target):
    if os.environ.get("RANK") == "1":
        raise ValueError("this process's loss is broken")
    return torch.nn.functional.cross_entropy(output, target)
''')
    port = _free_port()
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                          str(port), "-m", "archc", "search", str(model_py), *ARGS, "--epochs", "1",
                          "--out", str(tmp_path / "run")],
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    text = res.stdout + res.stderr
    assert res.returncode != 0
    assert "loss(output, target) raised ValueError: this process's loss is broken" in text
    assert "another process of this distributed search stopped it" in text
    ours = text.split("distributed/elastic")[0]  # what follows is torchrun's own report of the exits
    assert "Traceback" not in ours and text.count("exitcode  : 2") + text.count("exitcode: 2") >= 2
