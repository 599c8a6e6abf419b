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


def parse_budget(text: str) -> tuple[str, float]:
    """``"0.5"`` is a FLOPs fraction; ``"params:0.5"`` names the resource."""
    kind, _, frac = text.rpartition(":")
    return (kind or "flops"), float(frac)


class PeakRSS:
    """Peak resident memory of this process during a block, in MB (Linux: the kernel's
    high-water mark, reset on entry through ``/proc/self/clear_refs``; elsewhere None). Unlike
    tracemalloc it counts OR-Tools' native memory and does not slow Python down (tracemalloc
    made ResNet-50 cells run 2-3x longer and pushed the greedy past its deadline)."""

    def __enter__(self) -> "PeakRSS":
        self.mb = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.ok = True
        except OSError:
            self.ok = False
        return self

    def __exit__(self, *exc) -> None:
        if self.ok:
            with open("/proc/self/status") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
            self.mb = kb / 1024


def run_cell(model_name: str, budget_text: str, methods: list[str], time_limit: float) -> list[dict[str, Any]]:
    """Every method on one (model, budget) cell; runs in a worker process."""
    resource, budget = parse_budget(budget_text)
    torch.set_num_threads(1)
    import qcqp_prune as qp
    from methods import METHODS
    model, x = build(model_name)
    graph = qp.trace(model, x)
    graphs = {"shared": graph}
    channels = sum(g.size for g in graph.prunable_groups)
    out = []
    for meth in methods:
        if meth == "torch-pruning":
            row = torch_pruning_row(model, x, resource, budget)
            if row is not None:
                out.append({"model": model_name, "channels": channels, "budget": budget_text, "method": meth, **row})
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings(), PeakRSS() as peak:
            warnings.simplefilter("ignore")
            base, _, coupling = meth.partition("+")  # e.g. "cpsat+union": union coupling at adds
            kind, _, lin = base.partition(":")
            if coupling and coupling not in graphs:
                graphs[coupling] = qp.trace(model, x, coupling=coupling)
            graph = graphs[coupling or "shared"]
            trace: list[tuple[float, float, float | None]] = []  # (elapsed, objective, bound)
            if kind in ("cpsat", "mip", "greedy"):
                opts = {"linearization": lin} if lin else {}
                plan = qp.plan_channels(model, x, qp.Budget(**{resource: budget}), solver=kind, time_limit=time_limit,
                                        graph=graph, progress=lambda o, b, t: trace.append((t, o, b)), **opts)
                masks, info = plan.masks, {"objective": plan.objective, "gap": plan.gap, "status": plan.status,
                                           "bound": plan.bound}
                trace.append((time.perf_counter() - t0, plan.objective, plan.bound))
            else:
                masks, _, info = METHODS[meth](model, x, qp.Budget(**{resource: budget}), 0, time_limit)
        wall = time.perf_counter() - t0
        costs = qp.cost_model(graph)
        counts = [int(m.sum()) for m in masks]
        used = costs[resource].evaluate(counts) / (budget * costs[resource].evaluate(graph.sizes()))
        out.append({"model": model_name, "channels": channels, "budget": budget_text, "method": meth,
                    "objective": info["objective"], "bound": info.get("bound"), "gap": info.get("gap"),
                    "status": info.get("status"), "budget_used": used, "time_s": wall, "peak_mb": peak.mb,
                    "trace": trace if kind in ("cpsat", "mip", "greedy") else []})
    return out


def torch_pruning_row(model, x, resource: str, budget: float) -> dict[str, Any] | None:
    """Torch-Pruning's global magnitude pruning (FLOPs budgets only; None when it is not
    installed). Its kept l2 importance is the summed squared conv/linear weights of the model it
    returns, which is what our objective equals on a slimmed plan (tests/test_importance.py)."""
    from methods import count_flops, torch_pruning_available, torch_pruning_global
    if resource != "flops" or not torch_pruning_available():
        return None

    t0 = time.perf_counter()
    with warnings.catch_warnings(), PeakRSS() as peak:
        warnings.simplefilter("ignore")
        slim = torch_pruning_global(model, x, budget)
    wall = time.perf_counter() - t0
    kept = sum(float((m.weight.detach().double() ** 2).sum()) for m in slim.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    return {"objective": kept, "bound": None, "gap": None, "status": "HEURISTIC",
            "budget_used": count_flops(slim, x) / (budget * count_flops(model, x)), "time_s": wall, "peak_mb": peak.mb,
            "trace": []}


def sweep(models: list[str], budgets: list[str], methods: list[str], time_limit: float,
          executor: cf.Executor | None = None) -> list[dict[str, Any]]:
    cells = [(m, b) for m in models for b in budgets]
    if executor is None:
        return [r for m, b in cells for r in run_cell(m, b, methods, time_limit)]
    futures = [executor.submit(run_cell, m, b, methods, time_limit) for m, b in cells]
    return [r for f in futures for r in f.result()]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,resnet56,resnet18,resnet50,mobilenet_v2")
    ap.add_argument("--budgets", default="0.3,0.5,0.7,params:0.5",
                    help="comma-separated FLOPs fractions, or resource:fraction (params:0.5)")
    ap.add_argument("--methods", default="cpsat,greedy,uniform-l1,bn-threshold")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="solvers")
    a = ap.parse_args(argv)
    models, budgets, methods = a.models.split(","), a.budgets.split(","), a.methods.split(",")
    ex = cf.ProcessPoolExecutor(a.workers) if a.workers > 1 else None
    rows = sweep(models, budgets, methods, a.time_limit, ex)
    best = {}
    for r in rows:
        k = (r["model"], r["budget"])
        best[k] = max(best.get(k, float("-inf")), r["objective"])
    table = []
    for r in rows:
        rel = 100.0 * (best[(r["model"], r["budget"])] - r["objective"]) / best[(r["model"], r["budget"])]
        kind, frac = parse_budget(r["budget"])
        table.append((r["model"], r["channels"], f"{kind} {frac:.0%}", r["method"], f"{r['objective']:.6g}",
                      f"{rel:.3f}%", "-" if r["gap"] is None else f"{100 * r['gap']:.2f}%", r["status"],
                      f"{100 * r['budget_used']:.2f}%", f"{r['time_s']:.1f}", "-" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"))
    headers = ["model", "prunable channels", "budget", "method", "kept importance (l2)",
               "below best", "certified gap", "status", "budget used", "time s", "peak RSS MB"]
    md = write(a.out, "Channel selection: solvers vs heuristics", headers, table,
               notes=f"Importance l2; CIFAR nets at 1x3x32x32, torchvision nets at 1x3x224x224, random "
                     f"weights (seed 0); time limit {a.time_limit:g} s; 1 CP-SAT worker; 'below best' is "
                     f"relative to the best objective any method found in the same cell; 'budget used' is "
                     f"the plan's cost / the limit of the budgeted resource; peak RSS MB is the process's resident high-water mark during the method (torch and the model included).")
    plot(rows, a.out)
    print(md)


def plot(rows: list[dict[str, Any]], out: str) -> None:
    """``<out>_anytime.png``: objective and certified bound over time per solver run (relative
    to the best objective of the cell); ``<out>_size.png``: wall time vs prunable channels."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    from common import RESULTS
    base = out if os.path.isabs(out) else os.path.join(RESULTS, out)
    best: dict = {}
    for r in rows:
        k = (r["model"], r["budget"])
        best[k] = max(best.get(k, float("-inf")), r["objective"])
    runs = [r for r in rows if r["trace"] and r["method"] != "greedy"]
    if runs:
        fig, ax = plt.subplots(figsize=(8, 5))
        for r in runs:
            ref = best[(r["model"], r["budget"])]
            t = [max(p[0], 1e-2) for p in r["trace"]]
            line, = ax.plot(t, [100 * (p[1] - ref) / ref for p in r["trace"]], drawstyle="steps-post", lw=1)
            b = [(ti, 100 * (p[2] - ref) / ref) for ti, p in zip(t, r["trace"]) if p[2] is not None]
            if b:
                ax.plot(*zip(*b), drawstyle="steps-post", lw=1, ls="--", color=line.get_color(),
                        label=f"{r['model']} {r['budget']} {r['method']}")
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_xlabel("seconds")
        ax.set_ylabel("% vs best objective found (solid: plan, dashed: certified bound)")
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        fig.savefig(f"{base}_anytime.png", dpi=120)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for meth in sorted({r["method"] for r in rows}):
        pts = sorted((r["channels"], r["time_s"]) for r in rows if r["method"] == meth)
        ax.plot(*zip(*pts), "o", label=meth, alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("prunable channels")
    ax.set_ylabel("wall time (s)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{base}_size.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
