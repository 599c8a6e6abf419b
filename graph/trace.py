"""Run torch.fx on a model and record, per node, output shapes, FLOPs and written elements.

One eval-mode forward pass through an :class:`torch.fx.Interpreter` gives everything the
channel propagation and the cost model need: every node's output shapes (like ShapeProp),
the FLOPs ``torch.utils.flop_counter.FlopCounterMode`` counts for that node alone, and the
number of activation elements the node writes (outputs that alias an input are views and
write nothing). The user's model is never modified: training flags are restored and BN
statistics are not updated (eval mode, no grad).
"""

from __future__ import annotations

import contextlib
import linecache
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.fx as fx
from torch.utils.flop_counter import FlopCounterMode


class TraceError(RuntimeError):
    """torch.fx could not trace the model, or the example inputs do not run through it."""


@dataclass
class NodeInfo:
    """What one forward pass observed at a node."""

    shapes: Any  # torch.Size, a (nested) tuple of them, or None for non-tensors
    flops: int
    written: int  # activation elements written (0 for views/aliases)


class _Tracer(fx.Tracer):
    def __init__(self, leaf_modules: Sequence[str | type] = ()) -> None:
        super().__init__()
        self.leaf_names = {x for x in leaf_modules if isinstance(x, str)}
        self.leaf_types = tuple(x for x in leaf_modules if isinstance(x, type))

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        if qualname in self.leaf_names or (self.leaf_types and isinstance(m, self.leaf_types)):
            return True
        return super().is_leaf_module(m, qualname)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Temporarily put every submodule in eval mode; restore each one's flag afterwards."""
    flags = {m: m.training for m in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def _user_frame(tb: traceback.StackSummary) -> str:
    for frame in reversed(tb):
        if "/torch/" not in frame.filename:
            line = frame.line or linecache.getline(frame.filename, frame.lineno).strip()
            return f"{frame.filename}:{frame.lineno} in {frame.name}: `{line}`"
    return "unknown location"


def symbolic_trace(model: torch.nn.Module, leaf_modules: Sequence[str | type] = ()) -> fx.GraphModule:
    """fx-trace ``model`` (in eval mode), turning fx's failures into a :class:`TraceError`
    that names the failing construct and the ways around it."""
    tracer = _Tracer(leaf_modules)
    with eval_mode(model):
        try:
            graph = tracer.trace(model)
        except Exception as e:  # fx raises TraceError, TypeError, RuntimeError, ...
            where = _user_frame(traceback.extract_tb(e.__traceback__))
            raise TraceError(
                f"torch.fx cannot trace {type(model).__name__}: {type(e).__name__}: {e} "
                f"(failing construct at {where}). Ways around it: pass "
                f"leaf_modules=['<submodule name>'] to treat the submodule that contains it as "
                f"an opaque op (its channels are then frozen), decorate a helper function with "
                f"torch.fx.wrap, or replace data-dependent Python control flow in forward()."
            ) from e
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _tensors(value: Any) -> Iterable[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


def _shapes(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (tuple, list)):
        return tuple(_shapes(v) for v in value)
    return None


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.info: dict[str, NodeInfo] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("placeholder", "get_attr", "output"):
            result = super().run_node(n)
            self.info[n.name] = NodeInfo(_shapes(result), 0, 0)
            return result
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        counter = FlopCounterMode(display=False)
        try:
            with counter:
                result = getattr(self, n.op)(n.target, args, kwargs)
        except Exception as e:
            what = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", n.target)
            shapes = [tuple(t.shape) for t in _tensors(args)]
            kinds = sorted({f"{t.dtype}/{t.device}" for t in _tensors(args)})
            params = sorted({f"{p.dtype}/{p.device}" for p in self.module.parameters()})
            raise TraceError(
                f"running the model on the example inputs failed at node `{n.name}` ({n.op} "
                f"{what}) with input shapes {shapes} ({', '.join(kinds)}; model parameters "
                f"{', '.join(params) or 'none'}): {type(e).__name__}: {str(e).splitlines()[0]}. "
                f"Pass example inputs of the shape, dtype and device the model expects "
                f"(e.g. torch.randn(1, 3, 224, 224))."
            ) from e
        written = sum(
            t.numel() for t in _tensors(result) if t.untyped_storage().data_ptr() not in inputs
        )
        self.info[n.name] = NodeInfo(_shapes(result), int(counter.get_total_flops()), int(written))
        return result


def record(gm: fx.GraphModule, example_inputs: Sequence[torch.Tensor]) -> tuple[dict[str, NodeInfo], Any]:
    """One eval-mode, no-grad forward pass of ``gm``; returns per-node info and the output."""
    slots = [n for n in gm.graph.nodes if n.op == "placeholder"]
    required = [n for n in slots if not n.args]  # placeholders with a default carry it in args
    if not len(required) <= len(example_inputs) <= len(slots):
        raise TraceError(
            f"the model's forward() takes {len(required)}"
            f"{'' if len(required) == len(slots) else f' to {len(slots)}'} tensor argument(s) "
            f"({', '.join(n.target for n in slots)}) but it does not accept "
            f"{len(example_inputs)} example input(s). Pass example_inputs as a tensor or a tuple "
            f"with one tensor per forward() argument."
        )
    with eval_mode(gm), torch.no_grad():
        rec = _Recorder(gm)
        out = rec.run(*example_inputs)
    return rec.info, out
