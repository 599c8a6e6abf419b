"""The ``qcqp-prune`` command: plan, apply, inspect, trace, latency fit.

Exit codes: 0 success, 2 usage errors (bad arguments or values), 1 any other error, reported
as one line on stderr (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Sequence


class UsageError(Exception):
    """Bad arguments or values: exit code 2."""


def load_model(spec: str):
    """``torchvision:NAME`` (weights=None), ``zoo:NAME`` (CIFAR zoo), ``package.module:factory``
    or a path to a full model saved with ``torch.save``."""
    import torch
    if os.path.exists(spec):
        model = torch.load(spec, weights_only=False, map_location="cpu")
        if not isinstance(model, torch.nn.Module):
            raise UsageError(f"--model {spec}: the file holds a {type(model).__name__}, not a full "
                             f"nn.Module (save with torch.save(model, path), not the state_dict)")
        return model.eval()
    torch.manual_seed(0)  # factories draw random weights: same spec, same model, in every process
    mod, sep, name = spec.partition(":")
    if not sep and (os.sep in spec or spec.endswith((".pt", ".pth", ".pkl"))):
        raise UsageError(f"--model {spec!r}: no such file")
    if not sep or not name:
        raise UsageError(f"--model {spec!r}: use torchvision:NAME, zoo:NAME, package.module:factory "
                         f"or a path to a saved model")
    if mod == "torchvision":
        import torchvision
        try:
            return torchvision.models.get_model(name, weights=None).eval()
        except (ValueError, KeyError) as e:
            raise UsageError(f"--model {spec!r}: unknown torchvision model {name!r}") from e
    if mod == "zoo":
        from . import zoo
        if name not in zoo.MODELS:
            raise UsageError(f"--model {spec!r}: the zoo has {sorted(zoo.MODELS)}")
        return zoo.MODELS[name]().eval()
    try:
        factory = getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"--model {spec!r}: cannot import {name} from {mod} ({e})") from e
    return factory().eval()


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--input-shape {text!r}: use comma-separated integers, e.g. 1,3,224,224") from None
    if not shape or any(v < 1 for v in shape):
        raise UsageError(f"--input-shape {text!r}: every dimension must be >= 1")
    return shape


def _inputs(args):
    import torch
    torch.manual_seed(0)
    return torch.randn(*parse_shape(args.input_shape))


def _progress(enabled: bool):
    """Print the incumbent and bound to stderr whenever the solver reports an improvement (at
    most 4 lines a second), and the final result."""
    if not enabled:
        return None
    state = {"last": -1.0, "shown": None}

    def report(obj: float, bound: float | None, elapsed: float) -> None:
        if (obj, bound) == state["shown"]:
            return
        if state["shown"] is not None and elapsed - state["last"] < 0.25:
            return  # rate limit; the final result is always shown
        b = "-" if bound is None else f"{bound:.6g}"
        gap = "" if not bound else f"  gap {100 * (bound - obj) / abs(bound):.2f}%"
        print(f"  [{elapsed:6.1f}s] incumbent {obj:.6g}  bound {b}{gap}", file=sys.stderr, flush=True)
        state.update(last=elapsed, shown=(obj, bound))

    def final(obj: float, bound: float | None, elapsed: float) -> None:
        """The solver's result, unless already shown (a solver may report only some steps)."""
        state["last"] = -1e9
        report(obj, bound, elapsed)

    report.final = final  # type: ignore[attr-defined]
    return report


def make_budget(args):
    """Each value in (0, 1] is a fraction of the unpruned model, a value > 1 an absolute limit."""
    import qcqp_prune as qp
    limits = {k: getattr(args, k) for k in ("flops", "params", "memory", "latency") if getattr(args, k) is not None}
    if not limits:
        raise UsageError("plan needs at least one budget: --flops, --params, --memory or --latency")
    try:
        return qp.Budget(**{k: qp.Absolute(v) if v > 1 else v for k, v in limits.items()})
    except ValueError as e:
        raise UsageError(str(e)) from e


def cmd_plan(args) -> int:
    import qcqp_prune as qp
    budget = make_budget(args)
    if args.latency is not None and not args.latency_model:
        raise UsageError("--latency needs --latency-model (fit one with `qcqp-prune latency fit`)")
    if args.measured_rounds and args.latency is None:
        raise UsageError("--measured-rounds needs a --latency budget (it measures the plan's latency)")
    model = load_model(args.model)
    x = _inputs(args)
    latency_model = qp.LatencyModel.load(args.latency_model) if args.latency_model else None
    print(f"tracing {args.model} on input {tuple(x.shape)} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    graph = qp.trace(model, x, coupling=args.coupling)
    print(f"  {len(graph.groups)} groups ({len(graph.prunable_groups)} prunable), {len(graph.layers)} layers "
          f"in {time.perf_counter() - t0:.1f}s; solving with {args.solver} (time limit {args.time_limit:g}s) ...",
          file=sys.stderr, flush=True)
    progress = _progress(not args.quiet)
    options = dict(importance=args.importance, solver=args.solver, coupling=args.coupling,
                   time_limit=args.time_limit, seed=args.seed, graph=graph, progress=progress,
                   **({"gap_limit": args.gap_limit} if args.solver in ("cpsat", "mip") else {}))
    if args.measured_rounds:  # plan, slim, measure on this machine, re-plan tighter until it meets the target
        plan = qp.plan_with_measured_latency(model, x, budget, latency_model, rounds=args.measured_rounds, **options)
    else:
        plan = qp.plan_channels(model, x, budget, latency_model=latency_model, **options)
    if progress is not None:
        progress.final(plan.objective, plan.bound, plan.wall_time)
    print(plan.summary())
    if args.out:
        plan.to_json(args.out, encoding=args.encoding)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.plot:
        plan.plot(args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def cmd_apply(args) -> int:
    import torch
    import qcqp_prune as qp
    from .plan_io import atomic_write, check_plan_against_graph
    plan = qp.load_plan(args.plan)
    model = load_model(args.model)
    graph = plan.graph_for(model)  # fingerprint check: refuses another architecture
    check_plan_against_graph(plan, graph)  # groups and layer lists agree with this model
    plan.graph = graph  # apply() reuses the checked trace
    pruned = plan.apply(model, mode="mask" if args.mask else "slim")
    if args.mask:  # torch.save cannot pickle parametrized modules: store plain zeroed weights
        qp.bake_masks(pruned)
    atomic_write(args.out, lambda f: torch.save(pruned, f))
    n0 = sum(p.numel() for p in model.parameters())
    n1 = sum(p.numel() for p in pruned.parameters())
    print(f"wrote {args.out} ({'masked' if args.mask else 'slimmed'}; parameters {n0:,} -> {n1:,})")
    return 0


def cmd_inspect(args) -> int:
    import qcqp_prune as qp
    print(qp.load_plan(args.plan).summary())
    return 0


def cmd_trace(args) -> int:
    import qcqp_prune as qp
    graph = qp.trace(load_model(args.model), _inputs(args))
    print(graph.summary())
    return 0


def cmd_latency_fit(args) -> int:
    import qcqp_prune as qp
    model = load_model(args.model)
    lm = qp.fit_latency(model, _inputs(args), threads=args.threads, progress=not args.quiet)
    lm.save(args.out)
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="qcqp-prune", description="Optimal channel pruning of PyTorch CNNs.")
    ap.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = ap.add_subparsers(dest="command", required=True)

    def model_args(p, shape_default=None):
        p.add_argument("--model", required=True, help="torchvision:NAME, zoo:NAME, package.module:factory or a saved model file")
        p.add_argument("--input-shape", required=shape_default is None, default=shape_default,
                       help="example input shape, e.g. 1,3,224,224")

    p = sub.add_parser("plan", help="choose channels under a budget and write a JSON plan")
    model_args(p)
    for k in ("flops", "params", "memory"):
        p.add_argument(f"--{k}", type=float, help=f"{k} budget: a fraction in (0, 1] or an absolute value > 1")
    p.add_argument("--latency", type=float, help="latency budget: fraction, or milliseconds > 1 (needs --latency-model)")
    p.add_argument("--latency-model", help="a latency model JSON from `qcqp-prune latency fit`")
    p.add_argument("--measured-rounds", type=int, default=0,
                   help="with --latency: measure the slimmed plan on this machine and re-plan with a tighter "
                        "limit until it meets the target, at most this many plans (default 0: one-shot)")
    p.add_argument("--solver", default="cpsat", choices=["cpsat", "mip", "greedy", "relaxation"])
    p.add_argument("--importance", default="l2", choices=["l2", "l1", "bn_scale"])
    p.add_argument("--time-limit", type=float, default=30.0)
    p.add_argument("--gap-limit", type=float, default=0.0,
                   help="stop once the certified relative gap is at most this (e.g. 0.005); default: prove optimality")
    p.add_argument("--coupling", default="shared", choices=["shared", "union"],
                   help="adds: operands share one keep-mask (shared) or a sum keeps a channel any operand keeps (union)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="plan JSON to write")
    p.add_argument("--encoding", default="indices", choices=["indices", "bitmap"])
    p.add_argument("--plot", help="PNG bar chart of kept channels per layer")
    p.add_argument("--quiet", action="store_true", help="no solver progress")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="apply a plan to a model and save the pruned module")
    p.add_argument("plan")
    p.add_argument("--model", required=True)
    p.add_argument("--out", required=True, help="where to torch.save the pruned module")
    p.add_argument("--mask", action="store_true",
                   help="masked model (same shapes, removed channels zeroed and baked into the weights) instead of slimmed")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("inspect", help="summary of a saved plan")
    p.add_argument("plan")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("trace", help="channel groups and why some are frozen")
    model_args(p)
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("latency", help="latency models")
    lsub = p.add_subparsers(dest="latency_command", required=True)
    f = lsub.add_parser("fit", help="profile layers and fit the quadratic latency model")
    model_args(f)
    f.add_argument("--out", required=True)
    f.add_argument("--threads", type=int, default=1)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=cmd_latency_fit)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)  # argparse exits with 2 on usage errors
    try:
        t = getattr(args, "time_limit", 0.0)
        if not (0 <= t < float("inf")):
            raise UsageError(f"--time-limit {t}: must be a finite number of seconds >= 0")
        return args.func(args)
    except UsageError as e:
        print(f"qcqp-prune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qcqp-prune: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as e:  # one clear line; the traceback only with --debug
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"qcqp-prune: error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
