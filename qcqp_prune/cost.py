"""Resource models as quadratic functions of group counts (DESIGN.md section 3).

``flops`` is exactly what ``torch.utils.flop_counter.FlopCounterMode`` counts for one forward
pass on the example inputs; ``params`` is the number of elements of all parameters; ``memory``
is the number of activation elements written by one forward pass (outputs that alias an
input, i.e. views and in-place ops, write nothing). Each is a :class:`QuadraticCost` in the
kept counts ``N_g`` of the graph's groups (frozen groups count at full size).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .graph.channel_graph import ChannelGraph
from .graph.groups import Segment
from .solvers.problem import QuadraticCost

RESOURCES = ("flops", "params", "memory")


class _Builder:
    def __init__(self) -> None:
        self.bil: dict[tuple[int, int], float] = {}
        self.lin: dict[int, float] = {}
        self.const = 0.0

    def product(self, coef: float, a: Sequence[Segment] | None, b: Sequence[Segment] | None) -> None:
        """Add ``coef * size(a) * size(b)``; a missing side counts as 1."""
        if a is None and b is None:
            self.const += coef
            return
        if a is None or b is None:
            for s in a if a is not None else b:
                self.lin[s.group] = self.lin.get(s.group, 0.0) + coef * s.block
            return
        for s in a:
            for t in b:
                key = (min(s.group, t.group), max(s.group, t.group))
                self.bil[key] = self.bil.get(key, 0.0) + coef * s.block * t.block

    def build(self) -> QuadraticCost:
        return QuadraticCost(dict(self.bil), dict(self.lin), float(self.const))


def flops_cost(graph: ChannelGraph) -> QuadraticCost:
    b = _Builder()
    b.const += graph.constant_flops
    for term in graph.flop_terms:
        b.product(term.coef, term.out, term.inp)
    return b.build()


def params_cost(graph: ChannelGraph) -> QuadraticCost:
    b = _Builder()
    for name, shape in graph.param_shapes.items():
        dims = [d for d in range(len(shape)) if (name, d) in graph.claims]
        rest = math.prod(shape[d] for d in range(len(shape)) if d not in dims)
        segs = [graph.claims[(name, d)] for d in dims]
        if len(segs) > 2:  # never produced by the tracer; guard against silent errors
            raise AssertionError(f"parameter {name} is indexed by {len(segs)} channel axes")
        b.product(float(rest), segs[0] if segs else None, segs[1] if len(segs) > 1 else None)
    return b.build()


def memory_cost(graph: ChannelGraph) -> QuadraticCost:
    b = _Builder()
    b.const += graph.constant_memory
    for term in graph.memory_terms:
        b.product(term.coef, term.segments or None, None)
    return b.build()


def cost_model(graph: ChannelGraph) -> dict[str, QuadraticCost]:
    """``{"flops": ..., "params": ..., "memory": ...}`` for the traced model."""
    return {"flops": flops_cost(graph), "params": params_cost(graph), "memory": memory_cost(graph)}


def evaluate_costs(costs: dict[str, QuadraticCost], counts: Sequence[int] | np.ndarray) -> dict[str, float]:
    return {k: c.evaluate(counts) for k, c in costs.items()}
