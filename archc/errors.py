"""One exception hierarchy for everything archc raises on purpose.

Every message names what went wrong, where (the graph node and, where known, the user's
source line) and what to do about it. The CLI turns these into a one-line error and a
non-zero exit code; anything else is a bug in archc and keeps its traceback.
"""
from __future__ import annotations

from typing import Optional

import torch.fx


class ArchcError(Exception):
    """Base class of every error archc raises for a user to act on."""


class TraceError(ArchcError):
    """The model could not be turned into a static graph."""


class AnalysisError(ArchcError):
    """The channel-dependency analysis met something it cannot reason about."""


class CompactionError(ArchcError):
    """Compaction failed, or produced a model that differs from the gated one (nothing is written)."""


class ExportError(ArchcError):
    """ONNX export failed or the exported model disagrees with PyTorch."""


class ConfigError(ArchcError, ValueError):
    """A setting is out of range or names something that does not exist."""


class OutputError(ArchcError):
    """An output (folder, checkpoint, compact model) cannot be written where it was asked to go."""


class UserFileError(ArchcError):
    """A user's model file or checkpoint is missing something or returns the wrong thing."""


def source_line(node: torch.fx.Node) -> Optional[str]:
    """The last user-code frame of ``node``'s recorded stack trace (``file:line``), if any."""
    trace = node.meta.get("stack_trace") or ""
    frames = [ln.strip() for ln in trace.splitlines() if ln.strip().startswith('File "')]
    return frames[-1] if frames else None


def node_error(cls: type, node: torch.fx.Node, problem: str, fix: str) -> ArchcError:
    """Build ``cls`` with a message naming ``node``, its source line and the ``fix``."""
    where = source_line(node)
    parts = [f"{problem}", f"  node: {node.format_node()}"]
    if where:
        parts.append(f"  source: {where}")
    parts.append(f"  fix: {fix}")
    return cls("\n".join(parts))
