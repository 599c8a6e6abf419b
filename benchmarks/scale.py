"""Scale: trace and plan the largest torchvision models within the machine's memory.

    python benchmarks/scale.py                      # regnet_y_128gf, vit_h_14, efficientnet_b7
    python benchmarks/scale.py --models resnet18 --time-limit 5   # smoke

Each model runs in its own process (so peak memory is that model's alone): build with random
weights, trace, plan at 50% FLOPs with ``greedy`` and with ``cpsat`` under a time limit, and
report wall times, the certified gap and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write  # noqa: E402

INPUT = {"vit_h_14": 224, "efficientnet_b7": 64}  # ViT needs its native size; others the smallest sensible


def run_one(name: str, time_limit: float) -> dict:
    """In a child process: the measurements for one model, as a dict."""
    import resource

    import torch
    import torchvision

    import qcqp_prune as qp
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = getattr(torchvision.models, name)(weights=None).eval()
    size = INPUT.get(name, 64)
    x = torch.randn(1, 3, size, size)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = qp.trace(model, x)
    trace = time.perf_counter() - t0
    out = {"model": name, "input": f"1x3x{size}x{size}", "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           "groups": len(graph.groups), "prunable_channels": sum(g.size for g in graph.prunable_groups),
           "build_s": build, "trace_s": trace}
    for solver in ("greedy", "cpsat"):
        t0 = time.perf_counter()
        plan = qp.plan_channels(model, x, qp.Budget(flops=0.5), solver=solver, time_limit=time_limit, graph=graph)
        out[f"{solver}_s"] = time.perf_counter() - t0
        out[f"{solver}_objective"] = plan.objective
        out[f"{solver}_gap"] = plan.gap
        out[f"{solver}_status"] = plan.status
        out[f"{solver}_budget_used"] = plan.cost["flops"] / plan.limits["flops"]
        out[f"{solver}_count_bound"] = plan.solver_details.get("count_bound_status", "used"
                                                               if plan.solver_details.get("bounds", {}).get("count")
                                                               else "-")
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="regnet_y_128gf,vit_h_14,efficientnet_b7")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--out", default="scale")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(run_one(a.child, a.time_limit)))
        return
    rows = []
    for name in a.models.split(","):
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, "--time-limit", str(a.time_limit)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            rows.append([name, "-", "-", "-", "-", "-", "-", f"failed: {r.stderr.strip().splitlines()[-1][:120]}",
                         "-", "-", "-"])
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        gap = "-" if d["cpsat_gap"] is None else f"{100 * d['cpsat_gap']:.2f}%"
        rows.append([d["model"], d["input"], f"{d['params_m']:.1f}", d["prunable_channels"], f"{d['trace_s']:.1f}",
                     f"{d['greedy_s']:.1f}", f"{d['cpsat_s']:.1f}", f"{d['cpsat_status']} (gap {gap}; count bound "
                     f"{d['cpsat_count_bound']})", f"{100 * d['cpsat_budget_used']:.2f}%",
                     f"{d['cpsat_objective'] / d['greedy_objective'] - 1:+.4%}", f"{d['peak_rss_gb']:.1f}"])
    headers = ["model", "input", "params (M)", "prunable channels", "trace s", "greedy plan s", "cpsat plan s",
               "cpsat result", "FLOPs budget used", "cpsat vs greedy objective", "peak RSS (GB)"]
    md = write(a.out, "Scale: the largest torchvision models", headers, rows,
               notes=f"Random weights, batch 1, 50% FLOPs, l2 importance, 1 torch thread, 1 CP-SAT worker, "
                     f"time limit {a.time_limit:g} s; each model in its own process (peak RSS is that process's); "
                     f"plan times include cost modelling and importance, not tracing.")
    print(md)


if __name__ == "__main__":
    main()
