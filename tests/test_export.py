"""Tests for archc.export: dynamic batch, atomic write, numerical check."""
from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from archc import export as ex
from archc import onnx_check
from archc.errors import ExportError


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))

    def forward(self, x):
        return self.net(x)


class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class TwoInTwoOut(nn.Module):
    """A float input and an integer input; a per-sample and a scalar output."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.fc = nn.Linear(4, 4)

    def forward(self, x, ids):
        y = self.fc(x) + self.emb(ids).sum(1)
        return y.view(y.size(0), -1), y.sum()


def _bn_with_stats(model: nn.Module) -> nn.Module:
    """Give BatchNorm non-trivial running statistics so eval mode matters."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 8, 8) * 2 + 1)
    return model


def _batch_dims(path) -> list[str]:
    graph = onnx.load(str(path)).graph
    return [v.type.tensor_type.shape.dim[0].dim_param for v in [*graph.input, *graph.output]
            if v.type.tensor_type.shape.dim]


def _no_temp_files(folder) -> bool:
    return all(not n.endswith((".tmp", ".data")) for n in os.listdir(folder))


@pytest.mark.parametrize("make,shape", [(MLP, (2, 8)), (lambda: _bn_with_stats(ConvBN()), (2, 3, 8, 8))])
def test_export_dynamic_batch(tmp_path, make, shape):
    model = make()
    x = torch.randn(*shape)
    res = ex.export_onnx(model, (x,), tmp_path / "m.onnx")
    assert res.path == tmp_path / "m.onnx" and res.path.exists()
    assert res.providers and res.max_abs_err is not None and res.max_abs_err < 1e-4
    assert all(d == "batch" for d in _batch_dims(res.path))
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    # batch 5, never seen during export or checking
    x5 = torch.randn(5, *shape[1:])
    (got,) = ex.run_onnx(ex.onnx_session(res.path), [x5])
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x5).numpy(), rtol=1e-4, atol=1e-5)


def test_export_restores_training_mode(tmp_path):
    model = _bn_with_stats(ConvBN())
    assert model.training
    ex.export_onnx(model, torch.randn(2, 3, 8, 8), tmp_path / "m.onnx")
    assert model.training


def test_export_fx_graph_module_batch_one(tmp_path):
    gm = torch.fx.symbolic_trace(_bn_with_stats(ConvBN()).eval())
    res = ex.export_onnx(gm, (torch.randn(1, 3, 8, 8),), tmp_path / "sub" / "gm.onnx")
    sess = ex.onnx_session(res.path)
    (got,) = ex.run_onnx(sess, [np.random.randn(5, 3, 8, 8).astype(np.float32)])
    assert got.shape == (5, 5)


def test_export_multi_io_and_int_inputs(tmp_path):
    gm = torch.fx.symbolic_trace(TwoInTwoOut())
    x, ids = torch.randn(2, 4), torch.randint(0, 10, (2, 3))
    res = ex.export_onnx(gm, (x, ids), tmp_path / "m.onnx")
    sess = ex.onnx_session(res.path)
    x5, ids5 = torch.randn(5, 4), torch.randint(0, 10, (5, 3))
    out, total = ex.run_onnx(sess, [x5, ids5])
    want, want_total = gm(x5, ids5)
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(total, want_total.detach().numpy(), rtol=1e-4, atol=1e-4)


def test_unused_input_is_skipped(tmp_path):
    class IgnoresMask(nn.Module):
        def forward(self, x, mask):
            return x * 2

    res = ex.export_onnx(IgnoresMask(), (torch.randn(2, 3), torch.ones(2, 3)), tmp_path / "m.onnx")
    (got,) = ex.run_onnx(ex.onnx_session(res.path), [np.ones((4, 3), np.float32), None])
    assert got.shape == (4, 3) and float(got.max()) == 2.0


def test_random_like_respects_dtype_and_range():
    ids = torch.tensor([[3, 7], [5, 4]])
    x, r = onnx_check._random_like((torch.randn(2, 4), ids), 3)
    assert x.shape == (3, 4) and x.dtype == torch.float32
    assert r.shape == (3, 2) and r.dtype == torch.int64 and r.min() >= 3 and r.max() <= 7


def test_export_emits_no_warnings(tmp_path, recwarn):
    warnings.simplefilter("always")
    ex.export_onnx(MLP(), torch.randn(2, 8), tmp_path / "m.onnx")
    assert not [w for w in recwarn if "onnx" in str(w.message).lower()], [str(w.message) for w in recwarn]


def test_mismatch_raises_and_leaves_nothing(tmp_path, monkeypatch):
    real = ex.run_onnx

    def perturbed(session, inputs):
        return [o + 0.1 for o in real(session, inputs)]

    monkeypatch.setattr(onnx_check, "run_onnx", perturbed)
    with pytest.raises(ExportError, match=r"output 0 differs.*max abs error 0\.1"):
        ex.export_onnx(MLP(), (torch.randn(2, 8),), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_mismatch_keeps_existing_file(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    monkeypatch.setattr(onnx_check, "run_onnx", lambda s, i: [np.zeros((1, 1), np.float32)])
    with pytest.raises(ExportError, match="output 0"):
        ex.export_onnx(MLP(), (torch.randn(2, 8),), target)
    assert target.read_bytes() == b"old" and _no_temp_files(tmp_path)


def test_hard_coded_batch_is_reported(tmp_path):
    class Fixed(nn.Module):
        def forward(self, x):
            return x.reshape(2, 12) * 2

    with pytest.raises(ExportError, match="batch"):
        ex.export_onnx(Fixed(), torch.randn(2, 3, 4), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_check_false_skips_onnxruntime(tmp_path):
    res = ex.export_onnx(MLP(), (torch.randn(2, 8),), tmp_path / "m.onnx", check=False)
    assert res.path.exists() and res.providers == [] and res.max_abs_err is None


def test_export_failure_falls_back_then_raises(tmp_path, monkeypatch):
    calls = []

    def broken(*args, **kwargs):
        calls.append(kwargs.get("dynamo"))
        raise RuntimeError("unsupported op foo")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(ExportError, match="unsupported op foo"):
        ex.export_onnx(MLP(), (torch.randn(2, 8),), tmp_path / "m.onnx")
    assert calls == [False, True]
    assert os.listdir(tmp_path) == []


def test_dynamo_fallback_exports(tmp_path, monkeypatch):
    real = torch.onnx.export

    def legacy_broken(*args, **kwargs):
        if not kwargs.get("dynamo"):
            raise RuntimeError("legacy exporter gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", legacy_broken)
    res = ex.export_onnx(torch.fx.symbolic_trace(MLP()), (torch.randn(2, 8),), tmp_path / "m.onnx")
    (got,) = ex.run_onnx(ex.onnx_session(res.path), [torch.randn(5, 8)])
    assert got.shape == (5, 4) and sorted(os.listdir(tmp_path)) == ["m.onnx"]


def test_onnx_session_cpu_without_cuda(tmp_path, monkeypatch):
    res = ex.export_onnx(MLP(), (torch.randn(2, 8),), tmp_path / "m.onnx")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert ex.onnx_session(res.path).get_providers() == ["CPUExecutionProvider"]


def test_onnx_session_cuda_failure_falls_back(tmp_path, monkeypatch):
    import onnxruntime as ort

    res = ex.export_onnx(MLP(), (torch.randn(2, 8),), tmp_path / "m.onnx")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    real = ort.InferenceSession

    def picky(path, opts=None, providers=None):
        if "CUDAExecutionProvider" in (providers or []):
            raise RuntimeError("libcublasLt.so: cannot open shared object file")
        return real(path, opts, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", picky)
    assert ex.onnx_session(res.path).get_providers() == ["CPUExecutionProvider"]


def test_onnx_is_checked_against_the_reference_at_two_batch_sizes(tmp_path, monkeypatch):
    import archc
    from test_verify_shapes import RightAtBatchTwo  # rows past the example's two are 1.5x off

    net, x = MLP().eval(), torch.randn(2, 8)
    reference = archc.trace(net, (x,))
    candidate = RightAtBatchTwo(net)
    ex.export_onnx(candidate, (x,), tmp_path / "alone.onnx")  # ONNX matches the wrong model itself
    with pytest.raises(ExportError, match=r"output 0 differs from the reference on a random batch of 3"):
        ex.export_onnx(candidate, (x,), tmp_path / "m.onnx", reference=reference)
    assert not (tmp_path / "m.onnx").exists() and _no_temp_files(tmp_path)
    batches = []
    real = ex.run_onnx
    monkeypatch.setattr(onnx_check, "run_onnx", lambda s, xs: batches.append(xs[0].shape[0]) or real(s, xs))
    res = ex.export_onnx(net, (x,), tmp_path / "ok.onnx", reference=reference)
    assert batches == [2, 3] and res.max_rel_err < 1e-5


def test_onnx_of_a_compact_zoo_model_passes_against_the_gated_model(tmp_path):
    import archc
    from conftest import kill_channels
    from zoo import ZOO

    model, inputs = ZOO["resnet"]()
    gated = archc.passes.insert_filters(archc.trace(model, inputs))
    kill_channels(gated, 0.3, seed=0)
    small = archc.compact(gated)
    res = ex.export_onnx(small, inputs, tmp_path / "small.onnx", reference=gated)
    assert res.max_rel_err < 1e-4 and sorted(os.listdir(tmp_path)) == ["small.onnx"]


@pytest.mark.parametrize("where", ["onnxruntime", "the reference"])
def test_nan_in_onnx_or_the_reference_is_refused(tmp_path, monkeypatch, where):
    net, x = MLP().eval(), torch.randn(2, 8)
    if where == "onnxruntime":
        real = ex.run_onnx
        monkeypatch.setattr(onnx_check, "run_onnx", lambda s, xs: [o * np.nan for o in real(s, xs)])
        reference = None
    else:
        class NanOut(nn.Module):
            def forward(self, x):
                return net(x) * float("nan")

        reference = NanOut()
    with pytest.raises(ExportError, match=f"{where}.* produced NaN or inf in output 0 on the example inputs"):
        ex.export_onnx(net, (x,), tmp_path / "m.onnx", reference=reference)
    assert os.listdir(tmp_path) == []


def _checkpoint(tmp_path):
    """A one-epoch search of tests/tiny_task.py; returns its checkpoint."""
    from pathlib import Path

    from archc.search import SearchConfig, Task, run_search
    from archc.userfile import load_user_file

    tiny = Path(__file__).with_name("tiny_task.py")
    spec = load_user_file(tiny)
    train, val = spec.data()
    task = Task(model_fn=spec.model, train=train, val=val, example_inputs=spec.example_inputs(),
                model_file=str(tiny), model_sha256=spec.sha256)
    run_search(task, SearchConfig(lam=3e-2, epochs=1, batch_size=32, lr=1e-2, out=str(tmp_path / "run")),
               progress=False)
    return tmp_path / "run" / "checkpoint.pt"


def test_compact_whose_onnx_check_fails_leaves_the_output_folder_as_it_was(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from archc.cli.main import app

    checkpoint = _checkpoint(tmp_path)
    real = ex.run_onnx
    monkeypatch.setattr(onnx_check, "run_onnx", lambda s, xs: [o + 0.1 for o in real(s, xs)])
    runner = CliRunner()
    res = runner.invoke(app, ["compact", str(checkpoint), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "differs from the reference" in res.output, res.output
    assert not (tmp_path / "out").exists()  # model.py and the weights were written, then dropped
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.py").write_text("old")
    (tmp_path / "out" / "notes.txt").write_text("mine")
    res = runner.invoke(app, ["compact", str(checkpoint), "-o", str(tmp_path / "out"), "--overwrite"])
    assert res.exit_code == 2 and "differs from the reference" in res.output, res.output
    assert sorted(os.listdir(tmp_path / "out")) == ["model.py", "notes.txt"]
    assert (tmp_path / "out" / "model.py").read_text() == "old"
    monkeypatch.setattr(onnx_check, "run_onnx", real)
    res = runner.invoke(app, ["compact", str(checkpoint), "-o", str(tmp_path / "out")])
    assert res.exit_code == 2 and "notes.txt" in res.output  # not a compact output: needs --overwrite
    res = runner.invoke(app, ["compact", str(checkpoint), "-o", str(tmp_path / "out"), "--overwrite"])
    assert res.exit_code == 0, res.output
    written = set(os.listdir(tmp_path / "out"))
    assert {"model.py", "weights.safetensors", "model.onnx", "report.json", "notes.txt"} <= written
    assert (tmp_path / "out" / "model.py").read_text() != "old"
    assert sorted(os.listdir(tmp_path)) == ["out", "run"]  # no staging folder left
