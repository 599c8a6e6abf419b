"""Channel-selection methods compared by the benchmarks, behind one signature.

Each method takes (model, example input, Budget, seed, time_limit) and returns
``(masks, graph, info)`` (masks over ``graph.groups``), except Torch-Pruning, which returns a
slimmed model of its own (``masks`` is None then).
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

import torch
import torch.nn as nn

import qcqp_prune as qp
from qcqp_prune.baselines import channel_scores, threshold_masks, uniform_masks
from qcqp_prune.cost import cost_model, evaluate_costs
from qcqp_prune.importance import layer_scores
from qcqp_prune.plan import build_problem


def _solver(name: str, **opts: Any) -> Callable:
    def run(model, x, budget, seed, time_limit):
        plan = qp.plan_channels(model, x, budget, solver=name, seed=seed, time_limit=time_limit, **opts)
        return plan.masks, plan.graph, {"objective": plan.objective, "gap": plan.gap,
                                        "status": plan.status, "time": plan.wall_time}
    return run


def _heuristic(kind: str) -> Callable:
    def run(model, x, budget, seed, time_limit):
        t0 = time.perf_counter()
        g = qp.trace(model, x)
        costs = cost_model(g)
        limits = budget.resolve(evaluate_costs(costs, g.sizes()))
        l2 = layer_scores(model, g, "l2")
        problem = build_problem(g, l2, limits, costs)
        if kind == "uniform":
            masks = uniform_masks(problem, channel_scores(g, layer_scores(model, g, "l1")))
        else:
            masks = threshold_masks(problem, channel_scores(g, layer_scores(model, g, "bn_scale")))
        return masks, g, {"objective": problem.objective(masks), "gap": None, "status": "HEURISTIC",
                          "time": time.perf_counter() - t0}
    return run


def torch_pruning_available() -> bool:
    try:
        import torch_pruning  # noqa: F401
        return True
    except Exception:
        return False


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass as ``FlopCounterMode`` counts them (what ``Budget(flops=)`` means)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def torch_pruning_global(model: nn.Module, x: torch.Tensor, flops_fraction: float,
                         ignored: list[nn.Module] | None = None) -> nn.Module:
    """Torch-Pruning's global magnitude pruning, with its channel ratio bisected until the
    pruned model's FLOPs fit ``flops_fraction`` of the original (its ``pruning_ratio`` is a
    channel ratio, not a FLOPs ratio)."""
    import torch_pruning as tp

    def flops(m):
        return count_flops(m, x)

    full = flops(model)
    lo, hi, best = 0.0, 0.99, None
    for _ in range(12):
        mid = (lo + hi) / 2
        m = copy.deepcopy(model).eval()
        last = [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1:]
        pruner = tp.pruner.MagnitudePruner(m, x, importance=tp.importance.MagnitudeImportance(p=2),
                                           pruning_ratio=mid, global_pruning=True, ignored_layers=last)
        pruner.step()
        if flops(m) <= flops_fraction * full:
            hi, best = mid, m
        else:
            lo = mid
    if best is None:
        raise RuntimeError("Torch-Pruning could not reach the budget")
    return best


METHODS: dict[str, Callable] = {
    "cpsat": _solver("cpsat"),
    "greedy": _solver("greedy"),
    "cpsat+union": _solver("cpsat", coupling="union"),
    "uniform-l1": _heuristic("uniform"),
    "bn-threshold": _heuristic("bn"),
}
