"""Lowering ATen ops into archc's dialect keeps what the model computes: in-place writes and
aliases, copies, negative dims, gradients, train/eval behaviour, sizes the model branches on.
Each case compares the captured graph with the model itself."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archc


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _same(model, x, train=False, calls=1):
    model.train(train)
    gm = archc.trace(model, (x,)).train(train)
    for _ in range(calls):
        torch.manual_seed(1)
        want = model(x.clone())
        torch.manual_seed(1)
        torch.testing.assert_close(gm(x.clone()), want)
    return gm


def _cls_token_after_inplace_add(x):
    y = x * 2
    cls = y[:, 0]  # a view of y (slice then select), read after y is written
    y += 1.0
    return cls * 1


def _view_before_two_inplace_ops(x):
    y = x * 1
    v = y.view(-1)
    y.add_(1)
    y.mul_(2)
    return v * 1


def _copy_then_write(x):
    y = x.to(torch.float32, copy=True)
    y.add_(1)
    return x * 1


def _constant_written_through_a_view(x):
    c = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    c[:2] += 1
    return x * c


def _write_into_a_full_slice(x):
    y = torch.cat([x * 1, x * 2], -1)[..., :12]  # every channel: torch.export records alias(cat)
    y += 1.0
    return y * 1


def _write_into_a_full_slice_read_elsewhere(x):
    y = x * 1
    z, w = y[..., :6], y * 3  # y has another reader: the alias is not y under another name
    z += 1.0
    return z + w


def _write_into_a_permuting_einsum(x):
    t = x * 1
    e = torch.einsum("bnc->bnc", t)  # a view of t in eager, though its schema says a fresh tensor
    y = e[:, :, :6]
    y += 1.0
    return t * 2 + y


def _permuting_einsum_then_write(x):
    t = x * 1
    e = torch.einsum("bnc->bnc", t)  # taken before the write, and a view of t in eager: it sees it
    t += 1.0
    return e * 1


@pytest.mark.parametrize("fn", [
    lambda x: x.select(-1, 2) * 1, lambda x: x[..., 1:3] * 1, lambda x: x.sum(dim=None, keepdim=True),
    _cls_token_after_inplace_add, _view_before_two_inplace_ops, _copy_then_write, _write_into_a_full_slice,
    _write_into_a_full_slice_read_elsewhere, _write_into_a_permuting_einsum, _permuting_einsum_then_write,
], ids=["select-1", "slice-1", "sum-keepdim", "view-then-write", "two-writes", "copy-then-write", "full-slice-write",
        "full-slice-write-read-elsewhere", "write-into-permuting-einsum",
        "permuting-einsum-then-write"])
def test_values_match_the_model(fn):
    _same(Fn(fn), torch.randn(3, 4, 6))


def test_a_constant_made_in_forward_is_fresh_at_every_call():
    _same(Fn(_constant_written_through_a_view), torch.randn(3, 4, 6), calls=2)


def test_detach_still_stops_gradients():
    class StraightThrough(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 6)

        def forward(self, x):
            h = self.fc(x)
            return h + (torch.round(h) - h).detach()

    model, x = StraightThrough(), torch.randn(3, 6)
    gm = archc.trace(model, (x,))
    grads = []
    for m in (model, gm):
        model.zero_grad()
        m(x).sum().backward()
        grads.append(model.fc.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_dropout_and_batch_norm_keep_the_mode_the_user_chose():
    x = torch.randn(3, 4, 8, 8)
    _same(Fn(lambda x: F.dropout(x, 0.5, training=False)), x, train=True)  # never drops
    _same(Fn(lambda x: F.dropout(x, 0.5, training=True)), x, train=False)  # MC dropout: always drops
    frozen = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)).train()
    frozen[1].eval()  # a frozen BatchNorm inside a model that trains
    gm = archc.trace(frozen, (x,)).train()
    torch.testing.assert_close(gm(x), frozen(x))


def test_a_branch_on_the_batch_size_is_guarded_outside_the_captured_range():
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) * (2 if x.shape[0] > 4 else 3)

    gm = archc.trace(Branches(), (torch.randn(3, 4),))
    gm(torch.randn(4, 4))
    with pytest.raises(AssertionError, match="size"):
        gm(torch.randn(8, 4))  # the other branch was never captured: refuse, never compute it


def test_a_norm_without_affine_or_statistics_is_captured():
    x = torch.randn(3, 4, 8, 8)
    _same(nn.Sequential(nn.BatchNorm2d(4, affine=False, track_running_stats=False)), x)


def test_a_parameter_beside_a_functional_layer_is_not_read_as_tied():
    class OwnWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(16, 8))
            self.gamma = nn.Parameter(torch.rand(16))

        def forward(self, x):
            return F.relu(F.linear(x, self.weight)) * self.gamma

    gm = archc.trace(nn.Sequential(OwnWeight(), nn.Linear(16, 3)), (torch.randn(3, 8),))
    assert archc.report(gm).prunable_channels == 16


def test_hardtanh_that_moves_zero_is_gated_after_and_clamp_with_tensor_bounds_blocks():
    hard = nn.Sequential(nn.Linear(4, 8), Fn(lambda h: F.hardtanh(h, 0.5, 2.0)), nn.Linear(8, 2))
    gated = archc.passes.insert_filters(archc.trace(hard, (torch.randn(3, 4),)))
    for gate in archc.filters(gated):
        with torch.no_grad():
            gate.theta[:3] = 0.0
    archc.compact(gated)  # exact, so not refused
    bounds = nn.Sequential(nn.Linear(4, 8), Fn(lambda h: torch.clamp(h, torch.zeros(8))), nn.Linear(8, 2))
    assert archc.report(archc.trace(bounds, (torch.randn(3, 4),))).prunable_channels == 0


def test_a_weight_cast_to_its_own_dtype_is_the_layers_and_elsewhere_the_cast_stays():
    """``F.rms_norm(x, shape, self.weight.to(x.dtype))`` (DeepSeek-ViT) raises to ``nn.RMSNorm``;
    ``x * (1.0 + self.scale.float())`` (Gemma) keeps its cast, so a ``.half()`` model still adds
    in float32."""
    class CastWeights(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.scale = nn.Parameter(torch.randn(8)), nn.Parameter(torch.randn(8))

        def forward(self, x):
            y = torch.nn.functional.rms_norm(x, (8,), self.weight.to(x.dtype))
            return y * (1.0 + self.scale.float())

    gm = archc.trace(CastWeights(), (torch.randn(3, 8),))
    assert any(isinstance(m, nn.RMSNorm) for m in gm.modules())
    assert sum(n.op == "call_method" and n.target == "to" for n in gm.graph.nodes) == 1


def test_the_graph_reads_the_models_own_parameters_buffers_and_constants():
    """Lowering reads the exported program's lifted placeholders itself (not through
    ``ExportedProgram.module()``): each parameter, buffer (persistent or not) and constant
    tensor becomes the model's own tensor at its path, a tied weight stays one tensor, and an
    in-place write to a buffer still happens."""
    class Lifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Linear(4, 4), nn.Linear(4, 4, bias=False)
            self.head.weight = self.emb.weight
            self.register_buffer("calls", torch.zeros(()))
            self.register_buffer("shift", torch.randn(4), persistent=False)
            self.const = torch.randn(4)

        def forward(self, x):
            self.calls.add_(1)
            return self.head(self.emb(x)) + self.shift + self.const

    model, x = Lifted(), torch.randn(3, 4)
    gm = _same(model, x)
    own = {id(t) for t in [*model.parameters(), *model.buffers(), model.const]}
    held = {id(t) for t in [*gm.parameters(), *gm.buffers()]}
    assert {id(model.emb.weight), id(model.shift), id(model.calls)} <= held <= own
    assert gm.get_submodule("head").weight is gm.get_submodule("emb").weight is model.emb.weight  # still tied
    before = float(model.calls)
    gm(x)
    assert float(model.calls) == before + 1
