"""Hostile and broken inputs at the public boundary: each gives a plan that is correct or an
error that says what is wrong and what to do (issue 8)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

import qcqp_prune as qp
from qcqp_prune import zoo

from helpers import check_slim_matches_mask


def _resnet20():
    torch.manual_seed(0)
    return zoo.resnet20().eval(), torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16])
def test_other_float_dtypes_plan_and_slim(dtype):
    model, x = _resnet20()
    model, x = model.to(dtype), x.to(dtype)
    plan = qp.plan_channels(model, x, qp.Budget(flops=0.5), solver="greedy")
    assert plan.cost["flops"] <= plan.limits["flops"]
    slim = plan.apply(model, mode="slim")
    assert next(slim.parameters()).dtype == dtype
    assert slim(x).dtype == dtype
    if dtype is torch.float64:
        masked = plan.apply(model, mode="mask")
        with torch.no_grad():
            assert torch.allclose(slim(x), masked(x), rtol=1e-9, atol=1e-9)
        check_slim_matches_mask(model, x, rtol=1e-9)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_parameters_are_refused_naming_the_layer(bad):
    model, x = _resnet20()
    with torch.no_grad():
        model.layer2[0].conv1.weight[0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"layer2\.0\.conv1"):
        qp.plan_channels(model, x, qp.Budget(flops=0.5), solver="greedy")


def test_model_without_a_prunable_layer_gets_the_full_plan_and_says_so():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()  # input and output are frozen
    x = torch.randn(1, 3, 8, 8)
    with pytest.warns(UserWarning, match="no prunable"):
        plan = qp.plan_channels(model, x, qp.Budget(flops=1.0), solver="greedy")
    assert all(m.all() for m in plan.masks)
    with pytest.raises(qp.InfeasibleBudgetError, match="smallest"):
        qp.plan_channels(model, x, qp.Budget(flops=0.5), solver="greedy")


@pytest.mark.parametrize("kwargs, message", [
    ({"flops": 0}, r"flops=0 must be a fraction in \(0, 1\]"),
    ({"flops": 1.5}, r"flops=1.5 must be a fraction in \(0, 1\]"),
    ({"flops": -0.2}, r"flops=-0.2"),
    ({"params": float("nan")}, r"params=nan"),
    ({}, "at least one"),
])
def test_bad_budgets_raise_naming_the_value(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        qp.Budget(**kwargs)


def test_budget_of_one_keeps_everything_and_conflicting_budgets_all_hold():
    model, x = _resnet20()
    full = qp.plan_channels(model, x, qp.Budget(flops=1.0), solver="cpsat", time_limit=5)
    assert all(m.all() for m in full.masks) and full.status == "OPTIMAL"
    both = qp.plan_channels(model, x, qp.Budget(flops=0.7, params=0.3), solver="greedy")
    assert both.cost["flops"] <= both.limits["flops"] and both.cost["params"] <= both.limits["params"]
    with pytest.raises(qp.InfeasibleBudgetError, match="params"):
        qp.plan_channels(model, x, qp.Budget(flops=0.7, params=1e-4), solver="greedy")


def _without_times(path) -> str:
    """The plan file minus what differs between runs by nature: wall-clock times."""
    def strip(d):
        if isinstance(d, dict):
            return {k: strip(v) for k, v in d.items() if not (k.endswith("time") or k == "created")}
        return [strip(v) for v in d] if isinstance(d, list) else d
    return json.dumps(strip(json.loads(path.read_text())), sort_keys=True)


@pytest.mark.parametrize("solver, budget", [("greedy", 0.5), ("cpsat", 1.0)])
def test_same_inputs_same_plan_json_byte_for_byte(solver, budget, tmp_path):
    """greedy is deterministic; cpsat is when it ends at a proven optimum (a wall-clock time
    limit can stop it at different points, see the README)."""
    model, x = _resnet20()
    texts = []
    for i in range(2):
        plan = qp.plan_channels(model, x, qp.Budget(flops=budget), solver=solver, time_limit=5, seed=7)
        path = tmp_path / f"p{i}.json"
        plan.to_json(str(path))
        texts.append(_without_times(path))
    assert texts[0] == texts[1]


def test_zero_time_limit_returns_a_valid_plan():
    model, x = _resnet20()
    with pytest.warns(RuntimeWarning):
        plan = qp.plan_channels(model, x, qp.Budget(flops=0.5), solver="cpsat", time_limit=0)
    assert plan.cost["flops"] <= plan.limits["flops"]
    assert plan.status == "FEASIBLE"


def _resnet20_problem(frac: float):
    from qcqp_prune.cost import cost_model, evaluate_costs
    from qcqp_prune.importance import layer_scores
    from qcqp_prune.plan import build_problem
    model, x = _resnet20()
    g = qp.trace(model, x)
    costs = cost_model(g)
    limits = qp.Budget(flops=frac).resolve(evaluate_costs(costs, g.sizes()))
    return build_problem(g, layer_scores(model, g, "l2"), limits, costs)


@pytest.mark.parametrize("phase, bound_time, after", [("bounding", 30.0, 0.5), ("cpsat", 0.2, 2.0)])
def test_ctrl_c_during_a_solve_returns_the_best_plan_so_far(phase, bound_time, after):
    import os
    import signal
    import threading
    from qcqp_prune.solvers import solve_channels
    problem = _resnet20_problem(0.3)
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # e.g. run as a background job of a shell
    if ignored:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(after, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sol = solve_channels(problem, "cpsat", time_limit=60.0, bound_time=bound_time)
    except KeyboardInterrupt:
        pytest.fail(f"Ctrl-C during {phase} escaped as KeyboardInterrupt")
    finally:
        timer.cancel()
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    assert sol.stop_reason == "interrupted" and sol.status.value == "FEASIBLE"
    assert problem.feasible(sol.masks)
    assert sol.bound is None or sol.bound >= sol.objective


def test_ctrl_c_after_a_cpsat_solve_still_raises_keyboard_interrupt(tmp_path):
    """CP-SAT's own SIGINT handler, once installed, stays in the process and kills Python on a
    later Ctrl-C (exit 130, no cleanup); ours is used instead. Checked in a subprocess."""
    import subprocess
    import sys
    script = tmp_path / "after_solve.py"
    script.write_text(
        "import os, signal, threading, time, numpy as np\n"
        "from qcqp_prune.solvers import *\n"
        "p = ChannelProblem((4, 4), (False, False), bilinear=(BilinearTerm(0, 1, np.ones((4, 4))),),\n"
        "    constraints=(ResourceConstraint('flops', QuadraticCost({(0, 1): 1.0}), 6.0),))\n"
        "solve_channels(p, 'cpsat', time_limit=2, count_bound=False)\n"
        "threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
        "try:\n    time.sleep(5)\nexcept KeyboardInterrupt:\n    print('clean')\n")
    import signal
    # a child of a background job inherits an ignored SIGINT, and Python then installs no handler
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert out.returncode == 0 and "clean" in out.stdout, (out.returncode, out.stderr[-500:])


def test_huge_plan_files_and_group_sizes_are_refused_before_decoding(tmp_path, monkeypatch):
    from qcqp_prune import plan_io
    model, x = _resnet20()
    plan = qp.plan_channels(model, x, qp.Budget(flops=0.5), solver="greedy")
    path = tmp_path / "plan.json"
    plan.to_json(str(path))
    monkeypatch.setattr(plan_io, "MAX_PLAN_BYTES", path.stat().st_size - 1)
    with pytest.raises(plan_io.PlanFormatError, match="MiB, more than any plan needs"):
        qp.load_plan(str(path))
    monkeypatch.undo()
    doc = json.loads(path.read_text())
    doc["groups"][1]["size"] = 10**12  # would allocate a terabyte-sized mask
    path.write_text(json.dumps(doc))
    with pytest.raises(plan_io.PlanFormatError, match=r"groups\[1\]\.size"):
        qp.load_plan(str(path))


def test_inputs_of_another_dtype_than_the_model_are_a_clear_error():
    model, x = _resnet20()
    with pytest.raises(qp.TraceError, match=r"dtype and device the model expects") as e:
        qp.trace(model, x.double())
    assert "torch.float64" in str(e.value) and "torch.float32" in str(e.value)
