"""What the ShrinkNets model files share: MNIST split and standardised as in the paper's code.

``data()`` is the 80/20 train/validation split of the 60k training images (seed 0), ``test_data()``
the 10k test images; every split is standardised by the training split's mean and std. The
splits are loaded once per process (``archc tune`` calls ``data()`` for the search and again
for the compaction).
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: mnist.py, mnist_mlp_lenet.py
from mnist import TensorLoader, mnist_datasets  # noqa: E402
from mnist_mlp_lenet import authors_init  # noqa: E402,F401  (the model files' init)

BATCH = 256  # the paper's batch size: the loaders batch themselves, so --batch-size does not apply


@functools.lru_cache(maxsize=1)
def splits():
    return mnist_datasets(seed=0, standardise=True)


def train_val():
    train, val, _ = splits()
    return TensorLoader(train, BATCH, shuffle=True, seed=0), TensorLoader(val, 1024)


def test_loader():
    return TensorLoader(splits()[2], 1024)
