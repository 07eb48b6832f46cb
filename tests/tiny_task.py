"""A tiny model file for search tests: an oversized MLP on separable generated data."""
import torch
from torch import nn
from torch.utils.data import TensorDataset


def model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 3))


def data():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(384, 8, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return TensorDataset(x[:320], y[:320]), TensorDataset(x[320:], y[320:])


def example_input():
    return torch.randn(2, 8)
