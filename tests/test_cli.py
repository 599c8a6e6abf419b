"""The qcqp-prune command, run for real in subprocesses (independent ones concurrently: each
start pays the torch import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from qcqp_prune import zoo

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MODEL = ["--model", "zoo:resnet20", "--input-shape", "1,3,32,32"]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qcqp_prune.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def finish(p: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = p.communicate(timeout=300)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qcqp-prune: error:"), r.stderr
    return lines[0]


def test_plan_apply_inspect_trace_and_errors(tmp_path):
    plan, png = tmp_path / "plan.json", tmp_path / "plan.png"
    saved_model = tmp_path / "resnet20.pt"
    torch.manual_seed(0)
    torch.save(zoo.resnet20().eval(), saved_model)
    before = saved_model.read_bytes()

    # round 1, concurrently: plan, trace (of a saved-model file) and errors
    procs = {
        "plan": start("plan", *MODEL, "--flops", "0.5", "--params", "250000", "--solver", "cpsat",
                      "--time-limit", "2", "--out", str(plan), "--plot", str(png)),
        "trace_file": start("trace", "--model", str(saved_model), "--input-shape", "1,3,32,32"),
        "no_budget": start("plan", *MODEL),
        "bad_flag": start("plan", *MODEL, "--flops", "0.5", "--solver", "magic"),
        "missing_plan": start("inspect", str(tmp_path / "missing.json")),
        "gap_limit": start("plan", *MODEL, "--flops", "0.7", "--gap-limit", "0.05", "--time-limit", "60",
                           "--out", str(tmp_path / "gap.json"), "--quiet"),
        "union": start("plan", *MODEL, "--flops", "0.4", "--coupling", "union", "--solver", "greedy",
                       "--out", str(tmp_path / "union.json"), "--quiet"),
    }
    r = {k: finish(p) for k, p in procs.items()}
    assert r["union"].returncode == 0, r["union"].stderr
    union_doc = json.loads((tmp_path / "union.json").read_text())
    assert union_doc["coupling"] == "union" and any("union_of" in g for g in union_doc["groups"])

    assert r["plan"].returncode == 0, r["plan"].stderr
    assert r["gap_limit"].returncode == 0, r["gap_limit"].stderr
    gap_doc = json.loads((tmp_path / "gap.json").read_text())
    assert gap_doc["solver"]["gap"] <= 0.05 and gap_doc["solver"]["stop_reason"] in ("gap_limit", None)
    assert "tracing zoo:resnet20" in r["plan"].stderr and "incumbent" in r["plan"].stderr
    assert "certified gap" in r["plan"].stdout and "layer1.0.conv1" in r["plan"].stdout
    assert "budget: flops <= 50% of the unpruned model, params <= 250.000k (absolute)" in r["plan"].stdout
    summary = r["plan"].stdout
    doc = json.loads(plan.read_text())
    assert doc["format"] == "qcqp-prune/plan" and doc["budget"]["params"] == {"absolute": 250000.0}
    assert doc["cost"]["flops"] <= doc["limits"]["flops"] and doc["cost"]["params"] <= 250000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
    assert r["trace_file"].returncode == 0, r["trace_file"].stderr
    assert "14 channel groups (12 prunable)" in r["trace_file"].stdout
    assert "frozen: network input" in r["trace_file"].stdout
    assert r["no_budget"].returncode == 2 and "needs at least one budget" in one_error_line(r["no_budget"])
    assert r["bad_flag"].returncode == 2 and "invalid choice: 'magic'" in r["bad_flag"].stderr  # argparse
    assert r["missing_plan"].returncode == 1 and "does not exist" in one_error_line(r["missing_plan"])

    # round 2, concurrently: apply (slim, mask, on a saved-model file), inspect, wrong architecture
    procs = {
        "slim": start("apply", str(plan), "--model", "zoo:resnet20", "--out", str(tmp_path / "slim.pt")),
        "mask": start("apply", str(plan), "--model", str(saved_model), "--out", str(tmp_path / "mask.pt"), "--mask"),
        "inspect": start("inspect", str(plan)),
        "other": start("apply", str(plan), "--model", "zoo:resnet32", "--out", str(tmp_path / "other.pt")),
    }
    r = {k: finish(p) for k, p in procs.items()}
    for k in ("slim", "mask", "inspect"):
        assert r[k].returncode == 0, r[k].stderr
    assert "slimmed; parameters 272,474 ->" in r["slim"].stdout and "masked" in r["mask"].stdout
    assert r["inspect"].stdout.strip() == summary.strip()  # the saved plan reads back the same
    assert r["other"].returncode == 1 and "another architecture" in one_error_line(r["other"])
    assert not (tmp_path / "other.pt").exists()
    assert saved_model.read_bytes() == before  # the user's model file is never written
    assert sorted(os.listdir(tmp_path)) == ["gap.json", "mask.pt", "plan.json", "plan.png", "resnet20.pt", "slim.pt", "union.json"]

    slim = torch.load(tmp_path / "slim.pt", weights_only=False)
    masked = torch.load(tmp_path / "mask.pt", weights_only=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(slim(x), masked(x), rtol=1e-4, atol=1e-5)
    n_slim, n_mask = (sum(p.numel() for p in m.parameters()) for m in (slim, masked))
    assert n_slim == doc["cost"]["params"] and n_mask == doc["full_cost"]["params"]


def test_usage_errors_exit_2_and_other_errors_exit_1_with_one_line(tmp_path, capsys):
    """In process (cheap): the same main() the console script runs."""
    from qcqp_prune.cli import main

    def run(*args):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
        return code, capsys.readouterr().err

    assert run("trace", "--model", "qcqp_prune.zoo:resnet20", "--input-shape", "1,3,32,32")[0] == 0
    code, err = run("plan", "--model", "zoo:resnet20", "--input-shape", "1,x", "--flops", "0.5")
    assert code == 2 and "--input-shape '1,x'" in err
    code, err = run("plan", "--model", "zoo:resnet20", "--input-shape", "1,0,32", "--flops", "0.5")
    assert code == 2 and ">= 1" in err

    for budget in (["--flops", "-0.5"], ["--flops", "nan"], ["--params", "inf"], ["--flops", "0"]):
        code, err = run("plan", *MODEL, *budget)
        assert code == 2 and ("budget" in err or "Absolute" in err), (budget, err)
    code, err = run("plan", "--model", "nonsense", "--input-shape", "1,3,32,32", "--flops", "0.5")
    assert code == 2 and "--model 'nonsense'" in err
    code, err = run("plan", "--model", "no/such/model.pt", "--input-shape", "1,3,32,32", "--flops", "0.5")
    assert code == 2 and "no such file" in err
    code, err = run("plan", "--model", "torchvision:resnet9000", "--input-shape", "1,3,32,32", "--flops", "0.5")
    assert code == 2 and "unknown torchvision model" in err
    code, err = run("plan", "--model", "zoo:resnet9000", "--input-shape", "1,3,32,32", "--flops", "0.5")
    assert code == 2 and "the zoo has" in err
    code, err = run("plan", *MODEL, "--flops", "0.5", "--time-limit", "-1")
    assert code == 2 and "--time-limit" in err
    code, err = run("plan", *MODEL, "--latency", "0.5")
    assert code == 2 and "--latency-model" in err
    code, err = run("plan", *MODEL, "--flops", "0.5", "--measured-rounds", "3")
    assert code == 2 and "--measured-rounds needs a --latency budget" in err
    code, err = run("frobnicate")
    assert code == 2
    torch.save({"not": "a model"}, tmp_path / "state.pt")
    code, err = run("trace", "--model", str(tmp_path / "state.pt"), "--input-shape", "1,3,32,32")
    assert code == 2 and "not a full nn.Module" in err
    (tmp_path / "bad.json").write_text("{")
    code, err = run("apply", str(tmp_path / "bad.json"), "--model", "zoo:resnet20", "--out", str(tmp_path / "x.pt"))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "truncated" in err
    assert not (tmp_path / "x.pt").exists()


def test_plan_with_a_latency_budget_measured_in_the_loop(tmp_path):
    """`plan --latency F --latency-model M --measured-rounds N` measures the slimmed plan on this
    machine and records every round in the plan file (no timing is asserted)."""
    import qcqp_prune as qp
    model, x = zoo.resnet20().eval(), torch.randn(1, 3, 32, 32)
    lm = qp.fit_latency(model, x, samples_per_layer=4, repeats=1, passes=1, calibrate=2, calibrate_repeats=3,
                        progress=False)
    lm.save(str(tmp_path / "lm.json"))
    r = finish(start("plan", *MODEL, "--latency", "0.7", "--latency-model", str(tmp_path / "lm.json"),
                     "--measured-rounds", "2", "--solver", "greedy", "--out", str(tmp_path / "plan.json"), "--quiet"))
    assert r.returncode == 0, r.stderr
    loop = json.loads((tmp_path / "plan.json").read_text())["latency_model"]["measured_loop"]
    assert 1 <= len(loop["rounds"]) <= 2 and all(x["measured_ms"] > 0 for x in loop["rounds"])
