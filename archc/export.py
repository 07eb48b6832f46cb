"""Export a PyTorch module (or torch.fx GraphModule) to ONNX and check it in onnxruntime.

The batch dimension (dim 0 of every input and output) is dynamic. The file is written
atomically and only kept when onnxruntime reproduces the reference's outputs (the module's
own, or a model it was compacted from) on the example inputs and on a fresh random batch of
another size, judged per output channel (:func:`archc.verify.relative_error`).

Example::

    res = export_onnx(model, (torch.randn(2, 3, 32, 32),), "model.onnx")
    sess = onnx_session(res.path)
    (logits,) = run_onnx(sess, [np.zeros((5, 3, 32, 32), np.float32)])
"""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import torch

from archc.errors import ExportError
from archc.out_dirs import disk_is_full, write_error
# onnx_session and run_onnx are re-exported: callers run the written file with them
from archc.onnx_check import OnnxResult, _check, _first_line, _flat_outputs, onnx_session, run_onnx  # noqa: F401

OPSET = 17


def export_onnx(module: torch.nn.Module, example_inputs: Union[torch.Tensor, Sequence[torch.Tensor]],
                path: Union[str, os.PathLike], *, rtol: float = 1e-4, atol: float = 0.0,
                check: bool = True, reference: Optional[torch.nn.Module] = None) -> OnnxResult:
    """Export ``module`` (run in eval mode) to ``path`` with a dynamic batch and verify it.

    The check runs onnxruntime at the example batch and at another (a shape variant of the reference, see
    :func:`archc.capture.inputs.shape_variants`; example + 3 without one) and compares
    with ``reference`` (e.g. the gated model ``module`` was compacted from; default
    ``module``) by :func:`archc.verify.relative_error`: per output channel, on the reference's
    scale (``atol`` floors that scale). Raises :class:`ExportError` (and leaves no file) when
    export fails, an output holds NaN or inf, or the error exceeds ``rtol``.
    Example: ``export_onnx(small, (x,), "out/model.onnx", reference=gated).max_rel_err``.
    """
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _eval(module, reference), torch.no_grad():
        outs = _flat_outputs(module(*inputs), "the example inputs")
        tmp = _export_to_temp(module, inputs, outs, path)
        try:
            result = OnnxResult(path=path, providers=[])
            if check:
                tmp, result = _checked(module, reference, inputs, outs, tmp, path, rtol, atol)
            os.replace(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
    return result


def _checked(module, reference, inputs, outs, tmp: str, path: Path, rtol: float, atol: float):
    """``tmp`` checked; if it misses, the torch.export-based exporter's file instead (the
    TorchScript exporter mis-exports some in-place writes into views, as in Swin's attention
    mask), which must pass the same check. Returns the file that passed and its result."""
    try:
        return tmp, _check(module, reference, inputs, tmp, path, rtol, atol)
    except ExportError as first:
        _unlink(tmp)
        retry = _temp_name(path)
        try:
            _export_dynamo(module, inputs, retry, [f"input_{i}" for i in range(len(inputs))],
                           [f"output_{i}" for i in range(len(outs))])
            return retry, _check(module, reference, inputs, retry, path, rtol, atol)
        except Exception:  # noqa: BLE001 - the first verdict is the one to report
            _unlink(retry)
            raise first from None


@contextlib.contextmanager
def _eval(*roots: Optional[torch.nn.Module]):
    """``roots`` (``None`` skipped) in eval mode; every submodule's own mode restored on exit."""
    modes = {m: m.training for root in roots if root is not None for m in root.modules()}
    try:
        for m in modes:
            m.training = False
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _temp_name(path: Path) -> str:
    # A fresh name (not mkstemp) so the file gets the usual permissions from the umask.
    return str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


def _export_to_temp(module, inputs, outs: Sequence[torch.Tensor], path: Path) -> str:
    """Export into a temp file beside ``path``; return its name."""
    tmp = _temp_name(path)
    in_names = [f"input_{i}" for i in range(len(inputs))]
    out_names = [f"output_{i}" for i in range(len(outs))]
    axes = {n: {0: "batch"} for n, t in zip(in_names + out_names, [*inputs, *outs]) if t.dim() > 0}
    try:
        # The TorchScript-based exporter: fast, quiet once its deprecation warnings are
        # filtered, and honours dynamic_axes for any batch size of the example.
        with warnings.catch_warnings(), _native_output_silenced():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, tmp, dynamo=False, opset_version=OPSET,
                              input_names=in_names, output_names=out_names, dynamic_axes=axes,
                              do_constant_folding=True)
    except Exception as legacy_err:  # noqa: BLE001 - try the torch.export-based exporter next
        try:
            _export_dynamo(module, inputs, tmp, in_names, out_names)
        except Exception as err:  # noqa: BLE001
            _unlink(tmp)
            if disk_is_full(path.parent):
                raise write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))) from err
            raise ExportError(
                f"ONNX export of {type(module).__name__} to {path} failed:\n"
                f"  TorchScript exporter: {type(legacy_err).__name__}: {_first_line(legacy_err)}\n"
                f"  torch.export exporter: {type(err).__name__}: {_first_line(err)}\n"
                "  fix: replace the unsupported operation in the model, or export with a "
                "newer opset") from err
    return tmp


@contextlib.contextmanager
def _native_output_silenced() -> Iterator[None]:
    """Route file descriptors 1 and 2 to a scratch file: the TorchScript exporter prints a whole
    IR graph from C++ when one of its passes fails, and the fallback exporter handles it."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no such descriptors: nothing to silence
        yield
        return
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def _export_dynamo(module, inputs, tmp: str, in_names, out_names) -> None:
    """Fallback: torch.export-based exporter with a dynamic batch, its chatter silenced."""
    batch = torch.export.Dim("batch")
    shapes = tuple({0: batch} if t.dim() > 0 else None for t in inputs)
    quiet = io.StringIO()
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, tmp, dynamo=True, dynamic_shapes=shapes,
                              input_names=in_names, output_names=out_names,
                              opset_version=max(OPSET, 18), external_data=False, verbose=False)
    finally:
        torch_logger.setLevel(level)


def _unlink(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name + ".data")
