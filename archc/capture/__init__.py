"""Capture any ``nn.Module`` as a GraphModule in archc's dialect, through ``torch.export``.

``archc.trace`` mirrors ``torch.export.export``: it takes the model's positional ``args`` and
keyword ``kwargs`` as the user calls it, captures an ATen graph with symbolic shapes
(non-strict), and lowers it (:mod:`.ops`). The batch dim of every tensor input, and the
sequence dim of integer token inputs, are dynamic unless ``dynamic_shapes`` says otherwise,
so sizes read from them stay expressions (``x.size(0)``) and nothing about batch size or
sequence length is frozen into the graph.

Example:
    >>> gm = archc.trace(model, (torch.randn(2, 3, 32, 32),))
    >>> gm = archc.trace(bert, kwargs={"input_ids": ids, "attention_mask": mask})
"""
from __future__ import annotations

from .capture import trace

__all__ = ["trace"]
