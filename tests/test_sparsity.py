"""Regularizers and proximal steps against their closed forms (Alvarez & Salzmann, ShrinkNets)."""
import math

import torch
from torch import nn

import archc
from archc import sparsity


def _mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3))
    return archc.trace(model, (torch.randn(2, 5),))


def test_weight_group_holds_the_incoming_weights_and_bias_of_each_neuron():
    gm = _mlp()
    (g,) = sparsity.channel_weight_groups(gm)
    assert g.size == 4 and g.params_per_channel == 5 + 1
    w, b = gm.get_submodule("0").weight, gm.get_submodule("0").bias
    expected = (w.pow(2).sum(1) + b.pow(2)).detach()
    torch.testing.assert_close(g.sq_norms().detach(), expected)


def test_residual_channel_group_spans_every_branch():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 6, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            x = self.a(x)
            return self.head(x + self.b(x))

    gm = archc.trace(Res(), (torch.randn(2, 3, 4, 4),))
    (g,) = sparsity.channel_weight_groups(gm)
    owners = {id(p) for p, _, _ in g.slices}
    assert {id(gm.a.weight), id(gm.b.weight), id(gm.a.bias), id(gm.b.bias)} <= owners
    assert g.params_per_channel == (3 + 1) + (6 + 1)


def test_sparse_group_lasso_value_matches_the_formula():
    gm = _mlp()
    groups = sparsity.channel_weight_groups(gm)
    lam, alpha = 0.3, 0.25
    w, b = gm.get_submodule("0").weight, gm.get_submodule("0").bias
    theta = torch.cat([w, b[:, None]], 1).detach()
    want = lam * ((1 - alpha) * math.sqrt(6) * theta.norm(dim=1).sum() + alpha * theta.abs().sum())
    torch.testing.assert_close(sparsity.sparse_group_lasso(groups, lam, alpha).detach(), want)


def test_proximal_step_is_the_closed_form():
    gm = _mlp()
    groups = sparsity.channel_weight_groups(gm)
    w, b = gm.get_submodule("0").weight, gm.get_submodule("0").bias
    with torch.no_grad():
        w[0], b[0] = w[0] * 0.05, 0.0  # neuron 0 is weak: the prox kills it, the others survive
    theta = torch.cat([w, b[:, None]], 1).detach().clone()
    lam, alpha, t = 0.2, 0.5, 0.4
    soft = theta.sign() * (theta.abs() - t * alpha * lam).clamp_min(0)
    scale = (1 - t * (1 - alpha) * lam * math.sqrt(6) / soft.norm(dim=1)).clamp_min(0)
    want = soft * scale[:, None]
    sparsity.proximal_step(groups, lam, alpha, t)
    torch.testing.assert_close(torch.cat([w, b[:, None]], 1).detach(), want)
    assert (want.norm(dim=1) == 0).tolist() == [True, False, False, False]
    assert sparsity.dead_channels(groups[0]).tolist() == (want.norm(dim=1) == 0).tolist()


def test_proximal_wrapper_works_with_any_optimizer_and_kills_channels():
    gm = archc.passes.insert_filters(_mlp(), init="ones")
    groups = sparsity.channel_weight_groups(gm)
    opt = sparsity.Proximal(torch.optim.Adam(gm.parameters(), lr=0.1), groups, lam=5.0, alpha=0.0)
    gm(torch.randn(4, 5)).sum().backward()
    opt.step()
    assert sparsity.dead_channels(groups[0]).all()
    assert sparsity.close_gates_of_zero_groups(groups) == 4
    small = archc.compact(gm)  # exact: the channels carried nothing
    assert small.get_submodule("0").out_features == 1


def test_gate_l1_is_the_sum_of_relu_theta_and_differentiable():
    gm = archc.passes.insert_filters(_mlp())
    (gate,) = archc.filters(gm)
    with torch.no_grad():
        gate.theta.copy_(torch.tensor([1.0, -2.0, 0.5, 0.25]))
    penalty = sparsity.gate_l1(gm)
    assert float(penalty.detach()) == 1.75
    penalty.backward()
    assert gate.theta.grad.tolist() == [1.0, 0.0, 1.0, 1.0]


def test_density_counts_nonzero_weights_per_layer():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight[:2] = 0
    d = sparsity.density(model)
    assert d == {"0": 0.5, "1": 1.0}
    assert float(sparsity.density_penalty(model)) > 0
