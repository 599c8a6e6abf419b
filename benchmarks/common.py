"""Helpers shared by the benchmarks: machine description and result writing."""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import sys
from typing import Sequence

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def machine() -> str:
    import numpy
    import ortools
    import torch
    return (f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs; Python "
            f"{platform.python_version()}, torch {torch.__version__}, ortools {ortools.__version__}, "
            f"numpy {numpy.__version__}; torch threads {torch.get_num_threads()}; 1-min load average "
            f"{os.getloadavg()[0]:.1f} when written; "
            f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def fmt(x: object) -> str:
        return f"{x:.4g}" if isinstance(x, float) else str(x)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def write(name: str, title: str, headers: Sequence[str], rows: Sequence[Sequence[object]],
          notes: str = "") -> str:
    """Write ``results/<name>.csv`` and ``results/<name>.md``; return the Markdown table."""
    base = name if os.path.isabs(name) else os.path.join(RESULTS, name)
    os.makedirs(os.path.dirname(base), exist_ok=True)
    with open(f"{base}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(headers)
        w.writerows(rows)
    md = table(headers, rows)
    cmd = "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    with open(f"{base}.md", "w") as f:
        f.write(f"# {title}\n\nMachine: {machine()}\n\nCommand: `{cmd}`\n\n{notes}\n\n{md}\n")
    return md
