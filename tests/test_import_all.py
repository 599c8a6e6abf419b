"""Every module in one process, every back-end solving in it: the ortools/highspy clash
(DESIGN.md section 4) must never come back."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import numpy as np

from qcqp_prune.solvers import (BACKENDS, BilinearTerm, ChannelProblem, QuadraticCost, ResourceConstraint,
                                Status, solve_channels)


def test_all_modules_import_and_all_backends_solve_in_one_process():
    import qcqp_prune.graph
    import qcqp_prune.solvers
    names = []
    for pkg in (qcqp_prune, qcqp_prune.graph, qcqp_prune.solvers):  # graph/ and solvers/ are mapped folders
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    assert {"qcqp_prune.solvers.cpsat", "qcqp_prune.solvers.mip", "qcqp_prune.solvers.relaxation",
            "qcqp_prune.graph.propagate", "qcqp_prune.cli", "qcqp_prune.latency"} <= set(names)
    for name in names:
        importlib.import_module(name)
    assert "highspy" not in sys.modules, "highspy was imported: it breaks ortools in one process"
    rng = np.random.default_rng(0)
    p = ChannelProblem((3, 4, 2), (True, False, False),
                       bilinear=(BilinearTerm(1, 0, rng.random((4, 3))), BilinearTerm(2, 1, rng.random((2, 4)))),
                       constraints=(ResourceConstraint("flops", QuadraticCost({(0, 1): 2.0, (1, 2): 3.0}), 30.0),))
    best = solve_channels(p, "exhaustive").objective
    for backend in BACKENDS:
        sol = solve_channels(p, backend, time_limit=5.0)
        assert p.feasible(sol.masks)
        if backend in ("cpsat", "mip"):
            assert sol.status is Status.OPTIMAL and np.isclose(sol.objective, best)
    assert np.isclose(solve_channels(p, "mip", mip_solver="highs").objective, best)
