"""The training view with gates on weights computes what the gated model computes, with the
same gradients, and shares its parameters."""
import pytest
import torch
from torch import nn
from zoo import ZOO

import archc
from archc.filters import Filter
from archc.passes.gates_on_weights import scaled_call


def _gated(model: nn.Module, inputs: tuple) -> torch.fx.GraphModule:
    gated = archc.passes.insert_filters(archc.trace(model, inputs))
    gen = torch.Generator().manual_seed(0)
    for gate in archc.filters(gated):  # some closed, the rest at other values than 1
        with torch.no_grad():
            gate.theta.copy_(torch.rand(gate.size, generator=gen) * 1.5 - 0.3)
    return gated


def _moved(view: torch.fx.GraphModule) -> int:
    return sum(n.op == "call_function" and n.target is scaled_call for n in view.graph.nodes)


def _grads(model: nn.Module, params: list, inputs: tuple) -> tuple[torch.Tensor, list]:
    for p in params:
        p.grad = None
    out = model(*inputs)
    out = out if isinstance(out, torch.Tensor) else torch.cat([t.flatten() for t in out.values()])
    (out * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    return out.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]


@pytest.mark.parametrize("name, search", [("resnet", None), ("mobilenetv2", None), ("densenet", None),
                                          ("vit", None), ("unet", None), ("resnet", "insert_channel_select"),
                                          ("resnet", "insert_kernel_masks")])
def test_the_view_matches_the_gated_model_and_its_gradients(name, search):
    model, inputs = ZOO[name]()
    gated = _gated(model, inputs)
    if search:  # DAS search parameters: the layers' weights are computed (parametrized)
        getattr(archc.passes, search)(gated)
    view = archc.passes.gates_on_weights(gated, batch=64)
    params = list(gated.parameters())
    assert _moved(view) > 0
    assert {id(p) for p in view.parameters()} == {id(p) for p in params}  # shared, not copied
    gated.train()
    torch.manual_seed(0)
    want, want_grads = _grads(gated, params, inputs)
    torch.manual_seed(0)
    got, got_grads = _grads(view, params, inputs)
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= 1e-5 * scale
    top = max(float(g.abs().max()) for g in want_grads)  # rounding scales with the largest gradient
    for p, a, b in zip(params, want_grads, got_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * top), p.shape


def test_a_gate_read_by_linear_layers_through_relu_moves_and_one_read_by_an_add_stays():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(6, 40), nn.Linear(40, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.c(x + self.b(torch.relu(self.a(x))))  # a's channels: to b only; x + ...: an add

    gated = _gated(Net().eval(), (torch.randn(4, 6),))
    view = archc.passes.gates_on_weights(gated, batch=128)
    calls = [n for n in view.graph.nodes if n.op == "call_module" and isinstance(view.get_submodule(n.target), Filter)]
    assert _moved(view) == 1 and len(calls) == len(list(archc.filters(gated))) - 1
    assert _moved(archc.passes.gates_on_weights(gated, batch=1)) == 0  # the weight is larger than 40 values
    x = torch.randn(7, 6)
    assert torch.allclose(view(x), gated(x), atol=1e-6)


def test_a_search_step_trains_through_the_view():
    from archc.search import Task
    from archc.search_run import SearchRun

    net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3))
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    run = SearchRun.fresh(Task(model_fn=lambda: net, train=None, val=None, example_inputs=(x,)),
                          archc.SearchConfig(lam=1e-2, lr=1e-2, device="cpu", batch_size=32))
    (gate,) = archc.filters(run.model)
    before = gate.theta.detach().clone()
    run.train_step((x, y))
    assert _moved(run.trainer) == 1  # 64 x 3 weights against 32 x 64 values
    assert not torch.equal(before, gate.theta.detach())  # the gate the trainer read is the model's
    run.train_step((x[:2], y[:2]))
    assert _moved(run.trainer) == 1  # decided once, at the first step's batch


def test_a_gate_right_after_a_batch_norm_scales_its_affine_and_the_statistics_still_update():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    gated = _gated(model.eval(), (torch.randn(2, 3, 9, 9),))
    view = archc.passes.gates_on_weights(gated, batch=16)
    (call,) = [n for n in view.graph.nodes if n.target is scaled_call]
    assert call.args[0].target == "1" and call.args[3] == (("weight", 0), ("bias", 0))
    bn, x = gated.get_submodule("1"), torch.randn(16, 3, 9, 9)
    start = {k: v.clone() for k, v in bn.state_dict().items()}
    gated.train()
    want = gated(x)
    after_gated = {k: v.clone() for k, v in bn.state_dict().items()}
    bn.load_state_dict(start)
    assert torch.allclose(view(x), want, atol=1e-5)
    assert all(torch.allclose(bn.state_dict()[k].float(), v.float()) for k, v in after_gated.items())


def test_a_gate_after_a_norm_without_affine_parameters_stays_on_the_activations():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8, affine=False), nn.ReLU(), nn.Conv2d(8, 4, 3))
    gated = _gated(model.eval(), (torch.randn(2, 3, 9, 9),))
    gated.train()
    view = archc.passes.gates_on_weights(gated, batch=64)
    x = torch.randn(16, 3, 9, 9)
    assert all(n.args[0].target != "1" for n in view.graph.nodes if n.target is scaled_call)
    assert torch.allclose(view(x), gated(x), atol=1e-5)
