"""qcqp_prune: optimal channel pruning of PyTorch CNNs as a discrete QCQP.

The public API (stable names):

    graph = qp.trace(model, example_inputs)      # ChannelGraph: groups, layers, frozen reasons
    costs = qp.cost_model(graph)                 # {"flops", "params", "memory"}: QuadraticCost
    slim  = qp.slim_model(model, graph, masks)   # physically smaller deep copy
    mask  = qp.mask_model(model, graph, masks)   # same shapes, removed channels held at zero
    plan  = qp.plan_channels(model, x, budget=qp.Budget(flops=0.5))   # solve the QCQP
    slim  = plan.apply(model, mode="slim"); plan.to_json("plan.json"); qp.load_plan("plan.json")
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .apply import ChannelMask, bake_masks, mask_model, slim_model, validate_masks
from .budget import Absolute, Budget
from .cost import RESOURCES, cost_model, evaluate_costs
from .graph.channel_graph import ChannelGraph, ChannelGroup, Member, PrunableLayer, build_channel_graph
from .graph.trace import TraceError
from .importance import CRITERIA
from .latency import LatencyModel, fit_latency, measure_latency, plan_with_measured_latency
from .plan import PruningPlan, plan_channels
from .solvers.problem import QuadraticCost
from .solvers.result import InfeasibleBudgetError

__version__ = "0.1.0"


def trace(
    model: torch.nn.Module,
    example_inputs: Any,
    *,
    frozen: Sequence[str] = (),
    leaf_modules: Sequence[str | type] = (),
    coupling: str = "shared",
) -> ChannelGraph:
    """Trace ``model`` on ``example_inputs`` into its channel-dependency graph.

    ``frozen``: module (or group) names whose channels are never pruned. ``leaf_modules``:
    submodule names or types that torch.fx should treat as opaque ops (their channels are
    frozen); use it for submodules fx cannot trace. Raises :class:`TraceError` naming the
    failing construct when fx cannot trace the model or the inputs do not run through it.
    The model is not modified (training flags are restored; BN statistics do not change).
    ``coupling``: ``"shared"`` (operands of an add share one keep-mask) or ``"union"`` (a sum
    keeps a channel when any operand does; see ``plan_channels``).
    """
    return build_channel_graph(model, example_inputs, frozen=frozen, leaf_modules=leaf_modules,
                               coupling=coupling)


def load_plan(path: str) -> PruningPlan:
    """Read a plan written by :meth:`PruningPlan.to_json` (validated against the shipped schema)."""
    from .plan_io import load_plan as _load
    return _load(path)


__all__ = [
    "Absolute", "Budget", "CRITERIA", "LatencyModel", "fit_latency", "measure_latency", "plan_with_measured_latency", "PruningPlan", "load_plan", "plan_channels",
    "ChannelGraph", "ChannelGroup", "ChannelMask", "Member", "PrunableLayer", "QuadraticCost",
    "InfeasibleBudgetError", "RESOURCES", "TraceError", "bake_masks", "cost_model", "evaluate_costs", "mask_model",
    "slim_model", "trace", "validate_masks",
]
