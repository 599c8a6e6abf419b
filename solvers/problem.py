"""Problem and result types for channel selection (pure math, torch-free).

A problem has *groups* of channels; ``N_g`` is the number of kept channels of group ``g``.
Resources (FLOPs, parameters, memory, latency) are :class:`QuadraticCost` functions of the
counts; the objective is the importance kept, a sum of bilinear forms ``x_g^T I x_h`` over
the keep-masks plus linear terms ``w^T x_g`` and a constant.
"""

from __future__ import annotations

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
class ResourceConstraint:
    """``cost(N) <= budget`` for one named resource (e.g. ``"flops"``)."""

    name: str
    cost: QuadraticCost
    budget: float
