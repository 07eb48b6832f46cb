"""What the ShrinkNets model files share: MNIST split and standardised as in the paper's code.

``data()`` is the 80/20 train/validation split of the 60k training images (seed 0), ``test_data()``
the 10k test images; every split is standardised by the training split's mean and std. The
splits are loaded once per process (``archc tune`` calls ``data()`` for the search and again
for the compaction).
"""
from __future__ import annotations

import functools
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: mnist.py, mnist_mlp_lenet.py
from mnist import TensorLoader, mnist_datasets  # noqa: E402

BATCH = 256  # the paper's batch size: the loaders batch themselves, so --batch-size does not apply


@functools.lru_cache(maxsize=1)
def splits():
    return mnist_datasets(seed=0, standardise=True)


def train_val():
    train, val, _ = splits()
    return TensorLoader(train, BATCH, shuffle=True, seed=0), TensorLoader(val, 1024)


def test_loader():
    return TensorLoader(splits()[2], 1024)


def authors_init(model: torch.nn.Module) -> torch.nn.Module:
    """The weights as ShrinkNets' code initialised them: Xavier normal with gain sqrt(2) (biases
    as torch leaves them); the gates archc inserts start in (0, 1] as theirs did. Seeded by a
    generator of its own: archc calls ``model()`` again to rebuild and to count, and every call
    must give the same network without resetting the caller's random state."""
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.xavier_normal_(p, gain=math.sqrt(2), generator=gen)
    return model
