"""Certified upper bounds from kept *counts*: the count bound and its Lagrangian decomposition.

Count bound. For a term ``x_g^T W x_h`` and counts ``(m, k)``, no ``m x k`` submatrix of
``W >= 0`` holds more than ``min(R[m, k], C[m, k])``, where ``R[m, k]`` sums the ``m``
largest row-wise top-``k`` sums and ``C`` is the column analogue; a linear term keeps at most
its top-``m`` prefix sum. Near full counts the dropped rows and columns bound it more
tightly (``_Term._dropped``: the total, less the smallest row and column sums, plus what the
dropped block can hold), and well inside the layer the centred matrix does
(``_Term._centred_bound``: row and column effects exactly, the rest through its spectral
norm). Every term becomes a table over counts, the budgets are costs over counts, and
"maximize the sum of tables under the budgets" is a problem over one integer per group. Its
budgets are relaxed with multipliers ``lam >= 0`` (any ``lam`` gives a valid bound;
we search for the smallest), and each relaxed problem is an exact max-sum over the group graph
(``elimination.py``). Large groups are bucketed: a bucket's table entry is the largest value
over its counts and its cost the smallest, so bucketing only loosens the bound; buckets are
single counts near a reference plan's counts (the greedy plan's) and widen away from it.

Lagrangian decomposition. Each term gets its own copy of its groups' masks; the copies are
tied to the groups' masks by per-channel multipliers ``mu`` that shift importance between a
term's copy and the group's own linear term. For every ``mu`` the count bound of the shifted
problem is a valid bound on the original; subgradient steps on ``mu`` (Polyak steps towards
the best known plan, halved and restarted from the best multipliers when the bound stalls)
lower it. The reported bound is the smallest one seen.

Branch and bound over counts. At the greedy plan's counts alone the decomposition is nearly
tight; what keeps the bound up is that one set of multipliers must serve every count
combination at once, and that relaxing the budgets lets the relaxed optimum mix a combination
over a budget with one under it. Both go away when the counts are split into boxes, each with
its own multipliers (``branch_and_bound``). Everything below ``lower``, the objective of a
known plan, is dropped on the way: counts whose max-marginal is below it (``prune_counts``)
and boxes whose bound is; so ``lower`` must never exceed the optimum.

Unions. A derived group (the OR of its inputs, ``problem.unions``) is one more count
variable, so terms and costs on it need nothing new; leaving the OR rule out would only
loosen the bound. Two things put it back without losing validity. Its count relation
``max_i N_i <= N_v <= min(size, sum_i N_i)`` is a hard table over the buckets of ``v`` and
its inputs (a bucket combination is allowed when some counts in it satisfy the relation; with
pairwise tables ``N_v >= N_i`` only when the joint table would make the elimination too
large). And the channel-wise rule is dualized in the decomposition: multipliers
``nu_i >= 0`` on ``v - u_i >= 0`` and ``rho >= 0`` on ``sum_i u_i - v >= 0`` add
``nu . (v - u_i) + rho . (sum_i u_i - v)``, which is ``>= 0`` at every feasible plan, to the
groups' own linear terms; projected subgradient steps move them with ``mu``.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .elimination import Factor, elimination_order, max_marginals, max_sum
from .linearize import union_rows
from .problem import ChannelProblem
from .reduced import Reduced

NEAR = 12          # single-count buckets on each side of the reference count
MAX_TABLE = 4_000_000  # largest intermediate table of the elimination (entries)
MAX_LABELS = 400      # buckets per group after refinement (MAX_TABLE also caps it)
SPREAD_WORK = 20_000_000  # weights x single-count buckets sorted per term and iteration
ROOT_SHARE = 0.2     # of the bound's time for the root decomposition; the rest: branch and bound
NODE_ITERATIONS = 5  # subgradient steps per branch-and-bound node (from its parent's multipliers)
NODE_THETA = 0.1     # Polyak step factor in the nodes


@dataclass
class Buckets:
    """The allowed counts of one group, split into consecutive buckets."""

    allowed: np.ndarray  # ascending
    starts: np.ndarray   # index into ``allowed`` where each bucket starts

    @property
    def lo(self) -> np.ndarray:
        return self.allowed[self.starts]

    @property
    def hi(self) -> np.ndarray:
        return self.allowed[np.append(self.starts[1:], len(self.allowed)) - 1]

    def __len__(self) -> int:
        return len(self.starts)

    def restricted(self, keep: np.ndarray) -> "Buckets":
        """The buckets over the counts ``allowed[keep]`` (empty buckets dropped, the rest kept)."""
        left = np.add.reduceat(keep.astype(np.int64), self.starts)
        starts = np.concatenate([[0], np.cumsum(left)[:-1]])[left > 0]
        return Buckets(self.allowed[keep], starts.astype(np.int64))

    def best(self, prefix: np.ndarray) -> np.ndarray:
        """Per bucket, the largest ``prefix[n]`` over its counts ``n``."""
        return np.maximum.reduceat(prefix[self.allowed], self.starts)

    def best_columns(self, prefix: np.ndarray) -> np.ndarray:
        """``best`` of every column of ``prefix`` (rows indexed by count): (buckets, columns)."""
        return np.maximum.reduceat(prefix[self.allowed], self.starts, axis=0)

    def argbest(self, prefix: np.ndarray, b: int) -> int:
        """The count of bucket ``b`` where ``prefix`` is largest."""
        end = self.starts[b + 1] if b + 1 < len(self.starts) else len(self.allowed)
        counts = self.allowed[self.starts[b]:end]
        return int(counts[np.argmax(prefix[counts])])


def pair_table(W: np.ndarray, square: bool = False, rows: np.ndarray | None = None,
               cols: np.ndarray | None = None) -> np.ndarray:
    """``T[i, j]``: most importance any ``rows[i] x cols[j]`` submatrix of ``W`` holds
    (default: every count, ``T[m, k]``; counts ascending). For ``square`` (symmetric W, zero
    diagonal: ``x^T W x``), ``T[i]`` for ``rows[i]`` kept. The count bound's table of one term
    without multipliers."""
    def single(counts: np.ndarray) -> Buckets:
        return Buckets(counts, np.arange(len(counts)))

    rows = np.arange(W.shape[0] + 1) if rows is None else np.asarray(rows, dtype=np.int64)
    if square:
        return _Term(0, 0, W).table(single(rows), single(rows))
    cols = np.arange(W.shape[1] + 1) if cols is None else np.asarray(cols, dtype=np.int64)
    return _Term(0, 1, W).table(single(rows), single(cols))


def make_buckets(allowed: list[int], center: int | None, near: int = NEAR) -> Buckets:
    """Single counts within ``near`` positions of ``center``, then buckets that double in
    width away from it (about ``2 * near + 2 * log2(len(allowed))`` buckets in all)."""
    a = np.asarray(allowed, dtype=np.int64)
    if len(a) <= 2 * near + 8 and near > 0:
        return Buckets(a, np.arange(len(a)))
    c = int(np.clip(np.searchsorted(a, center if center is not None else a[len(a) // 2]), 0, len(a) - 1))
    starts = set(range(max(0, c - near), min(len(a), c + near + 1)))
    width, pos = 2, max(0, c - near)
    while pos > 0:
        pos = max(0, pos - width)
        starts.add(pos)
        width *= 2
    width, pos = 2, min(len(a), c + near + 1)
    while pos < len(a):
        starts.add(pos)
        pos += width
        width *= 2
    starts.add(0)
    return Buckets(a, np.array(sorted(starts), dtype=np.int64))


def _top_prefix(v: np.ndarray) -> np.ndarray:
    """``p[n]`` = sum of the ``n`` largest entries of ``v`` (``p[0] = 0``)."""
    return np.concatenate([[0.0], np.cumsum(-np.sort(-v))])


def _top_sums(M: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``M``, the sum of its ``k >= 1`` largest entries (a partition, not a sort)."""
    if k >= M.shape[1]:
        return M.sum(axis=1)
    return np.partition(M, M.shape[1] - k, axis=1)[:, M.shape[1] - k:].sum(axis=1)


def _prefix_columns(M: np.ndarray, largest: bool) -> np.ndarray:
    """Per column of ``M``, the sums of its ``n`` largest (or smallest) entries, ``n = 0..rows``."""
    s = np.sort(M, axis=0)
    if largest:
        s = s[::-1]
    return np.vstack([np.zeros((1, M.shape[1])), np.cumsum(s, axis=0)])


def _tolerant(budget):
    """The most a plan may cost under ``budget`` (``ChannelProblem.feasible``'s rounding)."""
    return budget * (1 + 1e-12) + 1e-9


def _bottom_prefix(v: np.ndarray) -> np.ndarray:
    """``p[n]`` = sum of the ``n`` smallest entries of ``v`` (``p[0] = 0``)."""
    return -_top_prefix(-v)


def _centred(W: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, float]:
    """``W = mean + r_i + c_j + E_ij`` with centred row and column effects ``r``, ``c``:
    ``(mean, r, c, ||E||_2)``, the spectral norm from the Gram matrix's largest eigenvalue,
    raised by its rounding error so that it never falls below the true norm."""
    mean = float(W.mean())
    r, c = W.mean(axis=1) - mean, W.mean(axis=0) - mean
    E = W - mean - r[:, None] - c[None, :]
    gram = E.T @ E if E.shape[0] >= E.shape[1] else E @ E.T
    top = float(np.linalg.eigvalsh(gram)[-1]) if gram.size else 0.0
    frob = float(np.trace(gram))
    return mean, r, c, math.sqrt(max(top, 0.0) + 1e-12 * frob * max(gram.shape)) * (1 + 1e-12)


def _padded(value: float) -> float:
    """``value`` raised by its floating-point summation error (also when negative; -inf, a
    box without allowed combinations, stays -inf)."""
    return value + 2e-12 * abs(value) if math.isfinite(value) else value


@dataclass
class _Term:
    """One objective term with its own copy of its groups' masks."""

    g: int
    h: int  # == g for a square term x^T W x
    W: np.ndarray
    row_top: np.ndarray = field(init=False)  # row_top[i, k]: top-k sum of row i (k = 0..cols)
    col_top: np.ndarray | None = field(init=False, default=None)
    mu_g: np.ndarray = field(init=False)  # multipliers on the copy of g's mask
    mu_h: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        z = np.zeros((self.W.shape[0], 1))
        self.row_top = np.hstack([z, np.cumsum(-np.sort(-self.W, axis=1), axis=1)])
        if self.g != self.h:
            z = np.zeros((self.W.shape[1], 1))
            self.col_top = np.hstack([z, np.cumsum(-np.sort(-self.W.T, axis=1), axis=1)])
            self.row_sum, self.col_sum, self.total = self.W.sum(axis=1), self.W.sum(axis=0), float(self.W.sum())
            self.mean, self.row_effect, self.col_effect, self.residual_norm = _centred(self.W)
        self._last: tuple | None = None  # the latest table's parts, for ``choice``
        self.mu_g = np.zeros(self.W.shape[0])
        self.mu_h = np.zeros(self.W.shape[1])

    def table(self, bg: Buckets, bh: Buckets) -> np.ndarray:
        """Upper bound on ``y_g^T W y_h + mu_g . y_g + mu_h . y_h`` per pair of buckets
        (per bucket of ``g`` for a square term).

        With ``|y_h| = k`` the row multipliers can be spread over the kept columns:
        ``sum_{S,T} W + mu_g(S) = sum_{j in T} sum_{i in S} (W_ij + mu_g_i / k)``, so the
        column-wise bound takes, per column, the top ``m`` of ``W[:, j] + mu_g / k``; the
        row-wise bound is the mirror image. Both are exact for ``k = 1`` (resp. ``m = 1``).
        Where a bucket holds several counts, multipliers are kept apart instead (looser).

        Near full counts the *dropped* rows and columns give tighter bounds
        (``_dropped``); the table is the smallest of all of them."""
        if self.g == self.h:
            his = np.maximum(bg.hi - 1, 0)
            return np.array([bg.best(_top_prefix(self.row_top[:, k] + self.mu_g))[b] for b, k in enumerate(his)])
        a_best, b_best = bg.best(_top_prefix(self.mu_g)), bh.best(_top_prefix(self.mu_h))
        rows = self._oriented(self.W, self.row_top, self.mu_g, self.mu_h, bg, bh, b_best)
        cols = self._oriented(self.W.T, self.col_top, self.mu_h, self.mu_g, bh, bg, a_best).T
        kept = np.minimum(rows, cols)
        others = self._dropped(bg, bh) + [self._centred_bound(bg, bh)]
        self._last = (bg, bh, kept, others)
        return np.minimum(kept, np.minimum.reduce(others))

    def _dropped(self, bg: Buckets, bh: Buckets) -> list[np.ndarray]:
        """Bounds through the dropped rows ``D`` and columns ``E`` (``d = n - m``, ``e = q - k``):
        ``W[S, T] = sum(W) - sum_{i in D} r_i - sum_{j in E} c_j + W[D, E]`` with row and
        column sums ``r``, ``c`` (multipliers included), so the kept importance is at most the
        total less the ``d`` smallest ``r``, less the ``e`` smallest ``c``, plus the most any
        ``d x e`` block holds (first table). The block can also be charged to its rows, each
        at most its top-``e`` sum: drop the ``d`` smallest ``r_i - top_e(W_i)`` instead
        (second), or to its columns (third). Tight when few channels are dropped, where the
        kept-side bounds are loosest. Per bucket: the largest count's kept sums, the smallest
        count's block (``W >= 0``, so blocks grow with ``d`` and ``e``)."""
        n, q = self.W.shape
        r, c = self.row_sum + self.mu_g, self.col_sum + self.mu_h
        const = self.total + float(self.mu_g.sum()) + float(self.mu_h.sum())
        keep_r = bg.best(-_bottom_prefix(r)[n - np.arange(n + 1)])
        keep_c = bh.best(-_bottom_prefix(c)[q - np.arange(q + 1)])
        d, e = n - bg.lo, q - bh.lo
        block_rows = _prefix_columns(self.row_top[:, e], largest=True)[d, :]          # (buckets g, buckets h)
        block_cols = _prefix_columns(self.col_top[:, d], largest=True)[e, :].T
        block = const + keep_r[:, None] + keep_c[None, :] + np.minimum(block_rows, block_cols)
        # kept importance per count: minus the smallest (n - m) charges, as a column per bucket of h
        by_rows = bg.best_columns(-_prefix_columns(r[:, None] - self.row_top[:, e], largest=False)[n - np.arange(n + 1)])
        by_cols = bh.best_columns(-_prefix_columns(c[:, None] - self.col_top[:, d], largest=False)[q - np.arange(q + 1)])
        by_rows = by_rows + keep_c[None, :] + const
        by_cols = by_cols.T + keep_r[:, None] + const
        return [block, by_rows, by_cols]

    @staticmethod
    def _oriented(W, top, a, b, bg: Buckets, bh: Buckets, b_best: np.ndarray) -> np.ndarray:
        """Row-wise bound ``[bucket of g, bucket of h]``: top ``m`` rows of
        ``a_i + top_k_j (W_ij + b_j / m)`` (single-count buckets of ``g``), else of
        ``a_i + top_k(W_i)`` plus the top ``k`` of ``b``."""
        out = bg.best_columns(_prefix_columns(top[:, bh.hi] + a[:, None], largest=True)) + b_best[None, :]
        if not np.any(b):
            return out
        singles = np.flatnonzero(bg.lo == bg.hi)
        if W.size * len(singles) > SPREAD_WORK:
            return out  # too costly per iteration on large layers: keep the looser bound
        cols = np.flatnonzero(bh.lo == bh.hi)  # single counts of h: exact spreading
        ks = bh.lo[cols]
        for i in singles:
            m = int(bg.lo[i])
            if m == 0 or not len(cols):
                continue
            shifted = np.hstack([np.zeros((W.shape[0], 1)), np.cumsum(-np.sort(-(W + b[None, :] / m), axis=1), axis=1)])
            per_row = shifted[:, ks] + a[:, None]                      # (rows, single ks)
            top_m = -np.sort(-per_row, axis=0)[:m].sum(axis=0)        # best m rows per k
            out[i, cols] = np.minimum(out[i, cols], top_m)
        return out

    def choice(self, bg: Buckets, bh: Buckets, lg: int, lh: int) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the copy near the table's maximizer at buckets ``(lg, lh)``: of the
        dropped-channel or centred bound where that one set the table entry (single counts
        only)."""
        if self.g != self.h and self._last is not None and self._last[0] is bg and self._last[1] is bh:
            kept, others = self._last[2], self._last[3]
            values = [kept[lg, lh]] + [t[lg, lh] for t in others]
            which = int(np.argmin(values))
            if which and bg.lo[lg] == bg.hi[lg] and bh.lo[lh] == bh.hi[lh]:
                if which == len(values) - 1:
                    return self._centred_choice(int(bg.lo[lg]), int(bh.lo[lh]))
                return self._dropped_choice(which, int(bg.lo[lg]), int(bh.lo[lh]))
        if self.g == self.h:
            score = self.row_top[:, max(bg.hi[lg] - 1, 0)] + self.mu_g
            m = bg.argbest(_top_prefix(score), lg)
            y = np.zeros(len(score), bool)
            y[np.argsort(-score, kind="stable")[:m]] = True
            return y, y
        m = bg.argbest(_top_prefix(self.row_top[:, bh.hi[lh]] + self.mu_g), lg)
        k = bh.argbest(_top_prefix(self.col_top[:, bg.hi[lg]] + self.mu_h), lh)
        best, pick = -np.inf, None
        for W, a, b, r, c in ((self.W, self.mu_g, self.mu_h, m, k), (self.W.T, self.mu_h, self.mu_g, k, m)):
            # rows first (spreading the column multipliers), then the best columns for those rows
            score = a + (_top_sums(W + b[None, :] / max(r, 1), c) if c else 0.0)
            rows = np.zeros(len(a), bool)
            rows[np.argsort(-score, kind="stable")[:r]] = True
            colscore = W[rows].sum(axis=0) + b
            cols = np.zeros(len(b), bool)
            cols[np.argsort(-colscore, kind="stable")[:c]] = True
            value = float(W[np.ix_(rows, cols)].sum() + a[rows].sum() + b[cols].sum())
            if value > best:
                best, pick = value, ((rows, cols) if W is self.W else (cols, rows))
        return pick

    def _centred_bound(self, bg: Buckets, bh: Buckets) -> np.ndarray:
        """Bound through the centred matrix: with ``W = mean + r_i + c_j + E_ij`` (row and
        column effects, ``_centred``), ``W[S, T] + mu_g(S) + mu_h(T) = sum_{i in S} (k r_i +
        mu_g_i) + sum_{j in T} (m c_j + mu_h_j) + m k mean + 1_S^T E 1_T``; the first two
        sums are at most their top-``m`` and top-``k`` prefix sums (exact). ``E``'s rows and
        columns sum to zero, so ``1_S^T E 1_T = (1_S - m/n)^T E (1_T - k/q)``, at most
        ``||E||_2 sqrt(m (n - m) / n * k (q - k) / q)`` (zero when a side is kept whole).
        Where both counts sit well inside the layer, this is far tighter than the row- and
        column-wise bounds, which let every row pick its own best columns (ResNet-50 at 30%
        FLOPs: 426 against 557 on a 512 x 256 term at counts (322, 141), whose best
        submatrix found holds 399).

        Per bucket pair: the row part is convex in ``k`` (a top-``m`` sum of a vector affine
        in ``k``), so its largest value over the bucket of ``k`` is at one of its ends, and
        likewise the column part in ``m``; ``m k mean`` grows with both counts and
        ``m (n - m)`` is largest at the count nearest ``n / 2``."""
        def part(effect, mu, b: Buckets, other: Buckets) -> np.ndarray:
            ends = np.union1d(other.lo, other.hi)
            best = b.best_columns(_prefix_columns(effect[:, None] * ends[None, :] + mu[:, None], largest=True))
            lo, hi = np.searchsorted(ends, other.lo), np.searchsorted(ends, other.hi)
            return np.maximum(best[:, lo], best[:, hi])  # (buckets of b, buckets of other)

        def spread(b: Buckets, size: int) -> np.ndarray:  # largest m (size - m) / size over a bucket
            m = np.clip(size / 2.0, b.lo, b.hi)
            return m * (size - m) / size

        rows = part(self.row_effect, self.mu_g, bg, bh)
        cols = part(self.col_effect, self.mu_h, bh, bg).T
        mk = np.outer(bg.hi, bh.hi).astype(np.float64)
        residual = self.residual_norm * np.sqrt(np.outer(spread(bg, self.W.shape[0]), spread(bh, self.W.shape[1])))
        return rows + cols + mk * self.mean + residual

    def _centred_choice(self, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows and columns ``_centred_bound``'s separable part keeps at ``(m, k)``."""
        rows, cols = np.zeros(self.W.shape[0], bool), np.zeros(self.W.shape[1], bool)
        rows[np.argsort(-(k * self.row_effect + self.mu_g), kind="stable")[:m]] = True
        cols[np.argsort(-(m * self.col_effect + self.mu_h), kind="stable")[:k]] = True
        return rows, cols

    def _dropped_choice(self, which: int, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows and columns ``_dropped``'s bound number ``which`` (1-3) keeps at ``(m, k)``."""
        (n, q), d, e = self.W.shape, self.W.shape[0] - m, self.W.shape[1] - k
        r, c = self.row_sum + self.mu_g, self.col_sum + self.mu_h
        if which == 2:
            r = r - self.row_top[:, e]
        elif which == 3:
            c = c - self.col_top[:, d]
        rows, cols = np.ones(n, bool), np.ones(q, bool)
        rows[np.argsort(r, kind="stable")[:d]] = False
        cols[np.argsort(c, kind="stable")[:e]] = False
        return rows, cols


class CountBound:
    """The count bound of a problem, and its Lagrangian decomposition (see the module doc)."""

    def __init__(self, problem: ChannelProblem, red: Reduced, reference: np.ndarray | None = None,
                 near: int = NEAR) -> None:
        self.problem, self.red = problem, red
        self.vars = list(red.prunable)
        self.reference, self.near = reference, near
        self.buckets = {g: make_buckets(problem.allowed_counts(g), None if reference is None else int(reference[g]),
                                        near) for g in self.vars}
        self.terms = [_Term(p.g, p.h, np.asarray(p.W, dtype=np.float64)) for p in red.pairs]
        self.linear = {g: np.asarray(w, dtype=np.float64) for g, w in red.linear.items()}
        edges = {(min(t.g, t.h), max(t.g, t.h)) for t in self.terms if t.g != t.h}
        for c in problem.constraints:  # cost terms between two prunable groups
            edges |= {(g, h) for g, h in c.cost.bilinear if g != h and not (problem.frozen[g] or problem.frozen[h])}
        self.unions = union_rows(problem)
        self.nu = {(v, u): np.zeros(problem.sizes[v]) for v, inputs in self.unions for u in inputs}
        self.rho = {v: np.zeros(problem.sizes[v]) for v, _ in self.unions}
        self.joint = True  # one table per union over the derived group and all its inputs
        self._evaluation = 0.0  # seconds of the latest evaluation (tables, budget multipliers): what one more costs
        self.base_edges = edges
        self._rebuild()
        if self.unions and not self.tractable:  # pairwise count relations keep the graph sparser
            self.joint = False
            self._rebuild()

    def _rebuild(self) -> None:
        self.edges = self.base_edges | self._union_edges()
        self.costs = [self._cost_factors(r) for r in range(len(self.problem.constraints))]
        self.union_factors = [f for v, inputs in self.unions for f in self._union_factors(v, inputs)]
        self.sizes = {g: len(self.buckets[g]) for g in self.vars}
        self.order, self.largest = elimination_order(self.vars, self.edges, self.sizes)

    def _union_edges(self) -> set[tuple[int, int]]:
        """Edges of the union tables: a clique over each union (joint), else derived-input."""
        edges = set()
        for v, inputs in self.unions:
            scope = (v, *inputs)
            pairs = ([(a, b) for i, a in enumerate(scope) for b in scope[i + 1:]] if self.joint
                     else [(v, u) for u in inputs])
            edges |= {(min(a, b), max(a, b)) for a, b in pairs}
        return edges

    def _union_factors(self, v: int, inputs: tuple[int, ...]) -> list[Factor]:
        """Hard tables (0 allowed, -inf not) of ``max_i N_i <= N_v <= min(size, sum_i N_i)``
        over bucket intervals: a combination is allowed when some counts in the intervals
        satisfy it (a superset of the true combinations, so the bound stays valid).

        The smallest candidate ``n = max(lo_v, lo_i)`` decides: with ``N_i = min(hi_i, n)``,
        ``sum_i min(hi_i, n) - n`` is concave and ``>= 0`` at 0, so it is ``>= 0`` on an
        interval starting at 0 and ``n`` is feasible when any larger count is."""
        if not self.joint:
            out = []
            for u in inputs:
                ok = self.buckets[v].hi[:, None] >= self.buckets[u].lo[None, :]
                out.append(Factor((v, u), np.where(ok, 0.0, -np.inf)))
            return out
        k = len(inputs) + 1

        def axis(i: int, values: np.ndarray) -> np.ndarray:
            shape = [1] * k
            shape[i] = len(values)
            return values.reshape(shape)

        lo = [axis(i, self.buckets[g].lo) for i, g in enumerate((v, *inputs))]
        hi = [axis(i, self.buckets[g].hi) for i, g in enumerate((v, *inputs))]
        n = lo[0]
        for b in lo[1:]:
            n = np.maximum(n, b)
        ok = (n <= hi[0]) & (sum(np.minimum(h, n) for h in hi[1:]) >= n)
        return [Factor((v, *inputs), np.where(ok, 0.0, -np.inf))]

    @property
    def tractable(self) -> bool:
        return self.largest <= MAX_TABLE

    def refine(self, labels: dict[int, int], parts: int = 8) -> bool:
        """Split every chosen bucket that holds several counts into up to ``parts`` buckets
        (wide buckets are where the bound is loosest: importance at the largest count, cost at
        the smallest); False when nothing was split or the elimination would grow too large."""
        old = dict(self.buckets)
        changed = False
        for g in self.vars:
            b, lab = self.buckets[g], labels[g]
            if b.lo[lab] == b.hi[lab] or len(b) >= MAX_LABELS:
                continue
            start = int(b.starts[lab])
            end = int(b.starts[lab + 1]) if lab + 1 < len(b) else len(b.allowed)
            cuts = np.unique(np.linspace(start, end, parts + 1).astype(np.int64)[:-1])
            self.buckets[g] = Buckets(b.allowed, np.union1d(b.starts, cuts))
            changed = True
        if not changed:
            return False
        self._rebuild()
        if not self.tractable:
            self.buckets = old
            self._rebuild()
            return False
        return True

    def _cost_factors(self, r: int):
        """Cost ``r`` over buckets, at each bucket's smallest counts: per-group and per-pair
        tables and a constant."""
        c = self.problem.constraints[r]
        frozen, sizes = self.problem.frozen, self.problem.sizes
        node: dict[int, np.ndarray] = {}
        pair: dict[tuple[int, int], np.ndarray] = {}
        const = float(c.cost.constant)

        def add_node(g: int, v: np.ndarray) -> None:
            node[g] = node.get(g, 0.0) + v

        for (g, h), coef in c.cost.bilinear.items():
            if frozen[g] and frozen[h]:
                const += coef * sizes[g] * sizes[h]
            elif frozen[g] or frozen[h]:
                f, p = (g, h) if frozen[g] else (h, g)
                add_node(p, coef * sizes[f] * self.buckets[p].lo.astype(np.float64))
            elif g == h:
                add_node(g, coef * self.buckets[g].lo.astype(np.float64) ** 2)
            else:
                a, b = min(g, h), max(g, h)
                t = coef * np.outer(self.buckets[a].lo, self.buckets[b].lo).astype(np.float64)
                pair[(a, b)] = pair.get((a, b), 0.0) + t
        for g, coef in c.cost.linear.items():
            if frozen[g]:
                const += coef * sizes[g]
            else:
                add_node(g, coef * self.buckets[g].lo.astype(np.float64))
        return node, pair, const

    def _objective_factors(self) -> list[Factor]:
        shift = {g: np.zeros(self.problem.sizes[g]) for g in self.vars}
        factors = []
        for t in self.terms:
            shift[t.g] -= t.mu_g
            if t.g != t.h:
                shift[t.h] -= t.mu_h
                a, b = (t.g, t.h) if t.g < t.h else (t.h, t.g)
                tab = t.table(self.buckets[t.g], self.buckets[t.h])
                factors.append(Factor((a, b), tab if t.g < t.h else tab.T))
            else:
                factors.append(Factor((t.g,), t.table(self.buckets[t.g], self.buckets[t.g])))
        for v, inputs in self.unions:  # nu . (v - u_i) + rho . (sum_i u_i - v) >= 0 when feasible
            shift[v] -= self.rho[v]
            for u in inputs:
                shift[v] += self.nu[(v, u)]
                shift[u] += self.rho[v] - self.nu[(v, u)]
        self._node_scores = {}
        for g in self.vars:
            score = self.linear.get(g, 0.0) + shift[g]
            self._node_scores[g] = score
            factors.append(Factor((g,), self.buckets[g].best(_top_prefix(score))))
        return factors + self.union_factors

    def _relaxed(self, objective: list[Factor], lam: np.ndarray, marginals: bool = False):
        """Value of the budget-relaxed count problem at ``lam``, its labels, and each budget's
        slack at those labels (cost at bucket minima); with ``marginals``, also per group the
        value with its count in each bucket (a bound on the plans with counts there)."""
        factors = list(objective)
        for r, (node, pair, _) in enumerate(self.costs):
            if lam[r] > 0:
                factors += [Factor((g,), -lam[r] * v) for g, v in node.items()]
                factors += [Factor(k, -lam[r] * v) for k, v in pair.items()]
        if marginals:
            value, labels, marg = max_marginals(factors, self.order, self.sizes)
        else:
            value, labels = max_sum(factors, self.order, self.sizes)
        slack = np.empty(len(self.costs))
        scale = abs(value)
        for r, (node, pair, const) in enumerate(self.costs):
            used = const + sum(float(v[labels[g]]) for g, v in node.items())
            used += sum(float(v[labels[a], labels[b]]) for (a, b), v in pair.items())
            budget = self.problem.constraints[r].budget
            slack[r] = budget - used
            scale += lam[r] * (abs(budget) + abs(const) + abs(used))
        if value == -math.inf:  # no allowed combination (hard union tables, a search node's domains)
            return (-math.inf, labels, slack) + ((marg,) if marginals else ())
        # the budgets as ChannelProblem.feasible reads them (a plan may sit a rounding error over)
        shift = float(lam @ np.array([_tolerant(self.problem.constraints[r].budget) - self.costs[r][2]
                                      for r in range(len(self.costs))]))
        # value and lam * budget nearly cancel when lam is large: pad by their rounding error
        shift += self.red.constant + 1e-12 * (scale + abs(self.red.constant))
        if marginals:
            return value + shift, labels, slack, {g: m + shift for g, m in marg.items()}
        return value + shift, labels, slack

    def prune_counts(self, objective: list[Factor], lam: np.ndarray, lower: float) -> int:
        """Remove from the groups' allowed counts every bucket whose max-marginal at ``lam``
        (a bound on every plan with that group's count in the bucket) is below ``lower``, the
        objective of a known plan: no better plan has such a count. Returns how many counts
        went. The decomposition then tightens on the counts left, where one set of
        multipliers no longer has to serve count combinations far from the optimum."""
        value, _, _, marg = self._relaxed(objective, lam, marginals=True)
        if not math.isfinite(value):
            return 0
        removed = 0
        for g in self.vars:
            b = self.buckets[g]
            m = marg[g]  # -inf: no allowed combination has a count in that bucket (dropped)
            pad = 1e-9 * (np.abs(np.where(np.isfinite(m), m, 0.0)) + abs(lower)) + 2e-12 * abs(value)
            drop = m + pad < lower
            if not drop.any() or drop.all():
                continue  # all gone means the bound is below ``lower``: the caller stops anyway
            keep = np.repeat(~drop, np.diff(np.append(b.starts, len(b.allowed))))
            self.buckets[g] = b.restricted(keep)
            removed += int((~keep).sum())
        if removed:
            self._rebuild()
        return removed

    def _minimize_lam(self, objective: list[Factor], lam: np.ndarray, scale: np.ndarray,
                      steps: int) -> tuple[float, dict[int, int], np.ndarray]:
        """Smallest relaxed value over ``lam`` (coordinate-wise bisection from ``lam``)."""
        best = self._relaxed(objective, lam)
        best_lam = lam.copy()
        for _ in range(2 if len(lam) > 1 else 1):
            for r in range(len(lam)):
                lo, hi = 0.0, max(best_lam[r] * 2.0, scale[r])
                cur = best_lam.copy()
                if cur[r] > 0 and best[2][r] > 0:  # under budget r: lam = 0 may fit too (a leaf's exact value)
                    cur[r] = 0.0
                    res = self._relaxed(objective, cur)
                    if res[0] < best[0] - 1e-12 * abs(best[0]):
                        best, best_lam = res, cur.copy()
                    if res[2][r] >= 0:
                        continue
                for _ in range(60):  # grow hi until the relaxed plan fits budget r
                    cur[r] = hi
                    res = self._relaxed(objective, cur)
                    if res[0] < best[0] - 1e-12 * abs(best[0]):  # ties: keep the smaller lam
                        best, best_lam = res, cur.copy()
                    if res[2][r] >= 0:
                        break
                    lo, hi = hi, hi * 4.0
                for _ in range(steps):
                    cur[r] = 0.5 * (lo + hi)
                    res = self._relaxed(objective, cur)
                    if res[0] < best[0] - 1e-12 * abs(best[0]):
                        best, best_lam = res, cur.copy()
                    if res[2][r] >= 0:
                        hi = cur[r]
                    else:
                        lo = cur[r]
        lam[:] = best_lam
        return best

    def solve(self, *, time_limit: float, lower: float, iterations: int | None = None,
              target_gap: float = 0.0, theta: float = 0.3, patience: int = 60,
              max_refinements: int = 30, progress: Callable[[float, float], None] | None = None,
              prune: bool = True, node_iterations: int = NODE_ITERATIONS) -> tuple[float, dict]:
        """The smallest bound found within ``time_limit`` s. ``lower`` is the objective of a
        known feasible plan: it sets the step sizes and the stopping gap, and with ``prune``
        (the default) counts and branches whose bound is below it are dropped (pass
        ``prune=False`` when no plan of that objective is known). Unless ``iterations == 1``
        (the plain count bound), the root decomposition gets ``ROOT_SHARE`` of the time and a
        branch and bound over counts the rest (``branch_and_bound``)."""
        t0 = time.perf_counter()
        n_cons = len(self.costs)
        lam = np.zeros(n_cons)
        full = np.array([max(c.cost.evaluate(self.problem.sizes), 1e-300) for c in self.problem.constraints])
        top = max(abs(lower), 1e-12) + sum(float(t.W.sum()) for t in self.terms)
        scale = top / full  # importance per unit of cost: the scale of lam
        best, history, stale = math.inf, [], 0
        it = 0
        interrupted = False
        refinements = pruned = 0
        best_state = None  # multipliers, lam and counts of the best bound: the branch and bound's root
        branching = bool(prune and iterations != 1 and (n_cons or self.terms or self.unions))
        loop_limit = time_limit * ROOT_SHARE if branching else time_limit
        while True:
            try:  # Ctrl-C anywhere in an iteration: keep the best bound so far, let the caller stop
                started = time.perf_counter()
                objective = self._objective_factors()
                value, labels, _ = self._minimize_lam(objective, lam, scale, steps=14 if it == 0 else 8)
                value = _padded(value)  # float summation margin
                self._evaluation = time.perf_counter() - started
                if not value >= best - 1e-12 * abs(best):  # best starts at inf
                    best, stale = value, 0
                    best_state = (self._multipliers(), lam.copy(), self._domain())
                    if progress is not None:
                        progress(best, time.perf_counter() - t0)
                else:
                    stale += 1
                    if stale >= patience:  # smaller steps from the best multipliers so far
                        theta, stale = theta / 2, 0
                        self._set_multipliers(best_state[0])
                history.append((time.perf_counter() - t0, best))
                it += 1
                if (refinements < max_refinements and time.perf_counter() - t0 + self._evaluation <= loop_limit
                        and not (iterations is not None and it >= iterations) and self.refine(labels)):
                    refinements += 1
                    stale = 0
                    continue  # re-solve with the chosen buckets split before moving the multipliers
                if (prune and iterations != 1 and value > lower
                        and time.perf_counter() - t0 + self._evaluation <= loop_limit
                        and self.prune_counts(objective, lam, lower)):
                    pruned += 1
                    continue  # re-solve on the counts left before moving the multipliers
                gap = (best - lower) / max(abs(best), 1e-300)
                if (gap <= max(target_gap, 1e-9) or (iterations is not None and it >= iterations)
                        or time.perf_counter() - t0 + self._evaluation > loop_limit  # no time for another
                        or theta < 1e-5 or not (self.terms or self.unions)):
                    break
                if not self._step(labels, value, lower, theta):
                    break  # copies agree with the groups: the decomposition cannot get tighter here
            except KeyboardInterrupt:
                interrupted = True
                break
        relaxed, searched, nodes = float(best), None, 0
        if (best_state is not None and not interrupted and branching
                and time.perf_counter() - t0 < time_limit
                and (best - lower) / max(abs(best), 1e-300) > max(target_gap, 1e-9)):
            try:
                searched, nodes = self.branch_and_bound((*best_state, best), lower, scale, t0 + time_limit,
                                                        target_gap=target_gap, iterations=node_iterations)
            except KeyboardInterrupt:
                interrupted = True
            if searched is not None and searched < best:
                best = float(searched)
                if progress is not None:
                    progress(best, time.perf_counter() - t0)
        if pruned or nodes:  # the counts dropped hold no plan above ``lower``
            best = max(best, lower)
        return float(best), {"count_bound_iterations": it, "interrupted": interrupted,
                             "count_bound_prunings": pruned,
                             "count_bound_relaxed": relaxed, "count_bound_branch_and_bound": searched,
                             "count_bound_nodes": nodes,
                             "count_bound_refinements": refinements, "count_bound_time": time.perf_counter() - t0,
                             "count_bound_first": float(history[0][1]) if history else None,
                             "count_bound_largest_table": self.largest}

    def _step(self, labels: dict[int, int], value: float, lower: float, theta: float) -> bool:
        """One projected subgradient (Polyak) step on the multipliers, from the relaxed
        optimum ``labels`` of bound ``value``; False when the copies agree with the groups."""
        own = self._own_masks(labels)
        sub, norm = self._subgradient(own, labels)
        union_sub, union_norm = self._union_subgradient(own)
        if norm + union_norm == 0:
            return False
        step = theta * (value - lower) / (norm + union_norm)
        for t, (dg, dh) in zip(self.terms, sub):
            t.mu_g -= step * dg
            t.mu_h -= step * dh
        for key, d in union_sub.items():  # projected: these multipliers stay >= 0
            table = self.nu if isinstance(key, tuple) else self.rho
            table[key] = np.maximum(table[key] - step * d, 0.0)
        return True

    def _multipliers(self) -> tuple:
        return ([(t.mu_g.copy(), t.mu_h.copy()) for t in self.terms],
                {k: v.copy() for k, v in self.nu.items()}, {k: v.copy() for k, v in self.rho.items()})

    def _set_multipliers(self, saved: tuple) -> None:
        terms, nu, rho = saved
        for t, (mg, mh) in zip(self.terms, terms):
            t.mu_g, t.mu_h = mg.copy(), mh.copy()
        self.nu, self.rho = {k: v.copy() for k, v in nu.items()}, {k: v.copy() for k, v in rho.items()}


    def _domain(self) -> dict[int, np.ndarray]:
        """The counts each group may still take."""
        return {g: self.buckets[g].allowed.copy() for g in self.vars}

    def _set_domain(self, domain: dict[int, np.ndarray], parent: dict[int, Buckets] | None = None) -> None:
        """Fresh buckets over ``domain`` (single counts near the reference plan's, or the
        domain's middle, wider away from them), split further at every boundary of the
        ``parent`` box's buckets, so that a child never starts looser than its parent; coarser
        until the elimination fits. (The parent's buckets alone stay coarse where a child's
        counts now lie: on ResNet-56 at 30% FLOPs that left a 3.0% gap; fresh buckets alone
        gave 0.72-1.34% over five runs, both together 0.83% in three.)"""
        near = self.near
        while True:
            for g in self.vars:
                a = domain[g]
                center = None if self.reference is None else int(a[np.argmin(np.abs(a - self.reference[g]))])
                fresh = make_buckets(list(a), center, near)
                if parent is not None:  # also the parent's boundaries: never coarser than the parent
                    p = parent[g]
                    kept = p.restricted(np.isin(p.allowed, a))
                    starts = np.searchsorted(a, np.union1d(fresh.lo, kept.lo))
                    fresh = Buckets(a, starts.astype(np.int64))
                self.buckets[g] = fresh
            self._rebuild()
            if self.tractable or near == 0:
                if not self.tractable and parent is not None:
                    parent, near = None, self.near
                    continue
                return
            near //= 2

    def branch_and_bound(self, root: tuple, lower: float, scale: np.ndarray, deadline: float,
                         target_gap: float = 0.0, iterations: int = NODE_ITERATIONS) -> tuple[float, int]:
        """Best-first branch and bound over the groups' counts; an upper bound on every plan
        above ``lower`` (the objective of a known plan), valid also when stopped at ``deadline``
        (open nodes count). ``root``: multipliers, budget multipliers, domains to start from and
        their bound.

        One set of multipliers has to serve every count combination at once; at the greedy
        plan's counts alone the decomposition is tight, but combinations far from it keep the
        bound up. A node restricts the counts to a box, re-buckets it (finer as it narrows),
        takes ``iterations`` subgradient steps from its parent's multipliers, drops the counts
        whose max-marginal falls below ``lower`` and closes when its bound does (or falls
        within ``target_gap``). Branching splits the group whose count differs most between
        the two sides of the budget multiplier (relaxing the budget lets the relaxed optimum
        mix a combination over the budget with one under it: this restores the exact budget),
        else bisects the widest domain. Returns the bound and the number of nodes evaluated."""
        gap = max(target_gap, 1e-9)  # 1e-9: a box bounded by the plan itself (float padding) is closed
        close = lower + gap * abs(lower) / (1.0 - gap)
        multipliers, lam, domain, root_bound = root
        value, multipliers, lam, buckets, split = self._node(domain, multipliers, lam, lower, scale, close,
                                                             iterations, deadline)
        value = min(value, root_bound)
        heap, count, nodes, leaves = [], 0, 1, -math.inf  # leaves: closed boxes and single combinations
        if value > close:
            heap.append((-value, count, (buckets, multipliers, lam, split)))
        else:
            leaves = value
        while heap and time.perf_counter() + self._evaluation < deadline:
            value, _, node = heapq.heappop(heap)
            buckets, multipliers, lam, split = node
            domain = {g: b.allowed for g, b in buckets.items()}
            if split is None:  # a single count combination: nothing left to split
                leaves = max(leaves, -value)
                continue
            g, cut = split
            for part in (domain[g][domain[g] <= cut], domain[g][domain[g] > cut]):
                if time.perf_counter() + self._evaluation >= deadline:  # a child needs one evaluation
                    count += 1
                    heapq.heappush(heap, (value, count, node))
                    break
                child = {**domain, g: part}
                b, m, l, d, sp = self._node(child, multipliers, lam.copy(), lower, scale, close, iterations, deadline,
                                            parent=buckets)
                nodes += 1
                b = min(b, -value)
                if b > close:
                    count += 1
                    heapq.heappush(heap, (-b, count, (d, m, l, sp)))
                else:
                    leaves = max(leaves, b)
        top = max([-heap[0][0]] if heap else [], default=-math.inf)
        return float(min(max(top, leaves, lower), root_bound)), nodes

    def _node(self, domain: dict[int, np.ndarray], multipliers: tuple, lam: np.ndarray, lower: float,
              scale: np.ndarray, close: float, iterations: int, deadline: float,
              parent: dict[int, Buckets] | None = None):
        """Bound the plans with counts in ``domain``: (bound, best multipliers, lam, buckets
        left after pruning and refinement, split or None)."""
        self._set_domain(domain, parent)
        self._set_multipliers(multipliers)
        best, best_state, steps, theta, extra = math.inf, None, 0, NODE_THETA, 0
        while True:
            started = time.perf_counter()
            objective = self._objective_factors()
            value, labels, _ = self._minimize_lam(objective, lam, scale, steps=8)
            value = _padded(value)
            self._evaluation = time.perf_counter() - started
            if value < best:
                best, best_state = value, (self._multipliers(), lam.copy())
            if best <= close or steps >= iterations or time.perf_counter() + self._evaluation >= deadline:
                break
            if extra < 4 and (self.refine(labels) or (value > lower and self.prune_counts(objective, lam, lower))):
                extra += 1
                continue
            steps += 1
            if steps >= iterations or not self._step(labels, value, lower, theta):
                break
        multipliers, lam = best_state if best_state is not None else (multipliers, lam)
        domain, buckets = self._domain(), dict(self.buckets)
        if best <= close or best == -math.inf or time.perf_counter() + self._evaluation >= deadline:
            return best, multipliers, lam, buckets, None  # no time to choose a split: a leaf (still counted)
        self._set_multipliers(multipliers)
        objective = self._objective_factors()
        value, labels, _ = self._relaxed(objective, lam)
        best = min(best, _padded(value))
        _, over, _ = self._relaxed(objective, lam * 0.995)  # the other side of the budget multiplier
        return best, multipliers, lam, buckets, self._split(domain, labels, over)

    def _split(self, domain: dict[int, np.ndarray], labels: dict[int, int],
               over: dict[int, int]) -> tuple[int, int] | None:
        """The group to branch on and the largest count of its lower part: where the two sides
        of the budget multiplier differ most (relative to the group's size), else the widest
        domain, bisected. None when every group has a single count left."""
        differ = []
        for g in self.vars:
            a, b = int(self.buckets[g].lo[labels[g]]), int(self.buckets[g].lo[over[g]])
            if a != b:
                differ.append((abs(a - b) / self.problem.sizes[g], g, min(a, b), max(a, b)))
        if differ:
            _, g, a, b = max(differ)
            d = domain[g]
            cut = int(d[max(int(np.searchsorted(d, (a + b) // 2, side="right")) - 1, 0)])
            if cut < int(d[-1]):
                return g, cut
        widths = [(len(domain[g]) / self.problem.sizes[g], g) for g in self.vars if len(domain[g]) > 1]
        if not widths:
            return None
        _, g = max(widths)
        d = domain[g]
        return g, int(d[len(d) // 2 - 1])

    def _own_masks(self, labels: dict[int, int]) -> dict[int, np.ndarray]:
        """The groups' own masks at the relaxed optimum (best channels of each node table)."""
        own = {}
        for g in self.vars:
            score = self._node_scores[g]
            n = self.buckets[g].argbest(_top_prefix(score), labels[g])
            x = np.zeros(len(score), bool)
            x[np.argsort(-score, kind="stable")[:n]] = True
            own[g] = x
        return own

    def _subgradient(self, own: dict[int, np.ndarray],
                     labels: dict[int, int]) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
        """Per term, its copy's masks minus the groups' own masks at the relaxed optimum (the
        direction that raises the bound fastest in its multipliers), and the squared norm."""
        sub, norm = [], 0.0
        for t in self.terms:
            yg, yh = t.choice(self.buckets[t.g], self.buckets[t.h], labels[t.g], labels[t.h])
            dg = yg.astype(float) - own[t.g]
            dh = (yh.astype(float) - own[t.h]) if t.g != t.h else np.zeros_like(t.mu_h)
            sub.append((dg, dh))
            norm += float(dg @ dg + dh @ dh)
        return sub, norm

    def _union_subgradient(self, own: dict[int, np.ndarray]) -> tuple[dict, float]:
        """Per union multiplier, the slack of its rule at the own masks (``v - u_i`` for
        ``nu_i``, ``sum_i u_i - v`` for ``rho``; the bound falls when a multiplier moves
        against it), with components that the projection onto ``>= 0`` would stop set to 0,
        and the squared norm."""
        sub, norm = {}, 0.0

        def add(key, d: np.ndarray, current: np.ndarray) -> None:
            nonlocal norm
            d = np.where((current <= 0) & (d > 0), 0.0, d)
            sub[key] = d
            norm += float(d @ d)

        for v, inputs in self.unions:
            xv = own[v].astype(float)
            for u in inputs:
                add((v, u), xv - own[u], self.nu[(v, u)])
            add(v, sum(own[u].astype(float) for u in inputs) - xv, self.rho[v])
        return sub, norm


def count_bound(problem: ChannelProblem, red: Reduced, time_limit: float = 5.0, reference: np.ndarray | None = None,
                lower: float = 0.0, iterations: int | None = None, target_gap: float = 0.0,
                progress: Callable[[float, float], None] | None = None) -> tuple[float | None, dict]:
    """An upper bound on the optimum (None when the group graph is too dense for exact
    elimination) and details. ``iterations=1`` gives the plain count bound; more run the
    Lagrangian decomposition and the branch and bound over counts. ``reference``: counts of a
    good plan (bucket centres); ``lower``: its objective (never above the optimum: counts
    and boxes bounded below it are dropped)."""
    t0 = time.perf_counter()
    if not red.prunable:
        return red.constant, {"count_bound_time": 0.0}
    cb = CountBound(problem, red, reference)
    if not cb.tractable:
        return None, {"count_bound_time": time.perf_counter() - t0, "count_bound_largest_table": cb.largest,
                      "count_bound_status": "skipped: the group graph is too dense for exact elimination"}
    bound, info = cb.solve(time_limit=max(0.0, time_limit - (time.perf_counter() - t0)), lower=lower,
                           iterations=iterations, target_gap=target_gap, progress=progress)
    info["count_bound_time"] = time.perf_counter() - t0
    return bound, info
