"""Union coupling after tracing: settle the OR relations recorded at adds (DESIGN.md section 3).

With ``coupling="union"`` the propagator gives every add's sum a group of its own, the OR of
the operands' groups. Later merges (a gate, a module called twice) can make such a relation
refer to itself; a slimmed model can only carry a union class whose channels every module
can gather and scatter. Where either fails, the groups of that add (or that class) are merged
back, which is exactly shared coupling there. What is left is a set of OR relations over
union-find roots, one *carrier* per class (the OR of all its sources: the width a slimmed
model's residual stream physically has), and frozen-ness pushed through the relations.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import networkx as nx
import torch.fx as fx

from .groups import GroupTable


@dataclass
class Unions:
    """OR relations over table roots: ``derived[out] = inputs``; ``carrier[g]`` is the group
    whose width carries class member ``g`` in a slimmed model; ``shared`` says which adds fell
    back to shared coupling and why."""

    derived: dict[int, tuple[int, ...]] = field(default_factory=dict)
    carrier: dict[int, int] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)


def _relations(t: GroupTable, recorded: list[tuple[int, tuple[int, ...], str]]) -> tuple[dict, list]:
    """Root-level relations, and the groups to merge where a relation is no longer an OR."""
    rel: dict[int, tuple[int, ...]] = {}
    where: dict[int, str] = {}
    merge: list[tuple[set[int], str]] = []
    for out, inputs, node in recorded:
        o = t.find(out)
        ins = tuple(dict.fromkeys(t.find(i) for i in inputs))
        if o in ins:
            if len(ins) > 1:
                merge.append(({o, *ins}, f"add `{node}`: its sum is merged with an operand later"))
            continue
        if len(ins) == 1:
            merge.append(({o, ins[0]}, ""))  # both operands became one group: the sum is it
            continue
        if o in rel and set(rel[o]) != set(ins):
            merge.append(({o, *ins, *rel[o]}, f"adds `{where[o]}` and `{node}` write one group"))
            continue
        rel[o], where[o] = ins, node
    if not merge:
        graph = nx.DiGraph([(i, o) for o, ins in rel.items() for i in ins])
        for cycle in nx.simple_cycles(graph):
            merge.append((set(cycle) | {i for o in cycle if o in rel for i in rel[o]}, "adds form a cycle"))
            break
    return rel, merge


def _unsupported(rel: dict[int, tuple[int, ...]], t: GroupTable, claims: dict, gm: fx.GraphModule,
                 layouts: dict) -> list[tuple[set[int], str]]:
    """Classes a slimmed model could not carry: a parameter of a class group that is not owned
    by a module called exactly once (the gather/scatter hooks sit on modules), or a module
    that reads a class group through an argument other than its first."""
    classes = list(nx.connected_components(nx.Graph([(o, i) for o, ins in rel.items() for i in ins])))
    class_of = {g: k for k, c in enumerate(classes) for g in c}
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    attrs = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    bad: dict[int, str] = {}
    for (tensor, _), segs in claims.items():
        module = tensor.rpartition(".")[0]
        for s in segs:
            k = class_of.get(t.find(s.group))
            if k is not None and k not in bad and (tensor in attrs or calls[module] != 1):
                bad[k] = (f"`{tensor}` is used outside a module call" if tensor in attrs
                          else f"module `{module}` is called {calls[module]} times")
    for n in gm.graph.nodes:
        if n.op != "call_module":
            continue
        for arg in n.all_input_nodes[1:]:
            lay = layouts.get(arg.name)
            for s in getattr(lay, "segments", ()):
                k = class_of.get(t.find(s.group))
                if k is not None and k not in bad:
                    bad[k] = f"module `{n.target}` reads the stream through a second argument"
    return [(set(classes[k]), f"union coupling not supported here ({why})") for k, why in bad.items()]


def settle_unions(t: GroupTable, recorded: list[tuple[int, tuple[int, ...], str]], claims: dict,
                  gm: fx.GraphModule, layouts: dict) -> Unions:
    """Final OR relations (merging back where union coupling cannot hold), carriers and
    frozen-ness; mutates the table ``t`` (merges, new carrier groups, freezes)."""
    result = Unions()
    while True:
        rel, merge = _relations(t, recorded)
        if not merge:
            merge = _unsupported(rel, t, claims, gm, layouts)
        if not merge:
            break
        for groups, why in merge:
            first, *rest = sorted(groups)
            for g in rest:
                t.union(first, g)
            if why:
                result.shared.append(f"{t.records[t.find(first)].name}: {why}")
    # a frozen sum freezes everything added into it; a sum with a frozen operand is always full
    order = list(nx.topological_sort(nx.DiGraph([(i, o) for o, ins in rel.items() for i in ins])))
    for o in reversed(order):  # (unless another operand is frozen: that one keeps the sum full)
        if o in rel and t.is_frozen(o) and not any(t.is_frozen(i) for i in rel[o]):
            for i in rel[o]:
                t.freeze(i, f"added into the frozen stream {t.records[o].name!r}")
    for o in order:
        if o in rel and not t.is_frozen(o):
            frozen = [i for i in rel[o] if t.is_frozen(i)]
            if frozen:
                t.freeze(o, f"sum with the frozen {t.records[frozen[0]].name!r} (always full)")
    result.derived = dict(rel)
    for members in nx.connected_components(nx.Graph([(o, i) for o, ins in rel.items() for i in ins])):
        sources = {g for g in members if g not in rel}
        src: dict[int, frozenset[int]] = {}  # each sum's sources, memoized (sums share operands)
        for o in order:
            if o in members and o in rel:
                src[o] = frozenset().union(*(src.get(i, (i,)) for i in rel[o]))
        carrier = next((o for o in sorted(members) if o in rel and src[o] == sources), None)
        if carrier is None:  # no single sum covers the class: a group for the stream's full width
            first = min(members)
            carrier = t.new(f"stream:{t.records[first].name}", t.size(first))
            result.derived[carrier] = tuple(sorted(sources))
            if any(t.is_frozen(s) for s in sources):
                t.freeze(carrier, "carries a frozen group")
        for g in members:
            result.carrier[g] = carrier
        result.carrier[carrier] = carrier
    return result
