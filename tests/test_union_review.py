"""Review of union coupling (issue 7): concatenated streams whose split needs several rounds
or cannot be done, sums that share sub-sums, and re-tracing a union-slimmed model."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import numpy as np
import pytest
import torch
import torch.nn as nn

import qcqp_prune as qp
from qcqp_prune import zoo
from helpers import check_slim_matches_mask, random_masks, randomize
from qcqp_prune.solvers.problem import ChannelProblem, UnionConstraint


@contextmanager
def hang_guard(seconds: int):
    """Turn a hang (exponential work) into a failure; generous, not a timing assertion."""
    def fail(*_):
        raise AssertionError(f"did not finish within {seconds} s: exponential work?")
    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class RepeatedCat(nn.Module):
    """cat([a, a]) + cat([c, d]) with |a| = 4, |c| = 2, |d| = 6: splitting ``a`` at 2 for its
    first occurrence cuts the second one at 6, which splits ``d`` too (a second round)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.c, self.d = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 2, 1), nn.Conv2d(3, 6, 1)
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a(x)
        return self.head(torch.cat([a, a], 1) + torch.cat([self.c(x), self.d(x)], 1))


def test_an_add_of_a_repeated_concatenation_splits_to_a_common_layout():
    model = randomize(RepeatedCat()).eval()
    x = torch.randn(2, 3, 5, 5)
    graph = qp.trace(model, x, coupling="union")
    sums = [g for g in graph.groups if g.union_of and not g.name.startswith("stream:")]
    assert len(sums) == 4 and all(g.size == 2 for g in sums)  # the add, on four aligned pieces
    for seed in range(3):
        check_slim_matches_mask(model, x, seed=seed, graph=graph)


class CoupledSplit(nn.Module):
    """cat([a, b]) + cat([t, c]) where t = p + q is already a sum (|a|=4, |b|=5, |t|=6, |c|=3):
    aligning needs ``t`` split, which union coupling cannot do, so the add falls back to a
    merge; ``b`` must not be left half split on the way."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 5, 1)
        self.p, self.q, self.c = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 6, 1), nn.Conv2d(3, 3, 1)
        self.head = nn.Conv2d(9, 3, 1)
        self.side = nn.Conv2d(5, 2, 1)  # reads b alone: b's group must stay whole and traced

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.p(x) + self.q(x)
        b = self.b(x)
        y = self.head(torch.cat([self.a(x), b], 1) + torch.cat([t, self.c(x)], 1))
        return y + self.side(b).sum(1, keepdim=True)


def test_an_add_that_cannot_be_aligned_leaves_no_half_split_group():
    model = randomize(CoupledSplit()).eval()
    x = torch.randn(2, 3, 5, 5)
    graph = qp.trace(model, x, coupling="union")
    names = [g.name for g in graph.groups]
    assert "b" in names and not any(n.startswith("b[") for n in names)
    assert graph.group("b").frozen  # the merge that replaced the union froze it, with a reason
    check_slim_matches_mask(model, x, graph=graph)


class SharedSubSums(nn.Module):
    """``t = x + f(x); x = x + t`` per block: every sum is an operand of two later sums."""

    def __init__(self, depth: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.fs = nn.ModuleList(nn.Conv2d(4, 4, 1) for _ in range(depth))
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for f in self.fs:
            t = x + f(x)
            x = x + t
        return self.head(x)


def test_sums_sharing_sub_sums_trace_without_exponential_work():
    model = randomize(SharedSubSums(40)).eval()
    x = torch.randn(1, 3, 3, 3)
    with hang_guard(120):
        graph = qp.trace(model, x, coupling="union")
    sums = [g for g in graph.groups if g.union_of]
    assert len(sums) == 80
    last = graph.carrier[sums[0].id]
    assert all(graph.carrier[g.id] == last for g in sums)  # one stream, carried by the last sum
    small = randomize(SharedSubSums(3)).eval()
    check_slim_matches_mask(small, x, graph=qp.trace(small, x, coupling="union"))


def test_problem_sources_do_not_rewalk_shared_sub_sums(monkeypatch):
    depth = 40  # d_k = OR(d_{k-1}, t_k), t_k = OR(d_{k-1}, b_k): 2**40 paths from the last sum
    sizes, unions, prev = [3], [], 0
    for _ in range(depth):
        b, t, d = len(sizes), len(sizes) + 1, len(sizes) + 2
        sizes += [3, 3, 3]
        unions += [UnionConstraint(t, (prev, b)), UnionConstraint(d, (prev, t))]
        prev = d
    problem = ChannelProblem(sizes=tuple(sizes), unions=tuple(unions))
    calls = 0
    original = ChannelProblem.sources

    def counted(self, g):
        nonlocal calls
        calls += 1
        if calls > 10_000:
            raise AssertionError("sources() walks the union DAG path by path")
        return original(self, g)

    monkeypatch.setattr(ChannelProblem, "sources", counted)
    assert problem.sources(prev) == {0, *range(1, len(sizes), 3)}
    assert problem.min_counts()[prev] == 1
    masks = problem.complete([np.eye(3, dtype=bool)[(i // 3) % 3] for i in range(len(sizes))])
    assert masks[prev].all()


def test_tracing_a_union_slimmed_model_raises_a_clear_error():
    model = randomize(zoo.resnet20()).eval()
    x = torch.randn(2, 3, 32, 32)
    graph = qp.trace(model, x, coupling="union")
    slim = qp.slim_model(model, graph, random_masks(graph, 1))
    for coupling in ("shared", "union"):
        with pytest.raises(ValueError, match="stream adapters"):
            qp.trace(slim, x, coupling=coupling)


def test_min_keep_or_round_to_named_on_a_sum_is_refused_not_ignored():
    model = randomize(zoo.resnet20()).eval()
    x = torch.randn(2, 3, 32, 32)
    graph = qp.trace(model, x, coupling="union")
    sum_name = next(g.name for g in graph.groups if g.union_of and not g.frozen)
    for kw in ({"round_to": {sum_name: 8}}, {"min_keep": {sum_name: 4}}):
        with pytest.raises(ValueError, match="sum under union coupling"):
            qp.plan_channels(model, x, qp.Budget(flops=0.6), graph=graph, solver="greedy", time_limit=2, **kw)
    source = next(g.name for g in graph.groups if not g.union_of and not g.frozen)
    plan = qp.plan_channels(model, x, qp.Budget(flops=0.6), graph=graph, solver="greedy", time_limit=2,
                            round_to={source: 4})
    n = int(plan.masks[graph.group(source).id].sum())
    assert n % 4 == 0 or n == graph.group(source).size


class FrozenInputStream(nn.Module):
    """The output is the sum of the (frozen) input and a branch: the input keeps the sum full,
    so the branch stays prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 5, 1), nn.ReLU(), nn.Conv2d(5, 3, 1))

    def forward(self, x):
        return x + self.body(x)


def test_a_frozen_sum_with_a_frozen_operand_leaves_the_others_prunable():
    graph = qp.trace(FrozenInputStream(), torch.randn(1, 3, 4, 4), coupling="union")
    assert not graph.group("body.2").frozen
    assert not graph.group("body.0").frozen
