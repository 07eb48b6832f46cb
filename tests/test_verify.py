"""The exactness check: float32 rounding is not a refusal, a wrong rewrite always is."""
import pytest
import torch
from torch import nn

from archc.errors import CompactionError
from archc.verify import assert_equivalent, max_relative_error


class ShiftedIdentity(nn.Module):
    """``(x + c) - c``: the identity in exact arithmetic, ~1e-3 off in float32 for c = 1e4."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("c", torch.tensor(1e4))
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return ((x + self.c) - self.c) * self.scale


class Scaled(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((3,), factor))

    def forward(self, x):
        return x * self.scale


INPUTS = (torch.randn(64, 3, generator=torch.Generator().manual_seed(0)),)


def test_rounding_that_misses_in_float32_passes_in_float64():
    reference, exact = ShiftedIdentity(), Scaled(1.0)
    assert max_relative_error(reference, exact, INPUTS) > 1e-4  # the float32 check alone would refuse
    assert max_relative_error(reference, exact, INPUTS, dtype=torch.float64) < 1e-9
    assert assert_equivalent(reference, exact, inputs=INPUTS) < 1e-9


def test_a_wrong_model_is_refused_in_both_precisions():
    with pytest.raises(CompactionError, match="differs from the gated model"):
        assert_equivalent(ShiftedIdentity(), Scaled(1.001), inputs=INPUTS)


def test_float64_run_gives_every_tensor_back_untouched():
    reference, candidate = ShiftedIdentity(), Scaled(1.0)
    before = {name: (t, t.data_ptr()) for name, t in
              [*reference.named_parameters(), *reference.named_buffers(), *candidate.named_parameters()]}
    max_relative_error(reference, candidate, INPUTS, dtype=torch.float64)
    after = dict([*reference.named_parameters(), *reference.named_buffers(), *candidate.named_parameters()])
    for name, (tensor, ptr) in before.items():
        assert after[name] is tensor and tensor.dtype == torch.float32 and tensor.data_ptr() == ptr, name
