"""Full-size reference models for the benchmarks, in plain torch (no torchvision needed).

* :func:`resnet50` -- torchvision's exact ResNet-50 layout (v1.5: stride on the 3x3 conv),
  Bottleneck blocks [3, 4, 6, 3], widths 64..2048, 1000 classes, 25,557,032 parameters.
* :func:`deep_chain` -- a generated deep network whose fx graph grows linearly with
  ``n_blocks`` (4 graph nodes per block, plus 5): use it to measure how compile time scales.
* :func:`mlp` -- a plain multi-layer perceptron (784 -> hidden... -> 10).

Example:
    >>> from benchmarks.models import resnet50, deep_chain, chain_blocks_for
    >>> model, inputs = resnet50(), (torch.randn(1, 3, 224, 224),)
    >>> chain = deep_chain(chain_blocks_for(1000))      # ~1000 fx graph nodes
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

# ---------------------------------------------------------------- ResNet-50


class Bottleneck(nn.Module):
    """torchvision.models.resnet.Bottleneck (expansion 4, stride on conv2)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision.models.resnet.ResNet with Bottleneck blocks, same module names and init."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomise_norms(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BatchNorm statistics and affines (as after training), then eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    return model.eval()


def resnet50(num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """torchvision ResNet-50 layout (25,557,032 parameters), random weights, eval mode."""
    torch.manual_seed(seed)
    return _randomise_norms(ResNet((3, 4, 6, 3), num_classes), seed)


# ---------------------------------------------------------------- deep chain


class ChainBlock(nn.Module):
    """``x + relu(bn(conv3x3(x)))``: 4 fx nodes (conv, bn, relu, add)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.relu(self.bn(self.conv(x)))


class DeepChain(nn.Module):
    """stem conv -> n_blocks residual ChainBlocks -> global pool -> linear head."""

    def __init__(self, n_blocks: int, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1)
        self.blocks = nn.Sequential(*[ChainBlock(width) for _ in range(n_blocks)])
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean((2, 3)))


CHAIN_NODES_PER_BLOCK = 4
CHAIN_FIXED_NODES = 5  # placeholder, stem, mean, head, output


def deep_chain(n_blocks: int, width: int = 16, seed: int = 0) -> nn.Module:
    """A residual conv-bn-relu chain with ``4 * n_blocks + 5`` fx graph nodes, eval mode.

    Each residual branch's BatchNorm affine is scaled by ``1/sqrt(n_blocks)`` (as Fixup /
    SkipInit do) so activations stay finite: unscaled, they overflow to inf/NaN past ~500
    blocks, which would make compaction's output check meaningless.
    """
    torch.manual_seed(seed)
    model = _randomise_norms(DeepChain(n_blocks, width), seed)
    with torch.no_grad():
        for block in model.blocks:
            block.bn.weight.mul_(n_blocks ** -0.5)
            block.bn.bias.mul_(n_blocks ** -0.5)
    return model


def chain_blocks_for(nodes: int) -> int:
    """The ``n_blocks`` that gives a deep_chain of about ``nodes`` fx graph nodes."""
    return max(1, round((nodes - CHAIN_FIXED_NODES) / CHAIN_NODES_PER_BLOCK))


# ---------------------------------------------------------------- MLP


def mlp(hidden: Sequence[int] = (500, 500, 500), in_features: int = 784,
        num_classes: int = 10, seed: int = 0) -> nn.Module:
    """``Linear -> ReLU`` per hidden width, then a Linear classifier; eval mode."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    prev = in_features
    for h in hidden:
        layers += [nn.Linear(prev, h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers).eval()
