"""Solver back-ends on random small problems: exactness against exhaustive search, budgets,
bounds, statuses, determinism and errors (torch-free)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcqp_prune.solvers import (BilinearTerm, ChannelProblem, InfeasibleBudgetError, LinearTerm,
                                QuadraticCost, ResourceConstraint, Status, smallest_costs, solve_channels)
from qcqp_prune.solvers.cpsat import CPSAT_STATUS
from qcqp_prune.solvers.mip import MATHOPT_STATUS


@st.composite
def problems(draw, max_channels: int = 11, max_size: int = 4):
    """Chains, residual groups shared by several layers, concat-like layers reading two
    groups, squares (g == h), frozen groups, min_keep / round_to, 1-2 budgets."""
    n = draw(st.integers(2, 5))
    sizes = [draw(st.integers(1, max_size)) for _ in range(n)]
    while sum(sizes) > max_channels:
        sizes[int(np.argmax(sizes))] -= 1
    frozen = [draw(st.booleans()) if g == 0 else draw(st.sampled_from([False, False, False, True])) for g in range(n)]
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    structure = draw(st.sampled_from(["chain", "residual", "concat", "square"]))
    pairs = [(g + 1, g) for g in range(n - 1)]  # layer g+1 reads group g
    if structure == "residual":
        pairs += [(n - 1, 0), (0, 0) if n > 2 else (1, 0)]
    elif structure == "concat" and n >= 3:
        pairs += [(n - 1, 0), (n - 1, 1)]
    elif structure == "square":
        pairs += [(1, 1)]
    bil = [BilinearTerm(g, h, rng.random((sizes[g], sizes[h])) * (rng.random((sizes[g], sizes[h])) > 0.2))
           for g, h in pairs]
    lin = [LinearTerm(g, rng.random(sizes[g])) for g in range(n) if rng.random() < 0.4]
    min_keep = [int(rng.integers(1, s + 1)) if rng.random() < 0.3 else 1 for s in sizes]
    round_to = [int(rng.integers(2, 3)) if rng.random() < 0.2 else None for _ in sizes]
    constraints = []
    for r in range(draw(st.integers(1, 2))):
        cb = {}
        for g, h in pairs:
            key = (min(g, h), max(g, h))
            cb[key] = cb.get(key, 0.0) + float(rng.integers(1, 10))
        cl = {g: float(rng.integers(0, 5)) for g in range(n)}
        cost = QuadraticCost(cb, cl, float(rng.integers(0, 20)))
        probe = ChannelProblem(tuple(sizes), tuple(frozen), tuple(min_keep), tuple(round_to))
        lo, hi = cost.evaluate(probe.min_counts()), cost.evaluate(sizes)
        frac = draw(st.floats(0.0, 1.0))
        constraints.append(ResourceConstraint(f"r{r}", cost, lo + frac * (hi - lo)))
    return ChannelProblem(tuple(sizes), tuple(frozen), tuple(min_keep), tuple(round_to), tuple(bil),
                          tuple(lin), float(rng.random()), tuple(constraints))


SETTINGS = settings(max_examples=220, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SETTINGS
@given(problems())
def test_backends_find_the_exhaustive_optimum_and_never_break_a_budget(problem):
    best = solve_channels(problem, "exhaustive")
    assert best.status is Status.OPTIMAL and best.gap == 0.0
    assert problem.feasible(best.masks)
    for name in ("cpsat", "greedy"):
        sol = solve_channels(problem, name, time_limit=10.0)
        assert problem.feasible(sol.masks), name
        for c in problem.constraints:
            assert sol.costs[c.name] <= c.budget * (1 + 1e-12) + 1e-9
        assert sol.objective <= best.objective * (1 + 1e-9) + 1e-9, name
        if sol.bound is not None:
            assert sol.bound >= best.objective * (1 - 1e-9) - 1e-9, f"{name} bound below the optimum"
        assert (sol.gap == 0.0) <= (sol.status is Status.OPTIMAL)
        if name == "cpsat":
            assert sol.status is Status.OPTIMAL
            assert sol.objective == pytest.approx(best.objective, rel=1e-6, abs=1e-9)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_relaxation_bound_is_at_least_the_optimum(problem):
    best = solve_channels(problem, "exhaustive")
    sol = solve_channels(problem, "relaxation")
    assert sol.bound >= best.objective * (1 - 1e-9) - 1e-9
    assert problem.feasible(sol.masks) and (sol.gap == 0.0) <= (sol.status is Status.OPTIMAL)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_mip_finds_the_exhaustive_optimum(problem):
    best = solve_channels(problem, "exhaustive")
    for kwargs in ({}, {"mip_solver": "highs"}):
        sol = solve_channels(problem, "mip", time_limit=10.0, **kwargs)
        assert problem.feasible(sol.masks)
        assert sol.objective == pytest.approx(best.objective, rel=1e-6, abs=1e-9)
        assert sol.bound >= best.objective * (1 - 1e-9) - 1e-9


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems(), st.sampled_from(["pairwise", "glover"]))
def test_both_linearizations_are_exact(problem, lin):
    best = solve_channels(problem, "exhaustive")
    sol = solve_channels(problem, "cpsat", linearization=lin, count_bound=False)  # CP-SAT itself
    assert sol.details["linearization"] == lin
    assert sol.objective == pytest.approx(best.objective, rel=1e-6, abs=1e-9)


def _layered(seed: int = 0, size: int = 24, n: int = 5, frac: float = 0.5) -> ChannelProblem:
    rng = np.random.default_rng(seed)
    bil = [BilinearTerm(g + 1, g, rng.random((size, size))) for g in range(n - 1)]
    cost = QuadraticCost({(g, g + 1): 9.0 for g in range(n - 1)}, {g: 1.0 for g in range(n)})
    frozen = (True,) + (False,) * (n - 2) + (True,)
    p = ChannelProblem((size,) * n, frozen, bilinear=tuple(bil))
    full = cost.evaluate(p.sizes)
    return ChannelProblem((size,) * n, frozen, bilinear=tuple(bil),
                          constraints=(ResourceConstraint("flops", cost, frac * full),))


def test_time_limit_returns_best_feasible_plan_with_gap():
    p = _layered(size=48, n=6)
    # 2 s: CP-SAT needs about 0.6 s for its first plan here; with 1 s it got 0.7 s after the
    # bound and once in four full runs under load found none (greedy fallback instead)
    sol = solve_channels(p, "cpsat", time_limit=2.0)
    assert sol.status is Status.FEASIBLE and sol.stop_reason == "time_limit"
    assert sol.bound is not None and sol.gap > 0 and p.feasible(sol.masks)


def test_zero_time_limit_falls_back_to_greedy_with_a_warning():
    p = _layered()
    with pytest.warns(RuntimeWarning, match="greedy"):
        sol = solve_channels(p, "cpsat", time_limit=0.0, count_bound=False)
    assert sol.status is Status.FEASIBLE and sol.gap is None and p.feasible(sol.masks)
    # the count bound's first pass always runs (milliseconds), so the fallback still has a gap
    with pytest.warns(RuntimeWarning, match="gap from the count bound"):
        sol = solve_channels(p, "cpsat", time_limit=0.0)
    assert sol.status is Status.FEASIBLE and p.feasible(sol.masks)
    assert sol.bound >= sol.objective and 0 < sol.gap < 1


def test_same_seed_same_masks():
    p = _layered(size=32)
    a = solve_channels(p, "cpsat", time_limit=2.0, seed=3)
    b = solve_channels(p, "cpsat", time_limit=2.0, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    g1, g2 = solve_channels(p, "greedy"), solve_channels(p, "greedy")
    assert all(np.array_equal(x, y) for x, y in zip(g1.masks, g2.masks))


def test_infeasible_budget_states_the_smallest_cost():
    p = _layered(frac=0.5)
    small = smallest_costs(p)["flops"]
    tight = ChannelProblem(p.sizes, p.frozen, bilinear=p.bilinear,
                           constraints=(ResourceConstraint("flops", p.constraints[0].cost, small * 0.9),))
    with pytest.raises(InfeasibleBudgetError, match=f"smallest achievable flops is {small:.6g}") as e:
        solve_channels(tight, "greedy")
    assert e.value.smallest == pytest.approx(small) and e.value.resource == "flops"


def test_bad_inputs_raise_clear_errors():
    p = _layered()
    with pytest.raises(ValueError, match="solver='gurobi' is not a known back-end"):
        solve_channels(p, "gurobi")
    with pytest.raises(ValueError, match="time_limit"):
        solve_channels(p, "cpsat", time_limit=float("nan"))
    with pytest.raises(ValueError, match="NaN or inf"):
        ChannelProblem((2, 2), bilinear=(BilinearTerm(1, 0, np.array([[1.0, np.nan], [0, 1]])),))
    with pytest.raises(ValueError, match="negative"):
        ChannelProblem((2,), linear=(LinearTerm(0, np.array([-1.0, 1.0])),))
    with pytest.raises(ValueError, match=r"shape \(2, 3\); expected \(2, 2\)"):
        ChannelProblem((2, 2), bilinear=(BilinearTerm(1, 0, np.ones((2, 3))),))
    with pytest.raises(ValueError, match="budget flops=-1 is negative"):
        ChannelProblem((2,), constraints=(ResourceConstraint("flops", QuadraticCost({}, {0: 1.0}), -1),))
    with pytest.raises(ValueError, match="linearization"):
        solve_channels(p, "cpsat", linearization="mccormick")


def test_status_tables_cover_every_native_status():
    from ortools.math_opt.python import mathopt
    from ortools.sat.python import cp_model
    assert set(CPSAT_STATUS) == {cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.INFEASIBLE,
                                 cp_model.UNKNOWN, cp_model.MODEL_INVALID}
    assert {s for s in mathopt.TerminationReason} <= set(MATHOPT_STATUS)
    assert set(CPSAT_STATUS.values()) | set(MATHOPT_STATUS.values()) <= {s.value for s in Status}


def test_count_tables_bound_every_submatrix():
    import itertools
    from qcqp_prune.solvers.bounds import pair_table
    rng = np.random.default_rng(0)
    W = rng.random((4, 5))
    T = pair_table(W)
    for m in range(5):
        for k in range(6):
            best = max(W[np.ix_(r, c)].sum() for r in itertools.combinations(range(4), m)
                       for c in itertools.combinations(range(5), k)) if m and k else 0.0
            assert T[m, k] >= best - 1e-12
    S = rng.random((5, 5))
    S = (S + S.T) / 2
    np.fill_diagonal(S, 0)
    T = pair_table(S, square=True)
    for m in range(6):
        best = max((S[np.ix_(r, r)].sum() for r in itertools.combinations(range(5), m)), default=0.0)
        assert T[m] >= best - 1e-12


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_count_bound_is_at_least_the_optimum(problem):
    best = solve_channels(problem, "exhaustive")
    sol = solve_channels(problem, "cpsat", count_bound=True)
    count = sol.details["bounds"]["count"]
    if count is not None:
        assert count >= best.objective * (1 - 1e-9) - 1e-9
    assert sol.bound >= best.objective * (1 - 1e-9) - 1e-9
    assert (sol.gap == 0.0) <= (sol.objective >= best.objective * (1 - 1e-9))


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(problems(max_channels=15, max_size=10), st.sampled_from([0, 1, 12]), st.sampled_from([1, 60]), st.booleans())
def test_bucketed_count_bound_and_decomposition_are_at_least_the_optimum(problem, near, iterations, centred):
    """Buckets (near=0 buckets every group of more than one count), multipliers pushed hard
    (Polyak steps aimed 10% below the optimum): every bound stays at or above the optimum."""
    from qcqp_prune.solvers.bounds import CountBound
    from qcqp_prune.solvers.reduced import reduce_problem
    best = solve_channels(problem, "exhaustive")
    cb = CountBound(problem, reduce_problem(problem), problem.counts(best.masks) if centred else None, near=near)
    bound, info = cb.solve(time_limit=10.0, lower=0.9 * best.objective, iterations=iterations)
    assert bound >= best.objective * (1 - 1e-9) - 1e-9
    assert info["count_bound_first"] >= bound


def test_max_sum_elimination_matches_enumeration_on_cyclic_graphs():
    import itertools
    from qcqp_prune.solvers.elimination import Factor, elimination_order, max_sum
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(2, 6))
        sizes = {v: int(rng.integers(1, 4)) for v in range(n)}
        edges = {(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.6}
        factors = [Factor((v,), rng.normal(size=sizes[v])) for v in range(n)]
        factors += [Factor((a, b), rng.normal(size=(sizes[a], sizes[b]))) for a, b in edges]
        order, largest = elimination_order(list(range(n)), edges, sizes)
        value, labels = max_sum(factors, order, sizes)
        best = max(sum(f.table[tuple(lab[v] for v in f.vars)] for f in factors)
                   for lab in itertools.product(*[range(sizes[v]) for v in range(n)]))
        assert value == pytest.approx(best, abs=1e-12)
        assert sum(f.table[tuple(labels[v] for v in f.vars)] for f in factors) == pytest.approx(best, abs=1e-12)
        assert largest <= int(np.prod(list(sizes.values())))


def test_count_bound_certifies_a_layered_problem_far_tighter_than_cpsat_alone():
    p = _layered(seed=2, size=24, n=6, frac=0.5)
    alone = solve_channels(p, "cpsat", time_limit=2.0, count_bound=False)
    both = solve_channels(p, "cpsat", time_limit=2.0)
    assert both.bound <= alone.bound * (1 + 1e-12)
    assert both.details["bounds"]["count"] is not None
    assert both.gap <= 0.5 * alone.gap


def test_gap_limit_stops_early_with_a_certified_gap():
    p = _layered(seed=2, size=24, n=6, frac=0.5)
    sol = solve_channels(p, "cpsat", time_limit=30.0, gap_limit=0.2)
    assert sol.gap is not None and sol.gap <= 0.2
    assert sol.status in (Status.FEASIBLE, Status.OPTIMAL)
    assert (sol.status is Status.FEASIBLE) <= (sol.stop_reason == "gap_limit")
    with pytest.raises(ValueError, match="gap_limit"):
        solve_channels(p, "cpsat", gap_limit=1.5)
    with pytest.raises(TypeError, match=r"does not take option\(s\) 'gap_limt'.*gap_limit"):
        solve_channels(p, "cpsat", gap_limt=0.1)
    with pytest.raises(TypeError, match="'count_bound'"):
        solve_channels(p, "greedy", count_bound=True)


def _lumpy_knapsack(seed: int, groups: int = 3, size: int = 6) -> ChannelProblem:
    """Linear importance only (the count tables are exact) and counts in steps of 3, with a
    budget that no combination meets exactly: the relaxed budgets mix a combination over
    the budget with one under it, and only an exact-budget search closes the gap."""
    rng = np.random.default_rng(seed)
    linear = tuple(LinearTerm(g, rng.random(size) * (1 + g)) for g in range(groups))
    cost = QuadraticCost({}, {g: float(1 + g % 2) for g in range(groups)})
    budget = cost.evaluate(np.full(groups, size)) * 0.6 + 1.0
    return ChannelProblem((size,) * groups, (False,) * groups, linear=linear, round_to=(3,) * groups,
                          constraints=(ResourceConstraint("flops", cost, budget),))


@pytest.mark.parametrize("seed", range(6))
def test_branch_and_bound_closes_the_relaxed_budget_gap(seed):
    from qcqp_prune.solvers.bounds import CountBound
    from qcqp_prune.solvers.reduced import reduce_problem
    p = _lumpy_knapsack(seed)
    best = solve_channels(p, "exhaustive").objective
    cb = CountBound(p, reduce_problem(p))
    relaxed, _ = cb.solve(time_limit=10.0, lower=0.0, iterations=1)   # budgets relaxed only
    bound, info = CountBound(p, reduce_problem(p)).solve(time_limit=10.0, lower=0.0)
    assert relaxed > best * (1 + 1e-6)          # the relaxation alone has a duality gap here
    assert info["count_bound_branch_and_bound"] == pytest.approx(best, rel=1e-9)
    assert bound == pytest.approx(best, rel=1e-9) and info["count_bound_nodes"] > 1
    sol = solve_channels(p, "cpsat", time_limit=10.0)
    assert sol.status is Status.OPTIMAL and sol.objective == pytest.approx(best, rel=1e-9)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(problems(max_channels=15, max_size=10), st.sampled_from([0, 12]), st.floats(0.5, 1.0),
       st.sampled_from([0.0, 0.05]), st.sampled_from([0, 1, 5]))
def test_branch_and_bound_is_between_the_optimum_and_its_root(problem, near, aim, target_gap, iterations):
    """From the root's multipliers, stopped at once or run to the end, with ``lower`` anywhere
    up to the optimum itself (the most a caller may pass; counts and nodes below it are
    dropped) and with a target gap: never below the optimum, never above the root."""
    from qcqp_prune.solvers.bounds import CountBound
    from qcqp_prune.solvers.reduced import reduce_problem
    best = solve_channels(problem, "exhaustive").objective
    cb = CountBound(problem, reduce_problem(problem), near=near)
    if not cb.red.prunable:
        return
    full = np.array([c.cost.evaluate(problem.sizes) for c in problem.constraints])
    scale = (abs(best) + 1.0) / np.maximum(full, 1e-300)
    lam = np.zeros(len(full))
    root, _, _ = cb._minimize_lam(cb._objective_factors(), lam, scale, steps=12)
    state = (cb._multipliers(), lam, cb._domain(), root)
    for seconds in (0.0, 10.0):
        searched, nodes = cb.branch_and_bound(state, aim * best, scale, time.perf_counter() + seconds,
                                              target_gap=target_gap, iterations=iterations)
        assert searched >= best * (1 - 1e-9) - 1e-9
        assert searched <= root * (1 + 1e-9) + 1e-9 and nodes >= 1


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(problems(max_channels=15, max_size=10), st.sampled_from([0, 12]), st.sampled_from([2, None]),
       st.booleans())
def test_count_bound_with_the_optimum_as_lower_never_cuts_it_off(problem, near, iterations, centred):
    """``lower`` equal to the optimum drops the most (counts by max-marginal, closed nodes):
    the plan with the optimal objective must survive, so the bound is never below it."""
    from qcqp_prune.solvers.bounds import CountBound
    from qcqp_prune.solvers.reduced import reduce_problem
    best = solve_channels(problem, "exhaustive")
    cb = CountBound(problem, reduce_problem(problem), problem.counts(best.masks) if centred else None, near=near)
    bound, info = cb.solve(time_limit=5.0, lower=best.objective, iterations=iterations)
    assert bound >= best.objective * (1 - 1e-9) - 1e-9


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(problems(max_channels=15, max_size=10), st.sampled_from([0, 12]))
def test_pruned_counts_keep_the_optimal_plans_counts(problem, near):
    from qcqp_prune.solvers.bounds import CountBound
    from qcqp_prune.solvers.reduced import reduce_problem
    best = solve_channels(problem, "exhaustive")
    cb = CountBound(problem, reduce_problem(problem), near=near)
    if not cb.red.prunable:
        return
    before = {g: set(cb.buckets[g].allowed.tolist()) for g in cb.vars}
    lam = np.zeros(len(problem.constraints))
    full = np.array([c.cost.evaluate(problem.sizes) for c in problem.constraints])
    objective = cb._objective_factors()
    cb._minimize_lam(objective, lam, (abs(best.objective) + 1.0) / np.maximum(full, 1e-300), steps=12)
    cb.prune_counts(objective, lam, best.objective)
    counts = problem.counts(best.masks)
    for g in cb.vars:
        left = set(cb.buckets[g].allowed.tolist())
        assert int(counts[g]) in left and left <= before[g]
        b = cb.buckets[g]
        assert b.starts[0] == 0 and np.all(np.diff(b.starts) > 0) and b.starts[-1] < len(b.allowed)


def test_restricted_buckets_keep_the_bucket_boundaries():
    from qcqp_prune.solvers.bounds import Buckets
    b = Buckets(np.arange(1, 11), np.array([0, 3, 4, 8]))   # {1,2,3} {4} {5..8} {9,10}
    r = b.restricted(np.array([1, 0, 1, 0, 0, 0, 0, 1, 1, 1], dtype=bool))
    assert r.allowed.tolist() == [1, 3, 8, 9, 10]
    assert r.lo.tolist() == [1, 8, 9] and r.hi.tolist() == [3, 8, 10]


def test_max_marginals_match_enumeration():
    import itertools
    from qcqp_prune.solvers.elimination import Factor, elimination_order, max_marginals
    rng = np.random.default_rng(1)
    for trial in range(150):
        n = int(rng.integers(1, 6))
        sizes = {v: int(rng.integers(1, 4)) for v in range(n)}
        factors, edges = [], set()
        for _ in range(int(rng.integers(1, 8))):
            scope = tuple(sorted(rng.choice(n, int(rng.integers(1, min(3, n) + 1)), replace=False).tolist()))
            table = rng.normal(size=[sizes[v] for v in scope])
            table[rng.random(table.shape) < 0.15] = -np.inf     # forbidden combinations
            factors.append(Factor(scope, table))
            edges |= {(a, b) for a in scope for b in scope if a < b}
        order, _ = elimination_order(list(range(n)), edges, sizes)
        value, labels, marginals = max_marginals(factors, order, sizes)
        brute = {v: np.full(sizes[v], -np.inf) for v in range(n)}
        for combo in itertools.product(*[range(sizes[v]) for v in range(n)]):
            total = sum(f.table[tuple(combo[v] for v in f.vars)] for f in factors)
            for v in range(n):
                brute[v][combo[v]] = max(brute[v][combo[v]], total)
        assert value == pytest.approx(max(brute[0].max(), -np.inf), abs=1e-12) or value == brute[0].max()
        for v in range(n):
            finite = np.isfinite(brute[v])
            assert np.array_equal(finite, np.isfinite(marginals[v]))
            assert np.allclose(marginals[v][finite], brute[v][finite], atol=1e-12)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2), st.integers(0, 10_000), st.booleans())
def test_term_tables_bound_every_submatrix_with_multipliers(n, q, near, seed, heavy):
    """Kept-side and dropped-side bounds, with multipliers of any sign and any buckets: each
    table entry is at least the best ``W[S, T] + a(S) + b(T)`` over the counts of its buckets,
    and where every row is kept (``m = n``) the dropped-side bound makes it exact."""
    import itertools
    from qcqp_prune.solvers.bounds import _Term, make_buckets
    rng = np.random.default_rng(seed)
    W = rng.random((n, q)) ** (4 if heavy else 1)   # heavy: a few large entries
    term = _Term(0, 1, W)
    term.mu_g, term.mu_h = rng.normal(size=n), rng.normal(size=q)
    bg = make_buckets(list(range(n + 1)), int(rng.integers(0, n + 1)), near)
    bh = make_buckets(list(range(q + 1)), int(rng.integers(0, q + 1)), near)
    table = term.table(bg, bh)

    def best(m: int, k: int) -> float:
        return max(W[np.ix_(r, c)].sum() + term.mu_g[list(r)].sum() + term.mu_h[list(c)].sum()
                   for r in itertools.combinations(range(n), m) for c in itertools.combinations(range(q), k))

    exact = {(m, k): best(m, k) for m in range(n + 1) for k in range(q + 1)}
    for i in range(len(bg)):
        for j in range(len(bh)):
            cell = max(exact[m, k] for m in range(bg.lo[i], bg.hi[i] + 1) for k in range(bh.lo[j], bh.hi[j] + 1))
            assert table[i, j] >= cell - 1e-9
            if bg.lo[i] == bg.hi[i] == n and bh.lo[j] == bh.hi[j]:
                assert table[i, j] == pytest.approx(cell, abs=1e-9)
                rows, cols = term.choice(bg, bh, i, j)   # and the copy it picks attains it
                value = W[np.ix_(rows, cols)].sum() + term.mu_g[rows].sum() + term.mu_h[cols].sum()
                assert rows.sum() == n and cols.sum() == bh.lo[j] and value == pytest.approx(cell, abs=1e-9)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2), st.integers(0, 10_000), st.booleans())
def test_centred_spectral_table_bounds_every_submatrix(n, q, near, seed, heavy):
    """The centred-matrix bound alone (row and column effects exact, the residual through its
    spectral norm) is at least the best ``W[S, T] + a(S) + b(T)`` over every pair of counts in
    its buckets, and its norm is never below the exact one."""
    import itertools
    from qcqp_prune.solvers.bounds import _centred, _Term, make_buckets
    rng = np.random.default_rng(seed)
    W = rng.random((n, q)) ** (4 if heavy else 1)
    term = _Term(0, 1, W)
    term.mu_g, term.mu_h = rng.normal(size=n), rng.normal(size=q)
    mean, r, c, norm = _centred(W)
    assert norm >= np.linalg.norm(W - mean - r[:, None] - c[None, :], 2)
    bg = make_buckets(list(range(n + 1)), int(rng.integers(0, n + 1)), near)
    bh = make_buckets(list(range(q + 1)), int(rng.integers(0, q + 1)), near)
    table = term._centred_bound(bg, bh)
    for i in range(len(bg)):
        for j in range(len(bh)):
            cell = max(W[np.ix_(rows, cols)].sum() + term.mu_g[list(rows)].sum() + term.mu_h[list(cols)].sum()
                       for m in range(bg.lo[i], bg.hi[i] + 1) for k in range(bh.lo[j], bh.hi[j] + 1)
                       for rows in itertools.combinations(range(n), m) for cols in itertools.combinations(range(q), k))
            assert table[i, j] >= cell - 1e-9


def test_centred_spectral_table_is_tighter_inside_a_noisy_layer():
    """On a 200 x 120 matrix of squared Gaussian weights (what "l2" importances of a 1x1 conv
    look like) at interior counts, the kept-side bounds let each row pick its own columns and
    overshoot; the centred bound is far closer to a submatrix actually found."""
    from qcqp_prune.solvers.bounds import pair_table
    rng = np.random.default_rng(0)
    W = rng.normal(size=(200, 120)) ** 2
    m, k = 120, 60
    table = pair_table(W, rows=[m], cols=[k])[0, 0]
    rows = np.argsort(-W.sum(axis=1))[:m]
    for _ in range(20):  # alternate: best columns for the rows, best rows for the columns
        cols = np.argsort(-W[rows].sum(axis=0))[:k]
        rows = np.argsort(-W[:, cols].sum(axis=1))[:m]
    found = W[np.ix_(rows, cols)].sum()
    row_wise = np.sort(np.sort(W, axis=1)[:, -k:].sum(axis=1))[-m:].sum()  # top m rows of top-k sums
    assert found <= table <= 0.75 * row_wise   # 8835 <= 9738 against 14338
    assert table <= 1.15 * found


@pytest.mark.parametrize("seed", range(30))
def test_count_bound_holds_for_plans_that_sit_on_the_budget(seed):
    """Float cost coefficients and a budget equal to some plan's cost: that plan may sum a
    rounding error over the budget in another order, and ``feasible`` accepts it; the
    relaxed and exact-budget bounds must read the budget the same way (found in review:
    9 of 200 such problems got a bound below the optimum)."""
    from qcqp_prune.solvers.bounds import CountBound
    from qcqp_prune.solvers.reduced import reduce_problem
    rng = np.random.default_rng(seed)
    groups, size = 3, 5
    linear = tuple(LinearTerm(g, rng.random(size)) for g in range(groups))
    bil = (BilinearTerm(1, 0, rng.random((size, size))),)
    cost = QuadraticCost({(0, 1): float(rng.random()) * 0.3}, {g: float(rng.random()) * 0.7 for g in range(groups)}, 0.1)
    budget = cost.evaluate(rng.integers(1, size, groups))
    p = ChannelProblem((size,) * groups, (False,) * groups, bilinear=bil, linear=linear,
                       constraints=(ResourceConstraint("flops", cost, budget),))
    best = solve_channels(p, "exhaustive").objective
    bound, info = CountBound(p, reduce_problem(p)).solve(time_limit=5.0, lower=0.0)
    assert bound >= best * (1 - 1e-12) - 1e-12
    assert info["count_bound_relaxed"] >= best * (1 - 1e-12) - 1e-12


def test_count_bound_holds_for_a_plan_a_rounding_error_over_the_budget():
    from qcqp_prune.solvers.bounds import CountBound
    from qcqp_prune.solvers.reduced import reduce_problem
    q = ChannelProblem((4, 4), (False, False),
                       linear=(LinearTerm(0, np.array([1.0, 0.9, 0.1, 0.1])), LinearTerm(1, np.full(4, 0.5))),
                       constraints=(ResourceConstraint("c", QuadraticCost({}, {0: 1.0, 1: 2.0}), 4.0 - 5e-10),))
    best = solve_channels(q, "exhaustive").objective
    assert CountBound(q, reduce_problem(q)).solve(time_limit=2.0, lower=0.0)[0] >= best


def test_padding_keeps_an_empty_box_at_minus_infinity():
    """A box without allowed combinations (union count rules) bounds at -inf; padding it for
    float error once gave NaN, and NaN steps broke the union problems' branch and bound."""
    import math
    from qcqp_prune.solvers.bounds import _padded
    assert _padded(-math.inf) == -math.inf and _padded(2.0) > 2.0 and _padded(-2.0) > -2.0
