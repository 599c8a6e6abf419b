"""Masks to models on the in-package zoo, training with masks, and errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import qcqp_prune as qp
from qcqp_prune import zoo
from helpers import assert_state_unchanged, check_slim_matches_mask, random_masks, randomize, state_snapshot


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_slim_equals_mask_and_costs_are_exact(name):
    torch.manual_seed(0)
    model = randomize(zoo.MODELS[name]())
    g = check_slim_matches_mask(model, torch.randn(2, 3, 32, 32))
    if name.startswith("resnet"):
        # the paper's CIFAR ResNets: one stream group per stage (merged by the adds) plus one
        # inner group per block, all prunable
        depth = int(name[6:])
        assert len(g.prunable_groups) == 3 + 3 * (depth - 2) // 6
    else:
        assert len(g.prunable_groups) == 13


def test_masked_channels_stay_zero_when_training_and_bake_restores_keys():
    torch.manual_seed(0)
    model = randomize(zoo.resnet20())
    x = torch.randn(4, 3, 32, 32)
    g = qp.trace(model, x)
    masks = random_masks(g, 3)
    masked = qp.mask_model(model, g, masks).train()
    opt = torch.optim.SGD(masked.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        masked(x).square().mean().backward()
        opt.step()
    conv = masked.layer1[0].conv1
    removed = np.flatnonzero(~masks[g.group("layer1.0.conv1").id])
    assert removed.size and torch.all(conv.weight[removed] == 0)
    assert "layer1.0.conv1.parametrizations.weight.original" in masked.state_dict()
    qp.bake_masks(masked)
    assert "layer1.0.conv1.weight" in masked.state_dict()
    assert torch.all(masked.layer1[0].conv1.weight[removed] == 0)
    # the baked model still equals the slimmed one (same trained weights, removed channels cut)
    masked.eval()
    slim = qp.slim_model(masked, g, masks).eval()
    with torch.no_grad():
        assert torch.allclose(slim(x), masked(x), rtol=1e-4, atol=1e-5)


def test_tracing_a_model_in_train_mode_changes_nothing():
    torch.manual_seed(0)
    model = randomize(zoo.resnet20()).train()
    before = state_snapshot(model)
    g = qp.trace(model, torch.randn(2, 3, 32, 32))
    qp.slim_model(model, g, random_masks(g))
    qp.mask_model(model, g, random_masks(g))
    assert_state_unchanged(model, before)
    assert all(m.training for m in model.modules())


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            return self.c(x)
        return self.c(-x)


def test_untraceable_model_names_the_construct_and_the_workaround():
    model = Untraceable()
    before = state_snapshot(model)
    with pytest.raises(qp.TraceError) as e:
        qp.trace(model, torch.randn(1, 3, 4, 4))
    msg = str(e.value)
    assert "if x.sum() > 0" in msg and "leaf_modules" in msg
    assert_state_unchanged(model, before)


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Untraceable()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.inner(x))


def test_leaf_modules_work_around_untraceable_parts_and_freeze_them():
    g = qp.trace(Wrapper(), torch.randn(1, 3, 4, 4), leaf_modules=["inner"])
    assert any("Untraceable inner" in r for rs in g.frozen_reasons.values() for r in rs)


def test_wrong_input_shape_is_a_clear_error():
    model = zoo.resnet20()
    before = state_snapshot(model)
    with pytest.raises(qp.TraceError, match=r"failed at node `conv1`.*input shapes \[\(1, 5, 32, 32\)\]"):
        qp.trace(model, torch.randn(1, 5, 32, 32))
    with pytest.raises(TypeError, match="example_inputs must be a tensor"):
        qp.trace(model, [[1, 2]])
    with pytest.raises(qp.TraceError, match="does not accept 2 example"):
        qp.trace(model, (torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)))
    assert_state_unchanged(model, before)


def test_bad_masks_are_rejected_and_leave_the_model_alone():
    torch.manual_seed(0)
    model = zoo.resnet20()
    g = qp.trace(model, torch.randn(1, 3, 32, 32))
    before = state_snapshot(model)
    good = random_masks(g)
    with pytest.raises(ValueError, match="got 3 masks but the model has"):
        qp.slim_model(model, g, good[:3])
    inner = g.group("layer1.0.conv1")
    bad = list(good)
    bad[inner.id] = np.ones(inner.size + 1, dtype=bool)
    with pytest.raises(ValueError, match=r"'layer1.0.conv1' has shape \(17,\); expected \(16,\)"):
        qp.mask_model(model, g, bad)
    bad[inner.id] = np.zeros(inner.size, dtype=bool)
    with pytest.raises(ValueError, match="keeps no channel"):
        qp.slim_model(model, g, bad)
    with pytest.raises(ValueError, match="is frozen"):
        qp.slim_model(model, g, {"input:x": np.array([True, False, True])})
    with pytest.raises(KeyError, match="no channel group named"):
        qp.slim_model(model, g, {"nope": np.ones(3, dtype=bool)})
    assert_state_unchanged(model, before)
