"""Every family of torchvision classification models: slim == mask, counted == modeled costs.

The default run covers a representative list (the smallest member of each family, at the
smallest input the architecture accepts, batch 2); ``-m slow`` runs every classification
model torchvision ships (``torchvision.models.list_models(module=torchvision.models)``).

Each model gets non-trivial random weights (``randomize``), then ``check_slim_matches_mask``
draws random keep-masks (about half of every prunable group) and checks that the slimmed
model equals the masked one, that FlopCounterMode on the slimmed model equals the cost
model's FLOPs and that its parameter count equals the modeled one, and that the user's model
is untouched. The representative test also checks that a sensible share is prunable and
that what is frozen is frozen for the expected, named reason.

``build``, ``input_size`` and ``prunable_share`` are shared with ``benchmarks/zoo.py``.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

import qcqp_prune as qp
from helpers import check_slim_matches_mask, randomize

BATCH = 2

# The smallest member of each of the 20 families, plus MobileNet v3 large (the commonly used
# v3 variant); every other member runs in the slow test.
CI_MODELS = [
    "resnet18", "resnext50_32x4d", "wide_resnet50_2", "vgg11_bn", "alexnet", "densenet121",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
    "efficientnet_v2_s", "mnasnet0_5", "regnet_x_400mf", "regnet_y_400mf",
    "shufflenet_v2_x0_5", "squeezenet1_1", "googlenet", "inception_v3", "convnext_tiny",
    "vit_b_16", "swin_t",
]

ALL_MODELS = sorted(torchvision.models.list_models(module=torchvision.models))


def input_size(name: str) -> int:
    """Smallest square input the architecture accepts (checked with a forward pass):
    ViT and MaxViT fix the image size at construction (224); Inception v3 needs >= 75;
    AlexNet >= 63; everything else (Swin included: it pads to whole windows) runs at 64."""
    if name.startswith(("vit_", "maxvit")):
        return 224
    if name == "inception_v3":
        return 75
    return 64


def build(name: str, batch: int = BATCH, seed: int = 0) -> tuple[torch.nn.Module, torch.Tensor]:
    """``name`` with ``weights=None``, random non-trivial weights, eval mode, and an input."""
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    torch.manual_seed(seed)
    model = torchvision.models.get_model(name, weights=None, **kw)
    size = input_size(name)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))
    return randomize(model, seed).eval(), x


def conv_linear_weights(model: torch.nn.Module) -> dict[str, int]:
    """Name -> element count of every conv/linear weight matrix of ``model``: Conv*d and
    Linear modules (whether or not the tracer made them prunable layers) and the fused
    q/k/v projection of ``nn.MultiheadAttention``."""
    out = {}
    for mname, m in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)):
            out[f"{prefix}weight"] = m.weight.numel()
        elif isinstance(m, torch.nn.MultiheadAttention) and m.in_proj_weight is not None:
            out[f"{prefix}in_proj_weight"] = m.in_proj_weight.numel()
    return out


def prunable_share(model: torch.nn.Module, graph: qp.ChannelGraph) -> float:
    """Elements of conv/linear weights in layers with at least one prunable axis, over all
    conv/linear weight elements."""
    total = conv_linear_weights(model)
    prunable = 0
    for layer in graph.layers:
        segs = list(layer.out) + list(layer.inp or ())
        if any(not graph.groups[s.group].frozen for s in segs):
            prunable += total[layer.weight]
    return prunable / max(1, sum(total.values()))


def is_io_reason(reason: str) -> bool:
    return reason.startswith(("network input", "network output"))


def check(name: str) -> tuple[torch.nn.Module, qp.ChannelGraph]:
    model, x = build(name)
    return model, check_slim_matches_mask(model, x, rtol=1e-4)


# What may be frozen beyond the network input and output, with a floor on the prunable share
# of conv/linear weights (a few points below the measured values in benchmarks/results/zoo.md).
# Models not listed must be fully prunable: every conv/linear weight has a prunable axis and
# only the network input and output groups are frozen.
EXPECTED_FROZEN = {
    "resnext50_32x4d": ("grouped convolution", 0.90),
    "regnet_x_400mf": ("grouped convolution", 0.80),
    "regnet_y_400mf": ("grouped convolution", 0.85),
    "shufflenet_v2_x0_5": ("split/chunk along the channel axis", 0.95),
    "convnext_tiny": ("LayerNorm normalizes over the channel axis", 0.85),
    "vit_b_16": ("MultiheadAttention", 0.60),
    "swin_t": ("shifted_window_attention", 0.55),
}


@pytest.mark.parametrize("name", CI_MODELS)
def test_representative_models(name):
    model, g = check(name)
    reasons = [r for rs in g.frozen_reasons.values() for r in rs if not is_io_reason(r)]
    share = prunable_share(model, g)
    assert len(g.prunable_groups) >= 3, f"{name}: only {len(g.prunable_groups)} prunable groups"
    if name in EXPECTED_FROZEN:
        what, floor = EXPECTED_FROZEN[name]
        # e.g. ViT/Swin: attention is opaque to the tracer and frozen with the op named,
        # while the MLP hidden layers stay prunable
        assert any(what in r for r in reasons), f"{name}: no frozen reason mentions {what!r}"
        assert share >= floor, f"{name}: only {share:.1%} of conv/linear weights prunable"
    else:
        assert not reasons, f"{name}: unexpected frozen groups: {reasons[:3]}"
        assert share == 1.0, f"{name}: only {share:.1%} of conv/linear weights prunable"


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL_MODELS)
def test_all_classification_models(name):
    model, g = check(name)
    assert g.prunable_groups, f"{name}: nothing prunable"
