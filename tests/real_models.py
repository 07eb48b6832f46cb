"""Real models from timm and transformers, built small (no weights are downloaded).

torchvision's compiled ops do not load on the CPU torch of these machines; the shim in
``../shared/tools/tvshim.py`` declares them, and must be imported before torchvision, timm or
transformers (which imports torchvision when it is installed).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

_SHIM = Path(__file__).resolve().parents[2] / "shared" / "tools"
if (_SHIM / "tvshim.py").exists() and "tvshim" not in sys.modules:
    sys.path.insert(0, str(_SHIM))
    import tvshim  # noqa: F401,E402


def timm_model(name: str, **kwargs) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             vocab_size=100, max_position_embeddings=64)


def transformers_model(kind: str) -> tuple[torch.nn.Module, dict]:
    """A small transformers model of ``kind`` and the keyword inputs a user would pass."""
    import transformers as T

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    if kind == "bert":
        return T.BertModel(T.BertConfig(**_TINY)).eval(), {"input_ids": ids, "attention_mask": mask}
    if kind == "gpt2":
        cfg = T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, n_positions=64,
                           bos_token_id=0, eos_token_id=0)
        return T.GPT2LMHeadModel(cfg).eval(), {"input_ids": ids, "attention_mask": mask}
    if kind == "llama":
        cfg = T.LlamaConfig(**_TINY, num_key_value_heads=2)
        return T.LlamaForCausalLM(cfg).eval(), {"input_ids": ids, "attention_mask": mask}
    if kind == "t5":
        cfg = T.T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=100)
        return T.T5Model(cfg).eval(), {"input_ids": ids, "attention_mask": mask,
                                       "decoder_input_ids": torch.randint(0, 100, (2, 5))}
    if kind == "bert_classifier":
        cfg = T.BertConfig(**_TINY, num_labels=3)
        return T.BertForSequenceClassification(cfg).eval(), {"input_ids": ids, "attention_mask": mask}
    if kind == "qwen2":
        cfg = T.Qwen2Config(**_TINY, num_key_value_heads=2)
        return T.Qwen2ForCausalLM(cfg).eval(), {"input_ids": ids, "attention_mask": mask}
    if kind == "gemma":  # RMSNorm by hand with (1 + weight), computed in float32
        cfg = T.GemmaConfig(**_TINY, num_key_value_heads=2, head_dim=8)
        return T.GemmaForCausalLM(cfg).eval(), {"input_ids": ids, "attention_mask": mask}
    if kind == "mixtral":  # experts through transformers' grouped_mm_fallback op
        cfg = T.MixtralConfig(**_TINY, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)
        return T.MixtralForCausalLM(cfg).eval(), {"input_ids": ids, "attention_mask": mask}
    if kind == "vit":
        cfg = T.ViTConfig(image_size=32, patch_size=8, num_labels=10, **_VISION)
        return T.ViTForImageClassification(cfg).eval(), {"pixel_values": torch.randn(2, 3, 32, 32)}
    if kind == "swin":
        cfg = T.SwinConfig(image_size=32, patch_size=2, window_size=4, embed_dim=16, depths=[1, 1],
                           num_heads=[2, 4], num_labels=10)
        return T.SwinForImageClassification(cfg).eval(), {"pixel_values": torch.randn(2, 3, 32, 32)}
    raise KeyError(kind)


_VISION = {k: v for k, v in _TINY.items() if k not in ("vocab_size", "max_position_embeddings")}
