"""Depth: one gate per residual branch; a closed branch is removed with the layers only it used,
and the compact model still equals the gated one, at three input shapes for real models."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import archc
from archc.block_gates import block_gate_sites, block_gates, residual_branches
from archc.capture.inputs import random_inputs, shape_variants
from archc.verify import max_relative_error

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import digits  # noqa: E402


def _gated(model, args=(), kwargs=None):
    return archc.passes.insert_block_gates(archc.passes.insert_filters(archc.trace(model, args, kwargs)))


def _close(gated, which: list[int], open_value: float = 0.7) -> list[str]:
    sites = list(block_gate_sites(gated))
    with torch.no_grad():
        for i, (_, gate) in enumerate(sites):
            gate.theta.fill_(-0.5 if i in which else open_value)
    return [str(sites[i][0].target) for i in which]


def _exact_at_every_shape(gated, small, dtype=torch.float64):
    for sizes in shape_variants(gated):
        inputs = random_inputs(gated, seed=3, sizes=sizes)
        assert max_relative_error(gated, small, inputs, dtype=dtype) < 1e-5, sizes


def test_a_closed_block_goes_with_its_layers_and_an_open_one_becomes_a_factor():
    gated = _gated(digits.model().eval(), (torch.randn(4, 1, 8, 8),))
    assert len(block_gates(gated)) == 2  # block1 and block2: the stem and the head are not residual
    _close(gated, [0])
    result = archc.compact(gated.eval())
    names = {n for n, _ in result.named_modules()}
    assert not any(n.startswith("block1") for n in names) and "block2.conv1" in names
    _exact_at_every_shape(gated, result)
    assert sum(p.numel() for p in result.parameters()) < sum(p.numel() for p in gated.parameters()) - 40000


def test_a_projection_shortcut_is_not_a_residual_branch():
    class Down(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.proj = nn.Linear(8, 8), nn.Linear(8, 8)

        def forward(self, x):
            return torch.relu(self.a(x)) + self.proj(x)  # both sides computed from x

    gm = archc.trace(Down(), (torch.randn(2, 8),))
    assert residual_branches(gm) == []


def test_transformer_blocks_lose_attention_and_mlp_branches_exactly():
    pytest.importorskip("transformers")
    from real_models import transformers_model

    model, kwargs = transformers_model("llama")
    gated = _gated(model, kwargs=kwargs)
    assert len(block_gates(gated)) == 2 * model.config.num_hidden_layers  # attention and MLP per layer
    _close(gated, [0, 3])  # layer 0's attention, layer 1's MLP
    small = archc.compact(gated)
    names = {n for n, _ in small.named_modules()}
    assert not any("layers.0.self_attn" in n for n in names) and not any("layers.1.mlp" in n for n in names)
    assert any("layers.0.mlp" in n for n in names) and any("layers.1.self_attn" in n for n in names)
    # in float32, as the model runs: Llama casts its stream to float32 by name (`.to(torch.float32)`),
    # which the removed add used to promote back when the check runs everything in float64
    _exact_at_every_shape(gated, small, dtype=torch.float32)


def test_a_depth_search_closes_a_branch_and_compact_removes_it(tmp_path):
    class Deep(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(8, 32)
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32)) for _ in range(4))
            self.out = nn.Linear(32, 3)

        def forward(self, x):
            h = torch.relu(self.inp(x))
            for block in self.blocks:
                h = h + block(h)
            return self.out(h)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] > 0).long()
    data = torch.utils.data.TensorDataset(x, y)
    torch.manual_seed(0)
    result = archc.search(Deep, data, data, lam=0.0, depth_lam=0.5, epochs=3, lr=1e-2, arch_lr=0.1, batch_size=32,
                          progress=False, out=str(tmp_path / "run"))
    assert result.history[-1]["blocks_open"] < 4
    small = archc.compact(result.model)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in Deep().parameters())
