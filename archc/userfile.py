"""Load a user's ``model.py`` for the CLI.

The file defines plain functions; only ``model`` is required::

    def model() -> torch.nn.Module: ...            # the network to compile (required)
    def example_input() -> Tensor | tuple[Tensor, ...]: ...   # one batch of inputs
    def data(): ...            # (train, val): datasets or loaders of (inputs, target) batches
    def test_data(): ...       # optional held-out set: the compact model's metric on it is reported
    def loss(output, target) -> Tensor: ...        # default: cross-entropy
    def metric(output, target) -> float: ...       # default: top-1 accuracy
    def optimizer(params) -> torch.optim.Optimizer: ...   # default: Adam

Example::

    spec = load_user_file("examples/resnet.py")
    net, xs = spec.model(), spec.example_inputs()

Every problem raises :class:`UserFileError` naming the file, the function and the fix.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import itertools
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Optional, Union

import torch

from archc.errors import UserFileError
from archc.model_io import accuracy, cross_entropy

_counter = itertools.count()
_HINTS = {
    "model": "define `def model() -> torch.nn.Module` returning your network (`def model(width_multiplier=1.0)` "
             "to let archc scale its widths)",
    "example_input": "define `def example_input()` returning a tensor or a tuple of tensors "
                     "(one batch of model inputs)",
    "data": "define `def data()` returning (train, val): two datasets or data loaders of (inputs, target)",
    "test_data": "define `def test_data()` returning a held-out dataset or data loader of (inputs, target)",
    "loss": "define `def loss(output, target) -> torch.Tensor`",
    "metric": "define `def metric(output, target) -> float`",
    "optimizer": "define `def optimizer(params) -> torch.optim.Optimizer`",
}


@dataclass
class UserSpec:
    """The functions a user file defines (defaults filled in), its path and its sha256."""

    path: Path
    sha256: str
    model_fn: Callable[[], torch.nn.Module]
    data_fn: Optional[Callable[[], Any]] = None
    test_data_fn: Optional[Callable[[], Any]] = None
    loss_fn: Callable[[Any, Any], torch.Tensor] = cross_entropy
    metric_fn: Callable[[Any, Any], float] = accuracy
    example_input_fn: Optional[Callable[[], Any]] = None
    optimizer_fn: Optional[Callable[[Any], Any]] = None  # called with the model's parameters
    module: Optional[ModuleType] = None

    def model(self, width_multiplier: Optional[float] = None) -> torch.nn.Module:
        """Call the user's ``model()`` (with ``width_multiplier=`` when given: the file's
        ``model`` must then accept it) and check it returned an ``nn.Module``."""
        if width_multiplier is not None and not self.accepts_width():
            raise _error(self.path, "model", "a width multiplier was asked for, but `model()` takes no "
                         "`width_multiplier` argument")
        kwargs = {} if width_multiplier is None else {"width_multiplier": width_multiplier}
        net = _call(self.path, "model", self.model_fn, **kwargs)
        if not isinstance(net, torch.nn.Module):
            raise _error(self.path, "model", f"`model()` returned {_kind(net)}, not a torch.nn.Module")
        return net

    def train_val(self) -> tuple[Any, Any]:
        """``data()`` as the (train, val) pair ``archc search`` and ``archc compact`` need."""
        data = self.data()
        if not (isinstance(data, (tuple, list)) and len(data) == 2):
            raise UserFileError(f"{self.path}: `data()` must return (train, val): two datasets or data loaders.\n"
                                "  fix: `def data(): return train_set, val_set`")
        return data[0], data[1]

    def accepts_width(self) -> bool:
        """Whether ``model()`` takes a ``width_multiplier`` keyword (``archc tune`` then searches it)."""
        try:
            return "width_multiplier" in inspect.signature(self.model_fn).parameters
        except (TypeError, ValueError):
            return False

    def data(self) -> Any:
        """Call the user's ``data()``; an error if the file does not define it."""
        if self.data_fn is None:
            raise _error(self.path, "data", "`data()` is needed here but not defined")
        return _call(self.path, "data", self.data_fn)

    def test_set(self) -> Optional[Any]:
        """The user's ``test_data()`` (a held-out dataset or loader), or None when the file has none."""
        return None if self.test_data_fn is None else _call(self.path, "test_data", self.test_data_fn)

    def example_inputs(self) -> Union[tuple, dict]:
        """One batch of model inputs: from ``example_input()``, else the first batch of ``data()``.
        A tuple holds positional inputs; a dict holds keyword inputs (transformers models).

        Example: ``(x,) = spec.example_inputs()``.
        """
        if self.example_input_fn is not None:
            got = _call(self.path, "example_input", self.example_input_fn)
            return _as_tensors(self.path, "example_input", got, "`example_input()` returned")
        if self.data_fn is not None:
            return _as_tensors(self.path, "data", _batch_inputs(self.path, self.data()),
                               "the first batch of `data()` has inputs of")
        raise _error(self.path, "example_input", "no example input: the file defines neither "
                     "`example_input()` nor `data()`")


def load_user_file(path: Union[str, Path]) -> UserSpec:
    """Import the user's file by path (under a unique module name) and collect its functions.

    Example: ``spec = load_user_file("model.py"); spec.sha256``.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise UserFileError(f"{path}: the file {what}\n  fix: pass the path of a Python file that "
                            "defines `def model() -> torch.nn.Module`")
    source = path.read_bytes()
    module = _import(path)
    fns: dict[str, Optional[Callable]] = {}
    for name in _HINTS:
        fn = getattr(module, name, None)
        if fn is not None and not callable(fn):
            raise _error(path, name, f"`{name}` is {_kind(fn)}, not a function")
        fns[name] = fn
    if fns["model"] is None:
        raise _error(path, "model", "no `model` function found")
    spec = UserSpec(path=path, sha256=hashlib.sha256(source).hexdigest(), model_fn=fns["model"],
                    data_fn=fns["data"], test_data_fn=fns["test_data"], example_input_fn=fns["example_input"],
                    optimizer_fn=fns["optimizer"], module=module)
    spec.loss_fn = fns["loss"] or spec.loss_fn
    spec.metric_fn = fns["metric"] or spec.metric_fn
    return spec


def _import(path: Path) -> ModuleType:
    """Execute ``path`` as a fresh module; its folder is importable while it runs."""
    name = f"archc_user_{path.stem.replace('-', '_')}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserFileError(f"{path}: cannot be imported as Python\n  fix: give it a .py suffix")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up here
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    ok = False
    try:
        spec.loader.exec_module(module)
        ok = True
    except SyntaxError as err:
        raise UserFileError(f"{path}: syntax error at {err.filename or path}:{err.lineno}: "
                            f"{err.msg}\n  fix: correct the Python syntax at that line") from err
    except (Exception, SystemExit) as err:  # noqa: BLE001 - whatever user code raises
        raise UserFileError(f"{path}: importing the file raised {_describe(err, path)}\n"
                            f"  fix: make the file importable (`python {path}` shows the "
                            "full traceback)") from err
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
        if not ok:
            sys.modules.pop(name, None)
    return module


def _call(path: Path, name: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call a user function, turning any exception into a UserFileError."""
    try:
        return fn(*args, **kwargs)
    except UserFileError:
        raise
    except (Exception, SystemExit) as err:  # noqa: BLE001 - whatever user code raises
        raise UserFileError(f"{path}: `{name}()` raised {_describe(err, path)}\n"
                            f"  fix: {_HINTS[name]}; it must run without error") from err


def _batch_inputs(path: Path, data: Any) -> Any:
    """The model inputs of the first batch of ``data`` (or of ``data[0]`` for a (train, val) pair)."""
    try:
        first = next(iter(data))
        if isinstance(first, torch.utils.data.Dataset) and not hasattr(first, "__iter__"):
            # data() returned (train, val) datasets: their first two samples, batched
            first = torch.utils.data.default_collate([first[i] for i in range(min(2, len(first)))])
        elif not isinstance(first, (torch.Tensor, tuple, list, dict)) and hasattr(first, "__iter__"):
            first = next(iter(first))  # data() returned (train, val) loaders
    except StopIteration:
        raise _error(path, "data", "`data()` yielded no batch") from None
    except TypeError as err:
        raise _error(path, "data", f"`data()` returned {_kind(data)}, which is not iterable") from err
    except Exception as err:  # noqa: BLE001 - a user's dataset can raise anything
        raise _error(path, "data", f"iterating `data()` raised {_describe(err, path)}") from err
    if isinstance(first, (tuple, list)) and len(first) >= 2:
        return first[0]  # (inputs, target)
    return first


def _as_tensors(path: Path, name: str, value: Any, what: str) -> Union[tuple, dict]:
    """``value`` as a non-empty tuple of tensors (or a dict with tensors: keyword inputs), else a
    UserFileError naming ``name``."""
    if isinstance(value, dict) and any(isinstance(v, torch.Tensor) for v in value.values()):
        return dict(value)
    items = (value,) if isinstance(value, torch.Tensor) else value
    if isinstance(items, (tuple, list)) and items and all(isinstance(t, torch.Tensor) for t in items):
        return tuple(items)
    raise _error(path, name, f"{what} {_kind(value)}, not a tensor, a tuple of tensors or a dict of keyword inputs")


def _error(path: Path, name: str, problem: str) -> UserFileError:
    return UserFileError(f"{path}: {problem}\n  fix: {_HINTS[name]}")


def _kind(value: Any) -> str:
    """A short description of ``value``'s type for messages."""
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(type(v).__name__ for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"a {type(value).__name__} of ({inner})"
    return f"a {type(value).__name__}"


def _describe(err: BaseException, path: Path) -> str:
    """``Type: message``, plus the line of the user's file where it was raised, if any."""
    text = f"{type(err).__name__}: {err}"
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if Path(f.filename).resolve() == path.resolve()]
    if frames:
        text += f" (at {path}:{frames[-1].lineno}: {frames[-1].line})"
    return text
