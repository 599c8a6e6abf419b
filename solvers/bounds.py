"""Count bound: a certified upper bound on the kept importance from the kept *counts* alone.

For a term ``x_g^T W x_h`` and counts ``(m, k)``, no ``m x k`` submatrix of ``W`` holds more
than ``min(R[m, k], C[m, k])``, where ``R[m, k]`` sums the ``m`` largest row-wise top-``k``
sums and ``C`` is the column analogue; a linear term keeps at most its top-``m`` prefix sum.
Maximizing the sum of these tables over counts that meet the budgets is a small problem
(one integer per group) that CP-SAT bounds tightly in about a second. Large groups are
bucketed (the table is monotone, so taking each bucket's largest count keeps it valid), and
table values are rounded up after scaling, so the result is a valid upper bound.
"""

from __future__ import annotations

import math
import time

import numpy as np
from ortools.sat.python import cp_model

from .linearize import integer_cost
from .problem import ChannelProblem
from .reduced import Reduced

MAX_BUCKETS = 64


def _rowwise(A: np.ndarray, ms: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """``out[i, j]``: sum of the ``ms[i]`` largest row-wise top-``ks[j]`` sums of ``A``."""
    C = np.zeros((A.shape[0], len(ks)))
    pos = ks > 0
    if pos.any():
        C[:, pos] = np.cumsum(-np.sort(-A, axis=1), axis=1)[:, ks[pos] - 1]   # top-k sum of each row
    D = np.vstack([np.zeros((1, len(ks))), np.cumsum(-np.sort(-C, axis=0), axis=0)])  # m largest
    return D[ms]


def pair_table(W: np.ndarray, square: bool = False, rows: np.ndarray | None = None,
               cols: np.ndarray | None = None) -> np.ndarray:
    """``T[i, j]``: most importance any ``rows[i] x cols[j]`` submatrix of ``W`` holds
    (default: every count, ``T[m, k]``). For ``square`` (symmetric W, zero diagonal:
    ``x^T W x``), ``T[i]`` for ``rows[i]`` kept."""
    rows = np.arange(W.shape[0] + 1) if rows is None else np.asarray(rows, dtype=np.int64)
    if square:
        R = _rowwise(W, rows, np.maximum(rows - 1, 0))
        return R[np.arange(len(rows)), np.arange(len(rows))]   # m rows, each with m-1 others
    cols = np.arange(W.shape[1] + 1) if cols is None else np.asarray(cols, dtype=np.int64)
    return np.minimum(_rowwise(W, rows, cols), _rowwise(W.T, cols, rows).T)


def _buckets(allowed: list[int]) -> list[tuple[int, int]]:
    if len(allowed) <= MAX_BUCKETS:
        return [(v, v) for v in allowed]
    edges = np.array_split(np.array(allowed), MAX_BUCKETS)
    return [(int(e[0]), int(e[-1])) for e in edges]


def count_bound(problem: ChannelProblem, red: Reduced, time_limit: float = 5.0, seed: int = 0,
                hint: np.ndarray | None = None) -> tuple[float | None, dict]:
    """An upper bound on the optimum (None if nothing was proven in time) and details.

    ``hint``: feasible per-group counts (e.g. the greedy plan's); with it CP-SAT starts from a
    feasible point, so a time limit still leaves a proven bound."""
    t0 = time.perf_counter()
    P = red.prunable
    if not P:
        return red.constant, {"count_bound_time": 0.0}
    model = cp_model.CpModel()
    buckets = {g: _buckets(problem.allowed_counts(g)) for g in P}
    B, N = {}, {}
    for g in P:
        bk = buckets[g]
        B[g] = model.NewIntVar(0, len(bk) - 1, f"B{g}")
        N[g] = model.NewIntVarFromDomain(cp_model.Domain.FromValues(problem.allowed_counts(g)), f"N{g}")
        lo = model.NewIntVar(bk[0][0], bk[-1][0], "")
        hi = model.NewIntVar(bk[0][1], bk[-1][1], "")
        model.AddElement(B[g], [b[0] for b in bk], lo)
        model.AddElement(B[g], [b[1] for b in bk], hi)
        model.Add(N[g] >= lo)
        model.Add(N[g] <= hi)
    products = {}

    def product(g: int, h: int):
        if (g, h) not in products:
            v = model.NewIntVar(0, problem.sizes[g] * problem.sizes[h], "")
            model.AddMultiplicationEquality(v, [N[g], N[h]])
            products[(g, h)] = v
        return products[(g, h)]

    for r in range(len(problem.constraints)):
        bil, lin, const, budget = integer_cost(problem, r)
        model.Add(sum(c * product(g, h) for (g, h), c in bil.items()) + sum(c * N[g] for g, c in lin.items())
                  + const <= budget)

    tables = []  # (groups, values at bucket maxima)
    for g, w in red.linear.items():
        if np.any(w > 0):
            pref = np.concatenate([[0.0], np.cumsum(-np.sort(-w))])
            tables.append(((g,), np.array([pref[hi] for _, hi in buckets[g]])))
    for pr in red.pairs:
        hg = np.array([hi for _, hi in buckets[pr.g]])
        if pr.g == pr.h:
            tables.append(((pr.g,), pair_table(pr.W, square=True, rows=hg)))
        else:
            hh = np.array([hi for _, hi in buckets[pr.h]])
            tables.append(((pr.g, pr.h), pair_table(pr.W, rows=hg, cols=hh)))
    top = sum(float(v.max()) for _, v in tables)
    S = 1e9 / top if top > 0 else 1.0
    terms = []
    for groups, vals in tables:
        ints = [int(math.ceil(v * S)) for v in vals.ravel()]
        t = model.NewIntVar(0, max(ints), "")
        if len(groups) == 1:
            model.AddElement(B[groups[0]], ints, t)
        else:
            g, h = groups
            idx = model.NewIntVar(0, len(ints) - 1, "")
            model.Add(idx == B[g] * vals.shape[1] + B[h])
            model.AddElement(idx, ints, t)
        terms.append(t)
    model.Maximize(sum(terms))
    if hint is not None:
        for g in P:
            n = int(hint[g])
            model.AddHint(N[g], n)
            model.AddHint(B[g], next(i for i, (lo, hi) in enumerate(buckets[g]) if lo <= n <= hi))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit, 0.0)
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = int(seed)
    status = solver.Solve(model)
    info = {"count_bound_status": solver.StatusName(status), "count_bound_time": time.perf_counter() - t0}
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None, info
    return red.constant + solver.BestObjectiveBound() / S, info
