"""Shrinking while training is exact: same loss, same next step, with SGD momentum and Adam."""
import copy
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zoo import ZOO

import archc
from archc.shrink import _finalise_closed_gates, shrink
from archc.sparsity import gate_l1

OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
}


def _step(model, opt, inputs, target) -> float:
    opt.zero_grad()
    loss = F.cross_entropy(model(*inputs), target) + 1e-3 * gate_l1(model)
    loss.backward()
    opt.step()
    return loss.item()


@pytest.mark.parametrize("name", ["resnet", "vit", "csp"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_shrink_keeps_the_loss_and_the_next_optimizer_step(name, opt_name):
    torch.manual_seed(0)
    model, inputs = ZOO[name]()
    target = torch.randint(0, 10, (inputs[0].shape[0],))
    a = archc.passes.insert_filters(archc.trace(model, inputs)).train()
    make = OPTIMIZERS[opt_name]
    opt_a = make(a.parameters())
    for _ in range(3):
        _step(a, opt_a, inputs, target)
    with torch.no_grad():
        for gate in archc.filters(a):
            gate.theta[: gate.size // 3] = -0.1
    b = copy.deepcopy(a)
    opt_b = make(b.parameters())
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    b, removed = shrink(b, opt_b)
    b = b.gm
    _finalise_closed_gates(a, opt_a)  # what shrink does to the optimizer before removing
    assert removed > 0 and sum(p.numel() for p in b.parameters()) < sum(p.numel() for p in a.parameters())
    assert abs(_step(a, opt_a, inputs, target) - _step(b, opt_b, inputs, target)) < 1e-5
    with torch.no_grad():
        diff = (a.eval()(*inputs) - b.eval()(*inputs)).abs().max()
    assert diff < 1e-5


def _step_seconds(model, x, y, repeats=7) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _step(model, opt, (x,), y)
        times.append(time.perf_counter() - start)
    return sorted(times)[repeats // 2]


def test_a_shrunk_model_trains_faster():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 4096), nn.ReLU(), nn.Linear(4096, 10))
    x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))
    gm = archc.passes.insert_filters(archc.trace(model, (x,))).train()
    big = _step_seconds(gm, x, y)
    with torch.no_grad():
        (gate,) = archc.filters(gm)
        gate.theta[64:] = -1.0
    small, removed = shrink(gm)
    small = small.gm
    assert removed == 4096 - 64
    assert _step_seconds(small, x, y) < 0.5 * big
