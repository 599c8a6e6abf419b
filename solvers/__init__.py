"""Pure-math solvers for channel selection: numpy in, numpy out. Never imports torch."""

from .api import BACKENDS, Backend, solve_channels
from .problem import BilinearTerm, ChannelProblem, LinearTerm, QuadraticCost, ResourceConstraint, UnionConstraint
from .result import InfeasibleBudgetError, Solution, Status, smallest_costs

__all__ = [
    "BACKENDS", "Backend", "BilinearTerm", "ChannelProblem", "InfeasibleBudgetError", "LinearTerm",
    "QuadraticCost", "ResourceConstraint", "Solution", "Status", "UnionConstraint", "smallest_costs",
    "solve_channels",
]
