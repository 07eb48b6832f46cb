"""Shared fixtures: make tests/ importable (zoo, random_nets) and give helpers to kill gates."""
import os
import sys

import pytest
import torch
from hypothesis import settings


sys.path.insert(0, os.path.dirname(__file__))
# A channel rule that raises is a bug in archc: in the tests it fails loudly instead of
# blocking the op's channels as it does for users (archc.depgraph.strict_rules).
os.environ.setdefault("ARCHC_STRICT_RULES", "1")

import archc  # noqa: E402

# The suite draws the same examples on every run, so a CI verdict can be reproduced on any
# machine. To look for new failures, draw fresh ones: `--hypothesis-profile=explore`, with
# ARCHC_EXAMPLES=1000 for more of them per test and `--hypothesis-seed=N` to replay a run.
settings.register_profile("repeatable", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile("repeatable")


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
