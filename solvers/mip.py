"""MILP back-end through OR-Tools MathOpt (SCIP by default, HiGHS as ``mip_solver="highs"``).

Same model as CP-SAT, linear throughout: the bilinear objective by the pairwise or Glover
linearization (continuous variables, real weights: no scaling), and each count product
``N_g * N_h`` by an exact lower envelope: ``N_g`` in binary (or one-hot over its allowed
values when ``round_to`` is set) and ``P >= sum_k 2^k w_k`` with ``w_k >= N_h - U_h (1 - b_k)``,
``w_k >= 0``. Since costs only grow with ``P``, ``P >= N_g N_h`` is exact for feasibility.
A derived (union) group's binaries obey ``v >= u_i`` and ``v <= sum_i u_i`` per channel.
"""

from __future__ import annotations

import datetime
import math
import time

import numpy as np
from ortools.math_opt.python import mathopt

from .linearize import choose_linearization, folded_cost, glover_rows, pairwise_entries, rounding, union_rows
from .problem import ChannelProblem
from .reduced import Reduced

MATHOPT_STATUS = {
    mathopt.TerminationReason.OPTIMAL: "OPTIMAL",
    mathopt.TerminationReason.FEASIBLE: "FEASIBLE",
    mathopt.TerminationReason.INFEASIBLE: "INFEASIBLE",
    mathopt.TerminationReason.INFEASIBLE_OR_UNBOUNDED: "INFEASIBLE",
    mathopt.TerminationReason.UNBOUNDED: "ERROR",
    mathopt.TerminationReason.NO_SOLUTION_FOUND: "NO_SOLUTION",
    mathopt.TerminationReason.IMPRECISE: "ERROR",
    mathopt.TerminationReason.NUMERICAL_ERROR: "ERROR",
    mathopt.TerminationReason.OTHER_ERROR: "ERROR",
}
SOLVERS = {"scip": mathopt.SolverType.GSCIP, "highs": mathopt.SolverType.HIGHS}


def add_unions(m: mathopt.Model, problem: ChannelProblem, x: dict) -> None:
    """Each derived channel is kept exactly when one of its inputs' channels is."""
    for v, inputs in union_rows(problem):
        for a, xv in enumerate(x[v]):
            for u in inputs:
                m.add_linear_constraint(xv >= x[u][a])
            m.add_linear_constraint(xv <= mathopt.fast_sum(x[u][a] for u in inputs))


def check_options(mip_solver: str = "scip", products: str = "linear") -> None:
    """Refuse a back-end or product form MathOpt cannot run (checked before any bound, so a
    bound that settles the problem early does not hide a bad option)."""
    if mip_solver not in SOLVERS:
        raise ValueError(f"mip_solver={mip_solver!r} must be one of {sorted(SOLVERS)}")
    if products not in ("linear", "quadratic"):
        raise ValueError(f"products={products!r} must be 'linear' or 'quadratic'")
    if products == "quadratic" and mip_solver != "scip":
        raise ValueError("products='quadratic' needs mip_solver='scip' (HiGHS has no quadratic constraints)")


def solve_mip(problem: ChannelProblem, red: Reduced, *, time_limit: float, seed: int, linearization: str,
              hint: list[np.ndarray] | None, mip_solver: str = "scip", products: str = "linear"):
    """``products="linear"``: exact binary-expansion envelope of ``N_g N_h`` (any solver);
    ``products="quadratic"``: the budgets as native quadratic constraints in the counts
    (SCIP only; MathOpt's HiGHS has no quadratic constraints)."""
    start = time.perf_counter()  # options were checked by solve_channels (check_options)
    method = choose_linearization(red, linearization)
    m = mathopt.Model(name="channels")
    P = red.prunable
    sizes = problem.sizes
    x = {g: [m.add_binary_variable(name=f"x{g}_{a}") for a in range(sizes[g])] for g in P}
    N = {g: mathopt.fast_sum(x[g]) for g in P}
    add_unions(m, problem, x)
    digits: dict[int, list] = {}  # g -> [(value weight, binary var)]
    for g in P:
        allowed, step = problem.allowed_counts(g), rounding(problem, g)
        if products == "quadratic":
            if step:
                q = m.add_integer_variable(lb=0, ub=sizes[g] // step, name=f"q{g}")
                full = m.add_binary_variable(name=f"f{g}")  # the full size, when not a multiple
                m.add_linear_constraint(N[g] == step * q + (sizes[g] - step * (sizes[g] // step)) * full)
                m.add_linear_constraint(q >= (sizes[g] // step) * full)
            m.add_linear_constraint(N[g] >= allowed[0])
            continue
        if step:
            lam = [m.add_binary_variable(name=f"l{g}_{v}") for v in allowed]
            m.add_linear_constraint(mathopt.fast_sum(lam) == 1)
            m.add_linear_constraint(N[g] == mathopt.fast_sum(v * l for v, l in zip(allowed, lam)))
            digits[g] = list(zip(allowed, lam))
        else:
            m.add_linear_constraint(N[g] >= allowed[0])
            bits = [m.add_binary_variable(name=f"b{g}_{k}") for k in range(max(1, math.ceil(math.log2(sizes[g] + 1))))]
            m.add_linear_constraint(N[g] == mathopt.fast_sum((2 ** k) * b for k, b in enumerate(bits)))
            digits[g] = [(2 ** k, b) for k, b in enumerate(bits)]
    prod_cache = {}

    def product(g: int, h: int):
        if (g, h) not in prod_cache:
            U = sizes[h]
            terms = []
            for val, b in digits[g]:
                w = m.add_variable(lb=0.0, ub=U)
                m.add_linear_constraint(w >= N[h] - U * (1 - b))
                terms.append(val * w)
            prod_cache[(g, h)] = mathopt.fast_sum(terms)
        return prod_cache[(g, h)]

    for r, c in enumerate(problem.constraints):
        bil, lin, const = folded_cost(problem, r)
        if products == "quadratic":
            expr = [v * N[g] * N[h] for (g, h), v in bil.items()] + [v * N[g] for g, v in lin.items()]
            if expr:
                m.add_quadratic_constraint(mathopt.fast_sum(expr) <= c.budget - const)
            continue
        expr = [v * product(g, h) for (g, h), v in bil.items()] + [v * N[g] for g, v in lin.items()]
        m.add_linear_constraint(mathopt.fast_sum(expr) <= c.budget - const)

    obj = []
    for g, w in red.linear.items():
        obj += [float(c) * x[g][a] for a, c in enumerate(w) if c]
    for pr in red.pairs:
        if method == "pairwise":
            for a, b, w in pairwise_entries(pr):
                y = m.add_variable(lb=0.0, ub=1.0)
                m.add_linear_constraint(y <= x[pr.g][a])
                m.add_linear_constraint(y <= x[pr.h][b])
                obj.append(w * y)
        else:
            for rg, cg, a, row in glover_rows(pr):
                M = float(row.sum())
                z = m.add_variable(lb=0.0, ub=M)
                m.add_linear_constraint(z <= M * x[rg][a])
                m.add_linear_constraint(z <= mathopt.fast_sum(float(row[b]) * x[cg][b] for b in np.flatnonzero(row)))
                obj.append(z)
    m.maximize(mathopt.fast_sum(obj))
    left = max(time_limit - (time.perf_counter() - start), 0.0)  # the time limit covers building the model
    params = mathopt.SolveParameters(time_limit=datetime.timedelta(seconds=left), random_seed=int(seed))
    if mip_solver == "scip":
        params.threads = 1  # MathOpt's HiGHS rejects the threads parameter
    mparams = None
    if hint is not None:  # completed: a hint of the free groups' masks serves too
        hint = problem.complete(hint)
        values = {v: float(hint[g][a]) for g in P for a, v in enumerate(x[g])}
        mparams = mathopt.ModelSolveParameters(solution_hints=[mathopt.SolutionHint(variable_values=values)])
    info = {"linearization": method, "mip_solver": mip_solver, "products": products, "variables": len(list(m.variables()))}
    try:
        result = mathopt.solve(m, SOLVERS[mip_solver], params=params, model_params=mparams)
    except Exception as e:  # MathOpt's HiGHS hides the real error in __context__
        cause = e.__context__ or e
        info["native_status"] = f"{type(e).__name__}: {e} ({cause})"
        return "ERROR", None, None, info
    name = MATHOPT_STATUS.get(result.termination.reason, "ERROR")
    info["native_status"] = str(result.termination.reason)
    masks, bound = None, None
    if result.has_primal_feasible_solution():
        vals = result.variable_values()
        masks = [np.ones(s, dtype=bool) for s in sizes]
        for g in P:
            masks[g] = np.array([vals[v] > 0.5 for v in x[g]], dtype=bool)
        if name == "NO_SOLUTION":
            name = "FEASIBLE"
    dual = result.termination.objective_bounds.dual_bound
    if masks is not None and math.isfinite(dual):
        bound = red.constant + dual + 1e-9 * max(1.0, abs(dual))  # solver tolerance
    return name, masks, bound, info
