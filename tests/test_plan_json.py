"""JSON plans: lossless round trips, schema and semantic rejections, architecture checks."""

from __future__ import annotations

import copy
import dataclasses
import json
import os

import pytest
import torch
import torchvision

import qcqp_prune as qp
from qcqp_prune import zoo
from qcqp_prune.plan_io import PlanFormatError, check_plan_against_graph, plan_from_dict, plan_to_dict
from helpers import assert_state_unchanged, randomize, state_snapshot

# residual, concat (fire modules, inception), plain conv+linear, depthwise + squeeze-excite
TORCHVISION = ["resnet18", "squeezenet1_0", "googlenet", "alexnet", "mobilenet_v3_small"]


def _comparable(doc: dict) -> dict:
    """A plan document without what legitimately differs between a plan and its reload."""
    doc = {k: v for k, v in doc.items() if k not in ("created", "versions")}
    doc["groups"] = [{k: v for k, v in g.items() if k != "frozen"} for g in doc["groups"]]
    return doc


def _check_round_trip(model, x, tmp_path, encodings):
    before = state_snapshot(model)
    plan = qp.plan_channels(model, x, qp.Budget(flops=0.6, params=0.8), solver="greedy")
    with torch.no_grad():
        expected = plan.apply(model)(x)
    for encoding in encodings:
        path = tmp_path / f"plan-{encoding}.json"
        plan.to_json(path, encoding=encoding)
        loaded = qp.load_plan(path)
        assert loaded.graph is None
        # lossless: every field (floats repr-exact, None as null) comes back the same
        assert _comparable(plan_to_dict(loaded, encoding)) == _comparable(plan_to_dict(plan, encoding))
        assert loaded.cost == plan.cost and loaded.objective == plan.objective and loaded.gap == plan.gap
        assert loaded.budget == plan.budget and loaded.limits == plan.limits and loaded.layers == plan.layers
        assert all((a == b).all() for a, b in zip(loaded.masks, plan.masks))
        if encoding == encodings[0]:  # same masks for the others: applying once suffices
            fresh = copy.deepcopy(model)
            with torch.no_grad():
                assert torch.equal(loaded.apply(fresh)(x), expected)
            assert_state_unchanged(fresh, before)
    assert_state_unchanged(model, before)


@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_zoo_round_trip_gives_the_same_slimmed_model(name, tmp_path):
    torch.manual_seed(0)
    _check_round_trip(randomize(zoo.MODELS[name]()).eval(), torch.randn(1, 3, 32, 32), tmp_path,
                      ("indices", "bitmap"))


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_round_trip_gives_the_same_slimmed_model(name, tmp_path):
    torch.manual_seed(0)
    kw = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = randomize(torchvision.models.get_model(name, weights=None, **kw)).eval()
    _check_round_trip(model, torch.randn(1, 3, 64, 64), tmp_path, ("bitmap", "indices"))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = zoo.resnet20().eval()
    x = torch.randn(1, 3, 32, 32)
    plan = qp.plan_channels(model, x, qp.Budget(flops=0.5), solver="greedy")
    path = tmp_path_factory.mktemp("plans") / "plan.json"
    plan.to_json(path)
    return model, json.loads(path.read_text()), plan


def _write(tmp_path, doc) -> str:
    p = tmp_path / "bad.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


def _inner(doc):
    return next(i for i, g in enumerate(doc["groups"]) if 2 < len(g["kept"]) < g["size"])


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("solver"), "<top level>: 'solver' is a required property"),
    (lambda d: d["groups"][0].pop("kept"), r"groups\[0\]: 'kept' is a required property"),
    (lambda d: d["groups"][0].__setitem__("size", "16"), r"groups\[0\]\.size: '16' is not of type 'integer'"),
    (lambda d: d["solver"].__setitem__("objective", "high"), r"solver\.objective: 'high' is not of type 'number'"),
    (lambda d: d["solver"].__setitem__("status", "GREAT"), r"solver\.status"),
    (lambda d: d["groups"][_inner(d)]["kept"].__setitem__(0, 999), r"groups\[\d+\]\.kept\[0\]: index 999 out of range"),
    (lambda d: d["groups"][_inner(d)]["kept"].__setitem__(0, 10 ** 30), r"groups\[\d+\]\.kept\[0\]: index 1000* out of range"),
    (lambda d: d["groups"][_inner(d)]["kept"].__setitem__(1, d["groups"][_inner(d)]["kept"][0]),
     r"groups\[\d+\]\.kept: index \d+ appears more than once"),
    (lambda d: d["groups"][_inner(d)]["kept"].reverse(), r"groups\[\d+\]\.kept\[1\]: indices must be sorted"),
    (lambda d: d["groups"][_inner(d)].__setitem__("kept", []), r"groups\[\d+\]\.kept: keeps no channel"),
    (lambda d: d["groups"][_inner(d)].__setitem__("kept", {"bitmap": "AAAA"}), r"groups\[\d+\]\.kept: bitmap of 3 bytes"),
    (lambda d: d["groups"][_inner(d)].__setitem__("kept", {"bitmap": "not base64!"}), "not valid base64"),
    (lambda d: d["groups"][-1]["kept"].pop(), r"groups\[13\]\.kept: group 'fc' is frozen"),
    (lambda d: d["groups"][2].__setitem__("name", d["groups"][1]["name"]), r"groups\[2\]\.name: 'conv1' names two groups"),
    (lambda d: next(iter(d["layers"].values()))["out"].__setitem__(0, 500), r"layers\.conv1\.out\[0\]: index 500"),
    (lambda d: d["budget"].__setitem__("energy", {"fraction": 0.5}), "budget: 'energy' is not one of"),
    (lambda d: d["budget"].__setitem__("flops", {"fraction": 1.5}), r"budget\.flops\.fraction: 1\.5 is greater than"),
    (lambda d: d.__setitem__("format_version", "2.0"), "format_version: 2.0 is not supported"),
    (lambda d: d.__setitem__("format_version", "one"), "format_version: 'one' is not MAJOR.MINOR"),
    (lambda d: d.__setitem__("format", "something-else"), "format: expected 'qcqp-prune/plan'"),
    (lambda d: d.__setitem__("surprise", 1), r"Additional properties are not allowed \('surprise'"),
])
def test_malformed_plans_are_rejected_naming_the_field(saved, tmp_path, mutate, message):
    model, doc, _ = saved
    doc = copy.deepcopy(doc)
    mutate(doc)
    with pytest.raises(PlanFormatError, match=message):
        qp.load_plan(_write(tmp_path, doc))


def test_newer_minor_version_is_read_leniently(saved, tmp_path):
    model, doc, _ = saved
    doc = copy.deepcopy(doc)
    doc["format_version"] = "1.7"
    doc["something_new"] = {"x": 1}
    doc["groups"][0]["new_field"] = True
    plan = qp.load_plan(_write(tmp_path, doc))
    assert plan.objective == doc["solver"]["objective"]
    doc["groups"][0]["kept"] = [99]  # lenient about extra fields, not about broken ones
    with pytest.raises(PlanFormatError, match=r"groups\[0\]\.kept\[0\]"):
        qp.load_plan(_write(tmp_path, doc))


def test_truncated_and_non_json_files(saved, tmp_path):
    model, doc, _ = saved
    text = json.dumps(doc)
    with pytest.raises(PlanFormatError, match="is truncated"):
        qp.load_plan(_write(tmp_path, text[: len(text) // 2]))
    with pytest.raises(PlanFormatError, match="is truncated"):
        qp.load_plan(_write(tmp_path, ""))
    with pytest.raises(PlanFormatError, match="not valid JSON"):
        qp.load_plan(_write(tmp_path, "hello, I am not a plan"))
    with pytest.raises(PlanFormatError, match="top level must be an object"):
        qp.load_plan(_write(tmp_path, "[1, 2]"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        qp.load_plan(tmp_path / "missing.json")


def test_plan_for_another_architecture_is_refused_and_model_untouched(saved, tmp_path):
    model, doc, _ = saved
    plan = qp.load_plan(_write(tmp_path, doc))
    for other in (zoo.resnet32().eval(), zoo.vgg16().eval()):
        before = state_snapshot(other)
        with pytest.raises(ValueError, match="another architecture"):
            plan.apply(other)
        assert_state_unchanged(other, before)


@pytest.mark.parametrize("tamper, message", [
    (lambda d: (d["groups"][5].__setitem__("name", d["groups"][6]["name"]),
                d["groups"][6].__setitem__("name", "layer2.0.conv1")), r"groups\[5\]\.name"),
    (lambda d: d["layers"]["layer2.0.conv1"].__setitem__("out", [0]), r"layers\.layer2\.0\.conv1\.out: does not match"),
    (lambda d: d["layers"].pop("fc"), r"layers: the plan's layers differ.*'fc'"),
])
def test_edited_plan_with_a_valid_fingerprint_is_caught_before_applying(saved, tmp_path, tamper, message):
    """The fingerprint covers the architecture, not the plan's contents: a hand-edited plan
    (consistent in itself) is checked against the traced model before anything is applied."""
    model, doc, _ = saved
    doc = copy.deepcopy(doc)
    tamper(doc)
    plan = qp.load_plan(_write(tmp_path, doc))
    before = state_snapshot(model)
    with pytest.raises(PlanFormatError, match=message):  # the fingerprint still matches
        plan.apply(model)
    assert_state_unchanged(model, before)


def test_an_untouched_plan_passes_the_graph_check(saved, tmp_path):
    model, doc, plan = saved
    check_plan_against_graph(qp.load_plan(_write(tmp_path, doc)), plan.graph)


def test_save_validates_strictly_and_writes_atomically(saved, tmp_path):
    model, doc, plan = saved
    path = tmp_path / "plan.json"
    path.write_text("previous content")
    bad = dataclasses.replace(plan, status="GREAT")
    with pytest.raises(PlanFormatError, match=r"solver\.status"):
        bad.to_json(path)
    assert path.read_text() == "previous content"  # nothing half-written, old file kept
    assert os.listdir(tmp_path) == ["plan.json"]  # no temporary file left behind
    plan.to_json(path, encoding="bitmap")
    assert qp.load_plan(path).kept_channels == plan.kept_channels
    with pytest.raises(ValueError, match="encoding"):
        plan.to_json(path, encoding="zip")


def test_plan_from_dict_of_plan_to_dict_is_lossless(saved):
    _, _, plan = saved
    doc = json.loads(json.dumps(plan_to_dict(plan)))
    again = plan_to_dict(plan_from_dict(doc))
    assert _comparable(again) == _comparable(doc)
    assert doc["solver"]["bound"] is None and again["solver"]["bound"] is None  # greedy: no bound
