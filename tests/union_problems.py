"""Hypothesis strategy for random channel problems with union coupling (torch-free).

Residual stages: a stream group, blocks whose branch output is added into the stream (the
sum is a *derived* group, the OR of the stream and the branch), optional projection skips,
one-conv branches that read the stream directly, three-way adds, a frozen network input or
output, ``min_keep`` / ``round_to`` on free groups and 1-2 random feasible budgets.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from qcqp_prune.solvers import (BilinearTerm, ChannelProblem, LinearTerm, QuadraticCost,
                                ResourceConstraint, UnionConstraint)


@st.composite
def union_problems(draw, max_free_channels: int = 16) -> ChannelProblem:
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    width = draw(st.integers(1, 3))
    sizes: list[int] = []
    frozen: list[bool] = []
    pairs: list[tuple[int, int]] = []  # (out group, in group) of each layer
    unions: list[UnionConstraint] = []

    def group(size: int, is_frozen: bool = False) -> int:
        sizes.append(size)
        frozen.append(is_frozen)
        return len(sizes) - 1

    stream = group(width, draw(st.sampled_from([False, False, True])))  # stem output or the network input
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["two_conv", "two_conv", "one_conv", "projection", "three_way"]))
        if kind == "one_conv":
            branch = group(width)
            pairs.append((branch, stream))
            inputs = [stream, branch]
        else:
            mid = group(draw(st.integers(1, 3)))
            branch = group(width)
            pairs += [(mid, stream), (branch, mid)]
            inputs = [stream, branch]
            if kind == "projection":
                proj = group(width)
                pairs.append((proj, stream))
                inputs = [proj, branch]
            elif kind == "three_way":
                other = group(width)
                pairs.append((other, stream))
                inputs.append(other)
        out = group(width)
        unions.append(UnionConstraint(out, tuple(inputs)))
        stream = out
    head = group(draw(st.integers(1, 2)), True)  # a classifier reading the last stream
    pairs.append((head, stream))
    if draw(st.booleans()) and draw(st.booleans()):
        frozen[stream] = True  # the stream is a network output as well
    n = len(sizes)
    free = [g for g in range(n) if not frozen[g] and g not in {u.out for u in unions}]
    while sum(sizes[g] for g in free) > max_free_channels:  # keep exhaustive search cheap
        pairs = [p for p in pairs if p[0] != free[-1]]
        frozen[free[-1]] = True
        free.pop()
    bil = [BilinearTerm(g, h, rng.random((sizes[g], sizes[h])) * (rng.random((sizes[g], sizes[h])) > 0.2))
           for g, h in pairs]
    lin = [LinearTerm(g, rng.random(sizes[g])) for g in range(n) if rng.random() < 0.3]
    min_keep = [int(rng.integers(1, s + 1)) if rng.random() < 0.2 else 1 for s in sizes]
    round_to = [2 if rng.random() < 0.15 else None for _ in sizes]
    base = ChannelProblem(tuple(sizes), tuple(frozen), tuple(min_keep), tuple(round_to), tuple(bil), tuple(lin),
                          float(rng.random()), (), None, tuple(unions))
    constraints = []
    for r in range(draw(st.integers(1, 2))):
        cb: dict[tuple[int, int], float] = {}
        for g, h in pairs:
            key = (min(g, h), max(g, h))
            cb[key] = cb.get(key, 0.0) + float(rng.integers(1, 10))
        cl = {g: float(rng.integers(0, 4)) for g in range(n)}  # norms and adds: derived groups too
        cost = QuadraticCost(cb, cl, float(rng.integers(0, 20)))
        lo, hi = cost.evaluate(base.min_counts()), cost.evaluate(sizes)
        constraints.append(ResourceConstraint(f"r{r}", cost, lo + draw(st.floats(0.0, 1.0)) * (hi - lo)))
    return ChannelProblem(tuple(sizes), tuple(frozen), tuple(min_keep), tuple(round_to), tuple(bil), tuple(lin),
                          base.objective_constant, tuple(constraints), None, tuple(unions))
