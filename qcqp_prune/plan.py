"""``plan_channels``: trace, score, model costs, solve the QCQP, and return a PruningPlan."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .apply import mask_model, slim_model, validate_masks
from .budget import Budget
from .cost import cost_model, evaluate_costs
from .graph.channel_graph import ChannelGraph, build_channel_graph
from .importance import layer_scores, objective_terms
from . import solvers
from .solvers.problem import ResourceConstraint


@dataclass
class PruningPlan:
    """Which channels to keep, why (solver result), and what it costs.

    ``masks[g]`` is the keep-mask of channel group ``g`` (named ``group_names[g]``);
    ``cost`` / ``full_cost`` give every modeled resource after / before pruning (``latency``
    in ``full_cost`` is the unpruned latency measured in the latency model's calibration when
    it has one, else the predicted one; ``latency_model["full_reference"]`` says which);
    ``objective`` is the kept importance, ``bound`` a proven upper bound on it and
    ``gap = (bound - objective) / bound``. ``graph`` is the traced model the plan was made
    on; a plan loaded from JSON has none and re-traces the model it is applied to (checking
    the architecture fingerprint first).
    """

    masks: list[np.ndarray]
    group_names: list[str]
    fingerprint: str
    input_shapes: list[tuple[int, ...]]
    status: str
    objective: float
    bound: float | None
    gap: float | None
    cost: dict[str, float]
    full_cost: dict[str, float]
    budget: Budget
    limits: dict[str, float]
    importance: str
    solver: str
    seed: int
    wall_time: float
    stop_reason: str | None = None
    solver_details: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    latency_model: dict[str, Any] | None = None  # which latency model priced the plan
    coupling: str = "shared"  # "union": a sum keeps a channel when any operand does
    unions: dict[int, tuple[int, ...]] = field(default_factory=dict)  # derived group -> its operands
    graph: ChannelGraph | None = field(default=None, repr=False, compare=False)

    @property
    def kept_channels(self) -> dict[str, list[int]]:
        """Group name -> sorted kept channel indices."""
        return {n: np.flatnonzero(m).tolist() for n, m in zip(self.group_names, self.masks)}

    def graph_for(self, model: nn.Module) -> ChannelGraph:
        """The channel graph of ``model``, checked to be the architecture this plan is for."""
        if self.graph is not None and _same_params(model, self.graph):
            return self.graph
        shapes = {k: tuple(v.shape) for k, v in model.named_parameters()}
        if self.graph is not None:
            _raise_mismatch(shapes, self.graph.param_shapes)
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        inputs = tuple(torch.zeros(s, device=device, dtype=dtype) for s in self.input_shapes)
        try:
            graph = build_channel_graph(model, inputs, coupling=self.coupling)
        except Exception as e:
            raise ValueError(f"this plan does not fit the model: tracing it on the plan's input "
                             f"shapes {self.input_shapes} failed ({e})") from e
        if graph.fingerprint() != self.fingerprint:
            raise ValueError(
                f"this plan was made for another architecture: model fingerprint "
                f"{graph.fingerprint()} != plan fingerprint {self.fingerprint} (groups "
                f"{len(graph.groups)} vs {len(self.group_names)}); make a new plan for this model")
        from .plan_io import check_plan_against_graph  # a loaded plan: groups and layers must agree
        check_plan_against_graph(self, graph)
        return graph

    def to_json(self, path: str, *, encoding: str = "indices") -> None:
        """Write the plan as versioned, schema-validated JSON (atomically)."""
        from .plan_io import save_plan
        save_plan(self, path, encoding=encoding)

    def summary(self) -> str:
        """A readable table: per layer channels before/after, and totals against the budget."""
        from .report import plan_summary
        return plan_summary(self)

    def plot(self, path: str) -> None:
        """A PNG bar chart of kept channels per layer (needs matplotlib)."""
        from .report import plot_plan
        plot_plan(self, path)

    def apply(self, model: nn.Module, mode: str = "slim") -> nn.Module:
        """A pruned deep copy of ``model``: ``"slim"`` (smaller modules) or ``"mask"`` (same
        shapes, removed channels held at zero). The user's model is not modified."""
        if mode not in ("slim", "mask"):
            raise ValueError(f"mode={mode!r} must be 'slim' or 'mask'")
        graph = self.graph_for(model)
        return (slim_model if mode == "slim" else mask_model)(model, graph, self.masks)


def _same_params(model: nn.Module, graph: ChannelGraph) -> bool:
    return {k: tuple(v.shape) for k, v in model.named_parameters()} == graph.param_shapes


def _raise_mismatch(shapes: dict, expected: dict) -> None:
    if shapes.keys() != expected.keys():
        missing = sorted(expected.keys() - shapes.keys())[:3]
        extra = sorted(shapes.keys() - expected.keys())[:3]
        raise ValueError(f"this plan was made for another architecture: parameters missing "
                         f"{missing}, unexpected {extra}")
    for k, v in expected.items():
        if shapes[k] != v:
            raise ValueError(f"this plan was made for another architecture: parameter {k} has "
                             f"shape {shapes[k]}, the plan expects {v}")


def layer_table(graph: ChannelGraph, masks: Sequence[np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per prunable layer: kind, weight name, full sizes and kept positions of each axis, and
    the FLOPs its calls cost before (``flops_full``) and after (``flops``) pruning."""
    res = {}
    counts = [int(m.sum()) for m in masks]
    module_of = {n.name: n.target for n in graph.graph_module.graph.nodes if n.op == "call_module"}
    flops: dict[str, list[float]] = {}
    for t in graph.flop_terms:
        f = flops.setdefault(module_of.get(t.node, ""), [0.0, 0.0])
        f[0] += t.coef * graph.segment_size(t.out, counts) * graph.segment_size(t.inp, counts)
        f[1] += t.coef * graph.segment_size(t.out, graph.sizes()) * graph.segment_size(t.inp, graph.sizes())
    for layer in graph.layers:
        full_out = sum(graph.groups[s.group].size * s.block for s in layer.out)
        entry: dict[str, Any] = {"kind": layer.kind, "weight": layer.weight, "out_size": full_out,
                                 "out": graph.kept_indices(layer.out, masks).tolist()}
        if layer.inp is not None:
            entry["in_size"] = sum(graph.groups[s.group].size * s.block for s in layer.inp)
            entry["in"] = graph.kept_indices(layer.inp, masks).tolist()
        if layer.module in flops:
            entry["flops"], entry["flops_full"] = flops[layer.module]
        res[layer.module] = entry
    return res


def _per_group(value: Any, graph: ChannelGraph, what: str, default: Any) -> list[Any]:
    if value is None:
        return [default] * len(graph.groups)
    if isinstance(value, Mapping):
        out = [default] * len(graph.groups)
        for k, v in value.items():
            g = graph.group(k)
            if g.union_of and v is not None and v != default:
                raise ValueError(f"{what}={{{k!r}: {v!r}}}: group {g.name!r} is a sum under union coupling "
                                 f"(the OR of {[graph.groups[i].name for i in g.union_of]}); its channels "
                                 f"follow its operands, so set {what} on those groups instead")
            out[g.id] = v
        return out
    return [value] * len(graph.groups)


def build_problem(graph: ChannelGraph, scores: Mapping[str, np.ndarray], limits: Mapping[str, float],
                  costs: Mapping[str, Any], *, min_keep: Any = 1, round_to: Any = None) -> "solvers.ChannelProblem":
    """The solver's view of a traced model: groups, objective terms and budget constraints."""
    bil, lin, const = objective_terms(graph, scores)
    mk = _per_group(min_keep, graph, "min_keep", 1)
    rt = _per_group(round_to, graph, "round_to", None)
    for name, v in (("min_keep", mk), ("round_to", rt)):
        for g, x in zip(graph.groups, v):
            if x is not None and (isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1):
                raise ValueError(f"{name}={x!r} for group {g.name!r} must be a positive integer")
    return solvers.ChannelProblem(
        sizes=tuple(g.size for g in graph.groups),
        frozen=tuple(g.frozen for g in graph.groups),
        min_keep=tuple(min(int(x), g.size) for x, g in zip(mk, graph.groups)),
        round_to=tuple(rt),
        bilinear=tuple(bil),
        linear=tuple(lin),
        objective_constant=const,
        constraints=tuple(ResourceConstraint(k, costs[k], float(v)) for k, v in limits.items()),
        names=tuple(g.name for g in graph.groups),
        unions=tuple(solvers.UnionConstraint(g.id, g.union_of) for g in graph.groups if g.union_of),
    )


def plan_channels(
    model: nn.Module,
    example_inputs: Any,
    budget: Budget,
    *,
    importance: str | Callable = "l2",
    solver: str = "cpsat",
    time_limit: float = 30.0,
    seed: int = 0,
    min_keep: int | Mapping[str, int] = 1,
    round_to: int | Mapping[str, int] | None = None,
    frozen: Sequence[str] = (),
    leaf_modules: Sequence[str | type] = (),
    importance_data: Any = None,
    loss_fn: Callable | None = None,
    progress: Callable[[float, float | None, float], None] | None = None,
    graph: ChannelGraph | None = None,
    latency_model: Any = None,
    coupling: str | None = None,
    **solver_options: Any,
) -> PruningPlan:
    """Choose the channels to keep so that every budget holds and the kept importance is
    maximal (proven, or with a certified gap when the time limit stops the solver).

    ``coupling="union"`` lets a residual block compute fewer channels than its stream
    carries: a channel of a sum is kept when any operand keeps it (the QCQP paper's
    formulation; ``"shared"``, the default, gives every operand of an add one keep-mask;
    with ``graph=`` the default is the coupling the graph was traced with).

    Raises ``InfeasibleBudgetError`` (a ``ValueError``) stating the smallest achievable cost
    when a budget cannot be met even at ``min_keep`` channels per group.
    """
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a qcqp_prune.Budget (e.g. Budget(flops=0.5)), got {budget!r}")
    if not isinstance(time_limit, (int, float)) or not math.isfinite(time_limit) or time_limit < 0:
        raise ValueError(f"time_limit={time_limit!r} must be a finite number of seconds >= 0")
    if graph is None:
        graph = build_channel_graph(model, example_inputs, frozen=frozen, leaf_modules=leaf_modules,
                                    coupling=coupling or "shared")
    elif coupling is not None and graph.coupling != coupling:
        raise ValueError(f"graph was traced with coupling={graph.coupling!r} but coupling={coupling!r} was "
                         f"asked for; trace with qp.trace(model, inputs, coupling={coupling!r})")
    if not graph.prunable_groups:
        warnings.warn(f"the model has no prunable channel group ({len(graph.groups)} groups, all frozen: "
                      f"{'; '.join(sorted({r for rs in graph.frozen_reasons.values() for r in rs}))[:300]}); the plan keeps every "
                      f"channel", UserWarning, stacklevel=2)
    costs = cost_model(graph)
    if latency_model is not None and graph.coupling != "shared":
        raise ValueError("latency budgets need coupling='shared' for now: a latency model is fitted on the "
                         "shared-coupling graph and does not price the stream gathers/scatters of union plans")
    if latency_model is not None:
        costs["latency"] = latency_model.cost(graph)
    elif budget.latency is not None:
        raise ValueError("budget latency needs a fitted latency model: pass "
                         "latency_model=qp.fit_latency(model, example_inputs) (or load one with "
                         "qp.LatencyModel.load(path))")
    full = evaluate_costs(costs, graph.sizes())
    lm_info = None
    if latency_model is not None:
        # a latency fraction is of the unpruned latency *measured* in the calibration when the
        # model has one (the smooth fit over-predicts the unpruned widths, which sit at the cheap
        # end of oneDNN's 16-channel steps), else of the predicted one; full_cost reports the
        # same reference, so cost / full_cost is the predicted fraction of it
        predicted_full = full["latency"]
        measured_full = getattr(latency_model, "measured_full_ms", None)
        if measured_full is not None:
            full["latency"] = float(measured_full)
        lm_info = {**latency_model.describe(),
                   "full_reference": "measured" if measured_full is not None else "predicted",
                   "predicted_full_ms": predicted_full,
                   "measured_full_ms": None if measured_full is None else float(measured_full)}
    limits = budget.resolve(full)
    scores = layer_scores(model, graph, importance, data=importance_data, loss_fn=loss_fn)
    problem = build_problem(graph, scores, limits, costs, min_keep=min_keep, round_to=round_to)
    sol = solvers.solve_channels(problem, solver=solver, time_limit=float(time_limit), seed=seed,
                         progress=progress, **solver_options)
    masks = validate_masks(graph, sol.masks)
    cost = evaluate_costs(costs, [int(m.sum()) for m in masks])
    for k, lim in limits.items():  # never hand out a plan that breaks a budget
        if cost[k] > lim * (1 + 1e-12):
            raise AssertionError(f"internal error: solver {solver} returned a plan with {k}="
                                 f"{cost[k]:.6g} over the budget {lim:.6g}")
    return PruningPlan(
        masks=masks, group_names=[g.name for g in graph.groups], fingerprint=graph.fingerprint(),
        input_shapes=list(graph.input_shapes), layers=layer_table(graph, masks), graph=graph, status=str(getattr(sol.status, "value", sol.status)),
        objective=sol.objective, bound=sol.bound, gap=sol.gap, cost=cost, full_cost=full,
        budget=budget, limits=limits,
        importance=importance if isinstance(importance, str) else getattr(importance, "__name__", "custom"),
        solver=solver, seed=seed, wall_time=sol.wall_time, stop_reason=sol.stop_reason,
        latency_model=lm_info, coupling=graph.coupling,
        unions={g.id: g.union_of for g in graph.groups if g.union_of},
        solver_details={"backend": sol.backend, "backend_version": sol.backend_version, **sol.details},
    )
