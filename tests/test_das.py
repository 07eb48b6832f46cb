"""Differentiable architecture search passes: alpha (filter sizes), beta (input channels),
P/S (grouped convolutions). Random settings compact exactly, in PyTorch and onnxruntime."""
import os

import numpy as np
import pytest
import torch
from conftest import kill_channels, n_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_nets import random_networks
import torch.nn.functional as F
from torch import nn

import archc
from archc.das.params import sparsemax
from archc.search import SearchConfig
from archc.das.regularizers import exclusive_lasso, group_lasso, grouped_penalty, threshold_search_params
from archc.export import onnx_session, run_onnx
from archc.verify import max_relative_error


def _convs(gm):
    return [m for m in gm.modules() if isinstance(m, nn.Conv2d)]


def test_kernel_mask_scales_each_tap_by_the_alphas_of_the_windows_covering_it():
    mask = archc.KernelMask((5, 5))
    assert len(mask.sizes) == 25 and (4, 5) in mask.sizes and (5, 4) in mask.sizes
    with torch.no_grad():
        mask.alpha.copy_(torch.rand(25))
    want = torch.zeros(5, 5)
    for a, (h, w) in zip(mask.alpha.tolist(), mask.sizes):
        top, left = (5 - h) // 2, (5 - w) // 2
        want[top:top + h, left:left + w] += a
    torch.testing.assert_close(mask.taps().detach(), want)


def test_inserted_search_parameters_start_as_the_plain_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    x = torch.randn(2, 3, 9, 9)
    gm = archc.passes.insert_channel_select(archc.passes.insert_kernel_masks(archc.trace(model, (x,))))
    torch.testing.assert_close(gm(x), model(x))


class TwoConsumers(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.a, self.b = nn.Conv2d(6, 4, 5, padding=2), nn.Conv2d(6, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        return self.a(y) + self.b(y)


def _searched(model, x, kernel=True, select=True, patterns=0):
    gm = archc.passes.insert_filters(archc.trace(model, (x,)))
    if kernel:
        archc.passes.insert_kernel_masks(gm)
    if select:
        archc.passes.insert_channel_select(gm)
    if patterns:
        archc.passes.insert_grouped(gm, patterns)
    return gm


def _exact_everywhere(gm, small, x, tmp_path):
    assert max_relative_error(gm, small, (x,), dtype=torch.float64) < 1e-5
    archc.export_onnx(small, (x,), tmp_path / "m.onnx")
    with torch.no_grad():
        want = gm.eval()(x[:1]).numpy()
    got = run_onnx(onnx_session(tmp_path / "m.onnx"), [x[:1]])[0]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max() + 1e-6


def test_odd_kernel_sizes_are_cropped_exactly(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, 13)
    gm = _searched(TwoConsumers(), x, select=False)
    with torch.no_grad():
        for m in archc.kernel_masks(gm):
            m.alpha.zero_()
            m.alpha[m.sizes.index((4, 5) if m.kernel_size == (5, 5) else (1, 3))] = 1.3
    small = archc.compact(gm)
    kernels = sorted(tuple(c.kernel_size) for c in _convs(small))
    assert (4, 5) in kernels and (1, 3) in kernels and (3, 3) not in kernels[1:]
    _exact_everywhere(gm, small, x, tmp_path)


def test_a_channel_dropped_by_every_consumer_dies_at_its_producer():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    gm = _searched(TwoConsumers(), x, kernel=False)
    with torch.no_grad():
        for m in archc.channel_selects(gm):
            if len(m.beta) == 6:
                m.beta[[1, 4]] = 0.0
    small = archc.compact(gm)
    assert small.get_submodule("stem").out_channels == 4
    assert max_relative_error(gm, small, (x,), dtype=torch.float64) < 1e-5


def test_a_channel_dropped_by_one_consumer_leaves_only_that_consumer(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    gm = _searched(TwoConsumers(), x, kernel=False)
    (beta_a,) = [m for n, _, m in archc.das.params.parametrized_layers(gm, archc.ChannelSelect) if n == "a"]
    with torch.no_grad():
        beta_a.beta[[0, 2, 5]] = 0.0
    small = archc.compact(gm)
    assert small.get_submodule("stem").out_channels == 6
    assert small.get_submodule("a").in_channels == 3 and small.get_submodule("b").in_channels == 6
    assert "index_select" in small.code
    _exact_everywhere(gm, small, x, tmp_path)


def _set_patterns(gm, P, S):
    (g,) = archc.grouped_connectivities(gm)
    with torch.no_grad():
        g.P.copy_(P)
        g.S.copy_(S)


def _one_conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 2))


def test_disjoint_patterns_become_a_real_grouped_convolution(tmp_path):
    x = torch.randn(2, 4, 6, 6)
    gm = _searched(_one_conv_net(), x, kernel=False, select=False, patterns=2)
    P = torch.tensor([[1.0, 0], [0, 2.0], [0.5, 0], [0, 1.5]])  # inputs {0,2} and {1,3}
    S = torch.tensor([[1.0, 0, 1.0, 0, 1.0, 0], [0, 1.0, 0, 2.0, 0, 1.0]])  # outputs even / odd
    _set_patterns(gm, P, S)
    small = archc.compact(gm)
    assert any(c.groups == 2 for c in _convs(small))
    assert n_params(small) < n_params(gm)
    _exact_everywhere(gm, small, x, tmp_path)


@given(st.integers(0, 2**31 - 1), st.sampled_from(["overlap", "one"]))
@settings(max_examples=10, deadline=None)
def test_overlapping_or_single_patterns_stay_exact(seed, kind):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 6, 6, generator=gen)
    gm = _searched(_one_conv_net(), x, kernel=False, select=False, patterns=3)
    P = torch.rand(4, 3, generator=gen) * (torch.rand(4, 3, generator=gen) < 0.6)
    S = torch.rand(3, 6, generator=gen) * (torch.rand(3, 6, generator=gen) < 0.6)
    if kind == "one":
        P[:, 1:], S[1:] = 0, 0
    _set_patterns(gm, P, S)
    small = archc.compact(gm)
    assert max_relative_error(gm, small, (x,), dtype=torch.float64) < 1e-5


def test_grouped_penalty_and_threshold():
    g = archc.GroupedConnectivity(4, 6, 3)
    P, S = g.P.detach(), g.S.detach()
    assert torch.isclose(group_lasso(P, 0), P.norm(dim=0).sum())
    assert torch.isclose(exclusive_lasso(S, 0), S.abs().sum(0).pow(2).sum())
    holder = nn.Conv2d(4, 6, 1)
    torch.nn.utils.parametrize.register_parametrization(holder, "weight", g)
    want = 2 * (P.norm(dim=0).sum() + S.norm(dim=1).sum()) + 3 * (P.abs().sum(1).pow(2).sum() + S.abs().sum(0).pow(2).sum())
    assert torch.isclose(grouped_penalty(holder, 2.0, 3.0).detach(), want)
    with torch.no_grad():
        g.P[0, 0] = 1e-5
    assert threshold_search_params(holder, 1e-3) >= 1 and g.P[0, 0] == 0


def test_sparsemax_is_a_sparse_distribution():
    p = sparsemax(torch.tensor([3.0, 1.0, 0.2, -1.0]))
    assert torch.isclose(p.sum(), torch.tensor(1.0)) and (p == 0).sum() >= 2


@settings(max_examples=int(os.environ.get("ARCHC_EXAMPLES", 25)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_networks(), st.integers(0, 2**31 - 1))
def test_random_networks_with_every_search_parameter_compact_exactly(net, seed):
    model, inputs = net
    gen = torch.Generator().manual_seed(seed)
    gm = archc.passes.insert_filters(archc.trace(model, inputs))
    archc.passes.insert_grouped(archc.passes.insert_channel_select(archc.passes.insert_kernel_masks(gm)), 3)
    kill_channels(gm, 0.3, seed)
    with torch.no_grad():
        for m in archc.kernel_masks(gm):
            m.alpha.copy_(torch.rand(len(m.alpha), generator=gen) * (torch.rand(len(m.alpha), generator=gen) < 0.3))
        for m in archc.channel_selects(gm):
            m.beta.mul_(torch.rand(len(m.beta), generator=gen) > 0.25)
        for g in archc.grouped_connectivities(gm):
            g.P.mul_(torch.rand(g.P.shape, generator=gen) > 0.5)
            g.S.mul_(torch.rand(g.S.shape, generator=gen) > 0.5)
    small = archc.compact(gm)
    assert max_relative_error(gm, small, inputs, dtype=torch.float64) < 1e-5


def test_area_weighting_makes_large_windows_cost_more():
    from archc.das.regularizers import alpha_l1

    conv = nn.Conv2d(2, 2, (5, 3))
    mask = archc.KernelMask((5, 3))
    torch.nn.utils.parametrize.register_parametrization(conv, "weight", mask)
    with torch.no_grad():
        mask.alpha.fill_(1.0)
    areas = {s: float(a) for s, a in zip(mask.sizes, mask.window_areas())}
    assert areas[(5, 3)] == 1.0 and areas[(1, 1)] == pytest.approx(1 / 15) and areas[(4, 2)] == pytest.approx(8 / 15)
    assert torch.isclose(alpha_l1(conv), torch.tensor(15.0))
    assert torch.isclose(alpha_l1(conv, "area"), torch.tensor(sum(h * w for h, w in mask.sizes) / 15))
    with pytest.raises(archc.ConfigError, match="kernel_weighting"):
        SearchConfig(kernel_weighting="volume")


def test_partition_init_starts_each_channel_in_one_pattern():
    torch.manual_seed(0)
    g = archc.GroupedConnectivity(8, 6, 3, init="partition")
    P, S = g.P.detach(), g.S.detach()
    assert ((P == 1).sum(1) == 1).all() and ((S == 1).sum(0) == 1).all()
    assert (P == 1).sum(0).tolist() == [3, 3, 2] and (S == 1).sum(1).tolist() == [2, 2, 2]
    assert (P[P != 1] < 0.01).all() and (S[S != 1] < 0.01).all()
    thresholded = archc.GroupedConnectivity(8, 6, 3, init="partition")
    with torch.no_grad():
        thresholded.P[thresholded.P < 0.5] = 0
        thresholded.S[thresholded.S < 0.5] = 0
    from archc.das.grouped_lowering import lowered_form
    assert lowered_form(thresholded.P.detach(), thresholded.S.detach())[0] == "patterns"  # 3+3+2 inputs: unequal
    narrow = archc.GroupedConnectivity(3, 8, 4, init="partition")  # fewer inputs than patterns: dense start
    assert (narrow.P.detach() @ narrow.S.detach() > 0.05).all()
    with pytest.raises(ValueError, match="init"):
        archc.GroupedConnectivity(4, 4, 2, init="zeros")


class OneChannelHead(nn.Module):
    """A one-channel conv pooled and flattened into a linear layer: the flatten's single
    feature lines up with no channel, so it belongs to no group."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(4, 1, 1), nn.Linear(1, 2)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.conv(x), 1), 1))


def test_a_deselected_feature_outside_every_group_stays_in_its_reader():
    x = torch.randn(2, 4, 5, 5)
    gm = archc.passes.insert_channel_select(archc.trace(OneChannelHead(), (x,)))
    head = next(s for s in archc.channel_selects(gm) if s.beta.numel() == 1)
    with torch.no_grad():
        head.beta.zero_()
    small = archc.compact(gm)  # was Linear(0, 2) behind a one-feature flatten: refused
    assert small.get_submodule("fc").in_features == 1
    assert max_relative_error(gm, small, (x,), dtype=torch.float64) < 1e-5


def test_pattern_assignment_starts_dense_and_a_partition_is_a_real_grouped_conv(tmp_path):
    from archc.das.regularizers import assignment_penalty, connection_share, impurity

    torch.manual_seed(0)
    spread = archc.PatternAssignment(8, 6, 2)
    assert (spread.connectivity() - 1).abs().max() < 0.05  # uniform distributions: the dense conv
    assert impurity(*spread.distributions()) > 6
    near = archc.PatternAssignment(8, 6, 2, init="partition")
    holder = nn.Conv2d(8, 6, 1)
    torch.nn.utils.parametrize.register_parametrization(holder, "weight", near)
    assignment_penalty(holder, 1.0, 1.0).backward()  # mostly in one pattern, and still free to move
    assert near.input_logits.grad.abs().sum() > 0 and near.output_logits.grad.abs().sum() > 0
    x = torch.randn(2, 4, 6, 6)
    gm = archc.passes.insert_filters(archc.trace(_one_conv_net(), (x,)))
    archc.passes.insert_grouped(gm, 2, form="assign")
    (m,) = archc.pattern_assignments(gm)
    with torch.no_grad():  # inputs {0, 2} / {1, 3}, outputs even / odd: a logit gap of 1 or more is one pattern
        m.input_logits.copy_(torch.tensor([[1.0, 0], [0, 1.5], [2.0, 0], [0, 1.0]]))
        m.output_logits.copy_(torch.tensor([[1.0, 0], [0, 1.0]] * 3))
    P, S = m.factors()
    assert ((P > 0).sum(1) == 1).all() and ((S > 0).sum(0) == 1).all()  # exact zeros, no threshold
    assert float(impurity(*m.distributions()).detach()) == 0
    assert torch.isclose(connection_share(*m.distributions()).detach(), torch.tensor(0.5))
    logits = m.input_logits.detach().clone()
    threshold_search_params(gm, 10.0)  # the paper's t applies to free P and S, not to these logits
    assert torch.equal(m.input_logits.detach(), logits)
    small = archc.compact(gm)
    assert any(c.groups == 2 for c in _convs(small))
    _exact_everywhere(gm, small, x, tmp_path)
    with pytest.raises(ValueError, match="form"):
        archc.passes.insert_grouped(gm, 2, form="free")


def test_shrinking_pattern_assignments_keeps_the_loss_and_the_next_adam_step():
    import copy

    from zoo import ZOO

    from archc.das.regularizers import assignment_penalty
    from archc.shrink import _finalise_closed_gates, shrink

    def step(model, opt, penalised=False):
        opt.zero_grad()
        loss = F.cross_entropy(model(*inputs), target)
        (loss + assignment_penalty(model, 1e-2, 1e-1) if penalised else loss).backward()
        opt.step()
        return loss.item()

    torch.manual_seed(0)
    model, inputs = ZOO["resnet"]()
    target = torch.randint(0, 10, (inputs[0].shape[0],))
    a = archc.passes.insert_grouped(archc.passes.insert_filters(archc.trace(model, inputs)), 3, form="assign").train()
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-2)
    for _ in range(3):  # the penalty moves the logits (it counts removed channels too, so it is left out below)
        step(a, opt_a, penalised=True)
    with torch.no_grad():
        for gate in archc.filters(a):
            gate.theta[: gate.size // 3] = -0.1
    b = copy.deepcopy(a)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-2)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    b, removed = shrink(b, opt_b)
    b = b.gm
    _finalise_closed_gates(a, opt_a)
    narrowed = [m.input_logits.shape[0] for m in archc.pattern_assignments(b)]
    assert removed > 0 and narrowed != [m.input_logits.shape[0] for m in archc.pattern_assignments(a)]
    assert abs(step(a, opt_a) - step(b, opt_b)) < 1e-5
    with torch.no_grad():
        assert (a.eval()(*inputs) - b.eval()(*inputs)).abs().max() < 1e-5


def test_an_assigned_output_never_sits_in_a_pattern_without_inputs():
    """Such an output would be its bias alone: a constant channel, which a BatchNorm after it
    turns into a blow-up in eval mode (running variance ~0, the bias walked by Adam)."""
    m = archc.PatternAssignment(3, 8, 4)
    with torch.no_grad():  # inputs in patterns 0 and 1 only; half the outputs prefer the empty pattern 2
        m.input_logits.copy_(torch.tensor([[2.0, 0, 0, 0], [2.0, 0, 0, 0], [0, 2.0, 0, 0]]))
        m.output_logits.copy_(torch.tensor([[0, 0, 2.0, 0]] * 4 + [[2.0, 0, 0, 0]] * 4))
    P, S = m.factors()
    assert (S[2:] == 0).all() and ((P @ S) > 0).any(0).all()
    assert torch.allclose(S.sum(0), torch.full((8,), 4.0))  # still distributions, scaled by the patterns
