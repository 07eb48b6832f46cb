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


def _global_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """The measure this file's checks replaced: max|a - b| / max|b| over the whole output."""
    return float((got - want).abs().max() / want.abs().max())


class TwoColumns(nn.Module):
    """Logits whose column 1 is 1e4 x column 0; ``wrong`` puts column 0 30% off."""

    def __init__(self, wrong: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor([1.0 * wrong, 1e4]))

    def forward(self, x):
        return x[:, :2] * self.scale


def test_an_error_in_a_small_column_is_not_hidden_by_a_large_one():
    from archc.verify import relative_error

    x = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = TwoColumns()(x), TwoColumns(wrong=1.3)(x)
    assert _global_error(got, want) < 1e-4  # the global measure (rtol 1e-4) accepts a 30% error
    # judged on the channel's own scale, floored at CHANNEL_FLOOR of the largest: 1e-4 / 1e-2 of 30%
    assert relative_error(got, want) > 1e-3
    assert max_relative_error(TwoColumns(), TwoColumns(wrong=1.3), (x,)) > 1e-3
    with pytest.raises(CompactionError, match="differs from the gated model"):
        assert_equivalent(TwoColumns(), TwoColumns(wrong=1.3), inputs=(x,))
    assert assert_equivalent(TwoColumns(), TwoColumns(), inputs=(x,)) == 0.0


def test_channel_scale_follows_nchw_and_channels_last_and_floors_zero_channels():
    from archc.verify import CHANNEL_FLOOR, channel_scale, relative_error

    img = torch.zeros(2, 3, 4, 4)
    img[:, 1] = 5.0
    img[1, 2, 0, 0] = -7.0
    assert channel_scale(img)[0, :, 0, 0].tolist() == [pytest.approx(7 * CHANNEL_FLOOR), 5.0, 7.0]
    seq = torch.tensor([[[1.0, -20.0], [3.0, 4.0]]])  # (B, T, C): a channel is the last dim
    assert channel_scale(seq).flatten().tolist() == [3.0, 20.0]
    assert channel_scale(torch.tensor([1.0, -4.0])).tolist() == [4.0, 4.0]
    assert channel_scale(torch.tensor(0.0)).item() > 0.0  # no division by zero
    nudged = img.clone()
    nudged[:, 0] += 1e-3  # channel 0 is all zero in the reference: must stay ~zero
    assert relative_error(nudged, img) > 100 * 1e-4  # judged on the floor: far past rtol


@pytest.mark.parametrize("where", ["reference", "candidate"])
def test_nan_or_inf_never_passes_and_says_who_produced_it(where):
    class Poisoned(Scaled):
        def __init__(self, value: float) -> None:
            super().__init__(1.0)
            self.value = value

        def forward(self, x):
            out = x * self.scale
            out[0, 0] = self.value
            return out

    for value in (float("nan"), float("inf")):
        reference, candidate = (Poisoned(value), Scaled(1.0))
        if where == "candidate":
            reference, candidate = candidate, reference
        assert max_relative_error(reference, candidate, INPUTS) == float("inf")
        who = "gated \\(reference\\) model" if where == "reference" else "compact model"
        with pytest.raises(CompactionError, match=f"the {who} produced NaN or inf on inputs of shape \\(64, 3\\)"):
            assert_equivalent(reference, candidate, inputs=INPUTS)
    poisoned = Poisoned(float("nan"))
    with pytest.raises(CompactionError, match="NaN or inf"):  # equal NaNs are no excuse either
        assert_equivalent(poisoned, poisoned, inputs=INPUTS)


def test_outputs_of_another_shape_are_named():
    class Wider(nn.Module):
        def forward(self, x):
            return torch.cat([x, x], 1)

    with pytest.raises(CompactionError, match=r"outputs of shape \[\(64, 6\)\] instead of \[\(64, 3\)\]"):
        assert_equivalent(Scaled(1.0), Wider(), inputs=INPUTS)
