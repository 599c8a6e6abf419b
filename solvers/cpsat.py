"""CP-SAT back-end: the exact discrete QCQP with native count products.

Binary ``x[g, a]`` per prunable channel, integer counts ``N_g`` over the allowed values,
``N_g * N_h`` through ``AddMultiplicationEquality``; costs scaled to integers rounding
coefficients up and budgets down; importances scaled to integers (``details["resolution"]``)
with the objective re-computed in floating point from the masks; the pairwise or Glover
linearization of the bilinear objective; greedy warm start via solution hints. A derived
(union) group has its own Booleans tied to its inputs' by the OR rule per channel
(``u -> v`` for each input, ``v -> OR(u)``) and a count over ``1..size``.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import numpy as np
from ortools.sat.python import cp_model

from .linearize import (choose_linearization, glover_rows, integer_cost, nonzeros, objective_scale,
                        pairwise_entries, union_rows)
from .problem import ChannelProblem
from .reduced import Reduced

CPSAT_STATUS = {
    cp_model.OPTIMAL: "OPTIMAL",
    cp_model.FEASIBLE: "FEASIBLE",
    cp_model.INFEASIBLE: "INFEASIBLE",
    cp_model.UNKNOWN: "NO_SOLUTION",
    cp_model.MODEL_INVALID: "ERROR",
}


PRESOLVE_LIMIT = 10_000  # variables; larger models skip CP-SAT's presolve


class _Progress(cp_model.CpSolverSolutionCallback):
    def __init__(self, fn: Callable, to_units: Callable[[float], float], bound_units: Callable[[float], float]) -> None:
        super().__init__()
        self.fn, self.to_units, self.bound_units = fn, to_units, bound_units
        self.t0 = time.perf_counter()

    def on_solution_callback(self) -> None:
        self.fn(self.to_units(self.ObjectiveValue()), self.bound_units(self.BestObjectiveBound()),
                time.perf_counter() - self.t0)


def build_cpsat(problem: ChannelProblem, red: Reduced, linearization: str):
    model = cp_model.CpModel()
    P = red.prunable
    x = {g: [model.NewBoolVar(f"x{g}_{a}") for a in range(problem.sizes[g])] for g in P}
    N = {}
    for g in P:
        N[g] = model.NewIntVarFromDomain(cp_model.Domain.FromValues(problem.allowed_counts(g)), f"N{g}")
        model.Add(N[g] == cp_model.LinearExpr.Sum(x[g]))
    add_unions(model, problem, x)
    products = {}

    def product(g: int, h: int):
        if (g, h) not in products:
            lo = problem.allowed_counts(g)[0] * problem.allowed_counts(h)[0]
            v = model.NewIntVar(lo, problem.sizes[g] * problem.sizes[h], f"P{g}_{h}")
            model.AddMultiplicationEquality(v, [N[g], N[h]])
            products[(g, h)] = v
        return products[(g, h)]

    for r in range(len(problem.constraints)):
        bil, lin, const, budget = integer_cost(problem, r)
        expr = sum(c * product(g, h) for (g, h), c in bil.items()) + sum(c * N[g] for g, c in lin.items())
        model.Add(expr + const <= budget)

    S = objective_scale(red)
    terms = []
    aux: list[tuple] = []  # linearization variables, to complete the warm-start hint
    slack = 0.0  # rounding of weights: |S*f - F| <= 0.5 per weight entry in the objective
    method = choose_linearization(red, linearization)
    for g, w in red.linear.items():
        iw = np.rint(w * S).astype(np.int64)
        nz = np.flatnonzero(iw)
        if len(nz):
            terms.append(cp_model.LinearExpr.WeightedSum([x[g][a] for a in nz], iw[nz].tolist()))
        slack += 0.5 * np.count_nonzero(w)
    for pr in red.pairs:
        if method == "pairwise":
            for a, b, w in pairwise_entries(pr):
                coef = int(np.rint(w * S))
                if coef <= 0:
                    continue
                y = model.NewBoolVar("")
                model.AddImplication(y, x[pr.g][a])
                model.AddImplication(y, x[pr.h][b])
                terms.append(coef * y)
                aux.append(("y", y, pr.g, a, pr.h, b))
        else:
            for rg, cg, a, row in glover_rows(pr):
                irow = np.rint(row * S).astype(np.int64)
                M = int(irow.sum())
                if M <= 0:
                    continue
                z = model.NewIntVar(0, M, "")
                model.Add(z <= M * x[rg][a])
                nz = np.flatnonzero(irow)
                aux.append(("z", z, rg, a, cg, (nz, irow[nz], M)))
                model.Add(z <= cp_model.LinearExpr.WeightedSum([x[cg][b] for b in nz], irow[nz].tolist()))
                terms.append(z)
        slack += 0.5 * np.count_nonzero(pr.W)
    objective = cp_model.LinearExpr.Sum(terms)
    model.Maximize(objective)
    info = {"linearization": method, "resolution": 1.0 / S, "nonzero_weights": nonzeros(red),
            "variables": len(model.Proto().variables), "constraints": len(model.Proto().constraints)}
    return model, x, N, products, aux, S, slack, objective, info


def add_unions(model: cp_model.CpModel, problem: ChannelProblem, x: dict) -> None:
    """Each derived channel is kept exactly when one of its inputs' channels is."""
    for v, inputs in union_rows(problem):
        for a, xv in enumerate(x[v]):
            for u in inputs:
                model.AddImplication(x[u][a], xv)
            model.AddBoolOr([x[u][a] for u in inputs] + [xv.Not()])


def add_hint(model: cp_model.CpModel, x, N, products, aux, masks: list[np.ndarray]) -> None:
    """Hint every variable (counts, products, linearization) so the hint is a complete solution."""
    for g, xs in x.items():
        for a, v in enumerate(xs):
            model.AddHint(v, bool(masks[g][a]))
        model.AddHint(N[g], int(masks[g].sum()))
    for (g, h), v in products.items():
        model.AddHint(v, int(masks[g].sum()) * int(masks[h].sum()))
    for kind, v, g, a, h, rest in aux:
        if kind == "y":
            model.AddHint(v, bool(masks[g][a] and masks[h][rest]))
        else:
            nz, w, M = rest
            model.AddHint(v, int(min(M * int(masks[g][a]), int(np.dot(w, masks[h][nz])))))


def _solve_interruptibly(solver: cp_model.CpSolver, model: cp_model.CpModel, cb) -> tuple[int, bool]:
    """Solve in a worker thread so that Ctrl-C in the main thread stops the search and keeps the
    best solution. CP-SAT's own SIGINT handling is off: once installed it stays in the process and
    a later Ctrl-C would kill Python outright instead of raising KeyboardInterrupt."""
    solver.parameters.catch_sigint_signal = False
    result: list = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(solver.Solve(model, cb))
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread below
            result.append(e)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    interrupted = False
    while not done.is_set():  # (not Thread.join: an interrupted join can mark a live thread dead)
        try:
            done.wait(0.05)
        except KeyboardInterrupt:
            interrupted = True
            solver.StopSearch()
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0], interrupted


def solve_cpsat(problem: ChannelProblem, red: Reduced, *, time_limit: float, seed: int, workers: int,
                linearization: str, hint: list[np.ndarray] | None, progress: Callable | None,
                upper: float | None = None, gap_limit: float = 0.0):
    """``upper``: a proven bound on the objective (the count bound), added as a cut on the
    integer objective (valid after rounding: ``|S*f - F| <= slack``); ``gap_limit``: CP-SAT's
    relative gap limit. ``time_limit`` covers building the model too (a minute on ResNet-50)."""
    start = time.perf_counter()
    model, x, N, products, aux, S, slack, objective, info = build_cpsat(problem, red, linearization)
    if upper is not None and np.isfinite(upper):
        model.Add(objective <= int(np.floor((upper - red.constant) * (1 + 1e-9) * S + slack + 1)))
        info["objective_cut"] = True
    if hint is not None:  # completed: a hint of the free groups' masks serves too
        add_hint(model, x, N, products, aux, problem.complete(hint))
    solver = cp_model.CpSolver()
    prm = solver.parameters
    info["build_time"] = time.perf_counter() - start
    prm.max_time_in_seconds = max(float(time_limit) - info["build_time"], 0.0)
    prm.num_workers = int(workers)
    prm.random_seed = int(seed)
    if workers > 1:
        prm.interleave_search = True
    if gap_limit > 0:
        prm.relative_gap_limit = float(gap_limit)
    if info["variables"] > PRESOLVE_LIMIT:
        # measured on ResNet-50 (24.7k variables): presolve alone used a 30 s limit and no
        # solution came back; without it CP-SAT reports a solution and a bound in time
        prm.cp_model_presolve = False
    to_units = lambda v: red.constant + v / S  # noqa: E731
    bound_units = lambda v: red.constant + (v + slack) / S  # noqa: E731
    cb = _Progress(progress, to_units, bound_units) if progress else None
    status, interrupted = _solve_interruptibly(solver, model, cb)
    name = CPSAT_STATUS.get(status, "ERROR")
    masks, bound = None, None
    if name in ("OPTIMAL", "FEASIBLE"):
        masks = [np.ones(s, dtype=bool) for s in problem.sizes]
        for g in red.prunable:
            masks[g] = np.array([solver.BooleanValue(v) for v in x[g]], dtype=bool)
        bound = bound_units(solver.BestObjectiveBound())
    info.update({"native_status": solver.StatusName(status), "wall_time": solver.WallTime(),
                 "interrupted": interrupted,
                 "workers": int(workers), "deterministic": workers == 1 or bool(prm.interleave_search)})
    return name, masks, bound, info
