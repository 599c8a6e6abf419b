"""Channel groups, channel layouts and the union-find that merges groups while tracing.

A *group* is a set of channels that are kept or removed together. A tensor's channel axis is
described by a :class:`Layout`: the axis index and a tuple of :class:`Segment`\\ s, one per
group concatenated along the axis (``cat`` makes several). A segment's ``block`` says how
many consecutive features each channel owns (``flatten`` of ``C x H x W`` gives
``block = H * W``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    """``group``'s channels laid out along an axis, each repeated ``block`` times in a row."""

    group: int
    block: int = 1


@dataclass(frozen=True)
class Layout:
    """Which axis of a tensor carries channels, and which groups it is made of."""

    dim: int
    segments: tuple[Segment, ...]


@dataclass
class GroupRecord:
    name: str
    size: int
    reasons: list[str] = field(default_factory=list)


class GroupTable:
    """Union-find over groups created during tracing; frozen-ness and reasons follow merges."""

    def __init__(self) -> None:
        self.records: list[GroupRecord] = []
        self.parent: list[int] = []
        self.dead: set[int] = set()  # roots replaced by the pieces they were split into

    def new(self, name: str, size: int, frozen_reason: str | None = None) -> int:
        gid = len(self.records)
        self.records.append(GroupRecord(name, int(size)))
        self.parent.append(gid)
        if frozen_reason:
            self.records[gid].reasons.append(frozen_reason)
        return gid

    def find(self, g: int) -> int:
        root = g
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[g] != root:
            self.parent[g], g = root, self.parent[g]
        return root

    def size(self, g: int) -> int:
        return self.records[self.find(g)].size

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self.records[ra].size != self.records[rb].size:
            raise AssertionError(
                f"internal error: merging groups of different sizes "
                f"({self.records[ra].name}={self.records[ra].size}, "
                f"{self.records[rb].name}={self.records[rb].size})"
            )
        keep, drop = (ra, rb) if ra < rb else (rb, ra)
        self.parent[drop] = keep
        self.records[keep].reasons.extend(self.records[drop].reasons)
        return keep

    def freeze(self, g: int, reason: str) -> None:
        rec = self.records[self.find(g)]
        if reason not in rec.reasons:
            rec.reasons.append(reason)

    def is_frozen(self, g: int) -> bool:
        return bool(self.records[self.find(g)].reasons)

    def layout_size(self, layout: Layout) -> int:
        return sum(self.size(s.group) * s.block for s in layout.segments)

    def same_structure(self, a: tuple[Segment, ...], b: tuple[Segment, ...]) -> bool:
        return len(a) == len(b) and all(
            x.block == y.block and self.size(x.group) == self.size(y.group) for x, y in zip(a, b)
        )

    def merge_segments(self, a: tuple[Segment, ...], b: tuple[Segment, ...], why: str) -> bool:
        """Merge two segment lists pairwise; if they do not line up, freeze both and say why."""
        if self.same_structure(a, b):
            for x, y in zip(a, b):
                self.union(x.group, y.group)
            return True
        for s in (*a, *b):
            self.freeze(s.group, f"{why}: channel segments do not line up")
        return False
