"""Channel-dependency analysis: which channels go together, and what is never pruned."""
import networkx as nx
import torch
import torch.nn.functional as F
from torch import nn
from zoo import ZOO

import archc


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.branch(x)))


def test_residual_add_couples_both_branches_into_one_group():
    gm = archc.trace(Residual(), (torch.randn(2, 3, 8, 8),))
    groups = archc.channel_groups(gm)
    (g,) = [g for g in groups if "stem" in g.layers()]
    assert "branch" in g.layers() and "add" in g.layers()
    assert g.size == 8 and g.prunable
    assert sorted(g.producers) == [("branch", 1), ("stem", 1)]


class CatSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 5, 1), nn.Conv2d(3, 7, 1)
        self.mix = nn.Conv2d(12, 6, 1)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        left, right = torch.split(self.mix(y), [2, 4], dim=1)
        return left.sum() + right.mean()


def test_concat_maps_each_input_to_its_slice_and_split_to_its_piece():
    gm = archc.trace(CatSplit(), (torch.randn(2, 3, 4, 4),))
    an = archc.analyse(gm)
    cat_labels = an.labels_of(("cat", 1))
    assert list(cat_labels[:5]) == list(an.labels_of(("a", 1)))
    assert list(cat_labels[5:]) == list(an.labels_of(("b", 1)))
    mix = an.labels_of(("mix", 1))
    assert list(mix[:2]) == list(an.labels_of(("getitem", 1)))
    assert list(mix[2:]) == list(an.labels_of(("getitem_1", 1)))


def test_grouped_conv_keeps_whole_groups_together():
    model, inputs = ZOO["resnext"]()
    gm = archc.trace(model, inputs)
    conv = next(n for n in gm.graph.nodes if n.op == "call_module"
                and getattr(gm.get_submodule(n.target), "groups", 1) > 1)
    m = gm.get_submodule(conv.target)
    (g,) = [g for g in archc.channel_groups(gm) if (conv.name, 1) in g.producers]
    assert g.size == m.groups  # one channel of the group = one conv group
    assert g.index_in((conv.name, 1)).tolist() == [i // (m.out_channels // m.groups) for i in range(m.out_channels)]


def test_attention_prunes_whole_heads_or_the_head_dim_when_asked():
    model, inputs = ZOO["vit"]()
    gm = archc.trace(model, inputs)
    attn = model.blocks[0].attn
    head_dim = attn.qkv.out_features // 3 // attn.num_heads

    def qkv_group():
        (g,) = [g for g in archc.channel_groups(gm) if ("blocks_0_attn_qkv", 2) in g.producers]
        return g

    assert qkv_group().size == attn.num_heads and qkv_group().prunable  # one channel per head
    gm.meta["archc.split_channels"] = "largest"
    assert qkv_group().size == head_dim and qkv_group().prunable  # head dim, uniformly across heads


def test_layernorm_residual_stream_is_prunable_and_a_multi_dim_norm_blocks_with_a_reason():
    model, inputs = ZOO["convnext"]()
    groups = archc.channel_groups(archc.trace(model, inputs))
    stream = [g for g in groups if ("norm", 1) in g.spaces]  # the final LayerNorm's channels
    assert stream and stream[0].prunable

    class OverTwoDims(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm, self.head = nn.Linear(4, 6), nn.LayerNorm([3, 6]), nn.Linear(6, 2)

        def forward(self, x):
            return self.head(self.norm(self.fc(x)))

    groups = archc.channel_groups(archc.trace(OverTwoDims(), (torch.randn(2, 3, 4),)))
    (fc,) = [g for g in groups if ("fc", 2) in g.producers]
    assert not fc.prunable and "LayerNorm statistics span this dim" in fc.reason


def test_model_inputs_and_outputs_are_never_pruned():
    model, inputs = ZOO["resnet"]()
    groups = archc.channel_groups(archc.trace(model, inputs))
    fc = [g for g in groups if "fc" in g.layers() and ("fc", 1) in g.spaces]
    assert fc and not fc[0].prunable and "output" in fc[0].reason


def test_op_without_rule_makes_its_channels_unprunable_and_is_reported():
    class Sorts(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(6, 2, 1)

        def forward(self, x):
            return self.b(torch.cumsum(self.a(x), dim=1))  # mixes channels: no rule

    gm = archc.trace(Sorts(), (torch.randn(2, 3, 4, 4),))
    assert "torch.ops.aten.cumsum" in gm.code  # no lowering: captured as the ATen call itself
    an = archc.analyse(gm)
    assert "cumsum" in an.unknown_ops
    (g,) = [g for g in archc.channel_groups(an) if ("a", 1) in g.producers]
    assert not g.prunable and "cumsum" in g.reason


def test_dependency_graph_is_a_networkx_graph_over_channel_spaces():
    gm = archc.trace(Residual(), (torch.randn(2, 3, 8, 8),))
    g = archc.dependency_graph(gm)
    assert isinstance(g, nx.Graph)
    assert g.nodes["stem", 1]["size"] == 8 and g.nodes["stem", 1]["producer"]
    assert g.has_edge(("stem", 1), ("add", 1)) and g.edges[("stem", 1), ("add", 1)]["flow"]
    assert g.nodes["x", 1]["blocked"] == 3  # model input


def test_flatten_into_linear_couples_each_channel_with_its_block_of_features():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4 * 2 * 2, 5)

        def forward(self, x):
            return self.fc(torch.flatten(F.relu(self.conv(x)), 1))

    gm = archc.trace(Head(), (torch.randn(2, 3, 4, 4),))
    an = archc.analyse(gm)
    conv, flat = an.labels_of(("conv", 1)), an.labels_of(("flatten", 1))
    assert list(flat) == [conv[c] for c in range(4) for _ in range(4)]


def test_flops_count_convs_linears_and_functional_convs():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 5))
    gm = archc.trace(model, (torch.randn(2, 3, 4, 4),))
    assert archc.flops.count(gm) == 2 * (4 * 2 * 2) * (3 * 9) + 2 * 5 * 16

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 3, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.w)

    assert archc.flops.count(archc.trace(Functional(), (torch.randn(2, 3, 4, 4),))) == 2 * (4 * 2 * 2) * (3 * 9)


def test_a_channel_divided_by_its_own_computed_value_is_not_prunable():
    """``a / a.abs()``: a closed channel would be 0 / 0 in the gated model."""

    class SelfNormalised(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):
            a = self.fc(x)
            return self.head(a / (a.abs() + 1e-3))

    groups = archc.channel_groups(archc.trace(SelfNormalised(), (torch.randn(2, 4),)))
    (fc,) = [g for g in groups if ("fc", 1) in g.producers]
    assert not fc.prunable and "divides by this dim's values" in fc.reason
