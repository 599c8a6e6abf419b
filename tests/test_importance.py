"""Importance criteria: the objective of a mask set equals what survives in the slimmed model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

import qcqp_prune as qp
from qcqp_prune import zoo
from qcqp_prune.importance import kept_importance, layer_scores, objective_terms
from helpers import random_masks, randomize


def weights_left(slim: nn.Module, how: str) -> float:
    total = 0.0
    for m in slim.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().double()
            total += float(w.square().sum() if how == "l2" else w.abs().sum())
    return total


@pytest.mark.parametrize("how", ["l2", "l1"])
@pytest.mark.parametrize("make", [zoo.resnet20, zoo.vgg16, lambda: torchvision.models.mobilenet_v2(),
                                  lambda: torchvision.models.densenet121()])
def test_objective_equals_norm_of_weights_left_in_the_slimmed_model(make, how):
    torch.manual_seed(0)
    model = randomize(make())
    x = torch.randn(1, 3, 32, 32)
    g = qp.trace(model, x)
    scores = layer_scores(model, g, how)
    for seed in range(2):
        masks = random_masks(g, seed)
        slim = qp.slim_model(model, g, masks)
        assert kept_importance(g, scores, masks) == pytest.approx(weights_left(slim, how), rel=1e-9)


def test_bn_scale_and_custom_and_taylor():
    torch.manual_seed(0)
    model = randomize(zoo.resnet20())
    x = torch.randn(8, 3, 32, 32)
    g = qp.trace(model, x)
    masks = random_masks(g, 1)
    bn = layer_scores(model, g, "bn_scale")
    slim = qp.slim_model(model, g, masks)
    left = sum(float(m.weight.detach().abs().sum()) for m in slim.modules() if isinstance(m, nn.BatchNorm2d))
    assert kept_importance(g, bn, masks) == pytest.approx(left, rel=1e-6)

    custom = lambda model, graph: {l.weight: np.ones(dict(model.named_parameters())[l.weight].shape[:2])
                                   for l in graph.layers}
    count = kept_importance(g, layer_scores(model, g, custom), masks)
    kernels = sum(m.weight.shape[0] * m.weight.shape[1] for m in slim.modules()
                  if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert count == kernels

    before = {k: v.clone() for k, v in model.state_dict().items()}
    tay = layer_scores(model, g, "taylor", data=(x, torch.randint(0, 10, (8,))))
    assert all(v.shape == dict(model.named_parameters())[k].shape[:2] for k, v in tay.items())
    assert sum(float(v.sum()) for v in tay.values()) > 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())


def test_bad_importance_is_rejected():
    model = zoo.resnet20()
    g = qp.trace(model, torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="importance='l3' is not a known criterion"):
        layer_scores(model, g, "l3")
    with pytest.raises(ValueError, match="needs data"):
        layer_scores(model, g, "taylor")
    scores = layer_scores(model, g, "l2")
    scores["conv1.weight"] = scores["conv1.weight"] * np.nan
    with pytest.raises(ValueError, match="conv1.weight contains NaN"):
        objective_terms(g, scores)
