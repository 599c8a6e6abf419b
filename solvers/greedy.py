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
        G = len(problem.sizes)
        R = len(self.cons)
        self.Cm = np.zeros((R, G, G))  # cross coefficients, symmetric, zero diagonal
        self.Sq = np.zeros((R, G))     # square coefficients
        self.Li = np.zeros((R, G))     # linear coefficients
        for r in range(R):
            for g, v in self.lin[r].items():
                self.Li[r, g] += v
            for g, v in self.square[r].items():
                self.Sq[r, g] += v
            for g in range(G):
                for h, v in self.cross[r][g]:
                    self.Cm[r, g, h] += v
        self.cost = np.array([c.cost.evaluate(self.n) for c in self.cons], dtype=np.float64)
        self.contrib = {g: self._contrib(g) for g in problem.prunable}
        self.self_pair = {pr.g: pr.W for pr in self.red.pairs if pr.g == pr.h}
        self.neighbors = {g: {g} | {pr.g for pr in self.pairs_of[g]} | {pr.h for pr in self.pairs_of[g]}
                          for g in problem.prunable}
        self.obj = self.red.objective(self.masks)
        self._down: dict[int, tuple] = {}  # cached (new count, channels, importance lost) per group
        self._up: dict[int, tuple] = {}

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

    def delta_all(self, new: np.ndarray) -> np.ndarray:
        """``delta[r, g]``: change of cost ``r`` when only group ``g`` moves to ``new[g]``."""
        n = self.n.astype(np.float64)
        d = new.astype(np.float64) - n
        grad = np.einsum("rgh,h->rg", self.Cm, n) + self.Li
        return d * grad + self.Sq * (new.astype(np.float64) ** 2 - n ** 2)

    def _gain(self, g: int, idx: np.ndarray, keep: bool) -> float:
        """Exact objective change of adding (``keep``) or removing channels ``idx`` of ``g``."""
        s = float(self.contrib[g][idx].sum())
        if g in self.self_pair and len(idx) > 1:
            inner = float(self.self_pair[g][np.ix_(idx, idx)].sum())
            s = s + inner if keep else s - inner
        return s if keep else -s

    def toggle(self, g: int, idx: np.ndarray, keep: bool) -> None:
        if len(idx) == 0:
            return
        sign = 1.0 if keep else -1.0
        self.obj += self._gain(g, idx, keep)
        for h in self.neighbors[g]:
            self._down.pop(h, None)
            self._up.pop(h, None)
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
    def _down_step(self, g: int) -> tuple:
        if g not in self._down:
            new = self.step_down(g)
            if new is None:
                self._down[g] = (None, None, 0.0)
            else:
                idx = self.weakest(g, int(self.n[g]) - new)
                self._down[g] = (new, idx, -self._gain(g, idx, False))
        return self._down[g]

    def _up_step(self, g: int) -> tuple:
        if g not in self._up:
            new = self.step_up(g)
            if new is None:
                self._up[g] = (None, None, 0.0)
            else:
                idx = self.strongest(g, new - int(self.n[g]))
                self._up[g] = (new, idx, self._gain(g, idx, True))
        return self._up[g]

    def drop(self) -> None:
        P = self.p.prunable
        scale = np.maximum(self.budget, 1e-300)
        while not self.feasible():
            over = np.maximum(self.cost - self.budget, 0.0) / scale
            steps = [self._down_step(g) for g in P]
            new = self.n.copy()
            for g, (nw, _, _) in zip(P, steps):
                if nw is not None:
                    new[g] = nw
            saved = -self.delta_all(new)[:, P]                     # (R, |P|)
            weighted = (over[:, None] * saved / scale[:, None]).sum(axis=0)
            lost = np.array([s[2] for s in steps])
            ok = np.array([s[0] is not None for s in steps], dtype=bool) & (weighted > 0)
            if not ok.any():
                raise RuntimeError("greedy: no channel left to remove but a budget still fails")
            score = np.where(ok, lost / np.where(ok, weighted, 1.0), np.inf)
            i = int(np.argmin(score))
            self.toggle(P[i], steps[i][1], keep=False)

    def fill(self, deadline: float = np.inf) -> None:
        P = self.p.prunable
        scale = np.maximum(self.budget, 1e-300)
        limit = self.budget * (1 + 1e-12) + 1e-9
        while time.perf_counter() < deadline:
            steps = [self._up_step(g) for g in P]
            new = self.n.copy()
            for g, (nw, _, _) in zip(P, steps):
                if nw is not None:
                    new[g] = nw
            extra = self.delta_all(new)[:, P]
            fits = np.all(self.cost[:, None] + extra <= limit[:, None], axis=0)
            gain = np.array([s[2] for s in steps])
            ok = np.array([s[0] is not None for s in steps], dtype=bool) & fits & (gain > 0)
            if not ok.any():
                return
            used = (extra / scale[:, None]).sum(axis=0)
            score = np.where(used > 0, gain / np.where(used > 0, used, 1.0), np.inf)
            score = np.where(ok, score, -np.inf)
            i = int(np.argmax(score))
            self.toggle(P[i], steps[i][1], keep=True)

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
                {g: v.copy() for g, v in self.contrib.items()}, self.obj)

    def restore(self, snap) -> None:
        masks, n, cost, contrib, obj = snap
        self.masks, self.n, self.cost, self.obj = [m.copy() for m in masks], n.copy(), cost.copy(), obj
        self.contrib = contrib  # the snapshot is used once
        self._down.clear()
        self._up.clear()

    def swap_across(self, deadline: float, max_passes: int = 3) -> None:
        best_obj = self.obj
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
                obj = self.obj
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
