"""One test per construct of the channel-group table (DESIGN.md section 3).

Each test checks the groups the tracer finds (sizes, members, frozen or not, reasons) on a
small hand-written module, then that slimming and masking agree on it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import qcqp_prune as qp
from helpers import check_slim_matches_mask, randomize


def prunable(graph: qp.ChannelGraph) -> dict[str, int]:
    return {g.name: g.size for g in graph.groups if not g.frozen}


def frozen(graph: qp.ChannelGraph) -> dict[str, str]:
    return {g.name: " | ".join(g.frozen_reasons) for g in graph.groups if g.frozen}


def members(graph: qp.ChannelGraph, name: str) -> set[tuple[str, int]]:
    return {(m.tensor, m.dim) for m in graph.group(name).members}


def run(model: nn.Module, *shape: int, seed: int = 0) -> qp.ChannelGraph:
    torch.manual_seed(seed)
    randomize(model, seed)
    x = torch.randn(*shape)
    return check_slim_matches_mask(model, x)


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        y = F.relu(self.bn(self.c1(x)))
        y = F.adaptive_avg_pool2d(self.c2(y), 1).flatten(1)
        return self.fc(y)


def test_conv_and_linear_start_groups_and_index_their_inputs():
    g = run(Chain(), 2, 3, 8, 8)
    assert prunable(g) == {"c1": 8, "c2": 6}
    assert members(g, "c1") == {("c1.weight", 0), ("c1.bias", 0), ("bn.weight", 0), ("bn.bias", 0),
                                ("bn.running_mean", 0), ("bn.running_var", 0), ("c2.weight", 1)}
    assert members(g, "c2") == {("c2.weight", 0), ("fc.weight", 1)}
    assert "network input" in frozen(g)["input:x"]
    assert "network output" in frozen(g)["fc"]
    layer = {l.module: l for l in g.layers}
    assert layer["c2"].kind == "conv" and layer["fc"].kind == "linear"
    assert [g.groups[s.group].name for s in layer["c2"].inp] == ["c1"]


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.out = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.out(F.relu6(self.bn(self.dw(self.pw(x)))))


def test_depthwise_conv_passes_its_input_group_through():
    g = run(Depthwise(), 2, 3, 8, 8)
    assert prunable(g) == {"pw": 8}
    assert {("dw.weight", 0), ("dw.bias", 0), ("out.weight", 1)} <= members(g, "pw")
    assert {l.module: l.kind for l in g.layers}["dw"] == "depthwise"


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.g = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.b = nn.Conv2d(8, 4, 1)
        self.c = nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.c(self.b(self.g(self.a(x))))


def test_grouped_conv_is_frozen_with_a_reason():
    g = run(Grouped(), 2, 3, 8, 8)
    assert "grouped convolution (groups=2" in frozen(g)["a"]
    assert "grouped convolution" in frozen(g)["g"]
    assert prunable(g) == {"b": 4}


class PassThrough(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.ops = nn.Sequential(nn.BatchNorm2d(8), nn.GELU(), nn.Dropout(0.3), nn.MaxPool2d(2),
                                 nn.InstanceNorm2d(8, affine=True), nn.Hardswish(), nn.PReLU(8),
                                 nn.GroupNorm(8, 8), nn.AvgPool2d(1))
        self.c2 = nn.Conv2d(8, 5, 1)

    def forward(self, x):
        y = self.ops(self.c1(x))
        y = F.interpolate(y, scale_factor=2.0, mode="nearest")
        y = torch.sigmoid(y) * 2 - y.clamp(min=0)
        return self.c2(y)


def test_norms_activations_pooling_dropout_interpolate_pass_through():
    g = run(PassThrough(), 2, 3, 8, 8)
    assert prunable(g) == {"c1": 8}
    assert {("ops.0.weight", 0), ("ops.4.weight", 0), ("ops.6.weight", 0), ("ops.7.weight", 0),
            ("c2.weight", 1)} <= members(g, "c1")


class NormsOverChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 1)
        self.gn = nn.GroupNorm(2, 8)
        self.c2 = nn.Conv2d(8, 6, 1)
        self.ln = nn.LayerNorm(6)
        self.c3 = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        y = self.c2(self.gn(self.c1(x)))
        y = self.ln(y.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.c3(y)


def test_norms_that_mix_channels_freeze_them():
    # LayerNorm / GroupNorm statistics run over the channels: pruning one channel changes the
    # others, so slim == mask cannot hold. We freeze instead of guessing.
    g = run(NormsOverChannels(), 2, 3, 8, 8)
    assert "GroupNorm with 2 groups" in frozen(g)["c1"]
    assert "LayerNorm normalizes over the channel axis" in frozen(g)["c2"]
    assert prunable(g) == {}


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 1)
        self.g = nn.Conv2d(8, 8, 1)
        self.d = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        s = self.stem(x)
        y = s + self.a(s)
        y = y - self.b(y)
        y = y * torch.sigmoid(self.g(y))
        y = y / 2.0
        return self.head(y + self.d(y))


def test_elementwise_ops_merge_groups():
    g = run(Residual(), 2, 3, 8, 8)
    assert prunable(g) == {"stem": 8}
    assert {("a.weight", 0), ("b.weight", 0), ("g.weight", 0), ("d.weight", 0),
            ("a.weight", 1), ("head.weight", 1)} <= members(g, "stem")


class Divide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.c(self.a(x) / (self.b(x).abs() + 1))


def test_division_by_a_channel_tensor_freezes_it():
    g = run(Divide(), 2, 3, 4, 4)
    assert "division by a channel-carrying tensor" in frozen(g)["a"]


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 5, 1)

    def forward(self, x):
        return self.c(F.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1))))


def test_cat_on_channel_axis_makes_segments():
    g = run(Concat(), 2, 3, 6, 6)
    assert prunable(g) == {"a": 4, "b": 6}
    segs = g.claims[("c.weight", 1)]
    assert [(g.groups[s.group].name, s.block) for s in segs] == [("a", 1), ("b", 1)]
    assert {m.offset for m in g.group("b").members if m.tensor == "bn.weight"} == {4}


class Split(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 1)
        self.b = nn.Conv2d(4, 4, 1)
        self.c = nn.Conv2d(8, 6, 1)
        self.d = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y1, y2 = self.a(x).chunk(2, dim=1)
        z = torch.cat([y1, self.b(y2)], 1)
        w = self.c(z)[:, :3]
        return self.d(torch.cat([w, w], 1))


def test_split_chunk_and_channel_slicing_freeze_with_reason():
    g = run(Split(), 2, 3, 4, 4)
    assert "split/chunk along the channel axis" in frozen(g)["a"]
    assert "indexing/slicing the channel axis" in frozen(g)["c"]
    assert prunable(g) == {"b": 4}


class FlattenHead(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 3 * 3, 5)
        self.out = nn.Linear(5, 2)

    def forward(self, x):
        y = F.adaptive_max_pool2d(self.c(x), 3)
        if self.how == "flatten":
            y = torch.flatten(y, 1)
        elif self.how == "view":
            y = y.view(y.size(0), -1)
        else:
            y = y.reshape(-1, 36)  # hard-coded channel count
        return self.out(F.relu(self.fc(y)))


@pytest.mark.parametrize("how", ["flatten", "view"])
def test_flatten_into_linear_gives_each_channel_a_block(how):
    g = run(FlattenHead(how), 2, 3, 6, 6)
    assert prunable(g) == {"c": 4, "fc": 5}
    segs = g.claims[("fc.weight", 1)]
    assert [(g.groups[s.group].name, s.block) for s in segs] == [("c", 9)]


def test_hard_coded_reshape_freezes_and_says_how_to_fix():
    g = run(FlattenHead("hard"), 2, 3, 6, 6)
    assert "reshape hard-codes the channel count 36" in frozen(g)["c"]


class ChannelsLast(nn.Module):
    """A ConvNeXt-style block: depthwise conv, channels-last LayerNorm + MLP, layer scale."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.ln = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.gamma = nn.Parameter(torch.ones(8, 1, 1))
        self.head = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        s = self.stem(x)
        y = self.dw(s).permute(0, 2, 3, 1)
        y = self.fc2(F.gelu(self.fc1(self.ln(y))))
        y = y.transpose(1, 3).transpose(2, 3)
        return self.head(s + self.gamma * y)


def test_permute_transpose_follow_channels_and_layer_scale_is_sliced():
    g = run(ChannelsLast(), 2, 3, 5, 5)
    # The stream is normalised by LayerNorm (frozen); the MLP hidden layer stays prunable.
    assert prunable(g) == {"fc1": 16}
    assert "LayerNorm" in frozen(g)["stem"]
    assert ("gamma", 0) in members(g, "stem")
    assert members(g, "fc1") == {("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1)}


class LayerScalePrunable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.scale = nn.Parameter(torch.ones(1, 6, 1, 1))
        self.b = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.b(self.a(x) * self.scale)


def test_parameter_used_in_forward_is_sliced_with_its_group():
    g = run(LayerScalePrunable(), 2, 3, 4, 4)
    assert prunable(g) == {"a": 6}
    assert ("scale", 1) in members(g, "a")


class TwoInTwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(2, 6, 1)
        self.c = nn.Conv2d(6, 4, 1)
        self.d = nn.Conv2d(4, 3, 1)

    def forward(self, x, y):
        h = self.c(self.a(x) + self.b(y))
        return self.d(h), h.mean((2, 3))


def test_several_inputs_and_outputs_are_frozen():
    torch.manual_seed(0)
    m = randomize(TwoInTwoOut())
    g = check_slim_matches_mask(m, (torch.randn(2, 3, 4, 4), torch.randn(2, 2, 4, 4)))
    assert {"input:x", "input:y", "d", "c"} <= set(frozen(g))
    assert "network output" in frozen(g)["c"]
    assert prunable(g) == {"a": 6}


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 6, 1)
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(12, 2, 1)

    def forward(self, x):
        p = self.bn(self.shared(self.a(x)))
        q = self.bn(self.shared(self.b(x)))
        return self.head(torch.cat([p, q], 1))


def test_module_called_twice_merges_its_input_groups_and_counts_flops_twice():
    g = run(Twice(), 2, 3, 5, 5)
    assert prunable(g) == {"a": 6, "shared": 6}
    assert ("b.weight", 0) in members(g, "a")
    assert sum(1 for t in g.flop_terms if t.node.startswith("shared")) == 2


class UserFrozen(Chain):
    pass


def test_user_frozen_layers_are_never_pruned():
    torch.manual_seed(0)
    m = randomize(UserFrozen())
    # Freezing a module keeps all its parameters whole: its output and its input channels.
    g = qp.trace(m, torch.randn(2, 3, 8, 8), frozen=["fc"])
    assert "frozen by the user (frozen='fc')" in frozen(g)["c2"]
    assert prunable(g) == {"c1": 8}
    g = qp.trace(m, torch.randn(2, 3, 8, 8), frozen=["c1"])
    assert prunable(g) == {"c2": 6}
    with pytest.raises(ValueError, match="names no module"):
        qp.trace(m, torch.randn(2, 3, 8, 8), frozen=["nope"])


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(6, 4, 1)
        self.d = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = torch.cumsum(self.a(x), dim=1)  # mixes channels: unknown to the tracer
        return self.d(self.c(y) + self.b(x))


def test_unknown_op_freezes_what_it_touches_and_names_it():
    g = run(Unknown(), 2, 3, 4, 4)
    assert "cumsum" in frozen(g)["a"]
    assert prunable(g) == {"c": 4}


class SoftmaxChannels(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 6, 1)
        self.b = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return self.b(F.softmax(self.a(x), dim=1) + F.softmax(self.a(x), dim=-1))


def test_softmax_over_channels_freezes_but_over_space_passes():
    g = run(SoftmaxChannels(), 2, 3, 4, 4)
    assert "softmax over the channel axis" in frozen(g)["a"]


def test_networkx_views():
    torch.manual_seed(0)
    g = qp.trace(Concat(), torch.randn(1, 3, 6, 6))
    gg = g.group_graph()
    assert set(gg.nodes) == {grp.name for grp in g.groups}
    assert gg.has_edge("c", "a") and gg.has_edge("c", "b")
    assert gg.nodes["a"]["size"] == 4 and gg.nodes["input:x"]["frozen"]
    og = g.op_graph()
    assert og.has_edge("a", "cat") and og.nodes["cat"]["groups"] == ["a", "b"]
    assert og.nodes["c"]["flops"] > 0


def test_memory_cost_matches_a_retrace_of_the_slimmed_model():
    torch.manual_seed(0)
    m = randomize(Concat())
    x = torch.randn(2, 3, 6, 6)
    g = qp.trace(m, x)
    from helpers import random_masks
    masks = random_masks(g, 1)
    counts = [int(k.sum()) for k in masks]
    slim = qp.slim_model(m, g, masks)
    g2 = qp.trace(slim, x)
    assert g2.total_memory == qp.cost_model(g)["memory"].evaluate(counts)
    assert g.total_memory == qp.cost_model(g)["memory"].evaluate(g.sizes())
