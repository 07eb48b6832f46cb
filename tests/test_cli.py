"""Tests for the archc command line (cli/main.py, cli/render.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

import archc
from archc.cli import main as cli_main
from archc.cli.main import app
from archc.cli.render import human, layer_list, render_report
from archc.errors import TraceError

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def plain(text: str) -> str:
    """Output without ANSI codes and with rich's line wrapping undone."""
    return re.sub(r"\s+", " ", re.sub(r"\x1b\[[0-9;]*m", "", text))


def test_help_lists_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0, res.output
    assert "inspect" in res.output and "version" in res.output


def test_no_args_shows_help():
    res = runner.invoke(app, [])
    assert "Usage" in res.output and "inspect" in res.output


def test_version():
    res = runner.invoke(app, ["version"])
    assert res.exit_code == 0 and res.output.startswith("archc ")


def test_inspect_missing_file(tmp_path):
    missing = tmp_path / "missing.py"
    res = runner.invoke(app, ["inspect", str(missing)])
    assert res.exit_code == 2, res.output
    text = plain(res.output)
    assert "error:" in text and "missing.py" in text and "does not exist" in text
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)


def test_inspect_without_model_function(tmp_path):
    path = tmp_path / "nomodel.py"
    path.write_text("import torch\n\ndef data():\n    return []\n")
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 2, res.output
    text = plain(res.output)
    assert "nomodel.py" in text and "`model`" in text and "def model()" in text
    assert "Traceback" not in res.output


def test_archc_error_from_deeper_code_exits_2(tmp_path, monkeypatch):
    path = tmp_path / "m.py"
    path.write_text("import torch\ndef model():\n    return torch.nn.Linear(2, 2)\n"
                    "def example_input():\n    return torch.randn(1, 2)\n")
    import archc

    def bad_trace(model, args=(), kwargs=None):
        raise TraceError("cannot trace [data-dependent] control flow\n  fix: remove it")

    monkeypatch.setattr(archc, "trace", bad_trace, raising=False)
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 2
    assert "cannot trace [data-dependent] control flow" in plain(res.output)


def test_other_exceptions_propagate():
    @cli_main.handle_errors
    def boom() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        boom()


def test_ctrl_c_exits_130():
    @cli_main.handle_errors
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(typer.Exit) as info:
        interrupted()
    assert info.value.exit_code == 130


def _report() -> archc.Report:
    return archc.Report(
        params=1_234_567, flops=0,
        groups=[archc.GroupRow(0, 64, True, ["conv1", "bn1", "layer1.0.conv1", "layer1.0.bn1", "fc"]),
                archc.GroupRow(1, 3, False, ["[input]"], "model input")],
        unprunable=[("x", "model input"), ("cat_1", "no rule for [op]")],
    )


def test_render_report():
    console = Console(record=True, width=200)
    render_report(_report(), console)
    text = console.export_text()
    assert "1.23M params" in text and "unknown FLOPs" in text and "2 channel groups" in text
    assert "64 / 67 channels prunable" in text
    assert "conv1, bn1, layer1.0.conv1, +2 more" in text and "✓" in text and "✗" in text
    assert "no rule for [op]" in text and "[input]" in text


def test_inspect_renders_report(tmp_path, monkeypatch):
    path = tmp_path / "m.py"
    path.write_text("import torch\nfrom torch import nn\n"
                    "def model():\n    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1))\n"
                    "def example_input():\n    return torch.randn(2, 3, 6, 6)\n")
    res = runner.invoke(app, ["inspect", str(path)])
    assert res.exit_code == 0, res.output
    flops = 2 * (8 * 16) * 27 + 2 * (2 * 16) * 8  # per example: conv 3->8 (3x3) on 4x4, then 8->2 (1x1)
    assert f"{flops / 1e3:.3g}K FLOPs" in plain(res.output) and "Channel groups" in res.output
    assert "8 / 10 channels prunable" in plain(res.output)


def test_helpers():
    assert human(999) == "999" and human(2048) == "2.05K" and human(3_000_000) == "3M"
    assert layer_list(["a", "b"]) == "a, b" and layer_list(list("abcde"), 2) == "a, b, +3 more"


def test_pyproject_lists_every_package():
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    for name, folder in cfg["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in rel:
                assert ".".join((name, *rel)) in listed, f"add {'.'.join((name, *rel))} to pyproject packages"


def test_ctrl_c_while_archc_is_still_importing_exits_130_quietly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "archc", "search", str(ROOT / "tests" / "tiny_task.py"),
                             "--out", str(tmp_path / "run"), "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.4)  # torch alone takes over a second to import
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and "interrupted" in err
