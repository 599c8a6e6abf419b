"""Exhaustive search over every keep-mask of the prunable channels: the test oracle."""

from __future__ import annotations

import itertools

import numpy as np

from .problem import ChannelProblem
from .reduced import reduce_problem

MAX_CHANNELS = 22


def exhaustive_masks(problem: ChannelProblem) -> tuple[list[np.ndarray] | None, float]:
    """The optimal masks and objective (None, -inf if no mask set meets the budgets)."""
    red = reduce_problem(problem)
    P = problem.free  # derived (union) groups follow from these
    total = sum(problem.sizes[g] for g in P)
    if total > MAX_CHANNELS:
        raise ValueError(f"exhaustive search needs at most {MAX_CHANNELS} prunable channels; this "
                         f"problem has {total}. Use solver='cpsat' for real networks.")
    # every allowed mask per group, as a 0/1 matrix (options x size)
    options = {}
    for g in P:
        allowed = set(problem.allowed_counts(g))
        rows = [m for m in itertools.product((0, 1), repeat=problem.sizes[g]) if sum(m) in allowed]
        options[g] = np.array(rows, dtype=np.float64)
    best, best_obj = None, -np.inf
    sizes = problem.sizes
    for combo in itertools.product(*(range(len(options[g])) for g in P)):
        x = {g: options[g][i] for g, i in zip(P, combo)}
        for v in problem.union_order:
            if not problem.frozen[v]:
                x[v] = np.logical_or.reduce([x[i] > 0 for i in problem.derived[v]]).astype(np.float64)
        n = np.array([sizes[g] if problem.frozen[g] else x[g].sum() for g in range(len(sizes))])
        if any(c.cost.evaluate(n) > c.budget * (1 + 1e-12) + 1e-9 for c in problem.constraints):
            continue
        obj = red.constant
        for pr in red.pairs:
            obj += float(x[pr.g] @ pr.W @ x[pr.h])
        for g, w in red.linear.items():
            obj += float(w @ x[g])
        if obj > best_obj:
            best_obj = obj
            best = [np.ones(s, dtype=bool) if problem.frozen[g] else x[g].astype(bool)
                    for g, s in enumerate(sizes)]
    if best is not None:
        best_obj = problem.objective(best)
    return best, best_obj
