"""More solver behaviour: SCIP with native quadratic budgets, greedy's incremental
bookkeeping on larger problems, progress callbacks, and count tables at chosen counts."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcqp_prune.solvers import (BilinearTerm, ChannelProblem, LinearTerm, QuadraticCost, ResourceConstraint,
                                Status, solve_channels)
from qcqp_prune.solvers.bounds import pair_table
from qcqp_prune.solvers.greedy import GreedyState, greedy_masks

from test_solvers import problems


@settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_scip_with_native_quadratic_budgets_finds_the_optimum(problem):
    best = solve_channels(problem, "exhaustive")
    sol = solve_channels(problem, "mip", time_limit=10.0, products="quadratic", count_bound=False)
    assert problem.feasible(sol.masks)
    assert sol.details["products"] == "quadratic"
    assert sol.objective == pytest.approx(best.objective, rel=1e-6, abs=1e-9)
    assert (sol.gap == 0.0) <= (sol.status is Status.OPTIMAL)


def test_quadratic_products_need_scip():
    p = ChannelProblem((2, 2), bilinear=(BilinearTerm(1, 0, np.ones((2, 2))),),
                       constraints=(ResourceConstraint("flops", QuadraticCost({(0, 1): 1.0}), 2.0),))
    with pytest.raises(ValueError, match="needs mip_solver='scip'"):
        solve_channels(p, "mip", mip_solver="highs", products="quadratic")


def _network(seed: int, groups: int, size: int, frac: float, round_to=None) -> ChannelProblem:
    """A chain with residual groups, squares and linear terms, two budgets."""
    rng = np.random.default_rng(seed)
    sizes = tuple(int(s) for s in rng.integers(size // 4, size + 1, groups))
    pairs = [(g + 1, g) for g in range(groups - 1)] + [(g + 3, g) for g in range(0, groups - 3, 3)] + [(1, 1)]
    bil = tuple(BilinearTerm(g, h, rng.random((sizes[g], sizes[h])) ** 3) for g, h in pairs)
    lin = tuple(LinearTerm(g, rng.random(sizes[g])) for g in range(0, groups, 2))
    flops = QuadraticCost({(min(g, h), max(g, h)): 9.0 for g, h in pairs}, {g: 1.0 for g in range(groups)})
    params = QuadraticCost({(min(g, h), max(g, h)): 1.0 for g, h in pairs})
    frozen = (True,) + (False,) * (groups - 2) + (True,)
    base = ChannelProblem(sizes, frozen, round_to=round_to, bilinear=bil, linear=lin)
    cons = tuple(ResourceConstraint(n, c, c.evaluate(base.min_counts()) + f * (c.evaluate(sizes) - c.evaluate(base.min_counts())))
                 for n, c, f in (("flops", flops, frac), ("params", params, min(1.0, frac + 0.2))))
    return ChannelProblem(sizes, frozen, round_to=round_to, bilinear=bil, linear=lin, constraints=cons)


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 1000), st.floats(0.05, 0.95), st.sampled_from([None, 4, 8]))
def test_greedy_bookkeeping_matches_a_recount_and_budgets_hold(seed, frac, round_to):
    p = _network(seed, groups=8, size=40, frac=frac, round_to=round_to)
    st_ = GreedyState(p)
    st_.drop()
    st_.fill()
    st_.swap_within()
    st_.swap_across(time.perf_counter() + 5)
    masks = st_.masks
    assert p.feasible(masks)
    assert st_.obj == pytest.approx(p.objective(masks), rel=1e-9)  # incremental objective
    assert np.allclose(st_.cost, [p.costs(masks)[c.name] for c in p.constraints], rtol=1e-12)
    assert list(st_.n) == list(p.counts(masks))
    # greedy's answer never beats the proven optimum's bound and is within reach of CP-SAT's
    sol = solve_channels(p, "cpsat", time_limit=0.5)
    assert sol.objective >= p.objective(masks) * (1 - 1e-12)
    assert sol.bound >= p.objective(masks) * (1 - 1e-9)


def test_greedy_is_fast_on_a_large_problem():
    p = _network(0, groups=40, size=512, frac=0.5)
    t0 = time.perf_counter()
    masks = greedy_masks(p)
    wall = time.perf_counter() - t0
    assert p.feasible(masks)
    assert wall < 20.0, f"greedy took {wall:.1f} s on 40 groups of <= 512 channels"


def test_progress_reports_incumbents_below_their_bounds():
    p = _network(1, groups=6, size=24, frac=0.5)
    seen = []
    sol = solve_channels(p, "cpsat", time_limit=1.0, progress=lambda o, b, t: seen.append((o, b, t)))
    assert seen, "progress was never called"
    for o, b, t in seen:
        assert b is None or b >= o * (1 - 1e-9)
        assert t >= 0
    assert seen[-1][0] <= sol.objective * (1 + 1e-9) + 1e-9
    seen.clear()
    solve_channels(p, "greedy", progress=lambda o, b, t: seen.append((o, b, t)))
    assert len(seen) == 1 and seen[0][1] is None


def test_count_tables_at_chosen_counts_match_the_full_table():
    rng = np.random.default_rng(3)
    W = rng.random((7, 9))
    rows, cols = np.array([0, 2, 7]), np.array([1, 4, 9])
    assert np.allclose(pair_table(W, rows=rows, cols=cols), pair_table(W)[np.ix_(rows, cols)])
    S = rng.random((6, 6))
    S = (S + S.T) / 2
    np.fill_diagonal(S, 0)
    assert np.allclose(pair_table(S, square=True, rows=np.array([1, 3, 6])), pair_table(S, square=True)[[1, 3, 6]])
