"""Checkpoints load without unpickling code; damaged or foreign files are refused clearly."""
import os
import pickle

import pytest
import torch

from archc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _valid_state():
    return {"epoch": 1, "settings": {"lam": 0.1}, "model_state": {"w": torch.ones(2)},
            "kept": {"filter0": torch.arange(3)}, "model_file": "m.py", "model_sha256": "ab" * 32}


def test_round_trip_and_atomic_write(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.pt", _valid_state())
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["kept"]["filter0"], torch.arange(3))
    assert os.listdir(tmp_path) == ["checkpoint.pt"]  # no temp file left behind


class RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({**_valid_state(), "format": "archc-checkpoint/1", "payload": RunsCode()}, path)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned.txt").exists()


def test_a_plain_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_truncated_checkpoint_is_reported_as_damaged(tmp_path):
    path = save_checkpoint(tmp_path / "c.pt", _valid_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_checkpoint(path)


def test_foreign_and_missing_files(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an archc checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
