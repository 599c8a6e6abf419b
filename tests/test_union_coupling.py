"""Union coupling end to end (issue 7): tracing adds into OR relations, slim == mask with the
stream adapters, counted == modeled FLOPs and parameters, fallbacks, plans and JSON."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qcqp_prune as qp
from helpers import check_slim_matches_mask, counted_flops, random_masks, randomize
from qcqp_prune import zoo
from qcqp_prune.plan_io import PlanFormatError
from strategies import random_nets, random_residual_nets
from test_random_architectures import FAILURES


class CatResidual(nn.Module):
    """A stream made of two concatenated tensors, added to a conv of itself twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 5, 1)
        self.f1 = nn.Sequential(nn.Conv2d(9, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 9, 1), nn.BatchNorm2d(9))
        self.f2 = nn.Conv2d(9, 9, 1)
        self.norm = nn.BatchNorm2d(9)  # a norm on the stream itself: gathered and scattered
        self.head = nn.Linear(9 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.cat([self.a(x), self.b(x)], dim=1)
        s = s + self.f1(s)
        s = torch.relu(self.norm(s + self.f2(s)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(s, 2), 1))


MODELS = {
    "resnet20": (lambda: zoo.resnet20(), (2, 3, 32, 32)),
    "resnet56": (lambda: zoo.resnet56(), (2, 3, 32, 32)),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), (1, 3, 64, 64)),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), (1, 3, 64, 64)),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None), (1, 3, 64, 64)),
    "cat_residual": (CatResidual, (2, 3, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_union_slim_equals_mask_and_counts_match(name):
    make, shape = MODELS[name]
    model = randomize(make(), 0).eval()
    x = torch.randn(shape)
    graph = qp.trace(model, x, coupling="union")
    derived = [g for g in graph.groups if g.union_of]
    assert derived, "every model here has adds: union coupling must give them groups of their own"
    assert not graph.shared_adds
    for seed in (0, 1):
        masks = random_masks(graph, seed, keep=0.6)
        for g in derived:  # the sum keeps exactly what its operands keep
            assert np.array_equal(masks[g.id], np.logical_or.reduce([masks[i] for i in g.union_of]))
        check_slim_matches_mask(model, x, graph=graph, masks=masks)


def test_union_slim_computes_fewer_branch_channels_than_the_stream():
    model = randomize(zoo.resnet20(), 0).eval()
    x = torch.randn(2, 3, 32, 32)
    graph = qp.trace(model, x, coupling="union")
    masks = [np.ones(g.size, dtype=bool) for g in graph.groups]
    branch = graph.group("layer1.0.conv2")
    masks[branch.id][:10] = False  # the skip keeps these stream channels alive
    masks = qp.validate_masks(graph, {g.id: m for g, m in zip(graph.groups, masks) if not g.union_of})
    slim = qp.slim_model(model, graph, masks)
    assert slim.layer1[0].conv2.out_channels == 6 and slim.layer1[1].conv1.in_channels == 16
    with torch.no_grad():
        torch.testing.assert_close(slim(x), qp.mask_model(model, graph, masks)(x), rtol=1e-4, atol=1e-5)
    assert counted_flops(slim, (x,)) < counted_flops(model, (x,))


def test_shared_coupling_is_unchanged_by_default():
    model = zoo.resnet20()
    x = torch.randn(1, 3, 32, 32)
    shared, union = qp.trace(model, x), qp.trace(model, x, coupling="union")
    assert shared.coupling == "shared" and not any(g.union_of for g in shared.groups) and not shared.carrier
    assert len(union.groups) > len(shared.groups)
    assert shared.fingerprint() != union.fingerprint()


class LayerScaleStream(nn.Module):
    """The stream meets a parameter outside a module call: the gather/scatter hooks cannot
    reach it, so this add falls back to shared coupling (and says why)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.gamma = nn.Parameter(torch.ones(4, 1, 1))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        s = self.stem(x)
        s = s + self.branch(s) * self.gamma
        return self.head(s)


def test_union_falls_back_to_shared_where_a_slimmed_model_could_not_carry_it():
    model = randomize(LayerScaleStream(), 0).eval()
    x = torch.randn(1, 3, 6, 6)
    graph = qp.trace(model, x, coupling="union")
    assert not any(g.union_of for g in graph.groups)
    assert any("gamma" in why for why in graph.shared_adds)
    check_slim_matches_mask(model, x, graph=graph)


class StreamOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.branch = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        s = self.stem(x)
        return s + self.branch(s)


def test_a_frozen_sum_freezes_what_is_added_into_it():
    graph = qp.trace(StreamOutput(), torch.randn(1, 3, 4, 4), coupling="union")
    assert all(g.frozen for g in graph.groups)
    assert any("added into the frozen stream" in r for g in graph.groups for r in g.frozen_reasons)


def test_masks_must_respect_the_or_rule():
    model = zoo.resnet20()
    graph = qp.trace(model, torch.randn(1, 3, 32, 32), coupling="union")
    masks = random_masks(graph, 0)
    add = next(g for g in graph.groups if g.union_of)
    masks[add.id] = ~masks[add.id] | np.eye(1, add.size, 0, dtype=bool)[0]
    with pytest.raises(ValueError, match="must be the OR of the masks"):
        qp.validate_masks(graph, masks)


def test_bad_coupling_and_latency_with_union_raise():
    model = zoo.resnet20()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(ValueError, match="coupling='both' must be 'shared'"):
        qp.trace(model, x, coupling="both")
    graph = qp.trace(model, x, coupling="union")
    with pytest.raises(ValueError, match="traced with coupling='union'"):
        qp.plan_channels(model, x, qp.Budget(flops=0.5), graph=graph, coupling="shared")
    with pytest.raises(ValueError, match="latency budgets need coupling='shared'"):
        qp.plan_channels(model, x, qp.Budget(latency=0.5), coupling="union", latency_model=object())


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_nets(), st.integers(0, 3))
def test_random_architectures_with_union_coupling_slim_equals_mask(case, seed):
    """Random DAGs (adds of branches, concatenations, gates, layer scales, channels-last MLPs):
    union-coupled random masks slim and mask alike, with counted == modeled costs."""
    net, inputs = case
    randomize(net, 1)
    graph = qp.trace(net, inputs, coupling="union")
    check_slim_matches_mask(net, inputs, graph=graph, masks=random_masks(graph, seed))


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_residual_nets(), st.integers(0, 3))
def test_random_residual_nets_with_union_coupling_slim_equals_mask(case, seed):
    """Random residual streams, where every add has prunable operands: union coupling gives
    each sum a prunable group, and slim == mask with counted == modeled costs."""
    net, inputs = case
    randomize(net, 1)
    graph = qp.trace(net, inputs, coupling="union")
    assert any(g.union_of and not g.frozen for g in graph.groups) and not graph.shared_adds
    check_slim_matches_mask(net, inputs, graph=graph, masks=random_masks(graph, seed))


def test_union_plan_meets_its_budget_keeps_more_than_shared_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = randomize(zoo.resnet20(), 0).eval()
    x = torch.randn(1, 3, 32, 32)
    budget = qp.Budget(flops=0.4)
    shared = qp.plan_channels(model, x, budget, solver="greedy")
    plan = qp.plan_channels(model, x, budget, solver="greedy", coupling="union")
    assert plan.coupling == "union" and plan.unions
    assert plan.objective > shared.objective  # computing fewer branch channels than the stream carries pays
    slim = plan.apply(model)
    assert counted_flops(slim, (x,)) == round(plan.cost["flops"]) <= plan.limits["flops"]
    with torch.no_grad():
        expected = slim(x)
        torch.testing.assert_close(plan.apply(model, mode="mask")(x), expected, rtol=1e-4, atol=1e-5)
    path = tmp_path / "union.json"
    plan.to_json(path, encoding="bitmap")
    doc = json.loads(path.read_text())
    assert doc["coupling"] == "union" and doc["format_version"] == "1.1"
    assert sum("union_of" in g for g in doc["groups"]) == len(plan.unions)
    loaded = qp.load_plan(path)
    assert loaded.coupling == "union" and loaded.unions == plan.unions
    with torch.no_grad():
        assert torch.equal(loaded.apply(copy.deepcopy(model))(x), expected)  # re-traced with union coupling

    g = next(i for i, e in enumerate(doc["groups"]) if "union_of" in e)
    bad = copy.deepcopy(doc)
    bad["groups"][g]["kept"] = [0]
    path.write_text(json.dumps(bad))
    with pytest.raises(PlanFormatError, match=rf"groups\[{g}\].kept: must be the union"):
        qp.load_plan(path)
    bad = copy.deepcopy(doc)
    del bad["coupling"]
    path.write_text(json.dumps(bad))
    with pytest.raises(PlanFormatError, match="only a plan with coupling 'union' has unions"):
        qp.load_plan(path)


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(random_residual_nets(), st.floats(0.0, 1.0), st.sampled_from(["greedy", "cpsat"]))
def test_random_residual_union_plans_meet_their_budget_and_slim_equals_mask(case, where, solver):
    """Union plans at a random feasible FLOPs budget: the budget holds on the slimmed model
    (counted FLOPs == modeled), the bound is above the objective, and slim == mask."""
    _union_plan_holds(case, where, solver)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, database=FAILURES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.one_of(random_residual_nets(), random_nets()), st.floats(0.0, 1.0), st.sampled_from(["greedy", "cpsat"]))
def test_many_more_random_union_plans(case, where, solver):
    """New random examples on every slow run; failures are kept in tests/hypothesis-db."""
    _union_plan_holds(case, where, solver)


def _union_plan_holds(case, where: float, solver: str) -> None:
    net, inputs = case
    randomize(net, 1)
    graph = qp.trace(net, inputs, coupling="union")
    costs = qp.cost_model(graph)
    full = costs["flops"].evaluate(graph.sizes())
    smallest = costs["flops"].evaluate(qp.solvers.ChannelProblem(
        tuple(graph.sizes()), tuple(g.frozen for g in graph.groups),
        unions=tuple(qp.solvers.UnionConstraint(g.id, g.union_of) for g in graph.groups if g.union_of)).min_counts())
    limit = smallest + where * (full - smallest)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = qp.plan_channels(net, inputs, qp.Budget.absolute(flops=max(limit, 1.0)), solver=solver,
                                time_limit=0.5, graph=graph)
    assert plan.cost["flops"] <= plan.limits["flops"] * (1 + 1e-12)
    assert plan.bound is None or plan.bound >= plan.objective * (1 - 1e-9)
    check_slim_matches_mask(net, inputs, graph=graph, masks=[np.asarray(m) for m in plan.masks])


def test_group_graph_and_summary_show_the_unions():
    graph = qp.trace(zoo.resnet20(), torch.randn(1, 3, 32, 32), coupling="union")
    G = graph.group_graph()
    unions = [(a, b) for a, b, d in G.edges(data=True) if d["kind"] == "union"]
    assert len(unions) == sum(len(g.union_of) for g in graph.groups) > 0
    assert "(OR of layer1.0.conv2, conv1)" in graph.summary()
