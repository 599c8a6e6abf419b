"""Pruning plans as versioned JSON (DESIGN.md section 7).

``save_plan`` validates strictly against the shipped JSON Schema (2020-12) and writes
atomically (temporary file + ``os.replace``). ``load_plan`` refuses an unknown format or a
newer MAJOR version, reads a newer MINOR version leniently (unknown fields ignored), and
checks what a schema cannot (indices in range, sorted, no duplicates, no empty group, frozen
groups whole, unique group names, layer lists within their sizes).
:func:`check_plan_against_graph` checks a loaded plan against the traced model before it is
applied (group names and sizes in order, layer kept lists equal to those the group masks give).
Every problem raises :class:`PlanFormatError` naming the field.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import os
import platform
import tempfile
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from .budget import Budget
from .plan import PruningPlan

FORMAT = "qcqp-prune/plan"
VERSION = (1, 1)  # 1.1: optional "coupling" and groups[].union_of (union coupling)


class PlanFormatError(ValueError):
    """A plan file that is not valid JSON, not a plan, or inconsistent; names the field."""


@lru_cache(maxsize=1)
def plan_schema() -> dict:
    return json.loads(resources.files("qcqp_prune").joinpath("schemas/plan.schema.json").read_text())


def _lenient(schema: Any) -> Any:
    """The schema with every ``additionalProperties: false`` lifted (for newer minor versions)."""
    if isinstance(schema, dict):
        return {k: _lenient(v) for k, v in schema.items()
                if not (k == "additionalProperties" and v is False)}
    if isinstance(schema, list):
        return [_lenient(v) for v in schema]
    return schema


def _validate(doc: Any, lenient: bool = False) -> None:
    from jsonschema import Draft202012Validator
    schema = _lenient(plan_schema()) if lenient else plan_schema()
    errors = sorted(Draft202012Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".")
        raise PlanFormatError(f"invalid plan: {path or '<top level>'}: {e.message}")


def _encode(idx: list[int], size: int, encoding: str) -> Any:
    if encoding == "indices":
        return [int(i) for i in idx]
    bits = np.zeros(size, dtype=bool)
    bits[np.asarray(idx, dtype=np.int64)] = True
    return {"bitmap": base64.b64encode(np.packbits(bits).tobytes()).decode("ascii")}


def _decode(value: Any, size: int, where: str) -> np.ndarray:
    if isinstance(value, dict):
        try:
            raw = np.frombuffer(base64.b64decode(value["bitmap"], validate=True), dtype=np.uint8)
        except Exception as e:
            raise PlanFormatError(f"invalid plan: {where}: bitmap is not valid base64 ({e})") from e
        bits = np.unpackbits(raw).astype(bool)
        if len(bits) < size or len(bits) >= size + 8 or bits[size:].any():
            raise PlanFormatError(f"invalid plan: {where}: bitmap of {len(raw)} bytes does not match size {size}")
        idx = np.flatnonzero(bits[:size])
    else:
        for i, v in enumerate(value):  # Python ints first: no int64 overflow on huge values
            if not 0 <= v < size:
                raise PlanFormatError(f"invalid plan: {where}[{i}]: index {v} out of range for size {size}")
        idx = np.asarray(value, dtype=np.int64)
        if len(np.unique(idx)) != len(idx):
            dup = [int(v) for v in idx if (idx == v).sum() > 1][0]
            raise PlanFormatError(f"invalid plan: {where}: index {dup} appears more than once")
        unsorted = np.flatnonzero(np.diff(idx) < 0)
        if len(unsorted):
            i = int(unsorted[0]) + 1
            raise PlanFormatError(f"invalid plan: {where}[{i}]: indices must be sorted ascending "
                                  f"({int(idx[i - 1])} comes before {int(idx[i])})")
    if len(idx) == 0:
        raise PlanFormatError(f"invalid plan: {where}: keeps no channel (an empty group)")
    return idx


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    return x


def _versions() -> dict[str, str]:
    from . import __version__
    out = {"qcqp_prune": __version__, "python": platform.python_version()}
    for mod in ("torch", "ortools", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def plan_to_dict(plan: PruningPlan, encoding: str = "indices") -> dict[str, Any]:
    """The JSON document of ``plan`` (``encoding``: ``"indices"`` or compact ``"bitmap"``)."""
    if encoding not in ("indices", "bitmap"):
        raise ValueError(f"encoding={encoding!r} must be 'indices' or 'bitmap'")
    groups = []
    for name, mask in zip(plan.group_names, plan.masks):
        groups.append({"name": name, "size": int(len(mask)), "kept": _encode(np.flatnonzero(mask).tolist(), len(mask), encoding)})
    if plan.graph is not None:
        for entry, g in zip(groups, plan.graph.groups):
            entry["frozen"] = g.frozen
    for g, inputs in plan.unions.items():
        groups[g]["union_of"] = [int(i) for i in inputs]
    layers = {}
    for name, entry in plan.layers.items():
        e = {"kind": entry["kind"], "weight": entry["weight"], "out_size": entry["out_size"],
             "out": _encode(entry["out"], entry["out_size"], encoding)}
        if "in" in entry:
            e["in_size"] = entry["in_size"]
            e["in"] = _encode(entry["in"], entry["in_size"], encoding)
        for k in ("flops", "flops_full"):
            if k in entry:
                e[k] = entry[k]
        layers[name] = e
    details = {k: v for k, v in plan.solver_details.items() if k not in ("backend", "backend_version")}
    doc = {
        "format": FORMAT,
        "format_version": f"{VERSION[0]}.{VERSION[1]}",
        "model": {"fingerprint": plan.fingerprint, "input_shapes": [list(s) for s in plan.input_shapes]},
        "groups": groups,
        "layers": layers,
        **({"coupling": plan.coupling} if plan.coupling != "shared" else {}),
        "budget": plan.budget.to_dict(),
        "limits": plan.limits,
        "cost": plan.cost,
        "full_cost": plan.full_cost,
        "latency_model": plan.latency_model,
        "solver": {"name": plan.solver, "backend": str(plan.solver_details.get("backend", plan.solver)),
                   "backend_version": str(plan.solver_details.get("backend_version", "")),
                   "status": plan.status, "objective": plan.objective, "bound": plan.bound, "gap": plan.gap,
                   "stop_reason": plan.stop_reason, "wall_time": plan.wall_time, "seed": plan.seed,
                   "importance": plan.importance, "details": details},
        "versions": _versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    return _plain(doc)


def save_plan(plan: PruningPlan, path: str | os.PathLike, *, encoding: str = "indices") -> None:
    """Validate and write ``plan`` to ``path`` atomically (no half-written file on failure)."""
    doc = plan_to_dict(plan, encoding)
    _validate(doc)
    atomic_write(path, lambda f: f.write(json.dumps(doc, indent=1).encode()))


def atomic_write(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then ``os.replace`` it
    into place: readers never see a half-written file, and a failure leaves ``path`` as it was.
    The file gets the usual permissions (0666 less the umask), not ``mkstemp``'s 0600."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def plan_from_dict(doc: Any) -> PruningPlan:
    """Check ``doc`` (format, version, schema, semantics) and build the plan (no graph).

    Every problem raises :class:`PlanFormatError` naming the field."""
    try:
        return _plan_from_dict(doc)
    except PlanFormatError:
        raise
    except (ValueError, TypeError, KeyError) as e:  # Budget.from_dict and friends
        raise PlanFormatError(f"invalid plan: {type(e).__name__}: {e}") from e


def _plan_from_dict(doc: Any) -> PruningPlan:
    if not isinstance(doc, dict):
        raise PlanFormatError(f"invalid plan: the top level must be an object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise PlanFormatError(f"invalid plan: format: expected {FORMAT!r}, got {doc.get('format')!r}")
    version = str(doc.get("format_version", ""))
    try:
        major, minor = (int(v) for v in version.split("."))
    except ValueError:
        raise PlanFormatError(f"invalid plan: format_version: {version!r} is not MAJOR.MINOR") from None
    if major != VERSION[0]:
        raise PlanFormatError(f"invalid plan: format_version: {version} is not supported (this is "
                              f"qcqp-prune plan format {VERSION[0]}.x); upgrade qcqp-prune")
    _validate(doc, lenient=minor > VERSION[1])
    masks, names = [], []
    for i, g in enumerate(doc["groups"]):
        idx = _decode(g["kept"], g["size"], f"groups[{i}].kept")
        if g.get("frozen") and len(idx) != g["size"]:
            raise PlanFormatError(f"invalid plan: groups[{i}].kept: group {g['name']!r} is frozen and must "
                                  f"keep all {g['size']} channels, not {len(idx)}")
        m = np.zeros(g["size"], dtype=bool)
        m[idx] = True
        masks.append(m)
        names.append(g["name"])
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise PlanFormatError(f"invalid plan: groups[{names.index(dup, names.index(dup) + 1)}].name: "
                              f"{dup!r} names two groups")
    unions = _unions(doc, masks)
    layers = {}
    for name, e in doc["layers"].items():
        entry = {"kind": e["kind"], "weight": e["weight"], "out_size": e["out_size"],
                 "out": _decode(e["out"], e["out_size"], f"layers.{name}.out").tolist()}
        if "in" in e:
            if "in_size" not in e:
                raise PlanFormatError(f"invalid plan: layers.{name}: 'in' needs 'in_size'")
            entry["in_size"] = e["in_size"]
            entry["in"] = _decode(e["in"], e["in_size"], f"layers.{name}.in").tolist()
        for k in ("flops", "flops_full"):
            if k in e:
                entry[k] = e[k]
        layers[name] = entry
    s = doc["solver"]
    return PruningPlan(
        masks=masks, group_names=names, fingerprint=doc["model"]["fingerprint"],
        input_shapes=[tuple(x) for x in doc["model"]["input_shapes"]], status=s["status"],
        objective=s["objective"], bound=s["bound"], gap=s["gap"], cost=doc["cost"], full_cost=doc["full_cost"],
        budget=Budget.from_dict(doc["budget"]), limits=doc["limits"], importance=s["importance"],
        solver=s["name"], seed=s["seed"], wall_time=s["wall_time"], stop_reason=s.get("stop_reason"),
        solver_details={"backend": s.get("backend"), "backend_version": s.get("backend_version"),
                        **s.get("details", {})},
        layers=layers, latency_model=doc.get("latency_model"), coupling=doc.get("coupling", "shared"),
        unions=unions, graph=None)


def _unions(doc: dict, masks: list[np.ndarray]) -> dict[int, tuple[int, ...]]:
    """``groups[].union_of`` checked: indices of other groups of the same size whose OR is
    exactly this group's kept channels, and only in a ``coupling: "union"`` plan."""
    unions = {}
    for i, g in enumerate(doc["groups"]):
        if "union_of" not in g:
            continue
        where = f"groups[{i}].union_of"
        if doc.get("coupling") != "union":
            raise PlanFormatError(f"invalid plan: {where}: only a plan with coupling 'union' has unions")
        inputs = tuple(int(j) for j in g["union_of"])
        for j in inputs:
            if not 0 <= j < len(masks) or j == i:
                raise PlanFormatError(f"invalid plan: {where}: {j} is not another group's index")
            if len(masks[j]) != len(masks[i]):
                raise PlanFormatError(f"invalid plan: {where}: group {j} has {len(masks[j])} channels, "
                                      f"this group {len(masks[i])}")
        unions[i] = inputs
    for i, inputs in unions.items():
        if not np.array_equal(masks[i], np.logical_or.reduce([masks[j] for j in inputs])):
            raise PlanFormatError(f"invalid plan: groups[{i}].kept: must be the union of the kept channels "
                                  f"of groups {list(inputs)}")
    return unions


MAX_PLAN_BYTES = 1 << 28  # 256 MiB: ViT-H/14's plan (164k channels) is 3.1 MiB


def load_plan(path: str | os.PathLike) -> PruningPlan:
    """Read and check a plan file; see :func:`plan_from_dict`. Files over 256 MiB and groups
    over 2**24 channels are refused before anything is decoded (a hostile file cannot make
    the loader allocate arbitrary memory)."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"plan file {os.fspath(path)!r} does not exist") from None
    if size > MAX_PLAN_BYTES:
        raise PlanFormatError(f"invalid plan: {os.fspath(path)!r} is {size / 2**20:.0f} MiB, more than any plan "
                              f"needs ({MAX_PLAN_BYTES >> 20} MiB); is it the right file?")
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        body = text.strip()
        opened = body[:1] in ("{", "[") and body[-1:] not in ("}", "]")
        what = "truncated" if opened or e.pos >= len(body) else "not valid JSON"
        raise PlanFormatError(f"invalid plan: {os.fspath(path)!r} is {what} (line {e.lineno}, column "
                              f"{e.colno}: {e.msg})") from None
    return plan_from_dict(doc)


def check_plan_against_graph(plan: PruningPlan, graph: Any) -> None:
    """Check a (loaded) plan against the traced model it is about to be applied to, beyond
    the fingerprint: the same groups in the same order (names, sizes), frozen groups whole,
    and every layer's kept lists equal to those the group masks give on this graph.
    Raises :class:`PlanFormatError` naming the field; changes nothing."""
    from .plan import layer_table
    names = [g.name for g in graph.groups]
    if len(plan.masks) != len(names):
        raise PlanFormatError(f"invalid plan: groups: the plan has {len(plan.masks)} groups, the model "
                              f"{len(names)}")
    for i, (g, name, m) in enumerate(zip(graph.groups, plan.group_names, plan.masks)):
        if name != g.name:
            raise PlanFormatError(f"invalid plan: groups[{i}].name: {name!r}, the model's group {i} is {g.name!r}")
        if len(m) != g.size:
            raise PlanFormatError(f"invalid plan: groups[{i}].size: {len(m)}, the model's group {g.name!r} "
                                  f"has {g.size} channels")
        if g.frozen and not m.all():
            raise PlanFormatError(f"invalid plan: groups[{i}].kept: group {g.name!r} is frozen "
                                  f"({g.frozen_reasons[0]}) and must keep all its channels")
    if plan.layers:
        expected = layer_table(graph, plan.masks)
        if expected.keys() != plan.layers.keys():
            diff = sorted(expected.keys() ^ plan.layers.keys())[:3]
            raise PlanFormatError(f"invalid plan: layers: the plan's layers differ from the model's ({diff})")
        for name, e in expected.items():
            got = plan.layers[name]
            for k in ("kind", "weight", "out_size", "out", "in_size", "in"):
                want, have = e.get(k), got.get(k)
                if k in ("out", "in"):
                    want = None if want is None else [int(v) for v in want]
                    have = None if have is None else [int(v) for v in have]
                if want != have:
                    raise PlanFormatError(f"invalid plan: layers.{name}.{k}: does not match the model "
                                          f"(the groups' kept channels give {_short(want)}, the plan "
                                          f"says {_short(have)})")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
