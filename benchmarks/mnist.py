"""MNIST for the benchmarks: a small IDX reader (gzip, numpy) and the 80/20 train/validation split.

The data lives in ``/work/shared/data/mnist`` (``../shared/data/mnist`` from the repository root):
``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``. Nothing is downloaded.

Example:
    >>> from benchmarks.mnist import DEFAULT_ROOT, load_mnist, mnist_datasets
    >>> x, y = load_mnist(DEFAULT_ROOT, "test")          # float32 [10000,1,28,28] in [0,1], int64
    >>> train, val, test = mnist_datasets(DEFAULT_ROOT, seed=0)   # 48k / 12k / 10k TensorDatasets
"""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import TensorDataset

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one gzip'd IDX file of unsigned bytes; checks the magic number and the size."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: magic {found}, expected {magic}")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {body.size} bytes of data, header says {dims}")
    return body.reshape(dims)


def load_mnist(root: Union[str, Path] = DEFAULT_ROOT, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """``(images float32 [N,1,28,28] scaled to [0,1], labels int64 [N])`` of ``split`` (train | test)."""
    if split not in _FILES:
        raise ValueError(f"split must be one of {sorted(_FILES)}, got {split!r}")
    root = Path(root)
    images = _read_idx(root / _FILES[split][0], IMAGES_MAGIC)
    labels = _read_idx(root / _FILES[split][1], LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels")
    x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def split_indices(n: int, val_fraction: float = 0.2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random ``(train, val)`` partition of ``range(n)``: 80/20 by default."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def mnist_datasets(root: Union[str, Path] = DEFAULT_ROOT, seed: int = 0, val_fraction: float = 0.2,
                   limit: Optional[int] = None, standardise: bool = False,
                   ) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """``(train, val, test)`` TensorDatasets: the 60k training images split 80/20 with ``seed``.

    ``limit`` keeps only the first ``limit`` samples of the shuffled training pool (and of the
    test set), for quick smoke runs; the 80/20 proportion is kept. ``standardise`` shifts and
    scales every split by the training split's pixel mean and standard deviation (ShrinkNets'
    public code normalised MNIST the same way; the [0, 1] scale is the default).
    """
    x, y = load_mnist(root, "train")
    xt, yt = load_mnist(root, "test")
    if limit is not None:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed + 1))[:limit]
        x, y, xt, yt = x[keep], y[keep], xt[:limit], yt[:limit]
    tr, va = split_indices(len(x), val_fraction, seed)
    if standardise:  # statistics of the training split only: nothing of val or test leaks in
        mean, std = x[tr].mean(), x[tr].std()
        x, xt = (x - mean) / std, (xt - mean) / std
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va]), TensorDataset(xt, yt)


class TensorLoader:
    """A light DataLoader over in-memory tensors: batches by fancy indexing, reshuffled each pass.

    ``archc.search`` accepts any re-iterable with ``len()``; this one avoids the per-sample
    ``__getitem__``/collate cost of ``DataLoader(TensorDataset)``, which is not what we measure.
    """

    def __init__(self, dataset: TensorDataset, batch_size: int, shuffle: bool = False, seed: int = 0) -> None:
        self.tensors, self.batch_size, self.shuffle = dataset.tensors, batch_size, shuffle
        self.gen = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return -(-len(self.tensors[0]) // self.batch_size)

    def __iter__(self):
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=self.gen) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield tuple(t[idx] for t in self.tensors)


def add_data_argument(parser) -> None:
    """``--data DIR`` with the shared MNIST folder as default, and ``--standardise``."""
    parser.add_argument("--data", type=Path, default=DEFAULT_ROOT,
                        help=f"folder of the MNIST IDX .gz files (default: {DEFAULT_ROOT})")
    parser.add_argument("--standardise", action="store_true",
                        help="inputs shifted and scaled by the training split's mean and std (default: [0, 1])")


if __name__ == "__main__":
    for name in ("train", "test"):
        xs, ys = load_mnist(DEFAULT_ROOT, name)
        print(name, tuple(xs.shape), xs.dtype, float(xs.min()), float(xs.max()), torch.bincount(ys).tolist())
