"""lower_grouped_conv: the lowered graph equals a conv with W_eff = W * (P @ S).T, in every form."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn

import archc
from archc.das.grouped_lowering import describe_patterns, lower_grouped_conv
from archc.meta import SHAPE


class Net(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.block = nn.Sequential(conv)

    def forward(self, x):
        return torch.relu(self.block(x)) + 1.0


def structured(c_in, c_out, ins, outs, seed=0):
    """P, S with random non-zero values on the given pattern sets (lists of index lists)."""
    gen = torch.Generator().manual_seed(seed)
    P, S = torch.zeros(c_in, len(ins)), torch.zeros(len(ins), c_out)
    for k, (i, o) in enumerate(zip(ins, outs)):
        P[i, k] = torch.rand(len(i), generator=gen) + 0.5
        S[k, o] = torch.rand(len(o), generator=gen) + 0.5
    return P, S


def lower(conv, P, S, x):
    """Trace Net(conv), lower its conv; return (form, lowered gm, reference output)."""
    torch.manual_seed(1)
    for p in conv.parameters():
        nn.init.normal_(p)
    net = Net(conv).eval()
    gm = archc.trace(net, (x,))
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == "block.0")
    form = lower_grouped_conv(gm, node, P, S)
    mask = (P @ S).T.reshape(*conv.weight.shape[:2], *[1] * (conv.weight.dim() - 2))
    fn = F.conv2d if isinstance(conv, nn.Conv2d) else F.conv1d
    with torch.no_grad():
        ref = torch.relu(fn(x, conv.weight * mask, conv.bias, conv.stride, conv.padding, conv.dilation)) + 1.0
    return form, gm, ref


def assert_exact(gm, x, ref):
    with torch.no_grad():
        got = gm(x)
    assert got.shape == ref.shape
    assert (got - ref).norm() <= 1e-5 * max(float(ref.norm()), 1.0)
    assert all(isinstance(n.meta.get(SHAPE), tuple) for n in gm.graph.nodes if n.op not in ("output",))


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def convs(gm):
    return [m for m in gm.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]


X = torch.randn(2, 6, 9, 9)
CASES = {  # name: (ins, outs, expected form)
    "disjoint_equal": ([[0, 1, 2], [3, 4, 5]], [[0, 1, 2, 3], [4, 5, 6, 7]], "grouped"),
    "permuted": ([[5, 0, 3], [1, 4, 2]], [[7, 2, 0, 5], [1, 6, 3, 4]], "grouped"),
    "unused_inputs": ([[0, 4], [2, 5]], [[1, 3, 5, 7], [0, 2, 4, 6]], "grouped"),
    "overlapping": ([[0, 1, 2, 3], [2, 3, 4, 5]], [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]], "patterns"),
    "sizes_differ": ([[0, 1], [2, 3, 4, 5]], [[0, 1, 2], [3, 4, 5, 6, 7]], "patterns"),
    "one_pattern": ([[1, 3]], [[0, 1, 2, 3, 4, 5, 6, 7]], "grouped"),
    "one_partial": ([[1, 3]], [[0, 2, 6]], "patterns"),
    "uncovered": ([[0, 1, 2], [3, 4, 5]], [[0, 1], [2, 3]], "patterns"),
    "zero": ([[], [0, 1]], [[0, 1], []], "dense"),
    "full": ([[0, 1, 2, 3, 4, 5]], [list(range(8))], "dense"),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("stride,padding,bias", [(1, 1, True), (2, 0, False), (2, 2, True)])
def test_forms_are_exact(name, stride, padding, bias):
    ins, outs, want = CASES[name]
    P, S = structured(6, 8, ins, outs)
    conv = nn.Conv2d(6, 8, 3, stride=stride, padding=padding, bias=bias)
    form, gm, ref = lower(conv, P, S, X)
    assert form == want
    assert_exact(gm, X, ref)
    assert not any(n.target == "block.0" for n in gm.graph.nodes)


def test_disjoint_is_one_real_grouped_conv():
    ins, outs, _ = CASES["permuted"]
    P, S = structured(6, 8, ins, outs)
    conv = nn.Conv2d(6, 8, 3, padding=1)
    dense = n_params(conv)
    form, gm, ref = lower(conv, P, S, X)
    assert form == "grouped"
    (grouped,) = convs(gm)
    assert grouped.groups == 2 and grouped.weight.shape == (8, 3, 3, 3)
    assert n_params(gm) < dense
    assert_exact(gm, X, ref)


def test_identity_gathers_are_skipped():
    P, S = structured(6, 8, *CASES["disjoint_equal"][:2])
    _, gm, _ = lower(nn.Conv2d(6, 8, 1), P, S, X)
    assert not any(n.target is torch.index_select for n in gm.graph.nodes)


def test_conv1d_padding_mode_and_dilation():
    x = torch.randn(2, 6, 11)
    P, S = structured(6, 8, *CASES["overlapping"][:2])
    form, gm, ref = lower(nn.Conv1d(6, 8, 3, dilation=2, padding=2), P, S, x)
    assert form == "patterns"
    assert_exact(gm, x, ref)
    conv = nn.Conv2d(6, 8, 3, padding=1, padding_mode="circular")
    P, S = structured(6, 8, *CASES["permuted"][:2])
    _, gm, _ = lower(conv, P, S, X)
    with torch.no_grad():
        mask = (P @ S).T[:, :, None, None]
        ref = torch.relu(F.conv2d(F.pad(X, (1, 1, 1, 1), mode="circular"), conv.weight * mask, conv.bias)) + 1
    assert_exact(gm, X, ref)


def test_describe_patterns():
    d = describe_patterns(*structured(6, 8, *CASES["uncovered"][:2]))
    assert d["n_patterns"] == 2 and d["in_sizes"] == [3, 3] and d["out_sizes"] == [2, 2]
    assert d["inputs_disjoint"] and d["outputs_disjoint"] and not d["covers_outputs"]
    assert describe_patterns(*structured(6, 8, *CASES["zero"][:2]))["n_patterns"] == 0


def test_bad_node_raises():
    gm = archc.trace(nn.Sequential(nn.Conv2d(6, 8, 3, groups=2)), (X,))
    node = next(n for n in gm.graph.nodes if n.op == "call_module")
    with pytest.raises(archc.CompactionError):
        lower_grouped_conv(gm, node, torch.ones(6, 2), torch.ones(2, 8))


@pytest.mark.parametrize("name", ["permuted", "overlapping", "uncovered"])
def test_onnx_export(name, tmp_path):
    from archc.export import export_onnx, onnx_session, run_onnx

    P, S = structured(6, 8, *CASES[name][:2])
    _, gm, _ = lower(nn.Conv2d(6, 8, 3, stride=2, padding=1), P, S, X)
    res = export_onnx(gm, (X,), tmp_path / "m.onnx")
    x5 = torch.randn(5, 6, 9, 9)
    (got,) = run_onnx(onnx_session(res.path), [x5])
    with torch.no_grad():
        want = gm(x5).numpy()
    assert abs(got - want).max() <= 1e-4 * max(abs(want).max(), 1.0)


@st.composite
def problems(draw):
    c_in, c_out, p = draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    value = st.one_of(st.just(0.0), st.floats(-2, 2, allow_subnormal=False, width=32))
    P = torch.tensor([[draw(value) for _ in range(p)] for _ in range(c_in)])
    S = torch.tensor([[draw(value) for _ in range(c_out)] for _ in range(p)])
    mode = draw(st.sampled_from(["free", "disjoint", "round_robin"]))
    if mode != "free":  # disjoint sets: each input in <= 1 pattern (-1: none), each output in 1
        def owners(n, lo):
            if mode == "round_robin":  # equal sizes when p divides n: the grouped form
                return [j % p for j in draw(st.permutations(range(n)))]
            return draw(st.lists(st.integers(lo, p - 1), min_size=n, max_size=n))
        P = (P.abs() + 0.5) * F.one_hot(torch.tensor(owners(c_in, -1)) % (p + 1), p + 1)[:, :p]
        S = (S.abs() + 0.5) * F.one_hot(torch.tensor(owners(c_out, 0)), p).T
    conv = nn.Conv2d(c_in, c_out, draw(st.sampled_from([1, 3])), stride=draw(st.sampled_from([1, 2])),
                     padding=draw(st.integers(0, 1)), bias=draw(st.booleans()))
    return conv, P, S


@settings(max_examples=40, deadline=None)
@given(problems())
def test_random_patterns_are_exact(problem):
    conv, P, S = problem
    x = torch.randn(2, conv.in_channels, 5, 5)
    form, gm, ref = lower(conv, P, S, x)
    assert form in ("grouped", "patterns", "dense")
    assert_exact(gm, x, ref)
    if form != "dense":
        assert n_params(gm) < n_params(conv)
