"""Compaction: remove dead channels everywhere they appear, fold the gates, verify.

Two pipelines over the same passes (:mod:`archc.compact_passes`), each followed by the same
check against the gated model:

* :data:`FINAL` (``archc.compact``): the real compact model, no gate left;
* :data:`DURING_TRAINING` (``shrink_live``): the gates stay, shrunk to their surviving
  channels, so the search trains on a smaller gated model.

Example:
    >>> gated = archc.passes.insert_filters(archc.trace(model, (x,)))
    >>> ...train...
    >>> small = archc.compact(gated)          # raises CompactionError rather than differ
"""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.fx as fx

from .compact_context import CompactionContext  # noqa: F401  (re-exported: rules' ``cc``)
from .compact_passes import (Compaction, analyse_channels, bake_search_params, find_dead_channels,
                             fold_gates, plain_norms, retie_parameters, freeze_stale_sizes, lower_grouped_convs, plan_channel_order,
                             remove_closed_blocks, shrink_gates, shrink_ops, slice_grouped_convs, tidy)
from .das.regularizers import search_parameters, threshold_search_params
from .block_gates import block_gates
from .filters import filters
from .meta import record_shapes
from .verify import assert_equivalent

Pass = Callable[[Compaction], Compaction]

FINAL: tuple[Pass, ...] = (
    bake_search_params,   # kernel masks, input selections, connectivity -> weights
    remove_closed_blocks, # closed residual branches go, open block gates become constants
    analyse_channels,     # which channels go together
    find_dead_channels,   # closed gates, unselected inputs
    plan_channel_order,   # grouped convs want each pattern's channels side by side
    shrink_ops,           # every op's shrink rule
    freeze_stale_sizes,   # sizes read from pruned dims
    slice_grouped_convs,
    fold_gates,           # gates into weights
    retie_parameters,     # a tied parameter is one parameter again
    plain_norms,          # live norms -> plain norms over the open channels
    lower_grouped_convs,  # patterns -> grouped convs
    tidy,
)
DURING_TRAINING: tuple[Pass, ...] = (
    analyse_channels, find_dead_channels, shrink_ops, freeze_stale_sizes, retie_parameters, shrink_gates, tidy,
)


def compaction(gm: fx.GraphModule, passes: Sequence[Pass] = FINAL, threshold: float = 0.0, *,
               rtol: float = 1e-4, inputs: Optional[tuple] = None, trials: int = 3,
               search_threshold: float = 0.0) -> Compaction:
    """Run ``passes`` on a copy of the gated ``gm`` and check the result against ``gm``.

    A channel is dead when its gate ``relu(theta) <= threshold``; gates below the threshold
    are first set to zero, so the reference is the gated model with those gates closed (and
    search parameters with ``|value| < search_threshold`` zeroed). Each group keeps at least one
    channel. :func:`archc.verify.assert_equivalent` raises :class:`CompactionError` if the
    result differs. ``gm`` is not modified. The returned :class:`Compaction` holds the model
    (``.gm``), what each searched layer became (``.search_report``) and which indices every
    parameter kept (``.param_slices``).

    Example:
        >>> result = compaction(gated, FINAL, threshold=1e-3)
        >>> result.gm, result.search_report
    """
    with _thresholded(gm, threshold, search_threshold):
        c = Compaction(copy.deepcopy(gm))
    for run in passes:
        c = run(c)
    c.gm.meta.update({k: v for k, v in gm.meta.items() if k.startswith("archc.")})
    with _thresholded(gm, threshold, search_threshold):  # the reference: gm with those gates closed
        assert_equivalent(gm, c.gm, rtol=rtol, inputs=inputs, trials=trials)
    record_shapes(c.gm)
    return c


def compact(gm: fx.GraphModule, threshold: float = 0.0, *, rtol: float = 1e-4, inputs: Optional[tuple] = None,
            trials: int = 3, search_threshold: float = 0.0) -> fx.GraphModule:
    """A real smaller copy of the gated ``gm``, with every dead channel removed and no gate left.

    Search parameters are baked into the weights: kernels are cropped to their non-zero taps
    and connectivity patterns become grouped convolutions (``compaction(...).search_report``
    says what each layer became). See :func:`compaction` for the threshold and the check.

    Example:
        >>> small = archc.compact(gated, threshold=1e-3)
    """
    return compaction(gm, FINAL, threshold, rtol=rtol, inputs=inputs, trials=trials,
                      search_threshold=search_threshold).gm


def shrink_live(gm: fx.GraphModule, threshold: float = 0.0, *, trials: int = 1) -> Compaction:
    """The gated ``gm`` without its dead channels, gates kept (the search trains on it)."""
    return compaction(gm, DURING_TRAINING, threshold, trials=trials)


@contextlib.contextmanager
def _thresholded(gm: fx.GraphModule, threshold: float, search_threshold: float) -> Iterator[None]:
    """``gm`` with gates at or below ``threshold`` and search parameters below
    ``search_threshold`` set to zero, restored on exit (cheaper than a deep copy)."""
    gates = [*filters(gm), *block_gates(gm)]
    params = [gate.theta for gate in gates] + search_parameters(gm)
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for gate in gates:
                gate.theta[torch.relu(gate.theta) <= threshold] = 0.0
        threshold_search_params(gm, search_threshold)
        yield
    finally:
        with torch.no_grad():
            for p, value in zip(params, saved):
                p.copy_(value)
