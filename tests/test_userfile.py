"""Tests for archc.userfile: loading a user's model.py and reporting every mistake clearly."""
from __future__ import annotations

import hashlib
import sys
import textwrap

import pytest
import torch

from archc.errors import UserFileError
from archc.model_io import accuracy, cross_entropy
from archc.userfile import UserSpec, load_user_file

HEADER = "import torch\nimport torch.nn as nn\n"
MODEL = "def model():\n    return nn.Linear(4, 2)\n"


def write(tmp_path, body: str, name: str = "model.py"):
    path = tmp_path / name
    path.write_text(HEADER + body)
    return path


def test_minimal_file_defaults(tmp_path):
    path = write(tmp_path, MODEL + "def example_input():\n    return torch.randn(3, 4)\n")
    spec = load_user_file(path)
    assert isinstance(spec, UserSpec) and spec.path == path
    assert spec.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert isinstance(spec.model(), torch.nn.Linear)
    (x,) = spec.example_inputs()
    assert x.shape == (3, 4)
    assert spec.loss_fn is cross_entropy and spec.metric_fn is accuracy
    assert spec.data_fn is None and spec.optimizer_fn is None
    assert spec.test_set() is None  # no test_data(): nothing held out to report


def test_test_data_is_collected_and_its_failure_named(tmp_path):
    spec = load_user_file(write(tmp_path, MODEL + "def test_data():\n    return [(torch.randn(2, 4), torch.tensor([0, 1]))]\n"))
    assert spec.test_set()[0][0].shape == (2, 4)
    spec = load_user_file(write(tmp_path, MODEL + "def test_data():\n    raise OSError('no such file: t10k')\n"))
    with pytest.raises(UserFileError, match=r"test_data.*no such file: t10k"):
        spec.test_set()


def test_all_functions_are_collected(tmp_path):
    path = write(tmp_path, MODEL + textwrap.dedent("""
        def data():
            return [(torch.randn(2, 4), torch.tensor([0, 1]))]
        def loss(out, y):
            return out.sum()
        def metric(out, y):
            return 0.5
        def optimizer(model):
            return torch.optim.SGD(model.parameters(), lr=0.1)
        """))
    spec = load_user_file(path)
    assert spec.loss_fn(torch.ones(2), None).item() == 2.0
    assert spec.metric_fn(None, None) == 0.5
    assert isinstance(spec.optimizer_fn(spec.model()), torch.optim.SGD)
    (x,) = spec.example_inputs()  # from the first batch of data()
    assert x.shape == (2, 4)


def test_example_input_tuple_and_train_val_pair(tmp_path):
    spec = load_user_file(write(tmp_path, MODEL + textwrap.dedent("""
        def example_input():
            return (torch.randn(2, 4), torch.zeros(2, 3, dtype=torch.long))
        """)))
    assert [t.shape for t in spec.example_inputs()] == [(2, 4), (2, 3)]

    loader = "torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 4), torch.zeros(6)), batch_size=3)"
    spec = load_user_file(write(tmp_path, MODEL + f"def data():\n    return {loader}, {loader}\n", "pair.py"))
    (x,) = spec.example_inputs()
    assert x.shape == (3, 4)


def test_example_input_from_a_train_val_pair_of_datasets(tmp_path):
    """``data()`` returning ``(TensorDataset, TensorDataset)``: the example is a batch of samples."""
    ds = "torch.utils.data.TensorDataset(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))"
    spec = load_user_file(write(tmp_path, MODEL + f"def data():\n    return {ds}, {ds}\n", "datasets.py"))
    (x,) = spec.example_inputs()
    assert x.shape == (2, 4)


def test_accuracy():
    assert accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 1])) == 0.5


def test_unique_module_names_and_sibling_imports(tmp_path):
    (tmp_path / "helper.py").write_text("WIDTH = 7\n")
    path = write(tmp_path, "from helper import WIDTH\ndef model():\n    return nn.Linear(WIDTH, 1)\n")
    a, b = load_user_file(path), load_user_file(path)
    assert a.module is not b.module and a.module.__name__ != b.module.__name__
    assert a.model().in_features == 7
    assert str(tmp_path) not in sys.path


def _raises(path, *fragments, call=None):
    with pytest.raises(UserFileError) as info:
        spec = load_user_file(path)
        if call:
            call(spec)
    msg = str(info.value)
    assert str(path) in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


def test_missing_file(tmp_path):
    _raises(tmp_path / "nope.py", "does not exist", "def model()")
    _raises(tmp_path, "is a directory")


def test_syntax_error(tmp_path):
    _raises(write(tmp_path, "def model(:\n    pass\n"), "syntax error", ":3")


def test_import_raises(tmp_path):
    path = write(tmp_path, "raise ValueError('no dataset here')\n")
    _raises(path, "importing the file raised ValueError: no dataset here", f"{path}:3")
    _raises(write(tmp_path, "import sys\nsys.exit(1)\n", "exits.py"), "SystemExit")
    assert not [m for m in sys.modules if m.startswith("archc_user_exits")]


def test_missing_model(tmp_path):
    _raises(write(tmp_path, "x = 1\n"), "no `model` function", "def model() -> torch.nn.Module")


def test_model_not_callable(tmp_path):
    _raises(write(tmp_path, "model = 3\n"), "`model` is a int, not a function")


def test_model_returns_wrong_type(tmp_path):
    path = write(tmp_path, "def model():\n    return 'resnet'\n")
    _raises(path, "`model()` returned a str, not a torch.nn.Module", "def model()",
            call=lambda s: s.model())


def test_model_raises(tmp_path):
    path = write(tmp_path, "def model():\n    return nn.Linear(4)\n")
    _raises(path, "`model()` raised TypeError", f"{path}:4", call=lambda s: s.model())


def test_example_input_wrong_type(tmp_path):
    path = write(tmp_path, MODEL + "def example_input():\n    return [1, 2]\n")
    _raises(path, "`example_input()` returned a list of (int, int)", "tuple of tensors",
            call=lambda s: s.example_inputs())


def test_no_example_source(tmp_path):
    _raises(write(tmp_path, MODEL), "neither `example_input()` nor `data()`",
            call=lambda s: s.example_inputs())


def test_empty_or_bad_data(tmp_path):
    _raises(write(tmp_path, MODEL + "def data():\n    return []\n"), "yielded no batch",
            call=lambda s: s.example_inputs())
    _raises(write(tmp_path, MODEL + "def data():\n    return 5\n", "five.py"), "not iterable",
            call=lambda s: s.example_inputs())
    _raises(write(tmp_path, MODEL + "def data():\n    return [({'a': 1}, 0)]\n", "dict.py"),
            "a dict", "`data()`", call=lambda s: s.example_inputs())


def test_data_required_when_missing(tmp_path):
    _raises(write(tmp_path, MODEL), "`data()` is needed", call=lambda s: s.data())


def test_optional_function_not_callable(tmp_path):
    _raises(write(tmp_path, MODEL + "loss = 'mse'\n"), "`loss` is a str", "def loss(output, target)")
