"""A throw-away PostgreSQL server for the tests: its own cluster, a Unix socket, a free port.

As root, the server runs as the ``postgres`` user (initdb refuses root). The URL it gives is
a plain ``postgresql://`` one, as a user would pass it.

Example:
    >>> with postgres_server() as url:
    ...     optuna.create_study(storage=url)
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Optional


def can_run_server() -> bool:
    """initdb and pg_ctl exist, and (as root, which initdb refuses) a ``postgres`` user to run them."""
    if server_binaries() is None:
        return False
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return False
    return shutil.which("runuser") is not None


def server_binaries() -> Optional[Path]:
    """The folder holding initdb and pg_ctl (PATH first, then Debian's /usr/lib/postgresql)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    return next((Path(f) for f in folders if (Path(f) / "initdb").exists()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a fresh cluster; yield its URL; stop it and remove its files."""
    binaries = server_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                           "apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="archc-pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, sock, port = base / "data", base / "sock", _free_port()
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True)  # noqa: E731
    try:
        run("mkdir", sock)
        run(binaries / "initdb", "-D", data, "-U", "archc", "--auth=trust", "-E", "UTF8")
        run(binaries / "pg_ctl", "-D", data, "-l", base / "server.log", "-w", "start",
            "-o", f"-p {port} -k {sock} -c listen_addresses=''")
        yield f"postgresql://archc@/postgres?host={sock}&port={port}"  # archc names the driver itself
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
