"""Latency model accuracy on this machine (issue 5).

For each model: fit a latency model (per-layer timings + end-to-end calibration on random
configurations), slim held-out random configurations (per-group keep fractions uniform in
[0.3, 1.0], never used in the fit), measure them end to end and compare with the prediction:
MAPE and share within +-10%, against a FLOPs-proportional estimate
``t_full * flops(N) / flops_full``. Then plan with ``Budget(latency=0.6)`` (0.6 x the
unpruned latency measured in the fit, ``lm.measured_full_ms``), slim the plan, measure it
beside the unpruned model and check that it meets the target (0.6 x the unpruned latency)
within the model's measured error.

Calibration and held-out configurations are measured in the same interleaved rounds
(:func:`qcqp_prune.latency.measure_many`), so slow spells of a shared machine do not bias
one set against the other; the plans are measured later, beside the unpruned model. The
machine line of the results records the 1-minute load average at start and end.

    python benchmarks/latency.py                       # all four models
    python benchmarks/latency.py --models resnet56 --cifar-batch 1 --out latency_resnet56_b1

Writes benchmarks/results/<out>.{csv,md,png} and <out>_<model>.json (the fitted models);
``--out`` defaults to ``latency``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import sys
import time

import numpy as np
import torch

import qcqp_prune as qp
from qcqp_prune import zoo
from qcqp_prune.latency import (
    calibrate_latency, calibration_masks, measure_many, profile_latency, random_masks,
)

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
MODELS = ("resnet18", "resnet50", "mobilenet_v2", "resnet56")


def build(name: str, cifar_batch: int) -> tuple[torch.nn.Module, torch.Tensor, str]:
    torch.manual_seed(0)
    if name in zoo.MODELS:
        shape = (cifar_batch, 3, 32, 32)
        model = zoo.MODELS[name]()
    else:
        import torchvision
        shape = (1, 3, 224, 224)
        model = torchvision.models.get_model(name, weights=None)
    return model.eval(), torch.randn(shape), "x".join(map(str, shape))


def errors(pred: np.ndarray, meas: np.ndarray) -> tuple[float, float]:
    ape = np.abs(pred - meas) / meas
    return float(ape.mean()), float((ape <= 0.10).mean())


def uniform_plan(graph: qp.ChannelGraph, cost: qp.QuadraticCost, limit: float) -> list[np.ndarray]:
    """Fallback when no solver back-end is installed: the widest uniform keep fraction whose
    predicted latency meets ``limit`` (bisection)."""
    def masks(f: float) -> list[np.ndarray]:
        return [np.arange(g.size) < (g.size if g.frozen else max(1, int(np.floor(f * g.size))))
                for g in graph.groups]
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost.evaluate([int(m.sum()) for m in masks(mid)]) <= limit:
            lo = mid
        else:
            hi = mid
    return masks(lo)


def run_model(name: str, args: argparse.Namespace, rows: list[dict], scatter: dict) -> dict:
    model, x, shape = build(name, args.cifar_batch)
    graph = qp.trace(model, x)
    t0 = time.perf_counter()
    lm = profile_latency(model, x, graph=graph, samples_per_layer=args.samples, repeats=args.layer_repeats,
                         passes=args.passes, threads=args.threads, seed=args.seed, progress=not args.quiet)
    t_profile = time.perf_counter() - t0
    rng = np.random.default_rng([args.seed, 7])
    cal = calibration_masks(graph, args.calibrate, rng)
    held = [random_masks(graph, rng, 0.3, 1.0) for _ in range(args.heldout)]
    configs = [graph.sizes().tolist()] + [[int(m.sum()) for m in ms] for ms in cal + held]
    t1 = time.perf_counter()
    slims = [model] + [qp.slim_model(model, graph, ms) for ms in cal + held]
    print(f"[{name}] measuring {len(slims)} networks end to end ({args.repeats} repeats, 3 rounds)",
          file=sys.stderr)
    meas = np.array(measure_many(slims, x, repeats=args.repeats, warmup=2, threads=args.threads, rounds=3))
    del slims
    t_measure = time.perf_counter() - t1
    ncal = 1 + args.calibrate
    calibrate_latency(lm, graph, configs[:ncal], meas[:ncal].tolist(), prior=args.prior)
    lm.metadata["model_name"] = name
    lm.metadata["fit"]["seconds"] = round(t_profile, 2)
    lm.metadata["calibration"]["seconds"] = round(t_measure * ncal / len(configs), 2)
    lm.save(f"{args.base}_{name}.json")

    cost = lm.cost(graph)
    flops = qp.cost_model(graph)["flops"]
    f_full = flops.evaluate(configs[0])
    pred = np.array([cost.evaluate(c) for c in configs])
    fprop = np.array([meas[0] * flops.evaluate(c) / f_full for c in configs])
    for i, c in enumerate(configs):
        rows.append({"model": name, "input": shape, "config": i,
                     "set": "full" if i == 0 else ("calibration" if i < ncal else "heldout"),
                     "measured_ms": round(float(meas[i]), 4), "predicted_ms": round(float(pred[i]), 4),
                     "flops_prop_ms": round(float(fprop[i]), 4),
                     "flops_frac": round(flops.evaluate(c) / f_full, 4)})
    h = slice(ncal, None)
    mape, w10 = errors(pred[h], meas[h])
    p90 = float(np.percentile(np.abs(pred[h] - meas[h]) / meas[h], 90))
    fmape, fw10 = errors(fprop[h], meas[h])
    scatter[name] = (meas[h], pred[h], fprop[h], meas[:ncal], pred[:ncal])

    # a plan with a latency budget, slimmed and measured. Budget(latency=f) is f times the
    # unpruned latency measured in the fit (LatencyModel.measured_full_ms), not the predicted one
    from qcqp_prune import solvers
    label = f"Budget(latency={args.budget})"
    budget = qp.Budget(latency=args.budget)
    ref = "measured" if lm.measured_full_ms is not None else "predicted"
    limit = budget.resolve({"latency": lm.measured_full_ms if ref == "measured" else float(pred[0])})["latency"]
    if hasattr(solvers, "solve_channels"):
        plan = qp.plan_channels(model, x, budget, solver=args.solver, latency_model=lm, graph=graph,
                                time_limit=args.time_limit)
        assert abs(plan.limits["latency"] - limit) <= 1e-9 * limit
        assert plan.latency_model["full_reference"] == ref
        masks, how = plan.masks, f"{args.solver} ({plan.status})"
    else:  # no solver back-end installed
        masks, how = uniform_plan(graph, cost, limit), "uniform width (no solver back-end)"
    slim = qp.slim_model(model, graph, masks)
    m_full, m_plan = measure_many([model, slim], x, repeats=args.repeats * 2, warmup=2,
                                  threads=args.threads, rounds=3)
    del slim
    counts = [int(m.sum()) for m in masks]
    p_plan = cost.evaluate(counts)
    prunable = [(g.size, c) for g, c in zip(graph.groups, counts) if not g.frozen]
    limit_frac = limit / float(meas[0])   # the limit as a fraction of the measured unpruned latency
    ratio = m_plan / m_full               # plan / unpruned, measured in the same rounds
    plan_info = {
        "budget": label, "ref": ref, "how": how, "limit_ms": limit, "limit_frac": limit_frac,
        "predicted_ms": p_plan, "predicted_frac": p_plan / float(meas[0]), "measured_ms": m_plan,
        "measured_full_ms": m_full, "measured_ratio": ratio, "flops_frac": flops.evaluate(counts) / f_full,
        "p90": p90, "groups": len(prunable), "groups_at_1": sum(1 for n, c in prunable if c == 1 and n > 1),
        # the user's target: f times the unpruned network's (measured) latency
        "meets_target": bool(ratio <= args.budget * (1 + p90)),
        # the plan's own limit, expressed against the unpruned latency measured in the fit
        # session, so that drift of a shared machine between the two sessions cancels
        "meets_limit": bool(ratio <= limit_frac * (1 + p90)),
        "over_pct": 100 * (m_plan / limit - 1)}
    rows.append({"model": name, "input": shape, "config": "plan", "set": "plan",
                 "measured_ms": round(m_plan, 4), "predicted_ms": round(p_plan, 4),
                 "flops_prop_ms": round(m_full * flops.evaluate(counts) / f_full, 4),
                 "flops_frac": round(flops.evaluate(counts) / f_full, 4)})
    rows.append({"model": name, "input": shape, "config": "full (plan rounds)", "set": "plan",
                 "measured_ms": round(m_full, 4), "predicted_ms": round(float(pred[0]), 4),
                 "flops_prop_ms": round(m_full, 4), "flops_frac": 1.0})
    cal_info = lm.metadata["calibration"]
    return {"model": name, "input": shape, "layers": len(lm.layers), "ops": len(lm.ops),
            "r2_min": lm.metadata["r2_min"],
            "r2_median": float(np.median([f.r2 for f in lm.layers.values()])),
            "profile_s": t_profile, "measure_s": t_measure, "full_ms": float(meas[0]),
            "pred_full_ms": float(pred[0]), "scale": lm.scale, "op_scale": lm.op_scale,
            "constant": lm.constant, "cal_mape": cal_info["mape"], "heldout": args.heldout,
            "mape": mape, "within10": w10, "flops_mape": fmape, "flops_within10": fw10,
            "p90": p90, "plan": plan_info}


def plot(scatter: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(scatter)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, (name, (mh, ph, fh, mc, pc)) in zip(axes[0], scatter.items()):
        lo, hi = 0.9 * min(mh.min(), ph.min(), fh.min(), mc.min()), 1.05 * max(mh.max(), ph.max(), mc.max())
        xs = np.array([lo, hi])
        ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="0.9", label="+-10%")
        ax.plot(xs, xs, "k-", lw=0.8)
        ax.scatter(mc, pc, s=18, marker="s", facecolors="none", edgecolors="tab:gray", label="calibration")
        ax.scatter(mh, fh, s=14, marker="x", color="tab:red", label="FLOPs-proportional")
        ax.scatter(mh, ph, s=20, color="tab:blue", label="latency model (held out)")
        mape = np.mean(np.abs(ph - mh) / mh)
        fm = np.mean(np.abs(fh - mh) / mh)
        ax.set_title(f"{name}\nMAPE {mape:.1%} (FLOPs-prop. {fm:.1%})", fontsize=10)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured latency [ms]")
        ax.set_ylabel("predicted latency [ms]")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--heldout", type=int, default=24, help="held-out random configurations per model")
    ap.add_argument("--calibrate", type=int, default=12, help="calibration configurations per model")
    ap.add_argument("--repeats", type=int, default=9, help="end-to-end timed forwards per configuration")
    ap.add_argument("--samples", type=int, default=16, help="(N_in, N_out) samples per layer")
    ap.add_argument("--layer-repeats", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cifar-batch", type=int, default=8, help="batch size for the CIFAR ResNet-56")
    ap.add_argument("--prior", type=float, default=0.1)
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--solver", default="greedy")
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="latency", help="basename of the result files")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.base = base = os.path.join(RESULTS, args.out)
    os.makedirs(os.path.dirname(base), exist_ok=True)

    load_start = os.getloadavg()[0]
    machine = (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
               f"{os.cpu_count()} CPUs, torch {torch.__version__}, {args.threads} thread(s)")
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    rows: list[dict] = []
    scatter: dict = {}
    results = []
    t0 = time.perf_counter()
    for name in args.models:
        r = run_model(name, args, rows, scatter)
        results.append(r)
        p = r["plan"]
        plans = (f"plan: limit {p['limit_ms']:.2f} ms ({p['ref']} unpruned), predicted {p['predicted_ms']:.2f}, "
                 f"measured {p['measured_ms']:.2f} = {p['measured_ratio']:.3f} x unpruned")
        print(f"[{name}] MAPE {r['mape']:.2%}, within 10% {r['within10']:.0%} | FLOPs-prop. MAPE "
              f"{r['flops_mape']:.2%}, within 10% {r['flops_within10']:.0%} | {plans}", file=sys.stderr)
    total = time.perf_counter() - t0
    load_end = os.getloadavg()[0]
    machine += f", 1-min load average {load_start:.2f} at start, {load_end:.2f} at end"
    with open(base + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(scatter, base + ".png")

    head = ("| model | input | layers | R² min / median | fit s | measured full ms | MAPE | within ±10% "
            "| FLOPs-prop. MAPE | FLOPs-prop. within ±10% | accuracy target met |")
    lines = [f"# Latency model accuracy ({date})", "",
             f"Machine: {machine}.", "",
             f"Command: `python benchmarks/latency.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
             f" (total {total:.0f} s). Held-out: {args.heldout} random configurations per model "
             f"(per-group keep fraction uniform in [0.3, 1.0]), not used in the fit; calibration: "
             f"{args.calibrate} configurations + the unpruned model; end-to-end latency = median of "
             f"{args.repeats} forwards in 3 interleaved rounds; layer timings: {args.samples} samples "
             f"per layer, median of {args.layer_repeats} repeats x {args.passes} shuffled passes. "
             f"Target: MAPE <= 5% and >= 90% within ±10%.", "",
             head, "|" + "|".join(["---"] * 11) + "|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['input']} | {r['layers']} | {r['r2_min']:.2f} / {r['r2_median']:.2f} "
                     f"| {r['profile_s'] + r['measure_s'] * (1 + args.calibrate) / (1 + args.calibrate + args.heldout):.0f} "
                     f"| {r['full_ms']:.2f} | **{r['mape']:.1%}** | **{r['within10']:.0%}** "
                     f"| {r['flops_mape']:.1%} | {r['flops_within10']:.0%} "
                     f"| {'yes' if r['mape'] <= 0.05 and r['within10'] >= 0.9 else 'NO'} |")
    lines += ["", "Fitted global terms (T = scale·Σlayers + op_scale·Σops + constant):", "",
              "| model | scale | op_scale | constant ms | calibration MAPE | unpruned: predicted / measured ms |",
              "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['scale']:.3f} | {r['op_scale']:.3f} | {r['constant']:.2f} "
                     f"| {r['cal_mape']:.1%} | {r['pred_full_ms']:.2f} / {r['full_ms']:.2f} "
                     f"({r['pred_full_ms'] / r['full_ms'] - 1:+.1%}) |")
    f = args.budget
    lines += ["", f"Plans with a latency budget of f = {f} (solver `{args.solver}`), slimmed and measured beside "
              f"the unpruned model in 3 interleaved rounds of {2 * args.repeats} forwards, after the fit. "
              f"`Budget(latency={f})` is {f} x the unpruned latency measured in the fit "
              f"(`lm.measured_full_ms`; the predicted one only where the model has no measurement, column "
              f"\"limit\"). The target is {f} x the unpruned network's latency, checked on the measured ratio "
              f"plan / unpruned (same rounds), within the model's measured error (90th percentile of the "
              f"held-out absolute errors, ±p90). \"Own limit\" checks the plan against its limit expressed as a "
              f"fraction of the unpruned latency measured in the fit, so that drift of the machine between "
              f"the two sessions cancels; \"measured vs limit\" compares milliseconds across the sessions.", "",
              "| model | budget | plan | limit ms (/ measured unpruned, reference) | predicted ms | measured ms "
              "| measured vs limit | measured / unpruned | FLOPs kept | groups cut to 1 channel "
              f"| meets target {f} (±p90) | meets own limit (±p90) |",
              "|" + "|".join(["---"] * 12) + "|"]
    for r in results:
        p = r["plan"]
        lines.append(f"| {r['model']} | `{p['budget']}` "
                     f"| {p['how']} | {p['limit_ms']:.2f} ({p['limit_frac']:.3f}, {p['ref']}) | {p['predicted_ms']:.2f} "
                     f"| {p['measured_ms']:.2f} | {p['over_pct']:+.1f}% | **{p['measured_ratio']:.3f}** "
                     f"| {p['flops_frac']:.2f} | {p['groups_at_1']} of {p['groups']} "
                     f"| **{'yes' if p['meets_target'] else 'NO'}** (≤ {f * (1 + p['p90']):.3f}) "
                     f"| {'yes' if p['meets_limit'] else 'NO'} (≤ {p['limit_frac'] * (1 + p['p90']):.3f}) |")
    lines += ["", f"![predicted vs measured]({os.path.basename(base)}.png)", "",
              f"Per-configuration data: `{os.path.basename(base)}.csv`; fitted models: "
              f"`{os.path.basename(base)}_<model>.json`."]
    md = "\n".join(lines) + "\n"
    with open(base + ".md", "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
