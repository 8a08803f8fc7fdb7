"""The cupti backend's record conversion (the records are plain copies of CUPTI activity
fields, as CuptiBackend._buffer_completed makes them). Running cupti-python needs a GPU: its
absence is tested in test_trace_cli.py."""

from __future__ import annotations

import enum
import types

from revati import schema
from revati import tables
from revati.tracer import cupti_backend, steps

OFFSET = 1_700_000_000_000_000_000


def _records():
    return [
        {"family": "runtime", "api_name": "cudaLaunchKernel", "cbid": 211, "start": 1_000, "end": 1_500,
         "process_id": 77, "thread_id": 78, "correlation_id": 1, "return_value": 0},
        {"family": "kernel", "name": "void gemm<128>(float*)", "start": 2_000, "end": 9_000, "device_id": 0,
         "stream_id": 7, "correlation_id": 1, "grid_x": 132, "grid_y": 1, "grid_z": 1, "block_x": 256, "block_y": 1,
         "block_z": 1, "static_shared_memory": 1024, "dynamic_shared_memory": 65536, "registers_per_thread": 128,
         "graph_id": 0, "graph_node_id": 0, "queued": 0},
        {"family": "runtime", "api_name": "cudaMemcpyAsync", "cbid": 41, "start": 10_000, "end": 10_200,
         "process_id": 77, "thread_id": 78, "correlation_id": 2, "return_value": 0},
        {"family": "memcpy", "bytes": 4096, "copy_kind": 2, "start": 11_000, "end": 11_300, "device_id": 0,
         "stream_id": 7, "correlation_id": 2},
        {"family": "runtime", "api_name": "cudaStreamSynchronize", "cbid": 131, "start": 12_000, "end": 20_000,
         "process_id": 77, "thread_id": 78, "correlation_id": 3, "return_value": 0},
        {"family": "sync", "type": 3, "start": 12_100, "end": 19_900, "stream_id": 7,
         "cuda_event_id": 0xFFFFFFFF, "correlation_id": 3},
        {"family": "runtime", "api_name": "cudaDeviceSynchronize", "cbid": 165, "start": 30_000, "end": 31_000,
         "process_id": 77, "thread_id": 78, "correlation_id": 4, "return_value": 0},
    ]


def test_records_become_schema_tables_on_the_unix_clock():
    rows = cupti_backend.convert_records(_records(), "r", 77, OFFSET, steps.StepMarks().assigner(), None)
    built = tables.rows_to_tables(rows)
    for name, table in built.items():
        schema.validate(table, name)
    (k,) = rows["kernels"]
    assert k["start_ns"] == OFFSET + 2_000 and k["duration_ns"] == 7_000
    assert (k["static_smem_bytes"], k["dynamic_smem_bytes"], k["grid_x"], k["block_x"]) == (1024, 65536, 132, 256)
    assert k["graph_id"] is None and k["source"] == "cupti" and k["short_name"] == "gemm"
    (m,) = rows["memory_ops"]
    assert (m["copy_kind"], m["size_bytes"], m["is_async"]) == ("DtoH", 4096, True)
    kinds = {s["kind"]: s for s in rows["syncs"]}
    # the stream sync takes the host call's span; the device sync had no SYNCHRONIZATION record
    assert kinds["stream"]["end_ns"] - kinds["stream"]["start_ns"] == 8_000 and kinds["stream"]["event_id"] is None
    assert kinds["device"]["tid"] == 78
    assert [r["seq_in_thread"] for r in rows["launches"]] == [0, 1, 2, 3]
    assert rows["ops"] == [] and rows["op_kernels"] == []


def test_warmup_drops_by_launch_step():
    marks = steps.StepMarks(marks_ns=[OFFSET + 10_500])  # step 0 ends after the memcpy call
    rows = cupti_backend.convert_records(_records(), "r", 77, OFFSET, marks.assigner(), 1)
    assert rows["kernels"] == [] and len(rows["launches"]) == 2
    assert {s["kind"] for s in rows["syncs"]} == {"stream", "device"}


def test_cbid_names_across_cupti_python_spellings():
    Rt = enum.IntEnum("Rt", {"CUPTI_RUNTIME_TRACE_CBID_cudaLaunchKernel_v7000": 211})
    Dr = enum.IntEnum("Dr", {"cuLaunchKernel": 307})
    fake = types.SimpleNamespace(Runtime_api_trace_cbid=Rt, driver_api_trace_cbid=Dr)
    assert cupti_backend.cbid_name(fake, "runtime", 211) == "cudaLaunchKernel"
    assert cupti_backend.cbid_name(fake, "driver", 307) == "cuLaunchKernel"
    assert cupti_backend.cbid_name(fake, "runtime", 5) == "runtime_cbid_5"
