"""Where the certified gap comes from: the count bound taken apart on one (model, budget).

    python benchmarks/bound_diagnostics.py                     # ResNet-20 and -56 at 30% FLOPs
    python benchmarks/bound_diagnostics.py --models resnet20 --budgets 0.5 --seconds 5  # smoke

Per cell: the greedy plan; the root decomposition (one set of multipliers, budgets
relaxed), then the branch and bound over counts (boxes with their own multipliers, budgets
met); the bound with every count fixed to the greedy plan's (how much of the gap lies
*within* that count combination); and, for each of the groups in the
most objective terms (the residual streams), the combination with that group 2 channels
smaller: its fixed-count bound against the best plan CP-SAT finds with those counts fixed.
A fixed-count bound far above that plan means the per-combination relaxation is loose there,
which no search over combinations can repair.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np
from ortools.sat.python import cp_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import write  # noqa: E402
from solvers import build  # noqa: E402

import qcqp_prune as qp  # noqa: E402
from qcqp_prune.cost import cost_model, evaluate_costs  # noqa: E402
from qcqp_prune.importance import layer_scores  # noqa: E402
from qcqp_prune.plan import build_problem  # noqa: E402
from qcqp_prune.solvers.bounds import Buckets, CountBound  # noqa: E402
from qcqp_prune.solvers.cpsat import build_cpsat  # noqa: E402
from qcqp_prune.solvers.greedy import greedy_masks  # noqa: E402
from qcqp_prune.solvers.reduced import reduce_problem  # noqa: E402


def fixed_count_bound(problem, red, counts: np.ndarray, seconds: float, lower: float) -> float:
    """The decomposition with every prunable group's count fixed to ``counts``."""
    cb = CountBound(problem, red, counts)
    for g in cb.vars:
        cb.buckets[g] = Buckets(np.array([int(counts[g])]), np.array([0]))
    cb._rebuild()
    # the greedy plan's objective is no lower bound on these counts' best plan: nothing may be
    # dropped below it (prune=False also skips the branch and bound: the counts are fixed)
    bound, _ = cb.solve(time_limit=seconds, lower=lower, prune=False)
    return bound


def best_plan_at(problem, red, counts: np.ndarray, seconds: float) -> float:
    """Objective of the best plan CP-SAT finds in ``seconds`` with these counts (a lower bound)."""
    model, x, N, *_ = build_cpsat(problem, red, "glover")
    for g in red.prunable:
        model.Add(N[g] == int(counts[g]))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = seconds
    solver.parameters.num_workers = 1
    # CP-SAT's own Ctrl-C handler would stay installed and kill the process on a later Ctrl-C
    solver.parameters.catch_sigint_signal = False
    if solver.Solve(model) not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return float("nan")
    masks = [np.ones(s, dtype=bool) for s in problem.sizes]
    for g in red.prunable:
        masks[g] = np.array([solver.BooleanValue(v) for v in x[g]], dtype=bool)
    return problem.objective(masks)


def cell(name: str, budget: float, seconds: float, streams: int) -> list[list]:
    model, x = build(name)
    graph = qp.trace(model, x)
    costs = cost_model(graph)
    limits = qp.Budget(flops=budget).resolve(evaluate_costs(costs, graph.sizes()))
    problem = build_problem(graph, layer_scores(model, graph, "l2"), limits, costs)
    red = reduce_problem(problem)
    plan = greedy_masks(problem, red=red)
    lower, counts = problem.objective(plan), problem.counts(plan)
    bound, info = CountBound(problem, red, counts).solve(time_limit=seconds, lower=lower)

    def gap(b: float) -> str:
        return f"{(b - lower) / b:.2%}"

    rows = [[name, f"flops {budget:.0%}", "greedy plan", f"{lower:.2f}", "-", "-"],
            [name, f"flops {budget:.0%}", f"root decomposition, budgets relaxed ({info['count_bound_iterations']} steps)",
             f"{info['count_bound_relaxed']:.2f}", gap(info["count_bound_relaxed"]), "-"],
            [name, f"flops {budget:.0%}", f"+ branch and bound over counts ({info['count_bound_nodes']} nodes, "
             f"{seconds:g} s in all)", f"{bound:.2f}", gap(bound), "-"]]
    at_greedy = fixed_count_bound(problem, red, counts, seconds, lower)
    rows.append([name, f"flops {budget:.0%}", "bound at the greedy plan's counts", f"{at_greedy:.2f}",
                 gap(at_greedy), f"{lower:.2f}"])
    terms: dict[int, int] = {}
    for pair in red.pairs:
        for g in {pair.g, pair.h}:
            terms[g] = terms.get(g, 0) + 1
    for g in sorted(terms, key=lambda g: (-terms[g], g))[:streams]:
        smaller = counts.copy()
        smaller[g] = max(problem.allowed_counts(g)[0], counts[g] - 2)
        if smaller[g] == counts[g]:
            continue
        b = fixed_count_bound(problem, red, smaller, seconds, lower)
        found = best_plan_at(problem, red, smaller, seconds)
        rows.append([name, f"flops {budget:.0%}", f"bound with group {g} ({terms[g]} terms) at "
                     f"{smaller[g]} instead of {counts[g]}", f"{b:.2f}", gap(b), f"{found:.2f}"])
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet20,resnet56")
    ap.add_argument("--budgets", default="0.3")
    ap.add_argument("--seconds", type=float, default=18.0, help="per bound and per CP-SAT run")
    ap.add_argument("--streams", type=int, default=3, help="groups with the most terms to perturb")
    ap.add_argument("--out", default="bound_diagnostics")
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    rows = []
    for name in args.models.split(","):
        for b in args.budgets.split(","):
            rows += cell(name, float(b), args.seconds, args.streams)
            print(rows[-1], flush=True)
    headers = ["model", "budget", "what", "value", "gap to the greedy plan", "best plan found there"]
    notes = ("Importance l2, random weights (seed 0); "
             "'best plan found there' is CP-SAT with the counts fixed (1 worker), a lower bound on "
             "the best plan with those counts.")
    print(write(args.out, "Count bound diagnostics", headers, rows, notes))


if __name__ == "__main__":
    main()
