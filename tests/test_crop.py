"""crop_kernels: zero border taps come off conv kernels and every output stays the same."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import archc
from archc.das.crop import crop_kernels
from archc.export import export_onnx, onnx_session, run_onnx
from archc.meta import SHAPE, record_shapes

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def make_conv(dims=2, k=5, zeros=(), cin=4, cout=6, seed=0, **kw):
    """A conv with random weights whose border slices in ``zeros`` ((dim, lo, hi) triples) are zero."""
    torch.manual_seed(seed)
    conv = CONV[dims](cin, cout, k, **kw)
    with torch.no_grad():
        for d, lo, hi in zeros:
            size = conv.weight.shape[2 + d]
            conv.weight.narrow(2 + d, 0, lo).zero_()
            conv.weight.narrow(2 + d, size - hi, hi).zero_()
    return conv


def rel_err(want, got):
    return float((want - got).abs().max() / want.abs().max().clamp_min(1e-12))


def crop_and_check(model, *shapes, batch=2):
    """Trace ``model`` on the first shape, crop, and compare with the original on every shape."""
    ref = copy.deepcopy(model).eval()
    xs = [torch.randn(batch, *s) for s in shapes]
    gm = archc.trace(model, (xs[0],)).eval()
    cropped = crop_kernels(gm)
    with torch.no_grad():
        for x in xs + [torch.randn(batch + 1, *shapes[0])]:
            assert rel_err(ref(x), gm(x)) < 1e-5
        recorded = {n.name: n.meta[SHAPE] for n in gm.graph.nodes if n.target is F.pad}
        rerun = copy.deepcopy(gm)
        record_shapes(rerun, (xs[0],))  # the shapes crop_kernels wrote for F.pad are the real ones
        assert {n.name: n.meta[SHAPE] for n in rerun.graph.nodes if n.target is F.pad} == recorded
    return gm, cropped


def pads_in(gm):
    return [n.args[1] for n in gm.graph.nodes if n.op == "call_function" and n.target is F.pad]


def test_outer_ring_becomes_symmetric_3x3():
    conv = make_conv(zeros=[(0, 1, 1), (1, 1, 1)], padding=2)
    gm, cropped = crop_and_check(nn.Sequential(conv, nn.ReLU()), (4, 9, 9), (4, 12, 7))
    assert cropped == {"0": ((5, 5), (3, 3))}
    assert gm.get_submodule("0").padding == (1, 1) and not pads_in(gm)
    assert gm.get_submodule("0").weight.shape == (6, 4, 3, 3)


def test_top_row_left_column_inserts_pad():
    conv = make_conv(zeros=[(0, 1, 0), (1, 1, 0)], padding=2)
    gm, cropped = crop_and_check(nn.Sequential(conv), (4, 8, 8), (4, 11, 6))
    assert cropped == {"0": ((5, 5), (4, 4))} and gm.get_submodule("0").padding == (0, 0)
    assert pads_in(gm) == [(1, 2, 1, 2)]


@pytest.mark.parametrize("zeros, new", [
    ([(0, 1, 0)], (4, 5)),
    ([(1, 0, 1)], (5, 4)),
    ([(0, 2, 2), (1, 1, 1)], (1, 3)),
])
def test_rectangular_crops(zeros, new):
    _, cropped = crop_and_check(nn.Sequential(make_conv(zeros=zeros, padding=(2, 1))), (4, 7, 8), (4, 10, 5))
    assert cropped == {"0": ((5, 5), new)}


@pytest.mark.parametrize("size", [9, 10])
def test_stride_two_odd_and_even_inputs(size):
    conv = make_conv(zeros=[(0, 1, 0), (1, 0, 2)], stride=2, padding=1)
    _, cropped = crop_and_check(nn.Sequential(conv), (4, size, size), (4, size + 1, size + 2))
    assert cropped == {"0": ((5, 5), (4, 3))}


def test_dilation_two():
    conv = make_conv(zeros=[(0, 1, 1), (1, 2, 0)], dilation=2, padding=3)
    gm, cropped = crop_and_check(nn.Sequential(conv), (4, 11, 11), (4, 9, 14))
    assert cropped == {"0": ((5, 5), (3, 3))}
    assert pads_in(gm) == [(0, 3, 1, 1), (-1, 0, 0, 0)]  # grow, then drop a column only zero taps met


@pytest.mark.parametrize("groups, cin, cout", [(2, 4, 6), (4, 4, 4), (4, 4, 8)])
def test_groups_and_depthwise(groups, cin, cout):
    conv = make_conv(zeros=[(0, 1, 1), (1, 1, 0)], cin=cin, cout=cout, groups=groups, padding=2)
    gm, cropped = crop_and_check(nn.Sequential(conv), (cin, 8, 8))
    assert cropped == {"0": ((5, 5), (3, 4))} and gm.get_submodule("0").groups == groups


def test_conv1d_and_conv3d():
    gm, cropped = crop_and_check(nn.Sequential(make_conv(1, 5, [(0, 1, 1)], padding=2)), (4, 12), (4, 7))
    assert cropped == {"0": ((5,), (3,))} and not pads_in(gm)
    conv3 = make_conv(3, 3, [(0, 1, 0), (2, 1, 1)], cin=2, cout=3, padding=1)
    _, cropped = crop_and_check(nn.Sequential(conv3), (2, 5, 6, 4))
    assert cropped == {"0": ((3, 3, 3), (2, 3, 1))}


@pytest.mark.parametrize("k, dilation, zeros", [
    (5, 1, [(0, 1, 1), (1, 2, 0)]),
    (4, 1, [(0, 1, 0), (1, 0, 1)]),  # even kernel: PyTorch pads 1 before, 2 after
    (4, 2, [(0, 0, 2), (1, 1, 1)]),
])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_padding_same(k, dilation, zeros):
    conv = make_conv(k=k, zeros=zeros, padding="same", dilation=dilation)
    _, cropped = crop_and_check(nn.Sequential(conv), (4, 9, 8), (4, 6, 11))
    assert len(cropped) == 1 and all(n < k for n in cropped["0"][1])


def test_padding_valid_crops_the_input():
    conv = make_conv(zeros=[(0, 2, 1)], padding="valid")
    gm, cropped = crop_and_check(nn.Sequential(conv), (4, 9, 9), (4, 8, 5))
    assert cropped == {"0": ((5, 5), (2, 5))} and pads_in(gm) == [(0, 0, -2, -1)]


def test_input_shorter_than_the_crop():
    # pads (2, -2): a single F.pad would crop a length-1 input before padding it and fail
    conv = make_conv(1, 3, [(0, 0, 2)], padding="same", dilation=2)
    gm, cropped = crop_and_check(nn.Sequential(conv), (4, 1), (4, 2), (4, 5))
    assert cropped == {"0": ((3,), (1,))} and pads_in(gm) == [(2, 0), (0, -2)]


def test_no_zero_taps_untouched():
    model = nn.Sequential(make_conv(padding=2), nn.ReLU(), make_conv(cin=6, k=3, padding=1, stride=2))
    gm = archc.trace(model, (torch.randn(2, 4, 8, 8),))
    before = [gm.get_submodule("0"), gm.get_submodule("2")]
    code = gm.code
    assert crop_kernels(gm) == {}
    assert [gm.get_submodule("0"), gm.get_submodule("2")] == before and gm.code == code


def test_transposed_conv_untouched_and_reflect_padding_cropped_behind_its_own_pad():
    reflect = make_conv(zeros=[(0, 1, 1)], padding=2, padding_mode="reflect")
    transposed = nn.ConvTranspose2d(6, 4, 3)
    with torch.no_grad():
        transposed.weight[:, :, 0] = 0
    model = nn.Sequential(reflect, transposed).eval()
    x = torch.randn(2, 4, 8, 8)
    gm = archc.trace(model, (x,))
    # torch.export writes reflect padding as its own F.pad: the conv behind it pads with zeros
    assert crop_kernels(gm) == {"0": ((5, 5), (3, 5))}
    assert rel_err(model(x), gm(x)) < 1e-5
    assert isinstance(gm.get_submodule("1"), nn.ConvTranspose2d) and gm.get_submodule("1").weight.shape[-2] == 3


def test_all_zero_kernel_keeps_one_tap_and_bias():
    conv = make_conv(zeros=[(0, 5, 0)], padding=1, stride=2)
    _, cropped = crop_and_check(nn.Sequential(conv), (4, 8, 9), (4, 7, 6))
    assert cropped == {"0": ((5, 5), (1, 1))}


class Shared(nn.Module):
    """One conv called twice, nested under a dotted path, next to an untouched conv."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(make_conv(zeros=[(0, 0, 1), (1, 1, 0)], cin=4, cout=4, padding=1))
        self.head = make_conv(cin=4, cout=2, k=1)

    def forward(self, x):
        return self.head(self.body(torch.relu(self.body(x))))


def test_shared_conv_padded_at_every_call():
    gm, cropped = crop_and_check(Shared(), (4, 9, 9), (4, 6, 7))
    assert cropped == {"body.0": ((5, 5), (4, 4))} and len(pads_in(gm)) == 2


def test_onnx_at_another_batch(tmp_path):
    model = nn.Sequential(make_conv(zeros=[(0, 1, 1), (1, 1, 1)], padding=2), nn.ReLU(),
                          make_conv(cin=6, cout=3, zeros=[(0, 2, 0), (1, 0, 1)], padding=1, stride=2))
    ref = copy.deepcopy(model).eval()
    x = torch.randn(2, 4, 10, 10)
    gm = archc.trace(model, (x,))
    assert len(crop_kernels(gm)) == 2 and pads_in(gm) == [(1, 0, 0, 1), (0, 0, -1, 0)]  # crops a row
    res = export_onnx(gm, (x,), tmp_path / "crop.onnx")
    x5 = torch.randn(5, 4, 10, 10)
    (got,) = run_onnx(onnx_session(res.path), [x5])
    with torch.no_grad():
        assert rel_err(ref(x5), torch.from_numpy(np.asarray(got))) < 1e-5


@st.composite
def conv_cases(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 2]))
    ks = [draw(st.integers(1, 5 if dims < 3 else 3)) for _ in range(dims)]
    zeros = []
    for d, k in enumerate(ks):
        lo = draw(st.integers(0, k))
        zeros.append((d, lo, draw(st.integers(0, k - lo))))
    dilation = draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["int", "int", "same", "valid"]))
    stride = 1 if mode == "same" else draw(st.integers(1, 3))
    padding = mode if mode != "int" else tuple(draw(st.integers(0, 3)) for _ in ks)
    total_pad = {"int": [2 * p for p in padding] if mode == "int" else None,
                 "same": [dilation * (k - 1) for k in ks], "valid": [0] * dims}[mode]
    smallest = [max(1, dilation * (k - 1) + 1 - p) for k, p in zip(ks, total_pad)]  # one output at least
    sizes = [tuple(m + draw(st.integers(0, 4)) for m in smallest) for _ in range(2)]
    conv = make_conv(dims, tuple(ks), zeros, cin=2, cout=2, groups=groups, stride=stride,
                     dilation=dilation, padding=padding, seed=draw(st.integers(0, 9)))
    return conv, sizes


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_crop_property(case):
    conv, sizes = case
    old = tuple(conv.kernel_size)
    gm, cropped = crop_and_check(nn.Sequential(conv), *[(2, *s) for s in sizes])
    new = tuple(gm.get_submodule("0").kernel_size)
    assert all(n <= o for n, o in zip(new, old))
    assert cropped == ({} if new == old else {"0": (old, new)})
    assert gm.get_submodule("0").stride == conv.stride
