"""The qcqp-prune command, run for real in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import torch


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qcqp_prune.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


MODEL = ["--model", "zoo:resnet20", "--input-shape", "1,3,32,32"]


def test_plan_apply_inspect_trace(tmp_path):
    plan = tmp_path / "plan.json"
    r = cli("plan", *MODEL, "--flops", "0.5", "--solver", "cpsat", "--time-limit", "2", "--out", str(plan),
            "--plot", str(tmp_path / "plan.png"))
    assert r.returncode == 0, r.stderr
    assert "incumbent" in r.stderr and "certified gap" in r.stdout
    doc = json.loads(plan.read_text())
    assert doc["format"] == "qcqp-prune/plan" and doc["cost"]["flops"] <= doc["limits"]["flops"]
    assert (tmp_path / "plan.png").stat().st_size > 1000

    for extra, name in (([], "slim.pt"), (["--mask"], "mask.pt")):
        r = cli("apply", str(plan), "--model", "zoo:resnet20", "--out", str(tmp_path / name), *extra)
        assert r.returncode == 0, r.stderr
    slim = torch.load(tmp_path / "slim.pt", weights_only=False)
    masked = torch.load(tmp_path / "mask.pt", weights_only=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(slim(x), masked(x), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in masked.parameters())

    r = cli("inspect", str(plan))
    assert r.returncode == 0 and "flops" in r.stdout and "layer1.0.conv1" in r.stdout
    r = cli("trace", *MODEL)
    assert r.returncode == 0 and "network input" in r.stdout and "prunable" in r.stdout


def test_errors_in_a_real_subprocess(tmp_path):
    r = cli("plan", *MODEL)  # no budget: usage error
    assert r.returncode == 2 and "needs at least one budget" in r.stderr
    r = cli("inspect", str(tmp_path / "missing.json"))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr


def test_usage_errors_exit_2_and_other_errors_exit_1_with_one_line(tmp_path, capsys):
    from qcqp_prune.cli import main

    def run(*args):
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own usage errors
            code = e.code
        return code, capsys.readouterr().err

    code, err = run("plan", *MODEL, "--flops", "-0.5")
    assert code == 2 and "budget flops=-0.5" in err
    code, err = run("plan", "--model", "zoo:resnet20", "--input-shape", "1,x", "--flops", "0.5")
    assert code == 2 and "--input-shape" in err
    code, err = run("plan", "--model", "nonsense", "--input-shape", "1,3,32,32", "--flops", "0.5")
    assert code == 2 and "--model" in err
    code, err = run("plan", *MODEL, "--flops", "0.5", "--time-limit", "-1")
    assert code == 2
    code, err = run("frobnicate")
    assert code == 2
    (tmp_path / "bad.json").write_text("{")
    code, err = run("apply", str(tmp_path / "bad.json"), "--model", "zoo:resnet20", "--out", str(tmp_path / "x.pt"))
    assert code == 1 and len(err.strip().splitlines()) == 1 and "truncated" in err
    assert not (tmp_path / "x.pt").exists()
