"""The models ``benchmarks/coverage.py`` runs: which ones, and how each is built and called.

Three libraries, every model built from scratch (no weights, no downloads):

* **timm** -- one model per architecture *family*. A family is (the timm module that registers
  the model, the name's stem): ``resnet/resnet`` holds ``resnet18``, ``resnet50d`` ...;
  ``efficientnet/tf_efficientnet`` (TF "same" padding) is apart from
  ``efficientnet/efficientnet``. The stem is the name's first ``_``-token without its trailing
  size digits (``resnet50d`` -> ``resnet``, ``dla46x_c`` -> ``dla``) but with a version kept
  (``mobilenetv2``, ``convnextv2``), after prefixes that name a variant (``tf_``, ``legacy_``,
  ``eca_``, ``nf_`` ...). ``test_*`` models are left out (tiny copies of other families). Each
  family is represented by its model with the fewest parameters (counted on the ``meta``
  device with ``num_classes=10``). Where that is over ``MAX_PARAMS`` the family's model is built
  shallower (``depth=2`` for ViT-likes, ``layers``/``depths`` of 1 per stage for ResNet-likes)
  when timm accepts it; otherwise the row is "skipped (size)".
* **torchvision** -- every classification and segmentation model, ``weights=None``;
  detection models need torchvision's compiled ops (nms, roi_align), which do not load on this
  CPU torch build, so they are listed as skipped.
* **transformers** -- one tiny config per model type (hidden size 32, 2 layers, 4 heads ...),
  ``AutoModel.from_config``, called as a user calls it (``input_ids`` + ``attention_mask``,
  ``pixel_values``, ``input_values``, ``input_features`` + ``decoder_input_ids`` ...).

Image inputs use batch 3: archc verifies at the example batch, a larger and a smaller one
(``shape_variants``: 3, 6, 2), so three distinct shapes are checked (with batch 2 the smaller
one would coincide with the example). Resolution: the smallest of 64/96/128/160/224/native
at which the model builds and runs (ViT-likes get ``img_size=``/``image_size=`` to match).

Regenerate the timm selection (about 5 minutes: it builds every timm model on ``meta``):
    python benchmarks/coverage_models.py --select-timm
"""
from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import torch

TOOLS = Path(__file__).resolve().parents[2] / "shared" / "tools"
MAX_PARAMS = 60_000_000
NUM_CLASSES = 10
BATCH = 3
IMAGE_SIZES = (64, 96, 128, 160, 224)


def vision_imports() -> None:
    """Make torchvision's pure-Python models importable when its compiled ops cannot load.

    Must run before torchvision, timm or transformers is imported.
    """
    if TOOLS.is_dir() and str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    try:
        import tvshim  # noqa: F401
    except ImportError:
        pass


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------- timm

_PREFIXES = {"tf", "gluon", "legacy", "ens", "adv", "dm", "nf", "eca", "gc", "ese", "bat", "wide"}


def timm_family(name: str, module: str) -> str:
    """``module/stem`` of a timm model name (see the module docstring)."""
    toks = name.split("_")
    pre = []
    while len(toks) > 1 and toks[0] in _PREFIXES:
        pre.append(toks.pop(0))
    tok = toks[0]
    stem = tok if re.search(r"v\d+$", tok) else (re.sub(r"\d+[a-z]{0,2}\d*$", "", tok) or tok)
    return f"{module}/{'_'.join(pre + [stem])}"


_SHRINK = ({"depth": 2}, {"layers": (1, 1, 1, 1)}, {"depths": (1, 1, 1, 1)})


def _meta_params(name: str, **kwargs: Any) -> Optional[int]:
    import timm

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            return n_params(timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kwargs))
    except Exception:  # noqa: BLE001 - this size override is not accepted
        return None


def select_timm(progress: bool = False) -> list[dict]:
    """One model per timm family: the smallest by parameters (shrunk or skipped past MAX_PARAMS)."""
    import timm
    from timm.models import _registry

    families: dict[str, list[str]] = defaultdict(list)
    for module in _registry.list_modules():
        for name in timm.list_models(module=module):
            if not name.startswith("test_"):
                families[timm_family(name, module)].append(name)
    rows = []
    for i, (family, names) in enumerate(sorted(families.items())):
        counts = {n: _meta_params(n) for n in names}
        best = min((n for n in names if counts[n] is not None), key=lambda n: (counts[n], n))
        row = {"family": family, "model": best, "params": counts[best], "kwargs": {}, "members": len(names)}
        if counts[best] > MAX_PARAMS:
            for kw in _SHRINK:
                p = _meta_params(best, **kw)
                if p is not None and p <= MAX_PARAMS:
                    row.update(kwargs=kw, params=p, full_params=counts[best])
                    break
            else:
                row["skip"] = f"skipped (size): {counts[best] / 1e6:.0f}M parameters"
        rows.append(row)
        if progress:
            print(f"{i + 1}/{len(families)} {family}: {row['model']} {row['params'] / 1e6:.1f}M "
                  f"{row['kwargs'] or ''}", file=sys.stderr, flush=True)
    return rows


# Generated by `python benchmarks/coverage_models.py --select-timm` (timm version below).
TIMM_VERSION = ""
TIMM_SELECTION: list[dict] = []  # the generated table is at the end of this file


def timm_cases() -> list[dict]:
    import timm

    rows = TIMM_SELECTION
    if timm.__version__ != TIMM_VERSION or not rows:
        print(f"timm {timm.__version__} != {TIMM_VERSION}: selecting families again (~5 min)",
              file=sys.stderr, flush=True)
        rows = select_timm()
    return [{"library": "timm", "id": f"timm:{r['model']}", **r} for r in rows]


# -------------------------------------------------------------------------------- torchvision

def torchvision_cases() -> list[dict]:
    vision_imports()
    from torchvision import models as M

    cases = []
    for kind, module in (("classification", M), ("segmentation", M.segmentation)):
        for name in M.list_models(module=module):
            case = {"library": "torchvision", "id": f"torchvision:{name}", "model": name,
                    "family": f"{kind}/{re.sub(r'[0-9_].*$', '', name) or name}", "kind": kind}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    with torch.device("meta"):
                        case["params"] = n_params(_tv_build(name, kind))
                except NotImplementedError:  # builders that compute widths with tensors (regnet)
                    case["params"] = n_params(_tv_build(name, kind))
            if case["params"] > MAX_PARAMS:
                case["skip"] = f"skipped (size): {case['params'] / 1e6:.0f}M parameters"
            cases.append(case)
    for name in M.list_models(module=M.detection):
        cases.append({"library": "torchvision", "id": f"torchvision:{name}", "model": name,
                      "family": f"detection/{name.split('_')[0]}", "kind": "detection",
                      "skip": "skipped: detection models need torchvision's compiled ops "
                              "(nms, roi_align), which do not load on this CPU torch build"})
    return cases


def _tv_build(name: str, kind: str, **extra: Any) -> torch.nn.Module:
    from torchvision import models as M

    if kind == "segmentation":
        return M.get_model(name, weights=None, weights_backbone=None, num_classes=NUM_CLASSES, **extra)
    return M.get_model(name, weights=None, num_classes=NUM_CLASSES, **extra)


# ------------------------------------------------------------------------------- transformers

def _text_inputs(seq: int = 8) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(3, 100, (2, seq), generator=gen),
            "attention_mask": torch.ones(2, seq, dtype=torch.long)}


def _pixels(size: int = 32, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))


_TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             vocab_size=100, max_position_embeddings=64)
_DECODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, vocab_size=100, max_position_embeddings=64)
_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            image_size=32, patch_size=8)

# model type -> (config class name, config kwargs, how it is called)
TRANSFORMERS: dict[str, tuple[str, dict, str]] = {
    "bert": ("BertConfig", _TEXT, "text"),
    "distilbert": ("DistilBertConfig", dict(dim=32, n_layers=2, n_heads=4, hidden_dim=64, vocab_size=100,
                                            max_position_embeddings=64), "text"),
    "roberta": ("RobertaConfig", {**_TEXT, "pad_token_id": 1, "max_position_embeddings": 66}, "text"),
    "xlm-roberta": ("XLMRobertaConfig", {**_TEXT, "pad_token_id": 1, "max_position_embeddings": 66}, "text"),
    "albert": ("AlbertConfig", {**_TEXT, "embedding_size": 16}, "text"),
    "electra": ("ElectraConfig", {**_TEXT, "embedding_size": 16}, "text"),
    "deberta-v2": ("DebertaV2Config", _TEXT, "text"),
    "mobilebert": ("MobileBertConfig", {**_TEXT, "embedding_size": 16, "intra_bottleneck_size": 16,
                                            "true_hidden_size": 16, "num_feedforward_networks": 2}, "text"),
    "mpnet": ("MPNetConfig", _TEXT, "text"),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=4, n_inner=64, vocab_size=100, n_positions=64),
             "text"),
    "gpt_neo": ("GPTNeoConfig", dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                                     vocab_size=100, max_position_embeddings=64,
                                     attention_types=[[["global", "local"], 1]], window_size=4), "text"),
    "gpt_neox": ("GPTNeoXConfig", _TEXT, "text"),
    "opt": ("OPTConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, ffn_dim=64,
                                 vocab_size=100, max_position_embeddings=64, word_embed_proj_dim=32), "text"),
    "bloom": ("BloomConfig", dict(hidden_size=32, n_layer=2, n_head=4, vocab_size=100), "text"),
    "llama": ("LlamaConfig", _DECODER, "text"),
    "qwen2": ("Qwen2Config", _DECODER, "text"),
    "qwen3": ("Qwen3Config", {**_DECODER, "head_dim": 8}, "text"),
    "mistral": ("MistralConfig", _DECODER, "text"),
    "mixtral": ("MixtralConfig", {**_DECODER, "num_local_experts": 4, "num_experts_per_tok": 2}, "text"),
    "qwen2_moe": ("Qwen2MoeConfig", {**_DECODER, "num_experts": 4, "num_experts_per_tok": 2,
                                     "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32},
                  "text"),
    "phi": ("PhiConfig", {**_DECODER, "partial_rotary_factor": 0.5}, "text"),
    "phi3": ("Phi3Config", {**_DECODER, "pad_token_id": 0}, "text"),
    "gemma": ("GemmaConfig", {**_DECODER, "head_dim": 8}, "text"),
    "gemma2": ("Gemma2Config", {**_DECODER, "head_dim": 8, "sliding_window": 4}, "text"),
    "gemma3_text": ("Gemma3TextConfig", {**_DECODER, "head_dim": 8, "sliding_window": 4}, "text"),
    "falcon": ("FalconConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    vocab_size=100), "text"),
    "olmo": ("OlmoConfig", _DECODER, "text"),
    "stablelm": ("StableLmConfig", _DECODER, "text"),
    "t5": ("T5Config", dict(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, vocab_size=100,
                            decoder_start_token_id=0), "seq2seq"),
    "bart": ("BartConfig", dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                vocab_size=100, max_position_embeddings=64), "seq2seq"),
    "vit": ("ViTConfig", _VIT, "image"),
    "deit": ("DeiTConfig", _VIT, "image"),
    "beit": ("BeitConfig", {**_VIT, "vocab_size": 100}, "image"),
    "dinov2": ("Dinov2Config", {**_VIT, "mlp_ratio": 2}, "image"),
    "swin": ("SwinConfig", dict(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                window_size=4), "image"),
    "convnext": ("ConvNextConfig", dict(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                                        image_size=32), "image"),
    "resnet": ("ResNetConfig", dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                    layer_type="basic"), "image"),
    "regnet": ("RegNetConfig", dict(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                    groups_width=8), "image"),
    "mobilevit": ("MobileViTConfig", dict(image_size=32, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16,
                                          16, 24, 24, 32], num_attention_heads=2), "image"),
    "segformer": ("SegformerConfig", dict(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1],
                                          hidden_sizes=[16, 32], num_attention_heads=[1, 2],
                                          patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2]), "image"),
    "wav2vec2": ("Wav2Vec2Config", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2),
                                        conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
                                        num_conv_pos_embedding_groups=4, vocab_size=100), "audio"),
    "hubert": ("HubertConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=64, conv_dim=(16, 16, 16), conv_stride=(5, 2, 2),
                                    conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16,
                                    num_conv_pos_embedding_groups=4, vocab_size=100), "audio"),
    "whisper": ("WhisperConfig", dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                      decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                                      vocab_size=100, num_mel_bins=16, max_source_positions=30,
                                      max_target_positions=32, decoder_start_token_id=1, pad_token_id=0),
                "whisper"),
    "clip": ("CLIPConfig", dict(text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=64, vocab_size=100,
                                                 max_position_embeddings=32),
                                vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                   intermediate_size=64, image_size=32, patch_size=8),
                                projection_dim=16), "clip"),
    "siglip": ("SiglipConfig", dict(text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                     intermediate_size=64, vocab_size=100,
                                                     max_position_embeddings=32),
                                    vision_config=dict(hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, intermediate_size=64,
                                                       image_size=32, patch_size=8)), "clip"),
}
def transformers_cases() -> list[dict]:
    return [{"library": "transformers", "id": f"transformers:{t}", "model": t, "family": t,
             "config": cfg} for t, (cfg, _, _) in TRANSFORMERS.items()]


def _hf_build(model_type: str) -> tuple[torch.nn.Module, tuple, dict, dict]:
    import transformers

    cfg_name, kw, call = TRANSFORMERS[model_type]
    config = getattr(transformers, cfg_name)(**kw)
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config).eval()
    gen = torch.Generator().manual_seed(0)
    if call == "text":
        kwargs = _text_inputs()
    elif call == "seq2seq":
        kwargs = {**_text_inputs(), "decoder_input_ids": torch.randint(3, 100, (2, 6), generator=gen)}
    elif call == "image":
        kwargs = {"pixel_values": _pixels()}
    elif call == "audio":
        kwargs = {"input_values": torch.randn(2, 1600, generator=gen)}
    elif call == "whisper":
        kwargs = {"input_features": torch.randn(2, 16, 60, generator=gen),
                  "decoder_input_ids": torch.randint(3, 100, (2, 6), generator=gen)}
    elif call == "clip":
        kwargs = {**_text_inputs(), "pixel_values": _pixels()}
    else:
        raise ValueError(call)
    shapes = ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in kwargs.items())
    return model, (), kwargs, {"config": cfg_name, "input": shapes}


# --------------------------------------------------------------------------------- building

def _probe(make: Callable[[int], torch.nn.Module], sizes: list[int], channels: int,
           overrides: list[Callable[[int], dict]]) -> tuple[torch.nn.Module, torch.Tensor, dict]:
    """The first (size, override) at which the model builds and runs on a batch of BATCH images."""
    errors = []
    for size in sizes:
        x = torch.randn(BATCH, channels, size, size, generator=torch.Generator().manual_seed(0))
        for override in overrides:
            extra = override(size)
            try:
                torch.manual_seed(0)
                model = make(**extra).eval()
                with torch.no_grad():
                    model(x)
                return model, x, {"input": [BATCH, channels, size, size], **({"build_kwargs": extra} if extra else {})}
            except Exception as exc:  # noqa: BLE001 - try the next resolution
                errors.append(f"{size} {extra}: {type(exc).__name__}: {str(exc).strip().splitlines()[:1]}")
    raise RuntimeError("no input size works: " + " | ".join(errors[-3:]))


def build(case: dict) -> tuple[torch.nn.Module, tuple, dict, dict]:
    """``(model, args, kwargs, info)`` for a case, the model in eval mode and seeded (same every call)."""
    vision_imports()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = case["library"]
        if lib == "timm":
            import timm

            name, kw = case["model"], case.get("kwargs") or {}
            cfg = timm.models.get_pretrained_cfg(name)
            native = tuple(getattr(cfg, "input_size", None) or (3, 224, 224)) if cfg else (3, 224, 224)
            sizes = [s for s in IMAGE_SIZES if s < native[-1]] + [native[-1]]

            def make(**extra):
                return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES, **kw, **extra)

            model, x, info = _probe(make, sizes, native[0], [lambda s: {}, lambda s: {"img_size": s}])
            return model, (x,), {}, info
        if lib == "torchvision":
            name, kind = case["model"], case["kind"]
            sizes = list(IMAGE_SIZES)

            def make(**extra):
                return _tv_build(name, kind, **extra)

            model, x, info = _probe(make, sizes, 3, [lambda s: {}, lambda s: {"image_size": s},
                                                     lambda s: {"input_size": (s, s)}])
            return model, (x,), {}, info
        if lib == "transformers":
            return _hf_build(case["model"])
    raise ValueError(f"unknown library {lib}")


def classifier_layers(case: dict, model: torch.nn.Module) -> list[torch.nn.Module]:
    """The final classifier(s), which Torch-Pruning is told to leave alone."""
    if case["library"] == "timm":
        head = model.get_classifier()
        heads = list(head) if isinstance(head, (tuple, list)) else [head]
        return [h for h in heads if isinstance(h, torch.nn.Module) and n_params(h)]
    if case["library"] == "torchvision":
        return [m for m in model.modules()
                if (isinstance(m, torch.nn.Linear) and m.out_features == NUM_CLASSES)
                or (isinstance(m, torch.nn.Conv2d) and m.out_channels == NUM_CLASSES)]
    return []  # AutoModel base models have no classifier head


def all_cases(libraries: tuple = ("timm", "torchvision", "transformers")) -> list[dict]:
    cases = []
    if "timm" in libraries:
        cases += timm_cases()
    if "torchvision" in libraries:
        cases += torchvision_cases()
    if "transformers" in libraries:
        cases += transformers_cases()
    return cases


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--select-timm", action="store_true", help="print TIMM_SELECTION for this timm version")
    args = ap.parse_args()
    if args.select_timm:
        vision_imports()
        import pprint

        import timm
        rows = select_timm(progress=True)
        print(f'TIMM_VERSION = "{timm.__version__}"')
        print("TIMM_SELECTION = " + pprint.pformat(rows, width=110, sort_dicts=False))


# ---- generated by `python benchmarks/coverage_models.py --select-timm` (do not edit by hand) ----
# fmt: off
TIMM_VERSION = "1.0.31"
TIMM_SELECTION = [{'family': 'beit/beit',
  'model': 'beit_base_patch16_224',
  'params': 14795434,
  'kwargs': {'depth': 2},
  'members': 5,
  'full_params': 85769674},
 {'family': 'beit/beitv2',
  'model': 'beitv2_base_patch16_224',
  'params': 14795434,
  'kwargs': {'depth': 2},
  'members': 2,
  'full_params': 85769674},
 {'family': 'byoanet/botnet', 'model': 'botnet26t_256', 'params': 10460162, 'kwargs': {}, 'members': 2},
 {'family': 'byoanet/eca_botnext',
  'model': 'eca_botnext26ts_256',
  'params': 8564791,
  'kwargs': {},
  'members': 1},
 {'family': 'byoanet/eca_halonext',
  'model': 'eca_halonext26ts',
  'params': 8728375,
  'kwargs': {},
  'members': 1},
 {'family': 'byoanet/halo2botnet',
  'model': 'halo2botnet50ts_256',
  'params': 20606850,
  'kwargs': {},
  'members': 1},
 {'family': 'byoanet/halonet', 'model': 'halonet_h1', 'params': 7592186, 'kwargs': {}, 'members': 3},
 {'family': 'byoanet/haloregnetz', 'model': 'haloregnetz_b', 'params': 10158442, 'kwargs': {}, 'members': 1},
 {'family': 'byoanet/lambda', 'model': 'lambda_resnet26t', 'params': 8929762, 'kwargs': {}, 'members': 3},
 {'family': 'byoanet/lamhalobotnet',
  'model': 'lamhalobotnet50ts_256',
  'params': 20541314,
  'kwargs': {},
  'members': 1},
 {'family': 'byoanet/sebotnet', 'model': 'sebotnet33ts_256', 'params': 12433794, 'kwargs': {}, 'members': 1},
 {'family': 'byoanet/sehalonet', 'model': 'sehalonet33ts', 'params': 12423522, 'kwargs': {}, 'members': 1},
 {'family': 'byobnet/bat_resnext', 'model': 'bat_resnext26ts', 'params': 8702690, 'kwargs': {}, 'members': 1},
 {'family': 'byobnet/eca_resnet', 'model': 'eca_resnet33ts', 'params': 18408112, 'kwargs': {}, 'members': 1},
 {'family': 'byobnet/eca_resnext', 'model': 'eca_resnext26ts', 'params': 8269478, 'kwargs': {}, 'members': 1},
 {'family': 'byobnet/gcresnet', 'model': 'gcresnet33ts', 'params': 18612508, 'kwargs': {}, 'members': 2},
 {'family': 'byobnet/gcresnext', 'model': 'gcresnext26ts', 'params': 8448090, 'kwargs': {}, 'members': 2},
 {'family': 'byobnet/gernet', 'model': 'gernet_s', 'params': 6271971, 'kwargs': {}, 'members': 3},
 {'family': 'byobnet/mobileone', 'model': 'mobileone_s1', 'params': 3557002, 'kwargs': {}, 'members': 5},
 {'family': 'byobnet/regnetz', 'model': 'regnetz_b16', 'params': 8193850, 'kwargs': {}, 'members': 8},
 {'family': 'byobnet/repvgg', 'model': 'repvgg_a0', 'params': 7840778, 'kwargs': {}, 'members': 11},
 {'family': 'byobnet/resnet', 'model': 'resnet32ts', 'params': 16441986, 'kwargs': {}, 'members': 15},
 {'family': 'byobnet/resnext', 'model': 'resnext26ts', 'params': 8269442, 'kwargs': {}, 'members': 1},
 {'family': 'byobnet/seresnet', 'model': 'seresnet33ts', 'params': 18511010, 'kwargs': {}, 'members': 1},
 {'family': 'byobnet/seresnext', 'model': 'seresnext26ts', 'params': 8359554, 'kwargs': {}, 'members': 1},
 {'family': 'cait/cait', 'model': 'cait_xxs24_224', 'params': 11765194, 'kwargs': {}, 'members': 10},
 {'family': 'coat/coat', 'model': 'coat_tiny', 'params': 5347070, 'kwargs': {}, 'members': 8},
 {'family': 'convit/convit', 'model': 'convit_tiny', 'params': 5519442, 'kwargs': {}, 'members': 3},
 {'family': 'convmixer/convmixer',
  'model': 'convmixer_768_32',
  'params': 20348938,
  'kwargs': {},
  'members': 3},
 {'family': 'convnext/convnext',
  'model': 'convnext_zepto_rms',
  'params': 1901226,
  'kwargs': {},
  'members': 19},
 {'family': 'convnext/convnextv2', 'model': 'convnextv2_atto', 'params': 3390610, 'kwargs': {}, 'members': 9},
 {'family': 'cpubone/cpubone', 'model': 'cpubone_nano', 'params': 4934710, 'kwargs': {}, 'members': 9},
 {'family': 'crossvit/crossvit',
  'model': 'crossvit_tiny_240',
  'params': 6727700,
  'kwargs': {},
  'members': 11},
 {'family': 'csatv2/csatv2', 'model': 'csatv2', 'params': 10720314, 'kwargs': {}, 'members': 2},
 {'family': 'cspnet/cs', 'model': 'cs3se_edgenet_x', 'params': 49453394, 'kwargs': {}, 'members': 1},
 {'family': 'cspnet/cs3darknet',
  'model': 'cs3darknet_focus_s',
  'params': 2766858,
  'kwargs': {},
  'members': 8},
 {'family': 'cspnet/cs3edgenet', 'model': 'cs3edgenet_x', 'params': 46552930, 'kwargs': {}, 'members': 1},
 {'family': 'cspnet/cs3sedarknet',
  'model': 'cs3sedarknet_xdw',
  'params': 19572978,
  'kwargs': {},
  'members': 3},
 {'family': 'cspnet/cspdarknet', 'model': 'cspdarknet53', 'params': 26627434, 'kwargs': {}, 'members': 1},
 {'family': 'cspnet/cspresnet', 'model': 'cspresnet50', 'params': 20601418, 'kwargs': {}, 'members': 3},
 {'family': 'cspnet/cspresnext', 'model': 'cspresnext50', 'params': 18541386, 'kwargs': {}, 'members': 1},
 {'family': 'cspnet/darknet', 'model': 'darknet17', 'params': 13290090, 'kwargs': {}, 'members': 3},
 {'family': 'cspnet/darknetaa', 'model': 'darknetaa53', 'params': 35008234, 'kwargs': {}, 'members': 1},
 {'family': 'cspnet/sedarknet', 'model': 'sedarknet21', 'params': 19935682, 'kwargs': {}, 'members': 1},
 {'family': 'cspnext/cspnext', 'model': 'cspnext_tiny', 'params': 2352550, 'kwargs': {}, 'members': 5},
 {'family': 'davit/davit', 'model': 'davit_tiny', 'params': 27598858, 'kwargs': {}, 'members': 8},
 {'family': 'deepseek_vit/deepseek',
  'model': 'deepseek_vit_412m',
  'params': 26316810,
  'kwargs': {'depth': 2},
  'members': 3,
  'full_params': 411852810},
 {'family': 'deit/deit', 'model': 'deit_tiny_patch16_224', 'params': 5526346, 'kwargs': {}, 'members': 16},
 {'family': 'densenet/densenet', 'model': 'densenet121', 'params': 6964106, 'kwargs': {}, 'members': 5},
 {'family': 'densenet/densenetblur',
  'model': 'densenetblur121d',
  'params': 6983338,
  'kwargs': {},
  'members': 1},
 {'family': 'dla/dla', 'model': 'dla46x_c', 'params': 814010, 'kwargs': {}, 'members': 12},
 {'family': 'dpn/dpn', 'model': 'dpn48b', 'params': 8301556, 'kwargs': {}, 'members': 7},
 {'family': 'edgenext/edgenext', 'model': 'edgenext_xx_small', 'params': 1159906, 'kwargs': {}, 'members': 5},
 {'family': 'efficientformer/efficientformer',
  'model': 'efficientformer_l1',
  'params': 11400908,
  'kwargs': {},
  'members': 3},
 {'family': 'efficientformer_v2/efficientformerv2',
  'model': 'efficientformerv2_s0',
  'params': 3249796,
  'kwargs': {},
  'members': 4},
 {'family': 'efficientnet/efficientnet',
  'model': 'efficientnet_lite0',
  'params': 3383818,
  'kwargs': {},
  'members': 35},
 {'family': 'efficientnet/efficientnetv2',
  'model': 'efficientnetv2_rw_t',
  'params': 12634638,
  'kwargs': {},
  'members': 7},
 {'family': 'efficientnet/fbnetc', 'model': 'fbnetc_100', 'params': 3607050, 'kwargs': {}, 'members': 1},
 {'family': 'efficientnet/gc_efficientnetv2',
  'model': 'gc_efficientnetv2_rw_t',
  'params': 12662963,
  'kwargs': {},
  'members': 1},
 {'family': 'efficientnet/mixnet', 'model': 'mixnet_s', 'params': 2612976, 'kwargs': {}, 'members': 5},
 {'family': 'efficientnet/mnasnet', 'model': 'mnasnet_small', 'params': 762074, 'kwargs': {}, 'members': 5},
 {'family': 'efficientnet/mobilenet',
  'model': 'mobilenet_edgetpu_100',
  'params': 2823242,
  'kwargs': {},
  'members': 5},
 {'family': 'efficientnet/mobilenetv1',
  'model': 'mobilenetv1_100',
  'params': 3217226,
  'kwargs': {},
  'members': 3},
 {'family': 'efficientnet/mobilenetv2',
  'model': 'mobilenetv2_035',
  'params': 408938,
  'kwargs': {},
  'members': 7},
 {'family': 'efficientnet/semnasnet', 'model': 'semnasnet_050', 'params': 813816, 'kwargs': {}, 'members': 4},
 {'family': 'efficientnet/spnasnet', 'model': 'spnasnet_100', 'params': 3153426, 'kwargs': {}, 'members': 1},
 {'family': 'efficientnet/tf_efficientnet',
  'model': 'tf_efficientnet_lite0',
  'params': 3383818,
  'kwargs': {},
  'members': 21},
 {'family': 'efficientnet/tf_efficientnetv2',
  'model': 'tf_efficientnetv2_b0',
  'params': 5871514,
  'kwargs': {},
  'members': 8},
 {'family': 'efficientnet/tf_mixnet', 'model': 'tf_mixnet_s', 'params': 2612976, 'kwargs': {}, 'members': 3},
 {'family': 'efficientnet/tinynet', 'model': 'tinynet_e', 'params': 774782, 'kwargs': {}, 'members': 5},
 {'family': 'efficientvim/efficientvim',
  'model': 'efficientvim_m1',
  'params': 5725098,
  'kwargs': {},
  'members': 8},
 {'family': 'efficientvit_mit/efficientvit',
  'model': 'efficientvit_b0',
  'params': 2141818,
  'kwargs': {},
  'members': 7},
 {'family': 'efficientvit_msra/efficientvit',
  'model': 'efficientvit_m0',
  'params': 2158366,
  'kwargs': {},
  'members': 6},
 {'family': 'eva/eva', 'model': 'eva02_tiny_patch14_224', 'params': 5504074, 'kwargs': {}, 'members': 16},
 {'family': 'eva/vit',
  'model': 'vit_tiny_patch16_dinov3_qkvb',
  'params': 5491594,
  'kwargs': {},
  'members': 49},
 {'family': 'fasternet/fasternet', 'model': 'fasternet_t0', 'params': 2637310, 'kwargs': {}, 'members': 6},
 {'family': 'fastvit/fastvit', 'model': 'fastvit_t8', 'params': 3264922, 'kwargs': {}, 'members': 12},
 {'family': 'focalnet/focalnet',
  'model': 'focalnet_tiny_srf',
  'params': 27665806,
  'kwargs': {},
  'members': 12},
 {'family': 'gcvit/gcvit', 'model': 'gcvit_xxtiny', 'params': 11487558, 'kwargs': {}, 'members': 5},
 {'family': 'gemma4_vit/gemma',
  'model': 'gemma4_vit_167m_enc',
  'params': 35199232,
  'kwargs': {'depth': 2},
  'members': 4,
  'full_params': 167364608},
 {'family': 'ghostnet/ghostnet', 'model': 'ghostnet_050', 'params': 1319102, 'kwargs': {}, 'members': 3},
 {'family': 'ghostnet/ghostnetv2', 'model': 'ghostnetv2_100', 'params': 4888718, 'kwargs': {}, 'members': 3},
 {'family': 'ghostnet/ghostnetv3', 'model': 'ghostnetv3_050', 'params': 2127194, 'kwargs': {}, 'members': 4},
 {'family': 'hardcorenas/hardcorenas',
  'model': 'hardcorenas_b',
  'params': 3908354,
  'kwargs': {},
  'members': 6},
 {'family': 'hgnet/hgnet', 'model': 'hgnet_tiny', 'params': 12707354, 'kwargs': {}, 'members': 3},
 {'family': 'hgnet/hgnetv2', 'model': 'hgnetv2_b0', 'params': 3968040, 'kwargs': {}, 'members': 7},
 {'family': 'hiera/hiera', 'model': 'hiera_tiny_224', 'params': 27148906, 'kwargs': {}, 'members': 8},
 {'family': 'hieradet_sam2/hieradet',
  'model': 'hieradet_small',
  'params': 33969034,
  'kwargs': {},
  'members': 1},
 {'family': 'hieradet_sam2/sam', 'model': 'sam2_hiera_tiny', 'params': 26858698, 'kwargs': {}, 'members': 4},
 {'family': 'hrnet/hrnet', 'model': 'hrnet_w18_small', 'params': 11158954, 'kwargs': {}, 'members': 11},
 {'family': 'iformer/iformer', 'model': 'iformer_t', 'params': 2632026, 'kwargs': {}, 'members': 9},
 {'family': 'inception_next/inception',
  'model': 'inception_next_atto',
  'params': 3205130,
  'kwargs': {},
  'members': 4},
 {'family': 'inception_resnet_v2/inception',
  'model': 'inception_resnet_v2',
  'params': 54321834,
  'kwargs': {},
  'members': 1},
 {'family': 'inception_v3/inception',
  'model': 'inception_v3',
  'params': 21806058,
  'kwargs': {},
  'members': 1},
 {'family': 'inception_v4/inception',
  'model': 'inception_v4',
  'params': 41158186,
  'kwargs': {},
  'members': 1},
 {'family': 'lcnetv2/lcnetv2', 'model': 'lcnetv2_small', 'params': 2860362, 'kwargs': {}, 'members': 3},
 {'family': 'levit/levit', 'model': 'levit_128s', 'params': 7014758, 'kwargs': {}, 'members': 20},
 {'family': 'lowformer/lowformer', 'model': 'lowformer_b0', 'params': 12515482, 'kwargs': {}, 'members': 8},
 {'family': 'mambaout/mambaout', 'model': 'mambaout_femto', 'params': 6163066, 'kwargs': {}, 'members': 10},
 {'family': 'maxxvit/coatnet',
  'model': 'coatnet_pico_rw_224',
  'params': 10343494,
  'kwargs': {},
  'members': 21},
 {'family': 'maxxvit/coatnext',
  'model': 'coatnext_nano_rw_224',
  'params': 14193374,
  'kwargs': {},
  'members': 1},
 {'family': 'maxxvit/maxvit', 'model': 'maxvit_pico_rw_256', 'params': 7203566, 'kwargs': {}, 'members': 27},
 {'family': 'maxxvit/maxxvit',
  'model': 'maxxvit_rmlp_nano_rw_256',
  'params': 16271758,
  'kwargs': {},
  'members': 3},
 {'family': 'maxxvit/maxxvitv2',
  'model': 'maxxvitv2_nano_rw_256',
  'params': 22935301,
  'kwargs': {},
  'members': 4},
 {'family': 'metaformer/caformer', 'model': 'caformer_s18', 'params': 24313146, 'kwargs': {}, 'members': 4},
 {'family': 'metaformer/convformer',
  'model': 'convformer_s18',
  'params': 24745938,
  'kwargs': {},
  'members': 4},
 {'family': 'metaformer/poolformer',
  'model': 'poolformer_s12',
  'params': 11407306,
  'kwargs': {},
  'members': 5},
 {'family': 'metaformer/poolformerv2',
  'model': 'poolformerv2_s12',
  'params': 11383842,
  'kwargs': {},
  'members': 5},
 {'family': 'mlp_mixer/gmixer', 'model': 'gmixer_12_224', 'params': 12319930, 'kwargs': {}, 'members': 2},
 {'family': 'mlp_mixer/gmlp', 'model': 'gmlp_ti16_224', 'params': 5739618, 'kwargs': {}, 'members': 3},
 {'family': 'mlp_mixer/mixer', 'model': 'mixer_s16_224', 'params': 18020394, 'kwargs': {}, 'members': 6},
 {'family': 'mlp_mixer/resmlp', 'model': 'resmlp_12_224', 'params': 14969722, 'kwargs': {}, 'members': 4},
 {'family': 'mobilenetv3/fbnetv3', 'model': 'fbnetv3_b', 'params': 6633314, 'kwargs': {}, 'members': 3},
 {'family': 'mobilenetv3/lcnet', 'model': 'lcnet_035', 'params': 376180, 'kwargs': {}, 'members': 5},
 {'family': 'mobilenetv3/mobilenetv3',
  'model': 'mobilenetv3_small_050',
  'params': 578474,
  'kwargs': {},
  'members': 7},
 {'family': 'mobilenetv3/mobilenetv4',
  'model': 'mobilenetv4_conv_small_035',
  'params': 637194,
  'kwargs': {},
  'members': 12},
 {'family': 'mobilenetv3/tf_mobilenetv3',
  'model': 'tf_mobilenetv3_small_075',
  'params': 1027122,
  'kwargs': {},
  'members': 6},
 {'family': 'mobilenetv5/mobilenetv5',
  'model': 'mobilenetv5_base',
  'params': 80619466,
  'kwargs': {},
  'members': 3,
  'skip': 'skipped (size): 81M parameters'},
 {'family': 'mobilevit/mobilevit', 'model': 'mobilevit_xxs', 'params': 954234, 'kwargs': {}, 'members': 3},
 {'family': 'mobilevit/mobilevitv2',
  'model': 'mobilevitv2_050',
  'params': 1116163,
  'kwargs': {},
  'members': 7},
 {'family': 'mvitv2/mvitv2', 'model': 'mvitv2_tiny', 'params': 23412010, 'kwargs': {}, 'members': 8},
 {'family': 'naflexvit/naflexvit',
  'model': 'naflexvit_base_patch16_parfac_gap',
  'params': 14806282,
  'kwargs': {'depth': 2},
  'members': 14,
  'full_params': 85700362},
 {'family': 'nasnet/nasnetalarge',
  'model': 'nasnetalarge',
  'params': 84760480,
  'kwargs': {},
  'members': 1,
  'skip': 'skipped (size): 85M parameters'},
 {'family': 'nest/nest', 'model': 'nest_tiny', 'params': 16676458, 'kwargs': {}, 'members': 6},
 {'family': 'nextvit/nextvit', 'model': 'nextvit_small', 'params': 30748618, 'kwargs': {}, 'members': 3},
 {'family': 'nfnet/dm_nfnet',
  'model': 'dm_nfnet_f0',
  'params': 21843230,
  'kwargs': {'depths': (1, 1, 1, 1)},
  'members': 7,
  'full_params': 68447014},
 {'family': 'nfnet/eca_nfnet', 'model': 'eca_nfnet_l0', 'params': 21861974, 'kwargs': {}, 'members': 4},
 {'family': 'nfnet/nf_ecaresnet', 'model': 'nf_ecaresnet26', 'params': 13966710, 'kwargs': {}, 'members': 3},
 {'family': 'nfnet/nf_regnet', 'model': 'nf_regnet_b0', 'params': 7812898, 'kwargs': {}, 'members': 6},
 {'family': 'nfnet/nf_resnet', 'model': 'nf_resnet26', 'params': 13966666, 'kwargs': {}, 'members': 3},
 {'family': 'nfnet/nf_seresnet', 'model': 'nf_seresnet26', 'params': 15367466, 'kwargs': {}, 'members': 3},
 {'family': 'nfnet/nfnet', 'model': 'nfnet_l0', 'params': 32792538, 'kwargs': {}, 'members': 9},
 {'family': 'pit/pit', 'model': 'pit_ti_224', 'params': 4592842, 'kwargs': {}, 'members': 8},
 {'family': 'pnasnet/pnasnet5large',
  'model': 'pnasnet5large',
  'params': 81779878,
  'kwargs': {},
  'members': 1,
  'skip': 'skipped (size): 82M parameters'},
 {'family': 'pvt_v2/pvt', 'model': 'pvt_v2_b0', 'params': 3412330, 'kwargs': {}, 'members': 7},
 {'family': 'qwen3_vit/qwen',
  'model': 'qwen3_vit_88m',
  'params': 16543498,
  'kwargs': {'depth': 2},
  'members': 9,
  'full_params': 87422218},
 {'family': 'rdnet/rdnet', 'model': 'rdnet_tiny', 'params': 22832418, 'kwargs': {}, 'members': 4},
 {'family': 'regnet/regnetv', 'model': 'regnetv_040', 'params': 19562530, 'kwargs': {}, 'members': 2},
 {'family': 'regnet/regnetx', 'model': 'regnetx_002', 'params': 2319482, 'kwargs': {}, 'members': 13},
 {'family': 'regnet/regnety', 'model': 'regnety_002', 'params': 2797686, 'kwargs': {}, 'members': 18},
 {'family': 'regnet/regnetz', 'model': 'regnetz_005', 'params': 6107992, 'kwargs': {}, 'members': 3},
 {'family': 'repghost/repghostnet',
  'model': 'repghostnet_050',
  'params': 1045778,
  'kwargs': {},
  'members': 8},
 {'family': 'repvit/repvit', 'model': 'repvit_m1', 'params': 4722948, 'kwargs': {}, 'members': 8},
 {'family': 'res2net/res2net', 'model': 'res2net50_14w_8s', 'params': 23031306, 'kwargs': {}, 'members': 8},
 {'family': 'res2net/res2next', 'model': 'res2next50', 'params': 22642954, 'kwargs': {}, 'members': 1},
 {'family': 'resnest/resnest', 'model': 'resnest14d', 'params': 8583178, 'kwargs': {}, 'members': 8},
 {'family': 'resnet/ecaresnet', 'model': 'ecaresnet26t', 'params': 13983406, 'kwargs': {}, 'members': 8},
 {'family': 'resnet/ecaresnetlight',
  'model': 'ecaresnetlight',
  'params': 28133536,
  'kwargs': {},
  'members': 1},
 {'family': 'resnet/ecaresnext',
  'model': 'ecaresnext26t_32x4d',
  'params': 13377710,
  'kwargs': {},
  'members': 2},
 {'family': 'resnet/resnet', 'model': 'resnet10t', 'params': 4927618, 'kwargs': {}, 'members': 25},
 {'family': 'resnet/resnetaa', 'model': 'resnetaa34d', 'params': 21309034, 'kwargs': {}, 'members': 4},
 {'family': 'resnet/resnetblur', 'model': 'resnetblur18', 'params': 11181642, 'kwargs': {}, 'members': 4},
 {'family': 'resnet/resnetrs', 'model': 'resnetrs50', 'params': 33663402, 'kwargs': {}, 'members': 7},
 {'family': 'resnet/resnext', 'model': 'resnext50_32x4d', 'params': 23000394, 'kwargs': {}, 'members': 7},
 {'family': 'resnet/senet',
  'model': 'senet154',
  'params': 33020858,
  'kwargs': {'layers': (1, 1, 1, 1)},
  'members': 1,
  'full_params': 113060474},
 {'family': 'resnet/seresnet', 'model': 'seresnet18', 'params': 11271754, 'kwargs': {}, 'members': 9},
 {'family': 'resnet/seresnetaa', 'model': 'seresnetaa50d', 'params': 26078746, 'kwargs': {}, 'members': 1},
 {'family': 'resnet/seresnext',
  'model': 'seresnext26t_32x4d',
  'params': 14778466,
  'kwargs': {},
  'members': 7},
 {'family': 'resnet/seresnextaa',
  'model': 'seresnextaa101d_32x8d',
  'params': 13455450,
  'kwargs': {'layers': (1, 1, 1, 1)},
  'members': 2,
  'full_params': 91559770},
 {'family': 'resnet/wide_resnet',
  'model': 'wide_resnet50_2',
  'params': 19525450,
  'kwargs': {'layers': (1, 1, 1, 1)},
  'members': 2,
  'full_params': 66854730},
 {'family': 'resnetv2/resnetv2', 'model': 'resnetv2_18', 'params': 11179850, 'kwargs': {}, 'members': 20},
 {'family': 'rexnet/rexnet', 'model': 'rexnet_100', 'params': 3528683, 'kwargs': {}, 'members': 5},
 {'family': 'rexnet/rexnetr', 'model': 'rexnetr_100', 'params': 3615114, 'kwargs': {}, 'members': 5},
 {'family': 'selecsls/selecsls', 'model': 'selecsls42', 'params': 29086762, 'kwargs': {}, 'members': 5},
 {'family': 'senet/legacy_senet',
  'model': 'legacy_senet154',
  'params': 33020858,
  'kwargs': {'layers': (1, 1, 1, 1)},
  'members': 1,
  'full_params': 113060474},
 {'family': 'senet/legacy_seresnet',
  'model': 'legacy_seresnet18',
  'params': 11270722,
  'kwargs': {},
  'members': 5},
 {'family': 'senet/legacy_seresnext',
  'model': 'legacy_seresnext26_32x4d',
  'params': 14761770,
  'kwargs': {},
  'members': 3},
 {'family': 'sequencer/sequencer', 'model': 'sequencer2d_s', 'params': 27270538, 'kwargs': {}, 'members': 3},
 {'family': 'shvit/shvit', 'model': 'shvit_s1', 'params': 6013018, 'kwargs': {}, 'members': 4},
 {'family': 'sknet/skresnet', 'model': 'skresnet18', 'params': 11450186, 'kwargs': {}, 'members': 4},
 {'family': 'sknet/skresnext', 'model': 'skresnext50_32x4d', 'params': 25451274, 'kwargs': {}, 'members': 1},
 {'family': 'starnet/starnet', 'model': 'starnet_s050', 'params': 415018, 'kwargs': {}, 'members': 7},
 {'family': 'swiftformer/swiftformer',
  'model': 'swiftformer_xs',
  'params': 3037780,
  'kwargs': {},
  'members': 4},
 {'family': 'swin_transformer/swin',
  'model': 'swin_tiny_patch4_window7_224',
  'params': 27527044,
  'kwargs': {},
  'members': 9},
 {'family': 'swin_transformer_v2/swinv2',
  'model': 'swinv2_tiny_window16_256',
  'params': 27585844,
  'kwargs': {},
  'members': 12},
 {'family': 'swin_transformer_v2_cr/swinv2',
  'model': 'swinv2_cr_tiny_224',
  'params': 27570814,
  'kwargs': {},
  'members': 16},
 {'family': 'tiny_vit/tiny', 'model': 'tiny_vit_5m_224', 'params': 5074974, 'kwargs': {}, 'members': 5},
 {'family': 'tnt/tnt', 'model': 'tnt_s_legacy_patch16_224', 'params': 23374186, 'kwargs': {}, 'members': 3},
 {'family': 'tresnet/tresnet', 'model': 'tresnet_m', 'params': 29360522, 'kwargs': {}, 'members': 4},
 {'family': 'twins/twins', 'model': 'twins_svt_small', 'params': 23552906, 'kwargs': {}, 'members': 6},
 {'family': 'vgg/vgg',
  'model': 'vgg11',
  'params': 128807306,
  'kwargs': {},
  'members': 8,
  'skip': 'skipped (size): 129M parameters'},
 {'family': 'visformer/visformer', 'model': 'visformer_tiny', 'params': 9940218, 'kwargs': {}, 'members': 2},
 {'family': 'vision_transformer/aimv2',
  'model': 'aimv2_large_patch14_224',
  'params': 26571786,
  'kwargs': {'depth': 2},
  'members': 12,
  'full_params': 309208074},
 {'family': 'vision_transformer/beit',
  'model': 'beit3_base_patch16_224',
  'params': 14942986,
  'kwargs': {'depth': 2},
  'members': 4,
  'full_params': 85898506},
 {'family': 'vision_transformer/eva',
  'model': 'eva_large_patch14_196',
  'params': 26010634,
  'kwargs': {'depth': 2},
  'members': 2,
  'full_params': 303127562},
 {'family': 'vision_transformer/flexivit',
  'model': 'flexivit_small',
  'params': 21680266,
  'kwargs': {},
  'members': 3},
 {'family': 'vision_transformer/vit',
  'model': 'vit_tiny_patch16_224',
  'params': 5526346,
  'kwargs': {},
  'members': 138},
 {'family': 'vision_transformer_hybrid/vit',
  'model': 'vit_tiny_r_s16_p8_224',
  'params': 6146634,
  'kwargs': {},
  'members': 14},
 {'family': 'vision_transformer_relpos/vit',
  'model': 'vit_srelpos_small_patch16_224',
  'params': 21592336,
  'kwargs': {},
  'members': 13},
 {'family': 'vision_transformer_sam/samvit',
  'model': 'samvit_base_patch16_224',
  'params': 14782474,
  'kwargs': {'depth': 2},
  'members': 4,
  'full_params': 85695754},
 {'family': 'vitamin/vitamin', 'model': 'vitamin_small_224', 'params': 21881546, 'kwargs': {}, 'members': 13},
 {'family': 'volo/volo', 'model': 'volo_d1_224', 'params': 25869740, 'kwargs': {}, 'members': 11},
 {'family': 'vovnet/eca_vovnet', 'model': 'eca_vovnet39b', 'params': 21585566, 'kwargs': {}, 'members': 1},
 {'family': 'vovnet/ese_vovnet',
  'model': 'ese_vovnet19b_slim_dw',
  'params': 1389882,
  'kwargs': {},
  'members': 7},
 {'family': 'vovnet/vovnet', 'model': 'vovnet39a', 'params': 21585546, 'kwargs': {}, 'members': 2},
 {'family': 'xception/legacy_xception',
  'model': 'legacy_xception',
  'params': 20827442,
  'kwargs': {},
  'members': 1},
 {'family': 'xception_aligned/xception',
  'model': 'xception41p',
  'params': 24879242,
  'kwargs': {},
  'members': 5},
 {'family': 'xcit/xcit', 'model': 'xcit_nano_12_p8_224', 'params': 2921306, 'kwargs': {}, 'members': 28}]
# fmt: on


if __name__ == "__main__":
    _main()
