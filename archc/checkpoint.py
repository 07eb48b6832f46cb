"""Search checkpoints: written atomically, loaded without unpickling arbitrary objects.

A checkpoint holds only tensors, numbers, strings, lists and dicts, and is read with
``torch.load(weights_only=True)``: a file crafted to run code when unpickled is refused.
It records what the search needs to resume and what ``archc compact`` needs: the model
file's name (a copy lies beside the checkpoint) and SHA-256, the settings, the state of the
shrunk gated model, which of the original gate channels survive, the optimizer and
random-number state, and the log so far. Every field is checked when it is loaded.

Example:
    >>> ckpt = load_checkpoint("runs/digits/checkpoint.pt")
    >>> ckpt["epoch"], ckpt["model_file"]
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import signal
import tempfile
import threading
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

from .errors import ConfigError, UserFileError

FORMAT = "archc-checkpoint/1"
REQUIRED = ("format", "epoch", "settings", "model_state", "kept", "model_file", "model_sha256")
CORE_SETTINGS = ("lam", "epochs", "batch_size", "lr", "regularizer", "seed")
RESUME_REQUIRED = ("step", "optimizer_state", "rng", "history", "labels", "initial_widths")


class CheckpointError(UserFileError):
    """A checkpoint that is missing, damaged, foreign, or unsafe to load."""


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends (a checkpoint write completes), then raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        raise KeyboardInterrupt


def atomic_write_bytes(path: Union[str, os.PathLike], write) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, then move it into place. A
    failed write (a full disk) raises OutputError naming ``path`` and leaves no temp file."""
    from .out_dirs import write_error

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(path: Union[str, os.PathLike], state: dict[str, Any]) -> Path:
    """Write ``state`` (plain data and tensors only) atomically as an archc checkpoint. It is
    serialised in memory first, so a full disk is an OSError naming the file, not a zip error."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    return atomic_write_bytes(path, lambda f: f.write(buffer.getbuffer()))


def _not_a_checkpoint(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: not an archc checkpoint: {why}\n"
                           "  fix: pass the checkpoint.pt written by `archc search --out DIR`")


def _why_not_a_torch_archive(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a ``torch.save`` archive (judged from its first bytes), or None."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "the file is empty"
    if head.startswith(b"PK\x03\x04"):
        return None
    if len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 40:
        return "it is a safetensors file (weights only; a search checkpoint holds the search state too)"
    if head[:1] == b"\x80":
        return "it is a plain pickle, not a torch.save archive (a pickle could run code, so it is not opened)"
    if head.lstrip()[:1] in (b"{", b"["):
        return "it is a JSON file"
    try:
        if b"\x00" in head:
            raise UnicodeDecodeError("utf-8", head, 0, 1, "NUL byte")
        head.decode("utf-8")
        return "it is a text file"
    except UnicodeDecodeError:
        return f"it is not a torch.save archive (it starts with bytes {head[:8].hex()})"


def load_checkpoint(path: Union[str, os.PathLike], *, for_resume: bool = False) -> dict[str, Any]:
    """Read an archc checkpoint safely, or raise :class:`CheckpointError` saying what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder\n  fix: pass the checkpoint in it: {path / 'checkpoint.pt'}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint.\n  fix: pass the checkpoint.pt written by `archc search --out DIR`")
    why = _why_not_a_torch_archive(path)
    if why:
        raise _not_a_checkpoint(path, why)
    state = _torch_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise _not_a_checkpoint(path, f"a torch file without archc's format marker (found {found!r})")
    missing = [k for k in REQUIRED + (RESUME_REQUIRED if for_resume else ()) if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint is missing {', '.join(missing)}.\n  fix: rerun the search")
    _check_fields(path, state)
    return state


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: this file contains objects other than tensors and plain data, which "
            "could run code when loaded.\n  fix: only load checkpoints written by archc from a "
            f"source you trust. ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or damaged: {str(exc).splitlines()[0]}).\n"
            "  fix: resume from an intact checkpoint, or rerun the search"
        ) from exc


def _check_fields(path: Path, state: dict) -> None:
    """Each field of an archc checkpoint has the type it must have; the first bad one is named."""
    from .search_config import config_from

    def bad(field: str, what: str) -> CheckpointError:
        return CheckpointError(f"{path}: malformed checkpoint: field {field!r} {what}\n"
                               "  fix: resume or compact from an intact checkpoint, or rerun the search")

    if not isinstance(state["settings"], dict):
        raise bad("settings", f"is {type(state['settings']).__name__}, not a dict")
    missing = [k for k in CORE_SETTINGS if k not in state["settings"]]
    if missing:  # every archc checkpoint has these; later settings default when an older one lacks them
        raise bad("settings", f"lacks {', '.join(missing)}")
    try:  # settings a checkpoint leaves out take their defaults
        state["settings"] = asdict(config_from(state["settings"], "settings"))
    except ConfigError as exc:
        raise bad("settings", f"is invalid: {str(exc).splitlines()[0]}") from None
    for field in ("epoch", "step"):
        if field in state and not (isinstance(state[field], int) and state[field] >= 0):
            raise bad(field, f"is {state[field]!r}, not a count")
    if not isinstance(state["model_state"], dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state["model_state"].items()):
        raise bad("model_state", "is not a dict of named tensors")
    kept = state["kept"]
    if not isinstance(kept, dict) or not kept:
        raise bad("kept", "is not a non-empty dict of gate name -> kept channel indices")
    for name, idx in kept.items():
        if not (isinstance(idx, torch.Tensor) and idx.dim() == 1 and not idx.is_floating_point()
                and idx.numel() > 0 and int(idx.min()) >= 0 and idx.unique().numel() == idx.numel()):
            raise bad("kept", f"holds a bad entry for gate {name!r}: not distinct non-negative channel indices")
    if not (isinstance(state["model_file"], str) and state["model_file"].endswith(".py")):
        raise bad("model_file", f"is {state['model_file']!r}, not the name of a Python file")
    sha = state["model_sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise bad("model_sha256", "is not a SHA-256 hex digest")
    budget = state.get("budget")
    if budget is not None and not (isinstance(budget, dict) and {"start", "lam", "met"} <= set(budget)):
        raise bad("budget", "is not the state of a size target (start, lam, met)")
    if "history" in state and not (isinstance(state["history"], list)
                                   and all(isinstance(r, dict) for r in state["history"])):
        raise bad("history", "is not a list of epoch records")
