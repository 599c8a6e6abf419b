"""Hypothesis strategies for random CNN architectures (DAGs of convs, norms, adds, concats,
splits, channels-last MLP blocks, flatten + linear heads, several inputs/outputs)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st


class RandomNet(nn.Module):
    """Interprets a static op list; torch.fx unrolls the loop into a plain graph."""

    def __init__(self, spec: list[tuple], in_channels: list[int], heads: list[tuple]) -> None:
        super().__init__()
        self.spec, self.heads = spec, heads
        self.n_inputs = len(in_channels)
        self.layers = nn.ModuleDict()
        self.scales = nn.ParameterDict()
        for i, op in enumerate(spec):
            kind, args = op[0], op[1:]
            key = f"op{i}"
            if kind == "conv":
                _, cin, cout, k = args
                self.layers[key] = nn.Conv2d(cin, cout, k, padding=k // 2, bias=(cout % 2 == 0))
            elif kind == "dw":
                _, c = args
                self.layers[key] = nn.Conv2d(c, c, 3, padding=1, groups=c)
            elif kind == "gconv":
                _, c = args
                self.layers[key] = nn.Conv2d(c, c, 1, groups=2)
            elif kind == "bn":
                self.layers[key] = nn.BatchNorm2d(args[1])
            elif kind == "mlp":
                _, c, h = args
                self.layers[key] = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, h), nn.GELU(), nn.Linear(h, c))
            elif kind == "scale":
                self.scales[key] = nn.Parameter(torch.ones(args[1], 1, 1))
        for j, (src, c, kind, n_out) in enumerate(heads):
            feat = c if kind == "pool" else c * 4
            self.layers[f"head{j}"] = nn.Linear(feat, n_out)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> Any:
        ts = [x, y][: self.n_inputs]
        for i, op in enumerate(self.spec):
            kind, a = op[0], op[1]
            key = f"op{i}"
            if kind in ("conv", "dw", "gconv", "bn"):
                ts.append(self.layers[key](ts[a]))
            elif kind == "relu":
                ts.append(F.relu(ts[a]))
            elif kind == "pool":
                ts.append(F.max_pool2d(ts[a], 3, 1, 1))
            elif kind == "add":
                ts.append(ts[a] + ts[op[2]])
            elif kind == "gate":
                ts.append(ts[a] * torch.sigmoid(ts[op[2]]))
            elif kind == "cat":
                ts.append(torch.cat([ts[a], ts[op[2]]], dim=1))
            elif kind == "split":
                x1, x2 = ts[a].chunk(2, dim=1)
                ts += [x1, x2]
            elif kind == "mlp":
                y = self.layers[key](ts[a].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
                ts.append(ts[a] + y)
            elif kind == "scale":
                ts.append(ts[a] * self.scales[key])
        outs = []
        for j, (src, c, kind, n_out) in enumerate(self.heads):
            t = ts[src]
            t = F.adaptive_avg_pool2d(t, 1).flatten(1) if kind == "pool" else F.adaptive_avg_pool2d(t, 2).flatten(1)
            outs.append(self.layers[f"head{j}"](t))
        return outs[0] if len(outs) == 1 else tuple(outs)


@st.composite
def random_nets(draw: st.DrawFn, max_ops: int = 14) -> tuple[RandomNet, tuple[torch.Tensor, ...]]:
    n_inputs = draw(st.integers(1, 2))
    in_channels = [draw(st.integers(1, 4)) for _ in range(n_inputs)]
    chans = list(in_channels)  # channel count of every tensor so far
    spec: list[tuple] = []
    for _ in range(draw(st.integers(1, max_ops))):
        a = draw(st.integers(0, len(chans) - 1))
        c = chans[a]
        kind = draw(st.sampled_from(["conv", "conv", "conv", "dw", "gconv", "bn", "relu", "pool",
                                     "add", "gate", "cat", "split", "mlp", "scale"]))
        same = [i for i, x in enumerate(chans) if x == c]
        if kind == "conv":
            cout = draw(st.integers(1, 8))
            spec.append(("conv", a, c, cout, draw(st.sampled_from([1, 3]))))
            chans.append(cout)
        elif kind in ("dw", "bn", "scale"):
            spec.append((kind, a, c))
            chans.append(c)
        elif kind == "gconv" and c % 2 == 0:
            spec.append(("gconv", a, c))
            chans.append(c)
        elif kind in ("relu", "pool"):
            spec.append((kind, a))
            chans.append(c)
        elif kind in ("add", "gate"):
            b = draw(st.sampled_from(same))
            spec.append((kind, a, b))
            chans.append(c)
        elif kind == "cat":
            b = draw(st.integers(0, len(chans) - 1))
            spec.append(("cat", a, b))
            chans.append(c + chans[b])
        elif kind == "split" and c % 2 == 0:
            spec.append(("split", a))
            chans += [c // 2, c // 2]
        elif kind == "mlp":
            spec.append(("mlp", a, c, draw(st.integers(1, 8))))
            chans.append(c)
    heads = []
    srcs = [len(chans) - 1] + ([draw(st.integers(0, len(chans) - 1))] if draw(st.booleans()) else [])
    for src in srcs:
        heads.append((src, chans[src], draw(st.sampled_from(["pool", "flat"])), draw(st.integers(1, 3))))
    seed = draw(st.integers(0, 2**16))
    torch.manual_seed(seed)
    net = RandomNet(spec, in_channels, heads)
    inputs = tuple(torch.randn(2, c, 5, 5) for c in in_channels)
    return net, inputs


class RandomResNet(nn.Module):
    """A residual stream through random blocks: one- or two-conv branches with or without a
    norm, projection skips, three-way adds, a norm on the stream, a concatenated stream."""

    def __init__(self, blocks: list[tuple], width: int, cat_stem: bool) -> None:
        super().__init__()
        self.blocks, self.cat_stem = blocks, cat_stem
        self.stem = nn.Conv2d(3, width if not cat_stem else 2, 3, padding=1)
        self.stem2 = nn.Conv2d(3, width - 2, 1) if cat_stem else None
        self.layers = nn.ModuleList()
        c = width
        for kind, out, mid in blocks:
            m = nn.ModuleDict()
            if kind == "one":
                m["branch"] = nn.Conv2d(c, out, 3, padding=1)
            else:
                m["branch"] = nn.Sequential(nn.Conv2d(c, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(),
                                            nn.Conv2d(mid, out, 3, padding=1), nn.BatchNorm2d(out))
            if out != c or kind == "projection":
                m["skip"] = nn.Conv2d(c, out, 1)
            if kind == "three":
                m["third"] = nn.Conv2d(c, out, 1)
            if kind == "norm":
                m["norm"] = nn.BatchNorm2d(out)
            self.layers.append(m)
            c = out
        self.head = nn.Linear(c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stem(x) if not self.cat_stem else torch.cat([self.stem(x), self.stem2(x)], dim=1)
        for (kind, _, _), m in zip(self.blocks, self.layers):
            skip = m["skip"](s) if "skip" in m else s
            y = skip + m["branch"](s)
            if "third" in m:
                y = y + m["third"](s)
            if "norm" in m:
                y = m["norm"](y)
            s = F.relu(y)
        return self.head(F.adaptive_avg_pool2d(s, 1).flatten(1))


@st.composite
def random_residual_nets(draw: st.DrawFn) -> tuple[RandomResNet, tuple[torch.Tensor]]:
    width = draw(st.integers(3, 8))
    blocks, c = [], width
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["one", "two", "two", "projection", "three", "norm"]))
        out = c if draw(st.integers(0, 3)) else draw(st.integers(2, 8))
        blocks.append((kind, out, draw(st.integers(1, 6))))
        c = out
    net = RandomResNet(blocks, width, draw(st.booleans()))
    return net, (torch.randn(2, 3, 5, 5),)
