"""Shared coupling as a special case of union coupling (torch-free).

:func:`shared_coupling` merges each union's groups (its sum and everything added into it,
transitively) into one group: every tensor added into a stream keeps the same channels. Any
shared plan is a union plan (the OR of equal masks is that mask), so the union optimum is
never below the shared one; the union greedy uses this to start no worse than the shared
greedy, and the tests use it to check that union coupling is a relaxation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .problem import (BilinearTerm, ChannelProblem, LinearTerm, QuadraticCost, ResourceConstraint)


def shared_coupling(problem: ChannelProblem) -> tuple[ChannelProblem, list[int]]:
    """``problem`` with each union's groups merged into one group, and old -> new group id.

    The merged group keeps each free member's ``min_keep`` (the largest) and ``round_to``
    (their least common multiple), so its counts are allowed for every member; it is frozen
    when any member is."""
    n = len(problem.sizes)
    root = list(range(n))

    def find(g: int) -> int:
        while root[g] != g:
            g = root[g]
        return g

    for u in problem.unions:
        for i in u.inputs:
            root[find(i)] = find(u.out)
    classes = sorted({find(g) for g in range(n)})
    index = {c: k for k, c in enumerate(classes)}
    new = [index[find(g)] for g in range(n)]
    members: list[list[int]] = [[] for _ in classes]
    for g in range(n):
        members[new[g]].append(g)
    free = [[g for g in ms if g not in problem.derived] for ms in members]
    steps = [[problem.round_to[g] for g in fs if problem.round_to[g]] for fs in free]
    bil = tuple(BilinearTerm(new[t.g], new[t.h], t.weights) for t in problem.bilinear)
    lin = tuple(LinearTerm(new[t.g], t.weights) for t in problem.linear)
    constraints = []
    for c in problem.constraints:
        cb: dict[tuple[int, int], float] = {}
        for (g, h), v in c.cost.bilinear.items():
            key = (min(new[g], new[h]), max(new[g], new[h]))
            cb[key] = cb.get(key, 0.0) + v
        cl: dict[int, float] = {}
        for g, v in c.cost.linear.items():
            cl[new[g]] = cl.get(new[g], 0.0) + v
        constraints.append(ResourceConstraint(c.name, QuadraticCost(cb, cl, c.cost.constant), c.budget))
    names = None if problem.names is None else tuple(problem.names[ms[0]] for ms in members)
    shared = ChannelProblem(tuple(problem.sizes[ms[0]] for ms in members),
                            tuple(any(problem.frozen[g] for g in ms) for ms in members),
                            tuple(max((problem.min_keep[g] for g in fs), default=1) for fs in free),
                            tuple(int(np.lcm.reduce(s)) if s else None for s in steps),
                            bil, lin, problem.objective_constant, tuple(constraints), names, ())
    return shared, new


def expand_shared(masks: Sequence[np.ndarray], new: Sequence[int]) -> list[np.ndarray]:
    """A shared plan's masks as masks of the union problem (every member keeps its class's)."""
    return [np.asarray(masks[c], dtype=bool).copy() for c in new]
