"""Shared pieces of the exact MILP/CP models: integer scaling of costs and importances, the
choice between the pairwise and the Glover linearization of ``x_g^T W x_h``, and the union
rows (``v >= u_i``, ``v <= sum_i u_i`` per channel of a derived group)."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np

from .problem import ChannelProblem
from .reduced import Pair, Reduced

PAIRWISE_LIMIT = 20_000  # nonzero weights; above it "auto" picks Glover


def nonzeros(red: Reduced) -> int:
    return int(sum(np.count_nonzero(p.W) for p in red.pairs))


def choose_linearization(red: Reduced, linearization: str) -> str:
    if linearization not in ("auto", "pairwise", "glover"):
        raise ValueError(f"linearization={linearization!r} must be 'auto', 'pairwise' or 'glover'")
    if linearization == "auto":
        return "pairwise" if nonzeros(red) <= PAIRWISE_LIMIT else "glover"
    return linearization


def objective_scale(red: Reduced, target: float | None = None) -> float:
    """Multiplier that maps the largest possible variable objective to about ``target``:
    1e8, or 1e4 units per nonzero weight on large networks (up to 1e13), so that a typical
    weight never rounds to zero (ViT-H/14 has 4e8 of them) and the rounding slack added to
    the bound stays near 5e-5 of the total."""
    total = sum(float(p.W.sum()) for p in red.pairs) + sum(float(w.sum()) for w in red.linear.values())
    if target is None:
        entries = nonzeros(red) + sum(int(np.count_nonzero(w)) for w in red.linear.values())
        target = max(1e8, min(1e13, 1e4 * entries))
    return target / total if total > 0 else 1.0


def cost_scale(problem: ChannelProblem, r: int, target: float = 2.0 ** 50) -> float:
    c = problem.constraints[r]
    full = c.cost.evaluate(problem.sizes)
    return target / max(full, c.budget, 1e-300)


def union_rows(problem: ChannelProblem) -> list[tuple[int, tuple[int, ...]]]:
    """``(derived group, its inputs)`` per union the model must enforce: the derived group is
    prunable, and then so is every input (a frozen input would have frozen it)."""
    return [(v, problem.derived[v]) for v in problem.union_order if not problem.frozen[v]]


def rounding(problem: ChannelProblem, g: int) -> int | None:
    """``round_to`` of group ``g`` as the model applies it: never on a derived group."""
    return None if g in problem.derived else problem.round_to[g]


def pairwise_entries(pr: Pair) -> Iterator[tuple[int, int, float]]:
    """``(a, b, weight)`` per product ``x_g[a] x_h[b]`` of the pairwise linearization; a term
    of a group with itself counts each unordered pair once with twice the weight."""
    W = pr.W
    for a, b in zip(*np.nonzero(W)):
        if pr.g == pr.h and a >= b:
            continue
        yield int(a), int(b), (2.0 if pr.g == pr.h else 1.0) * float(W[a, b])


def glover_rows(pr: Pair) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """``(row group, column group, row, weights)`` per variable of the Glover linearization,
    oriented so that the smaller side gets the variables."""
    W = pr.W
    rg, cg, Wi = (pr.g, pr.h, W) if W.shape[0] <= W.shape[1] else (pr.h, pr.g, W.T)
    for a in range(Wi.shape[0]):
        if Wi[a].sum() > 0:
            yield rg, cg, a, Wi[a]


def folded_cost(problem: ChannelProblem, r: int) -> tuple[dict, dict, float]:
    """Cost ``r`` over prunable groups only: terms touching frozen groups folded into linear
    terms and the constant. Returns (bilinear, linear, constant) in real numbers."""
    c = problem.constraints[r]
    frozen, sizes = problem.frozen, problem.sizes
    bil: dict[tuple[int, int], float] = {}
    lin: dict[int, float] = {}
    const = c.cost.constant
    for (g, h), v in c.cost.bilinear.items():
        if frozen[g] and frozen[h]:
            const += v * sizes[g] * sizes[h]
        elif frozen[g]:
            lin[h] = lin.get(h, 0.0) + v * sizes[g]
        elif frozen[h]:
            lin[g] = lin.get(g, 0.0) + v * sizes[h]
        else:
            bil[(g, h)] = bil.get((g, h), 0.0) + v
    for g, v in c.cost.linear.items():
        if frozen[g]:
            const += v * sizes[g]
        else:
            lin[g] = lin.get(g, 0.0) + v
    return bil, lin, const


def integer_cost(problem: ChannelProblem, r: int):
    """Cost ``r`` as integers with frozen groups folded in: exact when every coefficient is
    already an integer (FLOPs, parameters), otherwise scaled with coefficients rounded up and
    the budget rounded down, so an integer-feasible point is feasible in real numbers.
    Returns (bilinear, linear, constant, budget)."""
    c = problem.constraints[r]
    bil, lin, const = folded_cost(problem, r)
    sizes = problem.sizes
    values = [*bil.values(), *lin.values(), const]
    full = c.cost.evaluate(sizes)
    exact = all(float(v).is_integer() for v in values) and max(full, c.budget) < 2.0 ** 60
    s = 1.0 if exact else cost_scale(problem, r)
    return ({k: math.ceil(v * s) for k, v in bil.items()}, {g: math.ceil(v * s) for g, v in lin.items()},
            math.ceil(const * s), math.floor(c.budget * s))
