"""Latency as a budget: time layers on this device, fit a quadratic latency model.

A pruned network's inference time is modeled, as in the QCQP paper, as a quadratic function
of the kept channel counts. Every prunable Conv/Linear node ``l`` of the traced graph gets

    t_l(N_in, N_out) = a*N_in*N_out + b*N_in + c*N_out + d        (a, b, c, d >= 0)

(a depthwise conv has one count: ``t_l(N) = c*N + d``), fitted with non-negative least
squares to standalone timings of a fresh ``nn.Conv2d`` / ``nn.Linear`` with the node's
kernel, stride, padding, dilation and recorded input shape at sampled channel counts. An
end-to-end calibration then fits the global terms on slimmed random configurations of the
whole network, again non-negative:

    T(N) = scale * sum_l t_l(N)  +  op_scale * sum_o t_o(N)  +  constant

where ``t_o`` are the other call nodes (BatchNorm, activations, adds, pooling, ...), each
timed standalone at full width and taken proportional to its output's channel count, and
``constant`` covers what is not modeled (Python overhead, untimeable ops). ``T`` is a
:class:`~qcqp_prune.solvers.problem.QuadraticCost` over the graph's group counts, in
milliseconds, so ``Budget(latency=...)`` works with every solver back-end.

Timings use ``torch.set_num_threads(threads)`` (restored afterwards), ``eval()`` and
``no_grad``, warm-up calls, and medians of repeats; on CUDA every timed call is synchronized.
The model is smooth; the device is not (oneDNN pads channels to blocks of 16, so a group cut to
one channel costs about as much as 16, and wide late layers run slower inside the network than
standalone). A solver seeks out exactly such configurations, so
:func:`plan_with_measured_latency` checks each plan on the device and re-plans with a tightened
limit until the measured plan meets the target.

A fitted model is only valid for the device, thread count, batch size and input resolution it
was fitted on; all of these are stored in it, and :meth:`LatencyModel.cost` refuses a graph
of another architecture (fingerprint mismatch).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from scipy.optimize import nnls

from .cost import _Builder
from .graph.channel_graph import ChannelGraph, _as_tuple, build_channel_graph
from .graph.groups import Segment
from .solvers.problem import QuadraticCost

FORMAT = "qcqp_prune.latency_model"
VERSION = 1

__all__ = [
    "LatencyModel", "LayerFit", "OpFit", "calibrate_latency", "fit_global", "fit_latency", "fit_layer",
    "layer_specs", "lopsided_masks", "measure_latency", "measure_many", "op_nodes", "plan_with_measured_latency",
    "profile_latency", "random_masks", "calibration_masks",
]


# ---------------------------------------------------------------------------- timing
@contextlib.contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``; the old count is restored."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads={threads!r} must be a positive integer")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check_counts(repeats: int, warmup: int) -> None:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be an integer >= 1")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup={warmup!r} must be an integer >= 0")


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, t in flags.items():
            m.training = t


def _time_calls(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int,
                number: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        _sync(device)
        out.append((time.perf_counter() - t0) * 1e3 / number)
    return out


def measure_latency(model: nn.Module, example_inputs: Any, *, repeats: int = 20, warmup: int = 3,
                    threads: int | None = 1) -> float:
    """Median wall time in milliseconds of one ``eval()`` / ``no_grad`` forward pass.

    ``threads`` fixes ``torch.set_num_threads`` for the measurement (restored afterwards;
    ``None`` leaves it alone). On CUDA every call is synchronized. Training flags of the
    model's modules are restored afterwards.
    """
    return measure_many([model], example_inputs, repeats=repeats, warmup=warmup, threads=threads)[0]


def measure_many(models: Sequence[nn.Module], example_inputs: Any, *, repeats: int = 20,
                 warmup: int = 3, threads: int | None = 1, rounds: int = 3,
                 on_round: Callable[[int], None] | None = None) -> list[float]:
    """Median forward latency (ms) of each model, measured in ``rounds`` interleaved rounds.

    Each round runs every model in turn: ``warmup`` untimed calls, then its share of the
    ``repeats`` timed calls back to back (so caches are warm, as in steady-state inference).
    A slow spell of a shared machine then hits all models alike instead of biasing the ones
    timed during it.
    """
    _check_counts(repeats, warmup)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r} must be an integer >= 1")
    inputs = _as_tuple(example_inputs)
    rounds = min(rounds, repeats)
    shares = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
    samples: list[list[float]] = [[] for _ in models]
    with fixed_threads(threads), torch.no_grad(), contextlib.ExitStack() as stack:
        for m in models:
            stack.enter_context(_eval_mode(m))
        devices = [_device_of(m) for m in models]
        for r, share in enumerate(shares):
            for i, (m, dev) in enumerate(zip(models, devices)):
                samples[i] += _time_calls(lambda: m(*inputs), dev, share, warmup)  # noqa: B023
            if on_round is not None:
                on_round(r + 1)
    return [statistics.median(s) for s in samples]


class _Progress:
    """A progress bar on stderr: tqdm when installed, else one self-rewriting line."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total, self.desc, self.enabled, self.n = total, desc, enabled, 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=True)
            except ImportError:
                self._draw("")

    def _draw(self, note: str) -> None:
        frac = self.n / self.total if self.total else 1.0
        filled = int(24 * frac)
        el = time.perf_counter() - self.t0
        sys.stderr.write(f"\r{self.desc}: [{'#' * filled}{'.' * (24 - filled)}] {self.n}/{self.total} "
                         f"{el:5.1f}s {note[:40]:40s}")
        sys.stderr.flush()

    def update(self, note: str = "") -> None:
        self.n += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(note[:40], refresh=False)
            self.bar.update(1)
        else:
            self._draw(note)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


# ---------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class LayerSpec:
    """What is needed to time one prunable Conv/Linear node standalone."""

    node: str
    module: str
    kind: str                      # "conv" | "linear" | "depthwise"
    in_full: int                   # input channels (features) of the unpruned node
    out_full: int
    in_variable: bool              # some input group is prunable
    out_variable: bool
    in_block: int                  # granularity of the input count (flatten blocks)
    signature: tuple               # equal signatures time identically (shared samples)


def _is_variable(graph: ChannelGraph, segs: Sequence[Segment] | None) -> bool:
    return segs is not None and any(not graph.groups[s.group].frozen for s in segs)


def _size(graph: ChannelGraph, segs: Sequence[Segment] | None) -> int:
    return 0 if segs is None else sum(graph.groups[s.group].size * s.block for s in segs)


def layer_specs(graph: ChannelGraph) -> list[LayerSpec]:
    """One :class:`LayerSpec` per Conv/Linear FLOP term of the graph (keyed by fx node)."""
    modules = dict(graph.graph_module.named_modules())
    nodes = {n.name: n for n in graph.graph_module.graph.nodes}
    specs = []
    for term in graph.flop_terms:
        node = nodes[term.node]
        if node.op != "call_module":
            raise NotImplementedError(f"latency fit: FLOP term at node {term.node} ({node.op}) is not a "
                                      f"module call; only Conv/Linear modules can be timed")
        m = modules[node.target]
        src = node.args[0]
        in_shape = tuple(graph.node_info[src.name].shapes)
        if isinstance(m, nn.Linear):
            kind = "linear"
            geom: tuple = ("linear", in_shape[:-1], m.bias is not None)
        elif isinstance(m, nn.modules.conv._ConvNd):
            kind = "depthwise" if term.inp is None else "conv"
            geom = (type(m).__name__, in_shape[:1] + in_shape[2:], m.kernel_size, m.stride, m.padding,
                    m.dilation, m.padding_mode, m.bias is not None, kind)
        else:
            raise NotImplementedError(f"latency fit: cannot time module {node.target} "
                                      f"({type(m).__name__})")
        if kind == "depthwise":
            in_full = out_full = _size(graph, term.out)
            in_var = out_var = _is_variable(graph, term.out)
            block = 1
        else:
            in_full, out_full = _size(graph, term.inp), _size(graph, term.out)
            in_var, out_var = _is_variable(graph, term.inp), _is_variable(graph, term.out)
            blocks = {s.block for s in term.inp}
            block = blocks.pop() if len(blocks) == 1 else 1
        sig = geom + (in_full, out_full, in_var, out_var, block)
        specs.append(LayerSpec(term.node, str(node.target), kind, in_full, out_full, in_var, out_var,
                               block, sig))
    return specs


def _make_layer(module: nn.Module, kind: str, n_in: int, n_out: int, device, dtype) -> nn.Module:
    if kind == "linear":
        return nn.Linear(n_in, n_out, bias=module.bias is not None, device=device, dtype=dtype)
    groups = n_in if kind == "depthwise" else 1
    return type(module)(n_in, n_out, module.kernel_size, stride=module.stride, padding=module.padding,
                        dilation=module.dilation, groups=groups, bias=module.bias is not None,
                        padding_mode=module.padding_mode, device=device, dtype=dtype)


def _sample_counts(spec: LayerSpec, n: int, rng: np.random.Generator, low: float) -> list[tuple[int, int]]:
    """``n`` distinct (N_in, N_out) points: the small corner and a stratified
    (Latin-hypercube) fill of ``[low*full, full]`` along the prunable axes."""

    def axis(full: int, var: bool, block: int, u: np.ndarray) -> np.ndarray:
        if not var:
            return np.full(len(u), full)
        units = max(1, full // block)
        lo = max(1, int(math.floor(low * units)))
        k = np.clip(np.round(lo + u * (units - lo)), lo, units).astype(int)
        return k * block

    if spec.kind == "depthwise":
        n_var = int(spec.out_variable)
    else:
        n_var = int(spec.in_variable) + int(spec.out_variable)
    if n_var == 0:
        return [(spec.in_full, spec.out_full)]
    # corners would over-weight the fast full width (oneDNN favours multiples of 8/16 channels,
    # which pruned layers rarely have): only the small corner, the rest stratified at random
    pts = [(0.0, 0.0)]
    m = max(1, n - 1)
    u1 = (rng.permutation(m) + rng.random(m)) / m
    u2 = (rng.permutation(m) + rng.random(m)) / m
    pts += list(zip(u1, u2))
    u = np.array(pts)
    if spec.kind == "depthwise":
        ns = axis(spec.out_full, spec.out_variable, 1, u[:, 1])
        res = [(int(v), int(v)) for v in ns]
    else:
        ni = axis(spec.in_full, spec.in_variable, spec.in_block, u[:, 0])
        no = axis(spec.out_full, spec.out_variable, 1, u[:, 1])
        res = [(int(a), int(b)) for a, b in zip(ni, no)]
    return list(dict.fromkeys(res))  # distinct, order kept


def time_layer(module: nn.Module, kind: str, in_shape: Sequence[int], n_in: int, n_out: int, *,
               repeats: int, warmup: int, device, dtype, min_ms: float = 0.2) -> float:
    """Median ms of a fresh layer like ``module`` at ``(n_in, n_out)`` on an input of
    ``in_shape`` with ``n_in`` channels (features for Linear). Calls shorter than ``min_ms``
    are looped within a repeat to get above the timer's resolution."""
    layer = _make_layer(module, kind, n_in, n_out, device, dtype).eval()
    shape = list(in_shape)
    shape[-1 if kind == "linear" else 1] = n_in
    x = torch.randn(shape, device=device, dtype=dtype)
    fn = lambda: layer(x)  # noqa: E731
    one = min(_time_calls(fn, device, 3, 1))
    number = max(1, min(1000, int(math.ceil(min_ms / max(one, 1e-4)))))
    return statistics.median(_time_calls(fn, device, repeats, warmup, number))


class _Untimeable(Exception):
    pass


def op_nodes(graph: ChannelGraph) -> list[tuple[str, str, tuple[Segment, ...] | None]]:
    """The call nodes that are not Conv/Linear FLOP terms: ``(node, description, segments)``
    where ``segments`` is the channel layout of the node's output (None: not channel-shaped).
    Their time is modeled as proportional to the output's channel count."""
    flop_nodes = {t.node for t in graph.flop_terms}
    modules = dict(graph.graph_module.named_modules())
    res = []
    for node in graph.graph_module.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method") or node.name in flop_nodes:
            continue
        if node.op == "call_module":
            desc = type(modules[node.target]).__name__
        else:
            desc = getattr(node.target, "__name__", str(node.target))
        lay = graph.node_layouts.get(node.name)
        res.append((node.name, desc, getattr(lay, "segments", None)))
    return res


def time_node(graph: ChannelGraph, name: str, *, repeats: int, warmup: int, device, dtype,
              min_ms: float = 0.2) -> float:
    """Median ms of one fx node run standalone at full width on random inputs of its recorded
    input shapes. Raises ``_Untimeable`` when an input is not a plain tensor."""
    gm = graph.graph_module
    node = next(n for n in gm.graph.nodes if n.name == name)
    modules = dict(gm.named_modules())

    def fake(n: torch.fx.Node) -> Any:
        if n.op == "get_attr":
            obj = gm
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            return obj
        shape = graph.node_info[n.name].shapes if n.name in graph.node_info else None
        if not isinstance(shape, torch.Size):
            raise _Untimeable(f"input {n.name} of {name} is not a tensor")
        return torch.randn(shape, device=device, dtype=dtype)

    args = torch.fx.node.map_arg(node.args, fake)
    kwargs = torch.fx.node.map_arg(node.kwargs, fake)
    if node.op == "call_module":
        mod = modules[node.target]
        fn = lambda: mod(*args, **kwargs)  # noqa: E731
    elif node.op == "call_function":
        fn = lambda: node.target(*args, **kwargs)  # noqa: E731
    else:
        fn = lambda: getattr(args[0], node.target)(*args[1:], **kwargs)  # noqa: E731
    try:
        one = min(_time_calls(fn, device, 3, 1))
    except Exception as e:  # an op we cannot replay standalone: its time goes to the constant
        raise _Untimeable(f"{name}: {type(e).__name__}: {e}") from e
    number = max(1, min(1000, int(math.ceil(min_ms / max(one, 1e-4)))))
    return statistics.median(_time_calls(fn, device, repeats, warmup, number))


@dataclass
class OpFit:
    """A non-Conv/Linear node (BatchNorm, activation, add, pooling, ...): ``ms_full`` measured
    standalone at full width; predicted ``ms_full * size(N) / size_full``."""

    op: str
    ms_full: float
    size_full: int   # channel count of its output at full width (0: not channel-shaped)


# ---------------------------------------------------------------------------- fitting
@dataclass
class LayerFit:
    """``t = a*N_in*N_out + b*N_in + c*N_out + d`` in ms for one fx node."""

    module: str
    kind: str
    a: float
    b: float
    c: float
    d: float
    r2: float
    samples: int
    in_full: int
    out_full: int

    def predict(self, n_in: Any, n_out: Any) -> Any:
        return self.a * n_in * n_out + self.b * n_in + self.c * n_out + self.d


def _design(n_in: np.ndarray, n_out: np.ndarray, kind: str) -> np.ndarray:
    n_in, n_out = np.asarray(n_in, float), np.asarray(n_out, float)
    one = np.ones_like(n_out)
    if kind == "depthwise":  # one count: t = c*N + d
        return np.stack([0 * n_out, 0 * n_out, n_out, one], axis=1)
    return np.stack([n_in * n_out, n_in, n_out, one], axis=1)


def _nnls_scaled(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """NNLS with column scaling for conditioning (non-negativity is scale invariant)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(X / scale, y, maxiter=50 * X.shape[1])
    return coef / scale


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    if ss_tot <= 1e-18 * max(1.0, float(np.sum(y ** 2))):
        return 1.0 if ss_res <= 1e-12 * max(1.0, float(np.sum(y ** 2))) else 0.0
    return 1.0 - ss_res / ss_tot


def fit_layer(n_in: Sequence[float], n_out: Sequence[float], t: Sequence[float], kind: str = "conv",
              ) -> tuple[tuple[float, float, float, float], float]:
    """Non-negative least squares of ``t ~ a*N_in*N_out + b*N_in + c*N_out + d``.

    Returns ``((a, b, c, d), r2)``. ``kind="depthwise"`` fits ``t ~ c*N + d`` (``N = n_out``).
    Pure function: feed it synthetic data to test it.
    """
    n_in, n_out, y = (np.asarray(v, dtype=np.float64) for v in (n_in, n_out, t))
    if not (len(n_in) == len(n_out) == len(y)) or len(y) == 0:
        raise ValueError("fit_layer needs equally long, non-empty n_in, n_out and t")
    if not np.all(np.isfinite(y)):
        raise ValueError("fit_layer: timings must be finite")
    X = _design(n_in, n_out, kind)
    coef = _nnls_scaled(X, y)
    return tuple(float(v) for v in coef), _r2(y, X @ coef)  # type: ignore[return-value]


# ---------------------------------------------------------------------------- the model
@dataclass
class LatencyModel:
    """A fitted latency model of one network on one device (milliseconds).

    ``layers`` maps the fx node names of the prunable Conv/Linear nodes to :class:`LayerFit`,
    ``ops`` the other call nodes (BatchNorm, activations, adds, pooling, ...) to
    :class:`OpFit`. The prediction is ``scale * sum(layers) + op_scale * sum(ops) + constant``
    with ``scale``, ``op_scale`` and ``constant`` (ms) fitted end to end. ``metadata`` records
    device, torch version, threads, input shapes, fit settings and calibration statistics.
    """

    fingerprint: str
    layers: dict[str, LayerFit]
    ops: dict[str, OpFit] = field(default_factory=dict)
    scale: float = 1.0
    op_scale: float = 1.0
    constant: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ cost
    def _check(self, graph: ChannelGraph) -> None:
        fp = graph.fingerprint()
        if fp != self.fingerprint:
            meta = self.metadata
            raise ValueError(
                f"latency model was fitted on another network (fingerprint {self.fingerprint}, "
                f"model {meta.get('model_name', '?')}, input shapes {meta.get('input_shapes')}) but "
                f"this graph has fingerprint {fp} (input shapes {[list(s) for s in graph.input_shapes]}); "
                f"fit one for this model and input shape with qp.fit_latency(model, example_inputs)")

    def _parts(self, graph: ChannelGraph) -> tuple[QuadraticCost, QuadraticCost]:
        """(sum of layer times, sum of op times) as unscaled QuadraticCosts."""
        self._check(graph)
        b = _Builder()
        for term in graph.flop_terms:
            fit = self.layers.get(term.node)
            if fit is None:
                raise ValueError(f"latency model has no fit for node {term.node!r}; refit it")
            if fit.kind == "depthwise":
                b.product(fit.c, term.out, None)
            else:
                b.product(fit.a, term.out, term.inp)
                b.product(fit.b, term.inp, None)
                b.product(fit.c, term.out, None)
            b.const += fit.d
        o = _Builder()
        layouts = graph.node_layouts
        for node, op in self.ops.items():
            segs = getattr(layouts.get(node), "segments", None)
            if segs and op.size_full > 0:
                o.product(op.ms_full / op.size_full, segs, None)
            else:
                o.const += op.ms_full
        return b.build(), o.build()

    def cost(self, graph: ChannelGraph) -> QuadraticCost:
        """Predicted latency (ms) as a :class:`QuadraticCost` over ``graph``'s group counts."""
        layers, ops = self._parts(graph)
        return layers.scaled(self.scale) + ops.scaled(self.op_scale) + QuadraticCost({}, {}, float(self.constant))

    def predict(self, graph: ChannelGraph, counts: Sequence[int] | np.ndarray) -> float:
        """Predicted latency (ms) at per-group kept counts (frozen groups at full size)."""
        return self.cost(graph).evaluate(counts)

    @property
    def measured_full_ms(self) -> float | None:
        """The unpruned network's latency (ms) as measured end to end during calibration,
        or None (not calibrated, or the first calibration configuration was not the unpruned
        network).

        ``Budget(latency=f)`` is ``f`` times this measured latency when it is not None, else
        ``f`` times the *predicted* unpruned latency (``plan.latency_model["full_reference"]``
        says which). The prediction is not used when a measurement exists because on CPU,
        oneDNN's blocked convolutions cost about the same for every channel count in a block
        of 16 (17 to 32 channels like 32), so latency is a staircase in the channel counts. A
        smooth quadratic through that staircase over-predicts the counts at the end of a step,
        just before the next jump, which is where the unpruned counts (mostly multiples of 16)
        are: the unpruned network runs faster than predicted (by a few percent for ResNets on
        ImageNet inputs, more for narrow networks).
        """
        cal = self.metadata.get("calibration") or {}
        if not cal.get("first_is_unpruned", True) or cal.get("measured_full_ms") is None:
            return None
        return float(cal["measured_full_ms"])

    def layer_times(self, graph: ChannelGraph, counts: Sequence[int] | np.ndarray) -> dict[str, float]:
        """Per-node predicted standalone time (ms, before ``scale``)."""
        self._check(graph)
        res = {}
        for term in graph.flop_terms:
            fit = self.layers[term.node]
            n_out = graph.segment_size(term.out, counts)
            n_in = n_out if term.inp is None else graph.segment_size(term.inp, counts)
            res[term.node] = fit.predict(n_in, n_out)
        return res

    def describe(self) -> dict[str, Any]:
        """A small summary stored in plans: which latency model priced them."""
        m = self.metadata
        cal = m.get("calibration") or {}
        return {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                "device": m.get("device"), "threads": m.get("threads"),
                "input_shapes": m.get("input_shapes"), "torch": m.get("torch_version"),
                "created": m.get("created"), "calibration_mape": cal.get("mape"), "path": self.path}

    def summary(self) -> str:
        m = self.metadata
        lines = [f"latency model {self.fingerprint} ({m.get('model_name')}) on {m.get('device')}, "
                 f"{m.get('threads')} thread(s), inputs {m.get('input_shapes')}, torch {m.get('torch_version')}",
                 f"  T = {self.scale:.3f} * sum(layers) + {self.op_scale:.3f} * sum(other ops) "
                 f"+ {self.constant:.3f} ms   ({len(self.layers)} layers, {len(self.ops)} other ops)"]
        cal = m.get("calibration") or {}
        if cal:
            lines.append(f"  calibration: {cal.get('configs')} random configs + full model, MAPE "
                         f"{cal.get('mape', float('nan')):.2%}, measured full {cal.get('measured_full_ms', float('nan')):.3f} ms, "
                         f"predicted full {cal.get('predicted_full_ms', float('nan')):.3f} ms")
        for node, f in self.layers.items():
            lines.append(f"  {node:32s} {f.kind:9s} a={f.a:.3e} b={f.b:.3e} c={f.c:.3e} d={f.d:.3e} "
                         f"R2={f.r2:.3f}")
        return "\n".join(lines)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                "scale": self.scale, "op_scale": self.op_scale, "constant": self.constant,
                "metadata": self.metadata, "layers": {k: asdict(v) for k, v in self.layers.items()},
                "ops": {k: asdict(v) for k, v in self.ops.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str | None = None) -> "LatencyModel":
        where = path or "data"
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise ValueError(f"{where} is not a qcqp_prune latency model "
                             f"(format {d.get('format') if isinstance(d, Mapping) else None!r}, "
                             f"expected {FORMAT!r})")
        if d.get("version") != VERSION:
            raise ValueError(f"{where}: latency model format version {d.get('version')!r} is "
                             f"not supported (this qcqp_prune reads version {VERSION}); refit it")
        try:
            layers = {str(k): LayerFit(**v) for k, v in d["layers"].items()}
            ops = {str(k): OpFit(**v) for k, v in d.get("ops", {}).items()}
            lm = cls(fingerprint=str(d["fingerprint"]), layers=layers, ops=ops, scale=float(d["scale"]),
                     op_scale=float(d["op_scale"]), constant=float(d["constant"]),
                     metadata=dict(d.get("metadata") or {}), path=path)
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{where}: malformed latency model ({e!r})") from e
        checks = [("scale", lm.scale), ("op_scale", lm.op_scale), ("constant", lm.constant)]
        checks += [(f"layers[{k}].{c}", float(getattr(f, c))) for k, f in layers.items() for c in "abcd"]
        checks += [(f"ops[{k}].ms_full", float(o.ms_full)) for k, o in ops.items()]
        for name, v in checks:
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{where}: coefficient {name}={v} must be finite and >= 0")
        return lm

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically (temporary file in the same folder, then rename)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".latency-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.path = os.path.abspath(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LatencyModel":
        path = os.fspath(path)
        with open(path) as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON ({e})") from e
        return cls.from_dict(d, path=os.path.abspath(path))


# ---------------------------------------------------------------------------- end to end
def random_masks(graph: ChannelGraph, rng: np.random.Generator, low: float = 0.3,
                 high: float = 1.0, *, jitter: float | None = None) -> list[np.ndarray]:
    """A random pruned configuration; frozen groups stay whole, at least one channel is kept.

    Without ``jitter`` every prunable group draws its keep fraction uniformly from
    ``[low, high]``. With ``jitter`` one network-wide fraction ``f`` is drawn from
    ``[low, high]`` and each group keeps ``f * U(1 - jitter, 1 + jitter)`` (clipped to 1):
    such configurations span small to full networks, which is what the end-to-end
    calibration needs. Latency depends on how many channels are kept, not which: these keep
    the first ones.
    """
    f = rng.uniform(low, high) if jitter is not None else None
    masks = []
    for g in graph.groups:
        m = np.zeros(g.size, dtype=bool)
        if g.frozen:
            k = g.size
        else:
            frac = rng.uniform(low, high) if f is None else min(1.0, f * rng.uniform(1 - jitter, 1 + jitter))
            k = min(g.size, max(1, int(round(frac * g.size))))
        m[:k] = True
        masks.append(m)
    return masks


def _masks_from_counts(graph: ChannelGraph, keep: Mapping[int, int]) -> list[np.ndarray]:
    """Keep-masks that keep the first ``keep[g]`` channels of each prunable group ``g``
    (frozen groups whole)."""
    return [np.arange(g.size) < (g.size if g.frozen else keep[g.id]) for g in graph.groups]


def lopsided_masks(graph: ChannelGraph, rng: np.random.Generator) -> list[np.ndarray]:
    """A random *lopsided* configuration, like the plans a solver makes: some groups cut to
    one channel, others kept whole.

    Plans under a latency budget are far from uniform (a solver cuts whole stages to one
    channel and keeps others at full width), and that is where a model fitted on uniform keep
    fractions errs most (oneDNN pads a conv's channels to blocks of 16, so one channel costs
    about as much as 16). One of three kinds, at random: *scattered* (each group at one
    channel with probability ``p_min``, whole with ``p_full``, else a keep fraction uniform in
    [0.3, 1]); *early cut* (the groups before a random cut point in graph order at one
    channel or a fraction in [0.05, 0.4], the rest whole or in [0.7, 1]); *late cut* (the
    same, reversed).
    """
    groups = [g for g in graph.groups if not g.frozen]
    kind = int(rng.integers(3))
    cut = int(rng.integers(1, max(2, len(groups))))
    p_min, p_full = rng.uniform(0.1, 0.5, 2)

    def frac(a: float, b: float) -> float:
        return float(rng.uniform(a, b))

    keep = {}
    for i, g in enumerate(groups):
        if kind == 0:
            u = rng.random()
            f = 0.0 if u < p_min else 1.0 if u < p_min + p_full else frac(0.3, 1.0)
        elif (i < cut) == (kind == 1):   # the cut side
            f = 0.0 if rng.random() < 0.5 else frac(0.05, 0.4)
        else:
            f = 1.0 if rng.random() < 0.5 else frac(0.7, 1.0)
        keep[g.id] = min(g.size, max(1, int(round(f * g.size))))
    return _masks_from_counts(graph, keep)


def calibration_masks(graph: ChannelGraph, n: int, rng: np.random.Generator,
                      keep_range: tuple[float, float] = (0.15, 1.0), jitter: float = 0.3,
                      ) -> list[list[np.ndarray]]:
    """``n`` configurations for :func:`calibrate_latency`, a third of each kind in turn:
    network-wide keep fractions spread evenly (stratified) over ``keep_range`` with each group
    jittered by ``jitter``; per-group keep fractions uniform in ``[max(low, 0.3), 1]``; and
    :func:`lopsided_masks` (some groups at one channel, others whole), so that the global
    terms are also fitted where latency-budgeted plans live."""
    lo, hi = keep_range
    res = []
    strata = (rng.permutation(n) + rng.random(n)) / max(n, 1)
    for i in range(n):
        if i % 3 == 0:
            f = lo + strata[i] * (hi - lo)
            res.append(random_masks(graph, rng, f, f, jitter=jitter))
        elif i % 3 == 1:
            res.append(random_masks(graph, rng, max(lo, 0.3), hi))
        else:
            res.append(lopsided_masks(graph, rng))
    return res


def _metadata(model: nn.Module, inputs: tuple[torch.Tensor, ...], threads: int | None) -> dict[str, Any]:
    dev = _device_of(model)
    if dev.type == "cuda":
        device = f"cuda:{torch.cuda.get_device_name(dev)}"
    else:
        device = f"cpu:{platform.processor() or platform.machine()}"
    return {
        "device": device, "torch_version": torch.__version__, "threads": threads,
        "input_shapes": [list(x.shape) for x in inputs], "dtype": str(inputs[0].dtype) if inputs else None,
        "platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "model_name": type(model).__name__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def fit_global(layer_sums: Sequence[float], op_sums: Sequence[float], measured: Sequence[float], *,
               prior: float = 0.1) -> tuple[float, float, float]:
    """Non-negative fit of measured end-to-end ms against ``[sum of layer times, sum of other
    op times, 1]``: returns ``(scale, op_scale, constant)``.

    The two sums rise together over random configurations, so their split is poorly
    determined; a ridge ``prior`` pulls both scales towards 1 (in units of the first
    configuration's ms, i.e. the unpruned model), which keeps extrapolation to the unusual
    configurations a solver picks sane. ``prior=0`` is plain NNLS.
    """
    L, O, y = (np.asarray(v, float) for v in (layer_sums, op_sums, measured))
    n = len(y)
    X = np.stack([L, O, np.ones(n)], axis=1)
    if prior > 0:
        w = prior * math.sqrt(n)
        X = np.vstack([X, [w * L[0], 0, 0], [0, w * O[0], 0]])
        y = np.concatenate([y, [w * L[0], w * O[0]]])
    coef = _nnls_scaled(X, y)
    return float(coef[0]), float(coef[1]), float(coef[2])


def profile_latency(
    model: nn.Module,
    example_inputs: Any,
    *,
    graph: ChannelGraph | None = None,
    samples_per_layer: int = 16,
    repeats: int = 5,
    warmup: int = 2,
    passes: int = 3,
    threads: int | None = 1,
    low: float = 0.1,
    progress: bool = True,
    seed: int = 0,
) -> LatencyModel:
    """The per-node part of :func:`fit_latency`: time every prunable Conv/Linear node at
    sampled widths and every other call node at full width; the global terms are left at
    ``scale = op_scale = 1, constant = 0`` (set them with :func:`calibrate_latency`)."""
    _check_counts(repeats, warmup)
    for nm, v in (("samples_per_layer", samples_per_layer), ("passes", passes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{nm}={v!r} must be an integer >= 1")
    inputs = _as_tuple(example_inputs)
    graph = graph or build_channel_graph(model, inputs)
    rng = np.random.default_rng(seed)
    specs = layer_specs(graph)
    others = op_nodes(graph)
    modules = dict(graph.graph_module.named_modules())
    nodes = {n.name: n for n in graph.graph_module.graph.nodes}
    p = next(iter(model.parameters()))
    device, dtype = p.device, p.dtype
    t_start = time.perf_counter()

    by_sig: dict[tuple, list[LayerSpec]] = {}
    for s in specs:
        by_sig.setdefault(s.signature, []).append(s)
    plans = [(group, _sample_counts(group[0], samples_per_layer, rng, low)) for group in by_sig.values()]

    # every timing job, repeated in `passes` shuffled passes: a slow spell of a shared
    # machine then spreads over all layers instead of biasing the few timed during it
    jobs: list[tuple[str, Any, Any]] = []  # (kind, key, args)
    for gi, (group, pts) in enumerate(plans):
        for pi in range(len(pts)):
            jobs.append(("layer", (gi, pi), None))
    for name, desc, segs in others:
        jobs.append(("op", name, None))
    total = len(jobs) * passes
    times: dict[Any, list[float]] = {}
    untimed: dict[str, str] = {}
    bar = _Progress(total, "timing layers", progress)
    with fixed_threads(threads), torch.no_grad():
        for _ in range(passes):
            for j in rng.permutation(len(jobs)):
                kind, key, _a = jobs[j]
                if kind == "layer":
                    gi, pi = key
                    spec = plans[gi][0][0]
                    n_in, n_out = plans[gi][1][pi]
                    node = nodes[spec.node]
                    in_shape = tuple(graph.node_info[node.args[0].name].shapes)
                    t = time_layer(modules[node.target], spec.kind, in_shape, n_in, n_out, repeats=repeats,
                                   warmup=warmup, device=device, dtype=dtype)
                    note = f"{spec.node} {n_in}x{n_out}"
                elif key in untimed:
                    bar.update(key)
                    continue
                else:
                    try:
                        t = time_node(graph, key, repeats=repeats, warmup=warmup, device=device, dtype=dtype)
                    except _Untimeable as e:
                        untimed[key] = str(e)
                        bar.update(key)
                        continue
                    note = key
                times.setdefault(key, []).append(t)
                bar.update(note)
    bar.close()
    layers: dict[str, LayerFit] = {}
    for gi, (group, pts) in enumerate(plans):
        ts = [statistics.median(times[(gi, pi)]) for pi in range(len(pts))]
        ni, no = zip(*pts)
        (a, b, c, d), r2 = fit_layer(ni, no, ts, group[0].kind)
        for s in group:
            layers[s.node] = LayerFit(s.module, s.kind, a, b, c, d, r2, len(pts), s.in_full, s.out_full)
    ops: dict[str, OpFit] = {}
    for name, desc, segs in others:
        if name in times:
            ops[name] = OpFit(desc, statistics.median(times[name]), _size(graph, segs) if segs else 0)
    layers = {s.node: layers[s.node] for s in specs}  # graph order
    lm = LatencyModel(graph.fingerprint(), layers, ops, metadata=_metadata(model, inputs, threads))
    lm.metadata["fit"] = {
        "samples_per_layer": samples_per_layer, "repeats": repeats, "warmup": warmup, "low": low,
        "passes": passes, "seed": seed, "distinct_layer_shapes": len(plans), "timing_jobs": len(jobs),
        "untimed_ops": untimed, "seconds": round(time.perf_counter() - t_start, 2)}
    lm.metadata["r2_min"] = float(min((f.r2 for f in layers.values()), default=1.0))
    return lm


def calibrate_latency(lm: LatencyModel, graph: ChannelGraph, configs: Sequence[Sequence[int]],
                      measured: Sequence[float], *, prior: float = 0.1) -> LatencyModel:
    """Fit ``lm``'s global terms (in place) to end-to-end measurements: ``configs[i]`` are
    per-group kept counts, ``measured[i]`` ms; ``configs[0]`` should be the unpruned model
    (it scales the prior, and its measurement becomes :attr:`LatencyModel.measured_full_ms`
    when it is). One configuration only sets the constant (scales stay 1)."""
    if len(configs) != len(measured) or not configs:
        raise ValueError("calibrate_latency needs as many measurements as configurations (>= 1)")
    lpart, opart = lm._parts(graph)
    sums = [lpart.evaluate(c) for c in configs]
    osums = [opart.evaluate(c) for c in configs]
    if len(configs) > 1:
        lm.scale, lm.op_scale, lm.constant = fit_global(sums, osums, measured, prior=prior)
    else:
        lm.scale, lm.op_scale, lm.constant = 1.0, 1.0, max(0.0, measured[0] - sums[0] - osums[0])
    cost = lm.cost(graph)
    pred = np.array([cost.evaluate(c) for c in configs])
    meas = np.asarray(measured, float)
    err = np.abs(pred - meas) / meas
    first_full = [int(v) for v in configs[0]] == [int(v) for v in graph.sizes()]
    lm.metadata["calibration"] = {
        "configs": len(configs) - 1, "prior": prior, "first_is_unpruned": first_full,
        "measured_full_ms": float(meas[0]),
        "predicted_full_ms": float(pred[0]), "layer_sum_full_ms": float(sums[0]),
        "op_sum_full_ms": float(osums[0]), "mape": float(err.mean()), "max_ape": float(err.max())}
    return lm


def fit_latency(
    model: nn.Module,
    example_inputs: Any,
    *,
    graph: ChannelGraph | None = None,
    samples_per_layer: int = 16,
    repeats: int = 5,
    warmup: int = 2,
    passes: int = 3,
    threads: int | None = 1,
    calibrate: int = 18,
    calibrate_repeats: int = 9,
    keep_range: tuple[float, float] = (0.15, 1.0),
    low: float = 0.1,
    prior: float = 0.1,
    progress: bool = True,
    seed: int = 0,
) -> LatencyModel:
    """Time the network's nodes on this device and fit a :class:`LatencyModel` (see the
    module docstring).

    ``samples_per_layer`` (N_in, N_out) points per prunable Conv/Linear node between ``low``
    times and the full width (nodes of identical geometry share their timings), each the
    median of ``repeats`` after ``warmup`` calls, at ``threads`` torch threads; every other
    call node (BatchNorm, activations, adds, pooling, ...) is timed at full width. Then
    ``calibrate`` random slimmed configurations (:func:`calibration_masks`: network-wide keep
    fractions spread over ``keep_range`` with per-group jitter, per-group uniform ones, and
    lopsided ones as solver plans are) plus the unpruned model are measured end to end (medians of
    ``calibrate_repeats`` interleaved rounds) to fit the global terms (:func:`fit_global`);
    ``calibrate=0`` only measures the unpruned model and puts the difference into the
    constant. Batch size and input resolution are those of ``example_inputs``; the fitted
    model is valid for them only. The model is not modified.
    """
    from .apply import slim_model

    if isinstance(calibrate, bool) or not isinstance(calibrate, int) or calibrate < 0:
        raise ValueError(f"calibrate={calibrate!r} must be an integer >= 0")
    inputs = _as_tuple(example_inputs)
    graph = graph or build_channel_graph(model, inputs)
    t0 = time.perf_counter()
    lm = profile_latency(model, inputs, graph=graph, samples_per_layer=samples_per_layer,
                         repeats=repeats, warmup=warmup, passes=passes, threads=threads, low=low,
                         progress=progress, seed=seed)
    rng = np.random.default_rng([seed, 1])
    masks_list = calibration_masks(graph, calibrate, rng, keep_range)
    configs = [graph.sizes().tolist()] + [[int(m.sum()) for m in ms] for ms in masks_list]
    slims = [model] + [slim_model(model, graph, ms) for ms in masks_list]
    bar = _Progress(3, f"measuring {len(slims)} networks end to end", progress)
    measured = measure_many(slims, inputs, repeats=calibrate_repeats, warmup=2, threads=threads,
                            rounds=3, on_round=lambda r: bar.update(f"round {r}"))
    bar.close()
    del slims
    calibrate_latency(lm, graph, configs, measured, prior=prior)
    lm.metadata["calibration"].update({"keep_range": list(keep_range), "repeats": calibrate_repeats})
    lm.metadata["fit"]["seconds"] = round(time.perf_counter() - t0, 2)
    return lm


# ---------------------------------------------------------------------------- measured in the loop
# (full_model, slimmed_plan_model) -> (unpruned ms, plan ms), measured side by side
LatencyMeasure = Callable[[nn.Module, nn.Module], tuple[float, float]]


def _interleaved_measure(example_inputs: Any, repeats: int, threads: int | None) -> LatencyMeasure:
    """The default :data:`LatencyMeasure`: medians of the unpruned and the slimmed model in
    3 interleaved rounds (:func:`measure_many`), so drift of the machine cancels in the ratio."""
    def measure(full: nn.Module, slim: nn.Module) -> tuple[float, float]:
        m_full, m_slim = measure_many([full, slim], example_inputs, repeats=repeats, warmup=2,
                                      threads=threads, rounds=3)
        return m_full, m_slim
    return measure


def _latency_target_ms(requested: Any, measured_full_ms: float) -> float:
    """The user's latency target in ms: a fraction of the unpruned latency measured now, or an
    absolute value."""
    from .budget import Absolute

    return requested.value if isinstance(requested, Absolute) else requested * measured_full_ms


def _with_latency_limit(budget: Any, limit_ms: float, reference_ms: float) -> Any:
    """``budget`` with its latency limit set to ``limit_ms``, kept in the user's spelling
    (a fraction of ``reference_ms``, or absolute); the other limits unchanged."""
    import dataclasses

    from .budget import Absolute

    if isinstance(budget.latency, Absolute):
        return dataclasses.replace(budget, latency=Absolute(limit_ms))
    return dataclasses.replace(budget, latency=limit_ms / reference_ms)


def _round_record(index: int, plan: Any, full_ms: float, plan_ms: float, target_ms: float) -> dict[str, Any]:
    """What one round of :func:`plan_with_measured_latency` planned, predicted and measured."""
    ref, limit, predicted = (float(v) for v in (plan.full_cost["latency"], plan.limits["latency"], plan.cost["latency"]))
    full_ms, plan_ms, target_ms = float(full_ms), float(plan_ms), float(target_ms)
    return {"round": index, "limit_ms": limit, "limit_fraction": limit / ref,
            "predicted_ms": predicted, "predicted_ratio": predicted / ref,
            "measured_full_ms": full_ms, "measured_ms": plan_ms, "measured_ratio": plan_ms / full_ms,
            "target_ms": target_ms, "met": plan_ms <= target_ms, "objective": float(plan.objective)}


def _chosen_round(history: Sequence[Mapping[str, Any]]) -> int:
    """Index of the round to return: the last one when it met the target (the loop stops at
    the first that does), else the one measured closest to the target."""
    if history[-1]["met"]:
        return len(history) - 1
    return min(range(len(history)), key=lambda i: history[i]["measured_ms"] / history[i]["target_ms"])


def plan_with_measured_latency(model: nn.Module, example_inputs: Any, budget: Any, latency_model: LatencyModel,
                               *, rounds: int = 4, measure: LatencyMeasure | None = None, repeats: int = 18,
                               threads: int | None = 1, margin: float = 0.03, **plan_kwargs: Any) -> Any:
    """Plan with a latency budget, then check the plan on this device and re-plan until it
    meets the target as *measured*.

    Why: a solver pushes into exactly the configurations where the fitted model under-predicts
    (groups cut to one channel cost like 16 on oneDNN; late, wide layers run slower inside the
    network than standalone), so a plan that meets its budget as predicted can run 5-20% over
    it. Each round calls :func:`~qcqp_prune.plan_channels`, slims the plan and measures it
    beside the unpruned model (``measure``; default: medians of ``repeats`` forwards in 3
    interleaved rounds at ``threads`` threads). The target is ``budget.latency`` times the
    unpruned latency measured in the same rounds (or the absolute value in ms). While the plan
    runs over it, the latency limit is tightened by the ratio of measured to predicted latency
    and a ``margin``, ``new limit = predicted * target / measured * (1 - margin)``, and the
    model is planned again, at most ``rounds`` plans in all. The margin doubles after a round
    whose measured ratio improved by less than ``margin / 2``: tightening within one of
    oneDNN's 16-channel steps saves (almost) nothing, and the next re-plan must reach past it.

    Returns the first plan that meets the target; when none does (or a tightened budget
    becomes infeasible) the one that came closest, with a ``UserWarning``. Its
    ``latency_model["measured_loop"]`` records the requested budget, whether the target was
    met, the chosen round and every round (limit, predicted and measured ms and ratios,
    target); its own ``budget`` / ``limits`` are the (tightened) ones it was solved with.
    ``plan_kwargs`` go to ``plan_channels`` (``solver``, ``graph``, ``min_keep``, ...).
    """
    import warnings

    from .apply import slim_model
    from .plan import plan_channels
    from .solvers.result import InfeasibleBudgetError

    if budget.latency is None:
        raise ValueError("plan_with_measured_latency needs a budget with a latency limit, e.g. Budget(latency=0.6)")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r} must be an integer >= 1")
    measure = measure or _interleaved_measure(example_inputs, repeats, threads)
    history: list[dict[str, Any]] = []
    plans: list[Any] = []
    current, stop, stalls = budget, "rounds exhausted", 0
    for index in range(1, rounds + 1):
        try:
            plan = plan_channels(model, example_inputs, current, latency_model=latency_model, **plan_kwargs)
        except InfeasibleBudgetError as e:
            if not plans:   # the user's own budget: nothing to fall back on
                raise
            stop = f"round {index}: tightened budget infeasible ({e})"
            break
        plan_kwargs["graph"] = plan.graph
        full_ms, plan_ms = measure(model, slim_model(model, plan.graph, plan.masks))
        rec = _round_record(index, plan, full_ms, plan_ms, _latency_target_ms(budget.latency, full_ms))
        history.append(rec)
        plans.append(plan)
        if rec["met"]:
            stop = "target met"
            break
        # a round that gained (almost) nothing sat on a plateau of the staircase: aim lower
        stalled = len(history) > 1 and rec["measured_ratio"] > history[-2]["measured_ratio"] * (1 - margin / 2)
        stalls = stalls + 1 if stalled else 0
        tightened = plan.cost["latency"] * rec["target_ms"] / plan_ms * (1 - min(0.5, margin * 2 ** stalls))
        current = _with_latency_limit(budget, tightened, plan.full_cost["latency"])
    best = _chosen_round(history)
    plan = plans[best]
    met = history[best]["met"]
    plan.latency_model = {**(plan.latency_model or {}), "measured_loop": {
        "requested": budget.to_dict(), "met": met, "chosen_round": best + 1, "max_rounds": rounds,
        "stop": stop, "rounds": history}}
    if not met:
        warnings.warn(f"plan_with_measured_latency: no plan met the latency target in {len(plans)} round(s) "
                      f"({stop}); returning round {best + 1}, measured at "
                      f"{history[best]['measured_ms'] / history[best]['target_ms']:.3f} x the target", UserWarning,
                      stacklevel=2)
    return plan


# ---------------------------------------------------------------------------- CLI helper
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qcqp_prune.latency fit --model resnet18 --out latency.json``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m qcqp_prune.latency")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit a latency model for a torchvision / zoo model")
    f.add_argument("--model", required=True, help="torchvision name (resnet18) or zoo name (resnet56)")
    f.add_argument("--input", default=None, help="input shape, e.g. 1,3,224,224")
    f.add_argument("--out", required=True)
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--samples", type=int, default=10)
    f.add_argument("--repeats", type=int, default=7)
    f.add_argument("--calibrate", type=int, default=18)
    f.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from . import zoo
    if args.model in zoo.MODELS:
        model, shape = zoo.MODELS[args.model](), zoo.INPUT_SHAPE
    else:
        import torchvision
        model, shape = torchvision.models.get_model(args.model, weights=None), (1, 3, 224, 224)
    if args.input:
        shape = tuple(int(v) for v in args.input.split(","))
    model.eval()
    lm = fit_latency(model, torch.randn(shape), samples_per_layer=args.samples, repeats=args.repeats,
                     calibrate=args.calibrate, threads=args.threads, seed=args.seed)
    lm.save(args.out)
    print(lm.summary())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
