"""Transformers pruned through their residual stream, MLP and head dims: with 30% of every
gate's channels closed, real models (task heads included) keep at most 0.55 of their
parameters and compact exactly at three input shapes."""
import pytest
import torch
from real_models import timm_model, transformers_model
from test_real_models import _compact_and_check

import archc
from archc.live_norms import LIVE_NORMS
from archc.model_io import positional_inputs

pytest.importorskip("timm")
pytest.importorskip("transformers")


@pytest.mark.parametrize("kind", ["bert_classifier", "gpt2", "llama", "qwen2", "vit", "swin"])
def test_transformers_models_keep_at_most_055_of_their_parameters(kind, tmp_path):
    model, kwargs = transformers_model(kind)
    gated, small = _compact_and_check(model, kwargs=kwargs, max_ratio=0.55)
    assert any(isinstance(m, LIVE_NORMS) for m in gated.modules()), "norms over the stream are live"
    assert not any(isinstance(m, LIVE_NORMS) for m in small.modules()), "the compact model has plain norms"
    # onnxruntime agrees with the gated model at two batch sizes (export_onnx raises otherwise)
    inputs = positional_inputs(gated, kwargs)
    assert archc.export_onnx(small, inputs, tmp_path / "model.onnx", reference=gated).max_rel_err < 1e-4


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_timm_vision_transformers_keep_at_most_055_of_their_parameters(name, tmp_path):
    model = timm_model(name, img_size=32, patch_size=8)
    x = torch.randn(2, 3, 32, 32)
    gated, small = _compact_and_check(model, (x,), max_ratio=0.55)
    assert archc.export_onnx(small, (x,), tmp_path / "model.onnx", reference=gated).max_rel_err < 1e-4


def test_beit_qkv_bias_made_in_forward_is_pruned_with_its_pieces():
    """BEiT calls ``F.linear(x, qkv.weight, cat((q_bias, k_bias, v_bias)))`` with ``k_bias`` a
    zero buffer: the Linear is raised without its bias and the bias is added after it, so the
    stream, heads and MLP prune (it kept 0.81 of its parameters while this linear blocked them)."""
    model = timm_model("beit_base_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)
    gated, small = _compact_and_check(model, (torch.randn(2, 3, 32, 32),), max_ratio=0.55)
    qkv = small.get_submodule("blocks.0.attn.qkv")
    assert isinstance(qkv, torch.nn.Linear) and qkv.bias is None
    assert small.get_buffer("blocks.0.attn.k_bias").shape[0] < 32, "the zero buffer shrank with its heads"


def test_metaformer_groupnorm_without_bias_is_live():
    """timm's ``GroupNorm1NoBias`` (PoolFormerV2) calls ``F.group_norm`` with a weight and no bias."""
    import timm.models.metaformer as metaformer

    torch.manual_seed(0)
    model = metaformer.MetaFormer(depths=(1, 1, 1, 1), dims=(16, 16, 32, 32), norm_layers=metaformer.GroupNorm1NoBias,
                                  use_mlp_head=False, num_classes=10).eval()
    gated, small = _compact_and_check(model, (torch.randn(2, 3, 32, 32),), max_ratio=0.6)
    assert any(isinstance(m, LIVE_NORMS) for m in gated.modules())
    norms = [m for m in small.modules() if type(m) is torch.nn.GroupNorm]
    assert norms and all(m.bias is None for m in norms)


def test_gemma_norm_with_one_plus_weight_is_live_and_the_lm_keeps_at_most_055():
    """Gemma's RMSNorm, ``x * rsqrt(mean(x**2) + eps) * (1 + weight)`` in float32, is not the
    raised pattern (the weight is computed): its mean over the stream becomes a live reduction.
    Gemma casts to float32 itself, so it is compared in float32."""
    from conftest import kill_channels, n_params

    from archc.capture.inputs import random_inputs, shape_variants
    from archc.live_norms import LiveReduction
    from archc.verify import max_relative_error

    model, kwargs = transformers_model("gemma")
    gated = archc.passes.insert_filters(archc.trace(model, kwargs=kwargs))
    assert sum(isinstance(m, LiveReduction) for m in gated.modules()) == 5  # 2 per layer + final
    kill_channels(gated, 0.3, seed=0)
    small = archc.compact(gated)
    for sizes in shape_variants(gated):
        assert max_relative_error(gated, small, random_inputs(gated, seed=5, sizes=sizes)) < 1e-5
    assert n_params(small) < 0.55 * n_params(model)


def test_mixture_of_experts_prunes_every_experts_hidden_width():
    """Mixtral's experts are 3-d parameters multiplied by transformers' own grouped matmul op:
    their hidden width prunes (one channel index across all experts), the experts stay.
    The model casts to its weights' dtype itself, so it is compared in float32."""
    from conftest import kill_channels, n_params

    from archc.capture.inputs import random_inputs, shape_variants
    from archc.verify import max_relative_error

    model, kwargs = transformers_model("mixtral")
    gated = archc.passes.insert_filters(archc.trace(model, kwargs=kwargs))
    kill_channels(gated, 0.3, seed=0)
    small = archc.compact(gated)
    for sizes in shape_variants(gated):
        assert max_relative_error(gated, small, random_inputs(gated, seed=5, sizes=sizes)) < 1e-5
    assert n_params(small) < 0.55 * n_params(model)  # the residual stream too (0.97 before)
    for layer in range(2):
        experts = f"model.layers.{layer}.mlp.experts"
        gate_up, down = (small.get_parameter(f"{experts}.{p}") for p in ("gate_up_proj", "down_proj"))
        assert gate_up.shape[0] == down.shape[0] == 4  # every expert kept
        assert gate_up.shape[1] < 2 * 64 and down.shape[2] == gate_up.shape[1] // 2
