"""Helpers shared by the benchmark scripts: paths, machine description, gate killing, output.

Example:
    >>> from benchmarks._common import machine_info, kill_fraction
    >>> kill_fraction(gated, 0.3, seed=0)    # close 30% of every gate's channels
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
for _p in (str(REPO), str(REPO / "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import archc  # noqa: E402


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> Optional[list[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on (load average included: the machine may be shared)."""
    info = {
        "cpu": cpu_model(), "processor": platform.processor(), "machine": platform.machine(),
        "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "archc": getattr(archc, "__version__", "?"), "threads": threads,
        "loadavg_start": _load(),
    }
    try:
        import onnxruntime as ort
        info["onnxruntime"] = ort.__version__
        info["ort_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return info


def command_line() -> str:
    """The exact command that produced the results, rerunnable from the repository root."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def kill_fraction(gated: torch.nn.Module, fraction: float, seed: int = 0) -> int:
    """Close a random ``fraction`` of every gate's channels (theta := 0); returns how many."""
    gen = torch.Generator().manual_seed(seed)
    closed = 0
    for gate in archc.filters(gated):
        with torch.no_grad():
            mask = torch.rand(gate.size, generator=gen) < fraction
            gate.theta[mask] = 0.0
        closed += int(mask.sum())
    return closed


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _cpu_ticks() -> tuple[int, int]:
    """(busy ticks of the whole machine, ticks of this process) from /proc; (0, 0) elsewhere."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        return sum(v) - v[3] - v[4], int(own[11]) + int(own[12])
    except (OSError, ValueError, IndexError):
        return 0, 0


class OtherLoad:
    """Share of the machine's CPUs that *other* processes used while the block ran (0..1).

    The benchmark machine may be shared: with 2 threads on 2 cores, another busy process
    can slow torch down many times over, so every sample records this to tell clean runs.

    Example:
        >>> with OtherLoad() as load: work()
        >>> load.share
    """

    def __enter__(self) -> "OtherLoad":
        self.t0, self.ticks0 = time.perf_counter(), _cpu_ticks()
        return self

    def __exit__(self, *exc) -> None:
        busy1, own1 = _cpu_ticks()
        wall = time.perf_counter() - self.t0
        other = (busy1 - self.ticks0[0]) - (own1 - self.ticks0[1])
        hz, cpus = os.sysconf("SC_CLK_TCK"), os.cpu_count() or 1
        self.share = max(0.0, other / (wall * hz * cpus)) if wall > 0 else 0.0


def wait_quiet(max_share: float = 0.1, max_wait: float = 30.0, window: float = 0.5) -> float:
    """Sleep until other processes use at most ``max_share`` of the CPUs (over ``window``
    seconds), for at most ``max_wait`` seconds; returns the last share seen."""
    deadline = time.monotonic() + max_wait
    while True:
        with OtherLoad() as load:
            time.sleep(window)
        if load.share <= max_share or time.monotonic() >= deadline:
            return load.share


def timed(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
    """``(fn(*args, **kwargs), seconds)`` on the wall clock."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def error_record(stage: str, exc: BaseException) -> dict[str, str]:
    """A JSON-able description of a failure, with its full traceback."""
    return {"stage": stage, "type": type(exc).__name__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc))}


def fit_loglog(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares ``y = c * x**slope`` on log-log axes (slope ~1.0 means linear growth)."""
    lx, ly = np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    return {"slope": float(slope), "coef": float(10 ** intercept)}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload.setdefault("machine", {})["loadavg_end"] = _load()
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def mnist_payload(experiment: str, args, data: tuple, **extra: Any) -> dict[str, Any]:
    """The header of an MNIST benchmark's JSON: what ran, where, with which settings and data sizes."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings.update(n_train=len(data[0]), n_val=len(data[1]), n_test=len(data[2]))
    return {"experiment": experiment, "command": command_line(), "machine": machine_info(args.threads),
            "settings": {**settings, **extra.pop("settings", {})}, **extra}


def finish_report(payload: dict[str, Any], out: Path, md: str, started: float) -> None:
    """Record the wall time, write the JSON and the markdown next to it, and print the table."""
    payload["total_wall_s"] = time.perf_counter() - started
    write_json(out, payload)
    out.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def zoo() -> dict[str, Callable]:
    """tests/zoo.py's ZOO: name -> factory() returning (model, inputs)."""
    from zoo import ZOO
    return ZOO


def import_shim() -> None:
    """Import ``../shared/tools/tvshim.py`` (declares torchvision's compiled ops, which do not
    load on this CPU torch) before torchvision, timm or transformers; a no-op where absent."""
    shim = REPO.parent / "shared" / "tools"
    if (shim / "tvshim.py").exists() and "tvshim" not in sys.modules:
        sys.path.insert(0, str(shim))
        import tvshim  # noqa: F401


def git_state() -> dict[str, Any]:
    """archc's version, the commit the benchmark ran at and the files of archc that differ from
    it (uncommitted edits change what is measured): :func:`archc.provenance.code_state`."""
    from archc.provenance import code_state

    return code_state()
