"""Channel propagation: map every tensor's channel axis to channel groups (DESIGN.md section 3).

Walks the fx graph in topological order. Each rule either passes a layout through, creates
a group (conv / linear outputs), merges groups (elementwise ops, a module called twice), or
freezes the groups it touches with a reason. Anything not understood is frozen, never
guessed. Parameters and buffers that must be sliced with a group are recorded as *claims*
``(tensor name, dim) -> segments``; FLOPs and written elements are recorded per node as
functions of layout sizes so the cost model stays exact.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from .groups import GroupTable, Layout, Segment
from .trace import NodeInfo

try:  # torchvision is optional; its stochastic depth is an fx-wrapped function
    from torchvision.ops import stochastic_depth as _tv_stochastic_depth
except Exception:  # pragma: no cover - torchvision missing
    _tv_stochastic_depth = None


@dataclass(frozen=True)
class Free:
    """A parameter or buffer read with ``get_attr``: it takes the layout of what it meets."""

    tensor: str


@dataclass
class FlopTerm:
    """FLOPs of one node: ``coef * size(out) * size(in)`` (missing sides count as 1)."""

    node: str
    coef: float
    out: tuple[Segment, ...] | None
    inp: tuple[Segment, ...] | None


@dataclass
class MemoryTerm:
    """Elements written by one node: ``coef * size(layout)``."""

    node: str
    coef: float
    segments: tuple[Segment, ...]


@dataclass
class LayerRecord:
    """A Conv/Linear whose weight axes are indexed by groups (resolved later from claims)."""

    module: str
    weight: str
    kind: str  # "conv", "linear" or "depthwise"


@dataclass
class Propagation:
    table: GroupTable = field(default_factory=GroupTable)
    layouts: dict[str, Any] = field(default_factory=dict)
    claims: dict[tuple[str, int], tuple[Segment, ...]] = field(default_factory=dict)
    flop_terms: list[FlopTerm] = field(default_factory=list)
    memory_terms: list[MemoryTerm] = field(default_factory=list)
    constant_flops: int = 0
    constant_memory: int = 0
    layers: dict[str, LayerRecord] = field(default_factory=dict)
    ops: dict[str, str] = field(default_factory=dict)  # node -> readable op description
    # union coupling: (derived group, input groups, add node) per channel segment of an add
    unions: list[tuple[int, tuple[int, ...], str]] = field(default_factory=list)


_ACTIVATION_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Sigmoid,
    nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Mish, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Tanhshrink,
    nn.Softsign, nn.LogSigmoid,
)
_POOL_MODULES = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample, nn.UpsamplingNearest2d,
    nn.UpsamplingBilinear2d, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d,
    nn.ReplicationPad2d, nn.LPPool2d,
)
_ELEMENTWISE_FUNCS = {
    F.relu, torch.relu, torch.relu_, F.relu_, F.relu6, F.gelu, F.silu, F.hardswish,
    F.hardsigmoid, F.sigmoid, torch.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.selu,
    F.mish, F.softplus, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.hardtanh,
    torch.clamp, torch.clip, operator.neg, torch.neg, torch.abs, F.logsigmoid,
}
if _tv_stochastic_depth is not None:
    _ELEMENTWISE_FUNCS.add(_tv_stochastic_depth)
_POOL_FUNCS = {
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate,
    F.pad, torch.max_pool2d, torch.avg_pool1d,
}
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clip",
    "contiguous", "clone", "detach", "float", "double", "half", "bfloat16", "to", "type_as",
    "neg", "abs", "hardtanh_", "requires_grad_",
}
_BINARY_FUNCS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
    torch.maximum, torch.minimum,
}
_BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "maximum", "minimum"}
_ADDITIONS = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub,
              "add", "add_", "sub", "sub_"}
_DIVISIONS = {operator.truediv, operator.itruediv, torch.div, "div", "div_"}
_REDUCE_FUNCS = {torch.mean, torch.sum, torch.amax, torch.amin}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
_CAT_FUNCS = {torch.cat, torch.concat, torch.concatenate}
_SPLIT = {torch.split, torch.chunk, torch.tensor_split, "split", "chunk", "tensor_split", "unbind", torch.unbind}
_NON_TENSOR_METHODS = {"size", "dim", "numel"}


def _name(target: Any) -> str:
    if isinstance(target, str):
        return target
    mod = getattr(target, "__module__", "") or ""
    return f"{mod}.{getattr(target, '__name__', repr(target))}".lstrip(".")


def _is_shape(x: Any) -> bool:
    return isinstance(x, torch.Size)


class Propagator:
    """Applies the channel rules node by node; see the module docstring."""

    def __init__(self, gm: fx.GraphModule, info: dict[str, NodeInfo], coupling: str = "shared") -> None:
        self.gm = gm
        self.coupling = coupling
        self.pieces: dict[int, list[int]] = {}  # split group root -> its pieces, in order
        self.info = info
        self.p = Propagation()
        self.t = self.p.table
        self.modules = dict(gm.named_modules())

    # ------------------------------------------------------------------ helpers
    def shape(self, node: Any) -> Any:
        return self.info[node.name].shapes if isinstance(node, fx.Node) else None

    def layout(self, node: Any) -> Any:
        return self.p.layouts.get(node.name) if isinstance(node, fx.Node) else None

    def fresh(self, node: fx.Node, shape: torch.Size, reason: str, suffix: str = "") -> Layout | None:
        """A new frozen group for a tensor whose channels we do not track."""
        if len(shape) < 2:
            return None
        dim = 1 if len(shape) in (2, 4, 5) else len(shape) - 1
        g = self.t.new(f"frozen:{node.name}{suffix}", shape[dim], reason)
        return Layout(dim, (Segment(g),))

    def fresh_like(self, node: fx.Node, shapes: Any, reason: str, suffix: str = "") -> Any:
        if _is_shape(shapes):
            return self.fresh(node, shapes, reason, suffix)
        if isinstance(shapes, tuple):
            return [self.fresh_like(node, s, reason, f"{suffix}[{i}]") for i, s in enumerate(shapes)]
        return None

    def freeze_layout(self, lay: Any, reason: str) -> None:
        if isinstance(lay, Layout):
            for s in lay.segments:
                self.t.freeze(s.group, reason)
        elif isinstance(lay, list):
            for x in lay:
                self.freeze_layout(x, reason)

    def input_nodes(self, node: fx.Node) -> list[fx.Node]:
        return list(node.all_input_nodes)

    def unknown(self, node: fx.Node, reason: str | None = None) -> None:
        """Freeze every group the op touches; its output gets frozen groups of its own."""
        desc = self.p.ops[node.name]
        why = f"op `{node.name}` ({desc}): {reason or 'not understood by the channel tracer'}"
        first = None
        for inp in self.input_nodes(node):
            lay = self.layout(inp)
            if isinstance(lay, Free):
                continue
            self.freeze_layout(lay, why)
            if first is None and isinstance(lay, Layout):
                first = (inp, lay)
        out = self.shape(node)
        # A shape-preserving op keeps the layout (now frozen) so later ops still line up.
        if first is not None and _is_shape(out) and tuple(out) == tuple(self.shape(first[0])):
            self.p.layouts[node.name] = first[1]
        else:
            self.p.layouts[node.name] = self.fresh_like(node, out, why)

    def claim(self, tensor: str, dim: int, segs: tuple[Segment, ...], why: str) -> None:
        key = (tensor, dim)
        old = self.p.claims.get(key)
        if old is None:
            self.p.claims[key] = segs
        else:
            self.t.merge_segments(old, segs, f"{why} (tensor {tensor} used twice)")

    def size(self, segs: tuple[Segment, ...]) -> int:
        return sum(self.t.size(s.group) * s.block for s in segs)

    # ------------------------------------------------------------------ main loop
    def run(self) -> Propagation:
        for node in self.gm.graph.nodes:
            self.p.ops[node.name] = self.describe(node)
            handler = getattr(self, f"op_{node.op}")
            handler(node)
            if node.op not in ("placeholder", "get_attr", "output"):
                self.record_memory(node)
        return self.p

    def record_memory(self, node: fx.Node) -> None:
        written = self.info[node.name].written
        if written == 0:
            return
        lay = self.layout(node)
        if isinstance(lay, Layout) and _is_shape(self.shape(node)):
            full = self.shape(node)[lay.dim]
            self.p.memory_terms.append(MemoryTerm(node.name, written / full, lay.segments))
        else:
            self.p.constant_memory += written

    def describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            return f"{type(self.modules[node.target]).__name__} {node.target}"
        if node.op in ("call_function", "call_method"):
            return _name(node.target)
        return node.op

    # ------------------------------------------------------------------ node kinds
    def op_placeholder(self, node: fx.Node) -> None:
        shape = self.shape(node)
        if _is_shape(shape) and len(shape) >= 2:
            g = self.t.new(f"input:{node.name}", shape[1], f"network input `{node.name}`")
            self.p.layouts[node.name] = Layout(1, (Segment(g),))
        else:
            self.p.layouts[node.name] = self.fresh_like(node, shape, f"network input `{node.name}`")

    def op_get_attr(self, node: fx.Node) -> None:
        self.p.layouts[node.name] = Free(node.target)

    def op_output(self, node: fx.Node) -> None:
        for inp in self.input_nodes(node):
            self.freeze_layout(self.layout(inp), f"network output `{inp.name}`")

    def op_call_module(self, node: fx.Node) -> None:
        m = self.modules[node.target]
        if self.flops_of(node) and not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            self.p.constant_flops += self.flops_of(node)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return self.conv(node, m)
        if isinstance(m, nn.Linear):
            return self.linear(node, m)
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or isinstance(m, nn.modules.instancenorm._InstanceNorm):
            return self.per_channel_module(node, m, ("weight", "bias", "running_mean", "running_var"))
        if isinstance(m, nn.GroupNorm):
            if m.num_groups == m.num_channels:
                return self.per_channel_module(node, m, ("weight", "bias"))
            return self.pass_frozen(node, f"GroupNorm with {m.num_groups} groups normalizes "
                                          f"over several channels; removing one changes the others")
        if isinstance(m, nn.LayerNorm):
            return self.layer_norm(node, len(m.normalized_shape))
        if isinstance(m, nn.PReLU):
            if m.num_parameters == 1:
                return self.pass_through(node)
            return self.per_channel_module(node, m, ("weight",))
        if isinstance(m, _ACTIVATION_MODULES):
            return self.pass_through(node)
        if isinstance(m, (nn.Softmax, nn.LogSoftmax, nn.Softmin)):
            return self.softmax(node, m.dim)
        if isinstance(m, _POOL_MODULES):
            return self.pool(node)
        if isinstance(m, nn.Flatten):
            return self.flatten(node, m.start_dim, m.end_dim)
        return self.unknown(node, "module type not supported by the channel tracer")

    def op_call_function(self, node: fx.Node) -> None:
        self.generic(node, node.target)

    def op_call_method(self, node: fx.Node) -> None:
        self.generic(node, node.target)

    def flops_of(self, node: fx.Node) -> int:
        return self.info[node.name].flops

    def generic(self, node: fx.Node, target: Any) -> None:
        flops = self.flops_of(node)
        if flops:
            self.p.constant_flops += flops
        if not any(_is_shape(self.shape(i)) or isinstance(self.layout(i), Free)
                   for i in self.input_nodes(node)) and not _is_shape(self.shape(node)):
            self.p.layouts[node.name] = None  # pure shape arithmetic
            return
        if target in _NON_TENSOR_METHODS or target is getattr or target is len:
            if not _is_shape(self.shape(node)) and not isinstance(self.shape(node), tuple):
                self.p.layouts[node.name] = None
                return
            if target is getattr and node.args[1] in ("shape",):
                self.p.layouts[node.name] = None
                return
        if flops:
            return self.unknown(node, "functional op with FLOPs (use a module instead)")
        if target in _ELEMENTWISE_FUNCS or target in _ELEMENTWISE_METHODS:
            return self.pass_through(node)
        if target in _BINARY_FUNCS or target in _BINARY_METHODS:
            return self.binary(node, target)
        if target in _POOL_FUNCS:
            return self.pool(node)
        if target in (torch.flatten, "flatten"):
            start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
            end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
            return self.flatten(node, start, end)
        if target in ("view", "reshape", torch.reshape):
            return self.reshape(node)
        if target in ("permute", torch.permute):
            return self.permute(node)
        if target in ("transpose", torch.transpose):
            return self.transpose(node)
        if target in _REDUCE_FUNCS or target in _REDUCE_METHODS:
            return self.reduce(node)
        if target in _CAT_FUNCS:
            return self.cat(node)
        if target in _SPLIT:
            return self.split(node)
        if target is operator.getitem:
            return self.getitem(node)
        if target is F.layer_norm:
            shape = node.args[1] if len(node.args) > 1 else node.kwargs["normalized_shape"]
            return self.layer_norm(node, len(shape))
        if target in (F.softmax, torch.softmax, "softmax", F.log_softmax, "log_softmax"):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
            return self.softmax(node, dim)
        return self.unknown(node)

    # ------------------------------------------------------------------ rules
    def first_tensor(self, node: fx.Node) -> tuple[fx.Node, Layout] | None:
        arg = node.args[0] if node.args else None
        if isinstance(arg, fx.Node) and isinstance(self.layout(arg), Layout):
            return arg, self.layout(arg)
        return None

    def pass_through(self, node: fx.Node) -> None:
        first = self.first_tensor(node)
        out = self.shape(node)
        if first is None or not _is_shape(out) or tuple(out) != tuple(self.shape(first[0])):
            return self.unknown(node, "elementwise op whose output shape differs from its input")
        extra = [i for i in self.input_nodes(node)[1:] if _is_shape(self.shape(i))]
        if extra:
            return self.binary(node, node.target)
        self.p.layouts[node.name] = first[1]

    def pass_frozen(self, node: fx.Node, reason: str) -> None:
        first = self.first_tensor(node)
        if first is None:
            return self.unknown(node, reason)
        self.freeze_layout(first[1], f"op `{node.name}` ({self.p.ops[node.name]}): {reason}")
        self.p.layouts[node.name] = first[1]

    def per_channel_module(self, node: fx.Node, m: nn.Module, names: tuple[str, ...]) -> None:
        first = self.first_tensor(node)
        if first is None or first[1].dim != 1 or tuple(self.shape(node)) != tuple(self.shape(first[0])):
            return self.unknown(node, "per-channel module whose input channels are not on axis 1")
        lay = first[1]
        for n in names:
            t = getattr(m, n, None)
            if isinstance(t, torch.Tensor) and t.dim() == 1:
                self.claim(f"{node.target}.{n}", 0, lay.segments, f"`{node.target}`")
        self.p.layouts[node.name] = lay

    def layer_norm(self, node: fx.Node, ndims: int) -> None:
        first = self.first_tensor(node)
        if first is None:
            return self.unknown(node)
        shape = self.shape(first[0])
        if first[1].dim >= len(shape) - ndims:
            return self.pass_frozen(node, "LayerNorm normalizes over the channel axis, so "
                                          "removing a channel changes every other output")
        self.p.layouts[node.name] = first[1]

    def softmax(self, node: fx.Node, dim: Any) -> None:
        first = self.first_tensor(node)
        if first is None or dim is None:
            return self.unknown(node)
        nd = len(self.shape(first[0]))
        if dim % nd == first[1].dim:
            return self.pass_frozen(node, "softmax over the channel axis")
        self.p.layouts[node.name] = first[1]

    def pool(self, node: fx.Node) -> None:
        first = self.first_tensor(node)
        out = self.shape(node)
        if first is None or first[1].dim != 1 or not _is_shape(out) or out[1] != self.shape(first[0])[1]:
            return self.unknown(node, "pooling/resizing over the channel axis")
        self.p.layouts[node.name] = first[1]

    def conv(self, node: fx.Node, m: nn.Module) -> None:
        first = self.first_tensor(node)
        if first is None or first[1].dim != 1:
            self.p.constant_flops += self.flops_of(node)
            return self.unknown(node, "convolution whose input channels are not on axis 1")
        lay_in = first[1]
        flops = self.flops_of(node)
        name = node.target
        if m.groups == 1:
            g = self.t.new(name, m.out_channels)
            out = (Segment(g),)
            self.claim(f"{name}.weight", 0, out, f"`{name}`")
            self.claim(f"{name}.weight", 1, lay_in.segments, f"`{name}`")
            if m.bias is not None:
                self.claim(f"{name}.bias", 0, out, f"`{name}`")
            coef = flops / (m.out_channels * self.size(lay_in.segments))
            self.p.flop_terms.append(FlopTerm(node.name, coef, out, lay_in.segments))
            self.p.layers.setdefault(name, LayerRecord(name, f"{name}.weight", "conv"))
            self.p.layouts[node.name] = Layout(1, out)
        elif m.groups == m.in_channels == m.out_channels:
            self.claim(f"{name}.weight", 0, lay_in.segments, f"`{name}`")
            if m.bias is not None:
                self.claim(f"{name}.bias", 0, lay_in.segments, f"`{name}`")
            coef = flops / m.out_channels
            self.p.flop_terms.append(FlopTerm(node.name, coef, lay_in.segments, None))
            self.p.layers.setdefault(name, LayerRecord(name, f"{name}.weight", "depthwise"))
            self.p.layouts[node.name] = lay_in
        else:
            self.p.constant_flops += flops
            why = (f"op `{node.name}` ({self.p.ops[node.name]}): grouped convolution (groups="
                   f"{m.groups}, in={m.in_channels}, out={m.out_channels}): its channels are "
                   f"frozen (pruning must keep every conv group equal)")
            self.freeze_layout(lay_in, why)
            g = self.t.new(name, m.out_channels, why)
            self.p.layouts[node.name] = Layout(1, (Segment(g),))

    def linear(self, node: fx.Node, m: nn.Linear) -> None:
        first = self.first_tensor(node)
        if first is None:
            self.p.constant_flops += self.flops_of(node)
            return self.unknown(node)
        inp, lay_in = first
        shape = self.shape(inp)
        name = node.target
        flops = self.flops_of(node)
        if lay_in.dim != len(shape) - 1:
            self.freeze_layout(lay_in, f"op `{node.name}` ({self.p.ops[node.name]}): Linear "
                                       f"over a non-channel axis")
            gin = self.t.new(f"frozen:{node.name}.in", shape[-1], f"op `{node.name}`: Linear input "
                                                                  f"axis is not a channel axis")
            in_segs: tuple[Segment, ...] = (Segment(gin),)
        else:
            in_segs = lay_in.segments
        g = self.t.new(name, m.out_features)
        out = (Segment(g),)
        self.claim(f"{name}.weight", 0, out, f"`{name}`")
        self.claim(f"{name}.weight", 1, in_segs, f"`{name}`")
        if m.bias is not None:
            self.claim(f"{name}.bias", 0, out, f"`{name}`")
        coef = flops / (m.out_features * self.size(in_segs))
        self.p.flop_terms.append(FlopTerm(node.name, coef, out, in_segs))
        self.p.layers.setdefault(name, LayerRecord(name, f"{name}.weight", "linear"))
        self.p.layouts[node.name] = Layout(len(self.shape(node)) - 1, out)

    def binary(self, node: fx.Node, target: Any) -> None:
        out = self.shape(node)
        if not _is_shape(out):
            return self.unknown(node)
        nd = len(out)
        tracked: list[tuple[int, Layout, fx.Node]] = []  # (aligned dim, layout, node)
        frees: list[tuple[fx.Node, Free]] = []
        desc = f"op `{node.name}` ({self.p.ops[node.name]})"
        for i, inp in enumerate(self.input_nodes(node)):
            lay, shp = self.layout(inp), self.shape(inp)
            if isinstance(lay, Free):
                frees.append((inp, lay))
            elif isinstance(lay, Layout) and _is_shape(shp):
                aligned = lay.dim + nd - len(shp)
                if shp[lay.dim] == 1 and out[aligned] != 1:
                    self.freeze_layout(lay, f"{desc}: broadcast from one channel")
                    continue
                if target in _DIVISIONS and inp is not node.args[0]:
                    self.freeze_layout(lay, f"{desc}: division by a channel-carrying tensor "
                                            f"(a removed channel would divide by zero)")
                tracked.append((aligned, lay, inp))
            elif _is_shape(shp):
                tracked.append((-1, None, inp))  # untracked tensor operand
        dims = {d for d, lay, _ in tracked if lay is not None}
        if not tracked or len(dims) != 1:
            return self.unknown(node, "elementwise op whose operands' channel axes disagree")
        dim = dims.pop()
        base = next(lay for d, lay, _ in tracked if lay is not None)
        if (self.coupling == "union" and target in _ADDITIONS and not frees
                and all(lay is not None for _, lay, _ in tracked)):
            union = self.union_layout(node, [lay for _, lay, _ in tracked], dim)
            if union is not None:
                self.p.layouts[node.name] = union
                return
            # refreshed in case groups were split on the way (the merge must see the pieces)
            tracked = [(d, None if lay is None else self.layout_now(lay), inp) for d, lay, inp in tracked]
            base = next(lay for d, lay, _ in tracked if lay is not None)
        for d, lay, inp in tracked:
            if lay is None:
                shp = self.shape(inp)
                if dim - (nd - len(shp)) >= 0 and shp[dim - (nd - len(shp))] != 1:
                    self.freeze_layout(base, f"{desc}: combined with an untracked tensor")
                continue
            if lay is not base:
                self.t.merge_segments(base.segments, lay.segments, desc)
        for inp, free in frees:
            t = self.gm.get_parameter(free.tensor) if free.tensor in dict(self.gm.named_parameters()) \
                else self.gm.get_buffer(free.tensor)
            pd = dim - (nd - t.dim())
            if pd >= 0 and t.shape[pd] != 1:
                self.claim(free.tensor, pd, base.segments, desc)
        self.p.layouts[node.name] = Layout(dim, base.segments)

    def union_layout(self, node: fx.Node, lays: list[Layout], dim: int) -> Layout | None:
        """Union coupling at an add: each channel segment of the sum gets a new group, the OR
        of the operands' groups (recorded in ``unions``). None when the operands' segments do
        not line up (the caller then merges, which freezes them with a reason)."""
        if not all(self.t.same_structure(lays[0].segments, lay.segments) for lay in lays[1:]):
            if not self.refine_to_common(lays):
                return None
            lays = [self.layout_now(lay) for lay in lays]
        segs = lays[0].segments
        out = []
        for k, seg in enumerate(segs):
            inputs = tuple(dict.fromkeys(self.t.find(lay.segments[k].group) for lay in lays))
            if len(inputs) == 1:
                out.append(seg)
                continue
            g = self.t.new(f"{node.name}" + (f"[{k}]" if len(segs) > 1 else ""), self.t.size(seg.group))
            self.p.unions.append((g, inputs, node.name))
            out.append(Segment(g, seg.block))
        return Layout(dim, tuple(out))

    def layout_now(self, lay: Layout) -> Layout:
        """``lay`` with split groups replaced by their pieces."""
        return Layout(lay.dim, self.refined(lay.segments))

    def refined(self, segs: tuple[Segment, ...] | None) -> tuple[Segment, ...] | None:
        if segs is None:
            return None
        out: list[Segment] = []
        for s in segs:
            pieces = self.pieces.get(self.t.find(s.group))
            if pieces:
                out.extend(Segment(p, s.block) for p in pieces)
            else:
                out.append(s)
        return tuple(out)

    def refine_to_common(self, lays: list[Layout]) -> bool:
        """Split groups so that every operand of an add has the same segment boundaries
        (e.g. a conv output added to a concatenation): each piece becomes a group of its own.
        Only plain (block 1), not yet coupled groups are split; False if that is not enough.

        The cuts are planned before anything is split (a group split for one occurrence is
        split at every occurrence, which can add cuts elsewhere: iterate to a fixed point),
        so a False leaves the table and every recorded layout untouched."""
        if any(s.block != 1 for lay in lays for s in lay.segments):
            return False
        occurrences = [[(self.t.find(s.group), self.t.size(s.group)) for s in lay.segments] for lay in lays]
        cuts_of: dict[int, set[int]] = {}  # root -> cut offsets inside it
        while True:
            bounds: set[int] = set()
            for occ in occurrences:
                pos = 0
                for root, size in occ:
                    bounds.update(pos + c for c in cuts_of.get(root, ()))
                    pos += size
                    bounds.add(pos)
            changed = False
            for occ in occurrences:
                pos = 0
                for root, size in occ:
                    inner = {c - pos for c in bounds if pos < c < pos + size}
                    if not inner <= cuts_of.get(root, set()):
                        cuts_of.setdefault(root, set()).update(inner)
                        changed = True
                    pos += size
            if not changed:
                break
        if not cuts_of:
            return False  # nothing to split: the segments differ in a way splitting cannot fix
        coupled = {self.t.find(g) for g, ins, _ in self.p.unions for g in (g, *ins)}
        if any(root in coupled or root in self.pieces for root in cuts_of):
            return False
        for root, cuts in cuts_of.items():
            size = self.t.size(root)
            edges = [0, *sorted(cuts), size]
            rec = self.t.records[root]
            self.pieces[root] = [self.t.new(f"{rec.name}[{a}:{b}]", b - a) for a, b in zip(edges, edges[1:])]
            for p in self.pieces[root]:
                self.t.records[p].reasons.extend(rec.reasons)
            self.t.dead.add(root)
        self.apply_pieces()
        return all(self.t.same_structure(self.layout_now(lays[0]).segments, self.layout_now(lay).segments)
                   for lay in lays[1:])

    def apply_pieces(self) -> None:
        """Rewrite every recorded layout, claim and cost term in terms of split groups' pieces."""
        for k, v in list(self.p.layouts.items()):
            if isinstance(v, Layout):
                self.p.layouts[k] = self.layout_now(v)
            elif isinstance(v, list):
                self.p.layouts[k] = [self.layout_now(x) if isinstance(x, Layout) else x for x in v]
        self.p.claims = {k: self.refined(v) for k, v in self.p.claims.items()}
        for f in self.p.flop_terms:
            f.out, f.inp = self.refined(f.out), self.refined(f.inp)
        for m in self.p.memory_terms:
            m.segments = self.refined(m.segments)

    def flatten(self, node: fx.Node, start: int, end: int) -> None:
        first = self.first_tensor(node)
        if first is None:
            return self.unknown(node)
        inp, lay = first
        shape = self.shape(inp)
        nd = len(shape)
        start, end = start % nd, end % nd
        if lay.dim < start:
            self.p.layouts[node.name] = lay
        elif lay.dim > end:
            self.p.layouts[node.name] = Layout(lay.dim - (end - start), lay.segments)
        elif lay.dim == start:
            block = math.prod(shape[start + 1:end + 1])
            segs = tuple(Segment(s.group, s.block * block) for s in lay.segments)
            self.p.layouts[node.name] = Layout(start, segs)
        else:
            self.unknown(node, "flatten merges the channel axis with the axes before it")

    def reshape(self, node: fx.Node) -> None:
        first = self.first_tensor(node)
        if first is None:
            return self.unknown(node)
        inp, lay = first
        src, dst = tuple(self.shape(inp)), tuple(self.shape(node))
        d = lay.dim
        args = node.args[1:]
        if len(args) == 1 and isinstance(args[0], (tuple, list)):
            args = tuple(args[0])
        hard = len(args) == len(dst) and isinstance(args[d], int) and args[d] != -1 if d < len(dst) else False
        if hard:
            return self.unknown(node, f"reshape hard-codes the channel count {args[d]}; write "
                                      f"x.flatten({d}) or x.view(x.size(0), -1) so a slimmed "
                                      f"model still runs")
        if dst[:d] == src[:d] and len(dst) == d + 1 and dst[d] == math.prod(src[d:]):
            block = math.prod(src[d + 1:])
            segs = tuple(Segment(s.group, s.block * block) for s in lay.segments)
            self.p.layouts[node.name] = Layout(d, segs)
        elif dst[:d + 1] == src[:d + 1] and math.prod(dst[d + 1:]) == math.prod(src[d + 1:]) \
                and all(s.block == 1 for s in lay.segments):
            self.p.layouts[node.name] = lay
        else:
            self.unknown(node, "reshape mixes the channel axis with other axes")

    def permute(self, node: fx.Node) -> None:
        first = self.first_tensor(node)
        if first is None:
            return self.unknown(node)
        dims = node.args[1:] if node.target == "permute" else (node.args[1] if len(node.args) > 1 else node.kwargs["dims"],)
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        nd = len(self.shape(first[0]))
        dims = [x % nd for x in dims]
        self.p.layouts[node.name] = Layout(dims.index(first[1].dim), first[1].segments)

    def transpose(self, node: fx.Node) -> None:
        first = self.first_tensor(node)
        if first is None or len(node.args) < 3:
            return self.unknown(node)
        nd = len(self.shape(first[0]))
        a, b = node.args[1] % nd, node.args[2] % nd
        d = first[1].dim
        d = b if d == a else a if d == b else d
        self.p.layouts[node.name] = Layout(d, first[1].segments)

    def reduce(self, node: fx.Node) -> None:
        first = self.first_tensor(node)
        if first is None:
            return self.unknown(node)
        nd = len(self.shape(first[0]))
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        if dims is None or not isinstance(keep, bool):
            return self.unknown(node, "reduction over all axes (including channels)")
        dims = [x % nd for x in (dims if isinstance(dims, (tuple, list)) else [dims])]
        d = first[1].dim
        if d in dims:
            return self.unknown(node, "reduction over the channel axis")
        new = d if keep else d - sum(1 for x in dims if x < d)
        self.p.layouts[node.name] = Layout(new, first[1].segments)

    def cat(self, node: fx.Node) -> None:
        tensors = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        lays = [self.layout(t) for t in tensors]
        if not all(isinstance(x, Layout) for x in lays):
            return self.unknown(node, "concatenation with an untracked tensor")
        nd = len(self.shape(tensors[0]))
        dim = dim % nd
        desc = f"op `{node.name}` (cat)"
        if all(x.dim == dim for x in lays):
            segs = tuple(s for x in lays for s in x.segments)
            self.p.layouts[node.name] = Layout(dim, segs)
        elif len({x.dim for x in lays}) == 1:
            for x in lays[1:]:
                self.t.merge_segments(lays[0].segments, x.segments, desc)
            self.p.layouts[node.name] = lays[0]
        else:
            self.unknown(node, "concatenated tensors carry channels on different axes")

    def split(self, node: fx.Node) -> None:
        first = self.first_tensor(node)
        if first is None:
            return self.unknown(node)
        nd = len(self.shape(first[0]))
        if node.target in ("unbind", torch.unbind):
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        else:
            dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
        if dim % nd == first[1].dim:
            return self.unknown(node, "split/chunk along the channel axis (the split sizes are "
                                      "fixed in forward(), so a slimmed model could not run)")
        shapes = self.shape(node)
        self.p.layouts[node.name] = [first[1] for _ in shapes]

    def getitem(self, node: fx.Node) -> None:
        src, idx = node.args[0], node.args[1]
        lay = self.layout(src)
        if isinstance(lay, list):
            self.p.layouts[node.name] = lay[idx] if isinstance(idx, int) else None
            return
        if not isinstance(lay, Layout) or not _is_shape(self.shape(src)):
            return self.unknown(node)
        nd = len(self.shape(src))
        items = idx if isinstance(idx, tuple) else (idx,)
        if any(isinstance(x, fx.Node) or not isinstance(x, (int, slice, type(None), type(Ellipsis)))
               for x in items):
            return self.unknown(node, "advanced indexing")
        n_real = sum(1 for x in items if x is not None and x is not Ellipsis)
        expanded: list[Any] = []
        for x in items:
            if x is Ellipsis:
                expanded.extend([slice(None)] * (nd - n_real))
            else:
                expanded.append(x)
        expanded.extend([slice(None)] * (nd - sum(1 for x in expanded if x is not None)))
        src_dim, out_dim = 0, 0
        for x in expanded:
            if x is None:
                out_dim += 1
                continue
            if src_dim == lay.dim:
                if isinstance(x, slice) and x == slice(None):
                    self.p.layouts[node.name] = Layout(out_dim, lay.segments)
                    return
                return self.unknown(node, "indexing/slicing the channel axis")
            src_dim += 1
            if not isinstance(x, int):
                out_dim += 1
        self.unknown(node)
