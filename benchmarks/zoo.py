"""Tracer coverage: how much of each network the channel tracer can prune, and why not the rest.

    python benchmarks/zoo.py          # the CI list of torchvision models + the CIFAR zoo
    python benchmarks/zoo.py --all    # every torchvision classification model
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections import Counter

import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import qcqp_prune as qp  # noqa: E402
from common import write  # noqa: E402
from qcqp_prune import zoo  # noqa: E402
from test_torchvision_models import CI_MODELS, NEEDS_224  # noqa: E402


def build(name: str):
    torch.manual_seed(0)
    if name in zoo.MODELS:
        return zoo.MODELS[name]().eval(), torch.randn(1, 3, 32, 32)
    kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(name, weights=None, **kw).eval()
    size = 299 if name == "inception_v3" else 224 if name.startswith(NEEDS_224) else 64
    return model, torch.randn(1, 3, size, size)


def short(reason: str) -> str:
    r = re.sub(r"op `[^`]*` \(", "(", reason)
    r = re.sub(r"\((?:[A-Za-z0-9_]+ )?[a-z0-9_.]+\)", lambda m: m.group(0).split(" ")[0].strip("(") , r)
    return r.split(":")[-1].strip()[:60] if ":" in r else r[:60]


def coverage(name: str) -> tuple:
    model, x = build(name)
    times, graph = [], None
    for _ in range(3):
        t0 = time.perf_counter()
        graph = qp.trace(model, x)
        times.append(time.perf_counter() - t0)
    params = dict(model.named_parameters())
    total = prunable = 0
    for layer in graph.layers:
        n = params[layer.weight].numel()
        total += n
        segs = list(layer.out) + list(layer.inp or ())
        if any(not graph.groups[s.group].frozen for s in segs):
            prunable += n
    # conv/linear weights the tracer did not record as layers (grouped convs, functional ops)
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)) and not any(
                params[l.weight] is mod.weight for l in graph.layers):
            total += mod.weight.numel()
    reasons = Counter(short(r) for rs in graph.frozen_reasons.values() for r in rs
                      if "network input" not in r and "network output" not in r)
    top = "; ".join(f"{r} ({c})" for r, c in reasons.most_common(3)) or "-"
    return (name, "x".join(map(str, x.shape[1:])), len(graph.groups), len(graph.prunable_groups),
            f"{100 * prunable / max(total, 1):.1f}%", len(graph.groups) - len(graph.prunable_groups),
            top, f"{statistics.median(times):.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--out", default="zoo")
    a = ap.parse_args(argv)
    names = sorted(torchvision.models.list_models(module=torchvision.models)) if a.all else CI_MODELS
    rows = []
    for n in list(zoo.MODELS) + names:
        try:
            rows.append(coverage(n))
        except Exception as e:  # report, don't hide
            rows.append((n, "-", "-", "-", "-", "-", f"ERROR {type(e).__name__}: {str(e)[:80]}", "-"))
        print(" | ".join(map(str, rows[-1])), flush=True)
    headers = ["model", "input", "groups", "prunable groups", "prunable conv/linear weights",
               "frozen groups", "top frozen reasons (count)", "trace s (median of 3)"]
    print(write(a.out, "Tracer coverage", headers, rows,
                notes="Prunable weights: elements of conv/linear weights with at least one prunable axis; "
                      "network inputs/outputs (always frozen) are left out of the reasons."))


if __name__ == "__main__":
    main()
