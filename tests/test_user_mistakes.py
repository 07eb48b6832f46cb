"""A careless user of `archc search`: every mistake in the model file, its data or the flags is
exit code 2, no traceback, and a message naming the cause (and, in the loop, the epoch and step)."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archc.cli.main import app

runner = CliRunner()

BASE = '''
import torch
from torch import nn
from torch.utils.data import TensorDataset, IterableDataset


def model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def _xy(n=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()


def data():
    x, y = _xy()
    return TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:])


def example_input():
    return torch.randn(2, 8)
'''


def model_file(tmp_path: Path, extra: str = "", name: str = "m.py") -> Path:
    """The base model file with ``extra`` appended (later definitions replace earlier ones)."""
    path = tmp_path / name
    path.write_text(BASE + textwrap.dedent(extra))
    return path


def search(path: Path, *args: str, out: Path | None = None):
    out = out or path.parent / "run"
    return runner.invoke(app, ["search", str(path), "--epochs", "1", "--batch-size", "16", "--out", str(out),
                               "--no-progress", *args])


def plain(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\x1b\[[0-9;]*m", "", text))


def refused(res, *phrases: str) -> str:
    """Assert the run was refused cleanly (exit 2, no traceback) with all ``phrases`` in the message."""
    text = plain(res.output)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), res.output
    for phrase in phrases:
        assert phrase in text, (phrase, text)
    return text


# -- user code and data inside the loop ---------------------------------------------------------

LOOP_CASES = {
    "empty train set": ("""
        def data():
            x, y = _xy()
            return TensorDataset(x[:0], y[:0]), TensorDataset(x[48:], y[48:])
        """, ["training set is empty"]),
    "labels of shape (N, 1)": ("""
        def data():
            x, y = _xy()
            return TensorDataset(x[:48], y[:48, None]), TensorDataset(x[48:], y[48:, None])
        """, ["targets of shape (16, 1)", "epoch 1, step 1", "class indices"]),
    "labels out of range": ("""
        def data():
            x, y = _xy()
            return TensorDataset(x[:48], y[:48] + 5), TensorDataset(x[48:], y[48:])
        """, ["targets range over [5, 7]", "the model's output has 3 classes", "epoch 1, step 1"]),
    "loss raises": ("""
        def loss(output, target):
            raise ValueError("my loss is broken")
        """, ["loss(output, target) raised ValueError: my loss is broken", "epoch 1, step 1"]),
    "loss returns a float": ("""
        def loss(output, target):
            return 1.0
        """, ["loss(output, target) returned float", "scalar tensor"]),
    "metric raises": ("""
        def metric(output, target):
            return {}["missing"]
        """, ["metric(output, target) raised KeyError", "evaluating"]),
    "optimizer is not an optimizer": ("""
        def optimizer(params):
            return "adam"
        """, ["optimizer(params) returned str", "torch.optim.Optimizer"]),
    "optimizer raises": ("""
        def optimizer(params):
            return torch.optim.Adam(params, lr=-1)
        """, ["optimizer(params) raised ValueError", "building the optimizer"]),
    "BatchNorm meets a batch of 1": ("""
        def model():
            return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
        def data():
            x, y = _xy(49)
            return TensorDataset(x[:33], y[:33]), TensorDataset(x[33:], y[33:])
        """, ["a batch of 1 reached BatchNorm", "epoch 1, step 3", "drop_last=True"]),
    "tuple output whose first element is not the logits": ("""
        class Two(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = nn.Linear(8, 16), nn.Linear(16, 3)
            def forward(self, x):
                h = torch.relu(self.a(x))
                return h[:, :1].float(), self.b(h)
        def model():
            return Two()
        """, ["model's tuple output", "has 1 classes", "define loss() in model.py"]),
    "a generator as the train set": ("""
        def data():
            x, y = _xy()
            return ((x[i:i + 16], y[i:i + 16]) for i in range(0, 48, 16)), TensorDataset(x[48:], y[48:])
        """, ["training set is a one-shot iterator (generator)", "Dataset"]),
    "float64 data": ("""
        def data():
            x, y = _xy()
            return TensorDataset(x[:48].double(), y[:48]), TensorDataset(x[48:].double(), y[48:])
        """, ["torch.float64", "torch.float32", ".to(torch.float32)"]),
    "NaN inputs": ("""
        def data():
            x, y = _xy()
            x[3, 2] = float("nan")
            return TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:])
        """, ["NaN or inf", "clean the data"]),
    "a dataset that raises while iterating": ("""
        class Broken(torch.utils.data.Dataset):
            def __len__(self):
                return 32
            def __getitem__(self, i):
                raise IOError("cannot read sample %d" % i)
        def data():
            x, y = _xy()
            return Broken(), TensorDataset(x[48:], y[48:])
        """, ["iterating the training set raised OSError: cannot read sample", "epoch 1, step 1"]),
    "empty validation set": ("""
        def data():
            x, y = _xy()
            return TensorDataset(x[:48], y[:48]), TensorDataset(x[:0], y[:0])
        """, ["validation set is empty"]),
    "a forward that fails on the data": ("""
        def data():
            x, y = _xy()
            return TensorDataset(x[:48, :5], y[:48]), TensorDataset(x[48:, :5], y[48:])
        """, ["the model's forward raised", "epoch 1, step 1", "shaped like example_input()"]),
}


@pytest.mark.parametrize("case", list(LOOP_CASES))
def test_mistakes_in_the_loop_are_named_with_their_epoch_and_step(tmp_path, case):
    extra, phrases = LOOP_CASES[case]
    refused(search(model_file(tmp_path, extra)), *phrases)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # nothing saved from a failed first epoch


def test_an_iterable_dataset_without_len_streams(tmp_path):
    path = model_file(tmp_path, """
        class Stream(IterableDataset):
            def __iter__(self):
                x, y = _xy()
                return iter(list(zip(x[:48], y[:48])))
        def data():
            x, y = _xy()
            return Stream(), TensorDataset(x[48:], y[48:])
        """)
    res = search(path)
    assert res.exit_code == 0, res.output
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and log[0]["train_loss"] > 0  # 3 batches of 16 streamed through


# -- numbers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, phrases", [
    (["--lam", "nan"], ["lam must be a finite number >= 0, got nan"]),
    (["--lam", "-1"], ["lam must be a finite number >= 0", "--lam"]),
    (["--arch-lr", "-1"], ["arch_lr must be a finite number > 0"]),
    (["--patterns", "-3"], ["patterns must be a finite number >= 0"]),
    (["--lr", "inf"], ["lr must be a finite number > 0"]),
    (["--device", "tpu9"], ["device 'tpu9' is not a device torch knows", "--device"]),
    (["--regularizer", "l3"], ["regularizer must be one of"]),
])
def test_bad_numbers_and_names_are_refused_before_any_work(tmp_path, flags, phrases):
    refused(search(model_file(tmp_path), *flags), *phrases)
    assert not (tmp_path / "run").exists()


def test_cuda_on_a_machine_without_it_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    refused(search(model_file(tmp_path), "--device", "cuda"), "no CUDA device", "--device cpu")


def test_a_diverging_search_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = model_file(tmp_path)
    assert search(path, "--lam", "0.01").exit_code == 0
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    # plain SGD at lr 1e6 blows the weights up within a few steps (whether NaN or inf comes first
    # depends on the data order, so the blow-up is made certain: the loss of step 3 is NaN)
    import archc.search_run as search_run

    real = search_run.SearchRun._loss
    blown = lambda self, *a: real(self, *a) * (float("nan") if self.step >= 2 else 1.0)  # noqa: E731
    monkeypatch.setattr(search_run.SearchRun, "_loss", blown)
    res = search(path, "--optimizer", "sgd", "--lr", "1e6", out=tmp_path / "run2")
    refused(res, "the training loss became nan (epoch 1, step 3)", "diverged", "lower --lr")
    assert not (tmp_path / "run2" / "checkpoint.pt").exists()
    # diverging in a resumed search's second epoch keeps the first epoch's checkpoint
    monkeypatch.setattr(search_run.SearchRun, "_loss",
                        lambda self, *a: real(self, *a) * (float("inf") if self.epoch >= 1 else 1.0))
    res = search(path, "--epochs", "2", "--resume")
    refused(res, "became inf", "The checkpoint of epoch 1")
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == good


# -- found by red-teaming the CLI --------------------------------------------------------------------

def test_a_float64_or_misshapen_example_input_names_the_example(tmp_path, capfd):
    path = model_file(tmp_path, """
        def example_input():
            return torch.randn(2, 8).double()
        """)
    refused(search(path), "example input 0 is torch.float64", "example_input()")
    path = model_file(tmp_path, """
        def example_input():
            return torch.randn(2, 5)
        """, name="shape.py")
    refused(search(path), "could not capture", "shapes the model takes")
    captured = capfd.readouterr()
    assert "Traceback" not in captured.err + captured.out  # torch's fake-tensor log kept quiet


def test_a_loss_that_is_nan_from_the_start_is_not_called_divergence(tmp_path):
    path = model_file(tmp_path, """
        def loss(output, target):
            return output.sum() * float("nan")
        """)
    refused(search(path), "became nan", "before any training", "check loss(output, target)")


def test_a_metric_that_returns_no_number_is_named(tmp_path):
    refused(search(model_file(tmp_path, """
        def metric(output, target):
            return "high"
        """)), "metric(output, target) returned str, not a number")


@pytest.mark.parametrize("flags, phrase", [(["--threshold", "nan"], "--threshold must be a finite number"),
                                           (["--threshold", "-1"], "--threshold must be a finite number"),
                                           (["--finetune", "-1"], "--finetune a count >= 0")])
def test_compact_checks_its_numbers_as_search_does(tmp_path, flags, phrase):
    assert search(model_file(tmp_path)).exit_code == 0
    res = runner.invoke(app, ["compact", str(tmp_path / "run" / "checkpoint.pt"), "-o", str(tmp_path / "c"), *flags])
    refused(res, phrase)
    assert not (tmp_path / "c").exists()
