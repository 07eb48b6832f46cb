"""Ops that real models use and that once blocked their channels: each prunes, and the
compact model equals the gated one at three input shapes."""
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from conftest import kill_channels
from test_real_models import _compact_and_check

import archc
from archc.live_norms import LiveReduction
from archc.verify import max_relative_error


class LinearNorm(nn.Module):
    """LeViT's ``Linear`` + ``BatchNorm1d`` over tokens: ``bn(x.flatten(0, 1)).reshape_as(x)``."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(6, 2 * width), nn.BatchNorm1d(2 * width), nn.Linear(2 * width, 3)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(torch.relu(self.bn(h.flatten(0, 1)).reshape_as(h)))


class RepeatedChannels(nn.Module):
    """Each channel used twice in a row (``repeat_interleave``), as GCViT repeats its query."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)).repeat_interleave(2, dim=1))


class ClippedInputs(nn.Module):
    """Gemma 4's vision encoder clips a layer's input and output to one-element buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)
        self.register_buffer("low", torch.tensor(-0.5))
        self.register_buffer("high", torch.tensor(0.75))

    def forward(self, x):
        return self.b(torch.clamp(self.a(x), self.low, self.high))


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2's GRN: an L2 norm over space, over its mean across channels, via addcmul."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 4, 1)
        self.gamma, self.beta = nn.Parameter(torch.randn(1, 16, 1, 1)), nn.Parameter(torch.randn(1, 16, 1, 1))

    def forward(self, x):
        h = torch.relu(self.a(x))
        g = torch.linalg.vector_norm(h, dim=(2, 3), keepdim=True)
        return self.b(h + torch.addcmul(self.beta, self.gamma, h * (g / (g.mean(1, keepdim=True) + 1e-6))))


def test_reshape_as_after_a_flatten_prunes_the_channels_it_keeps():
    _compact_and_check(LinearNorm().eval(), (torch.randn(2, 5, 6),), max_ratio=0.8)


def test_repeat_interleave_keeps_a_channel_with_its_copies():
    gated, small = _compact_and_check(RepeatedChannels().eval(), (torch.randn(2, 3, 8, 8),), max_ratio=0.8)
    assert small.get_submodule("b").in_channels == 2 * small.get_submodule("a").out_channels


def test_clamp_to_one_element_buffers_prunes_with_the_gate_after_it():
    _compact_and_check(ClippedInputs().eval(), (torch.randn(4, 6),), max_ratio=0.8)


def test_global_response_norm_prunes_with_a_live_mean_over_channels():
    _compact_and_check(GlobalResponseNorm().eval(), (torch.randn(2, 3, 8, 8),), max_ratio=0.8)


class CosineMixer(nn.Module):
    """Swin V2's cosine attention normalises over channels, XCiT's over tokens (per channel),
    both with ``F.normalize`` (a clamped norm, expanded); a tiled copy of the channels, a roll
    over positions and a functional dropout sit beside them."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(32, 3)

    def forward(self, x):
        h = torch.roll(self.a(x), shifts=1, dims=1)
        over_channels = F.normalize(h, dim=-1)
        over_tokens = F.normalize(h, dim=1)
        mixed = F.dropout((over_channels + over_tokens), p=0.1, training=False)
        return self.b(mixed.repeat(1, 1, 2))


class SplitAttentionStyle(nn.Module):
    """ResNeSt: an in-place ReLU on a norm's output, then a reshape of the result."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.Conv2d(8, 4, 1)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        b, c, hh, ww = h.shape
        return self.head(h.reshape(b, 2, c // 2, hh, ww).sum(1))


def test_normalize_roll_repeat_and_functional_dropout_prune():
    _compact_and_check(CosineMixer().eval(), (torch.randn(2, 5, 6),), max_ratio=0.8)


def test_an_inplace_relu_whose_result_is_reshaped_is_functional_and_prunes():
    gm = archc.trace(SplitAttentionStyle().eval(), (torch.randn(2, 3, 8, 8),))
    assert not any("relu_" in str(n.target) for n in gm.graph.nodes)
    _compact_and_check(SplitAttentionStyle().eval(), (torch.randn(2, 3, 8, 8),), max_ratio=0.9)


class TransposedWeights(nn.Linear):
    """Falcon's ``FalconLinear``: ``x @ self.weight.T + self.bias``; a batched ``.mT`` beside it."""

    def __init__(self) -> None:
        super().__init__(6, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(x @ self.weight.T + self.bias)
        return self.out(h.unsqueeze(-1).mT.squeeze(1) + h)


def test_a_weight_read_through_dot_t_prunes_like_a_linear():
    gm = archc.trace(TransposedWeights().eval(), (torch.randn(2, 6),))
    assert not any("numpy_T" in str(n.target) or "mT" in str(n.target) for n in gm.graph.nodes)
    gated, small = _compact_and_check(TransposedWeights().eval(), (torch.randn(2, 6),), max_ratio=0.8)
    assert small.get_parameter("weight").shape[0] < 16


class GatheredTokens(nn.Module):
    """Mixtral's experts read their tokens as ``x[order]``: a computed index over tokens; the
    channels pass through it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.a(x))  # (batch, 16)
        order = torch.argsort(h.sum(-1))
        return self.b(h[order])


def test_a_gather_over_tokens_prunes_the_channels_it_carries():
    gm = archc.trace(GatheredTokens().eval(), (torch.randn(4, 6),))
    assert any(n.target is operator.getitem for n in gm.graph.nodes)
    _compact_and_check(GatheredTokens().eval(), (torch.randn(4, 6),), max_ratio=0.8)


def test_weight_standardised_convs_prune_their_inputs_with_live_statistics():
    """timm's StdConv2d / ScaledStdConv2d (NF-Nets, BiT) standardise each output channel's
    weights over the fan-in: the mean over input channels is live, so closed inputs go."""
    timm_layers = pytest.importorskip("timm.layers")

    class StandardisedNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = timm_layers.ScaledStdConv2d(3, 16, 3, padding=1)
            self.b, self.c = timm_layers.StdConv2d(16, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

        def forward(self, x):
            return self.c(torch.relu(self.b(torch.relu(self.a(x)))))

    gated, small = _compact_and_check(StandardisedNet().eval(), (torch.randn(2, 3, 8, 8),), max_ratio=0.7)
    assert sum(isinstance(m, LiveReduction) for m in gated.modules()) == 2  # b's mean and variance
    assert small.get_parameter("b.weight").shape[1] < 16


def test_grouped_weight_standardised_convs_prune_whole_groups():
    """NF-Nets' grouped convs standardise a computed weight too: whole groups go together (the
    per-group statistics are untouched), and the ATen conv's ``groups`` follows."""
    timm_layers = pytest.importorskip("timm.layers")

    class GroupedStandardised(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = timm_layers.ScaledStdConv2d(3, 16, 1)
            self.b = timm_layers.ScaledStdConv2d(16, 16, 3, padding=1, groups=4)
            self.c = nn.Conv2d(16, 4, 1)

        def forward(self, x):
            return self.c(torch.relu(self.b(torch.relu(self.a(x)))))

    model = GroupedStandardised().eval()
    gm = archc.trace(model, (torch.randn(2, 3, 8, 8),))
    rep = archc.report(gm)
    assert not any("does not say" in why for _, why in rep.unprunable), rep.unprunable
    gated, small = _compact_and_check(model, (torch.randn(2, 3, 8, 8),), max_ratio=0.9)
    kept = small.get_parameter("b.weight").shape
    assert kept[0] % 4 == 0 and kept[0] < 16 and kept[1] == 4, kept  # whole groups of 4, 4 inputs each


class SameMaxPool(nn.Module):
    """timm's ``MaxPool2dSame`` (ResNetV2 hybrids' stem): padded with -inf, then max-pooled."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        h = F.max_pool2d(F.pad(torch.relu(self.a(x)), [0, 1, 0, 1], value=-float("inf")), 3, 2)
        return self.c(torch.relu(self.b(h)))


def test_a_channel_padded_with_minus_infinity_is_never_gated():
    """A closed gate after the pad would give -inf * 0 = NaN: the padded channels stay whole,
    the others prune, and the gated model stays finite."""
    model, x = SameMaxPool().eval(), torch.randn(2, 3, 9, 9)
    rep = archc.report(archc.trace(model, (x,)))
    assert any("padded with -inf" in why for _, why in rep.unprunable) and rep.prunable_channels == 8
    gated, small = _compact_and_check(model, (x,), max_ratio=0.95)
    assert torch.isfinite(gated(x)).all()


class PerSampleConv(nn.Module):
    """timm's CondConv: per-sample weights, run as one conv over the batch with ``groups`` made of
    the batch size (a computed, not a constant, group count)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.route, self.c = nn.Conv2d(3, 8, 1), nn.Linear(8, 3), nn.Conv2d(8, 4, 1)
        self.experts = nn.Parameter(torch.randn(3, 8 * 4 * 9) / 10)

    def forward(self, x):
        h = torch.relu(self.a(x))
        b, c, height, width = h.shape
        w = (torch.sigmoid(self.route(h.mean((2, 3)))) @ self.experts).view(b * 8, 4, 3, 3)
        y = F.conv2d(h.reshape(1, b * c, height, width), w, None, padding=1, groups=2 * b)
        return self.c(torch.relu(y.permute(1, 0, 2, 3).reshape(b, 8, height, width)))


def test_a_conv_whose_group_count_is_computed_blocks_its_channels_and_stays_exact():
    model, x = PerSampleConv().eval(), torch.randn(2, 3, 8, 8)
    rep = archc.report(archc.trace(model, (x,)))
    assert not any("could not read" in why for _, why in rep.unprunable), rep.unprunable
    gated = archc.passes.insert_filters(archc.trace(model, (x,)))
    kill_channels(gated, 0.3, seed=0)
    small = archc.compact(gated)
    for batch in (2, 3, 1):
        inputs = (torch.randn(batch, 3, 8, 8),)
        assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-5


class EinsumAttention(nn.Module):
    """Attention written with einsum, as torchvision's MaxViT and many users' models do, and a
    layer that is an einsum with a weight."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(16, 96), nn.Linear(32, 24)
        self.mix, self.out = nn.Parameter(torch.randn(24, 12) / 5), nn.Linear(12, 4)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4)
        weights = torch.einsum("b h i d, b h j d -> b h i j", q, k).softmax(-1)
        heads = torch.einsum("bhij,bhjd->bhid", weights, v).transpose(1, 2).reshape(b, n, 32)
        hidden = torch.relu(self.proj(heads))
        return self.out(torch.relu(torch.einsum("bnc,ce->bne", hidden, self.mix)))


def test_einsum_attention_prunes_heads_and_contracted_channels():
    model = EinsumAttention().eval()
    x = torch.randn(2, 5, 16)
    gm = archc.trace(model, (x,))
    assert not any("einsum" in why for _, why in archc.report(gm).unprunable)
    _, small = _compact_and_check(model, (x,), max_ratio=0.95)
    assert small.get_parameter("qkv.weight").shape[0] % 24 == 0 < 96 - small.get_parameter("qkv.weight").shape[0]
    assert all(kept < full for kept, full in zip(small.get_parameter("mix").shape, (24, 12)))  # both of its dims


def test_an_einsum_it_cannot_read_blocks_its_channels():
    """An ellipsis (or a diagonal) is not read: the channels stay, and the report says why."""

    class Ellipsis(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = self.a(x)
            return self.b(torch.einsum("...ij,...kj->...ik", h, h).sum(-1, keepdim=True) * h)

    rep = archc.report(archc.trace(Ellipsis().eval(), (torch.randn(2, 4, 6),)))
    assert any(why.startswith("einsum") for _, why in rep.unprunable) and rep.prunable_channels == 0


class SwappedAxes(nn.Module):
    """Channels moved by ``swapaxes``, ``swapdims`` and ``movedim`` (MaxViT swaps axes)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(6, 16), nn.Conv1d(16, 8, 1), nn.Linear(8, 3)

    def forward(self, x):  # x: (batch, tokens, 6)
        h = torch.relu(self.a(x)).swapaxes(1, 2)  # (batch, 16, tokens)
        h = torch.relu(self.b(h.swapdims(2, 1).movedim(-1, 1)))
        return self.c(torch.movedim(h, (1, 2), (2, 1)))


def test_swapped_and_moved_axes_prune_the_channels_they_move():
    gm = archc.trace(SwappedAxes().eval(), (torch.randn(2, 5, 6),))
    assert archc.report(gm).prunable_channels == 16 + 8
    _compact_and_check(SwappedAxes().eval(), (torch.randn(2, 5, 6),), max_ratio=0.8)


class GhostShortcut(nn.Module):
    """GhostNetV2's block: ``out = cat(...)[:, :n]`` (all n channels) then ``out += shortcut``."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.shortcut = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(3, 16, 1)
        self.out = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        out = torch.cat([self.a(x), self.b(x)], 1)[:, :16]
        out += self.shortcut(x)
        return self.out(torch.relu(out))


def test_a_write_into_a_full_slice_prunes_like_an_add():
    gm = archc.trace(GhostShortcut().eval(), (torch.randn(2, 3, 8, 8),))
    assert archc.report(gm).prunable_channels == 16
    _compact_and_check(GhostShortcut().eval(), (torch.randn(2, 3, 8, 8),), max_ratio=0.8)


class Activated(nn.Module):
    """A conv and a linear layer, each followed by an activation that maps zero to zero."""

    def __init__(self, act) -> None:
        super().__init__()
        self.conv, self.bn, self.fc1, self.fc2 = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8 * 16, 12), nn.Linear(12, 2)
        self.act = act

    def forward(self, x):
        return self.fc2(self.act(self.fc1(self.act(self.bn(self.conv(x))).flatten(1))))


@pytest.mark.parametrize("act", [nn.ELU(), nn.ELU(0.5), nn.SELU(), nn.CELU(2.0), nn.Softshrink(), nn.Hardshrink()],
                         ids=lambda a: repr(a))
def test_elu_family_and_shrinks_prune(act):
    """PilotNet's ELU (the DAS steering model) stayed an ATen call once capture went through
    torch.export, and blocked every channel: nothing pruned there."""
    _compact_and_check(Activated(act).eval(), (torch.randn(2, 3, 6, 6),), max_ratio=0.8)


def test_log_sigmoid_couples_without_flow():
    """logsigmoid(0) != 0: a gate before it cannot kill the channel after it, yet both layers prune."""
    _compact_and_check(Activated(nn.LogSigmoid()).eval(), (torch.randn(2, 3, 6, 6),), max_ratio=0.8)
