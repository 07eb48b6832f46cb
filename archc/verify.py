"""Check that a rewritten model computes what its reference computes.

The error is judged on the reference's own scale, channel by channel (:func:`relative_error`),
so a small output column cannot hide behind a large one; NaN or inf never passes; and a
captured model is checked at every shape :func:`~archc.capture.inputs.shape_variants` gives
(the example's, a larger batch, a smaller one), so a size frozen into a rewrite is caught.

Example::

    assert_equivalent(gated, archc.compact(gated))            # raises CompactionError on a miss
    relative_error(torch.tensor([[1.0, 1e3]]), torch.tensor([[1.3, 1e3]]))  # 0.3, not 3e-4
"""
from __future__ import annotations

from contextlib import contextmanager
from itertools import chain
from typing import Iterator, Optional

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn

from .errors import CompactionError
from .capture.inputs import random_inputs, shape_variants

_FIX = ("  fix: report the model with this message; meanwhile keep "
        "using the gated model, which is exact.")


# A channel's scale is floored at this share of the output's largest magnitude. float32
# rounding, of the folded weights above all, leaves absolute errors that scale with the whole
# output, not with one channel: judged on a channel 600x smaller than the largest, an exact
# MobileNetV3 is 9.5e-6 off even in float64. With the floor at 1e-2, a 30% error in a channel
# 1e4 times smaller than the largest is still 3e-3, far past any rtol.
CHANNEL_FLOOR = 1e-2


def channel_scale(want: torch.Tensor, floor: float = 0.0) -> torch.Tensor:
    """The scale each element of ``want`` is judged on: the max ``|want|`` over its channel.

    The channel is dim 1 for rank >= 4 (NCHW), the last dim for rank 2 and 3 ((N, C) logits,
    (B, T, C) sequences) and the whole tensor for rank 0-1. A floor of :data:`CHANNEL_FLOOR`
    x the global max ``|want|`` (and ``floor``, an absolute one) keeps a tiny or all-zero
    channel from turning rounding into a miss.

    Example: ``channel_scale(torch.tensor([[1.0, -50.0], [-2.0, 5.0]]))`` -> ``[[2., 50.]]``.
    """
    mag = want.abs()
    top = float(mag.max()) if mag.numel() else 0.0
    keep = 1 if mag.dim() >= 4 else mag.dim() - 1 if mag.dim() >= 2 else None
    if keep is None:
        scale = torch.full_like(mag, top)
    else:
        scale = mag.amax(dim=[d for d in range(mag.dim()) if d != keep], keepdim=True)
    return scale.clamp_min(max(top * CHANNEL_FLOOR, floor, 1e-12))


def relative_error(got: torch.Tensor, want: torch.Tensor, floor: float = 0.0) -> float:
    """Largest ``|got - want| / channel_scale(want, floor)``; ``inf`` if the shapes differ or
    either holds a NaN or inf (a non-finite value never passes). Takes tensors or arrays.

    Example: ``relative_error(torch.tensor([[1.3, 1e3]]), torch.tensor([[1.0, 1e3]]))`` -> ``0.3``.
    """
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    if got.shape != want.shape or not (torch.isfinite(got).all() and torch.isfinite(want).all()):
        return float("inf")
    if not want.numel():
        return 0.0
    return float(((got - want).abs() / channel_scale(want, floor)).max())


def max_relative_error(
    reference: nn.Module, candidate: nn.Module, inputs: tuple, *, dtype: Optional[torch.dtype] = None,
) -> float:
    """Largest :func:`relative_error` over the outputs of both models on ``inputs`` (eval mode).

    ``inf`` when the outputs differ in number or shape, or hold NaN or inf. With
    ``dtype=torch.float64`` both models and the floating inputs are run in double precision
    (cast in place and restored bit for bit afterwards), which separates a wrong rewrite from
    float32 rounding that a normalisation layer amplified.

    Example::

        err = max_relative_error(gated, small, (torch.randn(2, 3, 8, 8),), dtype=torch.float64)
    """
    try:
        want, got = _outputs(reference, candidate, inputs, dtype)
    except _Failed as failed:
        raise failed.error from None
    return _compare(want, got)


class _Failed(Exception):
    """A model raised while running: ``who`` is ``"reference"`` or ``"candidate"``."""

    def __init__(self, who: str, error: Exception) -> None:
        super().__init__(who)
        self.who, self.error = who, error


def _outputs(reference: nn.Module, candidate: nn.Module, inputs: tuple,
             dtype: Optional[torch.dtype]) -> tuple[list, list]:
    """The flat outputs of ``reference`` and ``candidate`` on ``inputs``, in eval mode."""
    modes = (reference.training, candidate.training)
    reference.eval(), candidate.eval()
    try:
        with torch.no_grad(), _cast_floats((reference, candidate), dtype):
            inputs = _cast_inputs(inputs, dtype)
            want = _call(reference, inputs, "reference")
            got = _call(candidate, inputs, "candidate")
    finally:
        reference.train(modes[0]), candidate.train(modes[1])
    return want, got


def _call(model: nn.Module, inputs: tuple, who: str) -> list:
    try:
        return pytree.tree_flatten(model(*inputs))[0]
    except Exception as exc:  # noqa: BLE001 - which model failed decides what the caller does
        raise _Failed(who, exc) from exc


def _compare(want: list, got: list) -> float:
    if len(want) != len(got):
        return float("inf")
    worst = 0.0
    for a, b in zip(got, want):
        if not isinstance(b, torch.Tensor):
            continue
        if not isinstance(a, torch.Tensor):
            return float("inf")
        worst = max(worst, relative_error(a, b))
    return worst


def _nonfinite(outputs: list) -> bool:
    return any(isinstance(t, torch.Tensor) and not torch.isfinite(t).all() for t in outputs)


@contextmanager
def _cast_floats(modules: tuple, dtype: Optional[torch.dtype]) -> Iterator[None]:
    """Give every floating parameter and buffer of ``modules`` the dtype ``dtype``, then put the
    original tensors back (not a round trip through ``dtype``, so nothing is rounded)."""
    if dtype is None:
        yield
        return
    tensors = {id(t): t for m in modules for t in chain(m.parameters(), m.buffers()) if t.is_floating_point()}
    saved = [(t, t.data) for t in tensors.values()]
    try:
        for t, data in saved:
            t.data = data.to(dtype)
        yield
    finally:
        for t, data in saved:
            t.data = data


def _cast_inputs(inputs: tuple, dtype: Optional[torch.dtype]) -> tuple:
    if dtype is None:
        return inputs
    return pytree.tree_map(lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v,
                           inputs)


def describe_shapes(inputs: tuple) -> str:
    """The shapes of the tensors in ``inputs``, for messages: ``"(5, 3, 8, 8), (5, 7)"``."""
    shapes = [tuple(t.shape) for t in pytree.tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)]
    return ", ".join(str(s) for s in shapes) or "()"


def _batches(reference: nn.Module, inputs: Optional[tuple], trials: int) -> Iterator[tuple[tuple, bool, bool]]:
    """``(inputs, must_run, top_up)``: one random draw at each shape variant of ``reference``
    (the example's first; the others the reference may refuse), then draws at the example
    shape (``top_up``), which the caller takes until ``trials`` checks have run. Each draw has
    its own seed."""
    if inputs is not None:
        yield inputs, True, False
        return
    variants = shape_variants(reference)
    for i, sizes in enumerate(variants):
        yield random_inputs(reference, seed=i, sizes=sizes or None), i == 0, False
    for k in range(trials):
        yield random_inputs(reference, seed=len(variants) + k, sizes=variants[0] or None), True, True


def assert_equivalent(
    reference: fx.GraphModule, candidate: nn.Module, *, rtol: float = 1e-4,
    inputs: Optional[tuple] = None, trials: int = 3,
) -> float:
    """Raise :class:`CompactionError` unless ``candidate`` matches ``reference``; return the worst error.

    Without ``inputs``, fresh random inputs are drawn at every shape variant of ``reference``,
    and at its example shape again until ``trials`` checks have run. A variant the reference itself
    cannot run is skipped; the example shape must run. The error is :func:`relative_error`;
    a miss in float32 is run again in float64 and judged by that, so rounding amplified by a
    norm does not refuse an exact rewrite. NaN or inf in either model's output is a miss.
    A GraphModule ``candidate`` gets ``meta["archc.verified"]``: the shapes checked and skipped.

    Example: ``assert_equivalent(gated, archc.compact(gated), rtol=1e-4)``.
    """
    checked, skipped, worst, ran = [], [], 0.0, 0
    for batch, must_run, top_up in _batches(reference, inputs, trials):
        if top_up and ran >= trials:
            break
        shapes = describe_shapes(batch)
        err = _check(reference, candidate, batch, rtol, shapes, must_run)
        if err is None:
            skipped.append(shapes)
            continue
        worst, ran = max(worst, err), ran + 1
        if shapes not in checked:
            checked.append(shapes)
    if isinstance(getattr(candidate, "meta", None), dict):
        candidate.meta["archc.verified"] = {"shapes": checked, "skipped": skipped, "max_rel_err": worst}
    return worst


def _check(reference: nn.Module, candidate: nn.Module, batch: tuple, rtol: float, shapes: str,
           must_run: bool) -> Optional[float]:
    """The error on ``batch`` (``None``: the reference cannot run it and need not); raises on a miss."""
    try:
        want, got = _outputs(reference, candidate, batch, None)
    except _Failed as failed:
        if failed.who == "reference" and not must_run:
            return None
        what = "gated (reference) model" if failed.who == "reference" else "compact model"
        raise CompactionError(
            f"the {what} failed to run on inputs of shape {shapes}: "
            f"{type(failed.error).__name__}: {failed.error}\n  Nothing was written.\n"
            + ("  fix: make the model run on inputs like its example (archc.trace's args)"
               if failed.who == "reference" else _FIX)) from failed.error
    for who, outputs in (("gated (reference) model", want), ("compact model", got)):
        if _nonfinite(outputs):
            raise CompactionError(
                f"the {who} produced NaN or inf on inputs of shape {shapes}; a non-finite "
                "output cannot be verified.\n  Nothing was written.\n  fix: find the layer that "
                "overflows or divides by zero (run the model on such inputs) and make it finite")
    err = _compare(want, got)
    if err > rtol:
        err = min(err, _double_precision_error(reference, candidate, batch))
    if err > rtol:
        how = (f"relative error {err:.2e} > {rtol:.0e}, per output channel" if err < float("inf") else
               f"outputs of shape {_out_shapes(got)} instead of {_out_shapes(want)}")
        raise CompactionError(
            f"the compact model differs from the gated model ({how}, on inputs of shape {shapes}).\n"
            "  Nothing was written. This is a gap in archc's rules.\n" + _FIX)
    return err


def _out_shapes(outputs: list) -> str:
    return "[" + ", ".join(str(tuple(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__
                           for t in outputs) + "]"


def _double_precision_error(reference: nn.Module, candidate: nn.Module, batch: tuple) -> float:
    """The error in float64: a float32 miss can be rounding that a norm with a tiny variance
    amplified, which float64 shrinks by ~1e9, while a wrong rewrite stays wrong. A model that
    cannot run in float64 (a dtype fixed inside its graph) keeps its float32 verdict."""
    try:
        return max_relative_error(reference, candidate, batch, dtype=torch.float64)
    except Exception:  # noqa: BLE001 - any failure here means "no second opinion", not an error
        return float("inf")
