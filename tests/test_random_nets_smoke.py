"""Smoke test: random_networks() draws runnable, fx-traceable, finite networks."""
import os
import sys

import torch
import torch.fx
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, os.path.dirname(__file__))
from random_nets import random_networks  # noqa: E402


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_networks())
def test_random_network_runs(net):
    model, inputs = net
    with torch.no_grad():
        out = model(*inputs)
        assert out.shape == (2, model.n_classes)
        assert torch.isfinite(out).all()
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(*inputs), out)
