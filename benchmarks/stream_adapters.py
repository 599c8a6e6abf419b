"""What union coupling costs at run time: the stream adapters' share of a slimmed forward pass.

    python benchmarks/stream_adapters.py                 # ResNet-18/50, MobileNetV2, ResNet-56 at 50% FLOPs
    python benchmarks/stream_adapters.py --models resnet20 --repeats 5   # smoke

For each model, a shared-coupling and a union-coupling greedy plan at the same FLOPs budget
are slimmed and timed (median of ``--repeats`` forward passes, 1 thread, batch 1). The time
spent inside the :class:`~qcqp_prune.apply.StreamAdapter` gathers and scatters is measured
by timing each hook call. Also reported: the kept importance of each plan, and the activation
elements written per forward (the adapters write the carrier width).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write  # noqa: E402
from solvers import build  # noqa: E402


def _timed_adapters(model: torch.nn.Module) -> list[float]:
    """Wrap every adapter hook of ``model`` so that its wall time is added to the returned list."""
    from qcqp_prune.apply import StreamAdapter
    spent = [0.0]
    for mod in model.modules():
        for hooks in (mod._forward_pre_hooks, mod._forward_hooks):
            for k, hook in list(hooks.items()):
                if getattr(hook, "__self__", None) is not None and isinstance(hook.__self__, StreamAdapter):
                    def timed(*args, _hook=hook):
                        t0 = time.perf_counter()
                        out = _hook(*args)
                        spent[0] += time.perf_counter() - t0
                        return out
                    hooks[k] = timed
    return spent


@torch.no_grad()
def _median_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int, spent: list[float] | None = None) -> tuple[float, float]:
    for _ in range(2):
        model(x)
    times, inside = [], []
    for _ in range(repeats):
        if spent is not None:
            spent[0] = 0.0
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
        inside.append(spent[0] if spent is not None else 0.0)
    return statistics.median(times) * 1e3, statistics.median(inside) * 1e3


def run(name: str, budget: float, repeats: int) -> list[object]:
    import qcqp_prune as qp
    model, x = build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shared = qp.plan_channels(model, x, qp.Budget(flops=budget), solver="greedy")
        union = qp.plan_channels(model, x, qp.Budget(flops=budget), solver="greedy", coupling="union")
    slim_shared, slim_union = shared.apply(model), union.apply(model)
    spent = _timed_adapters(slim_union)
    adapters = sum(1 for m in slim_union.modules() if type(m).__name__ == "StreamAdapter")
    ms_shared, _ = _median_ms(slim_shared, x, repeats)
    ms_union, ms_adapters = _median_ms(slim_union, x, repeats, spent)
    return [name, f"{budget:.0%}", f"{union.objective / shared.objective - 1:+.2%}", adapters,
            round(ms_shared, 2), round(ms_union, 2), round(ms_adapters, 2), f"{ms_adapters / ms_union:.1%}",
            f"{union.cost['memory'] / shared.cost['memory'] - 1:+.1%}"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet56,resnet18,resnet50,mobilenet_v2")
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default="stream_adapters")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in a.models.split(","):
        rows.append(run(name, a.budget, a.repeats))
        print(rows[-1], flush=True)
    headers = ["model", "FLOPs budget", "union importance vs shared", "adapters", "shared plan ms",
               "union plan ms", "ms in adapters", "adapter share", "memory written vs shared"]
    print(write(a.out, "Union coupling at run time: stream adapters in slimmed models", headers, rows,
                notes=f"Greedy plans (l2 importance) with shared and union coupling at the same FLOPs budget, "
                      f"slimmed; median of {a.repeats} forward passes, batch 1, 1 thread. 'ms in adapters' "
                      f"times every gather/scatter hook call of the union model."))


if __name__ == "__main__":
    main()
