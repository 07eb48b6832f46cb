"""An oversized residual CNN on scikit-learn's bundled 8x8 digits: archc learns its widths.

    archc search examples/digits.py --lam 5e-3 --lr 3e-3 --epochs 12 --out runs/digits
    archc compact runs/digits/checkpoint.pt -o runs/digits/compact

No download: the digits ship inside scikit-learn (1,797 images, 10 classes).
"""
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset


class Block(nn.Module):
    """conv-bn-relu-conv-bn plus the input: the residual add couples the channels of both."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(y)))


class DigitsNet(nn.Module):
    def __init__(self, width: int = 48, hidden: int = 128) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1, self.block2 = Block(width), Block(width)
        self.pool = nn.MaxPool2d(2)
        self.fc1, self.fc2 = nn.Linear(width * 4 * 4, hidden), nn.Linear(hidden, 10)

    def forward(self, x):
        x = self.pool(self.block2(self.block1(self.stem(x))))
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def model() -> nn.Module:
    return DigitsNet()


def data():
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    train, val = order[:1400], order[1400:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


def example_input():
    return torch.randn(2, 1, 8, 8)
