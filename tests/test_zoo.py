"""Every zoo family: gated with 30% of channels killed, compacts to an equal, smaller model
that also matches in onnxruntime."""
import numpy as np
import pytest
import torch
from conftest import kill_channels, n_params
from zoo import ZOO

import archc
from archc.export import onnx_session, run_onnx
from archc.verify import max_relative_error


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_model_compacts_exactly_and_matches_in_onnxruntime(name, tmp_path):
    model, inputs = ZOO[name]()
    gm = archc.trace(model, inputs)
    torch.testing.assert_close(gm(*inputs), model(*inputs))  # the trace is faithful
    gated = archc.passes.insert_filters(gm)
    assert kill_channels(gated, 0.3, seed=0) > 0
    small = archc.compact(gated)
    assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-5
    assert n_params(small) < 0.9 * n_params(gated)  # clearly smaller
    assert not any(isinstance(m, archc.Filter) for m in small.modules())
    assert "filter" not in small.code
    result = archc.export_onnx(small, inputs, tmp_path / "small.onnx")
    assert result.max_rel_err is not None
    with torch.no_grad():
        want = gated.eval()(*inputs).numpy()
    got = run_onnx(onnx_session(tmp_path / "small.onnx"), inputs)[0]
    assert np.abs(got - want).max() <= 1e-4 * max(np.abs(want).max(), 1e-6) + 1e-5


@pytest.mark.parametrize("name", ["resnet", "vit", "unet"])
def test_compact_model_has_a_dynamic_batch(name):
    model, inputs = ZOO[name]()
    gated = archc.passes.insert_filters(archc.trace(model, inputs))
    kill_channels(gated, 0.5, seed=1)
    small = archc.compact(gated)
    bigger = tuple(torch.cat([x, x, x[:1]]) for x in inputs)  # batch 5
    assert max_relative_error(gated, small, bigger, dtype=torch.float64) < 1e-5
