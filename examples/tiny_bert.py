"""A model file for `archc search` with keyword inputs: a small BERT classifier (built from a
config, no download) on a synthetic task: is token 7 in the sequence?

    archc search examples/tiny_bert.py --epochs 2 --lam 1e-3 --out runs/tiny_bert
    archc compact runs/tiny_bert/checkpoint.pt -o runs/tiny_bert/compact

``example_input()`` returns a dict: archc calls the model as ``model(**inputs)``, and the
default loss and metric read ``output["logits"]`` of the ``ModelOutput`` it returns.
"""
import sys
from pathlib import Path

import torch

_SHIM = Path(__file__).resolve().parents[2] / "shared" / "tools"
if (_SHIM / "tvshim.py").exists():  # torchvision's compiled ops do not load on a CPU-only torch
    sys.path.insert(0, str(_SHIM))
    import tvshim  # noqa: F401,E402

import transformers  # noqa: E402

VOCAB, LENGTH = 32, 12


def model():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=LENGTH, num_labels=2)
    return transformers.BertForSequenceClassification(config)


def _batches(n_batches, seed):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(0, VOCAB, (16, LENGTH), generator=gen)
        mask = torch.ones_like(ids)
        out.append(({"input_ids": ids, "attention_mask": mask}, (ids == 7).any(dim=1).long()))
    return out


def example_input():
    return _batches(1, 0)[0][0]


def data():
    return _batches(24, 1), _batches(4, 2)
