"""Human-readable views of a plan: a summary table and a PNG bar chart."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .plan import PruningPlan


def _fmt(v: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3f}{unit}"
    return f"{v:.4g}"


def _budget_value(v) -> str:
    value = getattr(v, "value", None)
    return f"<= {_fmt(value)} (absolute)" if value is not None else f"<= {100 * v:g}% of the unpruned model"


def plan_summary(plan: "PruningPlan") -> str:
    """Per layer: output / input channels before and after and the share of its weight kept;
    then every resource after / before / limit, and the solver result."""
    rows = [("layer", "kind", "out", "in", "weight kept", "FLOPs share before -> after")]
    total_full = plan.full_cost.get("flops") or 1.0
    total_after = plan.cost.get("flops") or 1.0
    for name, e in plan.layers.items():
        out = f"{e['out_size']} -> {len(e['out'])}"
        inn = f"{e['in_size']} -> {len(e['in'])}" if "in" in e else "-"
        full = e["out_size"] * e.get("in_size", 1)
        kept = len(e["out"]) * (len(e["in"]) if "in" in e else 1)
        share = (f"{100 * e['flops_full'] / total_full:.1f}% -> {100 * e['flops'] / total_after:.1f}%"
                 if "flops" in e else "-")
        rows.append((name, e["kind"], out, inn, f"{100 * kept / full:.1f}%", share))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    budget = ", ".join(f"{k} {_budget_value(v)}" for k, v in plan.budget.items())
    lines.append(f"budget: {budget}")
    for k in plan.full_cost:
        limit = plan.limits.get(k)
        lim = f"   limit {_fmt(limit)} ({100 * plan.cost[k] / limit:.2f}% used)" if limit else ""
        ref = (plan.latency_model or {}).get("full_reference") if k == "latency" else None
        ref = f"   (of the {ref} unpruned latency)" if ref else ""
        lines.append(f"{k:8s} {_fmt(plan.cost[k]):>10s} of {_fmt(plan.full_cost[k]):>10s} "
                     f"({100 * plan.cost[k] / plan.full_cost[k]:.2f}%){lim}{ref}")
    gap = "n/a (no proven bound)" if plan.gap is None else f"{100 * plan.gap:.3f}%"
    bound = "n/a" if plan.bound is None else f"{plan.bound:.6g}"
    lines.append(f"solver {plan.solver}: {plan.status}"
                 + (f" ({plan.stop_reason})" if plan.stop_reason else "")
                 + f", kept importance ({plan.importance}) {plan.objective:.6g}, bound {bound}, "
                 f"certified gap {gap}, {plan.wall_time:.2f} s, seed {plan.seed}")
    return "\n".join(lines)


def plot_plan(plan: "PruningPlan", path: str) -> None:
    """A PNG bar chart of kept vs full output channels per prunable layer."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plan.plot needs matplotlib: pip install 'qcqp-prune[plot]'") from e
    names = list(plan.layers)
    full = [plan.layers[n]["out_size"] for n in names]
    kept = [len(plan.layers[n]["out"]) for n in names]
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(names) + 2), 4))
    xs = range(len(names))
    ax.bar(xs, full, color="#dddddd", label="unpruned")
    ax.bar(xs, kept, color="#3b7dd8", label="kept")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("output channels")
    gap = "" if plan.gap is None else f", gap {100 * plan.gap:.1f}%"
    ax.set_title(f"{plan.solver} plan ({plan.status}{gap}): "
                 + ", ".join(f"{k} {100 * plan.cost[k] / plan.full_cost[k]:.0f}% of unpruned" for k in plan.limits),
                 fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
