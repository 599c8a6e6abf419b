"""``solve_channels``: one entry point for every channel-selection back-end.

Every back-end returns a :class:`Solution` in the same vocabulary; every returned plan is
re-checked in floating point against every budget; a budget that cannot hold at all raises
:class:`InfeasibleBudgetError` with the smallest achievable cost.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import ortools

from .problem import ChannelProblem
from .reduced import reduce_problem
from .result import Solution, Status, check_feasible_budgets, relative_gap


OPTIONS = {  # back-end options accepted through ``**options`` (anything else is a typo)
    "cpsat": {"count_bound", "gap_limit", "bound_time"},
    "mip": {"count_bound", "gap_limit", "bound_time", "mip_solver", "products"},
    "greedy": set(), "exhaustive": set(), "relaxation": {"cvxpy_solver"},
}
RESOLUTION_GAP = 1e-6  # a back-end's OPTIMAL within this relative gap (importance rounding) stays OPTIMAL
# default bound_time: 75% of the time left after the greedy plan, but the back-end keeps 15 s
# to load its model and improve the greedy plan; short limits give the bound 30% (CP-SAT needs about 0.6 s for its
# first plan on a 300-channel problem)
BOUND_SHARE, BACKEND_SECONDS, SHORT_BOUND_SHARE = 0.75, 15.0, 0.3


@dataclass(frozen=True)
class Backend:
    """Capabilities of a back-end (cvxpy-style flags)."""

    name: str
    exact: bool  # can prove optimality
    bound: bool  # reports a proven upper bound
    anytime: bool  # returns the best plan so far at a time limit


BACKENDS = {
    "cpsat": Backend("cpsat", exact=True, bound=True, anytime=True),
    "mip": Backend("mip", exact=True, bound=True, anytime=True),
    "greedy": Backend("greedy", exact=False, bound=False, anytime=True),
    "exhaustive": Backend("exhaustive", exact=True, bound=True, anytime=False),
    "relaxation": Backend("relaxation", exact=False, bound=True, anytime=False),
}


def _finish(problem: ChannelProblem, masks: list[np.ndarray], status: Status, bound: float | None,
            stop_reason: str | None, t0: float, backend: str, version: str, seed: int,
            details: dict[str, Any]) -> Solution:
    if not problem.feasible(masks):
        raise AssertionError(f"internal error: back-end {backend} returned masks that break a budget "
                             f"({problem.costs(masks)} vs {[c.budget for c in problem.constraints]})")
    obj = problem.objective(masks)
    if bound is not None:
        bound = max(bound, obj)  # a valid bound is never below a feasible objective
        if status is Status.FEASIBLE and bound <= obj:
            status, stop_reason = Status.OPTIMAL, None
    gap = relative_gap(obj, bound, status is Status.OPTIMAL and backend == "exhaustive")
    if status is Status.OPTIMAL and gap is not None and gap > RESOLUTION_GAP:
        # optimal for the back-end's integer-scaled importances, not provably for the real ones
        status, stop_reason = Status.FEASIBLE, stop_reason or "resolution"
    if status is Status.OPTIMAL and gap is None:
        gap = 0.0
    return Solution(masks=masks, objective=obj, bound=bound, gap=gap, status=status,
                    stop_reason=stop_reason, wall_time=time.perf_counter() - t0, backend=backend,
                    backend_version=version, seed=seed, costs=problem.costs(masks), details=details)


def solve_channels(
    problem: ChannelProblem,
    solver: str = "cpsat",
    time_limit: float = 30.0,
    seed: int = 0,
    *,
    linearization: str = "auto",
    workers: int = 1,
    progress: Callable[[float, float | None, float], None] | None = None,
    **options: Any,
) -> Solution:
    """Solve channel selection with back-end ``solver`` (see ``BACKENDS``).

    ``time_limit`` (seconds) bounds the search; ``seed`` and ``workers=1`` make CP-SAT
    deterministic; ``linearization`` is ``"auto"``, ``"pairwise"`` or ``"glover"``;
    ``progress(objective, bound, elapsed)`` is called as the incumbent improves.

    Options of ``cpsat`` and ``mip``: ``count_bound`` (default True) first computes the count
    bound, its Lagrangian decomposition and a branch and bound over counts (``bounds.py``)
    for ``bound_time`` seconds (default 75% of the time left after the greedy plan, less what
    leaves the back-end 15 s, at least 30%: about 45 s of 60, 3 s of 10; on real networks the
    back-ends improve on neither the greedy plan nor this bound); it stops early once it proves the greedy plan
    optimal (or within ``gap_limit``). The reported bound is the smaller of it and the
    back-end's, and CP-SAT also gets it as a cut. ``gap_limit`` (default 0: prove
    optimality) stops as soon as the certified relative gap is at most this value.
    """
    if solver not in BACKENDS:
        raise ValueError(f"solver={solver!r} is not a known back-end; use one of {sorted(BACKENDS)}")
    if not isinstance(time_limit, (int, float)) or not math.isfinite(time_limit) or time_limit < 0:
        raise ValueError(f"time_limit={time_limit!r} must be a finite number of seconds >= 0")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r} must be an integer >= 1")
    unknown = sorted(set(options) - OPTIONS[solver])
    if unknown:
        raise TypeError(f"solver={solver!r} does not take option(s) {', '.join(map(repr, unknown))}; its options "
                        f"are {sorted(OPTIONS[solver]) or 'none'} (check the spelling)")
    if solver == "mip":
        from .mip import check_options
        check_options(**{k: options[k] for k in ("mip_solver", "products") if k in options})
    t0 = time.perf_counter()
    check_feasible_budgets(problem)
    red = reduce_problem(problem)
    version = f"ortools {ortools.__version__}"
    if solver == "exhaustive":
        from .exhaustive import exhaustive_masks
        masks, obj = exhaustive_masks(problem)
        if masks is None:
            return Solution([], -math.inf, None, None, Status.INFEASIBLE, None, time.perf_counter() - t0,
                            "exhaustive", "numpy", seed)
        return _finish(problem, masks, Status.OPTIMAL, obj, None, t0, "exhaustive", "numpy", seed, {})

    from .greedy import greedy_masks
    greedy = greedy_masks(problem, time_limit=min(time_limit, 10.0) if solver != "greedy" else time_limit, red=red)
    if solver == "greedy":
        if progress:
            progress(problem.objective(greedy), None, time.perf_counter() - t0)
        return _finish(problem, greedy, Status.FEASIBLE, None, "heuristic", t0, "greedy", "numpy", seed, {})
    if solver == "relaxation":
        from .relaxation import relaxation_bound
        bound, info = relaxation_bound(problem, red, linearization=linearization, **options)
        return _finish(problem, greedy, Status.FEASIBLE, bound, "heuristic plan, relaxation bound", t0,
                       "relaxation", info.pop("version"), seed, info)
    use_count = options.pop("count_bound", True)
    gap_limit = options.pop("gap_limit", 0.0)
    if not isinstance(gap_limit, (int, float)) or not 0.0 <= gap_limit < 1.0:
        raise ValueError(f"gap_limit={gap_limit!r} must be a relative gap in [0, 1), e.g. 0.005 for 0.5%")
    bound_time = options.pop("bound_time", None)
    lower = problem.objective(greedy)
    count, count_info = None, {}
    if use_count:
        from .bounds import count_bound
        left = max(0.0, time_limit - (time.perf_counter() - t0))  # the greedy plan has used some (0.4 s on ResNet-50)
        share = (max(SHORT_BOUND_SHARE * left, min(BOUND_SHARE * left, left - BACKEND_SECONDS))
                 if bound_time is None else float(bound_time))
        started = time.perf_counter() - t0
        on_bound = None if progress is None else (lambda b, t: progress(lower, max(b, lower), started + t))
        count, count_info = count_bound(problem, red, time_limit=share, reference=problem.counts(greedy),
                                        lower=lower, target_gap=gap_limit, progress=on_bound)
        if count_info.pop("interrupted", False):
            warnings.warn("interrupted while bounding; returning the greedy plan", RuntimeWarning)
            bound = count if count is not None and math.isfinite(count) else None
            return _finish(problem, greedy, Status.FEASIBLE, bound, "interrupted", t0, solver, version, seed,
                           {**count_info, "greedy_objective": lower, "bounds": {"count": bound}})
        if progress and count is not None:
            progress(lower, max(count, lower), time.perf_counter() - t0)
        if count is not None and count - lower <= gap_limit * abs(count) + 1e-9 * abs(count):
            details = {**count_info, "greedy_objective": lower, "bounds": {"count": count}}
            status = Status.OPTIMAL if count - lower <= 1e-9 * abs(count) else Status.FEASIBLE
            return _finish(problem, greedy, status, count, None if status is Status.OPTIMAL else "gap_limit",
                           t0, solver, version, seed, details)
    remaining = max(0.0, time_limit - (time.perf_counter() - t0))
    if progress is not None and count is not None:  # report the tighter of the two bounds, in one clock
        user_progress, offset = progress, time.perf_counter() - t0
        progress = lambda o, b, t: user_progress(o, count if b is None else min(b, count), t + offset)  # noqa: E731
    if solver == "cpsat":
        from .cpsat import solve_cpsat
        name, masks, bound, info = solve_cpsat(problem, red, time_limit=remaining, seed=seed, workers=workers,
                                               linearization=linearization, hint=greedy, progress=progress,
                                               upper=count, gap_limit=gap_limit)
        backend = "cpsat"
    else:
        from .mip import solve_mip
        name, masks, bound, info = solve_mip(problem, red, time_limit=remaining, seed=seed,
                                             linearization=linearization, hint=greedy, **options)
        backend = f"mip-{info.get('mip_solver', 'scip')}"
    details = {**info, **count_info, "greedy_objective": lower,
               "bounds": {backend: bound, "count": count}}
    if count is not None:
        bound = count if bound is None else min(bound, count)
    if masks is not None and problem.feasible(masks):
        if problem.objective(masks) < problem.objective(greedy):
            masks = greedy  # the warm start was better than what the solver returned
        status = Status.OPTIMAL if name == "OPTIMAL" else Status.FEASIBLE
        reason = None if status is Status.OPTIMAL else ("interrupted" if info.get("interrupted") else "time_limit")
        if status is Status.OPTIMAL and gap_limit > 0:  # CP-SAT says OPTIMAL when the gap limit is met
            status, reason = Status.FEASIBLE, "gap_limit"
        return _finish(problem, masks, status, bound, reason, t0, backend, version, seed, details)
    if name == "ERROR":
        warnings.warn(f"{backend} failed ({info.get('native_status')}); returning the greedy plan", RuntimeWarning)
    else:
        warnings.warn(f"{backend} found no solution within {time_limit:g} s; returning the greedy plan "
                      f"(status FEASIBLE, " + ("gap from the count bound)" if count is not None else
                                               "no certified gap)"), RuntimeWarning)
    return _finish(problem, greedy, Status.FEASIBLE, count, f"{backend}: no solution in time, greedy fallback",
                   t0, backend, version, seed, details)
