"""The benchmark result file (``metrics.json``): vLLM's result dict plus revati's extras.

Layout: the header keys ``vllm bench serve`` writes (``date``, ``endpoint_type``, ``backend``,
``label``, ``model_id``, ``tokenizer_id``, ``num_prompts``, ``request_rate`` -- the string
``"inf"`` when infinite --, ``burstiness``, ``max_concurrency``), then the aggregate metrics
(revati.metrics.aggregate), then revati's extras:

- ``virtual_duration_s``: the benchmark's duration on the client's clock (virtual under
  ``revati emulate``; equal to ``duration``);
- ``wall_duration_s``: the real time the run took (outside emulation the same clock);
- ``speedup``: virtual / wall;
- ``wall_breakdown``: under ``revati emulate``, where the run's wall time went (framework CPU,
  shim CPU, coordination, full GC, off-CPU, start-up) and ``efficiency`` = framework CPU / wall;
- ``fallback_op_count``: kernel launches (graph replays count each kernel they hold) timed by the
  roofline fallback rather than a measurement or a fitted model;
- ``gpu``, ``model``, ``engine``, ``engine_version``, ``engine_config``, ``versions``,
  ``workload``, ``goodput_slos_ms``, ``revati_version``.

``revati emulate`` knows the wall time and the fallback count, which the client under emulation
cannot see: it passes them to :func:`merge_extras` after the run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from revati import __version__
from revati.errors import BadInput
from revati.parquet_io import atomic_write_bytes

METRICS_FILE = "metrics.json"
REQUESTS_FILE = "requests.jsonl"


@dataclass
class RunExtras:
    """What revati adds to vLLM's result; every field may be unknown (None)."""

    wall_duration_s: float | None = None
    fallback_op_count: int | None = None
    gpu: str | None = None
    model: str | None = None
    engine: str | None = None
    engine_version: str | None = None
    engine_config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    host_cpu: str | None = None             # the host the host time stands for (--host-cpu)
    host_speed_factor: float | None = None  # measured host time was divided by this
    host_time_share: float | None = None    # of the benchmark's virtual time: measured host CPU (0..1)
    # where the emulation's wall time went, summed over its processes (Note [Wall-time
    # breakdown], revati/shim/breakdown.py): framework/shim/coordination CPU, efficiency, ...
    wall_breakdown: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.wall_duration_s is not None and not self.wall_duration_s > 0:
            raise ValueError(f"wall_duration_s must be > 0, got {self.wall_duration_s}")
        if self.fallback_op_count is not None and self.fallback_op_count < 0:
            raise ValueError(f"fallback_op_count must be >= 0, got {self.fallback_op_count}")


def _json_number(x: float) -> float | str:
    return "inf" if isinstance(x, float) and math.isinf(x) else x


def build_result(
    metrics: dict,
    *,
    backend: str,
    model_id: str,
    num_prompts: int,
    request_rate: float,
    burstiness: float,
    max_concurrency: int | None,
    tokenizer_id: str | None = None,
    label: str | None = None,
    workload: dict | None = None,
    goodput_slos_ms: dict[str, float] | None = None,
    extras: RunExtras | None = None,
    metadata: dict[str, str] | None = None,
) -> dict:
    extras = extras or RunExtras()
    result: dict[str, Any] = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": backend,
        "backend": backend,
        "label": label,
        "model_id": model_id,
        "tokenizer_id": tokenizer_id,
        "num_prompts": num_prompts,
    }
    result.update(metadata or {})
    result.update({
        "request_rate": _json_number(float(request_rate)),
        "burstiness": _json_number(float(burstiness)),
        "max_concurrency": max_concurrency,
    })
    result.update(metrics)
    result.update(_extras_dict(metrics["duration"], extras))
    result.update({
        "workload": workload or {},
        "goodput_slos_ms": goodput_slos_ms or {},
        "revati_version": __version__,
    })
    return result


def _extras_dict(virtual_s: float, extras: RunExtras) -> dict:
    wall = extras.wall_duration_s if extras.wall_duration_s is not None else None
    return {
        "virtual_duration_s": virtual_s,
        "wall_duration_s": wall,
        "speedup": (virtual_s / wall) if wall else None,
        "fallback_op_count": extras.fallback_op_count,
        "gpu": extras.gpu,
        "model": extras.model,
        "engine": extras.engine,
        "engine_version": extras.engine_version,
        "engine_config": dict(extras.engine_config),
        "versions": dict(extras.versions),
        "host_cpu": extras.host_cpu,
        "host_speed_factor": extras.host_speed_factor,
        "host_time_share": extras.host_time_share,
        "wall_breakdown": dict(extras.wall_breakdown),
    }


def write_result(result: dict, path: str | os.PathLike) -> Path:
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(result, indent=2, sort_keys=False) + "\n").encode())
    return path


def read_result(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(path, "no such file") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(path, f"not a JSON result file ({exc})") from None
    if not isinstance(data, dict) or "duration" not in data:
        raise BadInput(path, "not a benchmark result (no 'duration')")
    return data


def merge_extras(path: str | os.PathLike, extras: RunExtras) -> dict:
    """Fill revati's extras into an existing metrics.json (atomically), e.g. from ``revati
    emulate`` once it knows the wall time. Known values already in the file are kept when the
    new ones are None."""
    result = read_result(path)
    new = _extras_dict(float(result["duration"]), extras)
    for key, value in new.items():
        if value is None or value == {}:
            continue
        result[key] = value
    if result.get("wall_duration_s"):
        result["speedup"] = result["virtual_duration_s"] / result["wall_duration_s"]
    write_result(result, path)
    return result
