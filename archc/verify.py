"""Check that a rewritten model computes what its reference computes."""
from __future__ import annotations

from typing import Optional

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch import nn

from .errors import CompactionError
from .meta import random_inputs


def max_relative_error(reference: nn.Module, candidate: nn.Module, inputs: tuple) -> float:
    """Largest ``|a - b| / max|b|`` over the outputs of both models on ``inputs`` (eval mode)."""
    modes = (reference.training, candidate.training)
    reference.eval(), candidate.eval()
    try:
        with torch.no_grad():
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
        worst = max(worst, _relative_error(a.float(), b.float()))
    return worst


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
    """Raise :class:`CompactionError` unless ``candidate`` matches ``reference`` on random inputs."""
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
        worst = max(worst, err)
        if err > rtol:
            raise CompactionError(
                f"the compact model differs from the gated model (relative error {err:.2e} > {rtol:.0e} "
                f"on random input #{seed}).\n  Nothing was written. This is a gap in archc's rules.\n"
                "  fix: report the model; meanwhile mark the module involved as a leaf "
                "(trace(..., leaf_modules=[...])) so its channels stay unpruned."
            )
    return worst
