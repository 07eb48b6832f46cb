"""Compaction details: thresholds, one channel kept per group, refusal of a wrong result."""
import copy

import pytest
import torch
from conftest import kill_channels, n_params
from torch import nn
from zoo import ZOO

import archc
from archc.rules import REGISTRY
from archc.verify import max_relative_error


def _gated(name="resnet"):
    model, inputs = ZOO[name]()
    return archc.passes.insert_filters(archc.trace(model, inputs)), inputs


def test_threshold_closes_small_gates_and_matches_the_thresholded_reference():
    gated, inputs = _gated()
    for gate in archc.filters(gated):
        with torch.no_grad():
            gate.theta[: gate.size // 2] = 0.01
    small = archc.compact(gated, threshold=0.05)
    assert n_params(small) < n_params(gated)
    reference = copy.deepcopy(gated)
    for gate in archc.filters(reference):
        with torch.no_grad():
            gate.theta[gate.theta <= 0.05] = 0
    assert max_relative_error(reference, small, inputs, dtype=torch.float64) < 1e-5


def test_a_fully_closed_group_keeps_its_strongest_channel():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    gated = archc.passes.insert_filters(archc.trace(model, (torch.randn(2, 4),)))
    (gate,) = archc.filters(gated)
    with torch.no_grad():
        gate.theta.fill_(-1.0)
        gate.theta[5] = -0.5
    small = archc.compact(gated)
    assert small.get_submodule("0").out_features == 1
    assert max_relative_error(gated, small, (torch.randn(3, 4),), dtype=torch.float64) < 1e-5


def test_compact_does_not_modify_the_gated_model():
    gated, _ = _gated("densenet")
    kill_channels(gated, 0.5)
    before = copy.deepcopy(gated.state_dict())
    code = gated.code
    archc.compact(gated)
    assert gated.code == code
    for k, v in gated.state_dict().items():
        assert torch.equal(v, before[k])


def test_compaction_refuses_a_model_that_differs(monkeypatch):
    gated, _ = _gated("resnet")
    kill_channels(gated, 0.3)
    # "fold" a gate into BatchNorm without scaling anything: a wrong rewrite
    monkeypatch.setattr(REGISTRY[nn.BatchNorm2d], "fold", lambda *a: True)
    with pytest.raises(archc.CompactionError, match="differs from the gated model"):
        archc.compact(gated)


def test_compact_code_is_plain_readable_pytorch():
    gated, _ = _gated("mobilenetv2")
    kill_channels(gated, 0.3)
    small = archc.compact(gated)
    assert "Filter" not in repr(small) and "filter" not in small.code
    assert "torch.nn.functional" in small.code or "self." in small.code


def test_no_gates_closed_means_same_size():
    gated, inputs = _gated("inception")
    small = archc.compact(gated)
    assert n_params(small) == n_params(gated) - sum(f.size for f in archc.filters(gated))
    assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-5


def test_verification_does_not_pass_nan_or_inf():
    from archc.verify import assert_equivalent

    class NanOut(nn.Module):
        def forward(self, x):
            return x * float("nan")

    gm = archc.trace(NanOut(), (torch.randn(2, 3),))
    with pytest.raises(archc.CompactionError):
        assert_equivalent(gm, nn.Identity())

    class InfOut(nn.Module):
        def forward(self, x):
            return x / 0.0

    gm = archc.trace(InfOut(), (torch.ones(2, 3),))
    with pytest.raises(archc.CompactionError):
        assert_equivalent(gm, nn.Identity(), inputs=(torch.ones(2, 3),))
    with pytest.raises(archc.CompactionError, match="inf"):  # equal infs too: inf never passes
        assert_equivalent(gm, copy.deepcopy(gm), inputs=(torch.ones(2, 3),))


@pytest.mark.parametrize("slopes", [1, 8])
def test_prelu_with_one_slope_per_channel_keeps_the_surviving_slopes(slopes):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(slopes), nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[1].weight.uniform_(-1.0, 1.0)
    x = torch.randn(2, 3, 8, 8)
    gm = archc.passes.insert_filters(archc.trace(model, (x,)))
    assert kill_channels(gm, 0.5, 0) > 0
    small = archc.compact(gm)
    prelu = next(m for m in small.modules() if isinstance(m, nn.PReLU))
    assert prelu.num_parameters == (1 if slopes == 1 else next(m for m in small.modules() if isinstance(m, nn.Conv2d)).out_channels)
    assert max_relative_error(gm, small, (x,), dtype=torch.float64) < 1e-5


def test_a_module_called_twice_is_shrunk_once_and_takes_its_gate_once():
    model, inputs = ZOO["siamese"]()  # one tower, each module called twice
    gated = archc.passes.insert_filters(archc.trace(model, inputs))
    stem_gate = next(g for g in archc.filters(gated) if g.size == 8)
    with torch.no_grad():
        stem_gate.theta[:3] = 0.0
    small = archc.compact(gated)  # shrinking at each call sliced the weights twice: IndexError
    assert small.get_submodule("body").in_channels == 5
    assert "scale" not in small.code  # both calls' gates folded into the shared weights, once
    assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-5
