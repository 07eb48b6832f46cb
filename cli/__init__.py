"""archc command-line interface (installed as ``archc.cli``; entry point ``archc`` -> :func:`run`)."""
from __future__ import annotations

import sys


def run() -> None:
    """The ``archc`` command. Importing archc (torch above all) takes seconds; a Ctrl-C in
    that time exits 130 quietly, as it does once a command runs."""
    try:
        from .main import app
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None
    app()
