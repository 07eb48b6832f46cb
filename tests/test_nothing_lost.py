"""Output folders, resume and interruptions: a user's files and a finished search are never lost,
and a refused run says why (exit 2, no traceback) before doing any work."""
from __future__ import annotations

import errno
import json
import os
import signal

import pytest

import archc.checkpoint as checkpoint_mod
from archc.checkpoint import interrupts_deferred, load_checkpoint
from archc.search import file_sha256
from test_user_mistakes import model_file, refused, runner, search
from archc.cli.main import app


def compact(*args: str):
    return runner.invoke(app, ["compact", *map(str, args)])


@pytest.fixture
def searched(tmp_path):
    """A model file and a finished one-epoch search of it in tmp_path/run (lam 0.3)."""
    path = model_file(tmp_path)
    res = search(path, "--lam", "0.3")
    assert res.exit_code == 0, res.output
    return path, tmp_path / "run"


# -- the search's output folder ---------------------------------------------------------------

def test_an_out_that_is_a_file_or_a_dangling_link_is_refused_before_training(tmp_path):
    path = model_file(tmp_path)
    (tmp_path / "afile").write_text("mine")
    refused(search(path, out=tmp_path / "afile"), "is a file, not a folder")
    os.symlink(tmp_path / "nowhere", tmp_path / "link")
    refused(search(path, out=tmp_path / "link"), "symbolic link to nothing")
    assert (tmp_path / "afile").read_text() == "mine"


def test_an_out_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch):
    import archc.out_dirs as out_dirs

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(out_dirs.tempfile, "mkstemp", read_only)  # root ignores chmod: fake it
    refused(search(model_file(tmp_path)), "cannot be written to (Permission denied)", "--out")


def test_a_full_disk_is_named_and_leaves_no_temp_file(searched, monkeypatch):
    path, run = searched

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_mod.os, "fsync", full)
    before = (run / "checkpoint.pt").read_bytes()
    refused(search(path, "--epochs", "2", "--resume"), "the disk is full", str(run / "checkpoint.pt"))
    assert sorted(p.name for p in run.iterdir()) == [".archc.lock", "best.pt", "checkpoint.pt", "log.jsonl", "m.py"]
    assert (run / "checkpoint.pt").read_bytes() == before


def test_temp_files_of_a_killed_write_are_removed_on_the_next_run(searched):
    path, run = searched
    (run / ".checkpoint.pt.k1ll3d_x").write_bytes(b"x" * 1000)  # named as tempfile.mkstemp names
    (run / ".log.jsonl.abc12345").write_text("partial")
    (run / ".m.py.swp").write_text("an editor's file")
    assert search(path, "--epochs", "2", "--resume").exit_code == 0
    assert sorted(p.name for p in run.glob(".*")) == [".archc.lock", ".m.py.swp"]  # the temp files went


def test_ctrl_c_during_a_checkpoint_write_exits_130_with_the_checkpoint_intact(searched, monkeypatch):
    path, run = searched
    before = load_checkpoint(run / "checkpoint.pt")["epoch"]
    real = checkpoint_mod.torch.save

    def interrupted_save(obj, f):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives in the middle of the write
        real(obj, f)

    monkeypatch.setattr(checkpoint_mod.torch, "save", interrupted_save)
    res = search(path, "--epochs", "2", "--resume")
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == before + 1  # the write completed first
    assert [p.name for p in run.glob(".*")] == [".archc.lock"]  # no temp file


def test_interrupts_are_held_until_the_block_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append(True)
    assert done == [True]


# -- resume ----------------------------------------------------------------------------------------

def test_resume_keeps_the_checkpoints_settings(searched):
    path, run = searched
    res = search(path, "--epochs", "2", "--resume")
    assert res.exit_code == 0, res.output
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["settings"]["lam"] == 0.3 and state["settings"]["batch_size"] == 16 and state["epoch"] == 2


@pytest.mark.parametrize("flags, named", [(["--regularizer", "group_lasso"], "--regularizer"),
                                          (["--lam", "0.001"], "--lam"), (["--kernel-lam", "0.1"], "--kernel-lam")])
def test_resume_with_a_different_setting_is_refused_naming_the_flag(searched, flags, named):
    path, run = searched
    before = (run / "checkpoint.pt").read_bytes()
    refused(search(path, "--epochs", "2", "--resume", *flags), f"{named} ", "differs from the checkpoint's")
    assert (run / "checkpoint.pt").read_bytes() == before


def test_resume_without_a_checkpoint_is_refused(tmp_path):
    refused(search(model_file(tmp_path), "--resume"), "--resume: there is no checkpoint.pt")


def test_a_new_search_over_a_checkpoint_needs_resume_or_overwrite(searched):
    path, run = searched
    before = (run / "checkpoint.pt").read_bytes()
    refused(search(path), "already holds a search checkpoint", "--resume", "--overwrite")
    assert (run / "checkpoint.pt").read_bytes() == before
    assert search(path, "--overwrite", "--lam", "0.01").exit_code == 0
    assert load_checkpoint(run / "checkpoint.pt")["settings"]["lam"] == 0.01


def test_resume_after_the_model_file_changed_is_refused(searched):
    path, run = searched
    path.write_text(path.read_text() + "\n# edited\n")
    refused(search(path, "--epochs", "2", "--resume"), "changed since the checkpoint")


# -- compact's output folder and model file ------------------------------------------------------

def test_compact_never_overwrites_a_users_files(searched, tmp_path, monkeypatch):
    path, run = searched
    monkeypatch.chdir(tmp_path)
    original = path.read_text()
    (tmp_path / "model.py").write_text("# my own model.py\n")
    refused(compact(run / "checkpoint.pt", "-o", "."), "not a previous archc compact output", "--overwrite")
    assert (tmp_path / "model.py").read_text() == "# my own model.py\n" and path.read_text() == original
    assert not list(tmp_path.glob(".*staging*"))


def test_compact_replaces_its_own_previous_output(searched):
    _, run = searched
    assert compact(run / "checkpoint.pt", "-o", run / "c").exit_code == 0
    first = json.loads((run / "c" / "report.json").read_text())
    res = compact(run / "checkpoint.pt", "-o", run / "c", "--threshold", "0.5")
    assert res.exit_code == 0, res.output
    assert json.loads((run / "c" / "report.json").read_text())["threshold"] == 0.5 != first["threshold"]


def test_compact_on_a_full_disk_says_so_and_writes_nothing(searched, monkeypatch):
    _, run = searched

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_mod.os, "fsync", full)
    refused(compact(run / "checkpoint.pt", "-o", run / "c"), "the disk is full")
    assert not (run / "c").exists() and not [p for p in run.iterdir() if ".staging" in p.name]


def test_compact_with_another_model_file_of_other_widths_is_refused(searched, tmp_path):
    _, run = searched
    other = model_file(tmp_path, """
        def model():
            return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        """, name="other.py")
    refused(compact(run / "checkpoint.pt", "--model", other, "-o", tmp_path / "c"), "has 32 channels in this model, but 16", "model file the search ran on")


def test_compact_warns_when_the_model_file_differs_but_fits(searched, tmp_path):
    path, run = searched
    same = tmp_path / "same_layers.py"
    same.write_text(path.read_text() + "\n# a comment changes the hash\n")
    res = compact(run / "checkpoint.pt", "--model", same, "-o", tmp_path / "c")
    assert res.exit_code == 0 and "not the file the search ran on" in res.output
    assert json.loads((tmp_path / "c" / "report.json").read_text())["model_file_differs_from_search"]


def test_compact_imports_only_the_model_file_beside_the_checkpoint(searched, tmp_path):
    """A checkpoint naming a file elsewhere (with that file's true hash) does not make it run."""
    _, run = searched
    evil = tmp_path / "elsewhere" / "evil.py"
    evil.parent.mkdir()
    evil.write_text("open(__file__ + '.ran', 'w').write('yes')\ndef model():\n    pass\n")
    state = load_checkpoint(run / "checkpoint.pt")
    state.update(model_file=str(evil), model_sha256=file_sha256(evil))
    checkpoint_mod.save_checkpoint(run / "checkpoint.pt", {k: v for k, v in state.items() if k != "format"})
    refused(compact(run / "checkpoint.pt", "-o", tmp_path / "c"), "evil.py is not beside the checkpoint", "--model")
    assert not (evil.parent / "evil.py.ran").exists()


def test_compact_output_files_share_one_mode(searched):
    _, run = searched
    assert compact(run / "checkpoint.pt", "-o", run / "c").exit_code == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in (run / "c").iterdir()}
    assert len(set(modes.values())) == 1, modes


def test_compact_keeps_exporter_dumps_off_the_terminal(tmp_path, capfd):
    path = model_file(tmp_path, """
        class WithFFT(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 3)
            def forward(self, x):
                spectrum = torch.fft.rfft(x, dim=-1).abs().sum(-1, keepdim=True)
                return self.b(torch.relu(self.a(x))) + spectrum
        def model():
            return WithFFT()
        """)
    assert search(path).exit_code == 0
    res = compact(tmp_path / "run" / "checkpoint.pt", "-o", tmp_path / "c")
    assert res.exit_code == 0, res.output
    captured = capfd.readouterr()
    assert "Torch IR graph" not in captured.out + captured.err + res.output


# -- found by red-teaming the CLI --------------------------------------------------------------------

def test_resuming_a_copied_folder_writes_to_the_copy(searched, tmp_path):
    import shutil

    path, run = searched
    original = (run / "checkpoint.pt").read_bytes()
    shutil.copytree(run, tmp_path / "copy")
    assert search(path, "--epochs", "2", "--resume", out=tmp_path / "copy").exit_code == 0
    assert (run / "checkpoint.pt").read_bytes() == original
    assert load_checkpoint(tmp_path / "copy" / "checkpoint.pt")["epoch"] == 2


def test_overwrite_keeps_the_old_search_until_the_new_one_checkpoints(searched):
    path, run = searched
    before, copy = (run / "checkpoint.pt").read_bytes(), (run / "m.py").read_text()
    model_file(path.parent, """
        def loss(output, target):
            raise ValueError("broken")
        """)  # the new search fails at its first step
    refused(search(path, "--overwrite"), "loss(output, target) raised ValueError")
    assert (run / "checkpoint.pt").read_bytes() == before and (run / "log.jsonl").exists()
    assert (run / "m.py").read_text() == copy  # the model copy the old checkpoint needs


def test_a_search_refuses_a_folder_of_the_users_files(tmp_path):
    path = model_file(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "m.py").write_text("MY NOTES")
    (mine / "log.jsonl").write_text("mine too")
    refused(search(path, out=mine), "holds files that are not an archc search", "--overwrite")
    assert (mine / "m.py").read_text() == "MY NOTES" and (mine / "log.jsonl").read_text() == "mine too"


def test_two_searches_in_one_folder_at_once_are_refused(searched):
    from archc.out_dirs import search_lock

    path, run = searched
    with search_lock(run):  # a search is writing there now
        refused(search(path, "--epochs", "2", "--resume"), "another archc search is writing to")


def test_resume_with_nothing_left_to_train_says_so(searched):
    path, _ = searched
    refused(search(path, "--epochs", "1", "--resume"), "has run 1 epochs already", "--epochs above 1")


def test_compact_refuses_a_search_folder_a_file_parent_and_a_folder_as_checkpoint(searched, tmp_path):
    _, run = searched
    refused(compact(run / "checkpoint.pt", "-o", run, "--overwrite"), "is a search's folder")
    (tmp_path / "afile").write_text("x")
    refused(compact(run / "checkpoint.pt", "-o", tmp_path / "afile" / "x"), "is a file, not a folder")
    refused(compact(run), "is a folder", "checkpoint.pt")


def test_a_killed_compacts_staging_folder_is_removed_by_the_next(searched):
    _, run = searched
    stale, running = run / ".c.staging-0123456789ab", run / ".c.staging-ba9876543210"
    stale.mkdir()
    (stale / "model.py").write_text("partial")
    os.utime(stale, (0, os.path.getmtime(stale) - 7200))  # killed two hours ago
    running.mkdir()  # another compact into the same folder, at work now
    assert compact(run / "checkpoint.pt", "-o", run / "c").exit_code == 0
    assert not stale.exists() and running.exists()


def test_sigterm_stops_a_search_like_ctrl_c(searched, monkeypatch):
    path, run = searched
    import archc.search_run as search_run

    real = search_run.SearchRun.train_step

    def terminated(self, batch):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch)

    monkeypatch.setattr(search_run.SearchRun, "train_step", terminated)
    before = (run / "checkpoint.pt").read_bytes()
    res = search(path, "--epochs", "2", "--resume")
    assert res.exit_code == 130 and "Traceback" not in res.output
    assert (run / "checkpoint.pt").read_bytes() == before


def test_resume_and_overwrite_together_are_refused(searched):
    path, _ = searched
    refused(search(path, "--epochs", "2", "--resume", "--overwrite"), "pass one of them")
