"""Channel reorderings for grouped convs propagate through the dependency graph like removals:
the producer, its norm, the gates and every other consumer are reordered, no gather is left
where the graph allows it, and the result equals the searched model (PyTorch and onnxruntime)."""
import os

import numpy as np
import pytest
import torch
from conftest import kill_channels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_nets import ChannelsLastLN, RandomNet, _randomize_norms, random_networks
from test_das import _exact_everywhere
from test_grouped_lowering import structured
from torch import nn

import archc
from archc.compact import compaction
from archc.das.permute import _whole_blocks
from archc.verify import max_relative_error

IN_BLOCKS = [[5, 0, 3, 6], [1, 4, 2, 7]]
OUT_BLOCKS = [[7, 2, 0, 5], [1, 6, 3, 4]]


class Chain(nn.Module):
    """conv -> BN -> relu -> conv (searched) -> BN -> relu -> [+ skip] -> 1x1 conv and a second reader."""

    def __init__(self, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.c1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 2, 1)  # a second consumer of c1's channels: reordered too
        self.c3, self.fc = nn.Conv2d(8, 4, 1), nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.bn1(self.c1(x)))
        z = torch.relu(self.bn2(self.c2(y)))
        z = z + y if self.residual else z
        return self.fc(self.c3(z).mean((2, 3))) + self.side(y).amax((2, 3))


def _set_patterns(gm, target: str, P: torch.Tensor, S: torch.Tensor) -> None:
    """Give the searched layer ``target`` the connectivity ``P``, ``S``."""
    g = gm.get_submodule(target).parametrizations.weight[0]
    with torch.no_grad():
        g.P.copy_(P)
        g.S.copy_(S)


def _searched_chain(residual: bool, x: torch.Tensor):
    torch.manual_seed(0)
    model = Chain(residual).eval()
    for bn in (model.bn1, model.bn2):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    gm = archc.passes.insert_filters(archc.trace(model, (x,)))
    archc.passes.insert_grouped(gm, 2)
    everything = torch.zeros(2, 8)
    everything[0] = 1.0
    for target in ("c1", "c3", "side"):  # one pattern over everything: stays a dense conv
        conv = gm.get_submodule(target)
        _set_patterns(gm, target, torch.ones(conv.in_channels, 2), everything[:, :conv.out_channels])
    _set_patterns(gm, "c2", *structured(8, 8, IN_BLOCKS, OUT_BLOCKS))
    with torch.no_grad():
        for gate in archc.filters(gm):
            gate.theta.uniform_(0.5, 1.5)  # open gates of different strengths: folding is checked too
    return gm


def test_a_grouped_conv_reorders_its_producer_and_consumers_instead_of_gathering(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    gm = _searched_chain(False, x)
    result = compaction(gm)
    small, report = result.gm, result.search_report
    order = report["c2"]["channel_order"]
    assert order == {"inputs": "permuted", "outputs": "permuted"}
    assert "index_select" not in small.code and "narrow" not in small.code
    assert any(isinstance(m, nn.Conv2d) and m.groups == 2 for m in small.modules())
    _exact_everywhere(gm, small, x, tmp_path)


def test_conflicting_orders_of_one_group_fall_back_to_an_exact_gather(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    gm = _searched_chain(True, x)  # the skip makes c2's inputs and outputs one group
    result = compaction(gm)
    small, report = result.gm, result.search_report
    order = report["c2"]["channel_order"]
    assert order["inputs"] == "permuted" and order["outputs"].startswith("gathered: another grouped conv")
    assert small.code.count("torch.index_select(") == 1
    _exact_everywhere(gm, small, x, tmp_path)


class ChannelsLastHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(4, 6, 3, padding=1), nn.Linear(6 * 25, 2)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).permute(0, 2, 3, 1).flatten(1))  # channel = inner factor


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_flatten_into_linear_is_reordered_by_whole_channel_runs(tmp_path, channels_last):
    torch.manual_seed(0)
    model = ChannelsLastHead() if channels_last else nn.Sequential(
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 25, 2))
    x = torch.randn(2, 4, 5, 5)
    gm = archc.passes.insert_grouped(archc.passes.insert_filters(archc.trace(model, (x,))), 2)
    target = "conv" if channels_last else "0"
    _set_patterns(gm, target, *structured(4, 6, [[3, 0], [1, 2]], [[5, 1, 2], [0, 3, 4]]))
    result = compaction(gm)
    small, report = result.gm, result.search_report
    order = report[target]["channel_order"]
    assert "fixed" in order["inputs"]  # the model's input keeps its order: one gather there
    if channels_last:
        assert "permute" in order["outputs"] and small.code.count("torch.index_select(") == 2
    else:
        assert order["outputs"] == "permuted" and small.code.count("torch.index_select(") == 1
    _exact_everywhere(gm, small, x, tmp_path)


def _partition(n: int, blocks: int, gen: torch.Generator) -> list[list[int]]:
    perm = torch.randperm(n, generator=gen).tolist()
    size = n // blocks
    return [perm[b * size:(b + 1) * size] for b in range(blocks)]


def _set_disjoint_patterns(gm, gen: torch.Generator) -> int:
    """Give each searched conv whose widths allow it disjoint equal blocks in a random order."""
    structured_convs = 0
    for g in archc.grouped_connectivities(gm):
        c_in, p = g.P.shape
        c_out = g.S.shape[1]
        blocks = next((b for b in (3, 2) if b <= p and c_in % b == 0 and c_out % b == 0), 0)
        if not blocks:
            continue
        P, S = structured(c_in, c_out, _partition(c_in, blocks, gen), _partition(c_out, blocks, gen),
                          seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        with torch.no_grad():
            g.P.zero_()
            g.S.zero_()
            g.P[:, :blocks] = P
            g.S[:blocks] = S
        structured_convs += 1
    return structured_convs


@settings(max_examples=int(os.environ.get("ARCHC_EXAMPLES", 30)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(random_networks(), st.integers(0, 2**31 - 1), st.sampled_from([0.0, 0.3]))
def test_random_networks_with_disjoint_patterns_compact_exactly(net, seed, kill):
    model, inputs = net
    gen = torch.Generator().manual_seed(seed)
    gm = archc.passes.insert_grouped(archc.passes.insert_filters(archc.trace(model, inputs)), 3)
    _set_disjoint_patterns(gm, gen)
    if kill:
        kill_channels(gm, kill, seed)
    result = compaction(gm)
    small, report = result.gm, result.search_report
    assert max_relative_error(gm, small, inputs, dtype=torch.float64) < 1e-5
    for entry in report.values():
        for outcome in entry.get("channel_order", {}).values():
            assert outcome in ("permuted", "already in order") or outcome.startswith("gathered: ")


def _ci_failure_network() -> tuple:
    """The network CI falsified: 22 channels squeezed to 2, then a GroupNorm of one channel per
    group, whose 1/std amplifies float32 rounding of the folded weights past 1e-4."""
    torch.manual_seed(1)
    layers = [nn.Conv2d(7, 22, 1, bias=False), ChannelsLastLN(22, 22), nn.Conv2d(22, 2, 1, bias=False),
              nn.Conv2d(2, 2, 3, 1, 1, groups=2, bias=False), nn.Conv2d(2, 2, 1, bias=False),
              nn.Conv2d(2, 2, 1), nn.GroupNorm(2, 2), nn.AvgPool2d(3, 1, 1),
              nn.Conv2d(2, 4, 3, 1, 1, groups=2, bias=False)]
    model = RandomNet(layers, [("layer", (i,), i, None) for i in range(9)], "pool", nn.Linear(4, 2)).eval()
    gen = torch.Generator().manual_seed(1)
    _randomize_norms(model, gen)
    x = torch.randn(2, 7, 9, 9, generator=gen)
    gm = archc.passes.insert_grouped(archc.passes.insert_filters(archc.trace(model, (x,))), 3)
    _set_disjoint_patterns(gm, torch.Generator().manual_seed(1))
    kill_channels(gm, 0.3, 1)
    return gm, (x,)


def test_float32_rounding_amplified_by_a_norm_does_not_refuse_an_exact_model():
    gm, inputs = _ci_failure_network()
    small = archc.compact(gm, inputs=inputs)  # refused before the float64 second opinion (here)
    in_float32 = max_relative_error(gm, small, inputs)  # 1.3e-4 on the developer's machine: the exact
    # figure depends on the CPU's rounding, so the test only asks that float32 be far noisier
    in_float64 = max_relative_error(gm, small, inputs, dtype=torch.float64)
    assert in_float64 < 1e-6 and in_float32 > 100 * in_float64


def test_reordering_needs_every_op_in_the_group_to_allow_it():
    from archc.rules import REGISTRY

    def permutes(op):
        return REGISTRY[op].get("permutes")

    assert permutes(nn.Conv2d) and permutes(nn.BatchNorm2d) and permutes(archc.Filter)
    assert not permutes(torch.cat) and not permutes(torch.permute) and not permutes(nn.GroupNorm)
    assert _whole_blocks(np.array([4, 4, 4, 7, 7, 7, 1, 1, 1]), 3)  # a flatten with the channel outermost
    assert not _whole_blocks(np.array([4, 7, 1, 4, 7, 1, 4, 7, 1]), 3)  # the channel innermost
    assert not _whole_blocks(np.array([4, 4, 7, 7, 4, 4]), 3)  # one channel twice
    grouped = archc.trace(nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), (torch.randn(1, 4, 5, 5),))
    node = next(n for n in grouped.graph.nodes if n.op == "call_module")
    assert not permutes(nn.Conv2d)(node)


def test_inputs_outside_every_pattern_die_at_their_producer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1))
    x = torch.randn(2, 3, 7, 7)
    gm = archc.passes.insert_grouped(archc.passes.insert_filters(archc.trace(model, (x,))), 2)
    _set_patterns(gm, "2", *structured(6, 4, [[4, 1], [0, 2]], [[1, 3], [0, 2]]))  # inputs 3, 5 feed no pattern
    result = compaction(gm)
    small, report = result.gm, result.search_report
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].out_channels == 4 and convs[1].groups == 2
    order = report["2"]["channel_order"]
    assert order["inputs"] == "permuted" and "fixed" in order["outputs"]  # the model's output keeps its order
    assert small.code.count("torch.index_select(") == 1
    _exact_everywhere(gm, small, x, tmp_path)


def test_disjoint_patterns_of_different_sizes_read_slices_and_write_in_place(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    gm = _searched_chain(False, x)
    _set_patterns(gm, "c2", *structured(8, 8, [[5, 0], [1, 4, 2, 7, 3, 6]], [[7, 2, 0], [1, 6, 3, 4, 5]]))
    result = compaction(gm)
    small, report = result.gm, result.search_report
    entry = report["c2"]
    assert entry["grouped"] == "patterns"
    assert entry["channel_order"] == {"inputs": "permuted", "outputs": "permuted"}
    assert "index_select" not in small.code and small.code.count("torch.narrow(") == 2
    _exact_everywhere(gm, small, x, tmp_path)


def test_a_conv_whose_patterns_all_died_keeps_one_zero_input_and_its_bias(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 2, 1))
    x = torch.randn(2, 3, 7, 7)
    gm = archc.passes.insert_grouped(archc.passes.insert_filters(archc.trace(model, (x,))), 2)
    with torch.no_grad():
        gm.get_submodule("2").parametrizations.weight[0].P.zero_()  # conv 2 reads nothing: bias only
    result = compaction(gm)
    small, report = result.gm, result.search_report
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert [c.in_channels for c in convs][:2] == [3, 1] and convs[0].out_channels == 1
    assert report["2"]["inputs_dropped_here"] == 0  # its one input is the survivor
    _exact_everywhere(gm, small, x, tmp_path)
