"""Upper bounds from the LP relaxation of the linearized problem, with cvxpy (CLARABEL).

Keep-variables relax to [0, 1]; count products ``N_g N_h`` are bounded from below by their
McCormick envelopes over the allowed count ranges; the bilinear objective uses the pairwise
(``y <= x_a, y <= x_b``) or Glover (``z_a <= M_a x_a, z_a <= W_a x``) linearization; a
derived (union) group's variables obey ``u_i <= v <= sum_i u_i`` per channel. Any
optimum of the discrete problem is feasible here, so the LP value is a valid upper bound
(padded by the solver's tolerance).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np

from .linearize import choose_linearization, folded_cost, union_rows
from .problem import ChannelProblem
from .reduced import Reduced


def relaxation_bound(problem: ChannelProblem, red: Reduced, *, linearization: str = "auto",
                     cvxpy_solver: str = "CLARABEL") -> tuple[float, dict]:
    method = choose_linearization(red, linearization)
    sizes = problem.sizes
    P = red.prunable
    x = {g: cp.Variable(sizes[g]) for g in P}
    cons = []
    least = problem.min_counts()  # a derived group keeps at least as many as each source
    for g in P:
        cons += [x[g] >= 0, x[g] <= 1, cp.sum(x[g]) >= least[g]]
    for v, inputs in union_rows(problem):
        cons += [x[v] >= x[u] for u in inputs] + [x[v] <= sum(x[u] for u in inputs)]
    N = {g: cp.sum(x[g]) for g in P}
    rng = {g: (int(least[g]), sizes[g]) for g in P}
    for i, c in enumerate(problem.constraints):
        bil, lin, const = folded_cost(problem, i)
        expr = 0
        for (g, h), v in bil.items():
            p = cp.Variable()
            (lg, ug), (lh, uh) = rng[g], rng[h]
            cons += [p >= lh * N[g] + lg * N[h] - lg * lh, p >= uh * N[g] + ug * N[h] - ug * uh]
            expr = expr + v * p
        for g, v in lin.items():
            expr = expr + v * N[g]
        if not isinstance(expr, (int, float)):
            cons.append(expr <= c.budget - const)
    obj = cp.Constant(0.0)
    for g, w in red.linear.items():
        obj = obj + w @ x[g]
    for pr in red.pairs:
        W = pr.W
        if method == "pairwise":
            a, b = np.nonzero(W)
            if pr.g == pr.h:
                keep = a < b
                a, b = a[keep], b[keep]
            if len(a) == 0:
                continue
            y = cp.Variable(len(a))
            cons += [y >= 0, y <= x[pr.g][a], y <= x[pr.h][b]]
            obj = obj + ((2.0 if pr.g == pr.h else 1.0) * W[a, b]) @ y
        else:
            rg, cg, Wi = (pr.g, pr.h, W) if W.shape[0] <= W.shape[1] else (pr.h, pr.g, W.T)
            z = cp.Variable(Wi.shape[0])
            cons += [z >= 0, z <= cp.multiply(Wi.sum(axis=1), x[rg]), z <= Wi @ x[cg]]
            obj = obj + cp.sum(z)
    if not P:
        return red.constant, {"linearization": method, "lp_value": red.constant, "lp_status": "trivial", "version": f"cvxpy {cp.__version__}"}
    prob = cp.Problem(cp.Maximize(obj), cons)
    prob.solve(solver=cvxpy_solver)
    if prob.status not in ("optimal", "optimal_inaccurate") or prob.value is None:
        raise RuntimeError(f"relaxation LP failed with status {prob.status}")
    value = float(prob.value) + red.constant
    bound = value + 1e-6 * max(1.0, abs(value))  # interior-point tolerance
    return bound, {"linearization": method, "lp_value": value, "lp_status": prob.status,
                   "version": f"cvxpy {cp.__version__} + {cvxpy_solver}"}
