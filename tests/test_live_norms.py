"""Live-channel norms: a gated LayerNorm/RMSNorm takes its statistics over open channels, so a
closed residual-stream channel compacts away exactly and the compact model has a plain norm."""
import operator

import pytest
import torch
import torch.nn.functional as F
from conftest import kill_channels, n_params
from torch import nn

import archc
from archc.capture.inputs import random_inputs, shape_variants
from archc.compact import shrink_live
from archc.live_norms import LiveLayerNorm
from archc.verify import max_relative_error

NORMS = [nn.LayerNorm] + ([nn.RMSNorm] if hasattr(nn, "RMSNorm") else [])


class Block(nn.Module):
    def __init__(self, width: int, norm) -> None:
        super().__init__()
        self.norm, self.fc1, self.fc2 = norm(width), nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class PreNormStream(nn.Module):
    """A residual stream written by an embedding and two blocks, read through norms."""

    def __init__(self, norm=nn.LayerNorm, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Linear(5, width)
        self.blocks = nn.Sequential(Block(width, norm), Block(width, norm))
        self.final_norm, self.head = norm(width), nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.final_norm(self.blocks(self.embed(x))))


def _stream_gate(gated):
    """The gate the final norm reads its open channels from (``final_norm(x, gate.theta)``)."""
    (norm,) = [n for n in gated.graph.nodes if n.op == "call_module" and n.target == "final_norm"]
    return gated.get_submodule(norm.args[1].target.rpartition(".")[0])


@pytest.mark.parametrize("norm", NORMS)
def test_a_closed_residual_stream_channel_read_through_norms_compacts_exactly(norm):
    torch.manual_seed(0)
    model = PreNormStream(norm).eval()
    gated = archc.passes.insert_filters(archc.trace(model, (torch.randn(4, 7, 5),)))
    stream = _stream_gate(gated)
    assert stream.size == 16, "the residual stream is one gated group"
    with torch.no_grad():
        stream.theta[[1, 5, 6, 12]] = -1.0
    small = archc.compact(gated)
    final = small.get_submodule("final_norm")
    assert type(final) is norm and final.normalized_shape == (12,)  # plain, over the survivors
    for sizes in shape_variants(gated):  # other batch sizes and sequence lengths than traced
        inputs = random_inputs(gated, seed=3, sizes=sizes)
        assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-6
    assert n_params(small) < n_params(model)


def test_a_plain_norm_would_not_be_exact_which_is_why_the_gated_one_is_live():
    """The live norm's output equals a plain norm over the open channels only."""
    norm = nn.LayerNorm(8)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    theta = torch.tensor([0.5, -1.0, 0.2, 0.3, -0.1, 0.9, 0.4, 0.7])
    live = LiveLayerNorm.of(norm, torch.arange(8)[None])
    x = torch.randn(3, 8) * (theta > 0)  # closed channels arrive as zeros (gated upstream)
    open_ = theta > 0
    want = F.layer_norm(x[:, open_], (int(open_.sum()),), norm.weight[open_], norm.bias[open_])
    assert torch.allclose(live(x, theta)[:, open_], want, atol=1e-6)
    assert not torch.allclose(norm(x)[:, open_], want, atol=1e-3)  # all-channel statistics differ


def test_shrinking_during_training_keeps_norms_live_and_compacts_exactly_later():
    torch.manual_seed(1)
    model = PreNormStream().eval()
    gated = archc.passes.insert_filters(archc.trace(model, (torch.randn(4, 7, 5),)))
    with torch.no_grad():
        _stream_gate(gated).theta[[0, 3]] = -1.0
    shrunk = shrink_live(gated).gm
    assert isinstance(shrunk.get_submodule("final_norm"), LiveLayerNorm)
    assert shrunk.get_submodule("final_norm").normalized_shape == (14,)
    with torch.no_grad():
        _stream_gate(shrunk).theta[[2, 9]] = -1.0  # entries of the shrunk gate
    small = archc.compact(shrunk)
    assert small.get_submodule("final_norm").normalized_shape == (12,)
    x = torch.randn(6, 9, 5)
    assert max_relative_error(shrunk, small, (x,), dtype=torch.float64) < 1e-6


def test_a_convnext_stream_through_channels_last_layernorms_prunes():
    """ConvNeXt: a channels-last LayerNorm between a depthwise conv and pointwise linears."""
    from zoo import ZOO
    model, inputs = ZOO["convnext"]()
    gated = archc.passes.insert_filters(archc.trace(model, inputs))
    assert any(isinstance(m, LiveLayerNorm) for m in gated.modules())
    kill_channels(gated, 0.3, seed=0)
    small = archc.compact(gated)
    assert n_params(small) < 0.7 * n_params(model)  # 0.78 while its LayerNorms kept the stream whole


def _one_group_norm(width: int) -> nn.Module:
    return nn.GroupNorm(1, width)


class PoolFormerStyle(nn.Module):
    """Residual blocks of 1x1 convs read through GroupNorm(1, C), as PoolFormer writes them
    (or through another norm over dim 1)."""

    def __init__(self, width: int = 12, norm=_one_group_norm) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.blocks = nn.ModuleList([nn.ModuleDict({"norm": norm(width), "fc1": nn.Conv2d(width, 24, 1),
                                                    "fc2": nn.Conv2d(24, width, 1)}) for _ in range(2)])
        self.final_norm, self.head = norm(width), nn.Linear(width, 4)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = x + b["fc2"](torch.relu(b["fc1"](b["norm"](x))))
        return self.head(self.final_norm(x).mean((2, 3)))


def test_a_one_group_groupnorm_over_a_closed_stream_channel_compacts_exactly():
    model = PoolFormerStyle().eval()
    gated = archc.passes.insert_filters(archc.trace(model, (torch.randn(2, 3, 8, 8),)))
    stream = _stream_gate(gated)
    with torch.no_grad():
        stream.theta[[0, 4, 7]] = -1.0
    small = archc.compact(gated)
    final = small.get_submodule("final_norm")
    assert type(final) is nn.GroupNorm and (final.num_groups, final.num_channels) == (1, 9)
    for sizes in shape_variants(gated):
        inputs = random_inputs(gated, seed=4, sizes=sizes)
        assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-6


class ChannelsFirstLayerNorm(nn.Module):
    """ConvNeXt's own LayerNorm for (N, C, H, W), written out with two means over dim 1."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.randn(width)), nn.Parameter(torch.randn(width))

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + 1e-6)) + self.bias[:, None, None]


class SimpleNorm2d(nn.Module):
    """timm's SimpleNorm2d: ``x * rsqrt(var(x) + eps) * weight`` over channels last."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width))

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = x * torch.rsqrt(torch.var(x, dim=-1, keepdim=True) + 1e-5) * self.weight
        return x.permute(0, 3, 1, 2)


@pytest.mark.parametrize("norm", [ChannelsFirstLayerNorm, SimpleNorm2d])
def test_a_norm_written_by_hand_over_a_closed_stream_channel_compacts_exactly(norm):
    """Its mean and variance count the open channels only while gated (LiveReduction); the
    compact model computes the plain torch.mean / torch.var over the survivors."""
    from archc.emit import python_source
    from archc.live_norms import LiveReduction

    torch.manual_seed(0)
    model = PoolFormerStyle(norm=norm).eval()
    gm = archc.trace(model, (torch.randn(2, 3, 8, 8),))
    assert archc.report(gm).prunable_channels == 60, "only the 4 logits stay"
    gated = archc.passes.insert_filters(gm).double()  # in float64, so folding adds no rounding
    assert any(isinstance(m, LiveReduction) for m in gated.modules())
    (stream,) = [f for f in archc.filters(gated) if f.size == 12]
    with torch.no_grad():
        stream.theta[[0, 4, 7]] = -1.0
    small = archc.compact(gated)
    assert not any(isinstance(m, LiveReduction) for m in small.modules())
    for sizes in shape_variants(gated):
        inputs = random_inputs(gated, seed=4, sizes=sizes)
        assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-12
    assert small.get_parameter("final_norm.weight").shape == (9,)
    assert ("torch.var" if norm is SimpleNorm2d else "torch.mean") in python_source(small)


def test_a_mean_subtracted_channel_is_not_taken_for_zero():
    """``x - x.mean(1)`` of a closed (zero) channel is ``-mean``: the gate must act after the
    subtraction, so the analysis must not let the zero flow through it."""
    from archc.depgraph import analyse  # the rule under test is pointwise.add

    gm = archc.trace(PoolFormerStyle(norm=ChannelsFirstLayerNorm).eval(), (torch.randn(2, 3, 8, 8),))
    an = analyse(gm)
    subs = [n for n in gm.graph.nodes if n.target in (operator.sub, torch.sub)]
    assert subs and all(((n.args[0].name, 1), (n.name, 1)) not in an.flows for n in subs)


@pytest.mark.parametrize("name", [
    "convnext_zepto_rms",  # SimpleNorm2d: x * rsqrt(var(x, -1) + eps) * weight
    "convnextv2_atto",     # GRN: a vector norm over space, divided by its mean over channels
])
def test_timm_models_with_norms_written_by_hand_prune_their_stream(name):
    from real_models import timm_model  # before timm: it imports the torchvision shim
    from test_real_models import _compact_and_check

    from archc.live_norms import LiveReduction

    pytest.importorskip("timm")
    gated, _ = _compact_and_check(timm_model(name), (torch.randn(2, 3, 32, 32),), max_ratio=0.55)
    assert any(isinstance(m, LiveReduction) for m in gated.modules())


@pytest.mark.parametrize("norm", [ChannelsFirstLayerNorm, SimpleNorm2d])
def test_a_norm_written_by_hand_stays_live_through_a_shrink_during_training(norm):
    """Shrinking while searching keeps the live reductions (over the survivors); channels
    closed later still compact exactly."""
    from archc.live_norms import LiveReduction

    torch.manual_seed(0)
    model = PoolFormerStyle(norm=norm).eval()
    gated = archc.passes.insert_filters(archc.trace(model, (torch.randn(2, 3, 8, 8),))).double()
    kill_channels(gated, 0.3, seed=0)
    live = shrink_live(gated).gm
    assert any(isinstance(m, LiveReduction) for m in live.modules())
    variants = [random_inputs(gated, seed=1, sizes=sizes) for sizes in shape_variants(gated)]
    assert all(max_relative_error(gated, live, inputs, dtype=torch.float64) < 1e-12 for inputs in variants)
    kill_channels(live, 0.3, seed=1)
    small = archc.compact(live)
    assert all(max_relative_error(live, small, inputs, dtype=torch.float64) < 1e-12 for inputs in variants)


class MeanInFloat64(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.c = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = self.a(x)
        s = y.mean(1, keepdim=True, dtype=torch.float64)
        return self.c(y - s.float()), s


def test_a_live_mean_keeps_its_dtype_and_a_wholly_closed_group_stays_finite():
    model, x = MeanInFloat64().eval(), torch.randn(2, 3, 4, 4)
    gated = archc.passes.insert_filters(archc.trace(model, (x,)))
    (gate,) = archc.filters(gated)
    assert gated(x)[1].dtype == torch.float64
    with torch.no_grad():
        gate.theta[:] = -1.0  # the search may close a whole group: statistics over no channel
    out = gated(x)
    assert all(torch.isfinite(t).all() for t in out)
    small = archc.compact(gated)
    assert small(x)[1].dtype == torch.float64
    assert max_relative_error(gated, small, (x,), dtype=torch.float64) < 1e-12
