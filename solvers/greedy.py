"""Greedy channel selection: drop, fill, swap. Fast, always within budget, no bound.

1. Drop: starting from everything kept, repeatedly remove the channel (or ``round_to``
   block) whose importance lost per unit of cost saved is smallest, cost saved being
   weighted by how far over budget each resource is, until every budget holds.
2. Fill: add back the channel with the best importance gained per unit of budget used while
   every budget still holds.
3. Swap: within a group (costs unchanged) trade the weakest kept channel for the strongest
   removed one while that helps; across groups, drop a block from one group and refill,
   keeping the move if the objective rose.

With union coupling (:class:`UnionGreedyState`) moves toggle channels of *free* groups only;
derived groups follow. A cover count per derived channel (how many of its sources keep it)
makes each move's cascade exact: removing channel ``j`` of a source kills the derived
channels ``j`` it alone covered, adding it revives those nobody covered. The candidates of a
free group are split by *cascade pattern* (which derived groups a channel's move changes),
so dropping a branch channel whose stream channel stays alive (saving the branch's cost
only) competes with dropping the last source of a stream channel (saving its consumers' cost
too). Objective and cost changes of these multi-group moves are computed exactly; swaps
within a group pair channels of the same pattern, which keeps every count, hence every cost.
When no drop block saves cost (sources keeping different channels at their smallest
counts), drop tries swaps that align a source with the others, then re-nests every stream's
sources on one channel ranking, then a drop that only prepares killing a stream channel.
Each free group's candidates are cached as a table until a move changes them (its own or a
neighbour's contribution, a cover it depends on, a derived contribution it relies on), and
the tables stay joined for scoring.

Every phase stops at the deadline (``time_limit``) except drop, which must end within budget:
past the deadline it switches to coarse rounds (blocks of a growing share of each group).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

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

    def coarse_down(self, g: int, frac: float) -> int | None:
        """The allowed count of group ``g`` about ``frac`` of its kept channels lower (at
        least one step; the smallest one below when none is that low): drop's step once the
        deadline has passed."""
        lower = self.allowed[g][self.allowed[g] < self.n[g]]
        if not len(lower):
            return None
        far = lower[lower <= self.n[g] - max(1, int(np.ceil(frac * self.n[g])))]
        return int(far[-1]) if len(far) else int(lower[0])

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

    def drop(self, deadline: float = np.inf) -> None:
        """Remove the cheapest step until every budget holds; past ``deadline``, coarse steps
        (:meth:`hurry`)."""
        P = self.p.prunable
        scale = np.maximum(self.budget, 1e-300)
        while not self.feasible():
            if time.perf_counter() > deadline:
                self.hurry()
                return
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

    def hurry(self, frac: float = 1 / 32) -> None:
        """Drop in coarse rounds until every budget holds (the deadline has passed): per round,
        every group's block of about ``frac`` of its kept channels, applied best first while
        over budget; ``frac`` doubles each round up to a half, so few rounds remain."""
        P = self.p.prunable
        scale = np.maximum(self.budget, 1e-300)
        while not self.feasible():
            over = np.maximum(self.cost - self.budget, 0.0) / scale
            new = np.array([self.coarse_down(g, frac) or -1 for g in P])
            counts = self.n.copy()
            counts[P] = np.where(new >= 0, new, self.n[P])
            weighted = (over[:, None] * -self.delta_all(counts)[:, P] / scale[:, None]).sum(axis=0)
            blocks = [self.weakest(g, int(self.n[g]) - nw) if nw >= 0 else None for g, nw in zip(P, new)]
            lost = np.array([-self._gain(g, b, False) if b is not None else 0.0 for g, b in zip(P, blocks)])
            ok = (new >= 0) & (weighted > 0)
            if not ok.any():
                raise RuntimeError("greedy: no channel left to remove but a budget still fails")
            for i in np.argsort(np.where(ok, lost / np.where(ok, weighted, 1.0), np.inf), kind="stable")[:ok.sum()]:
                self.toggle(P[i], blocks[i], keep=False)
                if self.feasible():
                    return
            frac = min(2 * frac, 0.5)

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

    def swap_within(self, deadline: float = np.inf, max_rounds: int = 10000) -> None:
        self_pairs = {pr.g: pr.W for pr in self.red.pairs if pr.g == pr.h}
        for g in self.p.prunable:
            for _ in range(max_rounds):
                if time.perf_counter() > deadline:
                    return
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


def _column_codes(hit: np.ndarray) -> np.ndarray:
    """One integer per column of a boolean matrix, equal exactly when the columns are: the
    column's bits, 32 rows at a time below the number of the rows above."""
    codes = np.zeros(hit.shape[1], dtype=np.int64)
    for top in range(0, len(hit), 32):
        if top:
            codes = np.unique(codes, return_inverse=True)[1].astype(np.int64) << 32
        block = hit[top:top + 32].astype(np.int64)
        codes |= (block << np.arange(len(block), dtype=np.int64)[:, None]).sum(axis=0)
    return codes


def _labels(hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of a boolean matrix the rank of its pattern among the distinct columns
    (ordered by :func:`_column_codes`), and how many columns each pattern has. With at most 8
    rows the code is the column's byte and a bin count replaces the sort."""
    if len(hit) == 0 or hit.shape[1] == 0:
        return np.zeros(hit.shape[1], dtype=np.int64), np.array([hit.shape[1]] if hit.shape[1] else [], dtype=np.int64)
    if len(hit) <= 8:
        codes = np.packbits(hit, axis=0, bitorder="little")[0]
        count = np.bincount(codes)
        present = count > 0
        return (np.cumsum(present) - 1)[codes], count[present]
    _, label, count = np.unique(_column_codes(hit), return_inverse=True, return_counts=True)
    return label.reshape(-1), count


def _first_min(key: np.ndarray, label: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Per label (``0..len(count)-1``, ``count`` positions each) the first position of its
    smallest key: a stable sort by label (a radix sort for small labels), the minimum of each
    run, then the first position of the run that holds it."""
    order = np.argsort(label.astype(np.uint8) if len(count) <= 256 else label, kind="stable")
    ks = key[order]
    starts = np.cumsum(count) - count
    at_min = np.flatnonzero(ks == np.repeat(np.minimum.reduceat(ks, starts), count))
    return order[at_min[np.searchsorted(at_min, starts)]]


Step = tuple[int, np.ndarray, bool]  # (group, channels, keep): toggle these channels of the group


@dataclass
class Moves:
    """Candidate moves side by side, each a list of channel toggles applied together (a free
    group's, then the derived groups' that follow): its exact objective change, its count
    change per group, the part of its cost change that does not depend on the counts, the
    free group it moves, and its toggles, built only for the move applied."""

    gain: np.ndarray                    # (C,)
    delta: np.ndarray                   # (C, G)
    quad: np.ndarray                    # (R, C)
    owner: np.ndarray                   # (C,)
    steps: Callable[[int], list[Step]]

    def __len__(self) -> int:
        return len(self.gain)


def _offsets(tables: list[Moves]) -> np.ndarray:
    """Where each table's moves start in the joined table (and, last, where they end)."""
    return np.cumsum([0] + [len(t) for t in tables])


def _join(tables: list[Moves]) -> Moves:
    """The moves of several tables as one table (in order); its toggles are read from
    ``tables`` when asked for, so replacing a table in that list replaces its moves' toggles."""
    offsets = _offsets(tables)

    def steps(i: int) -> list[Step]:
        j = int(np.searchsorted(offsets, i, side="right")) - 1
        return tables[j].steps(int(i - offsets[j]))

    return Moves(np.concatenate([t.gain for t in tables]), np.concatenate([t.delta for t in tables]),
                 np.concatenate([t.quad for t in tables], axis=1), np.concatenate([t.owner for t in tables]), steps)


class UnionGreedyState(GreedyState):
    """Greedy over the free groups of a problem with union coupling; derived masks stay the
    OR of their inputs after every move (see the module docstring)."""

    def __init__(self, problem: ChannelProblem, red: Reduced | None = None) -> None:
        super().__init__(problem, red)
        self.free = free = problem.free
        derived = [v for v in problem.union_order if not problem.frozen[v]]
        self._joined: dict[bool, tuple[Moves, list[Moves], np.ndarray]] = {}  # per direction: joined table, its parts
        self.dep = {s: [v for v in derived if s in problem.sources(v)] for s in free}
        self.cover = {v: np.full(problem.sizes[v], len(problem.sources(v)), dtype=np.int64) for v in derived}
        self.derived_partners = {g: {h for pr in self.pairs_of[g] for h in (pr.g, pr.h) if h in self.cover}
                                 for g in problem.prunable}
        self.source_list = {v: sorted(problem.sources(v)) for v in derived}
        self.streams = self._streams(derived)
        self.span = {s: np.array([s, *self.dep[s]]) for s in free}
        self.span_cm = {s: self.Cm[:, self.span[s][:, None], self.span[s][None, :]] for s in free}
        self.span_linear = {s: not (self.span_cm[s].any() or self.Sq[:, self.span[s]].any()) for s in free}
        self.inner = {s: any(pr.g != pr.h and {pr.g, pr.h} <= set(self.span[s].tolist()) for pr in self.red.pairs)
                      for s in free}

    def _streams(self, derived: list[int]) -> list[tuple[list[int], list[int]]]:
        """``(free sources, derived groups)`` of each set of groups linked by unions (a
        residual stage's stream: same size, one channel index space)."""
        streams: list[tuple[set[int], set[int]]] = []
        for v in derived:
            src, der = set(self.p.sources(v)), {v}
            for other in [x for x in streams if x[0] & src]:
                streams.remove(other)
                src, der = src | other[0], der | other[1]
            streams.append((src, der))
        return [(sorted(s), sorted(d)) for s, d in streams]

    # ------------------------------------------------------------------ moves
    def exact_gain(self, d: dict[int, tuple[np.ndarray, np.ndarray]]) -> float:
        """Exact objective change of toggling, at once, channels ``idx`` of each group ``g``
        in ``d[g] = (idx, signs)`` (+1 adds a removed channel, -1 removes a kept one): the
        contributions plus the interaction of every changed pair (a quadratic's second order
        term is exact)."""
        total = 0.0
        for g, (idx, sg) in d.items():
            total += float(sg @ self.contrib[g][idx])
            for pr in self.pairs_of[g]:
                if pr.g == g and pr.h in d:
                    idx_h, sg_h = d[pr.h]
                    total += float(sg @ pr.W[np.ix_(idx, idx_h)] @ sg_h)
        return total

    def _at_stake(self, s: int, keep: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Channels of free group ``s`` a move could toggle (removed ones when ``keep``, kept
        ones otherwise), the importance at stake per channel (its own and its cascade's
        contribution) and ``hit[i, c]``: whether derived group ``dep[s][i]`` changes with
        channel ``c``."""
        chans = np.flatnonzero(self.masks[s] != keep)
        value = self.contrib[s][chans]
        hit = np.empty((len(self.dep[s]), len(chans)), dtype=bool)
        for i, v in enumerate(self.dep[s]):
            np.equal(self.cover[v][chans], 0 if keep else 1, out=hit[i])
            value += np.where(hit[i], self.contrib[v][chans], 0.0)
        return chans, value, hit

    def _steps(self, s: int, idx: np.ndarray, hit: np.ndarray, keep: bool) -> list[Step]:
        """Toggle channels ``idx`` of free group ``s`` and, per ``hit`` row, the derived
        channels that follow."""
        return [(s, idx, keep)] + [(v, idx[h], keep) for v, h in zip(self.dep[s], hit) if h.any()]

    @staticmethod
    def _changes(steps: list[Step]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``steps`` as ``{group: (channels, signs)}`` for :meth:`exact_gain`."""
        d: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for g, idx, keep in steps:
            sg = np.full(len(idx), 1.0 if keep else -1.0)
            d[g] = (np.concatenate([d[g][0], idx]), np.concatenate([d[g][1], sg])) if g in d else (idx, sg)
        return d

    def _table(self, s: int, span_delta: np.ndarray, gain: np.ndarray,
               steps: Callable[[int], list[Step]]) -> Moves:
        """Moves of free group ``s`` from their count changes over ``span[s]`` (``s``, then its
        derived groups), exact gains and toggles."""
        span = self.span[s]
        delta = np.zeros((len(gain), len(self.n)))
        delta[:, span] = span_delta
        if self.span_linear[s]:
            quad = np.zeros((len(self.cons), len(gain)))
        else:
            quad = 0.5 * np.einsum("rab,ca,cb->rc", self.span_cm[s], span_delta, span_delta) \
                + self.Sq[:, span] @ (span_delta ** 2).T
        return Moves(gain, delta, quad, np.full(len(gain), s), steps)

    def _blocks(self, s: int, keep: bool, new: int | None = None) -> Moves:
        """Moves of free group ``s`` to count ``new`` (by default its next allowed count):
        per cascade pattern with enough channels, its weakest (drop) or strongest (fill)
        block; the best block over all patterns when no single pattern has enough channels."""
        if new is None:
            new = self.step_up(s) if keep else self.step_down(s)
        if new is None:
            return self._table(s, np.zeros((0, len(self.span[s]))), np.zeros(0), lambda i: [])
        k = abs(new - int(self.n[s]))
        chans, value, hit = self._at_stake(s, keep)
        pos = self._picks(-value if keep else value, hit, k)
        idx, hits = chans[pos], hit[:, pos].transpose(1, 0, 2)  # (P, k), (P, d, k)
        sign = 1.0 if keep else -1.0
        span_delta = sign * np.concatenate([np.full((len(pos), 1), k), hits.sum(axis=2)], axis=1)

        def steps(i: int) -> list[Step]:
            return self._steps(s, idx[i], hits[i], keep)

        if k == 1 and not self.inner[s]:  # the importance at stake is the exact change
            gain = sign * value[pos[:, 0]]
        else:
            gain = np.array([self.exact_gain(self._changes(steps(i))) for i in range(len(pos))])
        return self._table(s, span_delta, gain, steps)

    @staticmethod
    def _picks(key: np.ndarray, hit: np.ndarray, k: int) -> np.ndarray:
        """``(P, k)`` positions: per cascade pattern (column of ``hit``) with at least ``k``
        channels its ``k`` of smallest ``key``, the first on ties; the ``k`` of smallest key
        over all patterns when none has that many."""
        if len(hit) == 0:  # one pattern
            if k == 1:
                return np.array([[np.argmin(key)]]) if len(key) else np.zeros((0, 1), dtype=np.int64)
            return np.argsort(key, kind="stable")[None, :k]
        label, count = _labels(hit)
        if k == 1:
            return _first_min(key, label, count)[:, None]
        order = np.lexsort((key, label))  # by pattern, the best channel first
        starts = (np.cumsum(count) - count)[count >= k]
        return order[starts[:, None] + np.arange(k)] if len(starts) else np.argsort(key, kind="stable")[None, :k]

    def _swaps(self, s: int, admit: Callable[[np.ndarray, np.ndarray], bool]) -> Moves:
        """Swaps in free group ``s`` (its count stays): per pair of a kept channel's pattern
        ``K`` (derived groups its removal kills) and a removed channel's pattern ``R`` (those
        its addition revives) with ``admit(K, R)``, the weakest kept channel for the strongest
        removed one."""
        best = []
        for keep in (False, True):
            chans, value, hit = self._at_stake(s, keep)
            label, count = _labels(hit)
            first = np.lexsort((-value if keep else value, label))[np.cumsum(count) - count]
            best.append([(chans[c:c + 1], hit[:, c:c + 1]) for c in first])
        pairs = [(a, ha, b, hb) for a, ha in best[0] for b, hb in best[1] if admit(ha[:, 0], hb[:, 0])]
        swaps = [self._steps(s, a, ha, False) + self._steps(s, b, hb, True) for a, ha, b, hb in pairs]
        span_delta = np.array([[0.0, *(hb[:, 0].astype(float) - ha[:, 0])] for _, ha, _, hb in pairs])
        gain = np.array([self.exact_gain(self._changes(st)) for st in swaps])
        return self._table(s, span_delta.reshape(len(pairs), len(self.span[s])), gain, lambda i: swaps[i])

    def moves(self, keep: bool) -> Moves:
        """Every free group's drop (fill when ``keep``) blocks, cached per group until a move
        affects the group. The joined table is kept too: the rows of the groups rebuilt since
        are rewritten in place when they have as many moves as before, else it is joined anew."""
        cache = self._up if keep else self._down
        rebuilt = [i for i, s in enumerate(self.free) if s not in cache]
        for i in rebuilt:
            cache[self.free[i]] = self._blocks(self.free[i], keep)
        if keep in self._joined:
            moves, tables, offsets = self._joined[keep]
            if all(len(cache[self.free[i]]) == offsets[i + 1] - offsets[i] for i in rebuilt):
                for i in rebuilt:
                    tables[i] = table = cache[self.free[i]]
                    rows = slice(offsets[i], offsets[i + 1])
                    moves.gain[rows], moves.delta[rows], moves.quad[:, rows] = table.gain, table.delta, table.quad
                return moves
        tables = [cache[s] for s in self.free]
        self._joined[keep] = (_join(tables), tables, _offsets(tables))
        return self._joined[keep][0]

    def aligning_swaps(self) -> Moves:
        """Swaps that align a free group with the other sources of a derived group (the
        removed channel kills strictly more derived channels than the added one revives):
        they lower counts without dropping a channel of the group, drop's first way out
        when no block saves cost (e.g. sources at their smallest counts keeping different
        channels)."""
        return _join([self._swaps(s, lambda K, R: bool(np.all(R <= K) and np.any(K > R))) for s in self.free])

    def cost_change(self, moves: Moves) -> np.ndarray:
        """``(R, C)``: exact change of cost ``r`` if move ``c`` alone were applied,
        ``delta . (Cm n + 2 Sq n + Li) + delta^T Cm delta / 2 + Sq . delta^2``."""
        n = self.n.astype(np.float64)
        grad = np.einsum("rgh,h->rg", self.Cm, n) + 2.0 * self.Sq * n + self.Li
        return grad @ moves.delta.T + moves.quad

    def apply(self, steps: list[Step]) -> None:
        """Toggle a move's channels (one step after the other, which is exact), update the
        covers and forget the candidates the move changed: those of free groups whose own
        contributions changed (``toggle``), of sources whose cascade pattern changed at a
        channel whose cover moved, and of sources whose candidates involve a derived group's
        contribution that changed."""
        covers, changed = [], set()
        for g, idx, keep in steps:
            self.toggle(g, idx, keep)
            changed.update(self.derived_partners[g])
            for v in self.dep.get(g, ()):
                self.cover[v][idx] += 1 if keep else -1
                covers.append((v, idx, keep))
        for v, idx, keep in covers:
            self._forget_patterns(v, idx, keep)
        for v in changed:
            self._forget_reliant(v)

    def _forget_patterns(self, v: int, idx: np.ndarray, keep: bool) -> None:
        """Forget the candidates of derived group ``v``'s sources whose cascade pattern changed
        at channels ``idx``, whose cover just rose (``keep``) or fell by one: a source keeping
        a channel becomes or stops being its only cover (drop), one not keeping it sees the
        channel revived or killed (fill)."""
        c = self.cover[v][idx]
        if c.min() > (2 if keep else 1):
            return
        for t in self.source_list[v]:
            kept = self.masks[t][idx]
            if np.any(kept & (c == (2 if keep else 1))):
                self._down.pop(t, None)
            if np.any(~kept & (c == (1 if keep else 0))):
                self._up.pop(t, None)

    def _forget_reliant(self, v: int) -> None:
        """Forget the candidates that involve derived group ``v``'s contribution (it changed):
        drops of a source that alone covers a channel of ``v``, fills of every source when a
        channel of ``v`` is dead."""
        sole = self.cover[v] == 1
        if sole.any():
            for t in self.source_list[v]:
                if np.any(self.masks[t] & sole):
                    self._down.pop(t, None)
        if np.any(self.cover[v] == 0):
            for t in self.source_list[v]:
                self._up.pop(t, None)

    def nest(self) -> bool:
        """Re-choose every stream's source masks as the top channels of one ranking (by the
        importance at stake over the stream's groups), counts unchanged: then each derived
        count is the largest of its sources', the least possible. Drop's way out when single
        moves cannot lower a derived count (e.g. two sources keep different channels at their
        smallest counts). Returns whether any count fell."""
        masks = [m.copy() for m in self.masks]
        for src, der in self.streams:
            rank = np.argsort(-sum(self.contrib[g] for g in src + der), kind="stable")
            for s in src:
                masks[s][:] = False
                masks[s][rank[:self.n[s]]] = True
        before = self.n.copy()
        self.rebuild(masks)
        return bool(np.any(self.n < before))

    def _enabling_drop(self, weight: np.ndarray) -> bool:
        """Apply the cheapest drop block of a source of a derived group whose count costs
        (under the resource ``weight``), though it saves nothing yet: the first of the drops
        that kill a stream channel in every source. Drop's last way out; returns whether one
        was applied."""
        n = self.n.astype(np.float64)
        marginal = weight @ (np.einsum("rgh,h->rg", self.Cm, n) + 2.0 * self.Sq * n + self.Li)
        moves = self.moves(keep=False)
        ok = np.array([any(marginal[v] > 0 for v in self.dep[s]) for s in moves.owner], dtype=bool)
        if not ok.any():
            return False
        self.apply(moves.steps(int(np.argmax(np.where(ok, moves.gain, -np.inf)))))
        return True

    def rebuild(self, masks: list[np.ndarray]) -> None:
        """Recompute the whole state for ``masks`` (derived masks follow from the free ones)."""
        self.masks = self.p.complete(masks)
        self.n = self.p.counts(self.masks)
        self.cost = np.array([c.cost.evaluate(self.n) for c in self.cons], dtype=np.float64)
        self.contrib = {g: self._contrib(g) for g in self.p.prunable}
        self.cover = {v: sum(self.masks[s].astype(np.int64) for s in self.p.sources(v)) for v in self.cover}
        self.obj = self.red.objective(self.masks)
        self._down.clear()
        self._up.clear()
        self._joined.clear()

    # ------------------------------------------------------------------ phases
    def drop(self, deadline: float = np.inf) -> None:
        """Apply the cheapest drop block until every budget holds, taking drop's ways out
        when none saves cost; past ``deadline``, coarse rounds (:meth:`hurry`)."""
        scale = np.maximum(self.budget, 1e-300)
        while not self.feasible():
            if time.perf_counter() > deadline:
                self.hurry()
                return
            over = np.maximum(self.cost - self.budget, 0.0) / scale
            moves = self.moves(keep=False)
            scores = self._drop_scores(moves, over, scale)
            if np.isfinite(scores).any():
                self.apply(moves.steps(int(np.argmin(scores))))
            else:
                self._way_out(over, scale)

    def hurry(self, frac: float = 1 / 32) -> None:
        """Drop in coarse rounds until every budget holds (the deadline has passed): per round,
        every free group's blocks of about ``frac`` of its kept channels, applied best first,
        one per group and derived group (so each cascade stays exact), while over budget;
        ``frac`` doubles each round up to a half, so few rounds remain."""
        scale = np.maximum(self.budget, 1e-300)
        while not self.feasible():
            over = np.maximum(self.cost - self.budget, 0.0) / scale
            moves = _join([self._blocks(s, False, self.coarse_down(s, frac)) for s in self.free])
            scores = self._drop_scores(moves, over, scale)
            if not np.isfinite(scores).any():
                self._way_out(over, scale)
                continue
            moved: set[int] = set()
            for i in np.argsort(scores, kind="stable")[:np.isfinite(scores).sum()]:
                span = {int(moves.owner[i]), *self.dep[int(moves.owner[i])]}
                if not span & moved:
                    self.apply(moves.steps(int(i)))
                    moved |= span
                    if self.feasible():
                        return
            frac = min(2 * frac, 0.5)

    def _way_out(self, over: np.ndarray, scale: np.ndarray) -> None:
        """When no drop block saves cost: the best aligning swap, else re-nesting the streams,
        else an enabling drop; raises when none is left."""
        swaps = self.aligning_swaps()
        scores = self._drop_scores(swaps, over, scale)
        if np.isfinite(scores).any():
            self.apply(swaps.steps(int(np.argmin(scores))))
        elif not (self.nest() or self._enabling_drop(over / scale)):
            raise RuntimeError("greedy: no channel left to remove but a budget still fails")

    def _drop_scores(self, moves: Moves, over: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Per move the importance lost per weighted cost saved; inf when it saves nothing."""
        if not len(moves):
            return np.zeros(0)
        weighted = (over[:, None] * -self.cost_change(moves) / scale[:, None]).sum(axis=0)
        ok = weighted > 0
        return np.where(ok, -moves.gain / np.where(ok, weighted, 1.0), np.inf)

    def fill(self, deadline: float = np.inf) -> None:
        scale = np.maximum(self.budget, 1e-300)
        limit = self.budget * (1 + 1e-12) + 1e-9
        while time.perf_counter() < deadline:
            moves = self.moves(keep=True)
            if not len(moves):
                return
            extra = self.cost_change(moves)
            ok = np.all(self.cost[:, None] + extra <= limit[:, None], axis=0) & (moves.gain > 0)
            if not ok.any():
                return
            used = (extra / scale[:, None]).sum(axis=0)
            score = np.where(used > 0, moves.gain / np.where(used > 0, used, 1.0), np.inf)
            self.apply(moves.steps(int(np.argmax(np.where(ok, score, -np.inf)))))

    def swap_within(self, deadline: float = np.inf, max_rounds: int = 10000) -> None:
        """Per free group, apply the best cost-neutral swap (equal patterns: every count
        stays) while one raises the objective (and ``deadline`` has not passed)."""
        for s in self.free:
            for _ in range(max_rounds):
                if time.perf_counter() > deadline:
                    return
                swaps = self._swaps(s, np.array_equal)
                if not len(swaps):
                    break
                i = int(np.argmax(swaps.gain))
                if swaps.gain[i] <= 1e-12 * max(1.0, abs(self.obj)):
                    break
                self.apply(swaps.steps(i))

    def snapshot(self):
        """The state, covers and cached candidates (valid again once the state is restored)."""
        return super().snapshot(), {v: c.copy() for v, c in self.cover.items()}, dict(self._down), dict(self._up)

    def restore(self, snap) -> None:
        base, cover, down, up = snap
        super().restore(base)
        self.cover, self._down, self._up = cover, down, up
        self._joined.clear()

    def swap_across(self, deadline: float, max_passes: int = 3) -> None:
        """Per free group, try its drop blocks one by one followed by a fill; keep the first
        that raises the objective."""
        best_obj = self.obj
        for _ in range(max_passes):
            improved = False
            for s in self.free:
                blocks = self._blocks(s, keep=False)
                for i in range(len(blocks)):
                    if time.perf_counter() > deadline:
                        return
                    snap = self.snapshot()
                    self.apply(blocks.steps(i))
                    self.fill(deadline)
                    if self.obj > best_obj * (1 + 1e-12) + 1e-15:
                        best_obj, improved = self.obj, True
                        break
                    self.restore(snap)
            if not improved:
                return


def greedy_state(problem: ChannelProblem, time_limit: float = 10.0, red: Reduced | None = None) -> GreedyState:
    """Run drop / fill / swap and return the final state (masks, counts, costs, objective);
    union-aware when the problem has derived groups left to decide."""
    deadline = time.perf_counter() + max(time_limit, 0.0)
    unions = any(not problem.frozen[v] for v in problem.union_order)
    st = UnionGreedyState(problem, red) if unions else GreedyState(problem, red)
    st.drop(deadline)
    st.fill(deadline)
    st.swap_within(deadline)
    st.swap_across(deadline)
    st.swap_within(deadline)
    return st


def greedy_masks(problem: ChannelProblem, time_limit: float = 10.0, red: Reduced | None = None) -> list[np.ndarray]:
    """Greedy drop / fill / swap; returns masks that meet every budget (complete: derived
    groups are the OR of their inputs).

    With unions the greedy on the shared-coupling problem runs first (it is several times
    faster, and any shared plan is a union plan), then the union greedy in the time left; the
    better plan is returned, so a union greedy cut short by its deadline, or beaten by its own
    cascade moves, never returns less than the shared greedy."""
    if not any(not problem.frozen[v] for v in problem.derived):
        return greedy_state(problem, time_limit, red).masks
    from .coupling import expand_shared, shared_coupling
    start = time.perf_counter()
    shared, new = shared_coupling(problem)
    try:
        best = problem.complete(expand_shared(greedy_state(shared, time_limit).masks, new))
    except (RuntimeError, ValueError):  # shared coupling cannot meet the budgets at all
        best = None
    masks = greedy_state(problem, max(0.0, time_limit - (time.perf_counter() - start)), red).masks
    if best is not None and problem.feasible(best) and problem.objective(best) > problem.objective(masks):
        return best
    return masks
