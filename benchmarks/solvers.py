"""Solver benchmark: kept importance, certified gap, budget used and time per method.

    python benchmarks/solvers.py                         # default sweep (see --help)
    python benchmarks/solvers.py --models resnet20 --budgets 0.5 --time-limit 5   # smoke

Runs every (model, budget) cell through a ``concurrent.futures.Executor``: a local process
pool with ``--workers N`` (default 1: sequential, so timings are not disturbed); pass your
own executor (e.g. a Dask or Ray cluster's) to :func:`sweep` to scale out.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import sys
import time
import tracemalloc
import warnings
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write  # noqa: E402

MODELS = {
    "resnet20": ("zoo", (1, 3, 32, 32)), "resnet32": ("zoo", (1, 3, 32, 32)),
    "resnet56": ("zoo", (1, 3, 32, 32)), "vgg16": ("zoo", (1, 3, 32, 32)),
    "resnet18": ("torchvision", (1, 3, 224, 224)), "resnet50": ("torchvision", (1, 3, 224, 224)),
    "mobilenet_v2": ("torchvision", (1, 3, 224, 224)), "densenet121": ("torchvision", (1, 3, 224, 224)),
    "efficientnet_b0": ("torchvision", (1, 3, 224, 224)),
}


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    src, shape = MODELS[name]
    torch.manual_seed(0)
    if src == "zoo":
        from qcqp_prune import zoo
        model = zoo.MODELS[name]()
    else:
        import torchvision
        model = getattr(torchvision.models, name)(weights=None)
    return model.eval(), torch.randn(*shape)


def run_cell(model_name: str, budget: float, methods: list[str], time_limit: float) -> list[dict[str, Any]]:
    """Every method on one (model, budget) cell; runs in a worker process."""
    torch.set_num_threads(1)
    import qcqp_prune as qp
    from methods import METHODS
    model, x = build(model_name)
    graph = qp.trace(model, x)
    channels = sum(g.size for g in graph.prunable_groups)
    out = []
    for meth in methods:
        tracemalloc.start()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kind, _, lin = meth.partition(":")
            if kind in ("cpsat", "mip") and lin:
                plan = qp.plan_channels(model, x, qp.Budget(flops=budget), solver=kind, time_limit=time_limit,
                                        graph=graph, linearization=lin)
                masks, info = plan.masks, {"objective": plan.objective, "gap": plan.gap, "status": plan.status,
                                           "bound": plan.bound}
            elif kind in ("cpsat", "mip", "greedy"):
                plan = qp.plan_channels(model, x, qp.Budget(flops=budget), solver=kind, time_limit=time_limit, graph=graph)
                masks, info = plan.masks, {"objective": plan.objective, "gap": plan.gap, "status": plan.status,
                                           "bound": plan.bound}
            else:
                masks, _, info = METHODS[meth](model, x, qp.Budget(flops=budget), 0, time_limit)
        wall = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        costs = qp.cost_model(graph)
        counts = [int(m.sum()) for m in masks]
        used = costs["flops"].evaluate(counts) / (budget * costs["flops"].evaluate(graph.sizes()))
        out.append({"model": model_name, "channels": channels, "budget": budget, "method": meth,
                    "objective": info["objective"], "bound": info.get("bound"), "gap": info.get("gap"),
                    "status": info.get("status"), "budget_used": used, "time_s": wall, "peak_mb": peak / 2**20})
    return out


def sweep(models: list[str], budgets: list[float], methods: list[str], time_limit: float,
          executor: cf.Executor | None = None) -> list[dict[str, Any]]:
    cells = [(m, b) for m in models for b in budgets]
    if executor is None:
        return [r for m, b in cells for r in run_cell(m, b, methods, time_limit)]
    futures = [executor.submit(run_cell, m, b, methods, time_limit) for m, b in cells]
    return [r for f in futures for r in f.result()]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,resnet56,resnet18,resnet50,mobilenet_v2")
    ap.add_argument("--budgets", default="0.3,0.5,0.7")
    ap.add_argument("--methods", default="cpsat,greedy,uniform-l1,bn-threshold")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="solvers")
    a = ap.parse_args(argv)
    models, budgets, methods = a.models.split(","), [float(b) for b in a.budgets.split(",")], a.methods.split(",")
    ex = cf.ProcessPoolExecutor(a.workers) if a.workers > 1 else None
    rows = sweep(models, budgets, methods, a.time_limit, ex)
    best = {}
    for r in rows:
        k = (r["model"], r["budget"])
        best[k] = max(best.get(k, float("-inf")), r["objective"])
    table = []
    for r in rows:
        rel = 100.0 * (best[(r["model"], r["budget"])] - r["objective"]) / best[(r["model"], r["budget"])]
        table.append((r["model"], r["channels"], f"{r['budget']:.0%}", r["method"], f"{r['objective']:.6g}",
                      f"{rel:.3f}%", "-" if r["gap"] is None else f"{100 * r['gap']:.2f}%", r["status"],
                      f"{100 * r['budget_used']:.2f}%", f"{r['time_s']:.1f}", f"{r['peak_mb']:.0f}"))
    headers = ["model", "prunable channels", "FLOPs budget", "method", "kept importance (l2)",
               "below best", "certified gap", "status", "budget used", "time s", "peak MB (py)"]
    md = write(a.out, "Channel selection: solvers vs heuristics", headers, table,
               notes=f"Importance l2; CIFAR nets at 1x3x32x32, torchvision nets at 1x3x224x224, random "
                     f"weights (seed 0); time limit {a.time_limit:g} s; 1 CP-SAT worker; 'below best' is "
                     f"relative to the best objective any method found in the same cell; 'budget used' is "
                     f"the plan's FLOPs / the FLOPs limit; peak MB is Python-heap (tracemalloc).")
    print(md)


if __name__ == "__main__":
    main()
