"""A model file for `archc search`: a small Hugging Face ViT (built from a config, no download)
on MNIST from ``../shared/data/mnist``. archc prunes its residual stream, whole attention heads
and MLP widths.

    archc search examples/vit_mnist.py --epochs 4 --lam 1e-3 --out runs/vit_mnist
    archc compact runs/vit_mnist/checkpoint.pt -o runs/vit_mnist/compact
"""
import sys
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[1]
_SHIM = _REPO.parent / "shared" / "tools"
if (_SHIM / "tvshim.py").exists() and "tvshim" not in sys.modules:  # torchvision ops on a CPU torch
    sys.path.insert(0, str(_SHIM))
    import tvshim  # noqa: F401,E402

import transformers  # noqa: E402

TRAIN_SIZE = 12000  # of the 48k training split: a few minutes per run on 2 CPU cores


def model():
    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=28, patch_size=7, num_channels=1, hidden_size=64,
                                    num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                                    num_labels=10)
    return transformers.ViTForImageClassification(config)


def data():
    sys.path.insert(0, str(_REPO / "benchmarks"))
    from mnist import mnist_datasets

    train, val, _ = mnist_datasets(seed=0)
    keep = torch.arange(TRAIN_SIZE)
    return (torch.utils.data.TensorDataset(*(t[keep] for t in train.tensors)),
            torch.utils.data.TensorDataset(*(t[:2000] for t in val.tensors)))
