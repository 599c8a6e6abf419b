"""The shared result vocabulary of every channel back-end."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .problem import ChannelProblem


class Status(str, enum.Enum):
    """OPTIMAL: proven optimum. FEASIBLE: a valid plan, stopped at a limit (``stop_reason``).
    INFEASIBLE: no plan meets the budgets. NO_SOLUTION: nothing found before the limit.
    ERROR: the back-end failed."""

    OPTIMAL = "OPTIMAL"
    FEASIBLE = "FEASIBLE"
    INFEASIBLE = "INFEASIBLE"
    NO_SOLUTION = "NO_SOLUTION"
    ERROR = "ERROR"


@dataclass
class Solution:
    """Masks (one bool array per group; frozen groups all True), the objective in original
    units, a proven upper ``bound`` (None when nothing was proven) and the relative ``gap``
    ``(bound - objective) / |bound|``, which is 0 only for a proven optimum."""

    masks: list[np.ndarray]
    objective: float
    bound: float | None
    gap: float | None
    status: Status
    stop_reason: str | None
    wall_time: float
    backend: str
    backend_version: str
    seed: int
    costs: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


class InfeasibleBudgetError(ValueError):
    """A budget cannot hold even with the fewest channels allowed; the message states the
    smallest achievable cost."""

    def __init__(self, resource: str, smallest: float, budget: float) -> None:
        self.resource, self.smallest, self.budget = resource, smallest, budget
        super().__init__(
            f"budget {resource}={budget:.6g} cannot be met: the smallest achievable {resource} "
            f"is {smallest:.6g} (every prunable group at its min_keep, frozen groups whole); "
            f"raise the budget to at least {smallest / max(budget, 1e-300):.4g}x, lower "
            f"min_keep, or unfreeze layers"
        )


def smallest_costs(problem: ChannelProblem) -> dict[str, float]:
    """Each resource at the fewest channels allowed (costs only grow with counts)."""
    n = problem.min_counts()
    return {c.name: c.cost.evaluate(n) for c in problem.constraints}


def check_feasible_budgets(problem: ChannelProblem) -> None:
    low = smallest_costs(problem)
    for c in problem.constraints:
        if low[c.name] > c.budget * (1 + 1e-12) + 1e-9:
            raise InfeasibleBudgetError(c.name, low[c.name], c.budget)


def relative_gap(objective: float, bound: float | None, optimal: bool) -> float | None:
    if optimal:
        return 0.0
    if bound is None:
        return None
    gap = (bound - objective) / max(abs(bound), 1e-300)
    return max(gap, 0.0) if bound >= objective else 0.0
