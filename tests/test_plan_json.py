"""JSON plans: lossless round trips, schema and semantic rejections, architecture checks."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torchvision

import qcqp_prune as qp
from qcqp_prune import zoo
from qcqp_prune.plan_io import PlanFormatError, plan_to_dict
from helpers import assert_state_unchanged, randomize, state_snapshot

TORCHVISION = ["resnet18", "mobilenet_v2", "efficientnet_b0", "squeezenet1_0", "googlenet"]


def _fresh_copy(model):
    clone = copy.deepcopy(model)
    return clone


@pytest.mark.parametrize("name, encoding", [(n, e) for n in sorted(zoo.MODELS) for e in ("indices", "bitmap")]
                         + [(f"tv:{n}", "bitmap") for n in TORCHVISION])
def test_round_trip_gives_the_same_slimmed_model(name, encoding, tmp_path):
    torch.manual_seed(0)
    if name.startswith("tv:"):
        kw = {"aux_logits": False, "init_weights": True} if name == "tv:googlenet" else {}
        model = randomize(torchvision.models.get_model(name[3:], weights=None, **kw)).eval()
        x = torch.randn(1, 3, 64, 64)
    else:
        model = randomize(zoo.MODELS[name]()).eval()
        x = torch.randn(1, 3, 32, 32)
    plan = qp.plan_channels(model, x, qp.Budget(flops=0.6, params=0.8), solver="greedy")
    path = tmp_path / "plan.json"
    plan.to_json(path, encoding=encoding)
    loaded = qp.load_plan(path)
    assert plan_to_dict(loaded, encoding)["groups"] == [
        {k: v for k, v in g.items() if k != "frozen"} for g in plan_to_dict(plan, encoding)["groups"]]
    assert loaded.cost == plan.cost and loaded.objective == plan.objective and loaded.budget == plan.budget
    assert loaded.layers == plan.layers
    fresh = _fresh_copy(model)
    with torch.no_grad():
        assert torch.equal(loaded.apply(fresh)(x), plan.apply(model)(x))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = zoo.resnet20().eval()
    x = torch.randn(1, 3, 32, 32)
    plan = qp.plan_channels(model, x, qp.Budget(flops=0.5), solver="greedy")
    path = tmp_path_factory.mktemp("plans") / "plan.json"
    plan.to_json(path)
    return model, json.loads(path.read_text())


def _write(tmp_path, doc) -> str:
    p = tmp_path / "bad.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


def _inner(doc):
    return next(i for i, g in enumerate(doc["groups"]) if len(g["kept"]) > 2)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("solver"), "'solver' is a required property"),
    (lambda d: d["groups"][0].__setitem__("size", "16"), r"groups\[0\]\.size: '16' is not of type 'integer'"),
    (lambda d: d["groups"][_inner(d)]["kept"].__setitem__(0, 999), r"groups\[\d+\]\.kept\[0\]: index 999 out of range"),
    (lambda d: d["groups"][_inner(d)]["kept"].__setitem__(1, d["groups"][_inner(d)]["kept"][0]), "appears more than once"),
    (lambda d: d["groups"][_inner(d)].__setitem__("kept", []), "keeps no channel"),
    (lambda d: d.__setitem__("format_version", "2.0"), "format_version: 2.0 is not supported"),
    (lambda d: d.__setitem__("format", "something-else"), "format: expected 'qcqp-prune/plan'"),
    (lambda d: d["solver"].__setitem__("status", "GREAT"), r"solver\.status"),
])
def test_malformed_plans_are_rejected_naming_the_field(saved, tmp_path, mutate, message):
    model, doc = saved
    doc = copy.deepcopy(doc)
    mutate(doc)
    with pytest.raises(PlanFormatError, match=message):
        qp.load_plan(_write(tmp_path, doc))


def test_newer_minor_version_is_read_leniently(saved, tmp_path):
    model, doc = saved
    doc = copy.deepcopy(doc)
    doc["format_version"] = "1.7"
    doc["something_new"] = {"x": 1}
    plan = qp.load_plan(_write(tmp_path, doc))
    assert plan.objective == doc["solver"]["objective"]


def test_truncated_and_non_json_files(saved, tmp_path):
    model, doc = saved
    text = json.dumps(doc)
    with pytest.raises(PlanFormatError, match="is truncated"):
        qp.load_plan(_write(tmp_path, text[: len(text) // 2]))
    with pytest.raises(PlanFormatError, match="not valid JSON"):
        qp.load_plan(_write(tmp_path, "hello, I am not a plan"))
    with pytest.raises(PlanFormatError, match="top level must be an object"):
        qp.load_plan(_write(tmp_path, "[1, 2]"))


def test_plan_for_another_architecture_is_refused_and_model_untouched(saved, tmp_path):
    model, doc = saved
    plan = qp.load_plan(_write(tmp_path, doc))
    other = zoo.resnet32().eval()
    before = state_snapshot(other)
    with pytest.raises(ValueError, match="another architecture"):
        plan.apply(other)
    assert_state_unchanged(other, before)
    vgg = zoo.vgg16().eval()
    with pytest.raises(ValueError, match="another architecture"):
        plan.apply(vgg)
