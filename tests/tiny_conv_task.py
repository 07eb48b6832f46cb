"""A tiny conv model file for DAS search tests: which quadrant of an 8x8 image is brightest."""
import torch
from torch import nn
from torch.utils.data import TensorDataset


def model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 4))


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(320, 1, 8, 8, generator=gen)
    y = torch.randint(0, 4, (320,), generator=gen)
    for i, q in enumerate(y.tolist()):
        r, c = divmod(q, 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
    return TensorDataset(x[:256], y[:256]), TensorDataset(x[256:], y[256:])


def example_input():
    return torch.randn(2, 1, 8, 8)
