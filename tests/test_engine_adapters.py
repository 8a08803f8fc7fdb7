"""Engine adapters (revati.shim.engines) without an engine installed: NVML, vLLM's CUDA op library on
the CPU build, batch bookkeeping for attention timing, version and compile-mode refusal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from revati import gpus
import torch

from revati.errors import UnsupportedEngine
from revati.replay.op_mapping import GenericOp, VocabOp, map_op
from revati.shim.engines.sglang import SUPPORTED_VERSIONS as SGLANG_VERSIONS
from revati.shim.engines.vllm import SUPPORTED_VERSIONS, check_version
from revati.shim.engines.vllm.attention import Batch, batch_from_metadata, batch_from_scheduler_output

PROGRAM = Path(__file__).parent / "programs" / "engine_adapters.py"


@pytest.fixture(scope="module")
def adapters():
    proc = subprocess.run([sys.executable, str(PROGRAM), "h100"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_nvml_answers_for_the_virtual_gpu(adapters):
    n = adapters["nvml"]
    assert n["count"] == 1 and n["name"] == "NVIDIA H100 80GB HBM3" and n["cc"] == [9, 0]
    assert n["total"] == gpus.get("h100").memory_bytes  # what CUDA reports, from the spec table
    assert n["uuid_matches_torch"] and n["by_uuid"] == 0
    assert n["bad_index"] == "NVMLError"


def test_vllm_cuda_ops_exist_on_the_cpu_build_with_shapes_and_costs(adapters):
    assert adapters["varlen_fwd"] == [[64, 32, 128], [32, 64], "torch.float32"]
    assert adapters["rms_norm_ms"] > 0
    # writing 64 new rows must not be charged as a sweep of the 3.3 GB cache (>= 1 ms)
    assert adapters["reshape_and_cache_ms"] < 0.05
    assert adapters["supports_fp8"] == {"80": False, "89": True, "90": True}
    assert adapters["sm_count"] == 132


def test_host_views_share_values_and_weak_refs_neither_allocate_nor_keep_memory(adapters):
    assert adapters["uva_view"] == {"device": "cuda:0", "value": [42, 1, 2, 3, 4, 5]}
    assert adapters["weak_ref"] == {"shape": [64, 4096], "new_bytes": 0, "same_address": True}
    assert adapters["weak_ref_keeps_alive"] is False and adapters["weak_ref_shape_after_free"] == [1024, 1024]


def test_an_ops_missing_cpu_kernel_is_asked_for_values_once(adapters):
    # NotImplementedError: no kernel for these dtypes, remembered; any other error may depend on
    # the values, so it is asked again
    assert adapters["cpu_kernel_calls"] == {"missing": 1, "flaky": 3}
    # with no CPU result the value policy fills the small output, on the first call as after it
    assert adapters["cpu_kernel_outputs_valued"] == [True, True, True]


def test_cuda_generators_pinned_factories_and_device_context(adapters):
    assert adapters["generator"] == {"device": "cuda", "isinstance_default": True}
    assert adapters["pinned_ok"]
    assert adapters["device_context_factory"] == "cuda:0"
    assert adapters["torchvision_nms_defined"]


def test_list_views_share_memory_and_views_of_buffers_work_under_inference_mode(adapters):
    v = adapters["views"]
    assert v["new_bytes"] == 0                      # unbind/split outputs are views, not copies
    assert v["row_offsets"] == [0, 128, 256, 384]
    assert v["split_offsets"] == [0, 32, 64]
    assert v["rows_are_normal_tensors"]


@pytest.mark.parametrize("version,refused", [("0.5.23", False), ("0.5.22", True)])
def test_importing_sglang_refuses_an_unsupported_version_with_the_supported_list(tmp_path, version, refused):
    # a package named sglang with that version, imported by a program under emulation
    (tmp_path / "sglang").mkdir()
    (tmp_path / "sglang" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    proc = subprocess.run([sys.executable, "-m", "revati", "emulate", "-q", "--", sys.executable, "-c",
                           "import sglang; print('imported', sglang.__version__)"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    if refused:
        assert proc.returncode != 0
        assert f"revati cannot emulate SGLang {version}: supported versions are " \
               f"{', '.join(SGLANG_VERSIONS)}" in proc.stderr
    else:
        assert proc.returncode == 0 and f"imported {version}" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.parametrize("version", ["0.32.0", "0.32.0+cpu"])
def test_supported_vllm_versions_pass(version):
    check_version(version)


@pytest.mark.parametrize("version", ["0.33.0", "0.31.1", "dev"])
def test_other_vllm_versions_are_refused_with_the_supported_list(version):
    with pytest.raises(UnsupportedEngine) as exc:
        check_version(version)
    assert exc.value.version == version
    assert all(v in str(exc.value) for v in SUPPORTED_VERSIONS)


def _attention(q_lens, kv_lens):
    return map_op("vllm::unified_attention_with_output", [(sum(q_lens), 32, 128)] * 4, ["bf16"] * 4,
                  {"query_lens": q_lens, "seq_lens": kv_lens, "num_heads": 32, "num_kv_heads": 8,
                   "head_dim": 128})


def test_engine_attention_maps_decode_rows_together_and_prefills_by_length():
    ops = _attention([1, 1, 1, 100, 100, 37], [50, 70, 90, 100, 100, 537])
    assert all(isinstance(o, VocabOp) for o in ops)
    by_family = {}
    for o in ops:
        by_family.setdefault(o.op, []).append(o.params_dict)
    assert by_family["attn_decode"] == [{"batch_size": 3, "q_tokens": 1, "kv_len": 70, "num_heads": 32,
                                         "num_kv_heads": 8, "head_dim": 128}]
    prefills = sorted((p["batch_size"], p["q_tokens"], p["kv_len"]) for p in by_family["attn_prefill"])
    assert prefills == [(1, 37, 537), (2, 100, 100)]


def test_engine_attention_without_batch_attrs_is_not_priced_as_attention():
    ops = map_op("vllm::unified_attention_with_output", [(8, 32, 128)] * 4, ["bf16"] * 4)
    assert [type(o) for o in ops] == [GenericOp]


def test_kv_cache_writes_cost_the_new_rows_not_the_cache():
    ops = map_op("_C_cache_ops::reshape_and_cache_flash",
                 [(64, 8, 128), (64, 8, 128), (100_000, 16, 8, 128), (100_000, 16, 8, 128), (64,), None, (), ()],
                 ["bf16", "bf16", "bf16", "bf16", "int64", None, "fp32", "fp32"])
    assert len(ops) == 1 and ops[0].bytes_moved == 2 * 2 * 64 * 8 * 128 * 2


def test_batch_from_scheduler_output_counts_cached_and_new_tokens():
    so = SimpleNamespace(
        num_scheduled_tokens={"a": 100, "b": 1, "c": 16},
        scheduled_new_reqs=[SimpleNamespace(req_id="a", num_computed_tokens=64),   # 64 prefix-cache hits
                            SimpleNamespace(req_id="c", num_computed_tokens=0)],
        scheduled_cached_reqs=SimpleNamespace(req_ids=["b"], num_computed_tokens=[300]))
    b = batch_from_scheduler_output(so)
    assert b == Batch((100, 1, 16), (164, 301, 16), "scheduler")
    assert b.num_tokens == 117
    assert batch_from_scheduler_output(SimpleNamespace(num_scheduled_tokens={})) is None


def test_a_scheduler_output_without_a_field_revati_reads_fails_by_name():
    # a vLLM release that renamed a field used to time every step's attention as an empty batch
    so = SimpleNamespace(num_scheduled_tokens={"a": 1}, scheduled_cached_reqs=None)
    with pytest.raises(UnsupportedEngine, match="scheduled_new_reqs"):
        batch_from_scheduler_output(so)


def test_batch_from_metadata_uses_values_else_maxima():
    md = SimpleNamespace(query_start_loc=torch.tensor([0, 5, 6, 8], dtype=torch.int32),
                         seq_lens=torch.tensor([5, 40, 9], dtype=torch.int32), max_query_len=5, max_seq_len=40)
    assert batch_from_metadata(md, 8) == Batch((5, 1, 2), (5, 40, 9), "metadata")
    opaque = SimpleNamespace(query_start_loc=torch.empty(5, dtype=torch.int32, device="meta"),
                             seq_lens=torch.empty(4, dtype=torch.int32, device="meta"),
                             max_query_len=1, max_seq_len=512)
    assert batch_from_metadata(opaque, 4) == Batch((1, 1, 1, 1), (512,) * 4, "metadata-max")
