"""The registry of op facts: every op states every fact (or says it does not apply), and the
facts that used to live in separate tables now agree for every layer type."""
import torch
from torch import nn

import archc
from archc.rules.registry import FACT_NAMES, MISSING, NA, REGISTRY, facts_of, layer_fact


def test_every_registered_op_states_every_fact():
    unsaid = {(getattr(k, "__name__", str(k)), name) for k, f in REGISTRY.items() for name in FACT_NAMES
              if getattr(f, name) is MISSING}
    assert not unsaid, f"facts nobody stated: {sorted(unsaid)}"


def test_layers_that_make_channels_can_fold_cost_and_locate_them():
    for layer in (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.BatchNorm2d, nn.SyncBatchNorm,
                  nn.InstanceNorm2d, nn.GroupNorm, nn.Embedding):
        entry = REGISTRY[layer]
        for name in ("analyse", "shrink", "fold", "makes", "cost", "channel_dim"):
            assert entry.get(name) is not None, (layer.__name__, name)


def test_a_searched_layer_finds_its_base_types_facts():
    class Searched(nn.Conv2d):
        pass

    assert layer_fact(Searched(2, 3, 1), "fold") is layer_fact(nn.Conv2d(2, 3, 1), "fold")


def test_every_op_in_captured_zoo_graphs_is_known_or_reported():
    from zoo import ZOO

    for name in ("resnet", "vit", "convnext", "unet"):
        model, inputs = ZOO[name]()
        gm = archc.trace(model, inputs)
        an = archc.analyse(gm)
        for node in gm.graph.nodes:
            known = facts_of(node, gm) is not None and facts_of(node, gm).analyse is not NA
            assert known or node.name in an.unknown_ops, (name, node.format_node())
