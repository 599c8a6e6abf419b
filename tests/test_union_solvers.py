"""Union coupling (derived groups = channel-wise OR of their inputs) in every exact back-end
and in the bounds, on random residual problems against exhaustive search (torch-free)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qcqp_prune.solvers import (BilinearTerm, ChannelProblem, InfeasibleBudgetError, QuadraticCost,
                                ResourceConstraint, Status, UnionConstraint, solve_channels)
from qcqp_prune.solvers.bounds import CountBound, count_bound, make_buckets
from qcqp_prune.solvers.reduced import reduce_problem

from qcqp_prune.solvers.coupling import shared_coupling
from union_problems import union_problems

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
BOUND_TIME = 0.2  # seconds of count bound per solve: the decomposition may run to its limit


def _at_least(bound: float, optimum: float) -> bool:
    return bound >= optimum * (1 - 1e-9) - 1e-9


def _check_exact(problem: ChannelProblem, sol, best, what: str) -> None:
    """OPTIMAL, complete feasible masks, the exhaustive optimum, a valid bound and gap 0."""
    assert sol.status is Status.OPTIMAL, what
    assert problem.feasible(sol.masks), what
    assert all(np.array_equal(a, b) for a, b in zip(sol.masks, problem.complete(sol.masks))), what
    assert sol.objective == pytest.approx(best.objective, rel=1e-6, abs=1e-9), what
    assert _at_least(sol.bound, best.objective), what
    assert sol.gap <= 1e-6, what  # 0 unless within the importance resolution


@SETTINGS
@given(union_problems())
def test_cpsat_finds_the_exhaustive_optimum_with_unions(problem):
    best = solve_channels(problem, "exhaustive")
    assert best.status is Status.OPTIMAL and problem.feasible(best.masks)
    for lin in ("pairwise", "glover"):  # CP-SAT itself: the OR rule in both linearizations
        sol = solve_channels(problem, "cpsat", time_limit=10.0, linearization=lin, count_bound=False)
        _check_exact(problem, sol, best, f"cpsat {lin}")


@SETTINGS
@given(union_problems(), st.sampled_from(["pairwise", "glover"]))
def test_cpsat_with_the_count_bound_finds_the_exhaustive_optimum_with_unions(problem, lin):
    best = solve_channels(problem, "exhaustive")
    sol = solve_channels(problem, "cpsat", time_limit=10.0, linearization=lin, bound_time=BOUND_TIME)
    _check_exact(problem, sol, best, f"cpsat {lin} with the count bound")
    if sol.details["bounds"]["count"] is not None:
        assert _at_least(sol.details["bounds"]["count"], best.objective)


@SETTINGS
@given(union_problems(), st.booleans())
def test_mip_finds_the_exhaustive_optimum_with_unions(problem, use_count):
    best = solve_channels(problem, "exhaustive")
    sol = solve_channels(problem, "mip", time_limit=10.0, count_bound=use_count, bound_time=BOUND_TIME)
    _check_exact(problem, sol, best, f"mip count_bound={use_count}")


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(union_problems())
def test_highs_and_quadratic_products_find_the_optimum_with_unions(problem):
    best = solve_channels(problem, "exhaustive")
    for kwargs in ({"mip_solver": "highs"}, {"products": "quadratic"}, {"linearization": "glover"}):
        sol = solve_channels(problem, "mip", time_limit=10.0, count_bound=False, **kwargs)
        _check_exact(problem, sol, best, f"mip {kwargs}")


@SETTINGS
@given(union_problems())
def test_relaxation_bound_is_at_least_the_optimum_with_unions(problem):
    best = solve_channels(problem, "exhaustive")
    sol = solve_channels(problem, "relaxation")
    assert _at_least(sol.bound, best.objective)
    assert problem.feasible(sol.masks) and (sol.gap == 0.0) <= (sol.status is Status.OPTIMAL)


@SETTINGS
@given(union_problems(), st.sampled_from([0, 1, 12]), st.sampled_from([1, 60]), st.booleans())
def test_count_bound_and_decomposition_are_at_least_the_optimum_with_unions(problem, near, iterations, centred):
    """Single-count and wide buckets (near=0 buckets every group of more than one count),
    union and decomposition multipliers pushed hard (Polyak steps aimed 10% below the
    optimum): every bound stays at or above the optimum."""
    best = solve_channels(problem, "exhaustive")
    cb = CountBound(problem, reduce_problem(problem), problem.counts(best.masks) if centred else None, near=near)
    bound, info = cb.solve(time_limit=10.0, lower=0.9 * best.objective, iterations=iterations)
    assert _at_least(bound, best.objective)
    assert info["count_bound_first"] >= bound
    assert all(np.all(m >= 0) for m in (*cb.nu.values(), *cb.rho.values()))


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(1, 4), st.integers(2, 3), st.sampled_from([0, 1, 2]), st.data())
def test_union_count_tables_allow_every_realizable_count_combination(size, k, near, data):
    """Every combination of input masks and their OR lands on an allowed entry of the union
    table, joint or pairwise, whatever the buckets."""
    sizes = (size,) * (k + 1)
    p = ChannelProblem(sizes, unions=(UnionConstraint(k, tuple(range(k))),))
    cb = CountBound(p, reduce_problem(p))
    for g in range(k + 1):
        cb.buckets[g] = make_buckets(p.allowed_counts(g), data.draw(st.integers(1, size)), near)
    for joint in (True, False):
        cb.joint = joint
        factors = cb._union_factors(k, tuple(range(k)))
        index = {g: np.searchsorted(cb.buckets[g].starts, np.arange(size + 1) - 1, side="right") - 1
                 for g in range(k + 1)}  # count -> bucket (counts are 1..size)
        for masks in itertools.product(itertools.product((0, 1), repeat=size), repeat=k):
            counts = [sum(m) for m in masks] + [sum(np.logical_or.reduce(np.array(masks, dtype=bool)))]
            if min(counts) == 0:
                continue
            for f in factors:
                assert f.table[tuple(index[g][counts[g]] for g in f.vars)] == 0.0


@SETTINGS
@given(union_problems())
def test_union_optimum_is_never_below_the_shared_optimum(problem):
    shared, new = shared_coupling(problem)
    try:
        merged = solve_channels(shared, "exhaustive")
    except InfeasibleBudgetError:  # merging can force a round_to / min_keep no plan affords
        return
    best = solve_channels(problem, "exhaustive")
    assert merged.objective <= best.objective * (1 + 1e-12) + 1e-9
    # and the shared plan, spread back over the groups, is a union plan with the same objective
    spread = [merged.masks[new[g]] for g in range(len(problem.sizes))]
    assert problem.feasible(spread) and problem.objective(spread) == pytest.approx(merged.objective)


def _two_sources(size: int = 3) -> ChannelProblem:
    """A stream ``s`` and a projection ``b`` of a frozen input, added into ``v`` read by a
    frozen head: ``s`` is worth 1 on channel 0, ``b`` on channel 1, every ``v`` channel 10,
    and ``N_s + N_b <= 2``. The union optimum keeps ``s = {0}``, ``b = {1}``, ``v = {0, 1}``
    (22); shared coupling keeps one channel everywhere (11)."""
    e = np.eye(size)[:, :1], np.eye(size)[:, 1:2]
    bil = (BilinearTerm(1, 0, e[0]), BilinearTerm(2, 0, e[1]), BilinearTerm(4, 3, np.full((1, size), 10.0)))
    cost = QuadraticCost({}, {1: 1.0, 2: 1.0})
    return ChannelProblem((1, size, size, size, 1), (True, False, False, False, True), bilinear=bil,
                          constraints=(ResourceConstraint("r", cost, 2.0),),
                          unions=(UnionConstraint(3, (1, 2)),))


def test_union_keeps_more_than_shared_coupling_on_two_sources():
    p = _two_sources()
    shared, _ = shared_coupling(p)
    union = solve_channels(p, "cpsat", time_limit=10.0)
    assert union.status is Status.OPTIMAL and union.gap <= 1e-9
    assert union.objective == pytest.approx(22.0)
    assert [list(np.flatnonzero(m)) for m in union.masks[1:4]] == [[0], [1], [0, 1]]
    assert solve_channels(shared, "exhaustive").objective == pytest.approx(11.0)
    assert solve_channels(shared, "cpsat", time_limit=10.0).objective == pytest.approx(11.0)


def test_joint_union_table_bounds_the_derived_count_by_the_inputs():
    """Without ``N_v <= N_s + N_b`` the count bound would keep all 3 channels of ``v`` (32);
    the joint table caps it at 2 and certifies the optimum (22) on its first pass."""
    p = _two_sources()
    red = reduce_problem(p)
    bound, _ = count_bound(p, red, iterations=1)
    assert bound == pytest.approx(22.0, rel=1e-9)
    pairwise = CountBound(p, red)
    pairwise.joint = False
    pairwise._rebuild()
    loose, _ = pairwise.solve(time_limit=5.0, lower=22.0, iterations=1)
    assert loose == pytest.approx(32.0, rel=1e-9)


def _residual_stages(seed: int = 0, width: int = 16, blocks: int = 4, frac: float = 0.4) -> ChannelProblem:
    """A wider residual network: stream groups derived from the previous stream and a
    two-conv branch, the network input and head frozen, one FLOP-like budget."""
    rng = np.random.default_rng(seed)
    sizes, frozen, pairs, unions = [width], [True], [], []
    stream = 0
    for _ in range(blocks):
        mid, branch, out = len(sizes), len(sizes) + 1, len(sizes) + 2
        sizes += [width, width, width]
        frozen += [False, False, False]
        pairs += [(mid, stream), (branch, mid)]
        unions.append(UnionConstraint(out, (stream, branch)))
        stream = out
    sizes.append(4)
    frozen.append(True)
    pairs.append((len(sizes) - 1, stream))
    bil = tuple(BilinearTerm(g, h, rng.random((sizes[g], sizes[h]))) for g, h in pairs)
    cost = QuadraticCost({(min(g, h), max(g, h)): 9.0 for g, h in pairs}, {g: 1.0 for g in range(len(sizes))})
    budget = frac * cost.evaluate(sizes)
    return ChannelProblem(tuple(sizes), tuple(frozen), bilinear=bil,
                          constraints=(ResourceConstraint("flops", cost, budget),), unions=tuple(unions))


def test_certified_gap_is_zero_only_for_a_proven_optimum():
    p = _residual_stages()
    for kwargs in ({"time_limit": 0.5}, {"time_limit": 3.0, "gap_limit": 0.1}, {"time_limit": 0.5, "count_bound": False}):
        sol = solve_channels(p, "cpsat", **kwargs)
        assert p.feasible(sol.masks) and sol.bound is not None and sol.bound >= sol.objective
        assert (sol.gap == 0.0) == (sol.status is Status.OPTIMAL), kwargs
        if sol.status is Status.FEASIBLE:
            assert sol.gap > 0 and sol.stop_reason in ("time_limit", "gap_limit"), kwargs
