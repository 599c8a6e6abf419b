"""Latency model accuracy and latency-budgeted plans on this machine (issue 5).

For each model: fit a latency model (per-layer timings + end-to-end calibration on random
configurations, a third of them lopsided), then measure two held-out sets that were never used
in the fit, *uniform* (per-group keep fractions uniform in [0.3, 1.0]) and *lopsided* (groups
cut to one channel, others whole, as solver plans are: ``lopsided_masks``), and compare with
the prediction: MAPE and share within +-10% per set, against a FLOPs-proportional estimate
``t_full * flops(N) / flops_full``. Then plan with ``Budget(latency=0.6)`` (0.6 x the unpruned
latency measured in the fit) twice: one-shot (``plan_channels``) and measured in the loop
(``plan_with_measured_latency``: re-plan with a tightened limit while the slimmed plan,
measured beside the unpruned model, runs over 0.6 x unpruned); both plans are measured again
afterwards in fresh interleaved rounds.

Calibration and held-out configurations are measured in the same interleaved rounds
(:func:`qcqp_prune.latency.measure_many`), so slow spells of a shared machine do not bias
one set against the other. The machine line of the results records the 1-minute load average
at start and end; run it on a quiet machine (1-min load below 1.5).

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
    LatencyModel, calibrate_latency, calibration_masks, lopsided_masks, measure_many, plan_with_measured_latency,
    profile_latency, random_masks,
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


def fit_and_measure(name: str, args: argparse.Namespace, rows: list[dict], scatter: dict) -> tuple:
    """Profile the layers, then measure the calibration and both held-out sets end to end in the
    same interleaved rounds; calibrate on the first set. Returns the model, input, graph, fitted
    latency model and a summary dict of the model's accuracy."""
    model, x, shape = build(name, args.cifar_batch)
    graph = qp.trace(model, x)
    t0 = time.perf_counter()
    lm = profile_latency(model, x, graph=graph, samples_per_layer=args.samples, repeats=args.layer_repeats,
                         passes=args.passes, threads=args.threads, seed=args.seed, progress=not args.quiet)
    t_profile = time.perf_counter() - t0
    rng = np.random.default_rng([args.seed, 7])
    sets = {"calibration": calibration_masks(graph, args.calibrate, rng),
            "heldout_uniform": [random_masks(graph, rng, 0.3, 1.0) for _ in range(args.heldout)],
            "heldout_lopsided": [lopsided_masks(graph, rng) for _ in range(args.heldout)]}
    labels = ["full"] + [k for k, v in sets.items() for _ in v]
    masks = [ms for v in sets.values() for ms in v]
    configs = [graph.sizes().tolist()] + [[int(m.sum()) for m in ms] for ms in masks]
    t1 = time.perf_counter()
    slims = [model] + [qp.slim_model(model, graph, ms) for ms in masks]
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
    lab = np.array(labels)
    for i, c in enumerate(configs):
        group, _, kind = labels[i].partition("_")
        rows.append({"model": name, "input": shape, "config": i, "set": group, "kind": kind,
                     "measured_ms": round(float(meas[i]), 4), "predicted_ms": round(float(pred[i]), 4),
                     "flops_prop_ms": round(float(fprop[i]), 4),
                     "flops_frac": round(flops.evaluate(c) / f_full, 4)})
    acc = {}
    for kind in ("uniform", "lopsided"):
        h = lab == f"heldout_{kind}"
        ape = np.abs(pred[h] - meas[h]) / meas[h]
        acc[kind] = {"mape": float(ape.mean()), "within10": float((ape <= 0.10).mean()),
                     "p90": float(np.percentile(ape, 90)), "flops_mape": errors(fprop[h], meas[h])[0]}
    scatter[name] = {k: (meas[lab == k], pred[lab == k]) for k in ("calibration", "heldout_uniform",
                                                                   "heldout_lopsided")}
    cal_info = lm.metadata["calibration"]
    summary = {"model": name, "input": shape, "layers": len(lm.layers), "ops": len(lm.ops),
               "r2_min": lm.metadata["r2_min"], "r2_median": float(np.median([f.r2 for f in lm.layers.values()])),
               "fit_s": t_profile + t_measure * ncal / len(configs), "full_ms": float(meas[0]),
               "pred_full_ms": float(pred[0]), "scale": lm.scale, "op_scale": lm.op_scale,
               "constant": lm.constant, "cal_mape": cal_info["mape"], "acc": acc}
    return model, x, graph, lm, summary


def plan_rows(name: str, model: torch.nn.Module, x: torch.Tensor, graph: qp.ChannelGraph, lm: LatencyModel,
              args: argparse.Namespace, rows: list[dict], tolerance: float) -> dict:
    """Plan with ``Budget(latency=f)`` measured in the loop (:func:`plan_with_measured_latency`);
    its first round is the one-shot plan (``plan_channels`` once). Both plans are then measured
    again beside the unpruned model in fresh interleaved rounds: the loop stopped on a
    measurement that met the target, and a fresh one keeps that selection from flattering it."""
    budget = qp.Budget(latency=args.budget)
    kw = {"solver": args.solver, "graph": graph, "time_limit": args.time_limit}
    oneshot = qp.plan_channels(model, x, budget, latency_model=lm, **kw)
    loop = plan_with_measured_latency(model, x, budget, lm, rounds=args.rounds, repeats=2 * args.repeats,
                                      threads=args.threads, **kw)
    slims = [qp.slim_model(model, graph, p.masks) for p in (oneshot, loop)]
    m_full, m_one, m_loop = measure_many([model] + slims, x, repeats=2 * args.repeats, warmup=2,
                                         threads=args.threads, rounds=3)
    del slims
    flops = qp.cost_model(graph)["flops"]
    f_full = flops.evaluate(graph.sizes())
    res = {"rounds": loop.latency_model["measured_loop"], "measured_full_ms": m_full, "tolerance": tolerance}
    for key, plan, ms in (("oneshot", oneshot, m_one), ("loop", loop, m_loop)):
        counts = [int(m.sum()) for m in plan.masks]
        prunable = [(g.size, c) for g, c in zip(graph.groups, counts) if not g.frozen]
        ratio = ms / m_full
        res[key] = {"status": plan.status, "limit_ms": plan.limits["latency"], "ref": plan.latency_model["full_reference"],
                    "limit_frac": plan.limits["latency"] / plan.full_cost["latency"],
                    "predicted_frac": plan.cost["latency"] / plan.full_cost["latency"],
                    "measured_ms": ms, "measured_ratio": ratio, "flops_frac": flops.evaluate(counts) / f_full,
                    "objective": plan.objective, "groups": len(prunable),
                    "groups_at_1": sum(1 for n, c in prunable if c == 1 and n > 1),
                    "meets_strict": bool(ratio <= args.budget),
                    "meets_target": bool(ratio <= args.budget * (1 + tolerance))}
        rows.append({"model": name, "input": "", "config": "plan", "set": "plan", "kind": key,
                     "measured_ms": round(ms, 4), "predicted_ms": round(plan.cost["latency"], 4),
                     "flops_prop_ms": round(m_full * flops.evaluate(counts) / f_full, 4),
                     "flops_frac": round(flops.evaluate(counts) / f_full, 4)})
    rows.append({"model": name, "input": "", "config": "full (plan rounds)", "set": "plan", "kind": "",
                 "measured_ms": round(m_full, 4), "predicted_ms": round(lm.predict(graph, graph.sizes()), 4),
                 "flops_prop_ms": round(m_full, 4), "flops_frac": 1.0})
    return res


def run_model(name: str, args: argparse.Namespace, rows: list[dict], scatter: dict) -> dict:
    model, x, graph, lm, summary = fit_and_measure(name, args, rows, scatter)
    summary["plan"] = plan_rows(name, model, x, graph, lm, args, rows, summary["acc"]["lopsided"]["p90"])
    return summary


def plot(scatter: dict, path: str) -> None:
    """Predicted vs measured latency per model: calibration, uniform and lopsided held-out sets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(scatter)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    style = {"calibration": dict(s=18, marker="s", facecolors="none", edgecolors="tab:gray"),
             "heldout_uniform": dict(s=20, color="tab:blue"), "heldout_lopsided": dict(s=20, color="tab:orange")}
    for ax, (name, sets) in zip(axes[0], scatter.items()):
        allv = np.concatenate([v for pair in sets.values() for v in pair])
        lo, hi = 0.9 * allv.min(), 1.05 * allv.max()
        xs = np.array([lo, hi])
        ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="0.9", label="+-10%")
        ax.plot(xs, xs, "k-", lw=0.8)
        for key, (m, p) in sets.items():
            ax.scatter(m, p, label=f"{key} (MAPE {np.mean(np.abs(p - m) / m):.1%})", **style[key])
        ax.set_title(name, fontsize=10)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured latency [ms]")
        ax.set_ylabel("predicted latency [ms]")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def accuracy_lines(results: list[dict]) -> list[str]:
    """The held-out accuracy table, uniform and lopsided configurations side by side."""
    lines = ["| model | input | layers | R² min / median | fit s | measured full ms | uniform: MAPE | uniform: "
             "within ±10% | lopsided: MAPE | lopsided: within ±10% | FLOPs-prop. MAPE (uniform / lopsided) "
             "| accuracy target met (uniform / lopsided) |", "|" + "|".join(["---"] * 12) + "|"]
    for r in results:
        u, lo = r["acc"]["uniform"], r["acc"]["lopsided"]
        met = ["yes" if a["mape"] <= 0.05 and a["within10"] >= 0.9 else "NO" for a in (u, lo)]
        lines.append(f"| {r['model']} | {r['input']} | {r['layers']} | {r['r2_min']:.2f} / {r['r2_median']:.2f} "
                     f"| {r['fit_s']:.0f} | {r['full_ms']:.2f} | **{u['mape']:.1%}** | **{u['within10']:.0%}** "
                     f"| **{lo['mape']:.1%}** | **{lo['within10']:.0%}** | {u['flops_mape']:.1%} / {lo['flops_mape']:.1%} "
                     f"| {met[0]} / {met[1]} |")
    return lines


def plan_lines(results: list[dict], f: float) -> list[str]:
    """One-shot vs measured-in-the-loop plans, then every round of the loop."""
    lines = ["| model | plan | rounds | limit ms (/ unpruned, reference) | predicted / unpruned | measured / unpruned "
             "| FLOPs kept | groups cut to 1 channel | ≤ " + f"{f} (strict) | ≤ {f} x (1 + p90) |",
             "|" + "|".join(["---"] * 10) + "|"]
    for r in results:
        p = r["plan"]
        for key, label in (("oneshot", "one-shot"), ("loop", "measured in the loop")):
            q = p[key]
            rounds = "1" if key == "oneshot" else f"{p['rounds']['chosen_round']} of ≤ {p['rounds']['max_rounds']}"
            lines.append(f"| {r['model']} | {label} | {rounds} | {q['limit_ms']:.2f} ({q['limit_frac']:.3f}, {q['ref']}) "
                         f"| {q['predicted_frac']:.3f} "
                         f"| **{q['measured_ratio']:.3f}** | {q['flops_frac']:.2f} | {q['groups_at_1']} of {q['groups']} "
                         f"| {'yes' if q['meets_strict'] else '**NO**'} "
                         f"| {'yes' if q['meets_target'] else '**NO**'} (≤ {f * (1 + p['tolerance']):.3f}) |")
    lines += ["", "Rounds of the loop (measured in the loop, beside the unpruned model):", "",
              "| model | round | limit / unpruned | predicted / unpruned | measured / unpruned | met |",
              "|---|---|---|---|---|---|"]
    for r in results:
        for h in r["plan"]["rounds"]["rounds"]:
            lines.append(f"| {r['model']} | {h['round']} | {h['limit_fraction']:.3f} | {h['predicted_ratio']:.3f} "
                         f"| {h['measured_ratio']:.3f} | {'yes' if h['met'] else 'no'} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--heldout", type=int, default=24,
                    help="held-out configurations per model and kind (uniform, lopsided)")
    ap.add_argument("--calibrate", type=int, default=18, help="calibration configurations per model")
    ap.add_argument("--repeats", type=int, default=9, help="end-to-end timed forwards per configuration")
    ap.add_argument("--samples", type=int, default=16, help="(N_in, N_out) samples per layer")
    ap.add_argument("--layer-repeats", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cifar-batch", type=int, default=8, help="batch size for the CIFAR ResNet-56")
    ap.add_argument("--prior", type=float, default=0.1)
    ap.add_argument("--budget", type=float, default=0.6)
    ap.add_argument("--rounds", type=int, default=3, help="most plans of the measured-in-the-loop planner")
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
        print(f"[{name}] MAPE uniform {r['acc']['uniform']['mape']:.2%}, lopsided {r['acc']['lopsided']['mape']:.2%} | "
              f"plan measured / unpruned: one-shot {p['oneshot']['measured_ratio']:.3f}, "
              f"loop {p['loop']['measured_ratio']:.3f} (round {p['rounds']['chosen_round']})", file=sys.stderr)
    total = time.perf_counter() - t0
    load_end = os.getloadavg()[0]
    machine += f", 1-min load average {load_start:.2f} at start, {load_end:.2f} at end"
    with open(base + ".csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot(scatter, base + ".png")

    f = args.budget
    lines = [f"# Latency model accuracy and latency-budgeted plans ({date})", "",
             f"Machine: {machine}.", "",
             f"Command: `python benchmarks/latency.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
             f" (total {total:.0f} s). Held-out, never used in the fit: {args.heldout} *uniform* random "
             f"configurations per model (per-group keep fraction uniform in [0.3, 1.0]) and {args.heldout} "
             f"*lopsided* ones (`lopsided_masks`: groups cut to one channel, others whole, scattered or by "
             f"depth, as solver plans are); calibration: {args.calibrate} configurations (a third each: "
             f"network-wide fraction with jitter, per-group uniform, lopsided) + the unpruned model; "
             f"end-to-end latency = median of {args.repeats} forwards in 3 interleaved rounds (calibration "
             f"and both held-out sets in the same rounds); layer timings: {args.samples} samples per layer, "
             f"median of {args.layer_repeats} repeats x {args.passes} shuffled passes. Target: MAPE <= 5% and "
             f">= 90% within ±10%.", ""]
    lines += accuracy_lines(results)
    lines += ["", "Fitted global terms (T = scale·Σlayers + op_scale·Σops + constant):", "",
              "| model | scale | op_scale | constant ms | calibration MAPE | unpruned: predicted / measured ms |",
              "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['scale']:.3f} | {r['op_scale']:.3f} | {r['constant']:.2f} "
                     f"| {r['cal_mape']:.1%} | {r['pred_full_ms']:.2f} / {r['full_ms']:.2f} "
                     f"({r['pred_full_ms'] / r['full_ms'] - 1:+.1%}) |")
    lines += ["", f"Plans with `Budget(latency={f})` (solver `{args.solver}`; {f} x the unpruned latency measured "
              f"in the fit): *one-shot* is `plan_channels` once; *measured in the loop* is "
              f"`plan_with_measured_latency(..., rounds={args.rounds})`, which slims and measures each plan beside "
              f"the unpruned model ({2 * args.repeats} forwards in 3 interleaved rounds) and, while it runs over "
              f"{f} x unpruned, tightens the limit by measured / predicted and plans again. After the loop both "
              f"plans are measured once more beside the unpruned model in fresh interleaved rounds "
              f"({2 * args.repeats} forwards); the \"measured / unpruned\" column is that fresh measurement. "
              f"\"Strict\" is the target itself; the tolerance p90 is the 90th percentile of the model's "
              f"errors on the lopsided held-out set (the region plans live in).", ""]
    lines += plan_lines(results, f)
    lines += ["", f"![predicted vs measured]({os.path.basename(base)}.png)", "",
              f"Per-configuration data: `{os.path.basename(base)}.csv`; fitted models: "
              f"`{os.path.basename(base)}_<model>.json`."]
    md = "\n".join(lines) + "\n"
    with open(base + ".md", "w") as fh:
        fh.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
