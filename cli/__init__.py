"""archc command-line interface (installed as ``archc.cli``; entry point ``archc`` -> :func:`run`)."""
from __future__ import annotations

import signal
import sys


def run() -> None:
    """The ``archc`` command. Importing archc (torch above all) takes seconds. A Ctrl-C in that
    time is held until the imports finish, then exits 130 quietly, as it does once a command
    runs: a KeyboardInterrupt raised inside an import leaves modules half built, and their
    exit handlers fail."""
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        from .main import app
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130)
    app()
