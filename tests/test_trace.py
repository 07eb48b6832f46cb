"""archc.trace through torch.export: shapes on every node, sizes kept symbolic, keyword and
optional inputs, structured outputs, train/eval switching, value branches refused."""
import pytest
import torch
import torch.fx
from torch import nn
from zoo import ZOO, value_branch_model

import archc
from archc.capture.inputs import random_inputs, shape_variants
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


def test_layers_are_torch_nn_modules_at_the_users_paths():
    model, inputs = ZOO["resnet"]()
    gm = archc.trace(model, inputs)
    layers = {name: type(m) for name, m in gm.named_modules() if name}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            assert layers.get(name) is type(m), name
    assert gm.get_submodule("conv1").weight is model.conv1.weight  # shared, not copied


class ReadsShapes(nn.Module):
    """The idioms that froze the batch size into the old tracer's graphs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = h.view(h.shape[0], -1)                 # flatten by reading the batch size
        mean = h.sum(0) / h.shape[0]               # a batch statistic divided by the batch size
        return self.fc(h - mean).reshape(x.size(0), 5, 1).squeeze(-1)


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_sizes_read_from_shapes_stay_symbolic(batch):
    model = ReadsShapes().eval()
    gm = archc.trace(model, (torch.randn(2, 3, 4, 4),))
    x = torch.randn(batch, 3, 4, 4)
    torch.testing.assert_close(gm(x), model(x))
    assert "size" in gm.code  # the batch size is read at run time, not a constant


def test_shape_variants_vary_the_batch_within_its_range():
    gm = archc.trace(ReadsShapes().eval(), (torch.randn(4, 3, 4, 4),))
    batches = {random_inputs(gm, sizes=s)[0].shape[0] for s in shape_variants(gm)}
    assert 4 in batches and len(batches) == 3


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.proj = nn.Linear(16, 16)
        self.head = nn.Linear(16, 50)

    def forward(self, input_ids, attention_mask=None, *, output_hidden=False):
        h = self.proj(self.embed(input_ids))
        if attention_mask is not None:
            h = h * attention_mask[..., None].to(h.dtype)   # x[..., None], .dtype read as a value
        out = {"logits": self.head(h)}
        if output_hidden:
            out["hidden"] = h
        return out


def test_keyword_inputs_optional_arguments_and_dict_outputs():
    model = Tokens().eval()
    ids, mask = torch.randint(0, 50, (2, 7)), torch.ones(2, 7, dtype=torch.long)
    gm = archc.trace(model, kwargs={"input_ids": ids, "attention_mask": mask, "output_hidden": True})
    ids2, mask2 = torch.randint(0, 50, (3, 11)), torch.randint(0, 2, (3, 11))
    got = gm(input_ids=ids2, attention_mask=mask2)
    want = model(ids2, attention_mask=mask2, output_hidden=True)
    assert set(got) == {"logits", "hidden"}
    torch.testing.assert_close(got["logits"], want["logits"])
    sequence = {spec["name"]: spec["dims"] for spec in gm.meta["archc.inputs"]}
    assert sequence["input_ids"] == sequence["attention_mask"] and len(sequence["input_ids"]) == 2


def test_batch_norm_and_dropout_follow_train_and_eval():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5)).eval()
    gm = archc.trace(model, (torch.randn(6, 4),))
    x = torch.randn(6, 4)
    gm.eval()
    torch.testing.assert_close(gm(x), model(x))
    gm.train()
    before = gm.get_submodule("1").running_mean.clone()
    y = gm(x)
    assert (y == 0).float().mean() > 0.2, "dropout is active in train mode"
    assert not torch.equal(before, gm.get_submodule("1").running_mean), "batch statistics update"


def test_a_fused_norm_and_activation_becomes_a_plain_batch_norm():
    class BatchNormAct(nn.BatchNorm2d):  # timm's BatchNormAct2d calls F.batch_norm itself
        def forward(self, x):
            x = nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                         self.training, self.momentum, self.eps)
            return torch.relu(x)

    model = nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct(8), nn.Conv2d(8, 4, 1)).eval()
    gm = archc.trace(model, (torch.randn(2, 3, 8, 8),))
    assert type(gm.get_submodule("1")) is nn.BatchNorm2d
    assert any(g.prunable and g.size == 8 for g in archc.channel_groups(gm))


def test_value_dependent_branch_is_refused_with_its_source_line():
    model, inputs = value_branch_model()
    with pytest.raises(archc.TraceError) as err:
        archc.trace(model, inputs)
    message = str(err.value)
    assert "values" in message and "zoo.py:" in message and "fix:" in message


def test_untraceable_code_names_the_line_and_the_fix():
    class Bad(nn.Module):
        def forward(self, x):
            return torch.from_numpy(x.numpy())  # leaves torch: cannot be captured

    with pytest.raises(archc.TraceError) as err:
        archc.trace(nn.Sequential(Bad()), (torch.randn(2, 3),))
    assert "test_trace.py" in str(err.value) and "fix:" in str(err.value)


def test_wrong_inputs_are_a_clear_error():
    class Two(nn.Module):
        def forward(self, a, b):
            return a + b

    with pytest.raises(archc.TraceError, match="cannot take these inputs"):
        archc.trace(Two(), (torch.randn(2),))


def test_a_dataclass_output_becomes_a_dict_of_its_fields():
    from dataclasses import dataclass

    @dataclass
    class Out:
        logits: torch.Tensor
        hidden: torch.Tensor

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            h = self.fc(x)
            return Out(h.relu(), h)

    model = Net().eval()
    gm = archc.trace(model, (torch.randn(2, 4),))
    x = torch.randn(5, 4)
    got, want = gm(x), model(x)
    assert set(got) == {"logits", "hidden"}
    torch.testing.assert_close(got["logits"], want.logits)
