"""Full-size reference models for the benchmarks, in plain torch (no torchvision needed).

* :func:`resnet50` -- torchvision's exact ResNet-50 layout (v1.5: stride on the 3x3 conv),
  Bottleneck blocks [3, 4, 6, 3], widths 64..2048, 1000 classes, 25,557,032 parameters,
  built from the test zoo's ResNet and Bottleneck (``tests/zoo.py``).
* :func:`deep_chain` -- a generated deep network whose fx graph grows linearly with
  ``n_blocks`` (4 graph nodes per block, plus 5): use it to measure how compile time scales.
* :func:`mlp` -- a plain multi-layer perceptron (784 -> hidden... -> 10).
* :func:`torchvision_model` -- a torchvision classifier by name (``resnet50``,
  ``densenet121``, ...), random weights, non-trivial BatchNorm statistics, eval mode.
* :func:`llama` -- a ``transformers`` LlamaForCausalLM from a config (grouped-query attention),
  random weights, with the keyword inputs a user would pass.

Example:
    >>> from benchmarks.models import resnet50, deep_chain, chain_blocks_for
    >>> model, inputs = resnet50(), (torch.randn(1, 3, 224, 224),)
    >>> chain = deep_chain(chain_blocks_for(1000))      # ~1000 fx graph nodes
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import Bottleneck, ResNet  # noqa: E402  (the test zoo's blocks, torchvision's layout)

# ---------------------------------------------------------------- ResNet-50


def _resnet_imagenet(layers: Sequence[int], num_classes: int) -> nn.Module:
    """The test zoo's torchvision-style ResNet with the ImageNet stem and widths 64..2048."""
    stages = [(Bottleneck, planes, n, 1 if i == 0 else 2) for i, (planes, n) in enumerate(zip((64, 128, 256, 512), layers))]
    model = ResNet(stages, num_classes=num_classes, stem=(64, 7, 2))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model


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
    return _randomise_norms(_resnet_imagenet((3, 4, 6, 3), num_classes), seed)


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


# ---------------------------------------------------------------- torchvision / transformers


def _shim() -> None:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    from _common import import_shim
    import_shim()


def torchvision_model(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """``torchvision.models.<name>(weights=None)`` with non-trivial BatchNorm statistics, eval.

    torchvision's compiled ops do not load on this CPU torch: the shim in ``../shared/tools``
    is imported first (``_common.import_shim``).
    """
    _shim()
    import torchvision

    torch.manual_seed(seed)
    return _randomise_norms(getattr(torchvision.models, name)(weights=None, **kwargs), seed)


def llama(num_hidden_layers: int = 24, hidden_size: int = 256, num_attention_heads: int = 8,
          num_key_value_heads: int = 2, intermediate_size: int = 512, vocab_size: int = 1000,
          batch: int = 2, seq: int = 16, seed: int = 0) -> tuple[nn.Module, dict]:
    """A Llama-architecture ``LlamaForCausalLM`` (grouped-query attention: 8 query heads share 2
    key/value heads by default) built from a config, no download; eval mode.

    Returns ``(model, {"input_ids": (batch, seq) ints, "attention_mask": ones})``.
    """
    _shim()
    import transformers as T

    torch.manual_seed(seed)
    cfg = T.LlamaConfig(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                        num_attention_heads=num_attention_heads,
                        num_key_value_heads=num_key_value_heads,
                        intermediate_size=intermediate_size, vocab_size=vocab_size)
    model = T.LlamaForCausalLM(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq), generator=gen)
    return model, {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long)}
