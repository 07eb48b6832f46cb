"""The ``archc`` command: one small function per sub-command.

Adding a command::

    @command("compact")
    def compact_cmd(model_py: Path = typer.Argument(..., help="...")) -> None:
        spec = load_user_file(model_py)
        ...

Errors archc raises on purpose (:class:`archc.errors.ArchcError`) become ``error: ...`` on
stderr and exit code 2; anything else is a bug and keeps its traceback (set
``ARCHC_DEBUG=1`` to see tracebacks of ArchcErrors too). Ctrl-C exits with 130.
"""
from __future__ import annotations

import functools
import os
import signal
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

import archc
from archc.errors import ArchcError
from archc.model_io import call_inputs
from archc.userfile import load_user_file

from .render import render_report

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="archc",
    help="archc: a graph-rewriting architecture compiler for PyTorch "
         "(trace, find coupled channels, prune, export to ONNX).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def handle_errors(fn: F) -> F:
    """Turn ArchcError into ``error: <message>`` + exit 2, and Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        previous = signal.signal(signal.SIGTERM, _terminated)  # `kill` stops a search as Ctrl-C does
        try:
            return fn(*args, **kwargs)
        except ArchcError as exc:
            if os.environ.get("ARCHC_DEBUG"):
                raise
            err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False,
                      soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper  # type: ignore[return-value]


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def command(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    """``app.command`` with :func:`handle_errors` applied: use it for every sub-command."""

    def register(fn: F) -> F:
        app.command(*args, **kwargs)(handle_errors(fn))
        return fn

    return register


MODEL_PY = typer.Argument(..., help="Python file defining `model()` and `example_input()` or `data()`.",
                          show_default=False)


@command("inspect")
def inspect_cmd(model_py: Path = MODEL_PY) -> None:
    """Trace the model and show its channel groups and what blocks pruning."""
    spec = load_user_file(model_py)
    model, inputs = spec.model(), spec.example_inputs()
    gm = archc.trace(model, *call_inputs(inputs))
    render_report(archc.report(gm), out)


@command("version")
def version_cmd() -> None:
    """Print the archc version."""
    out.print(f"archc {_version()}")


def _version() -> str:
    try:
        return metadata.version("archc")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def main() -> None:
    """Run the command line (``archc`` itself starts through :func:`archc.cli.run`). Example: ``python -m archc inspect model.py``."""
    app()


from . import pipeline, tune  # noqa: E402,F401  (register search, compact and tune)

if __name__ == "__main__":
    main()
