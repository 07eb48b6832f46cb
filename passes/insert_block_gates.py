"""Pass: a depth gate on every residual branch (:mod:`archc.block_gates`)."""
from __future__ import annotations

import torch.fx as fx

from archc.block_gates import BlockGate, residual_branches


def insert_block_gates(gm: fx.GraphModule) -> fx.GraphModule:
    """Put a :class:`~archc.block_gates.BlockGate` between each residual branch and its add
    (``skip + gate(branch)``); returns ``gm`` (mutated). Run it after ``insert_filters``.

    Example:
        >>> gated = insert_block_gates(archc.passes.insert_filters(archc.trace(net, (x,))))
    """
    for i, (add, branch) in enumerate(residual_branches(gm)):
        name = f"block_gate{i}"
        gm.add_module(name, BlockGate())
        with gm.graph.inserting_after(branch):
            gate = gm.graph.call_module(name, (branch,))
        gate.meta = dict(branch.meta)  # same shape and dtype as the branch
        add.replace_input_with(branch, gate)
    gm.graph.lint()
    gm.recompile()
    return gm
