"""Roofline estimates from the GPU spec table: the fallback for ops without a fitted model.

time = max(FLOPs / (peak * compute_efficiency), bytes / (bandwidth * memory_efficiency))
       + a per-kernel floor (a launched kernel never takes less than a couple of microseconds).
Collectives: a latency term plus bytes over the per-direction interconnect bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from revati import vocab
from revati.gpus import GPUSpec


@dataclass(frozen=True)
class RooflineParams:
    compute_efficiency: float = 0.70
    memory_efficiency: float = 0.80
    kernel_floor_ns: float = 2_000.0
    collective_latency_ns: float = 8_000.0
    interconnect_efficiency: float = 0.75


DEFAULT = RooflineParams()


def roofline_ns(spec: GPUSpec, op: str, params: Mapping[str, float], dtype: str = "bf16",
                rp: RooflineParams = DEFAULT) -> float:
    fam = vocab.family(op)
    if fam.kind == "collective":
        world = float(params.get("world_size") or 1)
        if world <= 1:
            return 0.0
        per_direction = spec.interconnect_bandwidth_bytes_per_s / 2.0
        moved = vocab.bytes_moved(op, params, dtype)
        return rp.collective_latency_ns + moved / (per_direction * rp.interconnect_efficiency) * 1e9
    flops = vocab.flops(op, params)
    moved = vocab.bytes_moved(op, params, dtype)
    compute_s = flops / (spec.flops_for(dtype) * rp.compute_efficiency)
    memory_s = moved / (spec.memory_bandwidth_bytes_per_s * rp.memory_efficiency)
    return rp.kernel_floor_ns + max(compute_s, memory_s) * 1e9


def generic_ns(spec: GPUSpec, bytes_moved: float, flops: float = 0.0, dtype: str = "bf16",
               rp: RooflineParams = DEFAULT) -> float:
    """Roofline for a kernel known only by the bytes it touches and its FLOPs."""
    compute_s = flops / (spec.flops_for(dtype) * rp.compute_efficiency) if flops else 0.0
    memory_s = bytes_moved / (spec.memory_bandwidth_bytes_per_s * rp.memory_efficiency)
    return rp.kernel_floor_ns + max(compute_s, memory_s) * 1e9
