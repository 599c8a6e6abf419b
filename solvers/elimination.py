"""Exact max-sum over small discrete variables by variable elimination.

The count bounds (``bounds.py``) maximize a sum of tables over per-group kept counts: one
table per group and one per pair of groups that share a layer or a cost term. Networks whose
group graph is tree-like (chains, residual stages, bottlenecks, inverted residuals) have a
small treewidth, so eliminating variables in min-fill order is exact and takes milliseconds.
:func:`elimination_order` reports the largest table it would build, so callers can refuse
graphs (dense blocks) where this is too large instead of running out of memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Factor:
    """A table over ``vars`` (axis ``i`` indexes the labels of ``vars[i]``); ``-inf`` entries
    forbid a combination (hard constraints such as the count relations of a union)."""

    vars: tuple[int, ...]
    table: np.ndarray


def elimination_order(variables: list[int], edges: set[tuple[int, int]],
                      sizes: dict[int, int]) -> tuple[list[int], int]:
    """Greedy min-fill order and the largest intermediate table it creates (entries)."""
    adj = {v: set() for v in variables}
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    order, largest = [], 1
    remaining = set(variables)
    while remaining:
        def fill(v: int) -> tuple[int, float]:
            nb = list(adj[v])
            missing = sum(1 for i in range(len(nb)) for j in range(i + 1, len(nb)) if nb[j] not in adj[nb[i]])
            return missing, float(np.prod([sizes[u] for u in nb] + [sizes[v]]))

        v = min(sorted(remaining), key=fill)
        nb = list(adj[v])
        largest = max(largest, int(np.prod([sizes[u] for u in nb] + [sizes[v]], dtype=np.float64)))
        for i in range(len(nb)):
            for j in range(i + 1, len(nb)):
                adj[nb[i]].add(nb[j])
                adj[nb[j]].add(nb[i])
        for u in nb:
            adj[u].discard(v)
        del adj[v]
        remaining.discard(v)
        order.append(v)
    return order, largest


def _expand(f: Factor, scope: tuple[int, ...]) -> np.ndarray:
    """``f.table`` transposed and reshaped to broadcast over ``scope``."""
    perm = sorted(range(len(f.vars)), key=lambda i: scope.index(f.vars[i]))
    t = np.transpose(f.table, perm)
    shape = [1] * len(scope)
    for i in perm:
        shape[scope.index(f.vars[i])] = f.table.shape[i]
    return t.reshape(shape)


def max_sum(factors: list[Factor], order: list[int], sizes: dict[int, int]) -> tuple[float, dict[int, int]]:
    """``max over labels of sum(factors)`` and a maximizing label per variable."""
    value, labels, _ = _eliminate(factors, order, sizes, marginals=False)
    return value, labels


def max_marginals(factors: list[Factor], order: list[int],
                  sizes: dict[int, int]) -> tuple[float, dict[int, int], dict[int, np.ndarray]]:
    """``max_sum``, and per variable its max-marginals: ``M[v][l]`` = the largest sum with
    ``v`` at label ``l`` (the elimination's cliques calibrated by a backward pass)."""
    return _eliminate(factors, order, sizes, marginals=True)


def _eliminate(factors: list[Factor], order: list[int], sizes: dict[int, int], marginals: bool):
    pool = [(f, None) for f in factors]  # (factor, the step whose message it is)
    steps = []  # (variable, scope, clique table, message, steps whose messages it consumed)
    for v in order:
        touching = [(f, src) for f, src in pool if v in f.vars]
        pool = [(f, src) for f, src in pool if v not in f.vars]
        scope = tuple(sorted({u for f, _ in touching for u in f.vars} | {v}))
        total = np.zeros([sizes[u] for u in scope])
        for f, _ in touching:
            total = total + _expand(f, scope)
        rest = tuple(u for u in scope if u != v)
        message = Factor(rest, total.max(axis=scope.index(v)))
        steps.append((v, scope, total, message, [src for _, src in touching if src is not None]))
        pool.append((message, len(steps) - 1))
    value = float(sum(float(f.table) for f, _ in pool))  # every remaining factor is a scalar
    labels: dict[int, int] = {}
    for v, scope, total, _, _ in reversed(steps):
        index = tuple(slice(None) if u == v else labels[u] for u in scope)
        labels[v] = int(np.argmax(total[index]))
    if not marginals:
        return value, labels, None
    out: dict[int, np.ndarray] = {}
    down: dict[int, np.ndarray] = {}  # message from a step's parent, over the step's message scope
    with np.errstate(invalid="ignore"):
        for i in range(len(steps) - 1, -1, -1):
            v, scope, total, message, children = steps[i]
            belief = total + (_expand(Factor(message.vars, down[i]), scope) if i in down else 0.0)
            component = float(belief.max())  # this clique's connected part of the sum
            axes = tuple(a for a, u in enumerate(scope) if u != v)
            mine = belief.max(axis=axes) if axes else belief
            out[v] = mine - component + value if np.isfinite(component) else np.full(sizes[v], -np.inf)
            for j in children:
                child = steps[j][3]
                rest = belief - _expand(child, scope)
                rest = np.where(np.isnan(rest), -np.inf, rest)  # -inf - -inf: that combination is forbidden
                # both scopes are sorted, so what is left after the max is in child.vars' order
                drop = tuple(a for a, u in enumerate(scope) if u not in child.vars)
                down[j] = rest.max(axis=drop) if drop else rest
    return value, labels, out
