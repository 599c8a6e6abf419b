"""The channel-dependency graph of a traced model: groups, prunable layers, cost terms.

:func:`build_channel_graph` traces a model with torch.fx, runs the channel propagation and
returns a :class:`ChannelGraph` whose group ids are compact (0..G-1) and stable for a given
architecture. Everything downstream (cost model, importance, masks to models, JSON plans)
reads this object.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import networkx as nx
import numpy as np
import torch
import torch.fx as fx

from .groups import Segment
from .propagate import FlopTerm, MemoryTerm, Propagator
from .unions import settle_unions
from .trace import NodeInfo, record, symbolic_trace


@dataclass(frozen=True)
class Member:
    """One axis position range of a parameter/buffer that belongs to a group."""

    tensor: str
    dim: int
    offset: int
    block: int


@dataclass
class ChannelGroup:
    """Channels kept or removed together; ``frozen`` groups are never pruned.

    With union coupling, the sum of an add is a group of its own whose mask is the OR of the
    groups in ``union_of`` (a *derived* group; empty for every other group).
    """

    id: int
    name: str
    size: int
    frozen_reasons: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    union_of: tuple[int, ...] = ()

    @property
    def frozen(self) -> bool:
        return bool(self.frozen_reasons)


@dataclass(frozen=True)
class PrunableLayer:
    """A Conv/Linear weight whose output (and input) axes are indexed by groups."""

    module: str
    weight: str
    kind: str  # "conv" | "linear" | "depthwise"
    out: tuple[Segment, ...]
    inp: tuple[Segment, ...] | None  # None for depthwise (no input axis)


@dataclass
class ChannelGraph:
    """Groups, prunable layers and per-node cost terms of one traced model."""

    groups: list[ChannelGroup]
    layers: list[PrunableLayer]
    claims: dict[tuple[str, int], tuple[Segment, ...]]
    flop_terms: list[FlopTerm]
    memory_terms: list[MemoryTerm]
    constant_flops: int
    constant_memory: int
    total_flops: int
    total_memory: int
    param_shapes: dict[str, tuple[int, ...]]
    buffer_shapes: dict[str, tuple[int, ...]]
    input_shapes: list[tuple[int, ...]]
    graph_module: fx.GraphModule
    node_info: dict[str, NodeInfo]
    node_layouts: dict[str, Any]
    unused_parameters: list[str]
    coupling: str = "shared"
    # union coupling: class member group -> the group whose width a slimmed stream carries
    carrier: dict[int, int] = field(default_factory=dict)
    shared_adds: list[str] = field(default_factory=list)  # adds kept shared in union mode, and why

    # ------------------------------------------------------------------ lookups
    @property
    def prunable_groups(self) -> list[ChannelGroup]:
        return [g for g in self.groups if not g.frozen]

    @property
    def frozen_reasons(self) -> dict[str, list[str]]:
        """Group name -> why it is frozen, naming the op responsible."""
        return {g.name: list(g.frozen_reasons) for g in self.groups if g.frozen}

    def group(self, name_or_id: str | int) -> ChannelGroup:
        if isinstance(name_or_id, (int, np.integer)):
            return self.groups[int(name_or_id)]
        for g in self.groups:
            if g.name == name_or_id:
                return g
        raise KeyError(f"no channel group named {name_or_id!r}; known groups: "
                       f"{[g.name for g in self.groups][:20]}...")

    def sizes(self) -> np.ndarray:
        return np.array([g.size for g in self.groups], dtype=np.int64)

    def segment_size(self, segs: Sequence[Segment] | None, counts: Sequence[int]) -> int:
        if segs is None:
            return 1
        return int(sum(int(counts[s.group]) * s.block for s in segs))

    def kept_indices(self, segs: Sequence[Segment], masks: Sequence[np.ndarray]) -> np.ndarray:
        """Positions along an axis laid out as ``segs`` that survive ``masks``."""
        out, offset = [], 0
        for s in segs:
            keep = np.flatnonzero(masks[s.group])
            if s.block == 1:
                out.append(offset + keep)
            else:
                out.append((offset + keep[:, None] * s.block + np.arange(s.block)[None, :]).ravel())
            offset += self.groups[s.group].size * s.block
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def fingerprint(self) -> str:
        """A hash of the architecture as the tracer saw it: groups, claims, parameter shapes."""
        payload = {
            "groups": [(g.name, g.size, g.frozen) for g in self.groups],
            "claims": sorted((k[0], k[1], [(s.group, s.block) for s in v]) for k, v in self.claims.items()),
            "params": sorted((k, list(v)) for k, v in self.param_shapes.items()),
            "inputs": [list(s) for s in self.input_shapes],
        }
        if self.coupling != "shared":
            payload["coupling"] = self.coupling
            payload["unions"] = [(g.id, list(g.union_of)) for g in self.groups if g.union_of]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    # ------------------------------------------------------------------ networkx views
    def group_graph(self) -> nx.MultiGraph:
        """Vertices are groups (attrs: size, frozen, reasons); edges are layers coupling them
        (``kind`` conv / linear / depthwise) and, with union coupling, each sum's operands
        (``kind="union"``)."""
        G = nx.MultiGraph()
        for g in self.groups:
            G.add_node(g.name, id=g.id, size=g.size, frozen=g.frozen, reasons=list(g.frozen_reasons))
        for layer in self.layers:
            outs = {s.group for s in layer.out}
            ins = {s.group for s in layer.inp} if layer.inp is not None else outs
            for a in sorted(outs):
                for b in sorted(ins):
                    G.add_edge(self.groups[a].name, self.groups[b].name, key=layer.module,
                               module=layer.module, kind=layer.kind)
        for g in self.groups:  # union coupling: a sum is tied to each of its operands
            for i in g.union_of:
                G.add_edge(self.groups[i].name, g.name, key=f"union:{g.name}", module=None, kind="union")
        return G

    def op_graph(self) -> nx.DiGraph:
        """The fx op graph with shapes, FLOPs and the channel groups of each node's output."""
        G = nx.DiGraph()
        for node in self.graph_module.graph.nodes:
            lay = self.node_layouts.get(node.name)
            groups = [self.groups[s.group].name for s in lay.segments] if hasattr(lay, "segments") else []
            info = self.node_info.get(node.name)
            G.add_node(node.name, op=node.op, target=str(node.target), groups=groups,
                       shape=None if info is None else info.shapes, flops=0 if info is None else info.flops)
            for inp in node.all_input_nodes:
                G.add_edge(inp.name, node.name)
        return G

    def summary(self) -> str:
        lines = [f"{len(self.groups)} channel groups ({len(self.prunable_groups)} prunable), "
                 f"{len(self.layers)} prunable layers, {self.total_flops:,} FLOPs"]
        for g in self.groups:
            state = "frozen: " + g.frozen_reasons[0] if g.frozen else "prunable"
            if g.union_of:
                state += " (OR of " + ", ".join(self.groups[i].name for i in g.union_of) + ")"
            lines.append(f"  [{g.id:3d}] {g.name:40s} {g.size:6d}  {state}")
        return "\n".join(lines)


def _as_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and all(isinstance(x, torch.Tensor) for x in example_inputs):
        return tuple(example_inputs)
    raise TypeError(
        f"example_inputs must be a tensor or a tuple of tensors (one per forward() argument), "
        f"got {type(example_inputs).__name__}"
    )


def build_channel_graph(
    model: torch.nn.Module,
    example_inputs: Any,
    *,
    frozen: Sequence[str] = (),
    leaf_modules: Sequence[str | type] = (),
    coupling: str = "shared",
) -> ChannelGraph:
    """Trace ``model`` on ``example_inputs`` into a :class:`ChannelGraph`.

    ``frozen`` names modules (or groups) whose channels must never be pruned;
    ``leaf_modules`` names submodules (or types) that torch.fx should not trace into
    (they become opaque ops and freeze the channels they touch). ``coupling`` says what an
    add does to its operands' channels: ``"shared"`` (one keep-mask for all of them) or
    ``"union"`` (the sum keeps a channel when any operand does; see ``graph/unions.py``).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if coupling not in ("shared", "union"):
        raise ValueError(f"coupling={coupling!r} must be 'shared' (adds share one keep-mask) or 'union' "
                         f"(a channel of a sum is kept when any operand keeps it)")
    inputs = _as_tuple(example_inputs)
    adapters = [name for name, m in model.named_modules() if getattr(m, "qcqp_stream_adapter", False)]
    if adapters:  # its hooks widen tensors behind the modules' backs: the groups would be wrong
        raise ValueError(
            f"the model was slimmed with union coupling: {len(adapters)} modules carry stream adapters "
            f"(e.g. `{adapters[0]}`) that gather and scatter channels of residual streams in forward "
            f"hooks, so its modules compute fewer channels than its tensors carry and it cannot be "
            f"traced again; make the next plan on the original (or a masked) model, or slim with "
            f"coupling='shared' a model you mean to prune again")
    gm = symbolic_trace(model, leaf_modules)
    info, _ = record(gm, inputs)
    prop = Propagator(gm, info, coupling).run()
    t = prop.table

    known = {name for name, _ in model.named_modules()}
    for name in frozen:
        hits = [k for k in prop.claims if k[0].startswith(f"{name}.")]
        named_groups = [i for i, r in enumerate(t.records) if r.name == name]
        if not hits and not named_groups and name not in known:
            raise ValueError(f"frozen={name!r} names no module or channel group of the model; "
                             f"use a name from model.named_modules()")
        for key in hits:
            for s in prop.claims[key]:
                t.freeze(s.group, f"frozen by the user (frozen={name!r})")
        for g in named_groups:
            t.freeze(g, f"frozen by the user (frozen={name!r})")

    unions = settle_unions(t, prop.unions, prop.claims, gm, prop.layouts)
    roots = sorted({t.find(i) for i in range(len(t.records))} - t.dead)
    new_id = {r: i for i, r in enumerate(roots)}

    def rs(segs: tuple[Segment, ...] | None) -> tuple[Segment, ...] | None:
        if segs is None:
            return None
        return tuple(Segment(new_id[t.find(s.group)], s.block) for s in segs)

    names: dict[str, int] = {}
    groups = []
    for r in roots:
        rec = t.records[r]
        name = rec.name
        if name in names:
            names[name] += 1
            name = f"{name}#{names[rec.name]}"
        else:
            names[name] = 1
        groups.append(ChannelGroup(new_id[r], name, rec.size, list(rec.reasons),
                                   union_of=tuple(new_id[i] for i in unions.derived.get(r, ()))))
    carrier = {new_id[g]: new_id[c] for g, c in unions.carrier.items()}

    claims = {k: rs(v) for k, v in prop.claims.items()}
    for (tensor, dim), segs in claims.items():
        offset = 0
        for s in segs:
            groups[s.group].members.append(Member(tensor, dim, offset, s.block))
            offset += groups[s.group].size * s.block

    layers = []
    for rec in prop.layers.values():
        out = claims[(rec.weight, 0)]
        inp = claims.get((rec.weight, 1)) if rec.kind != "depthwise" else None
        layers.append(PrunableLayer(rec.module, rec.weight, rec.kind, out, inp))

    flop_terms = [FlopTerm(f.node, f.coef, rs(f.out), rs(f.inp)) for f in prop.flop_terms]
    # a slimmed model writes a union class's tensors at its carrier's width
    memory_terms = [MemoryTerm(m.node, m.coef, tuple(Segment(carrier.get(x.group, x.group), x.block)
                                                     for x in rs(m.segments)))
                    for m in prop.memory_terms]
    layouts = {}
    for k, v in prop.layouts.items():
        if hasattr(v, "segments"):
            layouts[k] = type(v)(v.dim, rs(v.segments))
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    used |= {n.target for n in gm.graph.nodes if n.op == "call_module"}
    unused = [p for p, _ in model.named_parameters()
              if not any(p == u or p.startswith(f"{u}.") for u in used)]
    return ChannelGraph(
        groups=groups,
        layers=layers,
        claims=claims,
        flop_terms=flop_terms,
        memory_terms=memory_terms,
        constant_flops=prop.constant_flops,
        constant_memory=prop.constant_memory,
        total_flops=sum(i.flops for i in info.values()),
        total_memory=sum(i.written for i in info.values()),
        param_shapes={k: tuple(v.shape) for k, v in model.named_parameters()},
        buffer_shapes={k: tuple(v.shape) for k, v in model.named_buffers()},
        input_shapes=[tuple(x.shape) for x in inputs],
        graph_module=gm,
        node_info=info,
        node_layouts=layouts,
        unused_parameters=unused,
        coupling=coupling,
        carrier=carrier,
        shared_adds=unions.shared,
    )
