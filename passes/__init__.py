"""Graph passes, imported as ``archc.passes``. Each takes a GraphModule and returns one.

Example:
    >>> gm = archc.passes.insert_filters(archc.trace(model, (x,)))
"""
from .insert_filters import insert_filters

__all__ = ["insert_filters"]
