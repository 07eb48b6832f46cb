"""A model file whose run time is its matmuls: a 256-2048-2048-10 MLP on generated data
(latency targets: pruning it changes its onnxruntime latency)."""
import torch
from torch import nn
from torch.utils.data import TensorDataset


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(640, 256, generator=g)
    return TensorDataset(x[:512], x[:512, :10].argmax(1)), TensorDataset(x[512:], x[512:, :10].argmax(1))


def example_input():
    return torch.randn(32, 256)
