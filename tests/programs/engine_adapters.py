"""The engine adapters' generic parts on a virtual GPU, without any engine installed.

usage: python engine_adapters.py GPU
Activates the shim, then exercises: the NVML patch on a stand-in binding module, vLLM's CUDA op
library defined on the CPU build of torch (shapes, time charged, host views, aliases),
``torch.Generator("cuda")``, pinned host factories and the torchvision import fix.
Prints one JSON object; tests/test_engine_adapters.py checks it.
"""
import gc
import json
import sys
import types

from revati.shim.activate import activate

rt = activate({"gpu": sys.argv[1], "count_host_cpu": False})

import torch  # noqa: E402

from revati.shim.engines import nvml, torchvision_compat  # noqa: E402
from revati.shim.engines.vllm import oplib  # noqa: E402
from revati.shim.vtensor import value_of  # noqa: E402

out = {}

# -- NVML -----------------------------------------------------------------------------------------
fake = types.ModuleType("pynvml_standin")


class NVMLError(Exception):
    pass


fake.NVMLError = NVMLError
nvml.patch_module(fake)
fake.nvmlInit()
h = fake.nvmlDeviceGetHandleByIndex(0)
out["nvml"] = {
    "count": fake.nvmlDeviceGetCount(), "name": fake.nvmlDeviceGetName(h),
    "cc": list(fake.nvmlDeviceGetCudaComputeCapability(h)), "total": fake.nvmlDeviceGetMemoryInfo(h).total,
    "uuid_matches_torch": fake.nvmlDeviceGetUUID(h) == torch.cuda.get_device_properties(0).uuid,
    "by_uuid": fake.nvmlDeviceGetIndex(fake.nvmlDeviceGetHandleByUUID(fake.nvmlDeviceGetUUID(h))),
}
try:
    fake.nvmlDeviceGetHandleByIndex(5)
    out["nvml"]["bad_index"] = "no error"
except NVMLError:
    out["nvml"]["bad_index"] = "NVMLError"

# -- vLLM's CUDA op library on the CPU build ----------------------------------------------------------
for namespaces in oplib.EXTENSIONS.values():
    oplib.define(namespaces)
x = torch.empty(64, 4096, dtype=torch.bfloat16, device="cuda")
w = torch.empty(4096, dtype=torch.bfloat16, device="cuda")
res = torch.empty_like(x)
torch.cuda.synchronize()
t0 = torch.cuda.Event(enable_timing=True)
t1 = torch.cuda.Event(enable_timing=True)
t0.record()
torch.ops._C.rms_norm(res, x, w, 1e-5)
t1.record()
t1.synchronize()
out["rms_norm_ms"] = t0.elapsed_time(t1)

key = torch.empty(64, 8, 128, dtype=torch.bfloat16, device="cuda")
cache = torch.empty(100_000, 16, 8, 128, dtype=torch.bfloat16, device="cuda")  # 3.3 GB: never swept
slots = torch.arange(64, device="cuda")
scale = torch.ones((), device="cuda")
t0.record()
torch.ops._C_cache_ops.reshape_and_cache_flash(key, key, cache, cache, slots, "auto", scale, scale)
t1.record()
t1.synchronize()
out["reshape_and_cache_ms"] = t0.elapsed_time(t1)

host = torch.arange(6, dtype=torch.int32)
view = torch.ops._C.get_cuda_view_from_cpu_tensor(host)
host[0] = 42
out["uva_view"] = {"device": str(view.device), "value": value_of(view).tolist()}
allocated = torch.cuda.memory_allocated()
ref = torch.ops._C.weak_ref_tensor(x)
out["weak_ref"] = {"shape": list(ref.shape), "new_bytes": torch.cuda.memory_allocated() - allocated,
                   "same_address": ref.data_ptr() == x.data_ptr()}
owned = torch.empty(1024, 1024, device="cuda")
before_free = torch.cuda.memory_allocated()
weak = torch.ops._C.weak_ref_tensor(owned)
del owned   # the weak reference does not keep the memory (CUDA-graph buffers share one pool)
out["weak_ref_keeps_alive"] = torch.cuda.memory_allocated() == before_free
out["weak_ref_shape_after_free"] = list(weak.shape)
q = torch.empty(64, 32, 128, dtype=torch.bfloat16, device="cuda")
o, lse = torch.ops._vllm_fa2_C.varlen_fwd(q, cache, cache, None, slots, slots, None, None, None, None,
                                          1, 64, 0.0, 0.1, False, True, -1, -1, 0.0, False, 0, None)
out["varlen_fwd"] = [list(o.shape), list(lse.shape), str(lse.dtype)]
out["supports_fp8"] = {cap: torch.ops._C.cutlass_scaled_mm_supports_fp8(cap) for cap in (80, 89, 90)}
out["sm_count"] = torch.ops._C_cuda_utils.get_device_attribute(16, 0)

# -- torch.Generator("cuda"), pinned host memory ------------------------------------------------------
g = torch.Generator(device="cuda")
g.manual_seed(1)
x.uniform_(-1, 1, generator=g)
out["generator"] = {"device": str(g.device), "isinstance_default": isinstance(torch.default_generator, torch.Generator)}
pinned = [torch.empty(4, pin_memory=True), torch.zeros(4, pin_memory=True), torch.tensor([1, 2], pin_memory=True)]
out["pinned_ok"] = all(t.device.type == "cpu" for t in pinned)
with torch.device("cuda"):
    out["device_context_factory"] = str(torch.empty(2).device)

# -- shim behaviour vLLM relies on: list-returning views, views under inference_mode ----------------
buf = torch.zeros(4, 16, dtype=torch.int64, device="cuda")   # a persistent buffer, made outside inference
qkv = torch.empty(8, 96, device="cuda")
gc.collect()
before = torch.cuda.memory_allocated()
with torch.inference_mode():
    rows = list(buf[:, :8])                                   # Tensor.__iter__ -> unbind of a view
    parts = qkv.split([32, 32, 32], dim=-1)
out["views"] = {"new_bytes": torch.cuda.memory_allocated() - before,
                "row_offsets": [r.data_ptr() - buf.data_ptr() for r in rows],
                "split_offsets": [t.storage_offset() for t in parts],
                "rows_are_normal_tensors": not any(r.is_inference() for r in rows)}

# -- values of a CUDA-only custom op: its missing CPU kernel is asked once --------------------------
calls = {"missing": 0, "flaky": 0}
test_lib = torch.library.Library("revati_test", "DEF")
test_lib.define("missing(Tensor x) -> Tensor")
test_lib.define("flaky(Tensor x) -> Tensor")


def _missing_cpu(x):
    calls["missing"] += 1
    raise NotImplementedError("no CPU kernel")


def _flaky_cpu(x):
    calls["flaky"] += 1
    raise RuntimeError("depends on the values")


test_lib.impl("missing", _missing_cpu, "CPU")
test_lib.impl("flaky", _flaky_cpu, "CPU")
test_lib.impl("missing", lambda x: torch.empty_like(x), "Meta")
test_lib.impl("flaky", lambda x: torch.empty_like(x), "Meta")
small = torch.tensor([1, 2, 3, 4], dtype=torch.int32).cuda()
results = [(torch.ops.revati_test.missing(small), torch.ops.revati_test.flaky(small)) for _ in range(3)]
out["cpu_kernel_calls"] = dict(calls)
out["cpu_kernel_outputs_valued"] = [value_of(m) is not None for m, _ in results]

# -- torchvision's meta registrations ----------------------------------------------------------------
torchvision_compat._define_missing()
out["torchvision_nms_defined"] = bool(torch._C._jit_get_schemas_for_operator("torchvision::nms"))
print(json.dumps(out))
