"""Resource budgets: fractions of the unpruned model, or absolute values spelled explicitly."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Mapping


@dataclass(frozen=True)
class Absolute:
    """An absolute budget, e.g. ``Budget(flops=Absolute(3e8))`` (FLOPs as FlopCounterMode
    counts them for the example inputs)."""

    value: float

    def __post_init__(self) -> None:
        if not isinstance(self.value, (int, float)) or not math.isfinite(self.value) or self.value <= 0:
            raise ValueError(f"Absolute({self.value!r}): an absolute budget must be a finite number > 0")


@dataclass(frozen=True)
class Budget:
    """Upper limits on resources; every limit given must hold at once.

    A float in (0, 1] is a fraction of the unpruned model (``flops=0.5`` keeps at most half
    the FLOPs); an absolute limit is written ``Absolute(value)`` or with
    :meth:`Budget.absolute`. Resources: ``flops``, ``params``, ``memory`` (activation elements
    written in one forward pass), ``latency`` (milliseconds predicted by a fitted
    :class:`~qcqp_prune.latency.LatencyModel`; a fraction is of the unpruned model's latency as
    measured in the latency model's calibration, ``LatencyModel.measured_full_ms``, or of its
    predicted latency when the model has no such measurement).
    """

    flops: float | Absolute | None = None
    params: float | Absolute | None = None
    memory: float | Absolute | None = None
    latency: float | Absolute | None = None  # needs plan_channels(latency_model=...); ms

    def __post_init__(self) -> None:
        given = 0
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            given += 1
            if isinstance(v, Absolute):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v <= 1):
                raise ValueError(
                    f"budget {f.name}={v!r} must be a fraction in (0, 1] of the unpruned model, "
                    f"or an absolute value written Absolute({v!r}) / Budget.absolute({f.name}={v!r})"
                )
        if not given:
            raise ValueError("Budget() needs at least one limit, e.g. Budget(flops=0.5)")

    @classmethod
    def absolute(cls, **limits: float) -> "Budget":
        """``Budget.absolute(flops=3e8, params=1e6)``: absolute limits."""
        return cls(**{k: Absolute(float(v)) for k, v in limits.items()})

    def items(self) -> list[tuple[str, float | Absolute]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]

    def resolve(self, full_cost: Mapping[str, float]) -> dict[str, float]:
        """Absolute limits given the unpruned model's costs."""
        return {k: (v.value if isinstance(v, Absolute) else v * full_cost[k]) for k, v in self.items()}

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: ({"absolute": v.value} if isinstance(v, Absolute) else {"fraction": v}) for k, v in self.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Mapping[str, float]]) -> "Budget":
        return cls(**{k: (Absolute(v["absolute"]) if "absolute" in v else v["fraction"]) for k, v in d.items()})
