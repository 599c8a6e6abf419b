"""Heuristic channel selections that peers use, for the benchmarks to compare against.

Both pick channels by a per-channel score and bisect one knob until every budget holds:

- :func:`uniform_masks`: the same keep ratio in every prunable group, top channels by score
  (the "uniform L1 top-k" baseline when scores are L1 norms of the producing kernels);
- :func:`threshold_masks`: one global threshold on the score (AdaPruner / network slimming
  style when scores are BatchNorm |gamma|), keeping at least ``min_keep`` per group.

They work on a ``solvers.ChannelProblem`` and return one bool mask per group, always within
budget (or raise if even the smallest configuration is over budget).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .graph.channel_graph import ChannelGraph
from .importance import objective_terms


def channel_scores(graph: ChannelGraph, scores) -> list[np.ndarray]:
    """Per group, each channel's share of the importance: row sums of the terms it produces
    (output side) plus the linear terms; groups only read as inputs use column sums."""
    bil, lin, _ = objective_terms(graph, scores)
    out = [np.zeros(g.size) for g in graph.groups]
    produced = [False] * len(graph.groups)
    for t in bil:
        out[t.g] += t.weights.sum(axis=1)
        produced[t.g] = True
    for t in lin:
        out[t.g] += t.weights
        produced[t.g] = True
    for t in bil:
        if not produced[t.h]:
            out[t.h] += t.weights.sum(axis=0)
    return out


def _feasible(problem, masks: Sequence[np.ndarray]) -> bool:
    counts = [int(m.sum()) for m in masks]
    return all(c.cost.evaluate(counts) <= c.budget for c in problem.constraints)


def _lowest(problem, g: int) -> int:
    if problem.frozen[g]:
        return problem.sizes[g]
    return max(1, min(problem.min_keep[g], problem.sizes[g]))


def _round(problem, g: int, k: int) -> int:
    r = problem.round_to[g]
    size = problem.sizes[g]
    if r and k < size:
        k = min(size, int(math.ceil(k / r) * r))
    return k


def _top(score: np.ndarray, k: int) -> np.ndarray:
    m = np.zeros(len(score), dtype=bool)
    m[np.argsort(-score, kind="stable")[:k]] = True
    return m


def _bisect(problem, build: Callable[[float], list[np.ndarray]], lo: float, hi: float, iters: int = 60) -> list[np.ndarray]:
    """Largest knob in [lo, hi] whose masks fit the budget (masks grow with the knob)."""
    best = build(lo)
    if not _feasible(problem, best):
        raise ValueError("even the smallest configuration of this heuristic exceeds the budget")
    for _ in range(iters):
        mid = (lo + hi) / 2
        m = build(mid)
        if _feasible(problem, m):
            lo, best = mid, m
        else:
            hi = mid
    return best


def uniform_masks(problem, scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One keep ratio for every prunable group, the highest that fits every budget."""
    def build(r: float) -> list[np.ndarray]:
        masks = []
        for g, size in enumerate(problem.sizes):
            k = size if problem.frozen[g] else _round(problem, g, max(_lowest(problem, g), int(math.floor(r * size))))
            masks.append(_top(scores[g], k))
        return masks
    return _bisect(problem, build, 0.0, 1.0)


def threshold_masks(problem, scores: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One global score threshold across prunable groups, the lowest that fits every budget."""
    values = np.concatenate([s for g, s in enumerate(scores) if not problem.frozen[g]] or [np.zeros(1)])
    top = float(values.max()) + 1.0

    def build(t: float) -> list[np.ndarray]:  # t in [0, 1]: 1 keeps everything
        thr = top * (1.0 - t)
        masks = []
        for g, size in enumerate(problem.sizes):
            if problem.frozen[g]:
                masks.append(np.ones(size, dtype=bool))
                continue
            k = max(_lowest(problem, g), int((scores[g] >= thr).sum()))
            masks.append(_top(scores[g], _round(problem, g, k)))
        return masks
    return _bisect(problem, build, 0.0, 1.0)
