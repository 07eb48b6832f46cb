"""Checkpoints load without unpickling code; damaged or foreign files are refused clearly."""
import os
import pickle

import pytest
import torch

from archc.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def _valid_state():
    settings = {"lam": 0.1, "epochs": 2, "batch_size": 8, "lr": 1e-3, "regularizer": "l1", "seed": 0}
    return {"epoch": 1, "settings": settings, "model_state": {"w": torch.ones(2)},
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


# -- what `archc compact` says about files that are not (intact) archc checkpoints ----------------

FOREIGN = {
    "empty": (b"", "the file is empty"),
    "text": (b"epoch 3, lam 0.1\n", "it is a text file"),
    "json": (b'{"epoch": 3, "settings": {}}', "it is a JSON file"),
    "random bytes": (bytes(range(7, 250)) * 4, "it is not a torch.save archive"),
    "safetensors claiming 2^62 bytes": ((1 << 62).to_bytes(8, "little") + b'{"w": {}}', "not an archc checkpoint"),
    "safetensors": (len(b'{"__metadata__": {}}').to_bytes(8, "little") + b'{"__metadata__": {}}',
                    "it is a safetensors file"),
    "plain pickle": (pickle.dumps({"epoch": 1}), "it is a plain pickle"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_compact_names_why_a_file_is_not_an_archc_checkpoint(tmp_path, case):
    from test_user_mistakes import refused
    from typer.testing import CliRunner
    from archc.cli.main import app

    content, why = FOREIGN[case]
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    text = refused(CliRunner().invoke(app, ["compact", str(path), "-o", str(tmp_path / "c")]),
                   "not an archc checkpoint", why)
    assert "refused" not in text  # the cause is the format, not unsafe contents


def _searched_state(tmp_path):
    from test_user_mistakes import model_file, search

    assert search(model_file(tmp_path)).exit_code == 0
    return load_checkpoint(tmp_path / "run" / "checkpoint.pt")


MALFORMED = {
    "settings not a dict": (lambda s: s.update(settings=[1, 2]), "field 'settings' is list"),
    "unknown setting": (lambda s: s["settings"].update(lamda=3), "unknown setting(s) lamda"),
    "negative lam": (lambda s: s["settings"].update(lam=-5.0), "lam must be a finite number >= 0"),
    "kept out of range": (lambda s: s["kept"].update({k: v + 1000 for k, v in s["kept"].items()}), "keeps channel"),
    "kept not indices": (lambda s: s["kept"].update({k: v.float() for k, v in s["kept"].items()}),
                         "not distinct non-negative channel indices"),
    "wrong weight shapes": (lambda s: s["model_state"].update({k: torch.zeros(3, 3) for k in s["model_state"]
                                                               if k.endswith("weight")}), "weights do not fit"),
    "epoch not a count": (lambda s: s.update(epoch="three"), "field 'epoch'"),
    "model file a path": (lambda s: s.update(model_file=["a"]), "field 'model_file'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_archc_checkpoints_name_the_bad_field(tmp_path, case):
    from test_user_mistakes import refused
    from typer.testing import CliRunner
    from archc.cli.main import app

    state = _searched_state(tmp_path)
    edit, phrase = MALFORMED[case]
    edit(state)
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    refused(CliRunner().invoke(app, ["compact", str(path), "-o", str(tmp_path / "c")]), phrase)
    assert not (tmp_path / "c").exists()


def test_settings_newer_than_the_checkpoint_take_their_defaults_and_empty_ones_are_refused(tmp_path):
    state = _searched_state(tmp_path)
    path = tmp_path / "run" / "checkpoint.pt"
    for newer in ("target", "width_multiplier", "overwrite"):  # an older archc wrote none of these
        del state["settings"][newer]
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    assert load_checkpoint(path)["settings"]["target"] is None
    state["settings"] = {}
    save_checkpoint(path, {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(CheckpointError, match="field 'settings' lacks lam, epochs, batch_size"):
        load_checkpoint(path)
