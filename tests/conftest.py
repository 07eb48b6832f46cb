"""Shared fixtures: make tests/ importable (zoo, random_nets) and give helpers to kill gates."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import archc  # noqa: E402


def kill_channels(gm, fraction: float, seed: int = 0) -> int:
    """Close a random ``fraction`` of every gate; returns how many channels compaction removes."""
    gen = torch.Generator().manual_seed(seed)
    removed = 0
    for gate in archc.filters(gm):
        with torch.no_grad():
            gate.theta[torch.rand(gate.size, generator=gen) < fraction] = 0.0
        dead = int((gate.theta <= 0).sum())
        removed += min(dead, gate.size - 1)  # compaction keeps one channel per group
    return removed


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture
def kill():
    return kill_channels
