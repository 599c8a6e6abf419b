"""Turn per-group keep-masks into PyTorch models (DESIGN.md section 6).

``slim_model`` returns a deep copy with every claimed parameter and buffer physically
resized (and ``in_channels``, ``num_features``, ... updated), so the user's own ``forward``
keeps working. ``mask_model`` returns a deep copy with the same shapes in which every
parameter slice of a removed channel is multiplied by zero through
``torch.nn.utils.parametrize`` (so training keeps it at zero). Whole groups are masked:
producer rows, biases, norm affine parameters and consumer columns, so nothing a removed
channel carries can reach a kept output. The user's model is never modified.

Union coupling (``coupling="union"``): a residual stream keeps a channel when any tensor
added into it does, so a block may compute fewer channels than its stream carries. In a
slimmed model every tensor of such a stream is carried at the width of its *carrier* (the OR
of everything added into it); a :class:`StreamAdapter` on each module that touches the stream
gathers the channels the module reads and scatters the channels it computes into the carrier
width, so adds still see equal shapes and the user's ``forward`` keeps working. The adapters
cost memory traffic, no FLOPs.
"""

from __future__ import annotations

import copy
import graphlib
from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from .graph.channel_graph import ChannelGraph


class ChannelMask(nn.Module):
    """Parametrization ``W -> W * mask`` that keeps removed channels at zero during training."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class StreamAdapter(nn.Module):
    """Gathers the channels a module reads from a union-coupled stream (forward pre-hook) and
    scatters the channels it computes into the stream's width (forward hook)."""

    qcqp_stream_adapter = True  # the tracer refuses models carrying these (see build_channel_graph)

    def __init__(self, gather: tuple[int, np.ndarray] | None, scatter: tuple[int, np.ndarray, int] | None) -> None:
        super().__init__()
        self.gather_dim = None if gather is None else gather[0]
        self.scatter_dim, self.width = (None, 0) if scatter is None else (scatter[0], scatter[2])
        self.register_buffer("gather_index", None if gather is None else
                             torch.as_tensor(gather[1], dtype=torch.long), persistent=False)
        self.register_buffer("scatter_index", None if scatter is None else
                             torch.as_tensor(scatter[1], dtype=torch.long), persistent=False)

    def gather(self, module: nn.Module, args: tuple) -> tuple:
        return (args[0].index_select(self.gather_dim, self.gather_index), *args[1:])

    def scatter(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        shape = list(out.shape)
        shape[self.scatter_dim] = self.width
        return out.new_zeros(shape).index_copy(self.scatter_dim, self.scatter_index, out)

    def extra_repr(self) -> str:
        parts = []
        if self.gather_index is not None:
            parts.append(f"gather {len(self.gather_index)} channels on dim {self.gather_dim}")
        if self.scatter_index is not None:
            parts.append(f"scatter {len(self.scatter_index)} into {self.width} on dim {self.scatter_dim}")
        return ", ".join(parts)


def _stream_positions(graph: ChannelGraph, segs: Sequence, masks: Sequence[np.ndarray]) -> tuple[np.ndarray, int, bool]:
    """Where a module's compact channels (laid out as ``segs``) sit in the tensor a slimmed
    union-coupled model carries: positions, carried width, and whether they differ."""
    pos, offset, moved = [], 0, False
    for s in segs:
        kept = np.flatnonzero(masks[s.group])
        carrier = graph.carrier.get(s.group)
        if carrier is None:
            ch, width = np.arange(len(kept)), len(kept)
        else:
            wide = np.flatnonzero(masks[carrier])
            ch, width = np.searchsorted(wide, kept), len(wide)
            moved |= width != len(kept)
        pos.append(offset + (ch[:, None] * s.block + np.arange(s.block)[None, :]).ravel())
        offset += width * s.block
    return (np.concatenate(pos) if pos else np.zeros(0, dtype=np.int64)), offset, moved


def _add_stream_adapters(new: nn.Module, graph: ChannelGraph, masks: Sequence[np.ndarray]) -> None:
    owners = {tensor.rpartition(".")[0] for tensor, _ in graph.claims}
    for node in graph.graph_module.graph.nodes:
        if node.op != "call_module" or node.target not in owners:
            continue
        gather = scatter = None
        first = node.all_input_nodes[0] if node.all_input_nodes else None
        lay_in = graph.node_layouts.get(first.name) if first is not None else None
        if lay_in is not None:
            pos, _, moved = _stream_positions(graph, lay_in.segments, masks)
            if moved:
                gather = (lay_in.dim, pos)
        lay_out = graph.node_layouts.get(node.name)
        if lay_out is not None:
            pos, width, moved = _stream_positions(graph, lay_out.segments, masks)
            if moved:
                scatter = (lay_out.dim, pos, width)
        if gather is None and scatter is None:
            continue
        mod = new.get_submodule(node.target)
        adapter = StreamAdapter(gather, scatter)
        mod.add_module("stream_adapter", adapter)
        if gather is not None:
            mod.register_forward_pre_hook(adapter.gather)
        if scatter is not None:
            mod.register_forward_hook(adapter.scatter)


def validate_masks(graph: ChannelGraph, masks: Any) -> list[np.ndarray]:
    """Normalize ``masks`` (a sequence indexed by group id, or a mapping from group name or id
    to a boolean array; groups left out of a mapping are kept whole) to one bool array per
    group, raising a ``ValueError`` that names the offending group."""
    sizes = [g.size for g in graph.groups]
    out = [np.ones(n, dtype=bool) for n in sizes]
    if isinstance(masks, Mapping):
        items = [(graph.group(k).id, v) for k, v in masks.items()]
    else:
        masks = list(masks)
        if len(masks) != len(sizes):
            raise ValueError(f"got {len(masks)} masks but the model has {len(sizes)} channel groups; "
                             f"pass one boolean array per group (graph.groups) or a dict by name")
        items = list(enumerate(masks))
    for gid, m in items:
        g = graph.groups[gid]
        arr = np.asarray(m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else m)
        if arr.dtype != bool:
            if not np.isin(arr, (0, 1)).all():
                raise ValueError(f"mask of group {g.name!r} must be boolean (or 0/1), got dtype {arr.dtype}")
            arr = arr.astype(bool)
        if arr.shape != (g.size,):
            raise ValueError(f"mask of group {g.name!r} has shape {arr.shape}; expected ({g.size},)")
        if not arr.any():
            raise ValueError(f"mask of group {g.name!r} keeps no channel; keep at least one "
                             f"(an empty group would disconnect the network)")
        if g.frozen and not arr.all():
            raise ValueError(f"group {g.name!r} is frozen ({g.frozen_reasons[0]}) and cannot be pruned")
        out[gid] = arr
    given = {gid for gid, _ in items}
    sums = {g.id: [i for i in g.union_of if graph.groups[i].union_of] for g in graph.groups if g.union_of}
    for gid in graphlib.TopologicalSorter(sums).static_order():  # union coupling: operands first
        g = graph.groups[gid]
        if g.frozen:
            continue
        union = np.logical_or.reduce([out[i] for i in g.union_of])  # a sum keeps what its operands keep
        if g.id not in given:
            out[g.id] = union
        elif not np.array_equal(out[g.id], union):
            raise ValueError(f"mask of group {g.name!r} must be the OR of the masks of "
                             f"{[graph.groups[i].name for i in g.union_of]} (union coupling); "
                             f"leave it out of a mask dict to have it computed")
    return out


def _claims_by_tensor(graph: ChannelGraph, masks: Sequence[np.ndarray]) -> dict[str, list[tuple[int, np.ndarray, int]]]:
    """tensor -> [(dim, kept positions, full length)] for every axis that loses something."""
    by_tensor: dict[str, list[tuple[int, np.ndarray, int]]] = defaultdict(list)
    for (tensor, dim), segs in graph.claims.items():
        full = sum(graph.groups[s.group].size * s.block for s in segs)
        idx = graph.kept_indices(segs, masks)
        if len(idx) < full:
            by_tensor[tensor].append((dim, idx, full))
    return by_tensor


def _split(name: str) -> tuple[str, str]:
    mod, _, attr = name.rpartition(".")
    return mod, attr


def _fix_attributes(module: nn.Module, was_depthwise: bool) -> None:
    if isinstance(module, nn.modules.conv._ConvNd):
        w = module.weight
        if was_depthwise:
            module.in_channels = module.out_channels = module.groups = w.shape[0]
        else:
            module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)):
        ref = module.weight if module.weight is not None else module.running_mean
        module.num_features = ref.shape[0]
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = module.num_groups = module.weight.shape[0]
    elif isinstance(module, nn.PReLU):
        module.num_parameters = module.weight.shape[0]


def slim_model(model: nn.Module, graph: ChannelGraph, masks: Any) -> nn.Module:
    """A physically smaller deep copy of ``model`` that keeps only the masked-in channels."""
    masks = validate_masks(graph, masks)
    new = copy.deepcopy(model)
    touched: dict[str, bool] = {}
    for tensor, dims in _claims_by_tensor(graph, masks).items():
        mod_name, attr = _split(tensor)
        mod = new.get_submodule(mod_name)
        if mod_name not in touched:
            touched[mod_name] = (isinstance(mod, nn.modules.conv._ConvNd)
                                 and mod.groups == mod.in_channels == mod.out_channels and mod.groups > 1)
        old = getattr(mod, attr)
        with torch.no_grad():
            data = old.detach()
            for dim, idx, _ in dims:
                data = data.index_select(dim, torch.as_tensor(idx, dtype=torch.long, device=data.device))
            data = data.clone()
        if isinstance(old, nn.Parameter):
            setattr(mod, attr, nn.Parameter(data, requires_grad=old.requires_grad))
        else:
            mod._buffers[attr] = data
    for mod_name, was_dw in touched.items():
        _fix_attributes(new.get_submodule(mod_name), was_dw)
    if graph.carrier:
        _add_stream_adapters(new, graph, masks)
    return new


def mask_model(model: nn.Module, graph: ChannelGraph, masks: Any) -> nn.Module:
    """A deep copy of ``model`` with removed channels zeroed by parametrizations."""
    masks = validate_masks(graph, masks)
    new = copy.deepcopy(model)
    for tensor, dims in _claims_by_tensor(graph, masks).items():
        mod_name, attr = _split(tensor)
        mod = new.get_submodule(mod_name)
        old = getattr(mod, attr)
        if not isinstance(old, nn.Parameter):
            continue  # buffers (BN statistics) need no mask: the affine parameters are zeroed
        mask = torch.ones_like(old, dtype=old.dtype)
        for dim, idx, full in dims:
            keep = torch.zeros(full, dtype=old.dtype, device=old.device)
            keep[torch.as_tensor(idx, dtype=torch.long, device=old.device)] = 1
            shape = [1] * old.dim()
            shape[dim] = full
            mask = mask * keep.view(shape)
        parametrize.register_parametrization(mod, attr, ChannelMask(mask))
    return new


def bake_masks(model: nn.Module) -> nn.Module:
    """Replace every :class:`ChannelMask` parametrization by plain (zeroed) weights, in place,
    so the state_dict has the original keys again. Returns ``model``."""
    for mod in list(model.modules()):
        plist = getattr(mod, "parametrizations", None)
        if plist is None:
            continue
        for attr in list(plist.keys()):
            if all(isinstance(p, ChannelMask) for p in plist[attr]):
                parametrize.remove_parametrizations(mod, attr, leave_parametrized=True)
    return model
