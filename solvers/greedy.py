"""Greedy channel selection: drop, fill, swap. Fast, always within budget, no bound.

1. Drop: starting from everything kept, repeatedly remove the channel (or ``round_to``
   block) whose importance lost per unit of cost saved is smallest, cost saved being
   weighted by how far over budget each resource is, until every budget holds.
2. Fill: add back the channel with the best importance gained per unit of budget used while
   every budget still holds.
3. Swap: within a group (costs unchanged) trade the weakest kept channel for the strongest
   removed one while that helps; across groups, drop a block from one group and refill,
   keeping the move if the objective rose.
"""

from __future__ import annotations

import time

import numpy as np

from .problem import ChannelProblem
from .reduced import Reduced, reduce_problem


class GreedyState:
    def __init__(self, problem: ChannelProblem, red: Reduced | None = None) -> None:
        self.p = problem
        self.red = red or reduce_problem(problem)
        self.masks = problem.full_masks()
        self.n = np.array(problem.sizes, dtype=np.int64)
        self.allowed = {g: np.array(problem.allowed_counts(g)) for g in problem.prunable}
        self.pairs_of: dict[int, list] = {g: [] for g in problem.prunable}
        for pr in self.red.pairs:
            self.pairs_of[pr.g].append(pr)
            if pr.h != pr.g:
                self.pairs_of[pr.h].append(pr)
        # per constraint and group: [(other group, coef)], square coef, linear coef
        self.cons = problem.constraints
        self.budget = np.array([c.budget for c in self.cons], dtype=np.float64)
        self.cross = [{g: [] for g in range(len(problem.sizes))} for _ in self.cons]
        self.square = [{} for _ in self.cons]
        self.lin = [dict(c.cost.linear) for c in self.cons]
        for r, c in enumerate(self.cons):
            for (g, h), v in c.cost.bilinear.items():
                if g == h:
                    self.square[r][g] = self.square[r].get(g, 0.0) + v
                else:
                    self.cross[r][g].append((h, v))
                    self.cross[r][h].append((g, v))
        self.cost = np.array([c.cost.evaluate(self.n) for c in self.cons], dtype=np.float64)
        self.contrib = {g: self._contrib(g) for g in problem.prunable}

    def _contrib(self, g: int) -> np.ndarray:
        x = self.masks
        v = self.red.linear[g].copy()
        for pr in self.pairs_of[g]:
            if pr.g == pr.h:
                v += 2.0 * (pr.W @ x[g].astype(np.float64))
            elif pr.g == g:
                v += pr.W @ x[pr.h].astype(np.float64)
            else:
                v += pr.W.T @ x[pr.g].astype(np.float64)
        return v

    def delta_cost(self, g: int, new: int) -> np.ndarray:
        """cost(n with n_g = new) - cost(n), per constraint."""
        old = int(self.n[g])
        d = np.zeros(len(self.cons))
        for r in range(len(self.cons)):
            s = self.lin[r].get(g, 0.0) * (new - old)
            s += self.square[r].get(g, 0.0) * (new * new - old * old)
            for h, v in self.cross[r][g]:
                s += v * self.n[h] * (new - old)
            d[r] = s
        return d

    def toggle(self, g: int, idx: np.ndarray, keep: bool) -> None:
        if len(idx) == 0:
            return
        sign = 1.0 if keep else -1.0
        new = int(self.n[g] + (len(idx) if keep else -len(idx)))
        self.cost += self.delta_cost(g, new)
        self.n[g] = new
        self.masks[g][idx] = keep
        for pr in self.pairs_of[g]:
            if pr.g == pr.h:
                self.contrib[g] += sign * 2.0 * pr.W[:, idx].sum(axis=1)
            elif pr.g == g:
                self.contrib[pr.h] += sign * pr.W[idx, :].sum(axis=0)
            else:
                self.contrib[pr.g] += sign * pr.W[:, idx].sum(axis=1)

    def step_down(self, g: int) -> int | None:
        lower = self.allowed[g][self.allowed[g] < self.n[g]]
        return int(lower[-1]) if len(lower) else None

    def step_up(self, g: int) -> int | None:
        higher = self.allowed[g][self.allowed[g] > self.n[g]]
        return int(higher[0]) if len(higher) else None

    def weakest(self, g: int, k: int) -> np.ndarray:
        kept = np.flatnonzero(self.masks[g])
        c = self.contrib[g][kept]
        if k >= len(kept):
            return kept
        return kept[np.argpartition(c, k - 1)[:k]]

    def strongest(self, g: int, k: int) -> np.ndarray:
        gone = np.flatnonzero(~self.masks[g])
        c = self.contrib[g][gone]
        if k >= len(gone):
            return gone
        return gone[np.argpartition(-c, k - 1)[:k]]

    def feasible(self) -> bool:
        return bool(np.all(self.cost <= self.budget * (1 + 1e-12) + 1e-9))

    # ------------------------------------------------------------------ phases
    def drop(self) -> None:
        while not self.feasible():
            over = np.maximum(self.cost - self.budget, 0.0) / np.maximum(self.budget, 1e-300)
            best, best_score = None, np.inf
            for g in self.p.prunable:
                new = self.step_down(g)
                if new is None:
                    continue
                saved = -self.delta_cost(g, new)
                weighted = float(np.sum(over * saved / np.maximum(self.budget, 1e-300)))
                if weighted <= 0:
                    continue
                idx = self.weakest(g, int(self.n[g]) - new)
                score = float(self.contrib[g][idx].sum()) / weighted
                if score < best_score:
                    best, best_score = (g, idx), score
            if best is None:
                raise RuntimeError("greedy: no channel left to remove but a budget still fails")
            self.toggle(best[0], best[1], keep=False)

    def fill(self, deadline: float = np.inf) -> None:
        while time.perf_counter() < deadline:
            best, best_score = None, -np.inf
            for g in self.p.prunable:
                new = self.step_up(g)
                if new is None:
                    continue
                extra = self.delta_cost(g, new)
                if np.any(self.cost + extra > self.budget * (1 + 1e-12) + 1e-9):
                    continue
                idx = self.strongest(g, new - int(self.n[g]))
                gain = float(self.contrib[g][idx].sum())
                used = float(np.sum(extra / np.maximum(self.budget, 1e-300)))
                score = gain / used if used > 0 else np.inf
                if gain > 0 and score > best_score:
                    best, best_score = (g, idx), score
            if best is None:
                return
            self.toggle(best[0], best[1], keep=True)

    def swap_within(self, max_rounds: int = 10000) -> None:
        self_pairs = {pr.g: pr.W for pr in self.red.pairs if pr.g == pr.h}
        for g in self.p.prunable:
            for _ in range(max_rounds):
                if self.masks[g].all() or not self.masks[g].any():
                    break
                a = self.weakest(g, 1)[0]
                b = self.strongest(g, 1)[0]
                inter = 2.0 * self_pairs[g][a, b] if g in self_pairs else 0.0
                if self.contrib[g][b] - inter - self.contrib[g][a] <= 1e-12 * max(1.0, abs(self.contrib[g][a])):
                    break
                self.toggle(g, np.array([a]), keep=False)
                self.toggle(g, np.array([b]), keep=True)

    def snapshot(self):
        return ([m.copy() for m in self.masks], self.n.copy(), self.cost.copy(),
                {g: v.copy() for g, v in self.contrib.items()})

    def restore(self, snap) -> None:
        masks, n, cost, contrib = snap
        self.masks, self.n, self.cost, self.contrib = [m.copy() for m in masks], n.copy(), cost.copy(), contrib

    def swap_across(self, deadline: float, max_passes: int = 3) -> None:
        best_obj = self.red.objective(self.masks)
        for _ in range(max_passes):
            improved = False
            for g in self.p.prunable:
                if time.perf_counter() > deadline:
                    return
                new = self.step_down(g)
                if new is None:
                    continue
                snap = self.snapshot()
                self.toggle(g, self.weakest(g, int(self.n[g]) - new), keep=False)
                self.fill(deadline)
                obj = self.red.objective(self.masks)
                if obj > best_obj * (1 + 1e-12) + 1e-15:
                    best_obj, improved = obj, True
                else:
                    self.restore(snap)
            if not improved:
                return


def greedy_masks(problem: ChannelProblem, time_limit: float = 10.0, red: Reduced | None = None) -> list[np.ndarray]:
    """Greedy drop / fill / swap; returns masks that meet every budget."""
    deadline = time.perf_counter() + max(time_limit, 0.0)
    st = GreedyState(problem, red)
    st.drop()
    st.fill()
    st.swap_within()
    st.swap_across(deadline)
    st.swap_within()
    return st.masks
