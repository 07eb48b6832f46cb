"""Does onnxruntime reproduce the reference? The check behind :func:`archc.export.export_onnx`.

onnxruntime runs the exported file on the example inputs and on a fresh random batch of
another size; each output is judged per channel on the reference's scale
(:func:`archc.verify.relative_error`), and NaN or inf never passes.

Example::

    sess = onnx_session("model.onnx")
    (logits,) = run_onnx(sess, [np.zeros((5, 3, 32, 32), np.float32)])
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from archc.capture.inputs import random_inputs, shape_variants
from archc.errors import ExportError
from archc.verify import max_relative_error, relative_error

_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


@dataclass
class OnnxResult:
    """What :func:`export_onnx` wrote and how closely onnxruntime matched PyTorch."""

    path: Path
    providers: list[str]
    max_abs_err: Optional[float] = None  # None when check=False
    max_rel_err: Optional[float] = None


def onnx_session(path: Union[str, os.PathLike]):
    """An ``onnxruntime.InferenceSession`` on CUDA when torch and onnxruntime both have it, else CPU.

    Provider log noise is silenced; a CUDA provider that fails to load falls back to CPU.
    Example: ``sess = onnx_session("model.onnx"); sess.get_providers()``.
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if torch.cuda.is_available() and _CUDA in ort.get_available_providers():
        ort.set_default_logger_severity(4)  # a missing CUDA library logs at ERROR level
        try:
            sess = ort.InferenceSession(str(path), opts, providers=[_CUDA, _CPU])
            if _CUDA in sess.get_providers():
                return sess
        except Exception:  # noqa: BLE001 - any CUDA load failure means: use the CPU
            pass
        finally:
            ort.set_default_logger_severity(3)
    return ort.InferenceSession(str(path), opts, providers=[_CPU])


def run_onnx(session, inputs: Union[Sequence[Any], Mapping[str, Any]]) -> list[np.ndarray]:
    """Run ``session`` on tensors or arrays given in input order (or by name); return numpy outputs.

    Inputs the exporter dropped as unused are skipped. Example: ``run_onnx(sess, [x])[0]``.
    """
    names = [i.name for i in session.get_inputs()]
    if isinstance(inputs, Mapping):
        feed = {n: _to_numpy(inputs[n]) for n in names}
    else:
        feed = {}
        for pos, name in enumerate(names):
            m = re.fullmatch(r"input_(\d+)", name)
            feed[name] = _to_numpy(inputs[int(m.group(1)) if m else pos])
    return list(session.run(None, feed))


def _check(module, reference, inputs, tmp: str, path: Path, rtol: float, atol: float) -> OnnxResult:
    """Compare onnxruntime with the reference on the example and on a random batch of another size."""
    try:
        sess = onnx_session(tmp)
    except Exception as err:  # noqa: BLE001 - onnxruntime rejects the file itself
        raise ExportError(f"{path}: onnxruntime cannot load the exported file: {_first_line(err)}\n"
                          "  fix: report the model; the PyTorch model.py is not affected") from err
    worst_abs = worst_rel = 0.0
    against, judge = ("PyTorch", module) if reference is None else ("the reference", reference)
    for label, xs in (("the example inputs", inputs), _other_batch(module, reference, inputs)):
        want = _outputs("PyTorch", lambda: judge(*xs), label, path)
        got = _outputs("onnxruntime", lambda: run_onnx(sess, xs), label, path)
        errs = _errors(got, want, label, path, atol, against)
        if reference is not None and any(rel > rtol for _, rel in errs):
            errs = _rounding_only(module, reference, xs, got, errs, label, path, atol)
        for i, (abs_err, rel_err) in enumerate(errs):
            worst_abs, worst_rel = max(worst_abs, abs_err), max(worst_rel, rel_err)
            if rel_err > rtol:
                raise ExportError(
                    f"{path}: ONNX output {i} differs from {against} on {label}: max abs error "
                    f"{abs_err:.3g}, relative error {rel_err:.3g} per output channel (rtol={rtol})\n"
                    "  fix: loosen rtol if the error is float noise; otherwise the model depends on "
                    "the batch size or uses an operation that exports wrongly. Nothing was written")
    return OnnxResult(path=path, providers=list(sess.get_providers()),
                      max_abs_err=worst_abs, max_rel_err=worst_rel)


def _outputs(runner: str, run, label: str, path: Path) -> list:
    """``run()``'s flat outputs; a failure (a batch hard-coded in a reshape) is an ExportError."""
    try:
        return run() if runner == "onnxruntime" else _flat_outputs(run(), label)
    except ExportError:
        raise
    except Exception as err:  # noqa: BLE001 - torch and onnxruntime errors alike
        raise ExportError(f"{path}: {runner} failed to run the model on {label}: {_first_line(err)}\n"
                          "  fix: make the model independent of the batch size (no hard-coded batch "
                          "in view/reshape), then export again") from err


def _errors(got: Sequence[np.ndarray], want: Sequence[torch.Tensor], label: str, path: Path, atol: float,
            against: str) -> list[tuple[float, float]]:
    """(max abs error, per-channel relative error) of each output; raises on a shape mismatch or NaN/inf."""
    if len(got) != len(want):
        raise ExportError(f"{path}: onnxruntime gives {len(got)} outputs but {against} {len(want)} on {label}\n"
                          "  fix: return a fixed set of tensors from forward()")
    errs = []
    for i, (w, g) in enumerate(zip(want, got)):
        w, g = w.detach().cpu().double(), torch.as_tensor(np.asarray(g)).double()
        if w.shape != g.shape:
            raise ExportError(f"{path}: output {i} has shape {tuple(g.shape)} in onnxruntime but {tuple(w.shape)} "
                              f"in {against} on {label}\n  fix: make the output shape depend on the batch "
                              "only through dim 0")
        who = next((who for who, t in ((f"{against} (PyTorch)", w), ("onnxruntime", g))
                    if not torch.isfinite(t).all()), None)
        if who:
            raise ExportError(f"{path}: {who} produced NaN or inf in output {i} on {label}; nothing was "
                              "written\n  fix: find the layer that overflows or divides by zero, make it finite")
        errs.append((float((g - w).abs().max()) if w.numel() else 0.0, relative_error(g, w, floor=atol)))
    return errs


def _rounding_only(module, reference, xs, got, errs, label: str, path: Path, atol: float) -> list:
    """Where onnxruntime misses the reference, accept float32 rounding only: the ONNX file
    must match ``module`` and ``module`` must match the reference in float64 on ``xs``."""
    try:
        exact = max_relative_error(reference, module, xs, dtype=torch.float64)
    except Exception:  # noqa: BLE001 - no float64 second opinion
        return errs
    mine = _errors(got, _outputs("PyTorch", lambda: module(*xs), label, path), label, path, atol, "PyTorch")
    return [(a, min(rel, max(own, exact))) for (a, rel), (_, own) in zip(errs, mine)]


def _other_batch(module, reference, inputs: Sequence[torch.Tensor]) -> tuple[str, tuple]:
    """A label and random inputs at another batch size: drawn from archc's input specs where
    the reference (or the module) has them for these inputs, else like ``inputs``."""
    holder = next((m for m in (reference, module) if _batch_sizes(m, inputs) is not None), None)
    if holder is None:
        xs = _random_like(inputs, next((t.shape[0] for t in inputs if t.dim() > 0), 0) + 3)
    else:
        drawn = random_inputs(holder, seed=1, sizes=_batch_sizes(holder, inputs))
        xs = tuple(x.to(t.device) for x, t in zip(drawn, inputs))
    return f"a random batch of {next((t.shape[0] for t in xs if t.dim() > 0), 0)}", xs


def _batch_sizes(holder, inputs: Sequence[torch.Tensor]) -> Optional[dict]:
    """Symbol sizes with only the batch symbols (dim 0) moved to another shape variant."""
    meta = getattr(holder, "meta", None)
    specs = meta.get("archc.inputs") if isinstance(meta, dict) else None
    if not specs or [tuple(s["shape"]) for s in specs] != [tuple(t.shape) for t in inputs]:
        return None
    variants = shape_variants(holder)
    batch_symbols = {str(v) for s in specs for k, v in s.get("dims", {}).items() if int(k) == 0} & set(variants[0])
    for variant in variants[1:]:
        if any(variant[s] != variants[0][s] for s in batch_symbols):
            return {**variants[0], **{s: variant[s] for s in batch_symbols}}
    return None


def _flat_outputs(out: Any, label: str) -> list[torch.Tensor]:
    """Flatten a module's output (tensor, tuple, list, dict) into a list of tensors."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat_outputs(o, label)]
    raise ExportError(f"the model returned a {type(out).__name__} on {label}\n"
                      "  fix: return a tensor or a tuple/list/dict of tensors from forward()")


def _random_like(inputs: Sequence[torch.Tensor], batch: int) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like ``inputs`` but with dim 0 = ``batch``."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for t in inputs:
        shape = (batch, *t.shape[1:]) if t.dim() > 0 else ()
        if t.dtype.is_floating_point:
            r = torch.randn(shape, generator=gen).to(t.dtype)
        elif t.dtype == torch.bool:
            r = torch.randint(0, 2, shape, generator=gen).bool()
        else:
            lo, hi = (int(t.min()), int(t.max())) if t.numel() else (0, 0)
            r = torch.randint(lo, hi + 1, shape, generator=gen).to(t.dtype)
        out.append(r.to(t.device))
    return tuple(out)


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _first_line(err: BaseException, limit: int = 400) -> str:
    """The first few non-empty lines of ``err``'s message, at most ``limit`` characters."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = " | ".join(lines[:3]) or "(no message)"
    return text if len(text) <= limit else text[: limit - 3] + "..."
