"""Tracer coverage: how much of each network the channel tracer can prune, and why not the rest.

    python benchmarks/zoo.py          # the CI list of torchvision models + the CIFAR zoo
    python benchmarks/zoo.py --all    # every torchvision classification model + the CIFAR zoo

For every model: the input it is traced on (the same as in tests/test_torchvision_models.py:
batch 2, the smallest input the architecture accepts; the in-package CIFAR zoo at 32x32),
the number of channel groups and of prunable ones, the prunable share of conv/linear weights
(elements of conv/linear weights in layers with at least one prunable axis / all conv/linear
weight elements), the number of frozen groups with their distinct reasons (shortened: op type
and reason, with the number of groups frozen for it), and the trace time (median of 3).
Writes ``benchmarks/results/zoo.csv`` and ``benchmarks/results/zoo.md``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import platform
import re
import statistics
import sys
import time
from collections import Counter

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
import qcqp_prune as qp  # noqa: E402
from qcqp_prune import zoo  # noqa: E402
from test_torchvision_models import (  # noqa: E402
    ALL_MODELS, BATCH, CI_MODELS, build, conv_linear_weights, prunable_share,
)

RESULTS = os.path.join(HERE, "results")
ZOO_PREFIX = "zoo:"  # the in-package CIFAR networks (zoo:vgg16 is not torchvision's vgg16)

HEADERS = ["model", "input", "groups", "prunable groups", "prunable conv/linear weights",
           "conv/linear weights (M)", "frozen groups", "frozen reasons (groups)",
           "trace s (median of 3)"]


def build_any(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    if name.startswith(ZOO_PREFIX):
        torch.manual_seed(0)
        model = zoo.MODELS[name[len(ZOO_PREFIX):]]().eval()
        return model, torch.randn(BATCH, *zoo.INPUT_SHAPE[1:])
    return build(name)


_REASON = re.compile(r"^op `[^`]*`(?: \((?P<desc>[^)]*)\))?: (?P<why>.*)$", re.S)


def short(reason: str) -> str:
    """'op `features_1_0_norm1` (LayerNorm features.1.0.norm1): LayerNorm normalizes over the
    channel axis, so removing ...' -> 'LayerNorm: LayerNorm normalizes over the channel axis'."""
    if reason.startswith(("network input", "network output", "frozen by the user")):
        return reason.split(" `")[0].split(" (")[0]
    m = _REASON.match(reason)
    if not m:
        return re.sub(r"\d+", "N", reason)[:70]
    desc, why = m.group("desc") or "", m.group("why")
    op = desc.split(" ")[0].rsplit(".", 1)[-1] if desc else ""
    why = re.split(r";|, so | \(|: ", why)[0]
    why = re.sub(r"\d+", "N", why).strip()
    if not op or op.lower().replace("_", "") in why.lower().replace(" ", ""):
        return why  # 'layer_norm: LayerNorm normalizes ...' -> 'LayerNorm normalizes ...'
    return f"{op}: {why}"


def coverage(name: str, repeats: int = 3) -> list:
    model, x = build_any(name)
    times, graph = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = qp.trace(model, x)
        times.append(time.perf_counter() - t0)
    per_reason = Counter(r for g in graph.groups if g.frozen for r in {short(x) for x in g.frozen_reasons})
    reasons = "; ".join(f"{r} ({c})" for r, c in per_reason.most_common())
    frozen = sum(g.frozen for g in graph.groups)
    return [name, "x".join(map(str, x.shape)), len(graph.groups), len(graph.prunable_groups),
            f"{100 * prunable_share(model, graph):.1f}%",
            f"{sum(conv_linear_weights(model).values()) / 1e6:.2f}", frozen, reasons,
            f"{statistics.median(times):.2f}"]


LOAD_AT_START = os.getloadavg()[0]


def machine() -> str:
    return (f"{platform.platform()} ({platform.machine()}, {platform.processor() or 'cpu'}), "
            f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, 1-min load average "
            f"{LOAD_AT_START:.1f} at start, {os.getloadavg()[0]:.1f} at end (trace times grow on a "
            f"loaded machine); "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"torchvision {torchvision.__version__}; "
            f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}")


def summary(rows: list[list]) -> list[str]:
    ok = [r for r in rows if not str(r[1]).startswith("ERROR")]
    shares = [float(r[4].rstrip("%")) for r in ok]
    full = [r[0] for r in ok if r[4] == "100.0%"]
    lowest = sorted(ok, key=lambda r: float(r[4].rstrip("%")))[:5]
    slowest = max(ok, key=lambda r: float(r[8])) if ok else None
    lines = [f"{len(ok)} of {len(rows)} models trace"
             + (f" (errors: {', '.join(r[0] for r in rows if r not in ok)})" if len(ok) < len(rows) else "")
             + "."]
    if ok:
        lines.append(f"{len(full)} of {len(ok)} are prunable in 100% of their conv/linear weights "
                     f"(only the network input and output groups frozen where the reasons say so); "
                     f"median share {statistics.median(shares):.1f}%; lowest: "
                     + ", ".join(f"{r[0]} {r[4]}" for r in lowest) + ".")
        lines.append(f"Slowest trace: {slowest[0]} {slowest[8]} s; median "
                     f"{statistics.median(float(r[8]) for r in ok):.2f} s.")
    return lines


def write(rows: list[list], out: str, command: str) -> str:
    base = out if os.path.isabs(out) else os.path.join(RESULTS, out)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    with open(f"{base}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADERS)
        w.writerows(rows)
    md = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    text = "\n".join([
        "# Tracer coverage", "",
        f"Machine: {machine()}", "",
        f"Command: `{command}`", "",
        "Input: batch x channels x height x width, the smallest input each architecture accepts "
        "(as in tests/test_torchvision_models.py); `zoo:` rows are the in-package CIFAR networks. "
        "Prunable conv/linear weights: elements of conv/linear weights (Conv*d, Linear, "
        "MultiheadAttention's in_proj) in layers with at least one prunable axis, over all of "
        "them. Frozen reasons: op type and reason, shortened (N stands for a number), with the "
        "number of frozen groups carrying it. Trace: `qcqp_prune.trace`, median of 3.", "",
        *summary(rows), "",
        *md, "",
    ])
    with open(f"{base}.md", "w") as f:
        f.write(text)
    return "\n".join(md)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--all", action="store_true", help="every torchvision classification model")
    ap.add_argument("--out", default="zoo", help="results/<out>.csv and .md (default: zoo)")
    ap.add_argument("--repeats", type=int, default=3, help="traces per model (median is reported)")
    ap.add_argument("--models", help="comma-separated subset, e.g. zoo:resnet20,resnet18 (smoke runs)")
    a = ap.parse_args(argv)
    names = [ZOO_PREFIX + n for n in zoo.MODELS] + (ALL_MODELS if a.all else CI_MODELS)
    if a.models:
        names = a.models.split(",")
    rows = []
    for n in names:
        try:
            rows.append(coverage(n, a.repeats))
        except Exception as e:  # report, don't hide
            rows.append([n, f"ERROR {type(e).__name__}: {str(e)[:120]}"] + ["-"] * (len(HEADERS) - 2))
        print(" | ".join(map(str, rows[-1])), flush=True)
    command = "python benchmarks/zoo.py" + (" --all" if a.all else "") + \
        (f" --out {a.out}" if a.out != "zoo" else "")
    write(rows, a.out, command)
    print("\n".join(summary(rows)))


if __name__ == "__main__":
    main()
