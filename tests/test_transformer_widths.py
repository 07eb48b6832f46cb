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
def test_timm_vision_transformers_keep_at_most_055_of_their_parameters(name):
    model = timm_model(name, img_size=32, patch_size=8)
    _compact_and_check(model, (torch.randn(2, 3, 32, 32),), max_ratio=0.55)
