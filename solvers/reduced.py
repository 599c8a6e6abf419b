"""The objective with frozen groups folded in: what every back-end actually optimizes.

Terms touching a frozen group become linear (or constant); a term of a group with itself
splits into its diagonal (linear) and a strictly off-diagonal symmetric part. What is left is
``sum_{pairs} x_g^T W x_h + sum_g w_g^T x_g + constant`` over prunable groups only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .problem import ChannelProblem


@dataclass
class Pair:
    """``x_g^T W x_h`` between two prunable groups; for ``g == h`` W is symmetric with a zero
    diagonal and the term is ``sum_{a<b} 2 W[a, b] x_a x_b`` (i.e. ``x^T W x``)."""

    g: int
    h: int
    W: np.ndarray


@dataclass
class Reduced:
    problem: ChannelProblem
    prunable: list[int]
    pairs: list[Pair]
    linear: dict[int, np.ndarray]
    constant: float

    def objective(self, masks: list[np.ndarray]) -> float:
        x = {g: masks[g].astype(np.float64) for g in self.prunable}
        total = self.constant
        for p in self.pairs:
            total += float(x[p.g] @ p.W @ x[p.h])
        for g, w in self.linear.items():
            total += float(w @ x[g])
        return total


def reduce_problem(problem: ChannelProblem) -> Reduced:
    frozen = problem.frozen
    lin = {g: np.zeros(problem.sizes[g]) for g in problem.prunable}
    pairs: dict[tuple[int, int], np.ndarray] = {}
    const = float(problem.objective_constant)
    for t in problem.linear:
        w = np.asarray(t.weights, dtype=np.float64)
        if frozen[t.g]:
            const += float(w.sum())
        else:
            lin[t.g] += w
    for t in problem.bilinear:
        W = np.asarray(t.weights, dtype=np.float64)
        g, h = t.g, t.h
        if frozen[g] and frozen[h]:
            const += float(W.sum())
        elif frozen[g]:
            lin[h] += W.sum(axis=0)
        elif frozen[h]:
            lin[g] += W.sum(axis=1)
        elif g == h:
            lin[g] += np.diag(W).copy()
            S = (W + W.T) / 2.0
            np.fill_diagonal(S, 0.0)
            key = (g, g)
            pairs[key] = pairs[key] + S if key in pairs else S
        else:
            if g > h:
                g, h, W = h, g, W.T
            key = (g, h)
            pairs[key] = pairs[key] + W if key in pairs else W.copy()
    return Reduced(problem, problem.prunable, [Pair(g, h, W) for (g, h), W in pairs.items()], lin, const)
