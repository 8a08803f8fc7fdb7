"""The GPU spec table: what the virtual device reports and what the roofline fallback assumes.

Numbers are from NVIDIA's data sheets (cited per GPU in ``source``); peak FLOP/s are *dense*
(the data sheets' headline tensor numbers are with 2:4 sparsity, i.e. twice these).
``memory_bytes`` is what CUDA reports as total memory (``cudaMemGetInfo`` /
``totalGlobalMem``), which is a little less than the marketing capacity
(``memory_datasheet_gb``); KV-cache sizing in serving engines starts from the former.
Interconnect bandwidths are per GPU, both directions together, as the data sheets state them.

Where the numbers come from (checked for this table; the ``source`` of each GPU says which):
- peak FLOP/s, memory bandwidth, NVLink/PCIe bandwidth, SM count: NVIDIA's data sheets and
  product briefs (dense = the sheet's sparse figure / 2 where the sheet quotes sparsity);
- ``memory_bytes``, ``l2_cache_bytes``: what CUDA reports (``torch.cuda.get_device_properties``
  ``total_memory`` / ``L2_cache_size``, or the ``total capacity`` of PyTorch's out-of-memory
  message) in public logs; it varies by a few MiB with the driver and ECC setting;
- clocks: the maximum SM and memory clocks ``nvidia-smi -q -d CLOCK`` reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from revati.errors import UnknownGPU

TB = 1e12
GB = 1e9
MiB = 1 << 20


@dataclass(frozen=True)
class GPUSpec:
    key: str
    name: str                       # the name the driver reports
    cc: tuple[int, int]
    sm_count: int
    memory_bytes: int
    memory_datasheet_gb: float
    memory_bandwidth_bytes_per_s: float
    peak_flops: dict[str, float]    # dense, per dtype
    nvlink_bandwidth_bytes_per_s: float  # 0 when the GPU has none
    pcie_bandwidth_bytes_per_s: float
    sm_clock_max_mhz: int
    mem_clock_mhz: int
    memory_bus_width_bits: int
    l2_cache_bytes: int
    shared_memory_per_sm_bytes: int
    registers_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    source: str = ""
    aliases: tuple[str, ...] = field(default=())

    def flops_for(self, dtype: str) -> float:
        from revati.vocab import canonical_dtype

        d = canonical_dtype(dtype)
        if d in self.peak_flops:
            return self.peak_flops[d]
        if d in ("int8",) and "fp8" in self.peak_flops:
            return self.peak_flops["fp8"]
        if d == "int4":
            return self.peak_flops.get("fp8", self.peak_flops["bf16"])
        return self.peak_flops.get("bf16", max(self.peak_flops.values()))

    @property
    def interconnect_bandwidth_bytes_per_s(self) -> float:
        return self.nvlink_bandwidth_bytes_per_s or self.pcie_bandwidth_bytes_per_s


def _tf(**per_dtype: float) -> dict[str, float]:
    return {k: v * TB for k, v in per_dtype.items()}


_SPECS = [
    GPUSpec(
        key="h100_sxm", name="NVIDIA H100 80GB HBM3", cc=(9, 0), sm_count=132,
        memory_bytes=81090 * MiB, memory_datasheet_gb=80, memory_bandwidth_bytes_per_s=3.35 * TB,
        peak_flops=_tf(fp64=33.5, fp32=66.9, tf32=494.7, bf16=989.4, fp16=989.4, fp8=1978.9, int8=1978.9),
        nvlink_bandwidth_bytes_per_s=900 * GB, pcie_bandwidth_bytes_per_s=128 * GB,
        sm_clock_max_mhz=1980, mem_clock_mhz=2619, memory_bus_width_bits=5120,
        l2_cache_bytes=50 * MiB, shared_memory_per_sm_bytes=228 * 1024,
        source="NVIDIA H100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h100: SXM5 132 SMs, "
               "3.35 TB/s, BF16 1979 TFLOPS with sparsity, NVLink 900 GB/s, PCIe Gen5 128 GB/s); "
               "CUDA memory: torch reports total_memory=81089-81090MB, L2_cache_size=50MB "
               "(OOM messages: 'total capacity of 79.19 GiB')",
        aliases=("h100", "h100-sxm", "h100_sxm5", "h100-80gb"),
    ),
    GPUSpec(
        key="h100_pcie", name="NVIDIA H100 PCIe", cc=(9, 0), sm_count=114,
        memory_bytes=81008 * MiB, memory_datasheet_gb=80, memory_bandwidth_bytes_per_s=2.0 * TB,
        peak_flops=_tf(fp64=25.6, fp32=51.2, tf32=378.0, bf16=756.0, fp16=756.0, fp8=1513.0, int8=1513.0),
        nvlink_bandwidth_bytes_per_s=600 * GB, pcie_bandwidth_bytes_per_s=128 * GB,
        sm_clock_max_mhz=1755, mem_clock_mhz=1593, memory_bus_width_bits=5120,
        l2_cache_bytes=50 * MiB, shared_memory_per_sm_bytes=228 * 1024,
        source="NVIDIA H100 PCIe product brief PB-11133-001 and H100 datasheet (114 SMs, 2.0 TB/s HBM2e, "
               "BF16 1513 TFLOPS with sparsity, NVLink bridge 600 GB/s, PCIe Gen5 128 GB/s); "
               "CUDA memory: torch reports total_memory=81008MB",
        aliases=("h100-pcie",),
    ),
    GPUSpec(
        key="h200", name="NVIDIA H200", cc=(9, 0), sm_count=132,
        memory_bytes=143156 * MiB, memory_datasheet_gb=141, memory_bandwidth_bytes_per_s=4.8 * TB,
        peak_flops=_tf(fp64=33.5, fp32=66.9, tf32=494.7, bf16=989.4, fp16=989.4, fp8=1978.9, int8=1978.9),
        nvlink_bandwidth_bytes_per_s=900 * GB, pcie_bandwidth_bytes_per_s=128 * GB,
        sm_clock_max_mhz=1980, mem_clock_mhz=3201, memory_bus_width_bits=6144,
        l2_cache_bytes=60 * MiB, shared_memory_per_sm_bytes=228 * 1024,
        source="NVIDIA H200 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/h200: 141 GB HBM3e, "
               "4.8 TB/s, same Hopper compute as H100 SXM, NVLink 900 GB/s); CUDA memory: torch reports "
               "total_memory=143156MB, L2_cache_size=60MB (OOM messages: 'total capacity of 139.80 GiB')",
        aliases=("h200-sxm", "h200_sxm"),
    ),
    GPUSpec(
        key="a100_sxm_80gb", name="NVIDIA A100-SXM4-80GB", cc=(8, 0), sm_count=108,
        memory_bytes=81050 * MiB, memory_datasheet_gb=80, memory_bandwidth_bytes_per_s=2.039 * TB,
        peak_flops=_tf(fp64=9.7, fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0, int8=624.0),
        nvlink_bandwidth_bytes_per_s=600 * GB, pcie_bandwidth_bytes_per_s=64 * GB,
        sm_clock_max_mhz=1410, mem_clock_mhz=1593, memory_bus_width_bits=5120,
        l2_cache_bytes=40 * MiB, shared_memory_per_sm_bytes=164 * 1024,
        source="NVIDIA A100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/a100: 80GB SXM "
               "2,039 GB/s, BF16 312 TFLOPS dense, NVLink 600 GB/s, PCIe Gen4 64 GB/s); CUDA memory: "
               "OOM messages 'total capacity of 79.15 GiB'",
        aliases=("a100", "a100-80gb", "a100_80gb", "a100-sxm", "a100_sxm"),
    ),
    GPUSpec(
        key="a100_sxm_40gb", name="NVIDIA A100-SXM4-40GB", cc=(8, 0), sm_count=108,
        memory_bytes=40337 * MiB, memory_datasheet_gb=40, memory_bandwidth_bytes_per_s=1.555 * TB,
        peak_flops=_tf(fp64=9.7, fp32=19.5, tf32=156.0, bf16=312.0, fp16=312.0, int8=624.0),
        nvlink_bandwidth_bytes_per_s=600 * GB, pcie_bandwidth_bytes_per_s=64 * GB,
        sm_clock_max_mhz=1410, mem_clock_mhz=1215, memory_bus_width_bits=5120,
        l2_cache_bytes=40 * MiB, shared_memory_per_sm_bytes=164 * 1024,
        source="NVIDIA A100 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/a100: 40GB SXM "
               "1,555 GB/s); CUDA memory: OOM messages '39.39 GiB total capacity' (older drivers "
               "report 40536MB)",
        aliases=("a100-40gb", "a100_40gb"),
    ),
    GPUSpec(
        key="a40", name="NVIDIA A40", cc=(8, 6), sm_count=84,
        memory_bytes=45416 * MiB, memory_datasheet_gb=48, memory_bandwidth_bytes_per_s=696 * GB,
        peak_flops=_tf(fp32=37.4, tf32=74.8, bf16=149.7, fp16=149.7, int8=299.3),
        nvlink_bandwidth_bytes_per_s=112.5 * GB, pcie_bandwidth_bytes_per_s=64 * GB,
        sm_clock_max_mhz=1740, mem_clock_mhz=7251, memory_bus_width_bits=384,
        l2_cache_bytes=6 * MiB, shared_memory_per_sm_bytes=100 * 1024, max_threads_per_sm=1536,
        source="NVIDIA A40 datasheet (nvidia.com/en-us/data-center/a40: 84 SMs, 696 GB/s GDDR6, BF16 "
               "299.4 TFLOPS with sparsity, NVLink bridge 112.5 GB/s, PCIe Gen4 64 GB/s); CUDA memory: "
               "torch reports total_memory=45416MB",
    ),
    GPUSpec(
        key="l40s", name="NVIDIA L40S", cc=(8, 9), sm_count=142,
        memory_bytes=45589 * MiB, memory_datasheet_gb=48, memory_bandwidth_bytes_per_s=864 * GB,
        peak_flops=_tf(fp32=91.6, tf32=183.0, bf16=362.05, fp16=362.05, fp8=733.0, int8=733.0),
        nvlink_bandwidth_bytes_per_s=0.0, pcie_bandwidth_bytes_per_s=64 * GB,
        sm_clock_max_mhz=2520, mem_clock_mhz=9001, memory_bus_width_bits=384,
        l2_cache_bytes=96 * MiB, shared_memory_per_sm_bytes=100 * 1024, max_threads_per_sm=1536,
        source="NVIDIA L40S datasheet (nvidia.com/en-us/data-center/l40s: 142 SMs, 864 GB/s, BF16 "
               "362.05 TFLOPS dense / 733 with sparsity, FP8 733 dense, PCIe Gen4 x16 64 GB/s, no NVLink); "
               "CUDA memory: torch reports total_memory=45589MB",
    ),
    GPUSpec(
        key="l4", name="NVIDIA L4", cc=(8, 9), sm_count=58,
        memory_bytes=22563 * MiB, memory_datasheet_gb=24, memory_bandwidth_bytes_per_s=300 * GB,
        peak_flops=_tf(fp32=30.3, tf32=60.0, bf16=121.0, fp16=121.0, fp8=242.5, int8=242.5),
        nvlink_bandwidth_bytes_per_s=0.0, pcie_bandwidth_bytes_per_s=64 * GB,
        sm_clock_max_mhz=2040, mem_clock_mhz=6251, memory_bus_width_bits=192,
        l2_cache_bytes=48 * MiB, shared_memory_per_sm_bytes=100 * 1024, max_threads_per_sm=1536,
        source="NVIDIA L4 Tensor Core GPU datasheet (nvidia.com/en-us/data-center/l4: 58 SMs, 300 GB/s, "
               "BF16 242 TFLOPS and FP8 485 TFLOPS with sparsity, PCIe Gen4 x16 64 GB/s); CUDA memory: OOM "
               "messages 'total capacity of 22.03 GiB' (nvidia-smi shows 23034MiB)",
    ),
    GPUSpec(
        key="b200", name="NVIDIA B200", cc=(10, 0), sm_count=148,
        memory_bytes=182642 * MiB, memory_datasheet_gb=180, memory_bandwidth_bytes_per_s=8.0 * TB,
        peak_flops=_tf(fp64=37.0, fp32=75.0, tf32=1100.0, bf16=2250.0, fp16=2250.0, fp8=4500.0, int8=4500.0),
        nvlink_bandwidth_bytes_per_s=1800 * GB, pcie_bandwidth_bytes_per_s=128 * GB,
        sm_clock_max_mhz=1965, mem_clock_mhz=3996, memory_bus_width_bits=8192,
        l2_cache_bytes=126 * MiB, shared_memory_per_sm_bytes=228 * 1024,
        source="NVIDIA HGX B200 datasheet (nvidia.com/en-us/data-center/hgx: per GPU 180 GB HBM3e, "
               "8 TB/s, FP8 9 PFLOPS and BF16 4.5 PFLOPS with sparsity, TF32 2.2 PF sparse, FP64 37 TFLOPS, "
               "NVLink 5 1.8 TB/s); CUDA memory: torch reports total_memory=182631-182642MB, "
               "multi_processor_count=148, L2_cache_size=126MB",
        aliases=("b200-sxm", "b200_sxm"),
    ),
]

GPUS: dict[str, GPUSpec] = {s.key: s for s in _SPECS}
_LOOKUP: dict[str, str] = {}
for _s in _SPECS:
    for _name in (_s.key, _s.name, *_s.aliases):
        _LOOKUP[_name.lower().replace(" ", "_")] = _s.key


def resolve_key(name: str) -> str:
    """Canonical key for a GPU name, key or alias (case-insensitive); UnknownGPU otherwise."""
    key = _LOOKUP.get(str(name).strip().lower().replace(" ", "_"))
    if key is None:
        raise UnknownGPU(name, GPUS)
    return key


def get(name: str) -> GPUSpec:
    return GPUS[resolve_key(name)]


def known_names() -> list[str]:
    return sorted(GPUS)
