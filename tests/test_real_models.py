"""Real timm and transformers models, called as their users call them: captured, gated with
30% of every gate closed, compacted, and exact at three input shapes (batch and sequence
length varied), tied weights kept tied."""
import pytest
import torch
from conftest import kill_channels, n_params
from real_models import timm_model, transformers_model

import archc
from archc.capture.inputs import random_inputs, shape_variants
from archc.verify import max_relative_error

pytest.importorskip("timm")
pytest.importorskip("transformers")


def _compact_and_check(model, args=(), kwargs=None, max_ratio=0.95):
    gated = archc.passes.insert_filters(archc.trace(model, args, kwargs))
    assert kill_channels(gated, 0.3, seed=0) > 0, "something is prunable"
    small = archc.compact(gated)
    variants = shape_variants(gated)
    assert len(variants) == 3
    for sizes in variants:
        inputs = random_inputs(gated, seed=5, sizes=sizes)
        assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-5, sizes
    assert n_params(small) < max_ratio * n_params(model)
    return gated, small


@pytest.mark.parametrize("name, size, options", [
    ("mobilenetv2_050", 64, {}),             # BatchNormAct2d: F.batch_norm inside a fused layer
    ("resnet18", 64, {}),
    ("vit_tiny_patch16_224", 32, {"img_size": 32, "patch_size": 8}),  # forward(x, attn_mask=None)
])
def test_timm_models_compact_exactly_at_three_shapes(name, size, options):
    model = timm_model(name, **options)
    _compact_and_check(model, (torch.randn(2, 3, size, size),), max_ratio=0.8)


@pytest.mark.parametrize("kind", ["bert", "llama", "t5"])
def test_transformers_models_called_with_keywords_compact_exactly(kind):
    model, kwargs = transformers_model(kind)
    gated, small = _compact_and_check(model, kwargs=kwargs)
    names = [spec["name"] for spec in gated.meta["archc.inputs"]]
    assert "input_ids" in names and "attention_mask" in names
    out = small(**dict(zip(names, random_inputs(gated, seed=1))))
    assert isinstance(out, dict) and "last_hidden_state" in out or "logits" in out


def test_a_tied_embedding_and_output_layer_are_pruned_together_and_stay_one_parameter():
    model, kwargs = transformers_model("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    gated, small = _compact_and_check(model, kwargs=kwargs)
    wte, lm_head = small.get_submodule("transformer.wte"), small.get_submodule("lm_head")
    assert lm_head.weight is wte.weight
    # the tie couples the embedding's width with the output layer's inputs: the stream is pruned
    assert lm_head.in_features == wte.embedding_dim < model.transformer.wte.embedding_dim
    assert n_params(small) < 0.55 * n_params(model)  # counted once: an untied copy would add vocab x width


def test_search_and_compact_a_transformers_model_file_with_keyword_inputs(tmp_path):
    import json

    from typer.testing import CliRunner

    from archc.cli.main import app

    model_py = __import__("pathlib").Path(__file__).resolve().parents[1] / "examples" / "tiny_bert.py"
    runner = CliRunner()
    res = runner.invoke(app, ["search", str(model_py), "--epochs", "1", "--lam", "0.05", "--lr", "3e-3",
                              "--out", str(tmp_path / "run"), "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["compact", str(tmp_path / "run" / "checkpoint.pt"), "-o", str(tmp_path / "small")])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "small" / "report.json").read_text())
    assert report["params_after"] <= report["params_before"]
    assert (tmp_path / "small" / "model.onnx").exists()


def test_shrinking_a_tied_model_during_training_keeps_the_tie():
    from archc.compact import shrink_live

    model, kwargs = transformers_model("gpt2")
    gated = archc.passes.insert_filters(archc.trace(model, (), kwargs))
    kill_channels(gated, 0.2, seed=0)
    shrunk = shrink_live(gated).gm
    lm_head, wte = shrunk.get_submodule("lm_head"), shrunk.get_submodule("transformer.wte")
    assert lm_head.weight is wte.weight and wte.embedding_dim < model.transformer.wte.embedding_dim
