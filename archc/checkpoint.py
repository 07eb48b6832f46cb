"""Search checkpoints: written atomically, loaded without unpickling arbitrary objects.

A checkpoint holds only tensors, numbers, strings, lists and dicts, and is read with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused.
It records what the search needs to resume and what ``archc compact`` needs: the model
file's path and SHA-256, the settings, the state of the shrunk gated model, which of the
original gate channels survive, the optimizer and random-number state, and the log so far.

Example:
    >>> ckpt = load_checkpoint("runs/digits/checkpoint.pt")
    >>> ckpt["epoch"], ckpt["model_file"]
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Union

import torch

from .errors import UserFileError

FORMAT = "archc-checkpoint/1"
REQUIRED = ("format", "epoch", "settings", "model_state", "kept", "model_file", "model_sha256")


class CheckpointError(UserFileError):
    """A checkpoint that is missing, damaged, foreign, or unsafe to load."""


def atomic_write_bytes(path: Union[str, os.PathLike], write) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: Union[str, os.PathLike], state: dict[str, Any]) -> Path:
    """Write ``state`` (plain data and tensors only) atomically as an archc checkpoint."""
    return atomic_write_bytes(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load_checkpoint(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """Read an archc checkpoint safely, or raise :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint.\n  fix: pass the checkpoint.pt written by `archc search --out DIR`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: this file contains objects other than tensors and plain data, which "
            "could run code when loaded.\n  fix: only load checkpoints written by archc from a "
            f"source you trust. ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or damaged: {str(exc).splitlines()[0]}).\n"
            "  fix: resume from an intact checkpoint, or rerun the search"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an archc checkpoint (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r}).\n"
            "  fix: pass the checkpoint.pt written by `archc search --out DIR`"
        )
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {', '.join(missing)}.\n  fix: rerun the search")
    return state
