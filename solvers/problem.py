"""Problem and result types for channel selection (pure math, torch-free).

A problem has *groups* of channels; ``N_g`` is the number of kept channels of group ``g``.
Resources (FLOPs, parameters, memory, latency) are :class:`QuadraticCost` functions of the
counts; the objective is the importance kept, a sum of bilinear forms ``x_g^T I x_h`` over
the keep-masks plus linear terms ``w^T x_g`` and a constant.
"""

from __future__ import annotations

import graphlib
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class QuadraticCost:
    """``sum c * N_g * N_h + sum d * N_g + constant`` over group counts.

    ``bilinear`` maps a pair ``(g, h)`` with ``g <= h`` to ``c`` (``g == h`` is a square),
    ``linear`` maps ``g`` to ``d``. Coefficients are non-negative for every resource we model
    (more channels never cost less), which the solvers rely on.
    """

    bilinear: Mapping[tuple[int, int], float] = field(default_factory=dict)
    linear: Mapping[int, float] = field(default_factory=dict)
    constant: float = 0.0

    def evaluate(self, counts: Sequence[float] | np.ndarray) -> float:
        """The cost at the given per-group kept counts (index = group id)."""
        n = np.asarray(counts, dtype=np.float64)
        total = float(self.constant)
        for (g, h), c in self.bilinear.items():
            total += c * n[g] * n[h]
        for g, d in self.linear.items():
            total += d * n[g]
        return total

    def __add__(self, other: "QuadraticCost") -> "QuadraticCost":
        bil = dict(self.bilinear)
        for k, v in other.bilinear.items():
            bil[k] = bil.get(k, 0.0) + v
        lin = dict(self.linear)
        for k, v in other.linear.items():
            lin[k] = lin.get(k, 0.0) + v
        return QuadraticCost(bil, lin, self.constant + other.constant)

    def scaled(self, factor: float) -> "QuadraticCost":
        return QuadraticCost(
            {k: v * factor for k, v in self.bilinear.items()},
            {k: v * factor for k, v in self.linear.items()},
            self.constant * factor,
        )


@dataclass(frozen=True)
class BilinearTerm:
    """Objective term ``x_g^T weights x_h``; ``weights`` has shape ``(size_g, size_h)``.

    ``g == h`` is allowed (a layer whose input and output channels were merged into one group).
    """

    g: int
    h: int
    weights: np.ndarray


@dataclass(frozen=True)
class LinearTerm:
    """Objective term ``weights^T x_g``; ``weights`` has shape ``(size_g,)``."""

    g: int
    weights: np.ndarray


@dataclass(frozen=True)
class UnionConstraint:
    """Group ``out``'s keep-mask is the channel-wise OR of its ``inputs``' masks.

    This is the paper's *union coupling* at a residual add: a channel of the stream after the
    add is alive when any tensor added into it keeps that channel. ``out`` is a *derived*
    group: no back-end chooses its mask, it follows from its inputs (``v >= u_i``,
    ``v <= sum_i u_i`` per channel).
    """

    out: int
    inputs: tuple[int, ...]


@dataclass(frozen=True)
class ResourceConstraint:
    """``cost(N) <= budget`` for one named resource (e.g. ``"flops"``)."""

    name: str
    cost: QuadraticCost
    budget: float


def _as_tuple(value, n: int, name: str, default):
    if value is None:
        return (default,) * n
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * n
    value = tuple(value)
    if len(value) != n:
        raise ValueError(f"{name} has {len(value)} entries but the problem has {n} groups")
    return value


@dataclass(frozen=True)
class ChannelProblem:
    """Channel selection: keep-masks ``x_g`` per group maximizing the kept importance
    ``sum x_g^T W x_h + sum w^T x_g + objective_constant`` subject to resource budgets.

    Frozen groups are fixed fully kept. A kept count must be at least ``min_keep[g]`` and,
    when ``round_to[g]`` is set, a multiple of it (or the full size). Validated on
    construction: errors name the bad value and say what to do.

    ``unions`` make some groups *derived* (see :class:`UnionConstraint`); ``min_keep`` and
    ``round_to`` do not apply to them. A derived group with a frozen input is always full and
    counts as frozen; a derived group given as frozen with no frozen input freezes all its
    inputs (its stream must stay whole, so every tensor added into it must too). Validating
    twice (e.g. ``dataclasses.replace``) gives the same frozen groups.
    """

    sizes: tuple[int, ...]
    frozen: tuple[bool, ...] | None = None
    min_keep: tuple[int, ...] | int | None = None
    round_to: tuple[int | None, ...] | int | None = None
    bilinear: tuple[BilinearTerm, ...] = ()
    linear: tuple[LinearTerm, ...] = ()
    objective_constant: float = 0.0
    constraints: tuple[ResourceConstraint, ...] = ()
    names: tuple[str, ...] | None = None
    unions: tuple[UnionConstraint, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.sizes)
        sizes = tuple(int(s) for s in self.sizes)
        if any(s < 1 for s in sizes):
            raise ValueError(f"group sizes must be >= 1, got {sizes}")
        object.__setattr__(self, "sizes", sizes)
        frozen = tuple(bool(f) for f in _as_tuple(self.frozen, n, "frozen", False))
        object.__setattr__(self, "frozen", frozen)
        mk = _as_tuple(self.min_keep, n, "min_keep", 1)
        for g, m in enumerate(mk):
            if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
                raise ValueError(f"min_keep[{g}]={m!r} must be an integer >= 1")
        object.__setattr__(self, "min_keep", tuple(min(int(m), s) for m, s in zip(mk, sizes)))
        rt = _as_tuple(self.round_to, n, "round_to", None)
        for g, r in enumerate(rt):
            if r is not None and (isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1):
                raise ValueError(f"round_to[{g}]={r!r} must be None or an integer >= 1")
        object.__setattr__(self, "round_to", tuple(None if r is None else int(r) for r in rt))
        if self.names is not None and len(self.names) != n:
            raise ValueError(f"names has {len(self.names)} entries but the problem has {n} groups")
        object.__setattr__(self, "bilinear", tuple(self.bilinear))
        object.__setattr__(self, "linear", tuple(self.linear))
        object.__setattr__(self, "constraints", tuple(self.constraints))
        self._check_unions(n, sizes)

        def check_group(g: int, where: str) -> None:
            if not isinstance(g, (int, np.integer)) or not 0 <= g < n:
                raise ValueError(f"{where}: group id {g!r} out of range [0, {n})")

        for i, t in enumerate(self.bilinear):
            check_group(t.g, f"bilinear[{i}]")
            check_group(t.h, f"bilinear[{i}]")
            w = np.asarray(t.weights, dtype=np.float64)
            if w.shape != (sizes[t.g], sizes[t.h]):
                raise ValueError(f"bilinear[{i}] weights have shape {w.shape}; expected "
                                 f"({sizes[t.g]}, {sizes[t.h]}) for groups ({t.g}, {t.h})")
            self._check_values(w, f"bilinear[{i}] ({self.name(t.g)} x {self.name(t.h)})")
        for i, t in enumerate(self.linear):
            check_group(t.g, f"linear[{i}]")
            w = np.asarray(t.weights, dtype=np.float64)
            if w.shape != (sizes[t.g],):
                raise ValueError(f"linear[{i}] weights have shape {w.shape}; expected ({sizes[t.g]},)")
            self._check_values(w, f"linear[{i}] ({self.name(t.g)})")
        if not math.isfinite(self.objective_constant):
            raise ValueError(f"objective_constant={self.objective_constant!r} must be finite")
        names = set()
        for c in self.constraints:
            if c.name in names:
                raise ValueError(f"two constraints are named {c.name!r}")
            names.add(c.name)
            if not isinstance(c.budget, (int, float, np.floating, np.integer)) or not math.isfinite(c.budget):
                raise ValueError(f"budget {c.name}={c.budget!r} must be a finite number")
            if c.budget < 0:
                raise ValueError(f"budget {c.name}={c.budget!r} is negative; budgets must be >= 0")
            for (g, h), v in c.cost.bilinear.items():
                check_group(g, f"cost {c.name!r}")
                check_group(h, f"cost {c.name!r}")
                if not math.isfinite(v) or v < 0:
                    raise ValueError(f"cost {c.name!r} coefficient {v!r} on groups ({g}, {h}) must be finite and >= 0")
            for g, v in c.cost.linear.items():
                check_group(g, f"cost {c.name!r}")
                if not math.isfinite(v) or v < 0:
                    raise ValueError(f"cost {c.name!r} coefficient {v!r} on group {g} must be finite and >= 0")
            if not math.isfinite(c.cost.constant):
                raise ValueError(f"cost {c.name!r} constant must be finite")

    def _check_unions(self, n: int, sizes: tuple[int, ...]) -> None:
        unions = tuple(UnionConstraint(int(u.out), tuple(int(i) for i in u.inputs)) for u in self.unions)
        object.__setattr__(self, "unions", unions)
        derived: dict[int, tuple[int, ...]] = {}
        for k, u in enumerate(unions):
            for g in (u.out, *u.inputs):
                if not 0 <= g < n:
                    raise ValueError(f"unions[{k}]: group id {g} out of range [0, {n})")
            if len(set(u.inputs)) < 2 or u.out in u.inputs:
                raise ValueError(f"unions[{k}]: group {u.out} needs at least two distinct inputs other "
                                 f"than itself, got {u.inputs}")
            if u.out in derived:
                raise ValueError(f"unions[{k}]: group {u.out} is already the union of {derived[u.out]}; "
                                 f"a group can be derived only once")
            bad = [g for g in u.inputs if sizes[g] != sizes[u.out]]
            if bad:
                raise ValueError(f"unions[{k}]: inputs {bad} have sizes {[sizes[g] for g in bad]} but "
                                 f"group {u.out} has {sizes[u.out]}; a union needs equal sizes")
            derived[u.out] = u.inputs
        sorter = graphlib.TopologicalSorter({v: [i for i in ins if i in derived] for v, ins in derived.items()})
        try:  # derived groups, each after the derived groups it reads (iterative: no recursion limit)
            order = list(sorter.static_order())
        except graphlib.CycleError as e:
            raise ValueError(f"unions form a cycle through groups {tuple(e.args[1])}; an add cannot feed "
                             f"itself") from None
        frozen = list(self.frozen)
        for v in reversed(order):  # a frozen stream freezes everything added into it ...
            if frozen[v] and not any(frozen[i] for i in derived[v]):  # ... unless one input keeps it full
                for i in derived[v]:
                    frozen[i] = True
        for v in order:  # a stream with a frozen (always full) input is always full
            if any(frozen[i] for i in derived[v]):
                frozen[v] = True
        object.__setattr__(self, "frozen", tuple(frozen))
        object.__setattr__(self, "_derived", derived)
        object.__setattr__(self, "_union_order", tuple(order))
        sources: dict[int, frozenset[int]] = {}  # in order: a derived input's sources come first
        for v in order:
            sources[v] = frozenset().union(*(sources.get(i, (i,)) for i in derived[v]))
        object.__setattr__(self, "_sources", sources)

    # ------------------------------------------------------------------ unions
    @property
    def derived(self) -> dict[int, tuple[int, ...]]:
        """Derived group -> the groups whose OR it is (empty without union coupling)."""
        return dict(self._derived)

    @property
    def union_order(self) -> tuple[int, ...]:
        """Derived groups in an order where every derived input comes first."""
        return self._union_order

    @property
    def free(self) -> list[int]:
        """Groups a back-end decides: prunable and not derived."""
        return [g for g in range(len(self.sizes)) if not self.frozen[g] and g not in self._derived]

    def sources(self, g: int) -> set[int]:
        """The non-derived groups whose OR gives group ``g`` (``{g}`` for a non-derived group)."""
        return set(self._sources.get(g, (g,)))

    def complete(self, masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """``masks`` with every derived group's mask recomputed from its inputs (and frozen
        groups fully kept): the masks a back-end returns."""
        out = [np.ones(s, dtype=bool) if self.frozen[g] else np.asarray(masks[g], dtype=bool).copy()
               for g, s in enumerate(self.sizes)]
        for v in self._union_order:
            if not self.frozen[v]:
                out[v] = np.logical_or.reduce([out[i] for i in self._derived[v]])
        return out

    @staticmethod
    def _check_values(w: np.ndarray, where: str) -> None:
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{where}: importance contains NaN or inf; fix the weights or the "
                             f"importance criterion")
        if np.any(w < 0):
            raise ValueError(f"{where}: importance has negative entries; importances must be >= 0")

    # ------------------------------------------------------------------ helpers
    def name(self, g: int) -> str:
        return self.names[g] if self.names is not None else f"group {g}"

    @property
    def prunable(self) -> list[int]:
        return [g for g in range(len(self.sizes)) if not self.frozen[g]]

    def allowed_counts(self, g: int) -> list[int]:
        """Kept counts group ``g`` may take, ascending."""
        size = self.sizes[g]
        if self.frozen[g]:
            return [size]
        if g in self._derived:
            return list(range(1, size + 1))
        r = self.round_to[g] or 1
        vals = [k for k in range(self.min_keep[g], size + 1) if k % r == 0 or k == size]
        return vals or [size]

    def min_counts(self) -> np.ndarray:
        """The smallest kept counts; every cost is smallest there (coefficients are >= 0). A
        derived group's is the largest of its sources' (all keeping the same channels)."""
        n = np.array([self.allowed_counts(g)[0] for g in range(len(self.sizes))], dtype=np.int64)
        for v in self._union_order:
            if not self.frozen[v]:
                n[v] = max(n[s] for s in self.sources(v))
        return n

    def full_masks(self) -> list[np.ndarray]:
        return [np.ones(s, dtype=bool) for s in self.sizes]

    def objective(self, masks: Sequence[np.ndarray]) -> float:
        """Kept importance of ``masks`` in original units (frozen groups count as kept)."""
        x = [np.ones(s) if self.frozen[g] else np.asarray(masks[g], dtype=np.float64)
             for g, s in enumerate(self.sizes)]
        total = float(self.objective_constant)
        for t in self.bilinear:
            total += float(x[t.g] @ np.asarray(t.weights, dtype=np.float64) @ x[t.h])
        for t in self.linear:
            total += float(np.asarray(t.weights, dtype=np.float64) @ x[t.g])
        return total

    def counts(self, masks: Sequence[np.ndarray]) -> np.ndarray:
        return np.array([s if self.frozen[g] else int(np.sum(masks[g])) for g, s in enumerate(self.sizes)],
                        dtype=np.int64)

    def costs(self, masks: Sequence[np.ndarray]) -> dict[str, float]:
        n = self.counts(masks)
        return {c.name: c.cost.evaluate(n) for c in self.constraints}

    def feasible(self, masks: Sequence[np.ndarray], rtol: float = 1e-12) -> bool:
        """Budgets hold (in floating point), every count is allowed and every derived mask is
        the OR of its inputs."""
        n = self.counts(masks)
        for v in self._union_order:
            if not self.frozen[v] and not np.array_equal(
                    np.asarray(masks[v], dtype=bool),
                    np.logical_or.reduce([np.asarray(masks[i], dtype=bool) for i in self._derived[v]])):
                return False
        for g in range(len(self.sizes)):
            if n[g] not in set(self.allowed_counts(g)):
                return False
        return all(c.cost.evaluate(n) <= c.budget * (1 + rtol) + 1e-9 for c in self.constraints)
