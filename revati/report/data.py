"""Read a ``sweep_results`` table into curves: one per configuration, points ordered by rate."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from revati import parquet_io


@dataclass
class Point:
    run_id: str
    request_rate: float
    metrics: dict[str, float | None]
    num_gpus: int


@dataclass
class Curve:
    config_key: str
    config: dict
    label: str = ""
    points: list[Point] = field(default_factory=list)


def load_curves(path: str | os.PathLike) -> tuple[list[Curve], int]:
    """Curves of the successful runs, and the number of runs that failed."""
    table = parquet_io.read_table(Path(path), "sweep_results")
    rows = table.to_pylist()
    curves: dict[str, Curve] = {}
    failed = 0
    for row in rows:
        if row["status"] != "ok" or row["request_rate"] is None:
            failed += row["status"] != "ok"
            continue
        config = json.loads(row["config_json"] or "{}")
        config.setdefault("workload", {}).pop("request_rate", None)
        curve = curves.setdefault(row["config_key"], Curve(row["config_key"], config))
        metrics = {k: v for k, v in row.items() if isinstance(v, float) or v is None}
        curve.points.append(Point(row["run_id"], row["request_rate"], metrics, row["num_gpus"] or 1))
    out = list(curves.values())
    for c in out:
        c.points.sort(key=lambda p: p.request_rate)
    _label(out)
    return out, failed


def _flat(config: dict) -> dict[str, object]:
    flat = {"gpu": config.get("gpu")}
    for section in ("engine", "workload"):
        for k, v in (config.get(section) or {}).items():
            flat[k] = v
    return flat


def varying_keys(dicts: list[dict]) -> list[str]:
    """The keys whose values differ between the dicts (a missing key counts as None), sorted."""
    keys = sorted({k for d in dicts for k in d})
    return [k for k in keys if len({json.dumps(d.get(k), default=str) for d in dicts}) > 1]


def _label(curves: list[Curve]) -> None:
    """Label each curve by the parameters that differ between curves (all of them if one curve)."""
    flats = [_flat(c.config) for c in curves]
    varying = varying_keys(flats) or sorted({k for f in flats for k in f})
    for c, f in zip(curves, flats):
        c.label = ", ".join(f"{k}={f.get(k)}" for k in varying if f.get(k) is not None) or c.config_key
