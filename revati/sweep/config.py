"""The sweep file (YAML): what to vary, the command that runs one configuration, and SLOs.

Example ``SWEEP.yaml``::

    name: llama7b-h100-vs-a100
    gpus: [h100, a100]                      # optional; {gpu} in the command
    engine_command: vllm serve /models/llama-2-7b --load-format dummy
    engine:                                 # lists are swept, scalars fixed
      max_num_seqs: [64, 256]
      tensor_parallel_size: 1
    workload:
      request_rate: [1, 2, 4, 8]
      num_prompts: 200
      random_input_len: 512
      random_output_len: 128
    # command: the default below; placeholders are any swept or fixed key, plus
    #   {gpu} {run_dir} {run_id} {engine_command} {engine_args} {workload_args}, and {port}:
    #   a TCP port free where the run executes (a server: --serve-port {port} ... --port {port})
    jobs: 2                                 # default: the number of cores
    run_timeout_s: 3600
    slo_search:                             # optional: highest rate meeting the targets
      ttft_ms: 500                          # p99 TTFT target
      tpot_ms: 50                           # p99 TPOT target
      rate_low: 0.25
      rate_high: 64
      iterations: 6

``{engine_args}`` renders the engine parameters as ``--max-num-seqs 64 ...`` and
``{workload_args}`` the workload ones as ``--request-rate 4 ...`` (underscores become dashes;
``true`` becomes a bare flag, ``false`` and ``null`` are left out). Before the first run each
of those keys is checked against the flags of the program it goes to (``revati.sweep.flags``)
and each GPU name against revati's GPUs. A run succeeds when its command exits 0 and leaves
``{run_dir}/metrics.json``.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from revati import gpus as gpu_specs
from revati.errors import BadInput, UnknownGPU
from revati.paths import user_traces_dir

DEFAULT_COMMAND = (
    "revati emulate --gpu {gpu} --result-dir {run_dir} {workload_args} -- {engine_command} {engine_args}"
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_KNOWN_KEYS = {"name", "gpus", "engine_command", "engine", "workload", "command", "jobs", "run_timeout_s",
               "slo_search", "output_dir", "env"}


@dataclass(frozen=True)
class SLOSearchConfig:
    """Bisection over the request rate for the highest rate whose p<percentile> TTFT and TPOT
    meet the targets (either target may be left out, not both)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    percentile: float = 99.0
    rate_low: float = 0.25
    rate_high: float = 64.0
    iterations: int = 6

    def __post_init__(self) -> None:
        if self.ttft_ms is None and self.tpot_ms is None:
            raise ValueError("slo_search needs ttft_ms and/or tpot_ms")
        for name in ("ttft_ms", "tpot_ms"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"slo_search.{name} must be > 0, got {v}")
        if not 0 < self.rate_low < self.rate_high < math.inf:
            raise ValueError(f"need 0 < rate_low < rate_high < inf, got {self.rate_low}, {self.rate_high}")
        if self.iterations < 1:
            raise ValueError(f"slo_search.iterations must be >= 1, got {self.iterations}")
        if self.percentile not in (50.0, 90.0, 95.0, 99.0):
            raise ValueError(f"slo_search.percentile must be one of 50, 90, 95, 99, got {self.percentile}")


@dataclass(frozen=True)
class SweepConfig:
    name: str
    engine: dict[str, Any] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    gpus: tuple[str, ...] = ()
    engine_command: str = ""
    command: str = DEFAULT_COMMAND
    jobs: int | None = None
    run_timeout_s: float | None = None
    slo_search: SLOSearchConfig | None = None
    output_dir: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name or ""):
            raise ValueError(f"sweep name {self.name!r} must be letters, digits, '.', '_' or '-'")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"jobs must be >= 1, got {self.jobs}")
        if self.run_timeout_s is not None and not self.run_timeout_s > 0:
            raise ValueError(f"run_timeout_s must be > 0, got {self.run_timeout_s}")
        clash = set(self.engine) & set(self.workload)
        if clash:
            raise ValueError(f"parameter(s) {', '.join(sorted(clash))} in both engine and workload")
        for section, params in (("engine", self.engine), ("workload", self.workload)):
            for key, value in params.items():
                if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", str(key)):
                    raise ValueError(f"{section} parameter {key!r} is not an identifier")
                if isinstance(value, list) and not value:
                    raise ValueError(f"{section}.{key} is an empty list")
        if self.slo_search is not None and "request_rate" in self.engine:
            raise ValueError("request_rate belongs in workload for the SLO search")
        if "{gpu}" in self.command and not self.gpus:
            raise ValueError("the command uses {gpu}: list gpus")

    @property
    def sweep_dir(self) -> Path:
        """``output_dir``, else ``$REVATI_HOME/traces/sweeps/<name>`` (where ``revati db`` looks)."""
        return Path(self.output_dir) if self.output_dir else user_traces_dir() / "sweeps" / self.name

    @property
    def default_jobs(self) -> int:
        return self.jobs or max(1, os.cpu_count() or 1)


def load_sweep(path: str | os.PathLike) -> SweepConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(path, "no such file") from None
    except IsADirectoryError:
        raise BadInput(path, "a folder, not a sweep file") from None
    except UnicodeDecodeError:
        raise BadInput(path, "not a text file (a sweep file is YAML)") from None
    except OSError as exc:
        raise BadInput(path, f"cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise BadInput(path, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    return sweep_from_dict(data, where=path)


def sweep_from_dict(data: Any, where: object = "sweep") -> SweepConfig:
    if not isinstance(data, dict):
        raise BadInput(where, "a sweep file is a YAML mapping")
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise BadInput(where, f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_KNOWN_KEYS))}")
    try:
        slo = data.get("slo_search")
        if slo is not None and not isinstance(slo, dict):
            raise ValueError("slo_search must be a mapping")
        gpus = data.get("gpus") or ()
        gpus = (gpus,) if isinstance(gpus, str) else tuple(str(g) for g in gpus)
        for gpu in gpus:
            try:
                gpu_specs.resolve_key(gpu)
            except UnknownGPU as exc:
                raise ValueError(f"gpus: {exc}") from None
        for section in ("engine", "workload", "env"):
            if data.get(section) is not None and not isinstance(data[section], dict):
                raise ValueError(f"{section} must be a mapping")
        return SweepConfig(
            name=str(data.get("name") or Path(str(where)).stem),
            engine=dict(data.get("engine") or {}),
            workload=dict(data.get("workload") or {}),
            gpus=gpus,
            engine_command=str(data.get("engine_command") or ""),
            command=str(data.get("command") or DEFAULT_COMMAND),
            jobs=data.get("jobs"),
            run_timeout_s=data.get("run_timeout_s"),
            slo_search=SLOSearchConfig(**slo) if slo else None,
            output_dir=data.get("output_dir"),
            env={str(k): str(v) for k, v in (data.get("env") or {}).items()},
        )
    except (ValueError, TypeError) as exc:
        raise BadInput(where, str(exc)) from None
