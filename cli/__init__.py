"""archc command-line interface (installed as ``archc.cli``; entry point ``archc`` -> :func:`run`)."""
from __future__ import annotations

import os
import sys


def run() -> None:
    """The ``archc`` command. Importing archc (torch above all) takes seconds; a Ctrl-C in
    that time exits 130 quietly, as it does once a command runs."""
    try:
        from .main import app
    except KeyboardInterrupt:
        # a module half imported (numpy, torch) can fail in its exit handlers: leave at once,
        # nothing is written yet
        sys.stderr.write("interrupted\n")
        sys.stderr.flush()
        os._exit(130)
    app()
