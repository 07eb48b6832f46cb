"""Whole attention heads: one gate entry per head covers its q, k, v rows and the output
projection's columns; a closed head leaves the compact model, which then computes with fewer
heads in that layer; with grouped-query attention a key/value head takes its query heads."""
import pytest
import torch
from conftest import n_params
from real_models import transformers_model
from zoo import ZOO

import archc
from archc.capture.inputs import random_inputs, shape_variants
from archc.filters import gates_by_space
from archc.verify import max_relative_error

pytest.importorskip("transformers")


def _gate_of(gated, layer: str):
    """The gate whose site follows ``layer``'s output."""
    for node in gated.graph.nodes:
        if node.op == "call_module" and node.args and getattr(node.args[0], "target", None) == layer:
            return gated.get_submodule(node.target)
    raise KeyError(layer)


def _exact_at_every_shape(gated, small) -> None:
    for sizes in shape_variants(gated):
        inputs = random_inputs(gated, seed=2, sizes=sizes)
        assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-5, sizes


def test_closing_one_head_of_one_layer_removes_it_from_that_layer_only():
    model, inputs = ZOO["vit"]()
    attn = model.blocks[0].attn
    head_dim = attn.qkv.out_features // 3 // attn.num_heads
    gated = archc.passes.insert_filters(archc.trace(model, inputs))
    heads = _gate_of(gated, "blocks.0.attn.qkv")  # the gate on the values, folded into qkv's rows
    assert heads.size == attn.num_heads
    with torch.no_grad():
        heads.theta[1] = -1.0
    small = archc.compact(gated)
    assert small.get_submodule("blocks.0.attn.qkv").out_features == 3 * (attn.num_heads - 1) * head_dim
    assert small.get_submodule("blocks.0.attn.proj").in_features == (attn.num_heads - 1) * head_dim
    assert small.get_submodule("blocks.1.attn.qkv").out_features == attn.qkv.out_features  # untouched
    _exact_at_every_shape(gated, small)


def test_removing_a_key_value_head_removes_its_query_heads():
    model, kwargs = transformers_model("llama")  # 4 query heads sharing 2 key/value heads
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    gm = archc.trace(model, (), kwargs)
    (group,) = [g for g in archc.channel_groups(gm) if ("model_layers_0_self_attn_k_proj", 2) in g.producers]
    assert group.size == cfg.num_key_value_heads  # one channel per key/value head and its query heads
    assert {("model_layers_0_self_attn_q_proj", 2), ("model_layers_0_self_attn_v_proj", 2)} <= set(group.producers)
    gated = archc.passes.insert_filters(gm)
    kv_heads = _gate_of(gated, "model.layers.0.self_attn.v_proj")  # the values' gate: a zero head stays zero
    assert kv_heads.size == cfg.num_key_value_heads
    with torch.no_grad():
        kv_heads.theta[0] = -1.0
    small = archc.compact(gated)
    attn = small.get_submodule("model.layers.0.self_attn")
    per_group = cfg.num_attention_heads // cfg.num_key_value_heads
    assert attn.k_proj.out_features == attn.v_proj.out_features == (cfg.num_key_value_heads - 1) * head_dim
    assert attn.q_proj.out_features == (cfg.num_attention_heads - per_group) * head_dim
    assert attn.o_proj.in_features == attn.q_proj.out_features
    _exact_at_every_shape(gated, small)
    assert n_params(small) < n_params(model)


@pytest.mark.parametrize("query_heads", [4, 8])  # 2 or 4 query heads per key/value head
def test_with_grouped_queries_query_a_query_head_goes_while_its_key_value_head_stays(query_heads):
    """``grouped_queries="query"``: the gate entry ``r`` covers query head ``r`` of every
    key/value group, so the groups stay equal (``repeat_kv`` repeats one fewer time) and every
    key/value head is kept."""
    import transformers as T

    torch.manual_seed(0)
    cfg = T.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=query_heads, num_key_value_heads=2,
                        intermediate_size=64, vocab_size=100, max_position_embeddings=64)
    model = T.LlamaForCausalLM(cfg).eval()
    kwargs = {"input_ids": torch.randint(0, 100, (2, 9)), "attention_mask": torch.ones(2, 9, dtype=torch.long)}
    gated = archc.passes.insert_filters(archc.trace(model, (), kwargs), grouped_queries="query")
    head_dim, per_group = 64 // query_heads, query_heads // 2
    slots = [f for f in archc.filters(gated) if f.size == per_group]
    assert len(slots) == cfg.num_hidden_layers
    with torch.no_grad():
        slots[0].theta[1] = -1.0
    small = archc.compact(gated)
    closed, other = (small.get_submodule(f"model.layers.{i}.self_attn") for i in (0, 1))
    if closed.q_proj.out_features == query_heads * head_dim:  # the first gate found was layer 1's
        closed, other = other, closed
    assert closed.q_proj.out_features == closed.o_proj.in_features == (query_heads - 2) * head_dim
    assert closed.k_proj.out_features == closed.v_proj.out_features == 2 * head_dim  # every key/value head
    assert other.q_proj.out_features == query_heads * head_dim
    _exact_at_every_shape(gated, small)


def test_grouped_queries_takes_kv_or_query_only():
    model, kwargs = transformers_model("llama")
    with pytest.raises(archc.ConfigError, match="grouped_queries='query'"):
        archc.passes.insert_filters(archc.trace(model, (), kwargs), grouped_queries="heads")


@pytest.mark.parametrize("kind", ["bert_classifier", "t5", "swin"])
def test_heads_close_exactly_with_per_head_position_biases_and_masks(kind):
    """BERT's padding mask, T5's per-head relative position bias, Swin's relative position
    bias table: each broadcast over the heads and sliced with them."""
    model, kwargs = transformers_model(kind)
    gated = archc.passes.insert_filters(archc.trace(model, (), kwargs))
    closed = 0
    with torch.no_grad():
        for gate in archc.filters(gated):
            if 1 < gate.size <= 8:  # the head gates of these small configs
                gate.theta[0] = -1.0
                closed += 1
    assert closed
    _exact_at_every_shape(gated, archc.compact(gated))


def test_the_head_dim_option_pairs_rotary_channels_and_compacts_exactly():
    model, kwargs = transformers_model("llama")
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    gated = archc.passes.insert_filters(archc.trace(model, (), kwargs), split_channels="largest")
    (group,) = [g for g in archc.channel_groups(gated) if ("model_layers_0_self_attn_q_proj", 2) in g.producers]
    assert group.size == head_dim // 2  # channel i and i + d/2 of every head: one rotary pair
    gate = next(g for key, g in gates_by_space(gated).items() if key in group.spaces)
    with torch.no_grad():
        gate.theta[0] = -1.0
    small = archc.compact(gated)
    attn = small.get_submodule("model.layers.0.self_attn")
    assert attn.q_proj.out_features == model.config.num_attention_heads * (head_dim - 2)
    assert attn.k_proj.out_features == model.config.num_key_value_heads * (head_dim - 2)
    _exact_at_every_shape(gated, small)
