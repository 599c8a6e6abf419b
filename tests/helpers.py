"""Shared checks for the tests: random masks, and slim == mask / counted == modeled costs."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import qcqp_prune as qp


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter and norm statistic non-trivial random values, in place, so that
    leaks through BN shifts, zero-initialised heads or tiny layer scales cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() <= 1:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


def random_masks(graph: qp.ChannelGraph, seed: int = 0, keep: float = 0.5) -> list[np.ndarray]:
    """About ``keep`` of each prunable group, at least one channel; frozen groups whole; the
    sums of a union-coupled graph keep the OR of their operands."""
    rng = np.random.default_rng(seed)
    masks = []
    for g in graph.groups:
        if g.frozen:
            masks.append(np.ones(g.size, dtype=bool))
            continue
        m = rng.random(g.size) < keep
        m[rng.integers(g.size)] = True
        masks.append(m)
    if any(g.union_of for g in graph.groups):
        masks = qp.validate_masks(graph, {g.id: m for g, m in zip(graph.groups, masks) if not g.union_of})
    return masks


def counted_flops(model: torch.nn.Module, x) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*x) if isinstance(x, tuple) else model(x)
    return int(counter.get_total_flops())


def state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_state_unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} was modified"


def check_slim_matches_mask(model: torch.nn.Module, x, seed: int = 0, rtol: float = 1e-4,
                            graph: qp.ChannelGraph | None = None, masks: list | None = None) -> qp.ChannelGraph:
    """Trace, draw random masks (or use ``masks``), and check (1) slim(x) == masked(x) to ``rtol`` relative to the
    output scale, (2) counted FLOPs and parameters of the slimmed model equal the cost model,
    (3) the user's model is untouched. Returns the graph for further checks."""
    model.eval()
    before = state_snapshot(model)
    graph = graph or qp.trace(model, x)
    masks = random_masks(graph, seed) if masks is None else masks
    counts = [int(m.sum()) for m in masks]
    costs = qp.cost_model(graph)
    slim = qp.slim_model(model, graph, masks).eval()
    masked = qp.mask_model(model, graph, masks).eval()
    args = x if isinstance(x, tuple) else (x,)
    with torch.no_grad():
        ys, ym = slim(*args), masked(*args)
    ys = ys if isinstance(ys, (tuple, list)) else (ys,)
    ym = ym if isinstance(ym, (tuple, list)) else (ym,)
    for a, b in zip(ys, ym):
        scale = b.abs().max().item()
        assert scale > 0, "the model's output is identically zero: the check would prove nothing"
        err = (a - b).abs().max().item() / scale
        assert err <= rtol, f"slim and masked outputs differ: relative error {err:.2e}"
    assert counted_flops(slim, args) == round(costs["flops"].evaluate(counts))
    assert sum(p.numel() for p in slim.parameters()) == round(costs["params"].evaluate(counts))
    assert_state_unchanged(model, before)
    return graph
