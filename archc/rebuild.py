"""Rebuild a (possibly shrunk) gated model from its model factory and surviving gate channels.

A checkpoint does not pickle the model: it records, for each gate, which of its original
channels survive. Tracing the user's model again, gating it the same way, closing the other
channels and compacting without folding gives back the exact architecture whose weights
the checkpoint holds.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import torch
import torch.fx as fx

from .compact import shrink_live
from .errors import UserFileError
from . import passes
from .passes import insert_filters
from .capture import trace
from .model_io import call_inputs


def search_options(settings: dict) -> dict:
    """Which search parametrizations a search's settings ask for."""
    return {"kernel": settings.get("kernel_lam", 0) > 0, "select": settings.get("select_lam", 0) > 0,
            "sparsemax": settings.get("sparsemax", False), "patterns": settings.get("patterns", 0),
            "patterns_init": settings.get("patterns_init", "random"),
            "patterns_form": settings.get("patterns_form", "lasso"), "depth": settings.get("depth_lam", 0) > 0}


def build_gated(
    model_fn: Callable[[], torch.nn.Module], example_inputs: Union[tuple, dict],
    kept: Optional[dict[str, torch.Tensor]] = None, gate_init: str = "uniform",
    search: Optional[dict] = None, gate_sizes: Optional[dict[str, int]] = None,
) -> fx.GraphModule:
    """Trace ``model_fn()``, gate it, add the ``search`` parametrizations, and shrink it to the
    ``kept`` gate channels (if given). ``gate_sizes``: each gate's width when the search started,
    which the model must still have."""
    gated = insert_filters(trace(model_fn(), *call_inputs(example_inputs)), init=gate_init)
    search = search or {}
    if search.get("kernel"):
        passes.insert_kernel_masks(gated)
    if search.get("select"):
        passes.insert_channel_select(gated, use_sparsemax=search.get("sparsemax", False))
    if search.get("patterns"):
        passes.insert_grouped(gated, patterns=search["patterns"], init=search.get("patterns_init", "random"),
                              form=search.get("patterns_form", "lasso"))
    if search.get("depth"):
        passes.insert_block_gates(gated)
    if not kept:
        return gated
    names = {name for name, m in gated.named_modules() if m.__class__.__name__ == "Filter"}
    if set(kept) != names:
        raise UserFileError(
            "the model no longer has the channel groups the checkpoint was made with "
            f"(gates {sorted(set(kept) ^ names)[:5]} differ).\n  fix: use the model file the search ran on"
        )
    shrunk = False
    with torch.no_grad():
        for name, channels in kept.items():
            gate = gated.get_submodule(name)
            if gate_sizes and gate_sizes.get(name, gate.size) != gate.size:
                raise UserFileError(
                    f"gate {name!r} has {gate.size} channels in this model, but {gate_sizes[name]} in the model "
                    "the search ran on: the checkpoint does not fit this model file.\n"
                    "  fix: use the model file the search ran on")
            if int(channels.max()) >= gate.size:
                raise UserFileError(
                    f"gate {name!r} keeps channel {int(channels.max())}, but the model's gate has {gate.size} "
                    "channels.\n  fix: use the model file the search ran on, or an intact checkpoint")
            closed = torch.ones(gate.size, dtype=torch.bool)
            closed[channels] = False
            gate.theta[closed] = -1.0
            gate.theta[~closed] = gate.theta[~closed].abs() + 1.0  # open, whatever their init
            shrunk |= bool(closed.any())
    return shrink_live(gated, trials=1).gm if shrunk else gated


def gated_from_checkpoint(state: dict, model_fn: Callable[[], torch.nn.Module],
                          example_inputs: Union[tuple, dict]) -> fx.GraphModule:
    """The shrunk gated model a checkpoint holds: the model rebuilt to its ``kept`` channels and
    its ``model_state`` loaded (the one load path of ``--resume`` and ``archc compact``)."""
    gated = build_gated(model_fn, example_inputs, state["kept"], search=search_options(state["settings"]),
                        gate_sizes=state.get("gate_sizes"))
    try:
        gated.load_state_dict(state["model_state"])
    except RuntimeError as exc:
        problem = " ".join(line.strip() for line in str(exc).splitlines()[1:3]) or str(exc)
        raise UserFileError(f"the checkpoint's weights do not fit the model ({problem[:300]}).\n"
                            "  fix: use the model file the search ran on, or an intact checkpoint") from None
    return gated
