"""Configuration of one emulation, as every emulated process receives it (JSON in REVATI_INJECT)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from revati import gpus
from revati.errors import UnknownKeys

MiB = 1 << 20
# Keys REVATI_INJECT carries beside the config: "mode" picks the activator (revati/inject.py,
# revati/_bootstrap.py), which passes the whole mapping on.
INJECTION_ENVELOPE = frozenset({"mode"})


@dataclass
class EmulationConfig:
    gpu: str = "h100_sxm"                 # canonical key or alias (revati.gpus)
    num_gpus: int = 1
    # Host work a GPU box does per kernel that never happens here (the CUDA op's C++ side:
    # dispatch to the CUDA kernel, allocator, cudaLaunchKernel). Charged to the host clock per
    # launched kernel. Measured on an H100 box (traces/gpu/h100-2026-12-05, ops x op_kernels):
    # an aten op that launches one kernel spends 8.7 us of CPU (median of 9,468 and 147,584
    # ops in gt-micro and gt-hf; under the profiler, whose own per-op cost makes it an upper
    # bound); cudaLaunchKernel alone is 3.9 us of it.
    launch_overhead_ns: int = 8_000
    graph_launch_overhead_ns: int = 10_000
    # Device memory the CUDA context and libraries hold before torch allocates anything.
    context_overhead_bytes: int = 512 * MiB
    count_host_cpu: bool = True           # see Note [Virtual host clock]
    host_speed: float = 1.0               # target host CPU speed relative to this machine
    host_cpu: str = "native"              # what host_speed stands for (Note [Host-speed calibration])
    host_drift_filter: bool = True        # Note [Host-time drift filter] (revati/shim/clock.py)
    value_max_elements: int = 1 << 16     # small integer/bool tensors carry real values up to this size
    value_max_float_elements: int = 4096  # ... and floating-point ones up to this size
    token_id: int | None = None           # fixed sampled token id (None: a deterministic sequence)
    eos_token_ids: list[int] = field(default_factory=list)  # never sampled by the policy
    timeline_path: str | None = None      # Chrome trace of the virtual timeline, per process
    stats_dir: str | None = None          # per-process summary JSON written at exit
    models_dir: str | None = None
    kernel_stack: str | None = None       # stack whose measurements answer first (Note [Kernel stacks])
    process_name: str | None = None

    def __post_init__(self) -> None:
        self.gpu = gpus.resolve_key(self.gpu)
        if not 1 <= self.num_gpus <= 64:
            raise ValueError(f"num_gpus must be in 1..64, got {self.num_gpus}")
        for name in ("launch_overhead_ns", "graph_launch_overhead_ns", "context_overhead_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.host_speed <= 0:
            raise ValueError(f"host_speed must be positive, got {self.host_speed}")
        if self.value_max_elements < 1:
            raise ValueError("value_max_elements must be >= 1")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "EmulationConfig":
        """The config :meth:`to_json` wrote; UnknownKeys for any other key (a misspelt one would
        otherwise be dropped, and the emulation run silently with the default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - INJECTION_ENVELOPE
        if unknown:
            raise UnknownKeys(cls.__name__, unknown, names)
        return cls(**{k: v for k, v in data.items() if k in names})
