"""Small models shaped like real families, written in torchvision/timm style.

Each ZOO entry is a factory returning ``(model, example_inputs)``: model in
eval() mode with non-trivial norm stats/affines, inputs of batch 2; factories
seed torch so results are deterministic.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Factory = Callable[[], "tuple[nn.Module, tuple[torch.Tensor, ...]]"]


def conv_bn(cin, cout, k=3, s=1, groups=1, act: type | None = nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU) else act())
    return nn.Sequential(*layers)


def _img(c=3, hw=32):
    return (torch.randn(2, c, hw, hw),)


def _finish(model: nn.Module, inputs: tuple) -> tuple[nn.Module, tuple]:
    """Give norm layers non-trivial affine params / running stats; return eval model."""
    with torch.no_grad():
        for m in model.modules():
            if getattr(m, "running_var", None) is not None:
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            is_norm = isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, LayerNormCF))
            if is_norm or type(m).__name__ == "RMSNorm":
                if getattr(m, "weight", None) is not None:
                    m.weight.uniform_(0.5, 1.5)
                if getattr(m, "bias", None) is not None:
                    m.bias.normal_(0, 0.2)
    return model.eval(), inputs


# ---------------------------------------------------------------- ResNet family
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, width_per_group=64):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, width_per_group=64):
        super().__init__()
        width = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision-style ResNet; ``stages`` is a list of (block, planes, n, stride)."""

    def __init__(self, stages, groups=1, width_per_group=64, num_classes=10, stem=(16, 3, 1)):
        super().__init__()
        width, kernel, stride = stem  # torchvision's ImageNet stem is (64, 7, 2)
        self.inplanes, self.groups, self.wpg = width, groups, width_per_group
        self.conv1 = nn.Conv2d(3, width, kernel, stride, kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layers = nn.Sequential(*[self._make_layer(*s) for s in stages])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)

    def _make_layer(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.wpg)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, None, self.groups, self.wpg) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layers(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet():
    torch.manual_seed(0)
    m = ResNet([(BasicBlock, 16, 2, 1), (BasicBlock, 24, 1, 2), (Bottleneck, 8, 2, 2)])
    return _finish(m, _img())


def resnext():
    torch.manual_seed(0)
    m = ResNet([(Bottleneck, 8, 2, 1), (Bottleneck, 16, 1, 2)], groups=4, width_per_group=16)
    return _finish(m, _img())


# ---------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size=2):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, init_features):
        prev = torch.cat(init_features, 1)
        out = self.conv1(self.relu1(self.norm1(prev)))
        return self.conv2(self.relu2(self.norm2(out)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, n, cin, growth):
        super().__init__()
        for i in range(n):
            self[f"denselayer{i + 1}"] = DenseLayer(cin + i * growth, growth)

    def forward(self, x):
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
                         nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    def __init__(self, growth=8, blocks=(3, 3), init=16, num_classes=10):
        super().__init__()
        feats = [nn.Conv2d(3, init, 3, 1, 1, bias=False), nn.BatchNorm2d(init), nn.ReLU(inplace=True)]
        c = init
        for i, n in enumerate(blocks):
            feats.append(DenseBlock(n, c, growth))
            c += n * growth
            if i != len(blocks) - 1:
                feats.append(Transition(c, c // 2))
                c //= 2
        feats.append(nn.BatchNorm2d(c))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        out = F.relu(self.features(x), inplace=True)
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


def densenet():
    torch.manual_seed(0)
    return _finish(DenseNet(), _img())


# ---------------------------------------------------------------- Inception
class InceptionBlock(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, pp):
        super().__init__()
        self.branch1 = conv_bn(cin, c1, 1)
        self.branch2 = nn.Sequential(conv_bn(cin, c3r, 1), conv_bn(c3r, c3, 3))
        self.branch3 = nn.Sequential(conv_bn(cin, c5r, 1), conv_bn(c5r, c5, 3), conv_bn(c5, c5, 3))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv_bn(cin, pp, 1))

    def forward(self, x):
        outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(outputs, 1)


class Inception(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.a = InceptionBlock(16, 8, 8, 12, 4, 6, 6)    # -> 32
        self.b = InceptionBlock(32, 12, 8, 16, 4, 8, 8)   # -> 44
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(44, num_classes)

    def forward(self, x):
        x = self.b(self.pool(self.a(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def inception():
    torch.manual_seed(0)
    return _finish(Inception(), _img())


# ---------------------------------------------------------------- MobileNets / EfficientNet
class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, linear project 1x1."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers = [] if expand_ratio == 1 else [conv_bn(inp, hidden, 1, act=nn.ReLU6)]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation (MobileNetV3 flavour)."""

    def __init__(self, c, squeeze):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.activation, self.scale_activation = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class V3Block(nn.Module):
    def __init__(self, inp, exp, oup, k, stride, use_se, act):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        layers = [] if exp == inp else [conv_bn(inp, exp, 1, act=act)]
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, act=act))
        if use_se:
            layers.append(SqueezeExcitation(exp, max(8, exp // 4)))
        layers.append(conv_bn(exp, oup, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


class MBConv(nn.Module):
    """EfficientNet MBConv with SE written in functional style."""

    def __init__(self, inp, oup, stride, expand):
        super().__init__()
        hid = inp * expand
        self.use_res = stride == 1 and inp == oup
        self.expand = conv_bn(inp, hid, 1, act=nn.SiLU) if expand != 1 else nn.Identity()
        self.dw = conv_bn(hid, hid, 3, stride, groups=hid, act=nn.SiLU)
        self.se_reduce = nn.Conv2d(hid, max(1, inp // 4), 1)
        self.se_expand = nn.Conv2d(max(1, inp // 4), hid, 1)
        self.project = conv_bn(hid, oup, 1, act=None)

    def forward(self, inputs):
        x = self.dw(self.expand(inputs))
        s = x.mean((2, 3), keepdim=True)
        s = self.se_expand(F.silu(self.se_reduce(s)))
        x = x * torch.sigmoid(s)
        x = self.project(x)
        return x + inputs if self.use_res else x


class MobileNet(nn.Module):
    def __init__(self, stem_act, blocks, last, num_classes=10, head_act=nn.ReLU6):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16, 3, 2, act=stem_act), *blocks)
        self.head = conv_bn(last, 48, 1, act=head_act)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(48, num_classes))

    def forward(self, x):
        x = self.avgpool(self.head(self.features(x)))
        return self.classifier(torch.flatten(x, 1))


def mobilenetv2():
    torch.manual_seed(0)
    cfg = [(16, 8, 1, 1), (8, 12, 2, 6), (12, 12, 1, 6), (12, 24, 2, 6), (24, 24, 1, 6)]
    return _finish(MobileNet(nn.ReLU6, [InvertedResidual(*c) for c in cfg], 24), _img())


def mobilenetv3():
    torch.manual_seed(0)
    hs, re = nn.Hardswish, nn.ReLU
    cfg = [(16, 16, 16, 3, 2, True, re), (16, 32, 16, 3, 1, False, re),
           (16, 48, 24, 5, 2, True, hs), (24, 64, 24, 5, 1, True, hs)]
    return _finish(MobileNet(hs, [V3Block(*c) for c in cfg], 24, head_act=hs), _img())


def efficientnet():
    torch.manual_seed(0)
    cfg = [(16, 8, 1, 1), (8, 12, 2, 4), (12, 12, 1, 4), (12, 24, 2, 4)]
    return _finish(MobileNet(nn.SiLU, [MBConv(*c) for c in cfg], 24, head_act=nn.SiLU), _img())


# ---------------------------------------------------------------- RegNet
class XBlock(nn.Module):
    def __init__(self, cin, cout, stride, group_width=8, bottleneck=1.0):
        super().__init__()
        w = int(round(cout * bottleneck))
        self.a = conv_bn(cin, w, 1)
        self.b = conv_bn(w, w, 3, stride, groups=w // group_width)
        self.c = conv_bn(w, cout, 1, act=None)
        self.proj = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = x if self.proj is None else self.proj(x)
        return self.activation(shortcut + self.c(self.b(self.a(x))))


class RegNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.trunk_output = nn.Sequential(
            nn.Sequential(XBlock(16, 24, 2), XBlock(24, 24, 1)),
            nn.Sequential(XBlock(24, 48, 2), XBlock(48, 48, 1)))
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.trunk_output(self.stem(x))
        return self.fc(x.mean((2, 3)))


def regnet():
    torch.manual_seed(0)
    return _finish(RegNet(), _img())


# ---------------------------------------------------------------- ConvNeXt
class LayerNorm2d(nn.LayerNorm):
    """Channels-first LayerNorm as in timm/torchvision ConvNeXt."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerNormCF(nn.Module):
    """Original ConvNeXt 'channels_first' LayerNorm with manual mean/var over dim 1."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight, self.bias, self.eps = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c)), eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, ls_init=0.5):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(ls_init * torch.ones(dim))

    def forward(self, x):
        inp = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        return inp + x.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dims=(16, 32), num_classes=10):
        super().__init__()
        self.downsample_layers = nn.ModuleList([
            nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNormCF(dims[0])),
            nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, 2))])
        self.stages = nn.ModuleList([nn.Sequential(ConvNeXtBlock(d), ConvNeXtBlock(d)) for d in dims])
        self.norm, self.head = nn.LayerNorm(dims[-1], eps=1e-6), nn.Linear(dims[-1], num_classes)

    def forward(self, x):
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.head(self.norm(x.mean([-2, -1])))


def convnext():
    torch.manual_seed(0)
    return _finish(ConvNeXt(), _img())


# ---------------------------------------------------------------- Transformers
class Attention(nn.Module):
    """timm ViT attention (explicit softmax or fused SDPA)."""

    def __init__(self, dim, num_heads=4, qkv_bias=True, fused=False):
        super().__init__()
        self.num_heads, self.scale, self.fused = num_heads, (dim // num_heads) ** -0.5, fused
        self.qkv, self.proj = nn.Linear(dim, dim * 3, bias=qkv_bias), nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        if self.fused:
            q, k, v = qkv.unbind(0)
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = attn @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, dim, heads, fused):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads, fused=fused)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, dim=32, depth=2, heads=4, patch=8, img=32, num_classes=10, fused=False):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (img // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, fused) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # BCHW -> BNC
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


def vit():
    torch.manual_seed(0)
    return _finish(VisionTransformer(), _img())


def vit_sdpa():
    torch.manual_seed(0)
    return _finish(VisionTransformer(fused=True), _img())


def window_partition(x, ws: int):
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def window_reverse(windows, ws: int, H: int, W: int):
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


class WindowAttention(nn.Module):
    def __init__(self, dim, ws, heads):
        super().__init__()
        self.ws, self.num_heads, self.scale = ws, heads, (dim // heads) ** -0.5
        self.relative_position_bias = nn.Parameter(torch.randn(heads, ws * ws, ws * ws) * 0.02)
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x):
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = (attn + self.relative_position_bias.unsqueeze(0)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B_, N, C))


class SwinBlock(nn.Module):
    def __init__(self, dim, ws=4, heads=2):
        super().__init__()
        self.ws = ws
        self.norm1, self.attn = nn.LayerNorm(dim), WindowAttention(dim, ws, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, 4 * dim)

    def forward(self, x):
        B, H, W, C = x.shape
        shortcut = x
        x_windows = window_partition(self.norm1(x), self.ws).view(-1, self.ws * self.ws, C)
        attn_windows = self.attn(x_windows).view(-1, self.ws, self.ws, C)
        x = shortcut + window_reverse(attn_windows, self.ws, H, W)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm, self.reduction = nn.LayerNorm(4 * dim), nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x0, x1 = x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :]
        x2, x3 = x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]
        return self.reduction(self.norm(torch.cat([x0, x1, x2, x3], -1)))


class Swin(nn.Module):
    def __init__(self, dim=16, num_classes=10):
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Conv2d(3, dim, 4, 4))
        self.patch_norm = nn.LayerNorm(dim)
        self.stage1 = SwinBlock(dim)
        self.merge = PatchMerging(dim)
        self.stage2 = SwinBlock(2 * dim)
        self.norm, self.head = nn.LayerNorm(2 * dim), nn.Linear(2 * dim, num_classes)

    def forward(self, x):
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))  # B H W C
        x = self.stage2(self.merge(self.stage1(x)))
        return self.head(self.norm(x).mean(dim=(1, 2)))


def swin():
    torch.manual_seed(0)
    return _finish(Swin(), _img())


class MixerBlock(nn.Module):
    def __init__(self, dim, tokens):
        super().__init__()
        self.norm1, self.mlp_tokens = nn.LayerNorm(dim), Mlp(tokens, 2 * tokens)
        self.norm2, self.mlp_channels = nn.LayerNorm(dim), Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp_channels(self.norm2(x))


class MlpMixer(nn.Module):
    def __init__(self, dim=24, patch=8, img=32, num_classes=10):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.Sequential(*[MixerBlock(dim, (img // patch) ** 2) for _ in range(2)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        x = self.norm(self.blocks(x))
        return self.head(x.mean(dim=1))


def mlp_mixer():
    torch.manual_seed(0)
    return _finish(MlpMixer(), _img())


# ---------------------------------------------------------------- Dense prediction / CSP
class DoubleConv(nn.Sequential):
    def __init__(self, cin, cout):
        super().__init__(conv_bn(cin, cout), conv_bn(cout, cout))


class UNet(nn.Module):
    def __init__(self, n_classes=3):
        super().__init__()
        self.inc, self.down1, self.down2 = DoubleConv(3, 8), DoubleConv(8, 16), DoubleConv(16, 32)
        self.up1 = nn.ConvTranspose2d(32, 16, 2, 2)
        self.conv_up1 = DoubleConv(32, 16)
        self.conv_up2 = DoubleConv(16 + 8, 8)
        self.outc = nn.Conv2d(8, n_classes, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(F.max_pool2d(x1, 2))
        x3 = self.down2(F.max_pool2d(x2, 2))
        y = self.conv_up1(torch.cat([self.up1(x3), x2], dim=1))
        y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False)
        y = self.conv_up2(torch.cat([y, x1], dim=1))
        return self.outc(y)


def unet():
    torch.manual_seed(0)
    return _finish(UNet(), _img())


class Res2NetBottle(nn.Module):
    """Res2Net: split into `scale` pieces, hierarchical add between pieces."""

    def __init__(self, c, scale=4):
        super().__init__()
        w = c // scale
        self.conv1, self.scale, self.width = conv_bn(c, c, 1), scale, w
        self.convs = nn.ModuleList([conv_bn(w, w, 3) for _ in range(scale - 1)])
        self.conv3 = conv_bn(c, c, 1, act=None)

    def forward(self, x):
        spx = torch.split(self.conv1(x), self.width, 1)
        out = []
        for i, conv in enumerate(self.convs):
            sp = spx[i] if i == 0 else sp + spx[i]
            sp = conv(sp)
            out.append(sp)
        out.append(spx[self.scale - 1])
        return F.relu(self.conv3(torch.cat(out, 1)) + x)


class CSPStage(nn.Module):
    def __init__(self, cin, cout, n=2):
        super().__init__()
        self.conv_down = conv_bn(cin, cout, 3, 2, act=nn.SiLU)
        self.conv_exp = conv_bn(cout, cout, 1, act=nn.SiLU)
        self.blocks = nn.Sequential(*[nn.Sequential(conv_bn(cout // 2, cout // 2, 1, act=nn.SiLU),
                                                    conv_bn(cout // 2, cout // 2, 3, act=nn.SiLU))
                                      for _ in range(n)])
        self.conv_transition = conv_bn(cout, cout, 1, act=nn.SiLU)

    def forward(self, x):
        x = self.conv_exp(self.conv_down(x))
        xs, xb = x.chunk(2, dim=1)
        xb = self.blocks(xb)
        return self.conv_transition(torch.cat([xs, xb], dim=1))


class CSPNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.stage1, self.res2 = CSPStage(16, 32), Res2NetBottle(32)
        self.split_conv = conv_bn(24, 24, 3)
        self.fc = nn.Linear(40, 10)

    def forward(self, x):
        x = self.res2(self.stage1(self.stem(x)))
        a, b = torch.split(x, [8, 24], dim=1)
        x = torch.cat([self.split_conv(b), a, a], dim=1)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def csp():
    torch.manual_seed(0)
    return _finish(CSPNet(), _img())


# ---------------------------------------------------------------- Control flow / other dims
class ShapeBranchNet(nn.Module):
    """Forward branches on tensor *shapes*: plain torch.fx.symbolic_trace fails on it
    (Proxy shapes cannot be used in `if`), but shapes are static for fixed inputs."""

    def __init__(self, expected=16):
        super().__init__()
        self.expected = expected
        self.conv1, self.pool = conv_bn(3, 12), nn.MaxPool2d(2)
        self.adapt = nn.Conv2d(12, expected, 1)  # used: conv1 gives 12 != expected
        self.conv2 = conv_bn(expected, 24, 3, 2)
        self.fc = nn.Linear(24 * 4 * 4, 10)

    def forward(self, x):
        x = self.conv1(x)
        if x.shape[-1] > 16:
            x = self.pool(x)
        if x.size(1) != self.expected:
            x = self.adapt(x)
        H, W = x.shape[-2:]
        if H % 2 != 0 or W % 2 != 0:
            x = F.pad(x, (0, W % 2, 0, H % 2))
        x = self.conv2(x)
        if x.shape[-1] != 4:
            x = F.adaptive_avg_pool2d(x, 4)
        return self.fc(x.view(x.size(0), -1))


def shape_branch():
    torch.manual_seed(0)
    return _finish(ShapeBranchNet(), (torch.randn(2, 3, 30, 30),))


class SeqNet(nn.Module):
    def __init__(self, cin=8, c=32, num_classes=5):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv1d(cin, c, 5, padding=2), nn.BatchNorm1d(c)
        self.conv2, self.gn = nn.Conv1d(c, c, 3, padding=1, groups=4), nn.GroupNorm(4, c)
        self.proj = nn.Linear(c, 24)
        self.norm = nn.RMSNorm(24) if hasattr(nn, "RMSNorm") else nn.LayerNorm(24)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):  # x: (B, C, L)
        x = F.relu(self.bn1(self.conv1(x)))
        x = x + F.gelu(self.gn(self.conv2(x)))
        x = self.norm(self.proj(x.transpose(1, 2)))  # (B, L, 24)
        return self.head(x.mean(1))


def lstm_free_seq():
    torch.manual_seed(0)
    return _finish(SeqNet(), (torch.randn(2, 8, 40),))


class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv3d(2, 8, 3, padding=1, bias=False), nn.BatchNorm3d(8), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.BatchNorm3d(16), nn.ReLU())
        self.up = nn.ConvTranspose3d(16, 8, 2, 2)
        self.out = nn.Conv3d(16, 4, 1)
        self.seq_up = nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.enc1(x)
        z = self.up(self.enc2(y))
        z = self.out(torch.cat([z, y], 1))            # (B, 4, D, H, W)
        s = z.flatten(2)                               # (B, 4, D*H*W)
        return self.seq_up(s).mean(-1)


def conv3d():
    torch.manual_seed(0)
    return _finish(Conv3dNet(), (torch.randn(2, 2, 8, 8, 8),))


class SiameseNet(nn.Module):
    """One conv tower applied to two images (weights shared, each module called twice), then
    a head on the absolute difference of the two embeddings."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 2)

    def embed(self, x):
        return torch.relu(self.body(self.stem(x))).mean((2, 3))

    def forward(self, a, b):
        return self.head(torch.abs(self.embed(a) - self.embed(b)))


def siamese():
    torch.manual_seed(0)
    return _finish(SiameseNet(), (torch.randn(2, 3, 12, 12), torch.randn(2, 3, 12, 12)))


# ---------------------------------------------------------------- Not in ZOO
class ValueBranchNet(nn.Module):
    """Forward branches on tensor *values*: no static graph, must be refused."""

    def __init__(self):
        super().__init__()
        self.conv, self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = self.conv(x)
        x = self.a(x) if x.sum() > 0 else self.b(x)
        return self.fc(x.mean((2, 3)))


def value_branch_model():
    torch.manual_seed(0)
    return _finish(ValueBranchNet(), _img(hw=16))


ZOO: dict[str, Factory] = {f.__name__: f for f in [
    resnet, resnext, densenet, inception, mobilenetv2, mobilenetv3, efficientnet, regnet,
    convnext, vit, vit_sdpa, swin, mlp_mixer, unet, csp, shape_branch, lstm_free_seq, conv3d, siamese]}


if __name__ == "__main__":
    import time

    import torch.fx

    fx_fail = []
    for name, factory in ZOO.items():
        model, inputs = factory()
        with torch.no_grad():
            out = model(*inputs)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                model(*inputs)
                times.append((time.perf_counter() - t0) * 1e3)
            dt = sorted(times)[2]
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{name:14s} out={tuple(out.shape)!s:18s} {dt:7.2f} ms (median)  params={n_params}")
        try:
            gm = torch.fx.symbolic_trace(factory()[0])
            assert torch.allclose(gm(*inputs), out, atol=1e-5), "fx output mismatch"
        except Exception as e:  # noqa: BLE001
            fx_fail.append(name)
            print(f"  symbolic_trace failed: {type(e).__name__}: {str(e).splitlines()[0][:90]}")
    assert "shape_branch" in fx_fail, "shape_branch should defeat plain symbolic_trace"
    print("symbolic_trace fails on:", fx_fail)
    try:
        torch.fx.symbolic_trace(value_branch_model()[0])
        print("value_branch: symbolic_trace unexpectedly succeeded")
    except Exception as e:  # noqa: BLE001
        print(f"value_branch: symbolic_trace refused ({type(e).__name__})")
