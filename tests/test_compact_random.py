"""Property: any random network, gated and with random channels killed, compacts exactly."""
import torch
from conftest import kill_channels, n_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from random_nets import random_networks

import archc
from archc.verify import max_relative_error


@settings(max_examples=int(__import__("os").environ.get("ARCHC_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_networks(), st.floats(0.1, 0.9), st.integers(0, 2**31 - 1))
def test_random_network_compacts_to_the_gated_model(net, fraction, seed):
    model, inputs = net
    gated = archc.passes.insert_filters(archc.trace(model, inputs))
    removed = kill_channels(gated, fraction, seed)
    small = archc.compact(gated)  # raises CompactionError if it differs
    assert max_relative_error(gated, small, inputs, dtype=torch.float64) < 1e-5
    assert not any(isinstance(m, archc.Filter) for m in small.modules())
    if removed:
        assert n_params(small) < n_params(gated)
    torch.testing.assert_close(small(*inputs).shape, model(*inputs).shape)
