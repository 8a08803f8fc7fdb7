"""What one ``revati trace`` run records and where: the tracer's config, validated once.

The CLI builds a :class:`TraceConfig`; it travels to every traced process as JSON inside
``REVATI_INJECT`` (see revati/inject.py) and comes back out through :meth:`from_dict`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

# In-process backends (one CUPTI subscriber per process: never both) and the out-of-process one.
IN_PROCESS_BACKENDS = ("kineto", "cupti")
BACKENDS = ("kineto", "cupti", "bpf")
DEFAULT_BACKEND = "kineto"

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")

HELP = {
    "backends": "kineto (torch.profiler, default), cupti (cupti-python, for non-torch programs) and/or "
                "bpf (bcc uprobes on the CUDA libraries, root); kineto and cupti exclude each other",
    "out_dir": "run folder; default $REVATI_HOME/traces/<run_id>",
    "warmup_steps": "drop everything recorded in the first N steps (revati.tracer.step() calls or "
                    "'revati.step' ranges)",
    "quiet": "no progress or summary output (errors and the no-device-timing notice still print)",
    "keep_raw": "also keep each process's raw profiler export (gzipped Chrome-trace JSON) under raw/",
}


@dataclass(frozen=True)
class TraceConfig:
    run_id: str
    out_dir: str
    backends: tuple[str, ...] = (DEFAULT_BACKEND,)
    warmup_steps: int = 0
    quiet: bool = False
    keep_raw: bool = False
    record_shapes: bool = True
    bpf_libs: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not _RUN_ID.match(self.run_id or ""):
            raise ValueError(f"run id {self.run_id!r}: use letters, digits and . _ + - (at most 128)")
        if not self.out_dir:
            raise ValueError("out_dir must be set")
        backends = tuple(self.backends)
        if not backends:
            raise ValueError("at least one backend is needed")
        unknown = [b for b in backends if b not in BACKENDS]
        if unknown:
            raise ValueError(f"unknown backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
        if len(set(backends)) != len(backends):
            raise ValueError(f"backend listed twice: {', '.join(backends)}")
        if "kineto" in backends and "cupti" in backends:
            raise ValueError("kineto and cupti both subscribe to CUPTI; a process can have only one "
                             "(pick one, optionally with bpf)")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an integer >= 0, got {self.warmup_steps!r}")
        object.__setattr__(self, "backends", backends)
        object.__setattr__(self, "bpf_libs", tuple(str(p) for p in self.bpf_libs))

    @property
    def in_process_backend(self) -> str | None:
        """The backend loaded inside each traced process (kineto or cupti), if any."""
        for b in self.backends:
            if b in IN_PROCESS_BACKENDS:
                return b
        return None

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backends"] = list(self.backends)
        d["bpf_libs"] = list(self.bpf_libs)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TraceConfig":
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("backends", "bpf_libs"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)
