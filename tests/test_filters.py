"""Filter gates: x * relu(theta); a closed gate silences its channel wherever it is read."""
import torch
from torch import nn
from zoo import ZOO

import archc
from archc.filters import filter_sites


def test_filter_multiplies_by_relu_theta_on_its_dim():
    f = archc.Filter(3)
    with torch.no_grad():
        f.theta.copy_(torch.tensor([2.0, -1.0, 0.5]))
    site = f.add_site(dim=-1, index=torch.tensor([0, 1, 2, 3]))  # channel 3: other group
    x = torch.ones(2, 4)
    assert f(x, site).tolist() == [[2.0, 0.0, 0.5, 1.0]] * 2


def test_a_site_with_every_channel_in_order_scales_as_the_general_index_does():
    f = archc.Filter(3)
    with torch.no_grad():
        f.theta.copy_(torch.tensor([2.0, -1.0, 0.5]))
    whole = f.add_site(dim=1, index=torch.arange(3))  # the shortcut: relu(theta) itself
    shuffled = f.add_site(dim=1, index=torch.tensor([2, 0, 1]))
    x = torch.ones(2, 3)
    assert f(x, whole).tolist() == [[2.0, 0.0, 0.5]] * 2
    assert f(x, shuffled).tolist() == [[0.5, 2.0, 0.0]] * 2
    g = archc.Filter(3)  # a state dict with another index than the one built reaches forward
    g.add_site(dim=1, index=torch.arange(3)), g.add_site(dim=1, index=torch.arange(3))
    g.load_state_dict(f.state_dict())
    assert g(x, 1).tolist() == [[0.5, 2.0, 0.0]] * 2 and g(x, 0).tolist() == [[2.0, 0.0, 0.5]] * 2


def test_theta_starts_in_zero_one_as_in_shrinknets():
    theta = archc.Filter(1000).theta.detach()
    assert float(theta.min()) > 0 and float(theta.max()) <= 1


def test_one_filter_per_prunable_group_shared_across_its_sites():
    model, inputs = ZOO["resnet"]()
    gm = archc.trace(model, inputs)
    prunable = [g for g in archc.channel_groups(gm) if g.prunable]
    gated = archc.passes.insert_filters(gm)
    gates = list(archc.filters(gated))
    assert len(gates) == len(prunable)
    assert sorted(f.size for f in gates) == sorted(g.size for g in prunable)
    assert any(len(f.dims) > 1 for f in gates)  # residual streams are gated at every branch


def test_gate_goes_after_the_norm_not_between_conv_and_norm():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 2, 1))
    model[1].bias.data.fill_(1.0)  # the norm maps zero to non-zero
    gated = archc.passes.insert_filters(archc.trace(model.eval(), (torch.randn(2, 3, 5, 5),)))
    (node, _, _), = filter_sites(gated)
    assert node.args[0].target == "1"  # the BatchNorm


def test_closed_gate_silences_the_channel_at_every_consumer():
    model, inputs = ZOO["mobilenetv3"]()
    gated = archc.passes.insert_filters(archc.trace(model, inputs))
    for gate in archc.filters(gated):
        with torch.no_grad():
            gate.theta[0] = -1.0
    seen = {}
    for node, gate, site in filter_sites(gated):
        seen[node.name] = (gate, site)

    class Record(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.name in seen:
                gate, site = seen[n.name]
                index = getattr(gate, f"index{site}")
                dead = (index == 0).nonzero().flatten()
                assert out.index_select(gate.dims[site] % out.dim(), dead).abs().max() == 0
            return out

    with torch.no_grad():
        Record(gated.eval()).run(*inputs)
