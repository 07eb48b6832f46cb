"""archc: a graph-rewriting architecture compiler for PyTorch.

Trace a model, find the channels that must be removed together, gate them, train, and
compile the result into a smaller real model.

Example:
    >>> import archc
    >>> gm = archc.trace(model, (x,))
    >>> gated = archc.passes.insert_filters(gm)
    >>> small = archc.compact(gated)

The names below are loaded on first use (PEP 562), so ``import archc`` is cheap: the command
line starts, and answers Ctrl-C, before torch is imported.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "search": "api", "compact": "compact",
    "ChannelSelect": "das.params", "GroupedConnectivity": "das.params", "KernelMask": "das.params",
    "PatternAssignment": "das.params", "pattern_assignments": "das.params",
    "channel_selects": "das.params", "grouped_connectivities": "das.params", "kernel_masks": "das.params",
    "analyse": "depgraph", "dependency_graph": "depgraph",
    "AnalysisError": "errors", "ArchcError": "errors", "CompactionError": "errors", "ConfigError": "errors",
    "ExportError": "errors", "OutputError": "errors", "TraceError": "errors", "UserFileError": "errors",
    "export_onnx": "export", "Filter": "filters", "filters": "filters",
    "ChannelGroup": "groups", "channel_groups": "groups", "GroupRow": "report", "Report": "report",
    "report": "report", "trace": "capture", "CheckpointError": "checkpoint", "SearchConfig": "search_config",
    "SearchError": "search_guard",
}
__all__ = [*_EXPORTS, "passes"]
__version__ = "0.1.0"


class _Package(types.ModuleType):
    """``archc.search``, ``.compact``, ``.report`` and ``.filters`` are functions that share their
    names with submodules. Importing such a submodule would rebind the package's attribute to
    it; the function keeps the name (as it did when this file imported everything eagerly)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:  # a submodule: archc.passes, archc.errors, archc.gate_costs ...
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value  # bound once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
