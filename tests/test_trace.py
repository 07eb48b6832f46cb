"""archc.trace: shapes on every node, shape branches specialised, value branches refused."""
import pytest
import torch
import torch.fx
from torch import nn
from zoo import ZOO, value_branch_model

import archc
from archc.meta import SHAPE


def test_every_tensor_node_records_its_shape_and_dtype():
    model, inputs = ZOO["resnet"]()
    gm = archc.trace(model, inputs)
    with torch.no_grad():
        interp_values = {}

        class Rec(torch.fx.Interpreter):
            def run_node(self, n):
                interp_values[n.name] = v = super().run_node(n)
                return v

        Rec(gm).run(*inputs)
    for node in gm.graph.nodes:
        value = interp_values.get(node.name)
        if isinstance(value, torch.Tensor) and node.op != "output":
            assert node.meta[SHAPE] == tuple(value.shape), node.name
            assert node.meta["archc.dtype"] == value.dtype


def test_shape_dependent_branches_are_evaluated_on_the_example():
    model, inputs = ZOO["shape_branch"]()
    with pytest.raises(Exception):
        torch.fx.symbolic_trace(model)  # plain fx cannot
    gm = archc.trace(model, inputs)
    torch.testing.assert_close(gm(*inputs), model(*inputs))
    assert gm.meta["archc.specialised"], "the specialised branches are recorded"
    assert any("zoo.py" in s for s in gm.meta["archc.specialised"])


def test_value_dependent_branch_is_refused_with_its_source_line():
    model, inputs = value_branch_model()
    with pytest.raises(archc.TraceError) as err:
        archc.trace(model, inputs)
    message = str(err.value)
    assert "values" in message and "zoo.py:" in message and "fix:" in message


def test_a_leaf_module_is_kept_opaque_and_its_channels_unprunable():
    model, inputs = value_branch_model()
    wrapper = nn.Sequential(nn.Conv2d(inputs[0].shape[1], inputs[0].shape[1], 1), model)
    gm = archc.trace(wrapper, inputs, leaf_modules=[type(model)])
    torch.testing.assert_close(gm(*inputs), wrapper(*inputs))
    rep = archc.report(gm)
    assert not any(g.prunable for g in rep.groups)
    assert any("no channel rule" in why for _, why in rep.unprunable)


def test_untraceable_code_names_the_module_and_the_fix():
    class Bad(nn.Module):
        def forward(self, x):
            return torch.from_numpy(x.numpy())  # leaves torch: cannot be traced

    with pytest.raises(archc.TraceError) as err:
        archc.trace(nn.Sequential(Bad()), (torch.randn(2, 3),))
    assert "leaf_modules" in str(err.value)


def test_wrong_number_of_example_inputs_is_a_clear_error():
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    with pytest.raises(archc.TraceError, match="example input"):
        archc.trace(Two(), (torch.randn(2),))
