"""archc: a graph-rewriting architecture compiler for PyTorch.

Trace a model, find the channels that must be removed together, gate them, train, and
compile the result into a smaller real model.

Example:
    >>> import archc
    >>> gm = archc.trace(model, (x,))
    >>> gated = archc.passes.insert_filters(gm)
    >>> small = archc.compact(gated)
"""
from .api import search
from .compact import compact
from .das.params import (ChannelSelect, GroupedConnectivity, KernelMask, channel_selects,
                         grouped_connectivities, kernel_masks)
from .depgraph import analyse, dependency_graph
from .errors import (AnalysisError, ArchcError, CompactionError, ConfigError, ExportError, OutputError, TraceError,
                     UserFileError)
from .export import export_onnx
from .filters import Filter, filters
from .groups import ChannelGroup, channel_groups
from .report import GroupRow, Report, report
from .capture import trace
from .checkpoint import CheckpointError
from .search_config import SearchConfig
from .search_guard import SearchError

from . import passes  # noqa: E402  (archc.passes, packaged from ./passes)

__all__ = [
    "trace", "analyse", "compact", "search", "KernelMask", "ChannelSelect", "GroupedConnectivity",
    "kernel_masks", "channel_selects", "grouped_connectivities", "export_onnx", "report", "Report", "GroupRow", "dependency_graph", "channel_groups", "ChannelGroup", "Filter", "filters",
    "passes", "ArchcError", "TraceError", "AnalysisError", "CompactionError", "ExportError",
    "UserFileError", "ConfigError", "OutputError", "SearchConfig", "CheckpointError", "SearchError",
]
__version__ = "0.1.0"
