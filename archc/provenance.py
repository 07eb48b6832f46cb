"""Which code produced a figure: archc's version and, in a git checkout, the commit and the
files that differ from it.

A tune study that is resumed after the code changed holds trials of two programs; each trial
records its code so the report can say so (and benchmarks record it beside their figures).

Example:
    >>> state = code_state()              # {"version": "0.1.0", "commit": "765de95...", ...}
    >>> code_label(state)                 # "0.1.0+765de95" ("...+765de95.dirty" with edits)
"""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

# the folders whose edits change what archc does (the package, its CLI and its passes)
_SOURCE_DIRS = ("archc", "cli", "passes")
_CHECKOUT = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=_CHECKOUT, capture_output=True, text=True,
                          timeout=30, check=True).stdout.rstrip("\n")


def code_state() -> dict[str, Any]:
    """archc's ``version``; where archc runs from a git checkout also its ``commit``, the
    ``checkout`` folder and the ``uncommitted`` changes under archc's source folders (``git
    status --porcelain`` lines). An installed archc, or no git, gives the version alone."""
    from . import __version__

    state: dict[str, Any] = {"version": __version__}
    if not (_CHECKOUT / ".git").exists():
        return state
    try:
        state.update(commit=_git("rev-parse", "HEAD"), checkout=str(_CHECKOUT),
                     uncommitted=_git("status", "--porcelain", "--", *_SOURCE_DIRS).splitlines())
    except (OSError, subprocess.SubprocessError):
        pass  # git missing or the folder is not a repository after all: the version is what we know
    return state


def code_label(state: dict[str, Any]) -> str:
    """One short string per program: ``version+commit[.dirty]``."""
    label = state["version"]
    if state.get("commit"):
        label += "+" + state["commit"][:7] + (".dirty" if state.get("uncommitted") else "")
    return label


@functools.lru_cache(maxsize=1)
def current_label() -> str:
    """This process's :func:`code_label` (git asked once per process: the code does not change
    under a running trial)."""
    return code_label(code_state())
