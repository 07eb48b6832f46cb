"""assert_equivalent checks a captured model at every shape variant, not just the example's."""
import pytest
import torch
from torch import nn

import archc
from archc.capture.inputs import shape_variants
from archc.errors import CompactionError
from archc.verify import assert_equivalent

X = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


class RightAtBatchTwo(nn.Module):
    """``net`` where the batch is 2 (the example's); every row past the second is 1.5x off."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("rows", torch.tensor([1.0, 1.0] + [1.5] * 30))

    def forward(self, x):
        return self.net(x) * self.rows[: x.shape[0]].unsqueeze(1)


class ViewsAsBatchTwo(nn.Module):
    """``net`` with the example's batch frozen into a view, as a wrong rewrite might do."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).view(2, -1).reshape(x.shape[0], -1)


def _variant_shapes(gm) -> list[str]:
    """The input shapes assert_equivalent should check ``gm`` at, example first."""
    (symbol,) = gm.meta["archc.symbols"]
    return [f"({v[symbol]}, 4)" for v in shape_variants(gm)]


def test_a_captured_model_has_a_larger_batch_to_check_at():
    shapes = _variant_shapes(archc.trace(_net(), (X,)))
    assert shapes[0] == "(2, 4)" and "(3, 4)" in shapes


def test_a_candidate_right_only_at_the_example_batch_is_refused_and_the_shape_named():
    net = _net()
    reference = archc.trace(net, (X,))
    candidate = RightAtBatchTwo(net)
    assert assert_equivalent(reference, candidate, inputs=(X,)) < 1e-6  # right at the example
    with pytest.raises(CompactionError, match=r"differs from the gated model .*inputs of shape \(3, 4\)"):
        assert_equivalent(reference, candidate)


def test_a_batch_frozen_into_a_view_is_refused_and_the_shape_named():
    net = _net()
    reference = archc.trace(net, (X,))
    with pytest.raises(CompactionError, match=r"compact model failed to run on inputs of shape \(3, 4\)"):
        assert_equivalent(reference, ViewsAsBatchTwo(net))


def test_an_exact_candidate_passes_and_records_the_shapes_checked():
    net = _net()
    reference = archc.trace(net, (X,))
    candidate = archc.trace(net, (X,))
    assert assert_equivalent(reference, candidate) < 1e-6
    assert candidate.meta["archc.verified"]["shapes"] == _variant_shapes(reference)
    assert candidate.meta["archc.verified"]["skipped"] == []


class OnlyBatchTwo(nn.Module):
    """A reference that accepts only the example's batch, carrying a captured model's meta."""

    def __init__(self, net: nn.Module, meta: dict) -> None:
        super().__init__()
        self.net, self.meta = net, meta

    def forward(self, x):
        if x.shape[0] != 2:
            raise ValueError("this model takes batches of 2")
        return self.net(x)


def test_a_variant_the_reference_cannot_run_is_skipped_and_recorded():
    net = _net()
    reference = OnlyBatchTwo(net, dict(archc.trace(net, (X,)).meta))
    candidate = archc.trace(net, (X,))
    assert assert_equivalent(reference, candidate) < 1e-6
    assert candidate.meta["archc.verified"] == {"shapes": ["(2, 4)"], "skipped": _variant_shapes(candidate)[1:],
                                                "max_rel_err": pytest.approx(0.0, abs=1e-6)}
    ran = []  # inputs of the calls the reference completed
    reference.register_forward_hook(lambda m, args, out: ran.append(args[0]))
    assert_equivalent(reference, candidate, trials=3)
    assert len(ran) == 3 and all(x.shape == (2, 4) for x in ran)  # the refused shapes made up at the example's
    assert not torch.equal(ran[0], ran[1]) and not torch.equal(ran[1], ran[2])  # fresh draws


def test_the_reference_must_run_at_the_example_shape():
    net = _net()
    meta = dict(archc.trace(net, (X,)).meta)
    meta["archc.inputs"] = [{**meta["archc.inputs"][0], "shape": (3, 4)}]
    meta["archc.symbols"] = {s: {**e, "example": 3} for s, e in meta["archc.symbols"].items()}
    meta.pop("archc.shape_variants")  # the variants capture checked: derive them from the symbols again
    with pytest.raises(CompactionError, match=r"reference\) model failed to run on inputs of shape \(3, 4\)"):
        assert_equivalent(OnlyBatchTwo(net, meta), net)


def test_compact_keeps_the_input_meta_and_checks_every_variant():
    gated = archc.passes.insert_filters(archc.trace(_net(), (X,)))
    with torch.no_grad():
        next(archc.filters(gated)).theta[:3] = 0.0
    small = archc.compact(gated)
    assert small.meta["archc.inputs"] == gated.meta["archc.inputs"]
    assert small.meta["archc.symbols"] == gated.meta["archc.symbols"]
    assert small.meta["archc.verified"]["shapes"] == _variant_shapes(gated)


class EvenBatches(nn.Module):
    """``net`` that refuses odd batches (as a model pairing its samples would)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        if x.shape[0] % 2:
            raise ValueError("batches come in pairs")
        return self.net(x)


def test_capture_checks_the_next_larger_size_the_model_takes():
    import torch.utils._pytree as pytree
    from archc.capture.check import check_against_model

    net = _net()
    gm = archc.trace(net, (X,))
    gm.meta.pop("archc.shape_variants")
    flat, spec = pytree.tree_flatten(((X,), {}))
    check_against_model(gm, EvenBatches(net), flat, spec)
    (symbol,) = gm.meta["archc.symbols"]
    assert [v[symbol] for v in shape_variants(gm)] == [2, 4]  # 3 refused, then 4; no even size below 2


def test_a_model_cast_to_float64_after_capture_is_checked_with_float64_inputs():
    """The fresh inputs follow the parameters' dtype: compacting ``gated.double()`` folds in
    float64, and the compact model then equals the gated one to float64 rounding."""
    from conftest import kill_channels
    from zoo import ZOO

    from archc.capture.inputs import random_inputs
    from archc.verify import max_relative_error

    model, inputs = ZOO["resnet"]()
    gated = archc.passes.insert_filters(archc.trace(model, inputs)).double()
    kill_channels(gated, 0.3, seed=0)
    assert random_inputs(gated, seed=0)[0].dtype == torch.float64
    small = archc.compact(gated)
    assert next(small.parameters()).dtype == torch.float64
    for sizes in shape_variants(gated):
        assert max_relative_error(gated, small, random_inputs(gated, seed=1, sizes=sizes), dtype=torch.float64) < 1e-12
