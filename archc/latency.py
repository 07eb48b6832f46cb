"""Latency of a model as deployed: its compact form, exported to ONNX, timed in onnxruntime
on this machine's provider (CUDA when present, else the CPU).

A size target in milliseconds (``--target latency=2ms``, or ``latency=0.5`` of the start)
is steered through FLOPs. Latency is measured (the fastest of 60 runs) at the start and
after every shrink; the latency goal becomes a FLOPs goal in proportion to the latest
measurement, approached in halves while far away, so that a wrong proportion costs half a
step rather than an overshoot. Past the point where the target is due, a missed target
shrinks again, measured again, at most three times.

Example:
    >>> ms = measure_latency(archc.compact(gated), (x,))
    >>> line = LatencyLine(); line.add(flops, ms); line.flops_for(2.0)
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .budget import DEFAULT_REACH, BudgetSteering, Target, model_size
from .export import export_onnx, onnx_session, run_onnx


def measure_latency(model: torch.nn.Module, inputs: tuple, runs: int = 60) -> float:
    """Milliseconds of one onnxruntime run of ``model`` on ``inputs``: the fastest of ``runs``
    after a warm-up (other processes on a shared machine only ever add time)."""
    with tempfile.TemporaryDirectory(prefix="archc-latency-") as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, inputs, path, check=False)
        session = onnx_session(path)
        arrays = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in inputs]
        for _ in range(10):  # the first runs of a session allocate and tune: not the steady state
            run_onnx(session, arrays)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            run_onnx(session, arrays)
            times.append(time.perf_counter() - start)
    return 1000.0 * min(times)


LATENCY_TOLERANCE = 0.03


class LatencyLine:
    """Latency against FLOPs, proportional to the latest measurement (``latency = b * flops``).

    A line with an intercept fits the fixed cost of a run better, but through measurements
    that move by tens of percent on a shared machine its slope swings from flat to steep, and
    a flat slope sends the goal to a tiny model. The latest point is the one nearest the goal."""

    def __init__(self, points: list | None = None) -> None:
        self.points: list[tuple[float, float]] = [tuple(p) for p in (points or [])]

    def add(self, flops: float, ms: float) -> None:
        """A measurement; one at FLOPs measured before keeps the faster of the two."""
        for i, (f, m) in enumerate(self.points):
            if f == flops:
                self.points[i] = (f, min(m, float(ms)))
                return
        self.points.append((float(flops), float(ms)))

    def slope(self) -> float:
        flops, ms = self.points[-1]
        return ms / max(flops, 1.0)

    def ms_at(self, flops: float) -> float:
        return self.slope() * flops

    def flops_for(self, ms: float) -> float:
        return max(ms / self.slope(), 1.0)


def compact_latency(model: torch.fx.GraphModule, inputs: tuple) -> float:
    """Milliseconds of the compact model the gated ``model`` would become (closed gates removed)."""
    from .compact import FINAL, compaction

    was = model.training
    try:
        small = compaction(model.eval(), FINAL, trials=1).gm
    finally:
        model.train(was)
    return measure_latency(small, inputs)


class LatencySteering(BudgetSteering):
    """A latency target steered as a FLOPs target whose goal follows the measured line."""

    def __init__(self, target: Target, model, lam: float, threshold: float = 0.0, saved=None,
                 inputs: tuple = (), reach: float = DEFAULT_REACH) -> None:
        self.inputs = inputs
        flops = model_size(model, "flops")
        # the first measurement of a process runs cold: the faster of two
        start = saved["line"] if saved else [(flops, min(compact_latency(model, inputs) for _ in range(2)))]
        self.line = LatencyLine(start)
        start_ms = saved["start_ms"] if saved else self.line.points[0][1]
        self.goal_ms = target.absolute(start_ms)
        self.start_ms = start_ms
        as_flops = Target("flops", self.line.flops_for(self.goal_ms), relative=False)
        # saved["start"]: the starting FLOPs
        super().__init__(as_flops, model, lam, threshold, saved=saved, reach=reach)
        self._retarget()

    def _retarget(self) -> None:
        """The FLOPs goal, and its tolerance, that the line says give the latency goal ±3%."""
        goal = min(self.line.flops_for(self.goal_ms), self.control.start)
        high = self.line.flops_for(self.goal_ms * (1 + LATENCY_TOLERANCE))
        self.control.goal, self.control.tolerance = goal, max(min(high / goal - 1, LATENCY_TOLERANCE), 0.005)

    def before_shrink(self, progress: float) -> None:
        """Approach a far goal in halves: the latency of the smaller model is measured before the
        next step, so a line that was wrong about it costs half the way, not an overshoot."""
        goal = self.control.goal
        if self.base > goal * 1.1:
            self.control.goal = self.base - (self.base - goal) / 2
        try:
            super().before_shrink(progress)
        finally:
            self.control.goal = goal

    def after_shrink(self, model) -> None:
        if not self.control.met:  # a frozen model's latency no longer changes: no need to measure it
            self.line.add(model_size(model, "flops"), compact_latency(model, self.inputs))
            self._retarget()
        super().after_shrink(model)

    def state(self) -> dict:
        flops_state = super().state()
        achieved = self.line.ms_at(self.base)
        return {**flops_state, "kind": "latency", "start_ms": self.start_ms, "target": self.goal_ms, "achieved": achieved,
                "ratio_to_target": achieved / self.goal_ms, "line": self.line.points,
                "measured_ms": self.line.points[-1][1]}
