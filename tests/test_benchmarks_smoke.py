"""Each benchmark runs end to end on its smallest setting, so the scripts cannot rot."""

from __future__ import annotations

import csv
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)


def rows(path: str) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_solver_benchmark_smoke(tmp_path):
    import solvers as bench_solvers
    out = str(tmp_path / "solvers")
    from methods import torch_pruning_available
    bench_solvers.main(["--models", "resnet20", "--budgets", "0.5,params:0.5", "--time-limit", "2",
                        "--methods", "cpsat,greedy,cpsat+union,uniform-l1,torch-pruning", "--out", out])
    r = rows(out + ".csv")
    peer = {"torch-pruning"} if torch_pruning_available() else set()  # optional: FLOPs budgets only
    assert {x["method"] for x in r} == {"cpsat", "greedy", "cpsat+union", "uniform-l1"} | peer
    assert all(x["budget"] == "flops 50%" for x in r if x["method"] == "torch-pruning")
    assert {x["budget"] for x in r} == {"flops 50%", "params 50%"}
    assert all(float(x["budget used"].rstrip("%")) <= 100.0 for x in r)
    assert all(x["certified gap"] != "-" for x in r if x["method"] == "cpsat")
    for suffix in (".md", "_anytime.png", "_size.png"):
        assert os.path.exists(out + suffix), suffix


def test_bound_diagnostics_smoke(tmp_path):
    import bound_diagnostics
    out = str(tmp_path / "diagnostics")
    bound_diagnostics.main(["--models", "resnet20", "--budgets", "0.5", "--seconds", "1", "--streams", "1",
                            "--out", out])
    r = rows(out + ".csv")
    greedy, relaxed, exact, at_greedy = (float(x["value"]) for x in r[:4])
    assert relaxed >= exact >= greedy and at_greedy >= greedy  # every bound is above the plan
    assert len(r) == 5
    found = float(r[4]["best plan found there"])  # nan when CP-SAT finds no plan in 1 s
    assert found != found or float(r[4]["value"]) >= found


def test_stream_adapter_benchmark_smoke(tmp_path):
    import stream_adapters
    out = str(tmp_path / "adapters")
    stream_adapters.main(["--models", "resnet20", "--repeats", "2", "--out", out])
    (r,) = rows(out + ".csv")
    assert int(r["adapters"]) > 0 and 0 < float(r["ms in adapters"]) < float(r["union plan ms"])


def test_accuracy_benchmark_smoke(tmp_path):
    import accuracy
    out = str(tmp_path / "accuracy")
    accuracy.main(["--smoke", "--models", "cnn", "--methods", "greedy,uniform-l1", "--out", out])
    r = rows(out + ".csv")
    assert {x["method"] for x in r} >= {"greedy", "uniform-l1", "unpruned"}
    assert os.path.exists(out + ".png")


def test_latency_benchmark_smoke(tmp_path):
    import latency
    out = str(tmp_path / "latency")
    latency.main(["--models", "resnet56", "--cifar-batch", "1", "--heldout", "2", "--calibrate", "2",
                  "--repeats", "1", "--samples", "2", "--layer-repeats", "1", "--passes", "1",
                  "--time-limit", "2", "--quiet", "--out", out])
    r = rows(out + ".csv")
    assert {x["set"] for x in r} == {"full", "calibration", "heldout", "plan"}
    assert {x["config"] for x in r if x["set"] == "plan"} == {"plan", "full (plan rounds)"}
    assert os.path.exists(out + "_resnet56.json") and os.path.exists(out + ".png")
    md = open(out + ".md").read()
    assert "load average" in md and "`Budget(latency=0.6)`" in md and ", measured)" in md


def test_scale_benchmark_smoke(tmp_path):
    import scale
    out = str(tmp_path / "scale")
    scale.main(["--models", "resnet18", "--time-limit", "2", "--out", out])
    r = rows(out + ".csv")
    assert [x["model"] for x in r] == ["resnet18"]
    assert float(r[0]["peak RSS (GB)"]) > 0 and "budget" not in r[0]["cpsat result"]
    assert float(r[0]["FLOPs budget used"].rstrip("%")) <= 100.0


def test_zoo_benchmark_smoke(tmp_path):
    import zoo as bench_zoo
    out = str(tmp_path / "zoo")
    bench_zoo.main(["--models", "zoo:resnet20,resnet18", "--repeats", "1", "--out", out])
    r = rows(out + ".csv")
    assert [x["model"] for x in r] == ["zoo:resnet20", "resnet18"]
    assert all(not x["input"].startswith("ERROR") for x in r)
    assert os.path.exists(out + ".md")
