"""Graph passes, imported as ``archc.passes``. Each takes a GraphModule and returns one.

Example:
    >>> gm = archc.passes.insert_filters(archc.trace(model, (x,)))
"""
from .gates_on_weights import gates_on_weights
from .insert_block_gates import insert_block_gates
from .insert_filters import insert_filters
from .insert_search_params import insert_channel_select, insert_grouped, insert_kernel_masks

__all__ = ["gates_on_weights", "insert_filters", "insert_block_gates", "insert_kernel_masks", "insert_channel_select", "insert_grouped"]
