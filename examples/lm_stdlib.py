"""A model file for `archc search`: a small Llama-architecture byte-level language model
(built from a config, no download) on Python's own standard library source, read from the
running interpreter's installation: every machine has it, nothing is downloaded.

    archc search examples/lm_stdlib.py --epochs 3 --lam 1e-3 --arch-lr 1e-2 --out runs/lm
    archc compact runs/lm/checkpoint.pt -o runs/lm/compact

Training text: the first stdlib modules in name order; validation and test: the modules after
them (other files, so nothing is memorised across the split). The metric is bits per byte.
"""
import math
import sys
import sysconfig
from pathlib import Path

import torch
import torch.nn.functional as F

_SHIM = Path(__file__).resolve().parents[2] / "shared" / "tools"
if (_SHIM / "tvshim.py").exists() and "tvshim" not in sys.modules:  # torchvision ops on a CPU torch
    sys.path.insert(0, str(_SHIM))
    import tvshim  # noqa: F401,E402

import transformers  # noqa: E402

CONTEXT, TRAIN_BYTES, HELD_OUT_BYTES = 64, 1_500_000, 200_000


def model():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=172, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=CONTEXT,
                                      tie_word_embeddings=False)
    return transformers.LlamaForCausalLM(config)


def stdlib_bytes() -> tuple[bytes, bytes, bytes]:
    """Train, validation and test text: whole stdlib files in name order, split by file."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    chunks, sizes, parts = [], 0, []
    for path in files:
        chunks.append(path.read_bytes())
        sizes += len(chunks[-1])
        if sizes >= (TRAIN_BYTES, TRAIN_BYTES + HELD_OUT_BYTES, TRAIN_BYTES + 2 * HELD_OUT_BYTES)[len(parts)]:
            parts.append(b"".join(chunks))
            chunks = []
            if len(parts) == 3:
                break
    return tuple(parts)


def windows(text: bytes, step: int) -> torch.utils.data.TensorDataset:
    """(input bytes, next bytes) pairs of CONTEXT bytes, every ``step`` bytes."""
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    starts = torch.arange(0, len(data) - CONTEXT - 1, step)
    idx = starts[:, None] + torch.arange(CONTEXT + 1)
    return torch.utils.data.TensorDataset(data[idx[:, :-1]], data[idx[:, 1:]])


def data():
    train, val, _ = stdlib_bytes()
    return windows(train, CONTEXT), windows(val, CONTEXT)


def example_input():
    return (torch.randint(0, 256, (2, CONTEXT)),)


def loss(output, target):
    logits = output["logits"] if isinstance(output, dict) else output.logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def metric(output, target):
    """Minus the bits per byte (higher is better, as archc's metrics are)."""
    return -float(loss(output, target).detach()) / math.log(2)
