"""Channel importance as objective terms of the QCQP (DESIGN.md section 4).

For each prunable layer the criterion gives a non-negative matrix ``I[a, b]`` over the
weight's output and input positions (a vector for depthwise convs). It is cut into one
block per (output segment, input segment) pair, each a ``BilinearTerm`` ``x_g^T I x_h``, so
the kept importance of a mask set is exactly the criterion summed over the weights that
survive in the slimmed model. Criteria:

- ``"l2"``: ``sum_k W[a, b, k]^2`` (the QCQP paper's choice), ``"l1"``: ``sum_k |W[a, b, k]|``;
- ``"bn_scale"``: ``|gamma|`` of the BatchNorm over each channel (network slimming /
  AdaPruner), as linear terms per group;
- ``"taylor"``: first-order Taylor ``sum_k (W * dL/dW)^2`` on a batch (needs ``data`` and a
  ``loss_fn``);
- any callable ``f(model, graph) -> {weight name: array}`` giving per-layer matrices of the
  weight's ``(out, in)`` shape (or ``(out,)`` for depthwise / per-channel scores).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn as nn

from .graph.channel_graph import ChannelGraph
from .graph.groups import Segment
from .solvers.problem import BilinearTerm, LinearTerm

CRITERIA = ("l2", "l1", "bn_scale", "taylor")


def _reduce(w: torch.Tensor, how: str) -> np.ndarray:
    w = w.detach().double()
    v = w.square() if how == "l2" else w.abs()
    if v.dim() > 2:
        v = v.flatten(2).sum(-1)
    return v.cpu().numpy()


def layer_scores(model: nn.Module, graph: ChannelGraph, importance: Any, *,
                 data: Any = None, loss_fn: Callable | None = None) -> dict[str, np.ndarray]:
    """Per prunable layer weight name, the importance matrix ``(out, in)`` or vector ``(out,)``."""
    if callable(importance) and not isinstance(importance, str):
        scores = importance(model, graph)
        if not isinstance(scores, Mapping):
            raise TypeError(f"an importance callable must return a dict {{weight name: array}}, "
                            f"got {type(scores).__name__}")
        return {k: np.asarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v,
                              dtype=np.float64) for k, v in scores.items()}
    if importance not in CRITERIA:
        raise ValueError(f"importance={importance!r} is not a known criterion; use one of "
                         f"{CRITERIA} or a callable f(model, graph) -> {{weight name: array}}")
    params = dict(model.named_parameters())
    if importance in ("l2", "l1"):
        return {l.weight: _reduce(params[l.weight], importance) for l in graph.layers}
    if importance == "taylor":
        return _taylor(model, graph, data, loss_fn)
    # bn_scale: per-channel |gamma| of every BatchNorm over a group
    out: dict[str, np.ndarray] = {}
    modules = dict(model.named_modules())
    for (tensor, dim), segs in graph.claims.items():
        mod_name, _, attr = tensor.rpartition(".")
        if attr == "weight" and isinstance(modules.get(mod_name), nn.modules.batchnorm._BatchNorm):
            out[tensor] = params[tensor].detach().abs().double().cpu().numpy()
    if not out:
        raise ValueError("importance='bn_scale' needs BatchNorm layers over prunable channels; "
                         "this model has none: use 'l2'")
    return out


def _taylor(model: nn.Module, graph: ChannelGraph, data: Any, loss_fn: Callable | None) -> dict[str, np.ndarray]:
    if data is None:
        raise ValueError("importance='taylor' needs data=(inputs, targets): a batch to take the "
                         "loss gradient on")
    inputs, targets = data
    loss_fn = loss_fn or nn.functional.cross_entropy
    clone = copy.deepcopy(model)  # gradients and BN statistics must not touch the user's model
    clone.eval()
    clone.zero_grad(set_to_none=True)
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    loss = loss_fn(clone(*args), targets)
    loss.backward()
    params = dict(clone.named_parameters())
    out = {}
    for l in graph.layers:
        p = params[l.weight]
        g = p.grad if p.grad is not None else torch.zeros_like(p)
        out[l.weight] = _reduce(p * g, "l2")
    return out


def _positions(graph: ChannelGraph, segs: tuple[Segment, ...]):
    offset = 0
    for s in segs:
        size = graph.groups[s.group].size
        yield s, offset, size
        offset += size * s.block


def _collapse(m: np.ndarray, axis: int, block: int) -> np.ndarray:
    """Sum consecutive runs of ``block`` entries along ``axis`` (one run per channel)."""
    if block == 1:
        return m
    shape = list(m.shape)
    shape[axis:axis + 1] = [shape[axis] // block, block]
    return m.reshape(shape).sum(axis=axis + 1)


def objective_terms(graph: ChannelGraph, scores: Mapping[str, np.ndarray]) -> tuple[list[BilinearTerm], list[LinearTerm], float]:
    """Cut per-weight scores into solver terms over groups; weights no group indexes add to a
    constant. Raises ``ValueError`` on NaN/inf or negative scores, naming the weight."""
    bil: list[BilinearTerm] = []
    lin: list[LinearTerm] = []
    const = 0.0
    for name, m in scores.items():
        if not np.all(np.isfinite(m)):
            raise ValueError(f"importance of {name} contains NaN or inf; check the weights (or "
                             f"the data and loss for 'taylor')")
        if np.any(m < 0):
            raise ValueError(f"importance of {name} has negative entries; scores must be >= 0")
        out = graph.claims.get((name, 0))
        inp = graph.claims.get((name, 1))
        if out is None:
            const += float(m.sum())
            continue
        if m.ndim == 1 or inp is None:
            vec = m if m.ndim == 1 else m.sum(axis=1)
            for s, off, size in _positions(graph, out):
                lin.append(LinearTerm(s.group, _collapse(vec[off:off + size * s.block], 0, s.block)))
            continue
        if m.shape[0] != sum(graph.groups[s.group].size * s.block for s in out):
            raise ValueError(f"importance of {name} has shape {m.shape}, which does not match "
                             f"the weight's output channels")
        for so, oo, no in _positions(graph, out):
            rows = _collapse(m[oo:oo + no * so.block], 0, so.block)
            for si, oi, ni in _positions(graph, inp):
                block = _collapse(rows[:, oi:oi + ni * si.block], 1, si.block)
                bil.append(BilinearTerm(so.group, si.group, np.ascontiguousarray(block)))
    return bil, lin, const


def kept_importance(graph: ChannelGraph, scores: Mapping[str, np.ndarray], masks) -> float:
    """The criterion summed over the weights that survive ``masks`` (the plan's objective)."""
    bil, lin, const = objective_terms(graph, scores)
    total = const
    for t in bil:
        total += float(masks[t.g].astype(float) @ t.weights @ masks[t.h].astype(float))
    for t in lin:
        total += float(t.weights[masks[t.g]].sum())
    return total
