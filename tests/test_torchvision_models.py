"""Every family of torchvision classification models: slim == mask, counted == modeled costs.

The default run covers a representative list (one small member per family); ``-m slow`` runs
all classification models torchvision ships.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import qcqp_prune as qp
from helpers import check_slim_matches_mask, randomize

CI_MODELS = [
    "resnet18", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "alexnet", "densenet121",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s",
    "mnasnet0_5", "regnet_x_400mf", "regnet_y_400mf", "shufflenet_v2_x0_5", "squeezenet1_1",
    "googlenet", "inception_v3", "convnext_tiny", "vit_b_16", "swin_t",
]
NEEDS_224 = ("vit", "swin", "maxvit", "alexnet")


def build(name: str):
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **kw)
    size = 299 if name == "inception_v3" else 224 if name.startswith(NEEDS_224) else 64
    return randomize(model).eval(), torch.randn(1, 3, size, size)


def check(name: str) -> qp.ChannelGraph:
    model, x = build(name)
    return check_slim_matches_mask(model, x, rtol=1e-4)


@pytest.mark.parametrize("name", CI_MODELS)
def test_representative_models(name):
    g = check(name)
    if name.startswith(("vit", "swin")):
        # attention is opaque to the tracer and frozen, with the op named; MLP hidden layers prune
        reasons = " ".join(r for rs in g.frozen_reasons.values() for r in rs)
        assert "MultiheadAttention" in reasons or "shifted_window_attention" in reasons
    assert g.prunable_groups, f"{name}: nothing prunable"


ALL = sorted(torchvision.models.list_models(module=torchvision.models))


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_all_classification_models(name):
    check(name)
