"""Check that a rewritten model computes what its reference computes."""
from __future__ import annotations

from contextlib import contextmanager
from itertools import chain
from typing import Iterator, Optional

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn

from .errors import CompactionError
from .capture.inputs import random_inputs


def max_relative_error(
    reference: nn.Module, candidate: nn.Module, inputs: tuple, *, dtype: Optional[torch.dtype] = None,
) -> float:
    """Largest ``|a - b| / max|b|`` over the outputs of both models on ``inputs`` (eval mode).

    With ``dtype=torch.float64`` both models and the floating inputs are run in double precision
    (cast in place and restored bit for bit afterwards), which separates a wrong rewrite from
    float32 rounding that a normalisation layer amplified.

    Example::

        err = max_relative_error(gated, small, (torch.randn(2, 3, 8, 8),), dtype=torch.float64)
    """
    modes = (reference.training, candidate.training)
    reference.eval(), candidate.eval()
    try:
        with torch.no_grad(), _cast_floats((reference, candidate), dtype):
            inputs = _cast_inputs(inputs, dtype)
            want, _ = pytree.tree_flatten(reference(*inputs))
            got, _ = pytree.tree_flatten(candidate(*inputs))
    finally:
        reference.train(modes[0]), candidate.train(modes[1])
    if len(want) != len(got):
        return float("inf")
    worst = 0.0
    for a, b in zip(got, want):
        if not isinstance(b, torch.Tensor):
            continue
        if not isinstance(a, torch.Tensor) or a.shape != b.shape:
            return float("inf")
        worst = max(worst, _relative_error(a.double(), b.double()))
    return worst


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


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a - b| / max|b|`` over finite entries; NaN/inf must sit in the same places."""
    finite = torch.isfinite(b)
    if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(a[~finite].nan_to_num(), b[~finite].nan_to_num()):
        return float("inf")  # also catches NaN, which compares false with everything
    if not finite.any():
        return 0.0
    scale = b[finite].abs().max().item()
    return (a[finite] - b[finite]).abs().max().item() / max(scale, 1e-12)


def assert_equivalent(
    reference: fx.GraphModule, candidate: nn.Module, *, rtol: float = 1e-4,
    inputs: Optional[tuple] = None, trials: int = 3,
) -> float:
    """Raise :class:`CompactionError` unless ``candidate`` matches ``reference`` on random inputs.

    A batch that misses ``rtol`` in float32 is run again in float64 and judged by that error, so
    rounding amplified by a normalisation layer does not refuse an exact rewrite.
    """
    batches = [inputs] if inputs is not None else [random_inputs(reference, seed=s) for s in range(trials)]
    worst = 0.0
    for seed, batch in enumerate(batches):
        try:
            err = max_relative_error(reference, candidate, batch)
        except Exception as exc:
            raise CompactionError(
                f"the compact model failed to run on random input #{seed}: {type(exc).__name__}: {exc}\n"
                "  Nothing was written. This is a gap in archc's rules for one of the model's ops.\n"
                "  fix: report the model; meanwhile mark the module involved as a leaf "
                "(trace(..., leaf_modules=[...])) so its channels stay unpruned."
            ) from exc
        if err > rtol:
            err = min(err, _double_precision_error(reference, candidate, batch))
        worst = max(worst, err)
        if err > rtol:
            raise CompactionError(
                f"the compact model differs from the gated model (relative error {err:.2e} > {rtol:.0e} "
                f"on random input #{seed}).\n  Nothing was written. This is a gap in archc's rules.\n"
                "  fix: report the model; meanwhile mark the module involved as a leaf "
                "(trace(..., leaf_modules=[...])) so its channels stay unpruned."
            )
    return worst


def _double_precision_error(reference: nn.Module, candidate: nn.Module, batch: tuple) -> float:
    """The error in float64: a float32 miss can be rounding that a norm with a tiny variance
    amplified, which float64 shrinks by ~1e9, while a wrong rewrite stays wrong. A model that
    cannot run in float64 (a dtype fixed inside its graph) keeps its float32 verdict."""
    try:
        return max_relative_error(reference, candidate, batch, dtype=torch.float64)
    except Exception:  # noqa: BLE001 - any failure here means "no second opinion", not an error
        return float("inf")
