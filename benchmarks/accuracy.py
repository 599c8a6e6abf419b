"""Does optimal channel selection give better networks? Real data, real training, no downloads.

Trains a small CNN and a small ResNet on scikit-learn's bundled 8x8 ``digits`` images, prunes
each to 30/50/70% of its FLOPs with every method, and reports test accuracy right after
pruning and after a short, identical fine-tune, over several seeds (mean and spread).

    python benchmarks/accuracy.py                 # full run (3 seeds)
    python benchmarks/accuracy.py --smoke         # one seed, one budget, tiny training
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qcqp_prune as qp  # noqa: E402
from common import RESULTS, write  # noqa: E402
from methods import METHODS, torch_pruning_available, torch_pruning_global  # noqa: E402


def digits(seed: int = 0):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.5) / 0.5
    y = torch.tensor(d.target, dtype=torch.long)
    g = torch.Generator().manual_seed(1234)  # one fixed split for every seed
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1300], perm[1300:]
    return (x[tr], y[tr]), (x[te], y[te])


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(128 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(self.features(x), 1))))


class Block(nn.Module):
    def __init__(self, c_in: int, c: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(c)
        self.short = nn.Identity() if stride == 1 and c_in == c else nn.Sequential(
            nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))) + self.short(x))


class SmallResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.blocks = nn.Sequential(Block(32, 32, 1), Block(32, 32, 1), Block(32, 64, 2), Block(64, 64, 1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1))


MODELS = {"cnn": SmallCNN, "resnet": SmallResNet}


def train(model: nn.Module, data, epochs: int, lr: float, seed: int) -> nn.Module:
    x, y = data
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs * ((len(y) + 63) // 64)))
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data) -> float:
    x, y = data
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budgets", default="0.3,0.5,0.7")
    ap.add_argument("--models", default="cnn,resnet")
    ap.add_argument("--methods", default=",".join(METHODS) + (",torch-pruning" if torch_pruning_available() else ""))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--finetune", type=int, default=3)
    ap.add_argument("--time-limit", type=float, default=20.0)
    ap.add_argument("--smoke", action="store_true", help="one seed, one budget, 2 epochs")
    ap.add_argument("--out", default="accuracy")
    a = ap.parse_args(argv)
    if a.smoke:
        a.seeds, a.budgets, a.epochs, a.finetune, a.time_limit = 1, "0.5", 2, 1, 2.0
    torch.set_num_threads(1)
    train_set, test_set = digits()
    budgets = [float(b) for b in a.budgets.split(",")]
    methods = [m for m in a.methods.split(",") if m]
    raw = []  # (model, budget, method, seed, acc_pruned, acc_finetuned, flops_used, time)
    x0 = train_set[0][:1]
    for mname in a.models.split(","):
        for seed in range(a.seeds):
            torch.manual_seed(seed)
            base = train(MODELS[mname](), train_set, a.epochs, 3e-3, seed)
            base_acc = accuracy(base, test_set)
            full = qp.cost_model(qp.trace(base, x0))["flops"].evaluate(qp.trace(base, x0).sizes())
            print(f"[{mname} seed {seed}] trained: test accuracy {base_acc:.4f}", flush=True)
            raw.append((mname, 1.0, "unpruned", seed, base_acc, base_acc, 1.0, 0.0))
            for b in budgets:
                for meth in methods:
                    t0 = time.perf_counter()
                    if meth == "torch-pruning":
                        slim = torch_pruning_global(base, x0, b)
                    else:
                        masks, graph, _ = METHODS[meth](base, x0, qp.Budget(flops=b), seed, a.time_limit)
                        slim = qp.slim_model(base, graph, masks)
                    dt = time.perf_counter() - t0
                    from torch.utils.flop_counter import FlopCounterMode
                    c = FlopCounterMode(display=False)
                    with c, torch.no_grad():
                        slim(x0)
                    used = c.get_total_flops() / full
                    acc0 = accuracy(slim, test_set)
                    acc1 = accuracy(train(slim, train_set, a.finetune, 1e-3, seed), test_set)
                    raw.append((mname, b, meth, seed, acc0, acc1, used, dt))
                    print(f"  flops {b:.0%} {meth:14s} acc {acc0:.4f} -> {acc1:.4f} (FLOPs used {used:.3f}, {dt:.1f}s)", flush=True)
    rows = []
    keys = sorted({(r[0], r[1], r[2]) for r in raw}, key=lambda k: (k[0], k[1], methods.index(k[2]) if k[2] in methods else -1))
    for k in keys:
        rs = [r for r in raw if (r[0], r[1], r[2]) == k]
        a0, a1 = np.array([r[4] for r in rs]), np.array([r[5] for r in rs])
        rows.append((k[0], f"{k[1]:.0%}", k[2], len(rs), f"{a0.mean():.4f} ± {a0.std():.4f}",
                     f"{a1.mean():.4f} ± {a1.std():.4f}", f"{np.mean([r[6] for r in rs]):.3f}",
                     f"{np.mean([r[7] for r in rs]):.2f}"))
    headers = ["model", "FLOPs budget", "method", "seeds", "acc. after pruning", "acc. after fine-tune",
               "FLOPs used", "select time s"]
    md = write(a.out, "Accuracy after pruning on sklearn digits", headers, rows,
               notes=f"Training {a.epochs} epochs (Adam 3e-3, cosine), fine-tune {a.finetune} epochs "
                     f"(Adam 1e-3) identical for every method; 1300 train / 497 test images; mean ± "
                     f"std over seeds; importance l2 for the solvers, L1 for uniform, BN |gamma| for "
                     f"the threshold; cpsat time limit {a.time_limit}s.")
    print(md)
    _plot(rows, a.out)


def _plot(rows, out: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    models = sorted({r[0] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4), squeeze=False)
    for ax, m in zip(axes[0], models):
        for meth in sorted({r[2] for r in rows if r[0] == m and r[2] != "unpruned"}):
            pts = [(float(r[1].rstrip("%")) / 100, float(r[5].split(" ")[0])) for r in rows if r[0] == m and r[2] == meth]
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=meth)
        ax.set_title(f"{m}: accuracy after fine-tune")
        ax.set_xlabel("FLOPs budget")
        ax.set_ylabel("test accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig((out if os.path.isabs(out) else os.path.join(RESULTS, out)) + ".png", dpi=100)


if __name__ == "__main__":
    main()
