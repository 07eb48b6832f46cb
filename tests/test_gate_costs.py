"""A channel's cost is exactly the parameters compaction removes with it; the weighted penalty
charges each gate by that cost."""
import pytest
import torch
from conftest import n_params
from torch import nn
from zoo import ZOO

import archc
from archc.errors import ConfigError
from archc.gate_costs import channel_costs, gate_weights, weighted_gate_l1
from archc.search import SearchConfig


def _assert_costs_are_what_compaction_removes(model, inputs) -> None:
    _assert_gated_costs_are_what_compaction_removes(archc.passes.insert_filters(archc.trace(model, inputs)))


def _assert_gated_costs_are_what_compaction_removes(gated) -> None:
    costs = channel_costs(gated, "params")
    assert costs
    full = n_params(archc.compact(gated, trials=1))
    for gate, cost in costs.items():
        if gate.size < 2:
            continue  # a group keeps one channel: its last one cannot be removed
        for channel in {int(cost.argmax()), int(cost.argmin())}:
            with torch.no_grad():
                saved = gate.theta[channel].clone()
                gate.theta[channel] = 0.0
            removed = full - n_params(archc.compact(gated, trials=1))
            with torch.no_grad():
                gate.theta[channel] = saved
            assert removed == cost[channel].item(), (gate, channel)


@pytest.mark.parametrize("name", ["resnet", "mobilenetv3", "densenet", "vit", "unet", "csp", "siamese"])
def test_a_channels_cost_is_what_compaction_removes_with_it(name):
    _assert_costs_are_what_compaction_removes(*ZOO[name]())


class ConvIntoLinear(nn.Module):
    """conv1's channels are cheap; conv2's each carry 36 x 5 entries of the linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 36, 5)

    def forward(self, x):
        return self.fc(torch.flatten(self.conv2(torch.relu(self.conv1(x))), 1))


def _gated():
    model, x = ConvIntoLinear(), torch.randn(2, 3, 6, 6)
    return archc.passes.insert_filters(archc.trace(model, (x,)))


def test_flops_weigh_each_entry_by_its_uses_per_example():
    costs = {g.size: c for g, c in channel_costs(_gated(), "flops").items()}
    # conv1 channel: its 27 weights at 36 positions, then 6 x 9 reads in conv2 at 36 positions, x2 (MAC)
    assert torch.allclose(costs[4], torch.full((4,), 2.0 * 36 * (27 + 6 * 9) + 2 * 36))
    # conv2 channel: 36 weights + bias at 36 positions, then 36 x 5 linear weights once, x2
    assert torch.allclose(costs[6], torch.full((6,), 2.0 * 36 * (36 + 1) + 2 * 36 * 5))


def test_weighted_penalty_charges_expensive_channels_more():
    gated = _gated()
    costs = channel_costs(gated, "params")
    by_size = {g.size: g for g in costs}
    weighted_gate_l1(gate_weights(costs)).backward()
    cheap, dear = by_size[4].theta.grad, by_size[6].theta.grad
    want = costs[by_size[6]][0] / costs[by_size[4]][0]  # (36 + 1 + 180) / (27 + 1 + 36)
    assert torch.allclose(dear[0] / cheap[0], want)
    mean = torch.cat(list(costs.values())).mean()
    total = sum((c / mean * torch.relu(g.theta)).sum() for g, c in costs.items())
    assert torch.allclose(weighted_gate_l1(gate_weights(costs)), total)


def test_unknown_weighting_is_a_config_error():
    with pytest.raises(ConfigError, match="one of"):
        channel_costs(_gated(), "latency")
    with pytest.raises(ConfigError, match="gate_weighting"):
        SearchConfig(gate_weighting="latency")


def test_settled_pattern_assignments_cost_and_size_what_compaction_leaves():
    """A grouped-conv search's cut connections are no cost of a channel and no part of the
    size a budget steers: both are what the compact model has, parameters and FLOPs."""
    from archc import flops
    from archc.budget import model_size

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 36, 2))
    x = torch.randn(2, 4, 6, 6)
    gated = archc.passes.insert_grouped(archc.passes.insert_filters(archc.trace(model, (x,))), 2, form="assign")
    dense = model_size(gated, "params")
    with torch.no_grad():  # a logit gap of 2: every channel in one pattern, blocks of unequal sizes
        for m in archc.pattern_assignments(gated):
            for logits in (m.input_logits, m.output_logits):
                logits.copy_(torch.tensor([[2.0, 0], [0, 2.0], [2.0, 0]]).repeat(3, 1)[: len(logits)])
    small = archc.compact(gated, trials=1)
    assert model_size(gated, "params") == n_params(small) < dense
    assert model_size(gated, "flops") == flops.count(small)
    _assert_gated_costs_are_what_compaction_removes(gated)


class _SharedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(6, 6, 3, padding=1), nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.conv(torch.relu(self.conv(x))).mean((2, 3)))


def test_grouped_convs_that_compaction_keeps_dense_save_nothing():
    """A shared conv is baked dense, and so are patterns that overlap into no fewer weights:
    the predicted size is the compact model's, not the count of P @ S's zeros."""
    from archc.budget import model_size

    torch.manual_seed(0)
    x = torch.randn(2, 6, 5, 5)
    shared = archc.passes.insert_grouped(archc.trace(_SharedConv(), (x,)), 2, form="assign")
    overlapping = archc.passes.insert_grouped(archc.trace(nn.Sequential(nn.Conv2d(4, 4, 1), nn.Flatten()),
                                                          (torch.randn(2, 4, 3, 3),)), 4, form="assign")
    with torch.no_grad():
        for m in archc.pattern_assignments(shared):  # settled: P @ S has zeros
            for logits in (m.input_logits, m.output_logits):
                logits.copy_(torch.tensor([[2.0, 0], [0, 2.0]]).repeat(3, 1))
        for m in archc.pattern_assignments(overlapping):  # each channel in two of four patterns
            for logits in (m.input_logits, m.output_logits):
                logits.copy_(torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 1.0]]).repeat(2, 1))
    for gm in (shared, overlapping):
        (m,) = archc.pattern_assignments(gm)
        assert (m.connectivity() == 0).any()
        assert model_size(gm, "params") == n_params(archc.compact(gm, trials=1))
