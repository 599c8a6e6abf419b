"""Latency model: fitting math, JSON, architecture checks, and budgets (no timing asserted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

import qcqp_prune as qp
from qcqp_prune import zoo
from qcqp_prune.latency import (
    FORMAT, LatencyModel, LayerFit, OpFit, calibrate_latency, calibration_masks, fit_global,
    fit_latency, fit_layer, layer_specs, lopsided_masks, measure_latency, op_nodes, plan_with_measured_latency,
    random_masks,
)
from helpers import random_masks as helper_masks


def tiny_net() -> nn.Module:
    """Conv-BN-ReLU x2, a residual add, then flatten (block = H*W) into a Linear."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(3, 12, 3, padding=1, bias=False)
            self.b1 = nn.BatchNorm2d(12)
            self.c2 = nn.Conv2d(12, 16, 3, padding=1)
            self.c3 = nn.Conv2d(16, 16, 1)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(16 * 4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.b1(self.c1(x)))
            y = self.c2(y)
            y = torch.relu(y + self.c3(y))
            y = self.dw(y)
            return self.fc(torch.flatten(self.pool(y), 1))

    return Net().eval()


X_TINY = torch.randn(1, 3, 8, 8)


def synthetic_model(graph: qp.ChannelGraph, seed: int = 0) -> LatencyModel:
    """A latency model with known random coefficients (no timing)."""
    rng = np.random.default_rng(seed)
    layers = {}
    for s in layer_specs(graph):
        a, b, c, d = rng.uniform(0.001, 0.01, 4)
        if s.kind == "depthwise":
            a = b = 0.0
        layers[s.node] = LayerFit(s.module, s.kind, a, b, c, d, 1.0, 0, s.in_full, s.out_full)
    ops = {}
    for name, desc, segs in op_nodes(graph):
        size = sum(graph.groups[x.group].size * x.block for x in segs) if segs else 0
        ops[name] = OpFit(desc, float(rng.uniform(0.01, 0.1)), size)
    return LatencyModel(graph.fingerprint(), layers, ops, scale=1.1, op_scale=0.9, constant=0.5,
                        metadata={"device": "synthetic", "threads": 1,
                                  "input_shapes": [list(s) for s in graph.input_shapes]})


# ------------------------------------------------------------------ fitting math
def test_fit_layer_recovers_known_coefficients() -> None:
    rng = np.random.default_rng(0)
    true = (2e-4, 3e-3, 5e-3, 0.05)
    n_in = rng.integers(4, 256, 40)
    n_out = rng.integers(4, 256, 40)
    t = true[0] * n_in * n_out + true[1] * n_in + true[2] * n_out + true[3]
    coef, r2 = fit_layer(n_in, n_out, t)
    np.testing.assert_allclose(coef, true, rtol=1e-6, atol=1e-9)
    assert r2 == pytest.approx(1.0)
    # with 2% multiplicative noise the fit is still close and R^2 high
    noisy = t * (1 + 0.02 * rng.standard_normal(len(t)))
    coef, r2 = fit_layer(n_in, n_out, noisy)
    assert coef[0] == pytest.approx(true[0], rel=0.1)
    pred = coef[0] * n_in * n_out + coef[1] * n_in + coef[2] * n_out + coef[3]
    assert np.mean(np.abs(pred - t) / t) < 0.03 and np.max(np.abs(pred - t) / t) < 0.15
    assert r2 > 0.98


def test_fit_layer_is_non_negative_and_depthwise_is_linear() -> None:
    n = np.arange(1, 30)
    # a decreasing "timing" would need a negative slope: NNLS clamps it at 0
    (a, b, c, d), _ = fit_layer(n, n, 10.0 - 0.1 * n)
    assert min(a, b, c, d) >= 0
    (a, b, c, d), r2 = fit_layer(n, n, 0.02 * n + 0.3, kind="depthwise")
    assert (a, b) == (0.0, 0.0)
    assert (c, d) == (pytest.approx(0.02), pytest.approx(0.3))
    assert r2 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fit_layer([], [], [])


def test_fit_global_recovers_scales() -> None:
    rng = np.random.default_rng(1)
    L = rng.uniform(5, 50, 12)
    O = rng.uniform(1, 8, 12)
    y = 1.2 * L + 0.8 * O + 1.5
    assert fit_global(L, O, y, prior=0.0) == pytest.approx((1.2, 0.8, 1.5), rel=1e-6)


# ------------------------------------------------------------------ cost structure
@pytest.mark.parametrize("make,x", [(tiny_net, X_TINY), (zoo.resnet20, torch.randn(1, 3, 32, 32))])
def test_cost_is_the_sum_of_layer_and_op_predictions(make, x) -> None:
    """The QuadraticCost over group counts equals the per-layer formula evaluated on the
    channel counts of the physically slimmed model (checks segment/block bookkeeping)."""
    torch.manual_seed(0)
    model = make().eval()
    graph = qp.trace(model, x)
    lm = synthetic_model(graph)
    for seed in range(3):
        masks = helper_masks(graph, seed, keep=0.6)
        counts = [int(m.sum()) for m in masks]
        slim = qp.slim_model(model, graph, masks)
        mods = dict(slim.named_modules())
        expect = lm.constant
        for node, fit in lm.layers.items():
            m = mods[fit.module]
            if isinstance(m, nn.Linear):
                n_in, n_out = m.in_features, m.out_features
            else:
                n_in, n_out = m.in_channels, m.out_channels
            expect += lm.scale * fit.predict(n_in, n_out)
        for node, op in lm.ops.items():
            segs = getattr(graph.node_layouts.get(node), "segments", None)
            frac = graph.segment_size(segs, counts) / op.size_full if segs else 1.0
            expect += lm.op_scale * op.ms_full * frac
        assert lm.predict(graph, counts) == pytest.approx(expect, rel=1e-12)
        cost = lm.cost(graph)
        assert all(v >= 0 for v in cost.bilinear.values()) and all(v >= 0 for v in cost.linear.values())


def test_layer_specs_cover_conv_linear_and_depthwise() -> None:
    graph = qp.trace(tiny_net(), X_TINY)
    kinds = {s.module: (s.kind, s.in_full, s.out_full, s.in_block) for s in layer_specs(graph)}
    assert kinds["dw"][0] == "depthwise"
    assert kinds["fc"] == ("linear", 64, 5, 4)  # flatten: each channel owns 2*2 features
    assert kinds["c1"][:3] == ("conv", 3, 12)


# ------------------------------------------------------------------ JSON
def test_json_round_trip(tmp_path) -> None:
    graph = qp.trace(zoo.resnet20().eval(), torch.randn(1, 3, 32, 32))
    lm = synthetic_model(graph, seed=3)
    path = tmp_path / "lat.json"
    lm.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["lat.json"]  # no temporary left behind
    back = LatencyModel.load(path)
    assert back == lm
    assert back.path == str(path.resolve())
    counts = [int(m.sum()) for m in helper_masks(graph, 1, keep=0.5)]
    assert back.predict(graph, counts) == lm.predict(graph, counts)
    d = back.describe()
    assert d["fingerprint"] == graph.fingerprint() and d["path"] == str(path.resolve())
    assert d["format"] == FORMAT
    json.dumps(d)  # small and serializable: it goes into plans

    raw = json.loads(path.read_text())
    raw["version"] = 999
    (tmp_path / "v.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="version"):
        LatencyModel.load(tmp_path / "v.json")
    raw["version"] = 1
    first = next(iter(raw["layers"]))
    raw["layers"][first]["a"] = -1.0
    (tmp_path / "neg.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="must be finite and >= 0"):
        LatencyModel.load(tmp_path / "neg.json")
    (tmp_path / "plan.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a qcqp_prune latency model"):
        LatencyModel.load(tmp_path / "plan.json")


# ------------------------------------------------------------------ refusing other networks
def test_latency_model_of_another_network_is_refused() -> None:
    g20 = qp.trace(zoo.resnet20().eval(), torch.randn(1, 3, 32, 32))
    g32 = qp.trace(zoo.resnet32().eval(), torch.randn(1, 3, 32, 32))
    g20_b4 = qp.trace(zoo.resnet20().eval(), torch.randn(4, 3, 32, 32))
    lm = synthetic_model(g20)
    for other in (g32, g20_b4):  # another architecture; the same one at another batch size
        with pytest.raises(ValueError, match="latency model was fitted on another network"):
            lm.cost(other)
        with pytest.raises(ValueError, match="fitted on another network"):
            lm.predict(other, other.sizes())
    with pytest.raises(ValueError, match="fitted on another network"):
        qp.plan_channels(zoo.resnet32().eval(), torch.randn(1, 3, 32, 32), qp.Budget(latency=0.6),
                         latency_model=lm, solver="greedy")


def test_latency_budget_needs_a_latency_model() -> None:
    with pytest.raises(ValueError, match="latency model"):
        qp.plan_channels(zoo.resnet20().eval(), torch.randn(1, 3, 32, 32), qp.Budget(latency=0.6),
                         solver="greedy")


# ------------------------------------------------------------------ plans
@pytest.mark.parametrize("kind", ["fraction", "absolute"])
def test_plan_respects_latency_budget_as_predicted(kind) -> None:
    model = zoo.resnet20().eval()
    x = torch.randn(1, 3, 32, 32)
    graph = qp.trace(model, x)
    lm = synthetic_model(graph, seed=2)
    full = lm.predict(graph, graph.sizes())
    if kind == "fraction":
        budget, expect = qp.Budget(latency=0.6), 0.6 * full
    else:
        budget, expect = qp.Budget.absolute(latency=0.5 * full), 0.5 * full
    plan = qp.plan_channels(model, x, budget, solver="greedy", latency_model=lm, graph=graph)
    limit = plan.limits["latency"]
    assert limit == pytest.approx(expect)
    counts = [int(m.sum()) for m in plan.masks]
    assert lm.predict(graph, counts) == pytest.approx(plan.cost["latency"])
    assert plan.cost["latency"] <= limit * (1 + 1e-9)
    assert plan.cost["latency"] > 0.8 * limit  # the budget is used, not ignored
    assert plan.full_cost["latency"] == pytest.approx(full)
    # not calibrated: no measured unpruned latency, so a fraction is of the predicted one
    assert plan.latency_model == {**lm.describe(), "full_reference": "predicted",
                                  "predicted_full_ms": pytest.approx(full), "measured_full_ms": None}


# ------------------------------------------------------------------ a small real fit (not timed)
def test_real_fit_runs_end_to_end_and_restores_threads(tmp_path) -> None:
    torch.manual_seed(0)
    model = tiny_net()
    threads = torch.get_num_threads()
    lm = fit_latency(model, X_TINY, samples_per_layer=4, repeats=1, warmup=0, passes=1,
                     calibrate=2, calibrate_repeats=1, progress=False)
    assert torch.get_num_threads() == threads
    graph = qp.trace(model, X_TINY)
    assert set(lm.layers) == {t.node for t in graph.flop_terms}
    assert lm.metadata["threads"] == 1 and lm.metadata["input_shapes"] == [[1, 3, 8, 8]]
    assert lm.metadata["fit"]["untimed_ops"] == {}
    full = lm.predict(graph, graph.sizes())
    assert np.isfinite(full) and full > 0
    small = lm.predict(graph, [1 if not g.frozen else g.size for g in graph.groups])
    assert small <= full
    lm.save(tmp_path / "m.json")
    assert LatencyModel.load(tmp_path / "m.json").predict(graph, graph.sizes()) == pytest.approx(full)


def test_measure_latency_restores_threads_and_training_flags() -> None:
    model = tiny_net().train()
    threads = torch.get_num_threads()
    ms = measure_latency(model, X_TINY, repeats=2, warmup=1, threads=1)
    assert ms > 0
    assert torch.get_num_threads() == threads
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="threads"):
        measure_latency(model, X_TINY, threads=0)


def test_random_and_calibration_masks() -> None:
    graph = qp.trace(zoo.resnet20().eval(), torch.randn(1, 3, 32, 32))
    rng = np.random.default_rng(0)
    for masks in [random_masks(graph, rng, 0.3, 1.0)] + calibration_masks(graph, 6, rng):
        for g, m in zip(graph.groups, masks):
            assert m.shape == (g.size,) and 1 <= m.sum() <= g.size
            if g.frozen:
                assert m.all()
    calibrate_latency(synthetic_model(graph), graph, [graph.sizes().tolist()], [3.0])


def test_measured_full_ms_is_the_calibrated_unpruned_latency(tmp_path) -> None:
    """``measured_full_ms`` is the unpruned network's measurement from the calibration (None
    when the first configuration was not the unpruned network or there was no calibration);
    ``Budget(latency=f)`` is then f x that measured latency, the same limit as
    ``Budget.absolute(latency=f * lm.measured_full_ms)``."""
    model = zoo.resnet20().eval()
    x = torch.randn(1, 3, 32, 32)
    graph = qp.trace(model, x)
    lm = synthetic_model(graph, seed=4)
    assert lm.measured_full_ms is None  # not calibrated
    full = graph.sizes().tolist()
    pruned = [[int(m.sum()) for m in helper_masks(graph, seed, keep=keep)]
              for seed, keep in enumerate((0.3, 0.4, 0.5, 0.6, 0.7, 0.8))]
    # pruned networks run as the model says; the unpruned one 20% faster (as with oneDNN's
    # fast kernels at channel counts that are multiples of 16, which pruned counts rarely are)
    meas = [0.8 * lm.predict(graph, full)] + [lm.predict(graph, c) for c in pruned]
    calibrate_latency(lm, graph, [full] + pruned, meas, prior=0.0)
    assert lm.measured_full_ms == pytest.approx(meas[0])
    predicted_full = lm.predict(graph, full)
    assert predicted_full > 1.02 * lm.measured_full_ms  # one smooth fit cannot follow both
    lm.save(tmp_path / "m.json")
    assert LatencyModel.load(tmp_path / "m.json").measured_full_ms == pytest.approx(meas[0])

    by_fraction = qp.plan_channels(model, x, qp.Budget(latency=0.6), solver="greedy", latency_model=lm, graph=graph)
    by_measurement = qp.plan_channels(model, x, qp.Budget.absolute(latency=0.6 * lm.measured_full_ms),
                                      solver="greedy", latency_model=lm, graph=graph)
    assert by_fraction.limits["latency"] == pytest.approx(0.6 * meas[0])
    assert by_measurement.limits["latency"] == pytest.approx(0.6 * meas[0])
    assert by_measurement.cost["latency"] <= 0.6 * meas[0] * (1 + 1e-9)
    assert all(np.array_equal(a, b) for a, b in zip(by_fraction.masks, by_measurement.masks))

    # a first configuration that is not the unpruned network gives no unpruned measurement
    calibrate_latency(lm, graph, pruned, meas[1:], prior=0.0)
    assert lm.measured_full_ms is None


def test_latency_fraction_is_of_the_measured_unpruned_latency_when_there_is_one(tmp_path) -> None:
    """``Budget(latency=f)`` resolves against ``lm.measured_full_ms`` when the model has it (never
    against the prediction, which over-predicts the unpruned widths), ``full_cost["latency"]``
    reports that same reference, the plan says so, and all of it survives a JSON round trip."""
    model = zoo.resnet20().eval()
    x = torch.randn(1, 3, 32, 32)
    graph = qp.trace(model, x)
    lm = synthetic_model(graph, seed=5)
    predicted = lm.predict(graph, graph.sizes())
    measured = 0.85 * predicted  # the unpruned network ran 15% faster than predicted
    lm.metadata["calibration"] = {"measured_full_ms": measured, "first_is_unpruned": True}
    assert lm.measured_full_ms == pytest.approx(measured)

    plan = qp.plan_channels(model, x, qp.Budget(latency=0.6), solver="greedy", latency_model=lm, graph=graph)
    assert plan.limits["latency"] == pytest.approx(0.6 * measured)
    assert plan.limits["latency"] != pytest.approx(0.6 * predicted)
    assert plan.full_cost["latency"] == pytest.approx(measured)
    counts = [int(m.sum()) for m in plan.masks]
    assert plan.cost["latency"] == pytest.approx(lm.predict(graph, counts))  # cost stays the prediction
    assert plan.cost["latency"] / plan.full_cost["latency"] <= 0.6 * (1 + 1e-9)
    assert plan.latency_model["full_reference"] == "measured"
    assert plan.latency_model["measured_full_ms"] == pytest.approx(measured)
    assert plan.latency_model["predicted_full_ms"] == pytest.approx(predicted)
    assert "measured" in plan.summary()

    plan.to_json(tmp_path / "plan.json")
    back = qp.load_plan(str(tmp_path / "plan.json"))
    assert back.limits == pytest.approx(plan.limits) and back.full_cost == pytest.approx(plan.full_cost)
    assert back.latency_model == plan.latency_model

    # without a measurement the fraction falls back to the predicted unpruned latency
    lm.metadata["calibration"] = {"measured_full_ms": measured, "first_is_unpruned": False}
    plan = qp.plan_channels(model, x, qp.Budget(latency=0.6), solver="greedy", latency_model=lm, graph=graph)
    assert plan.limits["latency"] == pytest.approx(0.6 * predicted)
    assert plan.full_cost["latency"] == pytest.approx(predicted)
    assert plan.latency_model["full_reference"] == "predicted"


# ------------------------------------------------------------------ lopsided configurations
def test_lopsided_masks_cut_some_groups_to_one_channel_and_keep_others_whole() -> None:
    """Lopsided configurations (like solver plans) have groups at one channel and whole groups,
    which uniform random ones never have; a third of the calibration set is lopsided."""
    graph = qp.trace(zoo.resnet56().eval(), torch.randn(1, 3, 32, 32))
    rng = np.random.default_rng(0)
    prunable = [g for g in graph.groups if not g.frozen]

    def shares(masks: list[np.ndarray]) -> tuple[float, float]:
        kept = [int(masks[g.id].sum()) for g in prunable]
        return (np.mean([k == 1 for k in kept]), np.mean([k == g.size for k, g in zip(kept, prunable)]))

    lop = [lopsided_masks(graph, rng) for _ in range(30)]
    for masks in lop:
        for g, m in zip(graph.groups, masks):
            assert m.shape == (g.size,) and 1 <= m.sum() <= g.size
            assert not g.frozen or m.all()
    at_one, whole = np.mean([shares(m) for m in lop], axis=0)
    assert at_one > 0.15 and whole > 0.15
    assert all(shares(random_masks(graph, rng, 0.3, 1.0))[0] == 0 for _ in range(10))
    cal = calibration_masks(graph, 9, rng)
    assert sum(shares(m)[0] > 0 for m in cal) >= 2  # the lopsided third (a scattered draw may miss)


# ------------------------------------------------------------------ measured in the loop (synthetic timing)
def staircase_ms(lm: LatencyModel, net: nn.Module, step: int = 16) -> float:
    """A fake device: each Conv/Linear costs what ``lm`` predicts for its widths rounded *up* to
    a multiple of ``step`` (oneDNN's channel blocks; unpruned widths stay); other ops cost their
    full-width time. So
    pruned networks, and above all groups cut to one channel, run slower than ``lm`` predicts."""
    mods = dict(net.named_modules())
    total = lm.constant + lm.op_scale * sum(op.ms_full for op in lm.ops.values())
    for fit in lm.layers.values():
        m = mods[fit.module]
        n_in, n_out = (m.in_features, m.out_features) if isinstance(m, nn.Linear) else (m.in_channels, m.out_channels)
        n_in, n_out = (n if n == full else -(-n // step) * step
                       for n, full in ((n_in, fit.in_full), (n_out, fit.out_full)))
        total += lm.scale * fit.predict(n_in, n_out)
    return total


def resnet56_setup() -> tuple[nn.Module, torch.Tensor, qp.ChannelGraph, LatencyModel]:
    torch.manual_seed(0)
    model = zoo.resnet56().eval()
    x = torch.randn(1, 3, 32, 32)
    graph = qp.trace(model, x)
    return model, x, graph, synthetic_model(graph, seed=6)


def test_plan_with_measured_latency_tightens_until_the_measured_target_is_met(tmp_path) -> None:
    model, x, graph, lm = resnet56_setup()
    calls = []

    def measure(full: nn.Module, slim: nn.Module) -> tuple[float, float]:
        calls.append(1)
        return staircase_ms(lm, full), staircase_ms(lm, slim)

    assert staircase_ms(lm, model) == pytest.approx(lm.predict(graph, graph.sizes()))
    oneshot = qp.plan_channels(model, x, qp.Budget(latency=0.6), solver="greedy", latency_model=lm, graph=graph)
    one_ratio = staircase_ms(lm, qp.slim_model(model, graph, oneshot.masks)) / staircase_ms(lm, model)
    assert one_ratio > 0.6  # the one-shot plan misses on the fake device

    plan = plan_with_measured_latency(model, x, qp.Budget(latency=0.6), lm, rounds=6, measure=measure,
                                      solver="greedy", graph=graph)
    loop = plan.latency_model["measured_loop"]
    hist = loop["rounds"]
    assert loop["met"] and loop["chosen_round"] == len(hist) == len(calls) > 1
    assert loop["requested"] == {"latency": {"fraction": 0.6}} and loop["stop"] == "target met"
    assert [h["met"] for h in hist] == [False] * (len(hist) - 1) + [True]
    assert hist[0]["predicted_ms"] == pytest.approx(oneshot.cost["latency"])
    assert all(b["limit_ms"] < a["limit_ms"] for a, b in zip(hist, hist[1:]))
    for a, b in zip(hist, hist[1:]):  # tightened by measured / predicted, and a margin of at least 3%
        assert b["limit_ms"] <= 0.97 * a["predicted_ms"] * a["target_ms"] / a["measured_ms"] * (1 + 1e-9)
    ratio = staircase_ms(lm, qp.slim_model(model, graph, plan.masks)) / staircase_ms(lm, model)
    assert ratio <= 0.6 and ratio == pytest.approx(hist[-1]["measured_ratio"])
    assert plan.cost["latency"] == pytest.approx(hist[-1]["predicted_ms"])
    assert plan.budget.latency < 0.6 and plan.limits["latency"] == pytest.approx(hist[-1]["limit_ms"])
    plan.to_json(tmp_path / "plan.json")
    assert qp.load_plan(str(tmp_path / "plan.json")).latency_model == plan.latency_model


def test_plan_with_measured_latency_stops_at_once_when_the_first_plan_meets_the_target() -> None:
    model, x, graph, lm = resnet56_setup()
    plan = plan_with_measured_latency(model, x, qp.Budget(latency=0.6, flops=0.9), lm, measure=lambda f, s: (10.0, 5.0),
                                      solver="greedy", graph=graph)
    oneshot = qp.plan_channels(model, x, qp.Budget(latency=0.6, flops=0.9), solver="greedy", latency_model=lm,
                               graph=graph)
    assert [h["round"] for h in plan.latency_model["measured_loop"]["rounds"]] == [1]
    assert all(np.array_equal(a, b) for a, b in zip(plan.masks, oneshot.masks))
    assert plan.budget == oneshot.budget


def test_plan_with_measured_latency_returns_the_closest_plan_with_a_warning_when_none_meets() -> None:
    model, x, graph, lm = resnet56_setup()
    limit = 0.7 * lm.predict(graph, graph.sizes())
    seen = iter([2.0, 1.2])  # measured plan / target: round 2 comes closest

    def measure(full: nn.Module, slim: nn.Module) -> tuple[float, float]:
        return 100.0, limit * next(seen)

    with pytest.warns(UserWarning, match="no plan met the latency target in 2 round"):
        plan = plan_with_measured_latency(model, x, qp.Budget.absolute(latency=limit), lm, rounds=2,
                                          measure=measure, solver="greedy", graph=graph)
    loop = plan.latency_model["measured_loop"]
    assert not loop["met"] and loop["chosen_round"] == 2 and loop["stop"] == "rounds exhausted"
    assert loop["rounds"][0]["target_ms"] == pytest.approx(limit)  # absolute: ms, not a fraction
    assert isinstance(plan.budget.latency, qp.Absolute) and plan.budget.latency.value < limit
    with pytest.raises(ValueError, match="latency limit"):
        plan_with_measured_latency(model, x, qp.Budget(flops=0.5), lm, measure=measure, graph=graph)
    with pytest.raises(ValueError, match="rounds"):
        plan_with_measured_latency(model, x, qp.Budget(latency=0.5), lm, rounds=0, measure=measure, graph=graph)
